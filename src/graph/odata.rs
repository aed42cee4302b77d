//! The OData query subset crmgate serves: `$select`, `$top` (≤ 1000), `$skip`, `$count`,
//! `$orderby` (displayName, givenName, surname, createdDateTime, lastModifiedDateTime),
//! `$filter` (eq/ne on scalars, `startswith`, `contains`, `and`/`or`/`not`, parentheses,
//! `emailAddresses/any(a:a/address eq '…')`), and `$skiptoken`/`$deltatoken`. Names and values
//! are percent-decoded with `+` as space; anything else is a 400.
//!
//! See <https://learn.microsoft.com/en-us/graph/query-parameters>.

use super::error::GraphError;
use crate::view::query::{self, TextMatch};

/// Largest `$top`.
pub const MAX_TOP: usize = 1000;

/// Parsed query options.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Query {
    /// `$select`.
    pub select: Option<Vec<String>>,
    /// `$top`.
    pub top: Option<usize>,
    /// `$skip`.
    pub skip: usize,
    /// `$count=true`.
    pub count: bool,
    /// `$orderby`: (property, descending).
    pub orderby: Vec<(String, bool)>,
    /// `$filter`.
    pub filter: Option<Filter>,
    /// `$skiptoken`.
    pub skiptoken: Option<String>,
    /// `$deltatoken`.
    pub deltatoken: Option<String>,
}

/// A `$filter` expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    /// Both.
    And(Box<Filter>, Box<Filter>),
    /// Either.
    Or(Box<Filter>, Box<Filter>),
    /// Not.
    Not(Box<Filter>),
    /// `prop eq 'v'`.
    Eq(String, String),
    /// `prop ne 'v'`.
    Ne(String, String),
    /// `startswith(prop, 'v')`.
    StartsWith(String, String),
    /// `contains(prop, 'v')`.
    Contains(String, String),
    /// `emailAddresses/any(a:a/address eq 'v')`.
    AnyAddress(String),
}

/// Decodes `%XX` and `+`.
pub fn decode(s: &str) -> Result<String, GraphError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s
                    .get(i + 1..i + 3)
                    .ok_or_else(|| GraphError::bad("Malformed percent-encoding in the query."))?;
                out.push(
                    u8::from_str_radix(hex, 16)
                        .map_err(|_| GraphError::bad("Malformed percent-encoding in the query."))?,
                );
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| GraphError::bad("The query is not valid UTF-8."))
}

/// Properties `$orderby` accepts.
const ORDERABLE: &[&str] = &[
    "displayName",
    "givenName",
    "surname",
    "createdDateTime",
    "lastModifiedDateTime",
];

impl Query {
    /// Parses a raw query string.
    pub fn parse(raw: Option<&str>) -> Result<Query, GraphError> {
        let mut q = Query::default();
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (decode(k)?, decode(v)?);
            match k.as_str() {
                "$select" => {
                    q.select = Some(
                        v.split(',')
                            .map(|s| s.trim().to_owned())
                            .filter(|s| !s.is_empty())
                            .collect(),
                    )
                }
                "$top" => {
                    let n: usize = v
                        .trim()
                        .parse()
                        .map_err(|_| GraphError::bad("$top must be a non-negative integer."))?;
                    q.top = Some(n.min(MAX_TOP));
                }
                "$skip" => {
                    q.skip = v
                        .trim()
                        .parse()
                        .map_err(|_| GraphError::bad("$skip must be a non-negative integer."))?
                }
                "$count" => q.count = v.trim().eq_ignore_ascii_case("true"),
                "$orderby" => {
                    for part in v.split(',') {
                        let mut w = part.split_whitespace();
                        let prop = w.next().unwrap_or("").to_owned();
                        let desc = match w.next() {
                            None | Some("asc") => false,
                            Some("desc") => true,
                            Some(_) => {
                                return Err(GraphError::bad("$orderby takes 'asc' or 'desc'."))
                            }
                        };
                        if !ORDERABLE.contains(&prop.as_str()) {
                            return Err(GraphError::new(
                                400,
                                "ErrorInvalidProperty",
                                format!("The property '{prop}' does not support sorting."),
                            ));
                        }
                        q.orderby.push((prop, desc));
                    }
                }
                "$filter" => q.filter = Some(parse_filter(&v)?),
                "$skiptoken" => q.skiptoken = Some(v),
                "$deltatoken" => q.deltatoken = Some(v),
                "$expand" if v.trim() == "extensions" => {}
                "$expand" | "$search" | "$format" | "$apply" => {
                    return Err(GraphError::bad(format!(
                        "The query option '{k}' is not supported."
                    )))
                }
                _ => {} // other parameters (custom ones) are ignored, as Graph does
            }
        }
        Ok(q)
    }
}

// ---- $filter -----------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    LParen,
    RParen,
    Comma,
    Colon,
}

