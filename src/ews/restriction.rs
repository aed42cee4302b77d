//! `Restriction` and `SortOrder`: parsed from the request, evaluated over any value source
//! (contacts for FindItem, folders for FindFolder).
//!
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/restriction>.

use super::shape::{path, Path};
use super::xml::Element;
use std::cmp::Ordering;

/// A parsed restriction.
#[derive(Clone, Debug, PartialEq)]
pub enum Restriction {
    /// All must hold.
    And(Vec<Restriction>),
    /// One must hold.
    Or(Vec<Restriction>),
    /// Must not hold.
    Not(Box<Restriction>),
    /// A comparison with a constant.
    Compare(Path, Cmp, String),
    /// Substring, prefix or full-string match.
    Contains {
        /// Property.
        path: Path,
        /// Value.
        value: String,
        /// FullString, Prefixed, Substring, PrefixOnWords, ExactPhrase.
        mode: String,
        /// Case-insensitive comparison.
        ignore_case: bool,
    },
    /// The property has a value.
    Exists(Path),
}

impl Restriction {
    /// Nodes in the tree: what testing one item against it costs, at most.
    pub fn nodes(&self) -> usize {
        match self {
            Restriction::And(v) | Restriction::Or(v) => {
                1 + v.iter().map(Self::nodes).sum::<usize>()
            }
            Restriction::Not(r) => 1 + r.nodes(),
            _ => 1,
        }
    }
}

/// Comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// IsEqualTo.
    Eq,
    /// IsNotEqualTo.
    Ne,
    /// IsGreaterThan.
    Gt,
    /// IsGreaterThanOrEqualTo.
    Ge,
    /// IsLessThan.
    Lt,
    /// IsLessThanOrEqualTo.
    Le,
}

/// Why a restriction could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRestriction(pub String);

const MAX_NODES: usize = 1000;

/// Reads the element inside `m:Restriction`.
pub fn parse(e: &Element) -> Result<Restriction, BadRestriction> {
    let mut budget = MAX_NODES;
    node(e, &mut budget)
}

fn first_path(e: &Element) -> Result<Path, BadRestriction> {
    e.children
        .iter()
        .find_map(path)
        .ok_or_else(|| BadRestriction(format!("{} names no property", e.name)))
}

fn constant(e: &Element) -> Result<String, BadRestriction> {
    e.child("FieldURIOrConstant")
        .and_then(|c| c.child("Constant"))
        .or_else(|| e.child("Constant"))
        .and_then(|c| c.attr("Value"))
        .map(str::to_owned)
        .ok_or_else(|| BadRestriction(format!("{} has no constant", e.name)))
}

fn node(e: &Element, budget: &mut usize) -> Result<Restriction, BadRestriction> {
    if *budget == 0 {
        return Err(BadRestriction("restriction too large".into()));
    }
    *budget -= 1;
    let cmp = |c| -> Result<Restriction, BadRestriction> {
        Ok(Restriction::Compare(first_path(e)?, c, constant(e)?))
    };
    match e.name.as_str() {
        "And" => Ok(Restriction::And(
            e.children
                .iter()
                .map(|c| node(c, budget))
                .collect::<Result<_, _>>()?,
        )),
        "Or" => Ok(Restriction::Or(
            e.children
                .iter()
                .map(|c| node(c, budget))
                .collect::<Result<_, _>>()?,
        )),
        "Not" => {
            let inner = e
                .children
                .first()
                .ok_or_else(|| BadRestriction("empty Not".into()))?;
            Ok(Restriction::Not(Box::new(node(inner, budget)?)))
        }
        "IsEqualTo" => cmp(Cmp::Eq),
        "IsNotEqualTo" => cmp(Cmp::Ne),
        "IsGreaterThan" => cmp(Cmp::Gt),
        "IsGreaterThanOrEqualTo" => cmp(Cmp::Ge),
        "IsLessThan" => cmp(Cmp::Lt),
        "IsLessThanOrEqualTo" => cmp(Cmp::Le),
        "Contains" => Ok(Restriction::Contains {
            path: first_path(e)?,
            value: e
                .child("Constant")
                .and_then(|c| c.attr("Value"))
                .ok_or_else(|| BadRestriction("Contains has no constant".into()))?
                .to_owned(),
            mode: e.attr("ContainmentMode").unwrap_or("FullString").to_owned(),
            ignore_case: matches!(
                e.attr("ContainmentComparison"),
                Some(
                    "IgnoreCase"
                        | "Loose"
                        | "IgnoreCaseAndNonSpacingCharacters"
                        | "LooseAndIgnoreCase"
                        | "LooseAndIgnoreCaseAndIgnoreNonSpace"
                        | "IgnoreNonSpacingCharacters"
                )
            ),
        }),
        "Exists" => Ok(Restriction::Exists(first_path(e)?)),
        other => Err(BadRestriction(format!("unsupported restriction {other}"))),
    }
}

