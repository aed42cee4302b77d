//! The Graph face: `/v1.0/me/...` and `/v1.0/users/{id|upn}/...` contact folders, contacts,
//! `$count`, and delta, with OData key syntax (`contactFolders('ID')`) accepted everywhere.
//! Translation only: folders, membership, ids, sync and writes live in `view`.
//!
//! May import view, domain and serde_json; never ews, crm, replica or store.

pub mod error;
pub mod json;
pub mod odata;

use crate::view::query::{Props, SortKey};
use crate::view::write::{ConflictMode, Planned, WriteError};
use crate::view::{ContactKey, FolderRef, Mailbox, MailboxError, OrderKey, Session};
use error::GraphError;
use odata::Query;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashSet;

/// Scopes of a bearer token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scopes {
    /// Contacts.Read (or ReadWrite).
    pub read: bool,
    /// Contacts.ReadWrite.
    pub write: bool,
}

/// One Graph request, as the server hands it over.
pub struct Request<'a> {
    /// Method.
    pub method: &'a str,
    /// Path after `/v1.0`.
    pub path: &'a str,
    /// Raw query string.
    pub query: Option<&'a str>,
    /// `scheme://host[:port]` as the client reached us.
    pub base: &'a str,
    /// `Prefer: odata.maxpagesize`.
    pub max_page: Option<usize>,
    /// `If-Match`.
    pub if_match: Option<&'a str>,
    /// Body.
    pub body: &'a [u8],
    /// Token scopes.
    pub scopes: Scopes,
}

/// An answer: status, content type, body, extra headers.
#[derive(Debug)]
pub struct Answer {
    /// Status.
    pub status: u16,
    /// Content type.
    pub content_type: &'static str,
    /// Body.
    pub body: Vec<u8>,
    /// Extra headers (Preference-Applied, …).
    pub headers: Vec<(&'static str, String)>,
}

/// The JSON content type Graph answers with.
pub const JSON: &str = "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; charset=utf-8";

fn ok(status: u16, v: &Value) -> Answer {
    Answer {
        status,
        content_type: JSON,
        body: serde_json::to_vec(v).unwrap_or_default(),
        headers: Vec::new(),
    }
}

/// Which mailbox a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Who {
    Me,
    User(String),
}

/// What a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Folders,
    FolderDelta,
    Folder(String),
    ChildFolders(String),
    Contacts(String),
    Count(String),
    Delta(String),
    Contact(Option<String>, String),
}

/// Splits a path into decoded segments, turning `name('key')` into `name`, `key`.
fn segments(path: &str) -> Result<Vec<String>, GraphError> {
    let mut out = Vec::new();
    for raw in path.split('/').filter(|s| !s.is_empty()) {
        let s = odata::decode(&raw.replace('+', "%2B"))?;
        let key = s
            .find("('")
            .filter(|&open| s.ends_with("')") && open + 2 <= s.len() - 2);
        if let Some(open) = key {
            out.push(s[..open].to_owned());
            out.push(s[open + 2..s.len() - 2].replace("''", "'"));
        } else {
            out.push(s);
        }
    }
    Ok(out)
}

fn is_delta(s: &str) -> bool {
    matches!(
        s,
        "delta" | "delta()" | "microsoft.graph.delta" | "microsoft.graph.delta()"
    )
}

fn route(path: &str) -> Result<(Who, Target), GraphError> {
    let segs = segments(path)?;
    let (who, rest) = match segs.as_slice() {
        [me, rest @ ..] if me == "me" => (Who::Me, rest),
        [users, u, rest @ ..] if users == "users" => (Who::User(u.clone()), rest),
        [first, ..] => return Err(GraphError::segment(first)),
        [] => return Err(GraphError::segment("")),
    };
    let s: Vec<&str> = rest.iter().map(|x| x.as_str()).collect();
    let t = match s.as_slice() {
        ["contactFolders"] => Target::Folders,
        ["contactFolders", d] if is_delta(d) => Target::FolderDelta,
        ["contactFolders", f] => Target::Folder(f.to_string()),
        ["contactFolders", f, "childFolders"] => Target::ChildFolders(f.to_string()),
        ["contactFolders", f, "contacts"] => Target::Contacts(f.to_string()),
        ["contactFolders", f, "contacts", "$count"] => Target::Count(f.to_string()),
        ["contactFolders", f, "contacts", d] if is_delta(d) => Target::Delta(f.to_string()),
        ["contactFolders", f, "contacts", c] => Target::Contact(Some(f.to_string()), c.to_string()),
        ["contacts"] => Target::Contacts("contacts".into()),
        ["contacts", "$count"] => Target::Count("contacts".into()),
        ["contacts", d] if is_delta(d) => Target::Delta("contacts".into()),
        ["contacts", c] => Target::Contact(None, c.to_string()),
        [first, ..] => return Err(GraphError::segment(first)),
        [] => return Err(GraphError::segment(path)),
    };
    Ok((who, t))
}