fn lex(s: &str) -> Result<Vec<Tok>, GraphError> {
    let mut out = Vec::new();
    let c: Vec<char> = s.chars().collect();
    let mut i = 0;
    if c.len() > 4096 {
        return Err(GraphError::filter());
    }
    while i < c.len() {
        match c[i] {
            ' ' | '\t' => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            ':' => {
                out.push(Tok::Colon);
                i += 1;
            }
            '\'' => {
                let mut v = String::new();
                i += 1;
                loop {
                    match c.get(i) {
                        None => return Err(GraphError::filter()),
                        Some('\'') if c.get(i + 1) == Some(&'\'') => {
                            v.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            v.push(*ch);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Str(v));
            }
            ch if ch.is_alphanumeric() || ch == '/' || ch == '_' || ch == '.' || ch == '-' => {
                let start = i;
                while i < c.len() && (c[i].is_alphanumeric() || "/_.-".contains(c[i])) {
                    i += 1;
                }
                out.push(Tok::Ident(c[start..i].iter().collect()));
            }
            _ => return Err(GraphError::filter()),
        }
    }
    Ok(out)
}

struct P {
    t: Vec<Tok>,
    at: usize,
    depth: usize,
}

/// Properties `$filter` compares.
const FILTERABLE: &[&str] = &[
    "displayName",
    "givenName",
    "surname",
    "middleName",
    "companyName",
    "jobTitle",
    "department",
    "fileAs",
    "mobilePhone",
    "title",
    "businessHomePage",
    "personalNotes",
    "id",
];

impl P {
    fn peek(&self) -> Option<&Tok> {
        self.t.get(self.at)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.t.get(self.at).cloned();
        self.at += 1;
        t
    }
    fn expect(&mut self, t: Tok) -> Result<(), GraphError> {
        if self.next() == Some(t) {
            Ok(())
        } else {
            Err(GraphError::filter())
        }
    }
    fn word(&mut self, w: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Ident(x)) if x == w) {
            self.at += 1;
            true
        } else {
            false
        }
    }
    fn or(&mut self) -> Result<Filter, GraphError> {
        let mut l = self.and()?;
        while self.word("or") {
            l = Filter::Or(Box::new(l), Box::new(self.and()?));
        }
        Ok(l)
    }
    fn and(&mut self) -> Result<Filter, GraphError> {
        let mut l = self.unary()?;
        while self.word("and") {
            l = Filter::And(Box::new(l), Box::new(self.unary()?));
        }
        Ok(l)
    }
    fn unary(&mut self) -> Result<Filter, GraphError> {
        self.depth += 1;
        if self.depth > 32 {
            return Err(GraphError::filter());
        }
        let r = if self.word("not") {
            Ok(Filter::Not(Box::new(self.unary()?)))
        } else {
            self.atom()
        };
        self.depth -= 1;
        r
    }
    fn prop(&mut self) -> Result<String, GraphError> {
        match self.next() {
            Some(Tok::Ident(p)) if FILTERABLE.contains(&p.as_str()) => Ok(p),
            Some(Tok::Ident(p)) => Err(GraphError::new(
                400,
                "ErrorInvalidProperty",
                format!("The property '{p}' does not support filtering."),
            )),
            _ => Err(GraphError::filter()),
        }
    }
    fn string(&mut self) -> Result<String, GraphError> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(s),
            _ => Err(GraphError::filter()),
        }
    }
    fn atom(&mut self) -> Result<Filter, GraphError> {
        match self.peek().cloned() {
            Some(Tok::LParen) => {
                self.at += 1;
                let f = self.or()?;
                self.expect(Tok::RParen)?;
                Ok(f)
            }
            Some(Tok::Ident(w)) if w == "startswith" || w == "contains" => {
                self.at += 1;
                self.expect(Tok::LParen)?;
                let p = self.prop()?;
                self.expect(Tok::Comma)?;
                let v = self.string()?;
                self.expect(Tok::RParen)?;
                Ok(if w == "startswith" {
                    Filter::StartsWith(p, v)
                } else {
                    Filter::Contains(p, v)
                })
            }
            Some(Tok::Ident(w)) if w == "emailAddresses/any" => {
                self.at += 1;
                self.expect(Tok::LParen)?;
                let var = match self.next() {
                    Some(Tok::Ident(v)) => v,
                    _ => return Err(GraphError::filter()),
                };
                self.expect(Tok::Colon)?;
                if self.next() != Some(Tok::Ident(format!("{var}/address"))) || !self.word("eq") {
                    return Err(GraphError::filter());
                }
                let v = self.string()?;
                self.expect(Tok::RParen)?;
                Ok(Filter::AnyAddress(v))
            }
            Some(Tok::Ident(_)) => {
                let p = self.prop()?;
                let op = match self.next() {
                    Some(Tok::Ident(o)) => o,
                    _ => return Err(GraphError::filter()),
                };
                let v = self.string()?;
                match op.as_str() {
                    "eq" => Ok(Filter::Eq(p, v)),
                    "ne" => Ok(Filter::Ne(p, v)),
                    _ => Err(GraphError::filter()),
                }
            }
            _ => Err(GraphError::filter()),
        }
    }
}

