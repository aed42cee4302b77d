//! Request XML → a small namespace-resolved element tree, with limits on everything a client
//! controls (size, depth, element count, attribute count); and a thin writer over
//! `quick_xml::Writer` so responses are never built with `format!`.
//!
//! Imports nothing of crmgate: wire parsing stands on its own. Shared by the XML faces (EWS,
//! CardDAV), so every XML body any client sends goes through the same bounded reader.

use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;
use std::collections::HashMap;
use std::sync::Arc;

/// Limits for one request document.
pub const MAX_DEPTH: usize = 64;
/// Most elements in one request.
pub const MAX_ELEMENTS: usize = 200_000;
/// Most attributes on one element.
pub const MAX_ATTRIBUTES: usize = 64;
/// Longest namespace URI (the ones EWS and WebDAV use are under 100 bytes).
pub const MAX_NAMESPACE_BYTES: usize = 1024;
/// Most distinct namespace URIs in one document.
pub const MAX_NAMESPACES: usize = 64;

/// An element: namespace URI, local name, attributes (local name → value), children, text.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Element {
    /// Namespace URI ("" when none). Shared by every element in that namespace, so what
    /// namespace resolution allocates is bounded by the document, not by the element count.
    pub ns: Arc<str>,
    /// Local name.
    pub name: String,
    /// Attributes by local name (namespaces of attributes are not needed by EWS).
    pub attrs: Vec<(String, String)>,
    /// Child elements in order.
    pub children: Vec<Element>,
    /// Concatenated text content.
    pub text: String,
}

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// Not well-formed.
    #[error("malformed XML: {0}")]
    Malformed(String),
    /// Over a limit.
    #[error("{0}")]
    Limit(String),
    /// DTDs and entity declarations are refused.
    #[error("DOCTYPE and entity declarations are not allowed")]
    Doctype,
}

impl Element {
    /// True when the element has this namespace and local name.
    pub fn is(&self, ns: &str, name: &str) -> bool {
        &*self.ns == ns && self.name == name
    }

    /// An attribute value.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first child with this local name (any namespace).
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// All children with this local name.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// Text of the first child with this local name.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }

    /// Follows a path of local names.
    pub fn path(&self, names: &[&str]) -> Option<&Element> {
        let mut cur = self;
        for n in names {
            cur = cur.child(n)?;
        }
        Some(cur)
    }
}

/// Parses a whole document into its root element, within the limits.
pub fn parse(input: &[u8]) -> Result<Element, XmlError> {
    let text = std::str::from_utf8(input).map_err(|_| XmlError::Malformed("not UTF-8".into()))?;
    let mut reader = NsReader::from_str(text);
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    let mut namespaces = Interner::default();
    loop {
        let (resolved, event) = reader
            .read_resolved_event()
            .map_err(|e| XmlError::Malformed(e.to_string()))?;
        match event {
            Event::Start(ref s) | Event::Empty(ref s) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(XmlError::Limit(format!(
                        "more than {MAX_ELEMENTS} elements"
                    )));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::Limit(format!("nesting deeper than {MAX_DEPTH}")));
                }
                if root.is_some() {
                    return Err(XmlError::Malformed("content after the root element".into()));
                }
                let ns = match resolved {
                    ResolveResult::Bound(ns) => namespaces.get(ns.as_ref())?,
                    ResolveResult::Unbound => namespaces.get(b"")?,
                    ResolveResult::Unknown(p) => {
                        return Err(XmlError::Malformed(format!(
                            "undeclared prefix {}",
                            String::from_utf8_lossy(&p)
                        )))
                    }
                };
                let el = start_element(s, ns)?;
                if matches!(event, Event::Empty(_)) {
                    close(el, &mut stack, &mut root);
                } else {
                    stack.push(el);
                }
            }
            Event::End(_) => {
                let el = stack
                    .pop()
                    .ok_or_else(|| XmlError::Malformed("unbalanced end tag".into()))?;
                close(el, &mut stack, &mut root);
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    let s = t
                        .unescape()
                        .map_err(|e| XmlError::Malformed(e.to_string()))?;
                    top.text.push_str(&s);
                }
            }
            Event::CData(c) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&String::from_utf8_lossy(&c));
                }
            }
            Event::DocType(_) => return Err(XmlError::Doctype),
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(XmlError::Malformed(
            "document ends inside an element".into(),
        ));
    }
    root.ok_or_else(|| XmlError::Malformed("no root element".into()))
}