fn mailbox<'a>(session: &Session<'a>, who: &Who) -> Result<Mailbox<'a>, GraphError> {
    match who {
        Who::Me => session.mailbox(None).map_err(|_| GraphError::denied()),
        Who::User(u) => {
            let own = session.mailbox(None).map_err(|_| GraphError::denied())?;
            let key = u.to_lowercase();
            if key == own.login().to_lowercase() || key == own.user_id_str().to_lowercase() {
                return Ok(own);
            }
            let login = session.login_of(u).unwrap_or_else(|| u.clone());
            session.mailbox(Some(&login)).map_err(|e| match e {
                MailboxError::Denied => GraphError::denied(),
                MailboxError::NoSuchMailbox => GraphError::new(
                    404,
                    "ErrorInvalidUser",
                    format!("The requested user '{u}' is invalid."),
                ),
            })
        }
    }
}

fn folder(mb: &Mailbox<'_>, id: &str) -> Result<FolderRef, GraphError> {
    if id == "contacts" {
        return Ok(FolderRef::Contacts);
    }
    let f = mb
        .folder_by_id(&json::from_graph_id(id))
        .map_err(|e| match e {
            crate::view::ViewError::Malformed => GraphError::malformed(),
            _ => GraphError::not_found(),
        })?;
    match f {
        FolderRef::Contacts | FolderRef::Virtual(_) => Ok(f),
        _ => Err(GraphError::not_found()),
    }
}

fn folder_json(mb: &Mailbox<'_>, f: FolderRef) -> Value {
    let info = mb.folder_info(f);
    let parent = info.parent.map(|(_, id)| json::to_graph_id(&id));
    let mut v = json!({"id": json::to_graph_id(&info.id), "displayName": info.display_name, "parentFolderId": parent});
    if f == FolderRef::Contacts {
        v["wellKnownName"] = json!("contacts");
    }
    v
}

fn user_ctx(base: &str, mb: &Mailbox<'_>) -> String {
    format!("{base}/v1.0/$metadata#users('{}')", mb.user_id_str())
}

use crate::http::percent_encode;

/// Hash of a `$select`, which delta tokens are bound to.
fn select_hash(select: &Option<Vec<String>>) -> u64 {
    let mut h = Sha256::new();
    if let Some(s) = select {
        for x in s {
            h.update(x.as_bytes());
            h.update([0]);
        }
    } else {
        h.update(b"*");
    }
    let d = h.finalize();
    let mut a = [0u8; 8];
    a.copy_from_slice(&d[..8]);
    u64::from_be_bytes(a) | 1
}

fn page_size(q: &Query, req: &Request<'_>, default: usize) -> usize {
    let n = match (q.top, req.max_page) {
        (Some(t), Some(m)) => t.min(m),
        (Some(t), None) => t,
        (None, Some(m)) => m,
        (None, None) => default,
    };
    n.clamp(1, odata::MAX_TOP)
}

/// The same URL with `$skip` replaced (nextLinks are absolute and keep the other options).
fn next_link(req: &Request<'_>, skip: usize) -> String {
    let mut parts: Vec<String> = req
        .query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| {
            let k = p.split('=').next().unwrap_or("");
            let k = odata::decode(k).unwrap_or_default();
            k != "$skip"
        })
        .map(str::to_owned)
        .collect();
    parts.push(format!("%24skip={skip}"));
    format!("{}/v1.0{}?{}", req.base, req.path, parts.join("&"))
}

/// How Graph's property names reach the view's data, for the view's query.
struct GraphProps;

impl Props for GraphProps {
    type Prop = String;

    fn order_key(&self, _: &String) -> Option<OrderKey> {
        None
    }