/// Most tokens in one `$filter` (about 100 comparisons): what testing one contact costs is
/// bounded by this, whatever the URL length allows.
pub const MAX_FILTER_TOKENS: usize = 512;

/// Parses a `$filter` expression.
pub fn parse_filter(s: &str) -> Result<Filter, GraphError> {
    let t = lex(s)?;
    if t.len() > MAX_FILTER_TOKENS {
        return Err(GraphError::new(
            400,
            "ErrorInvalidUrlQueryFilter",
            format!("The query filter has more than {MAX_FILTER_TOKENS} tokens."),
        ));
    }
    let mut p = P { t, at: 0, depth: 0 };
    let f = p.or()?;
    if p.at != p.t.len() {
        return Err(GraphError::filter());
    }
    Ok(f)
}

/// The pseudo-property of every e-mail address of a contact (what
/// `emailAddresses/any(a:a/address …)` tests).
pub const ADDRESSES: &str = "emailAddresses/address";

impl Filter {
    /// The filter as the view's query runs it: OData compares strings without regard to case.
    pub fn to_query(&self) -> query::Filter<String> {
        let text = |p: &str, v: &str, mode| query::Filter::Text {
            prop: p.to_owned(),
            value: v.to_owned(),
            mode,
            ignore_case: true,
        };
        match self {
            Filter::And(a, b) => query::Filter::And(vec![a.to_query(), b.to_query()]),
            Filter::Or(a, b) => query::Filter::Or(vec![a.to_query(), b.to_query()]),
            Filter::Not(a) => query::Filter::Not(Box::new(a.to_query())),
            Filter::Eq(p, v) => text(p, v, TextMatch::Equals),
            Filter::Ne(p, v) => query::Filter::Not(Box::new(text(p, v, TextMatch::Equals))),
            Filter::StartsWith(p, v) => text(p, v, TextMatch::Prefix),
            Filter::Contains(p, v) => text(p, v, TextMatch::Substring),
            Filter::AnyAddress(v) => text(ADDRESSES, v, TextMatch::Equals),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_clients_send() {
        let q = Query::parse(Some(
            "%24select=displayName,emailAddresses&%24top=2&%24skip=4&$count=true",
        ))
        .expect("q");
        assert_eq!(
            q.select,
            Some(vec!["displayName".into(), "emailAddresses".into()])
        );
        assert_eq!((q.top, q.skip, q.count), (Some(2), 4, true));
        let q = Query::parse(Some(
            "%24filter=displayName+eq+%27HQ+Global+Contacts%27&%24top=1",
        ))
        .expect("q");
        assert_eq!(
            q.filter,
            Some(Filter::Eq(
                "displayName".into(),
                "HQ Global Contacts".into()
            ))
        );
        let q = Query::parse(Some(
            "$filter=emailAddresses/any(a:a/address%20eq%20%27ada@example.com%27)",
        ))
        .expect("q");
        assert_eq!(q.filter, Some(Filter::AnyAddress("ada@example.com".into())));
        let f = parse_filter(
            "startswith(surname,'Kl') and (givenName eq 'Eva' or not contains(jobTitle,'x'))",
        )
        .expect("f");
        let values = |p: &String| match p.as_str() {
            "surname" => vec!["Klein".to_string()],
            "givenName" => vec!["eva".to_string()],
            ADDRESSES => vec!["Ada@Example.com".to_string()],
            _ => vec![],
        };
        assert!(f.to_query().matches(&values));
        let ne = parse_filter("givenName ne 'EVA'").expect("f");
        assert!(!ne.to_query().matches(&values), "ne ignores case too");
        let any = parse_filter("emailAddresses/any(a:a/address eq 'ada@example.com')").expect("f");
        assert!(any.to_query().matches(&values));
        assert_eq!(Query::parse(Some("$top=5000")).expect("q").top, Some(1000));
    }

    #[test]
    fn refuses_the_rest() {
        for bad in [
            "displayName gt 'a'",
            "startswith(displayName)",
            "emailAddresses/any(a:startswith(a/address,'x'))",
            "(((",
            "displayName eq",
            "x eq 'y'",
            "displayName eq 'a' zz",
        ] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_filter("displayName gt 'a'").err().map(|e| e.code),
            Some("ErrorInvalidUrlQueryFilter")
        );
        assert!(Query::parse(Some("$orderby=jobTitle")).is_err());
        assert!(Query::parse(Some("$top=x")).is_err());
        assert!(Query::parse(Some("$select=%ZZ")).is_err());
        assert!(Query::parse(Some("$search=abc")).is_err());
        let deep = format!("{}displayName eq 'a'{}", "(".repeat(100), ")".repeat(100));
        assert!(parse_filter(&deep).is_err());
    }
}
