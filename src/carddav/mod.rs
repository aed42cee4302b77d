//! The CardDAV face (RFC 6352 over a WebDAV subset of RFC 4918, with RFC 6578 sync and RFC
//! 5397 principals): each user's virtual folders as address books, under
//!
//! ```text
//! /dav/                                   root: current-user-principal
//! /dav/principals/{login}/                the user's principal: addressbook-home-set
//! /dav/addressbooks/{login}/              home: one address book per virtual folder
//! /dav/addressbooks/{login}/my/           "HQ My Contacts"
//! /dav/addressbooks/{login}/global/       "HQ Global Contacts" (unless global_scope = off)
//! /dav/addressbooks/{login}/my/{id}.vcf   one contact
//! ```
//!
//! Translation only: folders, items, changes, the query and writes are the view's. A path
//! naming another user, a folder the user does not have, or a contact not in that folder for
//! this user is 404, so nothing about others is revealed; sync tokens are the view's sealed,
//! user- and folder-bound states.

pub mod vcard;

use crate::domain::patch::{Edit, Field};
use crate::domain::rules::VirtualFolder;
use crate::view::query::{Filter, Props, TextMatch};
use crate::view::write::{ConflictMode, Planned, WriteError};
use crate::view::{ContactKey, FolderRef, Item, ItemChange, Mailbox, OrderKey, Session};
use crate::xml::{self, Element, Xml};
use std::collections::HashSet;
use vcard::Version;

/// WebDAV.
pub const NS_DAV: &str = "DAV:";
/// CardDAV.
pub const NS_CARD: &str = "urn:ietf:params:xml:ns:carddav";
/// CalendarServer extensions (`getctag`).
pub const NS_CS: &str = "http://calendarserver.org/ns/";
/// Where the face lives.
pub const ROOT: &str = "/dav/";
/// What a sync token starts with (RFC 6578 wants a URI).
const TOKEN_PREFIX: &str = "urn:crmgate:sync:";
/// Most changes in one `sync-collection` answer (more: 507 and a token to go on with).
pub const MAX_SYNC_PAGE: usize = 1000;

/// The bounds of one request, from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest answer.
    pub max_answer_bytes: usize,
    /// Largest vCard (also `max-resource-size`).
    pub max_resource_bytes: usize,
    /// Most hrefs in one multiget.
    pub max_hrefs: usize,
}

/// A request as the face needs it.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// Method.
    pub method: &'a str,
    /// Path as received (percent-encoded).
    pub path: &'a str,
    /// `Depth`.
    pub depth: Option<&'a str>,
    /// Body.
    pub body: &'a [u8],
    /// `Content-Type`.
    pub content_type: Option<&'a str>,
    /// `Accept`.
    pub accept: Option<&'a str>,
    /// `If-Match`.
    pub if_match: Option<&'a str>,
    /// `If-None-Match`.
    pub if_none_match: Option<&'a str>,
}

/// An answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// Status.
    pub status: u16,
    /// Headers beyond `Content-Type`.
    pub headers: Vec<(&'static str, String)>,
    /// `Content-Type` (empty: none).
    pub content_type: &'static str,
    /// Body.
    pub body: Vec<u8>,
}

impl Answer {
    fn empty(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            content_type: "",
            body: Vec::new(),
        }
    }

    fn text(status: u16, msg: &str) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            content_type: "text/plain; charset=utf-8",
            body: format!("{msg}\n").into_bytes(),
        }
    }

    fn xml(status: u16, body: Vec<u8>) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            content_type: "application/xml; charset=utf-8",
            body,
        }
    }

    /// The answer with one more header.
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Answer {
        self.headers.push((name, value.into()));
        self
    }
}

/// `<d:error>` with one precondition element (RFC 4918 §16), e.g. `d:valid-sync-token`.
pub fn precondition(status: u16, element: &str) -> Answer {
    let mut x = Xml::new();
    x.open("d:error", &[("xmlns:d", NS_DAV), ("xmlns:card", NS_CARD)]);
    x.empty(element, &[]);
    x.close("d:error");
    Answer::xml(status, x.finish())
}

fn not_found() -> Answer {
    Answer::text(404, "Not Found")
}

/// The methods the face answers, for `Allow`.
pub const ALLOW: &str = "OPTIONS, GET, HEAD, PUT, DELETE, PROPFIND, REPORT";

/// What a path names.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Root,
    Principal,
    Home,
    Book(VirtualFolder),
    Card(VirtualFolder, String),
}

fn decode_segment(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Percent-encodes a path segment (unreserved characters and `@` stay).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn book_segment(f: VirtualFolder) -> &'static str {
    match f {
        VirtualFolder::My => "my",
        VirtualFolder::Global => "global",
    }
}

/// The path of the principal of `login`.
pub fn principal_href(login: &str) -> String {
    format!("{ROOT}principals/{}/", encode_segment(login))
}

/// The path of the address-book home of `login`.
pub fn home_href(login: &str) -> String {
    format!("{ROOT}addressbooks/{}/", encode_segment(login))
}

fn book_href(login: &str, f: VirtualFolder) -> String {
    format!("{}{}/", home_href(login), book_segment(f))
}

fn card_href(login: &str, f: VirtualFolder, contact_id: &str) -> String {
    format!("{}{}.vcf", book_href(login, f), encode_segment(contact_id))
}