    fn lookup(&self, mb: &Mailbox<'_>, p: &String, value: &str) -> Option<Vec<ContactKey>> {
        (p == odata::ADDRESSES)
            .then(|| mb.contacts_by_address(&value.to_lowercase()))
            .flatten()
    }

    fn identity(&self, _: &Mailbox<'_>, _: ContactKey, _: &String) -> Option<Vec<String>> {
        None
    }

    fn values(&self, item: &crate::view::Item, p: &String) -> Vec<String> {
        if p == odata::ADDRESSES {
            return item.card.emails.iter().map(|e| e.address.clone()).collect();
        }
        json::prop(item, p).into_iter().collect()
    }

    /// `$orderby` compares the text without regard to case (a missing value as empty).
    fn order(&self, a: &[String], b: &[String]) -> std::cmp::Ordering {
        let key = |v: &[String]| v.first().map(|s| s.to_lowercase()).unwrap_or_default();
        key(a).cmp(&key(b))
    }
}

/// Answers a read (GET) for the signed-in session.
/// True when answering the read `req` is known beforehand to be little work: folder
/// requests, one contact, and a delta poll with few changes waiting. Such requests are
/// answered on the async worker; all others go where heavy work goes.
pub fn is_light(session: &Session<'_>, req: &Request<'_>) -> bool {
    let Ok((who, target)) = route(req.path) else {
        return true;
    };
    let Ok(mb) = mailbox(session, &who) else {
        return true;
    };
    let Ok(q) = Query::parse(req.query) else {
        return true;
    };
    match target {
        Target::Folders | Target::ChildFolders(_) | Target::Folder(_) | Target::FolderDelta => {
            q.filter.is_none()
        }
        Target::Contact(..) => true,
        Target::Delta(f) => {
            let token = q.deltatoken.as_deref().or(q.skiptoken.as_deref());
            match (folder(&mb, &f), token) {
                (Ok(FolderRef::Virtual(v)), Some(t)) => mb
                    .changes_pending(v, &json::from_graph_id(t))
                    .is_some_and(|n| n <= 16),
                (Ok(FolderRef::Virtual(_)), None) => false,
                _ => true,
            }
        }
        _ => false,
    }
}