/// The namespace URIs of one document, each allocated once.
#[derive(Default)]
struct Interner {
    map: HashMap<Box<[u8]>, Arc<str>>,
}

impl Interner {
    fn get(&mut self, uri: &[u8]) -> Result<Arc<str>, XmlError> {
        if let Some(a) = self.map.get(uri) {
            return Ok(a.clone());
        }
        if uri.len() > MAX_NAMESPACE_BYTES {
            return Err(XmlError::Limit(format!(
                "a namespace URI longer than {MAX_NAMESPACE_BYTES} bytes"
            )));
        }
        if self.map.len() >= MAX_NAMESPACES {
            return Err(XmlError::Limit(format!(
                "more than {MAX_NAMESPACES} namespaces"
            )));
        }
        let a: Arc<str> = Arc::from(String::from_utf8_lossy(uri).as_ref());
        self.map.insert(uri.into(), a.clone());
        Ok(a)
    }
}

/// True for a name XML allows (`Name`, with at most one colon splitting a prefix from a local
/// part): a name starts with a letter, `_` or a character beyond ASCII and goes on with
/// those, digits, `-` and `.`. The reader underneath takes `< a/>` as an element with an
/// empty name, which no answer could echo as XML.
fn valid_name(raw: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(raw) else {
        return false;
    };
    let mut parts = s.split(':');
    let ok = |p: &str| {
        let mut cs = p.chars();
        match cs.next() {
            Some(c) if c.is_alphabetic() || c == '_' || !c.is_ascii() => {}
            _ => return false,
        }
        cs.all(|c| c.is_alphanumeric() || matches!(c, '-' | '.' | '_') || !c.is_ascii())
    };
    match (parts.next(), parts.next(), parts.next()) {
        (Some(a), None, _) => ok(a),
        (Some(a), Some(b), None) => ok(a) && ok(b),
        _ => false,
    }
}

fn start_element(s: &BytesStart<'_>, ns: Arc<str>) -> Result<Element, XmlError> {
    if !valid_name(s.name().as_ref()) {
        return Err(XmlError::Malformed(format!(
            "\"{}\" is not an element name",
            String::from_utf8_lossy(s.name().as_ref())
                .chars()
                .take(40)
                .collect::<String>()
        )));
    }
    let name = String::from_utf8_lossy(s.local_name().as_ref()).into_owned();
    let mut attrs = Vec::new();
    for a in s.attributes() {
        let a = a.map_err(|e| XmlError::Malformed(e.to_string()))?;
        let key = a.key.as_ref();
        if key == b"xmlns" || key.starts_with(b"xmlns:") {
            continue;
        }
        if attrs.len() >= MAX_ATTRIBUTES {
            return Err(XmlError::Limit(format!(
                "more than {MAX_ATTRIBUTES} attributes"
            )));
        }
        if !valid_name(key) {
            return Err(XmlError::Malformed(format!(
                "\"{}\" is not an attribute name",
                String::from_utf8_lossy(key)
                    .chars()
                    .take(40)
                    .collect::<String>()
            )));
        }
        let local = String::from_utf8_lossy(a.key.local_name().as_ref()).into_owned();
        let value = a
            .unescape_value()
            .map_err(|e| XmlError::Malformed(e.to_string()))?
            .into_owned();
        attrs.push((local, value));
    }
    Ok(Element {
        ns,
        name,
        attrs,
        children: Vec::new(),
        text: String::new(),
    })
}

fn close(el: Element, stack: &mut [Element], root: &mut Option<Element>) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None => *root = Some(el),
    }
}

/// Writes XML into a byte buffer; every text and attribute is escaped by quick-xml.
pub struct Xml {
    w: quick_xml::Writer<Vec<u8>>,
}

impl Default for Xml {
    fn default() -> Self {
        Xml::new()
    }
}

impl Xml {
    /// An empty document with the XML declaration.
    pub fn new() -> Xml {
        let mut w = quick_xml::Writer::new(Vec::with_capacity(4096));
        let _ = w.write_event(Event::Decl(quick_xml::events::BytesDecl::new(
            "1.0",
            Some("utf-8"),
            None,
        )));
        Xml { w }
    }

    /// Opens an element with attributes.
    pub fn open(&mut self, name: &str, attrs: &[(&str, &str)]) {
        let mut s = BytesStart::new(name);
        for (k, v) in attrs {
            s.push_attribute((*k, *v));
        }
        let _ = self.w.write_event(Event::Start(s));
    }