/// Reads a path (or an href, which may carry scheme and host) for the signed-in user.
fn target(mb: &Mailbox<'_>, path: &str) -> Option<Target> {
    let path = match path.find("://") {
        Some(i) => &path[i + 3..][path[i + 3..].find('/')?..],
        None => path,
    };
    let path = path.split(['?', '#']).next()?;
    let rest = path.strip_prefix("/dav")?;
    let segs: Vec<String> = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(decode_segment)
        .collect::<Option<_>>()?;
    let own = |login: &str| login.eq_ignore_ascii_case(&mb.login());
    let book = |s: &str| -> Option<VirtualFolder> {
        let f = match s {
            "my" => VirtualFolder::My,
            "global" => VirtualFolder::Global,
            _ => return None,
        };
        mb.virtual_folders().contains(&f).then_some(f)
    };
    match segs.as_slice() {
        [] => Some(Target::Root),
        [p, l] if p == "principals" && own(l) => Some(Target::Principal),
        [a, l] if a == "addressbooks" && own(l) => Some(Target::Home),
        [a, l, b] if a == "addressbooks" && own(l) => book(b).map(Target::Book),
        [a, l, b, name] if a == "addressbooks" && own(l) => {
            let id = name.strip_suffix(".vcf").filter(|id| !id.is_empty())?;
            Some(Target::Card(book(b)?, id.to_owned()))
        }
        _ => None,
    }
}

/// Bodies up to this size may be looked at on the async worker to tell a light request.
const LIGHT_BODY_BYTES: usize = 4096;

/// True for requests known beforehand to be little work, answered on the async worker: one
/// resource, Depth 0, a sync poll with few changes waiting, a multiget of a few cards.
/// Everything else goes where heavy work goes.
pub fn is_light(session: &Session<'_>, req: &Request<'_>) -> bool {
    match req.method {
        "OPTIONS" | "GET" | "HEAD" | "PROPPATCH" | "MKCOL" | "MOVE" | "COPY" => true,
        "PROPFIND" => req.depth.map(str::trim) != Some("1"),
        "REPORT" if req.body.len() <= LIGHT_BODY_BYTES => {
            let Ok(mb) = session.mailbox(None) else {
                return true;
            };
            let Some(Target::Book(f)) = target(&mb, req.path) else {
                return true;
            };
            let Ok(body) = xml::parse(req.body) else {
                return true;
            };
            if body.is(NS_DAV, "sync-collection") {
                return body
                    .child_text("sync-token")
                    .and_then(state_of)
                    .and_then(|st| mb.changes_pending(f, &st))
                    .is_some_and(|n| n <= 16);
            }
            body.is(NS_CARD, "addressbook-multiget") && body.children_named("href").count() <= 10
        }
        _ => false,
    }
}

/// True for the methods that write (planned, then executed through the write service).
pub fn is_write(req: &Request<'_>) -> bool {
    matches!(req.method, "PUT" | "DELETE")
}

/// Answers a read (everything but PUT and DELETE) for the signed-in session.
pub fn read(session: &Session<'_>, req: &Request<'_>, limits: Limits) -> Answer {
    let Ok(mb) = session.mailbox(None) else {
        return not_found();
    };
    match req.method {
        "OPTIONS" => read_options(),
        "PROPFIND" => match target(&mb, req.path) {
            Some(t) => propfind(&mb, &t, req, limits),
            None => not_found(),
        },
        "REPORT" => match target(&mb, req.path) {
            Some(Target::Book(f)) => report(&mb, f, req, limits),
            Some(_) => precondition(403, "d:supported-report"),
            None => not_found(),
        },
        "GET" | "HEAD" => match target(&mb, req.path) {
            Some(Target::Card(f, id)) => get(&mb, f, &id, req),
            Some(_) => Answer::text(405, "Collections have no content to GET").with("Allow", ALLOW),
            None => not_found(),
        },
        "PROPPATCH" => match target(&mb, req.path) {
            Some(_) => proppatch(req),
            None => not_found(),
        },
        // Address books are the CRM's folders: none is made, moved or copied here.
        "MKCOL" | "MKCALENDAR" => precondition(403, "d:need-privileges"),
        "MOVE" | "COPY" | "ACL" => match target(&mb, req.path) {
            Some(_) => precondition(403, "d:need-privileges"),
            None => not_found(),
        },
        _ => Answer::text(405, "Method not allowed").with("Allow", ALLOW),
    }
}

/// The answer to `OPTIONS` (no credentials needed: discovery probes come first).
pub fn read_options() -> Answer {
    Answer::empty(200)
        .with("DAV", "1, 3, addressbook")
        .with("Allow", ALLOW)
}

/// A property name: namespace and local name.
type Name = (String, String);

enum Want {
    Props(Vec<Name>),
    All,
    Names,
}

fn parse_body(body: &[u8]) -> Result<Option<Element>, Answer> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    xml::parse(body)
        .map(Some)
        .map_err(|e| Answer::text(400, &format!("The body is no XML this server reads: {e}")))
}

fn wanted(e: Option<&Element>) -> Result<Want, Answer> {
    let Some(root) = e else {
        return Ok(Want::All);
    };
    if !root.is(NS_DAV, "propfind") {
        return Err(Answer::text(400, "PROPFIND takes a DAV:propfind body"));
    }
    if root.child("allprop").is_some() {
        return Ok(Want::All);
    }
    if root.child("propname").is_some() {
        return Ok(Want::Names);
    }
    match root.child("prop") {
        Some(p) => Ok(Want::Props(names(p))),
        None => Err(Answer::text(
            400,
            "DAV:propfind needs prop, allprop or propname",
        )),
    }
}

fn names(prop: &Element) -> Vec<Name> {
    prop.children
        .iter()
        .take(64)
        .map(|c| (c.ns.to_string(), c.name.clone()))
        .collect()
}

/// Writes a multistatus document; `responses` writes the `d:response` elements.
fn multistatus(f: impl FnOnce(&mut Xml)) -> Xml {
    let mut x = Xml::new();
    x.open(
        "d:multistatus",
        &[
            ("xmlns:d", NS_DAV),
            ("xmlns:card", NS_CARD),
            ("xmlns:cs", NS_CS),
        ],
    );
    f(&mut x);
    x.close("d:multistatus");
    x
}