/// Answers a GET.
pub fn read(session: &Session<'_>, req: &Request<'_>) -> Result<Answer, GraphError> {
    if !req.scopes.read {
        return Err(GraphError::denied());
    }
    let (who, target) = route(req.path)?;
    let mb = mailbox(session, &who)?;
    let q = Query::parse(req.query)?;
    let ctx = user_ctx(req.base, &mb);
    let counting = matches!(target, Target::Count(_));
    match target {
        Target::Folders | Target::ChildFolders(_) => {
            let parent = match &target {
                Target::ChildFolders(f) => folder(&mb, f)?,
                _ => FolderRef::Contacts,
            };
            let mut list: Vec<Value> = mb
                .children(parent)
                .into_iter()
                .map(|f| folder_json(&mb, f))
                .collect();
            if let Some(f) = q.filter.as_ref().map(odata::Filter::to_query) {
                list.retain(|v| {
                    f.matches(&|p| {
                        v.get(p.as_str())
                            .and_then(|x| x.as_str())
                            .map(str::to_owned)
                            .into_iter()
                            .collect()
                    })
                });
            }
            let total = list.len();
            let size = page_size(&q, req, 10);
            let page: Vec<Value> = list.into_iter().skip(q.skip).take(size).collect();
            let mut out = json!({"@odata.context": format!("{ctx}/contactFolders"), "value": page});
            if q.count {
                out["@odata.count"] = json!(total);
            }
            if q.skip.saturating_add(size) < total {
                out["@odata.nextLink"] = json!(next_link(req, q.skip + size));
            }
            Ok(ok(200, &out))
        }
        Target::Folder(f) => {
            let f = folder(&mb, &f)?;
            let mut v = folder_json(&mb, f);
            v["@odata.context"] = json!(format!("{ctx}/contactFolders/$entity"));
            Ok(ok(200, &v))
        }
        Target::Contacts(f) | Target::Count(f) => {
            let fr = folder(&mb, &f)?;
            let fid = json::to_graph_id(&mb.folder_id(fr));
            let filter = q.filter.as_ref().map(odata::Filter::to_query);
            let sort: Vec<SortKey<String>> = q
                .orderby
                .iter()
                .map(|(p, desc)| SortKey {
                    prop: p.clone(),
                    descending: *desc,
                })
                .collect();
            let (order, v) = match fr {
                FolderRef::Virtual(v) => {
                    let unbounded = &mut |_| Ok::<(), std::convert::Infallible>(());
                    let order = match mb.query(v, filter.as_ref(), &sort, &GraphProps, unbounded) {
                        Ok(o) => o,
                        Err(never) => match never {},
                    };
                    (order, Some(v))
                }
                _ => (Default::default(), None),
            };
            if counting {
                return Ok(Answer {
                    status: 200,
                    content_type: "text/plain; charset=utf-8",
                    body: order.len().to_string().into_bytes(),
                    headers: Vec::new(),
                });
            }
            // Cards only for the page.
            let items: Vec<crate::view::Item> = match v {
                Some(v) => order
                    .iter()
                    .skip(q.skip)
                    .take(page_size(&q, req, 10))
                    .filter_map(|c| mb.item(v, *c))
                    .collect(),
                None => Vec::new(),
            };
            let total = order.len();
            let size = page_size(&q, req, 10);
            let sel = q.select.as_deref();
            let value: Vec<Value> = items.iter().map(|i| json::contact(i, &fid, sel)).collect();
            let what = match &q.select {
                Some(s) => format!("contacts({})", s.join(",")),
                None => "contacts".into(),
            };
            let mut out = json!({"@odata.context": format!("{ctx}/contactFolders('{fid}')/{what}"), "value": value});
            if q.count {
                out["@odata.count"] = json!(total);
            }
            if q.skip.saturating_add(size) < total {
                out["@odata.nextLink"] = json!(next_link(req, q.skip + size));
            }
            let mut a = ok(200, &out);
            if req.max_page.is_some() {
                a.headers
                    .push(("preference-applied", format!("odata.maxpagesize={size}")));
            }
            Ok(a)
        }
        Target::Contact(f, c) => {
            let item = mb
                .item_by_id(&json::from_graph_id(&c))
                .map_err(|e| match e {
                    crate::view::ViewError::Malformed => GraphError::malformed(),
                    _ => GraphError::not_found(),
                })?;
            if let Some(f) = f {
                if folder(&mb, &f)? != FolderRef::Virtual(item.folder) {
                    return Err(GraphError::not_found());
                }
            }
            let fid = json::to_graph_id(&mb.folder_id(FolderRef::Virtual(item.folder)));
            let mut v = json::contact(&item, &fid, q.select.as_deref());
            v["@odata.context"] = json!(format!("{ctx}/contacts/$entity"));
            Ok(ok(200, &v))
        }
        Target::Delta(f) => delta(&mb, req, &q, &f, &ctx),
        Target::FolderDelta => {
            let token = q
                .deltatoken
                .as_deref()
                .or(q.skiptoken.as_deref())
                .map(json::from_graph_id);
            let (changed, state) = mb
                .hierarchy_changes(FolderRef::Contacts, token.as_deref())
                .map_err(|_| GraphError::sync_state())?;
            let value: Vec<Value> = changed
                .into_iter()
                .map(|(_, f)| {
                    let mut v = folder_json(&mb, f);
                    v["@odata.type"] = json!("#microsoft.graph.contactFolder");
                    v
                })
                .collect();
            let link = format!(
                "{}/v1.0{}?$deltatoken={}",
                req.base,
                req.path,
                json::to_graph_id(&state)
            );
            Ok(ok(
                200,
                &json!({"@odata.context": format!("{}/v1.0/$metadata#Collection(contactFolder)", req.base), "value": value, "@odata.deltaLink": link}),
            ))
        }
    }
}