fn compare(a: &str, b: &str) -> Ordering {
    match (a.parse::<i64>(), b.parse::<i64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.to_lowercase().cmp(&b.to_lowercase()),
    }
}

/// Evaluates a restriction; `values` gives a property's values.
pub fn matches(r: &Restriction, values: &dyn Fn(&Path) -> Vec<String>) -> bool {
    match r {
        Restriction::And(v) => v.iter().all(|r| matches(r, values)),
        Restriction::Or(v) => v.iter().any(|r| matches(r, values)),
        Restriction::Not(r) => !matches(r, values),
        Restriction::Exists(p) => !values(p).is_empty(),
        Restriction::Compare(p, op, c) => {
            let vs = values(p);
            match op {
                // Exchange compares strings case-insensitively.
                Cmp::Eq => vs.iter().any(|v| compare(v, c) == Ordering::Equal),
                Cmp::Ne => vs.iter().all(|v| compare(v, c) != Ordering::Equal),
                Cmp::Gt => vs.iter().any(|v| compare(v, c) == Ordering::Greater),
                Cmp::Ge => vs.iter().any(|v| compare(v, c) != Ordering::Less),
                Cmp::Lt => vs.iter().any(|v| compare(v, c) == Ordering::Less),
                Cmp::Le => vs.iter().any(|v| compare(v, c) != Ordering::Greater),
            }
        }
        Restriction::Contains {
            path,
            value,
            mode,
            ignore_case,
        } => {
            let norm = |s: &str| {
                if *ignore_case {
                    s.to_lowercase()
                } else {
                    s.to_owned()
                }
            };
            let needle = norm(value);
            values(path).iter().any(|v| {
                let hay = norm(v);
                match mode.as_str() {
                    "FullString" => hay == needle,
                    "Prefixed" => hay.starts_with(&needle),
                    "PrefixOnWords" => {
                        hay.split_whitespace().any(|w| w.starts_with(&needle))
                            || hay.starts_with(&needle)
                    }
                    _ => hay.contains(&needle),
                }
            })
        }
    }
}

/// One sort key.
#[derive(Clone, Debug)]
pub struct SortKey {
    /// Property.
    pub path: Path,
    /// Descending.
    pub descending: bool,
}

/// Reads `m:SortOrder`.
pub fn sort_order(e: Option<&Element>) -> Vec<SortKey> {
    e.map(|e| {
        e.children_named("FieldOrder")
            .filter_map(|f| {
                Some(SortKey {
                    path: f.children.iter().find_map(path)?,
                    descending: f.attr("Order") == Some("Descending"),
                })
            })
            .collect()
    })
    .unwrap_or_default()
}

/// Compares two value lists the way a sort key orders them.
pub fn cmp_values(a: &[String], b: &[String]) -> Ordering {
    match (a.first(), b.first()) {
        (Some(x), Some(y)) => compare(x, y),
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ews::xml;

    fn r(x: &str) -> Restriction {
        let doc = format!(
            r#"<m:Restriction xmlns:m="{}" xmlns:t="{}">{x}</m:Restriction>"#,
            xml::NS_M,
            xml::NS_T
        );
        let e = xml::parse(doc.as_bytes()).expect("xml");
        parse(&e.children[0]).expect("restriction")
    }

    #[test]
    fn evaluates() {
        let vals = |p: &Path| match p {
            Path::Field(u) if u == "contacts:DisplayName" => vec!["Eva Klein".to_string()],
            Path::Extended(_) => vec!["42".to_string()],
            _ => vec![],
        };
        let c = r(
            r#"<t:Contains ContainmentMode="Substring" ContainmentComparison="IgnoreCase"><t:FieldURI FieldURI="contacts:DisplayName"/><t:Constant Value="klein"/></t:Contains>"#,
        );
        assert!(matches(&c, &vals));
        let exact = r(
            r#"<t:Contains ContainmentMode="Substring" ContainmentComparison="Exact"><t:FieldURI FieldURI="contacts:DisplayName"/><t:Constant Value="klein"/></t:Contains>"#,
        );
        assert!(!matches(&exact, &vals));
        let or = r(
            r#"<t:Or><t:IsEqualTo><t:ExtendedFieldURI PropertyTag="0xe23" PropertyType="Integer"/><t:FieldURIOrConstant><t:Constant Value="42"/></t:FieldURIOrConstant></t:IsEqualTo><t:Exists><t:FieldURI FieldURI="contacts:Surname"/></t:Exists></t:Or>"#,
        );
        assert!(matches(&or, &vals));
        let not = r(
            r#"<t:Not><t:IsGreaterThan><t:ExtendedFieldURI PropertyTag="0xe23" PropertyType="Integer"/><t:FieldURIOrConstant><t:Constant Value="100"/></t:FieldURIOrConstant></t:IsGreaterThan></t:Not>"#,
        );
        assert!(matches(&not, &vals), "42 > 100 is false numerically");
    }
}