/// What a resource shows, property by property.
struct Shown<'m, 'a> {
    mb: &'m Mailbox<'a>,
    target: Target,
    href: String,
    item: Option<Item>,
    limits: Limits,
    version: Version,
}

/// The properties `allprop` and `propname` list, per kind of resource.
fn listed(t: &Target) -> &'static [(&'static str, &'static str)] {
    const COMMON: [(&str, &str); 3] = [
        (NS_DAV, "resourcetype"),
        (NS_DAV, "displayname"),
        (NS_DAV, "current-user-principal"),
    ];
    match t {
        Target::Root => &COMMON,
        Target::Principal => &[
            (NS_DAV, "resourcetype"),
            (NS_DAV, "displayname"),
            (NS_DAV, "current-user-principal"),
            (NS_DAV, "principal-URL"),
            (NS_CARD, "addressbook-home-set"),
        ],
        Target::Home => &[
            (NS_DAV, "resourcetype"),
            (NS_DAV, "displayname"),
            (NS_DAV, "current-user-principal"),
            (NS_DAV, "current-user-privilege-set"),
        ],
        Target::Book(_) => &[
            (NS_DAV, "resourcetype"),
            (NS_DAV, "displayname"),
            (NS_DAV, "current-user-principal"),
            (NS_DAV, "current-user-privilege-set"),
            (NS_DAV, "supported-report-set"),
            (NS_DAV, "sync-token"),
            (NS_CS, "getctag"),
            (NS_CARD, "addressbook-description"),
            (NS_CARD, "supported-address-data"),
            (NS_CARD, "max-resource-size"),
        ],
        Target::Card(..) => &[
            (NS_DAV, "resourcetype"),
            (NS_DAV, "getetag"),
            (NS_DAV, "getcontenttype"),
            (NS_DAV, "getlastmodified"),
        ],
    }
}

/// An empty element for a property of a namespace crmgate has no prefix for (or of none:
/// `xmlns:x=""` is not XML, so such a property is written unprefixed, in no namespace). A
/// property whose namespace may not be bound to a prefix (`xml`'s and `xmlns`'s own), is no
/// plain URI or is longer than any real one is left out of the answer rather than echoed as
/// XML a client cannot read.
fn foreign_prop(x: &mut Xml, ns: &str, name: &str) {
    const RESERVED: [&str; 2] = [
        "http://www.w3.org/2000/xmlns/",
        "http://www.w3.org/XML/1998/namespace",
    ];
    let plain = ns
        .bytes()
        .all(|b| b.is_ascii_graphic() && !b"<>&\"'".contains(&b));
    if RESERVED.contains(&ns) || ns.len() > 256 || !plain {
        return;
    }
    if ns.is_empty() {
        x.empty(name, &[]);
    } else {
        x.empty(&format!("x:{name}"), &[("xmlns:x", ns)]);
    }
}

fn prefix_of(ns: &str) -> Option<&'static str> {
    match ns {
        NS_DAV => Some("d"),
        NS_CARD => Some("card"),
        NS_CS => Some("cs"),
        _ => None,
    }
}

/// `Tue, 01 Dec 2026 05:30:00 GMT` for unix seconds.
fn http_date(secs: u64) -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

fn etag(change_key: &str) -> String {
    format!("\"{change_key}\"")
}

/// A sync token for a view state.
fn token(state: &str) -> String {
    format!(
        "{TOKEN_PREFIX}{}",
        state.replace('+', "-").replace('/', "_")
    )
}

fn state_of(token: &str) -> Option<String> {
    Some(
        token
            .trim()
            .strip_prefix(TOKEN_PREFIX)?
            .replace('-', "+")
            .replace('_', "/"),
    )
}