fn delta(
    mb: &Mailbox<'_>,
    req: &Request<'_>,
    q: &Query,
    f: &str,
    _ctx: &str,
) -> Result<Answer, GraphError> {
    let token = q
        .deltatoken
        .as_deref()
        .or(q.skiptoken.as_deref())
        .map(json::from_graph_id);
    // With a token, the token is what the client presents: a foreign folder means a foreign
    // token (410), whatever else.
    let fr = match folder(mb, f) {
        Ok(fr) => fr,
        Err(_) if token.is_some() => return Err(GraphError::sync_state()),
        Err(e) => return Err(e),
    };
    // The $select of the first call is bound into the tokens; later calls need not repeat it.
    let select: Option<Vec<String>> = match (&q.select, &token) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(_)) => None,
        (None, None) => None,
    };
    let size = req.max_page.unwrap_or(100).clamp(1, 512);
    let binding = select_hash(&select);
    let fid = json::to_graph_id(&mb.folder_id(fr));
    let page = match fr {
        FolderRef::Virtual(v) => mb.changes(v, token.as_deref(), size, &HashSet::new(), binding),
        other => mb.empty_changes(other, token.as_deref()),
    }
    .map_err(|_| GraphError::sync_state())?;
    // Full-shape pages are written straight to bytes; a $select takes the JSON-tree path.
    let mut body: Vec<u8> = Vec::with_capacity(page.changes.len() * 1024 + 512);
    body.extend_from_slice(b"{\"@odata.context\":");
    body.extend_from_slice(
        &serde_json::to_vec(&format!("{}/v1.0/$metadata#Collection(contact)", req.base))
            .unwrap_or_default(),
    );
    body.extend_from_slice(b",\"value\":[");
    for (n, (_, it)) in page.changes.iter().enumerate() {
        if n > 0 {
            body.push(b',');
        }
        match it {
            Ok(item) if select.is_none() => body.extend_from_slice(&json::contact_bytes(item, &fid, true)),
            Ok(item) => {
                let mut v = json::contact(item, &fid, select.as_deref());
                v["@odata.type"] = json!("#microsoft.graph.contact");
                body.extend_from_slice(&serde_json::to_vec(&v).unwrap_or_default());
            }
            Err(id) => body.extend_from_slice(
                &serde_json::to_vec(&json!({"@odata.type": "#microsoft.graph.contact", "id": json::to_graph_id(id), "@removed": {"reason": "deleted"}}))
                    .unwrap_or_default(),
            ),
        }
    }
    body.push(b']');
    let token = json::to_graph_id(&page.state);
    let base = format!("{}/v1.0{}", req.base, req.path);
    // The token is bound to the $select it was made with, so the links carry it: a client
    // follows them as they are and gets the same shape.
    let select_param = match &select {
        Some(s) => format!("$select={}&", percent_encode(&s.join(","))),
        None => String::new(),
    };
    let (key, link) = if page.last {
        (
            "@odata.deltaLink",
            format!("{base}?{select_param}$deltatoken={token}"),
        )
    } else {
        (
            "@odata.nextLink",
            format!("{base}?{select_param}$skiptoken={token}"),
        )
    };
    body.extend_from_slice(format!(",\"{key}\":").as_bytes());
    body.extend_from_slice(&serde_json::to_vec(&link).unwrap_or_default());
    body.push(b'}');
    let mut a = Answer {
        status: 200,
        content_type: JSON,
        body,
        headers: Vec::new(),
    };
    if req.max_page.is_some() {
        a.headers
            .push(("preference-applied", format!("odata.maxpagesize={size}")));
    }
    Ok(a)
}

