//! `Restriction` and `SortOrder`: EWS's syntax, read into the view's one query
//! ([`crate::view::query`]) over EWS property paths; the view evaluates it (contacts for
//! FindItem, folders for FindFolder).
//!
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/restriction>.

use super::shape::{path, Path};
use super::xml::Element;
pub use crate::view::query::Cmp;
use crate::view::query::{Filter, TextMatch};

/// A parsed restriction.
pub type Restriction = Filter<Path>;

/// One sort key.
pub type SortKey = crate::view::query::SortKey<Path>;

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
        "Contains" => Ok(Restriction::Text {
            prop: first_path(e)?,
            value: e
                .child("Constant")
                .and_then(|c| c.attr("Value"))
                .ok_or_else(|| BadRestriction("Contains has no constant".into()))?
                .to_owned(),
            mode: match e.attr("ContainmentMode").unwrap_or("FullString") {
                "FullString" => TextMatch::Equals,
                "Prefixed" => TextMatch::Prefix,
                "PrefixOnWords" => TextMatch::PrefixOnWords,
                // Substring, ExactPhrase.
                _ => TextMatch::Substring,
            },
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

/// Reads `m:SortOrder`.
pub fn sort_order(e: Option<&Element>) -> Vec<SortKey> {
    e.map(|e| {
        e.children_named("FieldOrder")
            .filter_map(|f| {
                Some(SortKey {
                    prop: f.children.iter().find_map(path)?,
                    descending: f.attr("Order") == Some("Descending"),
                })
            })
            .collect()
    })
    .unwrap_or_default()
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
        assert!(c.matches(&vals));
        let exact = r(
            r#"<t:Contains ContainmentMode="Substring" ContainmentComparison="Exact"><t:FieldURI FieldURI="contacts:DisplayName"/><t:Constant Value="klein"/></t:Contains>"#,
        );
        assert!(!exact.matches(&vals));
        let or = r(
            r#"<t:Or><t:IsEqualTo><t:ExtendedFieldURI PropertyTag="0xe23" PropertyType="Integer"/><t:FieldURIOrConstant><t:Constant Value="42"/></t:FieldURIOrConstant></t:IsEqualTo><t:Exists><t:FieldURI FieldURI="contacts:Surname"/></t:Exists></t:Or>"#,
        );
        assert!(or.matches(&vals));
        let not = r(
            r#"<t:Not><t:IsGreaterThan><t:ExtendedFieldURI PropertyTag="0xe23" PropertyType="Integer"/><t:FieldURIOrConstant><t:Constant Value="100"/></t:FieldURIOrConstant></t:IsGreaterThan></t:Not>"#,
        );
        assert!(not.matches(&vals), "42 > 100 is false numerically");
    }
}