impl Shown<'_, '_> {
    /// Writes one property's element; false when the resource has no such property.
    fn write(&self, x: &mut Xml, ns: &str, name: &str) -> bool {
        let Some(p) = prefix_of(ns) else {
            return false;
        };
        let tag = format!("{p}:{name}");
        let login = self.mb.login();
        match (ns, name, &self.target) {
            (NS_DAV, "resourcetype", t) => {
                x.open(&tag, &[]);
                match t {
                    Target::Root | Target::Home => x.empty("d:collection", &[]),
                    Target::Principal => x.empty("d:principal", &[]),
                    Target::Book(_) => {
                        x.empty("d:collection", &[]);
                        x.empty("card:addressbook", &[]);
                    }
                    Target::Card(..) => {}
                }
                x.close(&tag);
            }
            (NS_DAV, "displayname", t) => {
                let name = match t {
                    Target::Root => "crmgate".to_owned(),
                    Target::Principal => self.mb.user_name(),
                    Target::Home => "Address books".to_owned(),
                    Target::Book(f) => self.mb.folder_info(FolderRef::Virtual(*f)).display_name,
                    Target::Card(..) => match &self.item {
                        Some(i) => i.card.display_name.clone(),
                        None => return false,
                    },
                };
                x.text(&tag, &[], &name);
            }
            (NS_DAV, "current-user-principal", _)
            | (NS_DAV, "principal-URL", Target::Principal) => {
                x.open(&tag, &[]);
                x.text("d:href", &[], &principal_href(&login));
                x.close(&tag);
            }
            (NS_DAV, "owner", Target::Book(_) | Target::Home) => {
                x.open(&tag, &[]);
                x.text("d:href", &[], &principal_href(&login));
                x.close(&tag);
            }
            (NS_DAV, "principal-collection-set", _) => {
                x.open(&tag, &[]);
                x.text("d:href", &[], &format!("{ROOT}principals/"));
                x.close(&tag);
            }
            (NS_CARD, "addressbook-home-set", Target::Principal) => {
                x.open(&tag, &[]);
                x.text("d:href", &[], &home_href(&login));
                x.close(&tag);
            }
            (NS_DAV, "current-user-privilege-set", t) => {
                let writable = match t {
                    Target::Book(f) | Target::Card(f, _) => {
                        self.mb.writable(FolderRef::Virtual(*f))
                    }
                    _ => false,
                };
                x.open(&tag, &[]);
                let mut privs = vec!["d:read", "d:read-current-user-privilege-set"];
                if writable {
                    privs.extend(["d:write", "d:write-content", "d:bind", "d:unbind"]);
                }
                for p in privs {
                    x.open("d:privilege", &[]);
                    x.empty(p, &[]);
                    x.close("d:privilege");
                }
                x.close(&tag);
            }
            (NS_DAV, "supported-report-set", Target::Book(_)) => {
                x.open(&tag, &[]);
                for r in [
                    "card:addressbook-multiget",
                    "card:addressbook-query",
                    "d:sync-collection",
                ] {
                    x.open("d:supported-report", &[]);
                    x.open("d:report", &[]);
                    x.empty(r, &[]);
                    x.close("d:report");
                    x.close("d:supported-report");
                }
                x.close(&tag);
            }
            (NS_DAV, "sync-token", Target::Book(f)) | (NS_CS, "getctag", Target::Book(f)) => {
                x.text(&tag, &[], &token(&self.mb.current_state(*f)));
            }
            (NS_CARD, "addressbook-description", Target::Book(f)) => {
                let d = match f {
                    VirtualFolder::My => {
                        "Contacts of your companies, projects and leads, live from the CRM"
                    }
                    VirtualFolder::Global => "Everyone else in your CRM scope, live from the CRM",
                };
                x.text(&tag, &[], d);
            }
            (NS_CARD, "supported-address-data", Target::Book(_)) => {
                x.open(&tag, &[]);
                for v in ["3.0", "4.0"] {
                    x.empty(
                        "card:address-data-type",
                        &[("content-type", "text/vcard"), ("version", v)],
                    );
                }
                x.close(&tag);
            }
            (NS_CARD, "max-resource-size", Target::Book(_)) => {
                x.text(&tag, &[], &self.limits.max_resource_bytes.to_string());
            }
            (NS_DAV, "getetag", Target::Card(..)) => match &self.item {
                Some(i) => x.text(&tag, &[], &etag(&i.change_key)),
                None => return false,
            },
            (NS_DAV, "getcontenttype", Target::Card(..)) => {
                x.text(
                    &tag,
                    &[],
                    &format!(
                        "text/vcard; charset=utf-8; version={}",
                        self.version.as_str()
                    ),
                );
            }
            (NS_DAV, "getlastmodified", Target::Card(..)) => match &self.item {
                Some(i) => x.text(&tag, &[], &http_date(i.modified)),
                None => return false,
            },
            (NS_CARD, "address-data", Target::Card(..)) => match &self.item {
                Some(i) => x.text(&tag, &[], &vcard::render(i, self.version)),
                None => return false,
            },
            _ => return false,
        }
        true
    }

    /// One `d:response` with the properties asked for.
    fn response(&self, x: &mut Xml, want: &Want) {
        x.open("d:response", &[]);
        x.text("d:href", &[], &self.href);
        let mut missing: Vec<&Name> = Vec::new();
        x.open("d:propstat", &[]);
        x.open("d:prop", &[]);
        match want {
            Want::All => {
                for (ns, name) in listed(&self.target) {
                    self.write(x, ns, name);
                }
            }
            Want::Names => {
                for (ns, name) in listed(&self.target) {
                    if let Some(p) = prefix_of(ns) {
                        x.empty(&format!("{p}:{name}"), &[]);
                    }
                }
            }
            Want::Props(names) => {
                for n in names {
                    if !self.write(x, &n.0, &n.1) {
                        missing.push(n);
                    }
                }
            }
        }
        x.close("d:prop");
        x.text("d:status", &[], "HTTP/1.1 200 OK");
        x.close("d:propstat");
        if !missing.is_empty() {
            x.open("d:propstat", &[]);
            x.open("d:prop", &[]);
            for (ns, name) in missing {
                match prefix_of(ns) {
                    Some(p) => x.empty(&format!("{p}:{name}"), &[]),
                    None => foreign_prop(x, ns, name),
                }
            }
            x.close("d:prop");
            x.text("d:status", &[], "HTTP/1.1 404 Not Found");
            x.close("d:propstat");
        }
        x.close("d:response");
    }
}

fn too_large(limits: Limits) -> Answer {
    Answer::text(
        507,
        &format!(
            "The answer would be larger than {} bytes; ask for less (Depth 0, a sync-collection \
             with a limit, or a multiget of fewer hrefs).",
            limits.max_answer_bytes
        ),
    )
}