/// How the write path's errors reach Graph clients: the one mapping site.
pub fn write_error(e: &WriteError) -> GraphError {
    match e {
        WriteError::Malformed => GraphError::malformed(),
        WriteError::NotFound | WriteError::FolderNotFound => GraphError::not_found(),
        WriteError::Forbidden => GraphError::denied(),
        WriteError::Conflict { .. } => GraphError::conflict(),
        WriteError::Invalid(errs) => GraphError::new(
            400,
            "ErrorInvalidProperty",
            errs.iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        WriteError::Refused { reason, .. } => GraphError::new(
            400,
            "ErrorInvalidProperty",
            format!("The CRM refused the change: {reason}"),
        ),
        WriteError::Unavailable { .. } => GraphError::new(
            503,
            "ServiceNotAvailable",
            "The CRM is unavailable; retry later.",
        ),
        WriteError::Internal => GraphError::new(500, "UnknownError", "An internal error occurred."),
    }
}

/// A planned write and how to answer it.
#[derive(Debug)]
pub struct WritePlan {
    /// The plan.
    pub planned: Planned,
    /// 201 (create), 200 (update) or 204 (delete).
    pub status: u16,
}

/// Plans a POST, PATCH or DELETE.
pub fn plan_write(session: &Session<'_>, req: &Request<'_>) -> Result<WritePlan, GraphError> {
    if !req.scopes.write {
        return Err(GraphError::denied());
    }
    let (who, target) = route(req.path)?;
    let mb = mailbox(session, &who)?;
    let body = || -> Result<Value, GraphError> {
        crate::json_guard::parse(req.body)
            .map_err(|e| GraphError::bad(format!("The request body is not valid JSON: {e}")))
    };
    let conflict = || match req.if_match.map(str::trim) {
        None | Some("*") => (None, ConflictMode::AlwaysOverwrite),
        Some(tag) => {
            let k = tag.trim_start_matches("W/").trim_matches('"').to_owned();
            (Some(k), ConflictMode::NeverOverwrite)
        }
    };
    match (req.method, target) {
        ("POST", Target::Contacts(f)) => {
            let fr = folder(&mb, &f)?;
            let edits = json::edits(&body()?)?;
            let planned = mb
                .plan_create(fr, &edits, None)
                .map_err(|e| write_error(&e))?;
            Ok(WritePlan {
                planned,
                status: 201,
            })
        }
        ("PATCH", Target::Contact(f, c)) => {
            let edits = json::edits(&body()?)?;
            let id = json::from_graph_id(&c);
            if let Some(f) = f {
                let item = mb.item_by_id(&id).map_err(|_| GraphError::not_found())?;
                if folder(&mb, &f)? != FolderRef::Virtual(item.folder) {
                    return Err(GraphError::not_found());
                }
            }
            let (key, mode) = conflict();
            let planned = mb
                .plan_update(&id, key.as_deref(), mode, &edits)
                .map_err(|e| write_error(&e))?;
            Ok(WritePlan {
                planned,
                status: 200,
            })
        }
        ("DELETE", Target::Contact(_, c)) => {
            let id = json::from_graph_id(&c);
            if let (Some(k), _) = conflict() {
                let item = mb.item_by_id(&id).map_err(|_| GraphError::not_found())?;
                if item.change_key != k {
                    return Err(GraphError::conflict());
                }
            }
            let planned = mb
                .plan_delete(&id, &session.cfg.policies)
                .map_err(|e| write_error(&e))?;
            Ok(WritePlan {
                planned,
                status: 204,
            })
        }
        (m, _) => Err(GraphError::new(
            405,
            "ErrorInvalidRequest",
            format!("{m} is not supported on this resource."),
        )),
    }
}

/// Answers an executed write.
pub fn answer_write(
    session: &Session<'_>,
    req: &Request<'_>,
    plan: &WritePlan,
) -> Result<Answer, GraphError> {
    if plan.status == 204 {
        return Ok(Answer {
            status: 204,
            content_type: JSON,
            body: Vec::new(),
            headers: Vec::new(),
        });
    }
    let (who, _) = route(req.path)?;
    let mb = mailbox(session, &who)?;
    let item = mb
        .item_after_write(plan.planned.folder, &plan.planned.contact_id)
        .ok_or_else(GraphError::not_found)?;
    let fid = json::to_graph_id(&mb.folder_id(FolderRef::Virtual(item.folder)));
    let mut v = json::contact(&item, &fid, None);
    v["@odata.context"] = json!(format!("{}/contacts/$entity", user_ctx(req.base, &mb)));
    Ok(ok(plan.status, &v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_all_spellings() {
        assert_eq!(
            route("/me/contactFolders").expect("r"),
            (Who::Me, Target::Folders)
        );
        assert_eq!(
            route("/me/contactFolders('A-b_c')/contacts/delta")
                .expect("r")
                .1,
            Target::Delta("A-b_c".into())
        );
        assert_eq!(
            route("/me/contactFolders/X/contacts/delta()").expect("r").1,
            Target::Delta("X".into())
        );
        assert_eq!(
            route("/me/contactFolders/X/contacts/microsoft.graph.delta()")
                .expect("r")
                .1,
            Target::Delta("X".into())
        );
        assert_eq!(
            route("/users/alice%40contoso.com/contacts/Y").expect("r"),
            (
                Who::User("alice@contoso.com".into()),
                Target::Contact(None, "Y".into())
            )
        );
        assert_eq!(
            route("/me/contacts/$count").expect("r").1,
            Target::Count("contacts".into())
        );
        assert!(route("/me/messages").is_err());
        assert!(route("/me/contacts/%ZZ").is_err());
    }

    #[test]
    fn ids_round_trip_url_safe() {
        let ews = "ab+/cd==";
        assert_eq!(json::to_graph_id(ews), "ab-_cd==");
        assert_eq!(json::from_graph_id(&json::to_graph_id(ews)), ews);
    }
}