    /// Closes an element.
    pub fn close(&mut self, name: &str) {
        let _ = self.w.write_event(Event::End(BytesEnd::new(name)));
    }

    /// An element with text content.
    pub fn text(&mut self, name: &str, attrs: &[(&str, &str)], text: &str) {
        self.open(name, attrs);
        let _ = self.w.write_event(Event::Text(BytesText::new(text)));
        self.close(name);
    }

    /// An empty element.
    pub fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) {
        let mut s = BytesStart::new(name);
        for (k, v) in attrs {
            s.push_attribute((*k, *v));
        }
        let _ = self.w.write_event(Event::Empty(s));
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.w.get_ref().len()
    }

    /// True before anything but the declaration is written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes written.
    pub fn finish(self) -> Vec<u8> {
        self.w.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_by_namespace_not_prefix() {
        let doc = br#"<?xml version="1.0"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"
            xmlns:x="http://schemas.microsoft.com/exchange/services/2006/types"><soap:Body>
            <x:FieldURI FieldURI="contacts:DisplayName"/><x:V>a &amp; b</x:V></soap:Body></soap:Envelope>"#;
        let root = parse(doc).expect("parses");
        assert!(root.is("http://schemas.xmlsoap.org/soap/envelope/", "Envelope"));
        let body = root.child("Body").expect("body");
        assert!(body.children[0].is(
            "http://schemas.microsoft.com/exchange/services/2006/types",
            "FieldURI"
        ));
        assert_eq!(
            body.children[0].attr("FieldURI"),
            Some("contacts:DisplayName")
        );
        assert_eq!(body.children[1].text, "a & b");
    }

    #[test]
    fn refuses_doctype_depth_and_garbage() {
        let dtd = br#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>"#;
        assert_eq!(parse(dtd), Err(XmlError::Doctype));
        let deep = format!("{}{}", "<a>".repeat(1000), "</a>".repeat(1000));
        assert!(matches!(parse(deep.as_bytes()), Err(XmlError::Limit(_))));
        assert!(matches!(parse(b"<a><b></a>"), Err(XmlError::Malformed(_))));
        assert!(matches!(parse(b"<a>"), Err(XmlError::Malformed(_))));
        assert!(matches!(parse(b"<p:a/>"), Err(XmlError::Malformed(_))));
        assert!(matches!(parse(b""), Err(XmlError::Malformed(_))));
        // Names XML does not allow (the reader underneath takes them).
        for bad in [
            &b"<a>< t:Id=\"x\"/></a>"[..],
            b"<a><1b/></a>",
            b"<a><:b/></a>",
            b"<a><b: /></a>",
            b"<a><p:q:r/></a>",
            b"<a -x=\"1\"/>",
        ] {
            assert!(
                matches!(parse(bad), Err(XmlError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(parse("<a><b-c.d_e é=\"1\"/><_x/><ü/></a>".as_bytes()).is_ok());
    }

    #[test]
    fn namespaces_are_bounded_and_shared() {
        // The shape of the remote OOM: every element in one enormous namespace.
        let uri = "u".repeat(100_000);
        let mut doc = format!("<r xmlns=\"{uri}\">");
        doc.push_str(&"<a/>".repeat(45_000));
        doc.push_str("</r>");
        assert!(matches!(parse(doc.as_bytes()), Err(XmlError::Limit(_))));
        // Many distinct namespaces.
        let many: String = (0..100)
            .map(|i| format!("<p{i}:a xmlns:p{i}=\"urn:{i}\"/>"))
            .collect();
        let doc = format!("<r>{many}</r>");
        assert!(matches!(parse(doc.as_bytes()), Err(XmlError::Limit(_))));
        // A legal namespace is allocated once and shared by all its elements.
        let uri = "urn:x:".repeat(100);
        let doc = format!("<r xmlns=\"{uri}\">{}</r>", "<a/>".repeat(1000));
        let root = parse(doc.as_bytes()).expect("parses");
        assert_eq!(root.children.len(), 1000);
        assert!(root
            .children
            .iter()
            .all(|c| Arc::ptr_eq(&c.ns, &root.ns) && *c.ns == *uri));
    }

    #[test]
    fn writer_escapes() {
        let mut x = Xml::new();
        x.text("t:DisplayName", &[("k", "a\"<")], "Müller & <Söhne>");
        let s = String::from_utf8(x.finish()).expect("utf8");
        assert!(s.contains("Müller &amp; &lt;Söhne&gt;"), "{s}");
        assert!(s.contains("k=\"a&quot;&lt;\""), "{s}");
    }
}