fn propfind(mb: &Mailbox<'_>, t: &Target, req: &Request<'_>, limits: Limits) -> Answer {
    let depth = match req.depth.map(str::trim) {
        None | Some("0") => 0,
        Some("1") => 1,
        Some(d) if d.eq_ignore_ascii_case("infinity") => {
            return precondition(403, "d:propfind-finite-depth")
        }
        Some(_) => return Answer::text(400, "Depth is 0, 1 or infinity"),
    };
    let body = match parse_body(req.body) {
        Ok(b) => b,
        Err(a) => return a,
    };
    let want = match wanted(body.as_ref()) {
        Ok(w) => w,
        Err(a) => return a,
    };
    let login = mb.login();
    let version = Version::V3;
    let item = match t {
        Target::Card(f, id) => match item_of(mb, *f, id) {
            Some(i) => Some(i),
            None => return not_found(),
        },
        _ => None,
    };
    let href = match t {
        Target::Root => ROOT.to_owned(),
        Target::Principal => principal_href(&login),
        Target::Home => home_href(&login),
        Target::Book(f) => book_href(&login, *f),
        Target::Card(f, id) => card_href(&login, *f, id),
    };
    let shown = Shown {
        mb,
        target: t.clone(),
        href,
        item,
        limits,
        version,
    };
    let mut too_big = false;
    let x = multistatus(|x| {
        shown.response(x, &want);
        if depth == 0 {
            return;
        }
        match t {
            Target::Home => {
                for f in mb.virtual_folders() {
                    Shown {
                        mb,
                        target: Target::Book(f),
                        href: book_href(&login, f),
                        item: None,
                        limits,
                        version,
                    }
                    .response(x, &want);
                }
            }
            Target::Book(f) => {
                // A listing of etags (what clients ask Depth 1 for) needs no card: only a
                // display name or the vCard itself does.
                let needs_card = match &want {
                    Want::Props(names) => names
                        .iter()
                        .any(|(_, n)| n == "displayname" || n == "address-data"),
                    Want::All | Want::Names => false,
                };
                for c in mb.contacts(*f) {
                    let item = if needs_card {
                        mb.item(*f, c)
                    } else {
                        Some(Item {
                            folder: *f,
                            contact_id: mb.contact_id(c).to_owned(),
                            id: String::new(),
                            change_key: mb.change_key(c),
                            uid: mb.contact_uid(c),
                            modified: mb.contact_modified(c),
                            card: Default::default(),
                        })
                    };
                    let Some(item) = item else { continue };
                    Shown {
                        mb,
                        target: Target::Card(*f, item.contact_id.clone()),
                        href: card_href(&login, *f, &item.contact_id),
                        item: Some(item),
                        limits,
                        version,
                    }
                    .response(x, &want);
                    if x.len() > limits.max_answer_bytes {
                        too_big = true;
                        return;
                    }
                }
            }
            _ => {}
        }
    });
    if too_big {
        return too_large(limits);
    }
    Answer::xml(207, x.finish())
}

/// The item of contact `id` in folder `f`, if this user sees it there.
fn item_of(mb: &Mailbox<'_>, f: VirtualFolder, id: &str) -> Option<Item> {
    mb.item_by_id(&mb.item_id_for(f, id)).ok()
}

/// The vCard version asked for through `Accept` or `address-data`.
fn version_from_accept(accept: Option<&str>) -> Version {
    match accept {
        Some(a) if a.replace(' ', "").contains("version=4.0") => Version::V4,
        _ => Version::V3,
    }
}

fn get(mb: &Mailbox<'_>, f: VirtualFolder, id: &str, req: &Request<'_>) -> Answer {
    let Some(item) = item_of(mb, f, id) else {
        return not_found();
    };
    let v = version_from_accept(req.accept);
    let body = if req.method == "HEAD" {
        Vec::new()
    } else {
        vcard::render(&item, v).into_bytes()
    };
    Answer {
        status: 200,
        headers: vec![
            ("ETag", etag(&item.change_key)),
            ("Last-Modified", http_date(item.modified)),
        ],
        content_type: match v {
            Version::V3 => "text/vcard; charset=utf-8",
            Version::V4 => "text/vcard; charset=utf-8; version=4.0",
        },
        body,
    }
}

fn proppatch(req: &Request<'_>) -> Answer {
    let body = match parse_body(req.body) {
        Ok(Some(b)) => b,
        Ok(None) => return Answer::text(400, "PROPPATCH needs a body"),
        Err(a) => return a,
    };
    let mut props: Vec<Name> = Vec::new();
    for op in body
        .children
        .iter()
        .filter(|c| c.name == "set" || c.name == "remove")
    {
        if let Some(p) = op.child("prop") {
            props.extend(names(p));
        }
    }
    let x = multistatus(|x| {
        x.open("d:response", &[]);
        x.text("d:href", &[], req.path);
        x.open("d:propstat", &[]);
        x.open("d:prop", &[]);
        for (ns, name) in &props {
            match prefix_of(ns) {
                Some(p) => x.empty(&format!("{p}:{name}"), &[]),
                None => foreign_prop(x, ns, name),
            }
        }
        x.close("d:prop");
        x.text("d:status", &[], "HTTP/1.1 403 Forbidden");
        x.open("d:error", &[]);
        x.empty("d:cannot-modify-protected-property", &[]);
        x.close("d:error");
        x.text(
            "d:responsedescription",
            &[],
            "crmgate's address books are kept by the CRM; their properties are read-only",
        );
        x.close("d:propstat");
        x.close("d:response");
    });
    Answer::xml(207, x.finish())
}

