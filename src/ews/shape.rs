//! Response shapes (`ItemShape`, `FolderShape`) and property paths: `FieldURI`,
//! `IndexedFieldURI` and `ExtendedFieldURI`, as requested by clients.
//!
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/itemshape>.

use super::xml::Element;

/// `BaseShape`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BaseShape {
    /// Ids only.
    IdOnly,
    /// A default set.
    Default,
    /// Everything.
    AllProperties,
}

/// An extended (MAPI) property path, with the attributes exactly as the client sent them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtendedField {
    /// Attributes of the `ExtendedFieldURI` that the schema defines ([`EXTENDED_ATTRS`]), echoed
    /// in answers as the client sent them; any other attribute is dropped, so an answer never
    /// carries a name the client made up (which could be no XML name at all).
    pub attrs: Vec<(String, String)>,
    /// What it names.
    pub key: ExtKey,
}

/// The identity of an extended property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExtKey {
    /// A property tag (`PropertyTag="0x3a06"`).
    Tag(u32),
    /// A named property (`DistinguishedPropertySetId`/`PropertySetId` + id or name).
    Named {
        /// Property set.
        set: String,
        /// Numeric id.
        id: Option<u32>,
        /// Name.
        name: Option<String>,
    },
}

/// A property path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Path {
    /// `FieldURI`, e.g. `contacts:DisplayName`.
    Field(String),
    /// `IndexedFieldURI`: URI and index, e.g. `contacts:EmailAddress` / `EmailAddress1`.
    Indexed(String, String),
    /// `ExtendedFieldURI`.
    Extended(ExtendedField),
}

/// The attributes `t:ExtendedFieldURI` has in the EWS schema (types.xsd `PathToExtendedFieldType`).
pub const EXTENDED_ATTRS: [&str; 6] = [
    "DistinguishedPropertySetId",
    "PropertySetId",
    "PropertyTag",
    "PropertyName",
    "PropertyId",
    "PropertyType",
];

fn parse_u32(s: &str) -> Option<u32> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Reads a path element (`t:FieldURI`, `t:IndexedFieldURI`, `t:ExtendedFieldURI`).
pub fn path(e: &Element) -> Option<Path> {
    match e.name.as_str() {
        "FieldURI" => e.attr("FieldURI").map(|u| Path::Field(u.to_owned())),
        "IndexedFieldURI" => Some(Path::Indexed(
            e.attr("FieldURI")?.to_owned(),
            e.attr("FieldIndex")?.to_owned(),
        )),
        "ExtendedFieldURI" => {
            let attrs = e
                .attrs
                .iter()
                .filter(|(k, _)| EXTENDED_ATTRS.contains(&k.as_str()))
                .cloned()
                .collect();
            let key = if let Some(tag) = e.attr("PropertyTag") {
                ExtKey::Tag(parse_u32(tag)?)
            } else {
                let set = e
                    .attr("DistinguishedPropertySetId")
                    .or_else(|| e.attr("PropertySetId"))?
                    .to_owned();
                ExtKey::Named {
                    set,
                    id: e.attr("PropertyId").and_then(parse_u32),
                    name: e.attr("PropertyName").map(str::to_owned),
                }
            };
            Some(Path::Extended(ExtendedField { attrs, key }))
        }
        _ => None,
    }
}

/// A parsed shape.
#[derive(Clone, Debug)]
pub struct Shape {
    /// Base shape.
    pub base: BaseShape,
    /// Additional properties.
    pub extra: Vec<Path>,
}

impl Shape {
    /// Reads `ItemShape`/`FolderShape` (missing: IdOnly).
    pub fn read(e: Option<&Element>) -> Shape {
        let Some(e) = e else {
            return Shape {
                base: BaseShape::IdOnly,
                extra: Vec::new(),
            };
        };
        let base = match e.child_text("BaseShape").map(str::trim) {
            Some("Default") => BaseShape::Default,
            Some("AllProperties") => BaseShape::AllProperties,
            _ => BaseShape::IdOnly,
        };
        let extra = e
            .child("AdditionalProperties")
            .map(|a| a.children.iter().filter_map(path).collect())
            .unwrap_or_default();
        Shape { base, extra }
    }

    /// True when the shape asks for FieldURI `uri` (directly or by base shape membership).
    pub fn field(&self, uri: &str, in_default: bool, in_all: bool) -> bool {
        match self.base {
            BaseShape::AllProperties if in_all => return true,
            BaseShape::Default if in_default => return true,
            _ => {}
        }
        self.extra
            .iter()
            .any(|p| matches!(p, Path::Field(u) if u == uri))
    }

    /// The indexes asked for under an indexed URI (`None`: the whole dictionary).
    pub fn indexes(&self, uri: &str) -> Vec<&str> {
        self.extra
            .iter()
            .filter_map(|p| match p {
                Path::Indexed(u, i) if u == uri => Some(i.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Extended properties asked for, in request order.
    pub fn extended(&self) -> impl Iterator<Item = &ExtendedField> {
        self.extra.iter().filter_map(|p| match p {
            Path::Extended(x) => Some(x),
            _ => None,
        })
    }
}

pub use crate::domain::time::system_time;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(system_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(system_time(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(system_time(1_790_000_000), "2026-09-21T14:13:20Z");
    }

    #[test]
    fn tags() {
        assert_eq!(parse_u32("0xe23"), Some(0xe23));
        assert_eq!(parse_u32("0x0E23"), Some(0xe23));
        assert_eq!(parse_u32("32837"), Some(32837));
    }
}