fn report(mb: &Mailbox<'_>, f: VirtualFolder, req: &Request<'_>, limits: Limits) -> Answer {
    let body = match parse_body(req.body) {
        Ok(Some(b)) => b,
        Ok(None) => return Answer::text(400, "REPORT needs a body"),
        Err(a) => return a,
    };
    let props = body.child("prop").map(names).unwrap_or_default();
    let version = body
        .child("prop")
        .and_then(|p| p.child("address-data"))
        .and_then(|a| a.attr("version"))
        .map(|v| if v == "4.0" { Version::V4 } else { Version::V3 })
        .unwrap_or(Version::V3);
    let want = Want::Props(if props.is_empty() {
        vec![(NS_DAV.to_owned(), "getetag".to_owned())]
    } else {
        props
    });
    let login = mb.login();
    let limit = body
        .child("limit")
        .and_then(|l| l.child_text("nresults"))
        .and_then(|n| n.trim().parse::<usize>().ok());
    if body.is(NS_CARD, "addressbook-multiget") {
        let hrefs: Vec<&str> = body.children_named("href").map(|h| h.text.trim()).collect();
        if hrefs.len() > limits.max_hrefs {
            return Answer::text(
                413,
                &format!("A multiget names at most {} hrefs", limits.max_hrefs),
            );
        }
        let mut too_big = false;
        let x = multistatus(|x| {
            for h in hrefs {
                let item = match target(mb, h) {
                    Some(Target::Card(g, id)) if g == f => item_of(mb, g, &id),
                    _ => None,
                };
                match item {
                    Some(i) => Shown {
                        mb,
                        target: Target::Card(f, i.contact_id.clone()),
                        href: h.to_owned(),
                        item: Some(i),
                        limits,
                        version,
                    }
                    .response(x, &want),
                    None => {
                        x.open("d:response", &[]);
                        x.text("d:href", &[], h);
                        x.text("d:status", &[], "HTTP/1.1 404 Not Found");
                        x.close("d:response");
                    }
                }
                if x.len() > limits.max_answer_bytes {
                    too_big = true;
                    return;
                }
            }
        });
        if too_big {
            return too_large(limits);
        }
        return Answer::xml(207, x.finish());
    }
    if body.is(NS_DAV, "sync-collection") {
        let tok = body.child_text("sync-token").unwrap_or("").trim();
        let state = if tok.is_empty() {
            None
        } else {
            match state_of(tok) {
                Some(s) => Some(s),
                None => return precondition(403, "d:valid-sync-token"),
            }
        };
        let max = limit.unwrap_or(MAX_SYNC_PAGE).clamp(1, MAX_SYNC_PAGE);
        let page = match mb.changes(f, state.as_deref(), max, &HashSet::new(), 0) {
            Ok(p) => p,
            Err(_) => return precondition(403, "d:valid-sync-token"),
        };
        let mut too_big = false;
        let x = multistatus(|x| {
            for (ch, it) in page.changes {
                match (ch, it) {
                    (ItemChange::Delete, Err(id)) => {
                        let Some((g, contact)) = mb.contact_of_item(&id) else {
                            continue;
                        };
                        x.open("d:response", &[]);
                        x.text("d:href", &[], &card_href(&login, g, &contact));
                        x.text("d:status", &[], "HTTP/1.1 404 Not Found");
                        x.close("d:response");
                    }
                    (_, Ok(item)) => Shown {
                        mb,
                        target: Target::Card(f, item.contact_id.clone()),
                        href: card_href(&login, f, &item.contact_id),
                        item: Some(item),
                        limits,
                        version,
                    }
                    .response(x, &want),
                    _ => {}
                }
                if x.len() > limits.max_answer_bytes {
                    too_big = true;
                    return;
                }
            }
            if !page.last {
                // RFC 6578 §3.6: a truncated answer names the collection with 507 and hands
                // over the token to go on with.
                x.open("d:response", &[]);
                x.text("d:href", &[], &book_href(&login, f));
                x.text("d:status", &[], "HTTP/1.1 507 Insufficient Storage");
                x.close("d:response");
            }
            x.text("d:sync-token", &[], &token(&page.state));
        });
        if too_big {
            return too_large(limits);
        }
        return Answer::xml(207, x.finish());
    }
    if body.is(NS_CARD, "addressbook-query") {
        let filter = match query_filter(body.child("filter")) {
            Ok(f) => f,
            Err(a) => return a,
        };
        let order = match mb.query(f, filter.as_ref(), &[], &VcardProps, &mut |_| {
            Ok::<(), std::convert::Infallible>(())
        }) {
            Ok(o) => o,
            Err(never) => match never {},
        };
        let max = limit.unwrap_or(usize::MAX);
        let mut too_big = false;
        let x = multistatus(|x| {
            for c in order.iter().take(max) {
                let Some(item) = mb.item(f, *c) else { continue };
                Shown {
                    mb,
                    target: Target::Card(f, item.contact_id.clone()),
                    href: card_href(&login, f, &item.contact_id),
                    item: Some(item),
                    limits,
                    version,
                }
                .response(x, &want);
                if x.len() > limits.max_answer_bytes {
                    too_big = true;
                    return;
                }
            }
            if order.len() > max {
                x.open("d:response", &[]);
                x.text("d:href", &[], &book_href(&login, f));
                x.text("d:status", &[], "HTTP/1.1 507 Insufficient Storage");
                x.open("d:error", &[]);
                x.empty("d:number-of-matches-within-limits", &[]);
                x.close("d:error");
                x.close("d:response");
            }
        });
        if too_big {
            return too_large(limits);
        }
        return Answer::xml(207, x.finish());
    }
    precondition(403, "d:supported-report")
}

/// Most `prop-filter`s and `text-match`es in one query.
const MAX_FILTER_NODES: usize = 64;

/// How vCard property names reach the view's data, for `addressbook-query`.
struct VcardProps;

impl Props for VcardProps {
    type Prop = String;

    fn order_key(&self, _: &String) -> Option<OrderKey> {
        None
    }

    fn lookup(&self, mb: &Mailbox<'_>, p: &String, value: &str) -> Option<Vec<ContactKey>> {
        match p.as_str() {
            "EMAIL" => mb.contacts_by_address(&value.to_lowercase()),
            "UID" => Some(mb.contacts_by_lower_id(&value.to_lowercase())),
            _ => None,
        }
    }

    fn identity(&self, mb: &Mailbox<'_>, c: ContactKey, p: &String) -> Option<Vec<String>> {
        (p == "UID").then(|| vec![mb.contact_id(c).to_owned()])
    }

    fn values(&self, item: &Item, p: &String) -> Vec<String> {
        let c = &item.card;
        let one = |v: &Option<String>| v.iter().cloned().collect::<Vec<_>>();
        match p.as_str() {
            "FN" => vec![c.display_name.clone()],
            "N" => [&c.surname, &c.given_name, &c.middle_name, &c.title]
                .into_iter()
                .flatten()
                .cloned()
                .collect(),
            "EMAIL" => c
                .emails
                .iter()
                .filter(|e| !e.placeholder)
                .map(|e| e.address.clone())
                .collect(),
            "TEL" => c.phones.iter().map(|(_, n)| n.clone()).collect(),
            "ORG" => [&c.company_name, &c.department]
                .into_iter()
                .flatten()
                .cloned()
                .collect(),
            "TITLE" => one(&c.job_title),
            "UID" => vec![item.contact_id.clone()],
            "URL" => one(&c.web_page),
            "NOTE" => one(&c.notes),
            "BDAY" => one(&c.birthday),
            "CATEGORIES" => c.categories.clone(),
            "ADR" => c
                .addresses
                .iter()
                .flat_map(|(_, a)| {
                    [&a.street, &a.city, &a.region, &a.postal_code, &a.country]
                        .into_iter()
                        .flatten()
                        .cloned()
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Reads `card:filter` (RFC 6352 §10.5) into the view's filter.
fn query_filter(e: Option<&Element>) -> Result<Option<Filter<String>>, Answer> {
    let Some(e) = e else {
        return Ok(None);
    };
    let unsupported = || precondition(403, "card:supported-filter");
    let mut nodes = 0usize;
    let mut props = Vec::new();
    for pf in e.children_named("prop-filter") {
        let name = pf
            .attr("name")
            .ok_or_else(|| Answer::text(400, "prop-filter needs a name"))?
            .to_ascii_uppercase();
        if pf.child("param-filter").is_some() {
            return Err(unsupported());
        }
        let mut tests = Vec::new();
        if pf.child("is-not-defined").is_some() {
            tests.push(Filter::Not(Box::new(Filter::Exists(name.clone()))));
        }
        for tm in pf.children_named("text-match") {
            nodes += 1;
            let mode = match tm.attr("match-type").unwrap_or("contains") {
                "equals" => TextMatch::Equals,
                "contains" => TextMatch::Substring,
                "starts-with" => TextMatch::Prefix,
                "ends-with" => TextMatch::Suffix,
                _ => return Err(unsupported()),
            };
            let ignore_case = match tm.attr("collation").unwrap_or("i;unicode-casemap") {
                "i;unicode-casemap" | "i;ascii-casemap" => true,
                "i;octet" => false,
                _ => return Err(precondition(403, "card:supported-collation")),
            };
            let t = Filter::Text {
                prop: name.clone(),
                value: tm.text.clone(),
                mode,
                ignore_case,
            };
            tests.push(if tm.attr("negate-condition") == Some("yes") {
                Filter::Not(Box::new(t))
            } else {
                t
            });
        }
        if tests.is_empty() {
            tests.push(Filter::Exists(name));
        }
        nodes += 1;
        props.push(if pf.attr("test") == Some("allof") {
            Filter::And(tests)
        } else {
            Filter::Or(tests)
        });
        if nodes > MAX_FILTER_NODES {
            return Err(Answer::text(
                400,
                &format!("A query takes at most {MAX_FILTER_NODES} filters"),
            ));
        }
    }
    if props.is_empty() {
        return Ok(None);
    }
    Ok(Some(if e.attr("test") == Some("allof") {
        Filter::And(props)
    } else {
        Filter::Or(props)
    }))
}

/// A planned PUT or DELETE, with what the answer needs.
#[derive(Clone, Debug)]
pub struct Write {
    /// The plan.
    pub planned: Planned,
    /// Created (201) or changed (204).
    pub created: bool,
    /// vCard properties crmgate dropped (for the audit log).
    pub dropped: Vec<String>,
    /// Where a created card lives when that is not the URL it was PUT to (a name crmgate
    /// cannot use as an id).
    pub location: Option<String>,
}

/// Why a write was not planned: the answer to give.
pub type Refusal = Answer;

fn strip_etag(v: &str) -> String {
    v.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_owned()
}

/// Plans a PUT or DELETE. Fields the CRM cannot hold are dropped (and named), not refused.
pub fn plan_write(session: &Session<'_>, req: &Request<'_>) -> Result<Write, Refusal> {
    let Ok(mb) = session.mailbox(None) else {
        return Err(not_found());
    };
    let (f, id) = match target(&mb, req.path) {
        Some(Target::Card(f, id)) => (f, id),
        Some(_) => {
            return Err(Answer::text(405, "Only address objects are written").with("Allow", ALLOW))
        }
        None => return Err(not_found()),
    };
    let existing = item_of(&mb, f, &id);
    let if_match = req.if_match.map(strip_etag);
    match (&existing, &if_match) {
        (None, Some(_)) => return Err(Answer::text(412, "The resource does not exist")),
        (Some(i), Some(m)) if m != "*" && *m != i.change_key => {
            return Err(Answer::text(412, "The resource changed; fetch it again"))
        }
        (Some(_), _) if req.if_none_match.map(str::trim) == Some("*") => {
            return Err(Answer::text(412, "The resource exists"))
        }
        _ => {}
    }
    if req.method == "DELETE" {
        let Some(item) = existing else {
            return Err(not_found());
        };
        let planned = mb
            .plan_delete(&item.id, &session.cfg.policies)
            .map_err(|e| write_error(&e))?;
        return Ok(Write {
            planned,
            created: false,
            dropped: Vec::new(),
            location: None,
        });
    }
    let ct = req
        .content_type
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if ct != "text/vcard" && ct != "text/x-vcard" && ct != "text/directory" {
        return Err(Answer::text(415, "An address object is sent as text/vcard"));
    }
    if !mb.writable(FolderRef::Virtual(f)) {
        return Err(precondition(403, "d:need-privileges"));
    }
    let text =
        std::str::from_utf8(req.body).map_err(|_| Answer::text(400, "The vCard is not UTF-8"))?;
    let parsed =
        vcard::parse(text).map_err(|e| precondition_text(400, "card:valid-address-data", &e.0))?;
    let mut edits = parsed.edits;
    let mut dropped = parsed.dropped;
    // What the CRM cannot hold is dropped, one refusal at a time, never refused: a client
    // refused over a field it cannot leave out would try again forever.
    for _ in 0..16 {
        let plan = match &existing {
            Some(item) => mb.plan_update(
                &item.id,
                if_match.as_deref().filter(|m| *m != "*"),
                ConflictMode::NeverOverwrite,
                &edits,
            ),
            None => mb.plan_create(FolderRef::Virtual(f), &edits, Some(&id)),
        };
        match plan {
            Ok(planned) => {
                let location = (existing.is_none() && planned.contact_id != id)
                    .then(|| card_href(&mb.login(), f, &planned.contact_id));
                return Ok(Write {
                    planned,
                    created: existing.is_none(),
                    dropped,
                    location,
                });
            }
            Err(WriteError::Refused { field, .. }) => {
                let before = edits.len();
                drop_refused(&mut edits, &field);
                if edits.len() == before {
                    return Err(precondition_text(
                        403,
                        "card:valid-address-data",
                        &format!("The CRM cannot hold {field}"),
                    ));
                }
                dropped.push(field);
            }
            Err(e) => return Err(write_error(&e)),
        }
    }
    Err(write_error(&WriteError::CONFLICT))
}

/// Drops the edits that set what the CRM refused (`field`: a contact field's name, or the
/// name of a multi-valued field whose extra values it cannot hold: the last one goes).
fn drop_refused(edits: &mut Vec<Edit>, field: &str) {
    let sets = |f: &Field, e: &Edit| matches!(e, Edit::Set(x, _) | Edit::SetList(x, _) if x == f);
    let single: Option<Field> = match field {
        "middle_name" => Some(Field::MiddleName),
        "department" => Some(Field::Department),
        "notes" => Some(Field::Notes),
        "categories" => Some(Field::Categories),
        "title" => Some(Field::Title),
        "job_title" => Some(Field::JobTitle),
        "birthday" => Some(Field::Birthday),
        _ => None,
    };
    if let Some(f) = single {
        edits.retain(|e| !sets(&f, e));
        return;
    }
    let matches_kind = |e: &Edit| -> bool {
        let Edit::Set(f, _) = e else { return false };
        match (field, f) {
            ("emails", Field::Email(_)) => true,
            ("websites", Field::WebPage) => true,
            ("addresses", Field::Address(..)) => true,
            (k, Field::Phone(_)) if k.starts_with("phones") => true,
            _ => false,
        }
    };
    if let Some(last) = edits.iter().rposition(matches_kind) {
        // An address is one value of several parts: its parts go together.
        if let Edit::Set(Field::Address(slot, _), _) = edits[last] {
            edits.retain(|e| !matches!(e, Edit::Set(Field::Address(s, _), _) if *s == slot));
        } else {
            edits.remove(last);
        }
    }
}

fn precondition_text(status: u16, element: &str, text: &str) -> Answer {
    let mut x = Xml::new();
    x.open("d:error", &[("xmlns:d", NS_DAV), ("xmlns:card", NS_CARD)]);
    x.empty(element, &[]);
    x.text("d:responsedescription", &[], text);
    x.close("d:error");
    Answer::xml(status, x.finish())
}

/// The one place a write error becomes a CardDAV answer.
pub fn write_error(e: &WriteError) -> Answer {
    match e {
        WriteError::Malformed | WriteError::NotFound | WriteError::FolderNotFound => not_found(),
        WriteError::Forbidden => precondition(403, "d:need-privileges"),
        WriteError::Conflict { .. } => Answer::text(412, "The resource changed; fetch it again"),
        WriteError::Invalid(errors) => {
            let text: Vec<String> = errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect();
            precondition_text(400, "card:valid-address-data", &text.join("; "))
        }
        WriteError::Refused { field, reason } => precondition_text(
            403,
            "card:valid-address-data",
            &format!("The CRM refused {field}: {reason}"),
        ),
        WriteError::Unavailable { retry_after_ms } => Answer::text(
            503,
            "The CRM is unavailable; nothing was written. Try again later.",
        )
        .with(
            "Retry-After",
            retry_after_ms.div_ceil(1000).max(1).to_string(),
        ),
        WriteError::Internal => Answer::text(500, "Internal error; nothing was written"),
    }
}

/// The answer to a PUT or DELETE done.
pub fn answer_write(w: &Write) -> Answer {
    if w.created {
        // No ETag: what is stored differs from what was sent (RFC 6352 §6.3.2.3), so the
        // client fetches it.
        match &w.location {
            Some(l) => Answer::empty(201).with("Location", l.clone()),
            None => Answer::empty(201),
        }
    } else {
        Answer::empty(204)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_segments_round_trip() {
        let s = "ab+/cd==";
        assert_eq!(state_of(&token(s)).as_deref(), Some(s));
        assert_eq!(state_of("http://other/1"), None);
        assert_eq!(encode_segment("a b@x.test/ü"), "a%20b@x.test%2F%C3%BC");
        assert_eq!(
            decode_segment("a%20b@x.test%2F%C3%BC").as_deref(),
            Some("a b@x.test/ü")
        );
        assert_eq!(decode_segment("%zz"), None);
        assert_eq!(http_date(1_796_103_000), "Tue, 01 Dec 2026 05:30:00 GMT");
    }

    #[test]
    fn refused_fields_drop_their_edits_only() {
        let mut edits = vec![
            Edit::Set(Field::MiddleName, "M".into()),
            Edit::Set(Field::Email(1), "a@x.test".into()),
            Edit::Set(Field::Email(2), "b@x.test".into()),
            Edit::Delete(Field::Email(3)),
        ];
        drop_refused(&mut edits, "middle_name");
        assert_eq!(edits.len(), 3);
        drop_refused(&mut edits, "emails");
        assert_eq!(
            edits,
            vec![
                Edit::Set(Field::Email(1), "a@x.test".into()),
                Edit::Delete(Field::Email(3))
            ]
        );
    }
}
