//! The admin API (`/admin/v1`): records of the embedded CRM in the dataset format, and the
//! explanation of any visibility decision. Authenticated and role-checked by the server.
//!
//! | method | path | |
//! |---|---|---|
//! | GET | `/admin/v1/{kind}?offset=&limit=` | list, ordered by id |
//! | GET | `/admin/v1/{kind}/{id}` | one record, `ETag` = CRM version |
//! | PUT | `/admin/v1/{kind}/{id}` | upsert the whole record (`If-Match`, `If-None-Match: *`) |
//! | DELETE | `/admin/v1/{kind}/{id}` | delete (`If-Match`) |
//! | GET | `/admin/v1/explain?user=LOGIN&contact=ID` | why the contact is where it is |
//! | GET | `/admin/v1/preview?user=LOGIN&limit=N` | both folders with counts and first entries |
//! | GET | `/admin/v1/audit?limit=N` | the newest client writes (who, when, contact, fields, result) |

// Handlers return a ready response as their error: it is built once, on the way out.
#![allow(clippy::result_large_err)]

pub mod records;
use crate::app::{App, AppError};
use crate::auth::Principal;
use crate::crm::{CrmBackend, CrmError, Precondition};
use crate::domain::rules::VirtualFolder;
use crate::domain::{Kind, Record};
use crate::http::{error, json, read_body, Resp};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ETAG, IF_MATCH, IF_NONE_MATCH, RETRY_AFTER};
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};

const MAX_LIMIT: usize = 10_000;

/// Decodes `%XX` escapes (and `+` as space when `plus` is set).
pub fn percent_decode(s: &str, plus: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Parses a query string into (name, value) pairs.
pub fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((percent_decode(k, true)?, percent_decode(v, true)?))
        })
        .collect()
}

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn public_json(app: &App, r: &Record) -> Value {
    let mut v = match r {
        Record::User(u) if app.signins.is_some() => {
            Record::User(app.signed_in_as(u.clone())).to_json()
        }
        _ => r.to_json(),
    };
    if let Some(o) = v.as_object_mut() {
        o.remove("password_hash");
        o.remove("password");
    }
    v
}

fn app_error(e: AppError) -> Resp {
    match e {
        AppError::Invalid(problems) => {
            let details: Vec<Value> = problems
                .iter()
                .map(|p| json!({"path": p.path, "message": p.message}))
                .collect();
            let msg = problems
                .first()
                .map(|p| p.to_string())
                .unwrap_or_else(|| "invalid record".into());
            json(
                StatusCode::UNPROCESSABLE_ENTITY,
                &json!({"error": {"code": "invalid", "message": msg, "details": details}}),
            )
        }
        AppError::Crm(CrmError::NotFound) => {
            error(StatusCode::NOT_FOUND, "not_found", "no such record")
        }
        AppError::Crm(CrmError::AlreadyExists) => error(
            StatusCode::PRECONDITION_FAILED,
            "already_exists",
            "the record exists already",
        ),
        AppError::Crm(CrmError::PreconditionFailed { .. }) => error(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            "the record changed since the version given in If-Match",
        ),
        AppError::Crm(CrmError::Invalid(problems)) => app_error(AppError::Invalid(problems)),
        AppError::Crm(CrmError::Unavailable {
            retry_after,
            reason,
        }) => {
            tracing::warn!(%reason, "CRM unavailable");
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "crm_unavailable",
                "the CRM is unavailable; retry later",
            );
            let secs = retry_after.map(|d| d.as_secs().max(1)).unwrap_or(5);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(RETRY_AFTER, v);
            }
            r
        }
        other => {
            tracing::error!(error = %other, "admin request failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; see the server log",
            )
        }
    }
}

fn etag(mut r: Resp, version: &str) -> Resp {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        r.headers_mut().insert(ETAG, v);
    }
    r
}

fn precondition(req: &Request<Incoming>) -> Precondition {
    let h = req.headers();
    if let Some(v) = h.get(IF_MATCH).and_then(|v| v.to_str().ok()) {
        let v = v.trim().trim_start_matches("W/").trim_matches('"');
        if v == "*" {
            return Precondition::MustExist;
        }
        return Precondition::Version(v.to_owned());
    }
    if h.get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        == Some("*")
    {
        return Precondition::MustNotExist;
    }
    Precondition::None
}

/// The mailbox mirror's state: progress of the fill and every mailbox with its lag and last
/// error.
fn mirror_status(app: &App) -> Resp {
    let Some(m) = &app.mirror else {
        return error(
            StatusCode::NOT_FOUND,
            "mirror_off",
            "the mailbox mirror is off (no [mirror] section in the config)",
        );
    };
    let status = m.status();
    let (filled, total, written, eta) = m.progress(&status);
    json(
        StatusCode::OK,
        &json!({
            "progress": {
                "mailboxes_filled": filled, "mailboxes": total,
                "contacts_written": written, "eta_secs": eta,
            },
            "mailboxes": status,
        }),
    )
}

/// `POST /admin/v1/mirror/resync?user=LOGIN`: rebuild one mailbox from what it holds.
fn mirror_resync(app: &App, query: &[(String, String)]) -> Resp {
    let Some(m) = &app.mirror else {
        return error(
            StatusCode::NOT_FOUND,
            "mirror_off",
            "the mailbox mirror is off (no [mirror] section in the config)",
        );
    };
    let Some(user) = param(query, "user") else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "user=LOGIN is required",
        );
    };
    if m.resync(user) {
        json(
            StatusCode::ACCEPTED,
            &json!({"resync": user, "state": "queued"}),
        )
    } else {
        error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no mirrored mailbox for that login (yet)",
        )
    }
}

/// Answers one admin request.
pub async fn handle(app: &App, who: &Principal, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_owned();
    let query = query_pairs(req.uri().query());
    let rest = path.trim_start_matches("/admin/v1").trim_matches('/');
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let method = req.method().clone();
    match (method, segs.as_slice()) {
        (Method::GET, ["explain"]) => explain(app, &query),
        (Method::GET, ["preview"]) => preview(app, &query),
        (Method::GET, ["mirror"]) => mirror_status(app),
        (Method::POST, ["mirror", "resync"]) => mirror_resync(app, &query),
        (Method::GET, ["audit"]) => {
            let limit = param(&query, "limit")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(100)
                .min(MAX_LIMIT);
            match app.audit_tail(limit) {
                Ok(items) => json(StatusCode::OK, &json!({ "items": items })),
                Err(e) => app_error(e),
            }
        }
        (Method::GET, [kind]) => match Kind::from_plural(kind) {
            Some(k) => list(app, k, &query),
            None => unknown_kind(kind),
        },
        (m, [kind, id]) => {
            let Some(k) = Kind::from_plural(kind) else {
                return unknown_kind(kind);
            };
            let Some(id) = percent_decode(id, false) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "malformed id in path",
                );
            };
            match m {
                Method::GET => get(app, k, &id).await,
                Method::PUT => put(app, who, k, id, req).await,
                Method::DELETE => {
                    let pre = precondition(&req);
                    match records::delete(app, k, &id, pre).await {
                        Ok(()) => {
                            tracing::info!(admin = %who.login, kind = %k, %id, "deleted");
                            let mut r = json(StatusCode::NO_CONTENT, &Value::Null);
                            *r.body_mut() = Default::default();
                            r
                        }
                        Err(e) => app_error(e),
                    }
                }
                _ => error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "use GET, PUT or DELETE",
                ),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint"),
    }
}

fn unknown_kind(kind: &str) -> Resp {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!(
            "unknown kind \"{kind}\" (known: {})",
            Kind::ALL.map(|k| k.plural()).join(", ")
        ),
    )
}

fn list(app: &App, kind: Kind, q: &[(String, String)]) -> Resp {
    let offset = param(q, "offset")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let limit = match param(q, "limit").map(|v| v.parse::<usize>()) {
        None => 1000,
        Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("limit must be 1 to {MAX_LIMIT}"),
            )
        }
    };
    let Ok(engine) = app.replica.read() else {
        return app_error(AppError::Io("replica unavailable".into()));
    };
    let ids = engine.ids(kind);
    let items: Vec<Value> = ids
        .iter()
        .skip(offset)
        .take(limit)
        .filter_map(|id| engine.record(kind, id))
        .map(|r| public_json(app, &r))
        .collect();
    json(
        StatusCode::OK,
        &json!({"items": items, "total": ids.len(), "offset": offset, "limit": limit}),
    )
}

async fn get(app: &App, kind: Kind, id: &str) -> Resp {
    match app.crm.get(kind, id.to_owned()).await {
        Ok(Some(v)) => etag(
            json(StatusCode::OK, &public_json(app, &v.record)),
            &v.version,
        ),
        Ok(None) => error(StatusCode::NOT_FOUND, "not_found", "no such record"),
        Err(e) => app_error(e.into()),
    }
}

async fn put(app: &App, who: &Principal, kind: Kind, id: String, req: Request<Incoming>) -> Resp {
    let pre = precondition(&req);
    let body = match read_body(req.into_body(), app.config.server.max_body_bytes).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut v: Value = match crate::json_guard::parse(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("body is not valid JSON: {e}"),
            )
        }
    };
    let Some(obj) = v.as_object_mut() else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "body must be a JSON object",
        );
    };
    match obj.get("id") {
        None => {
            obj.insert("id".into(), Value::String(id.clone()));
        }
        Some(Value::String(s)) if *s == id => {}
        Some(_) => {
            return app_error(AppError::Invalid(vec![crate::domain::dataset::Problem {
                path: "id".into(),
                message: format!("does not match the id in the path (\"{id}\")"),
            }]))
        }
    }
    let record = match Record::from_json(kind, &v) {
        Ok(r) => r,
        Err((path, message)) => {
            return app_error(AppError::Invalid(vec![crate::domain::dataset::Problem {
                path,
                message,
            }]))
        }
    };
    match records::put(app, record, pre).await {
        Ok((stored, created)) => {
            tracing::info!(admin = %who.login, kind = %kind, %id, created, "stored");
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            etag(
                json(status, &public_json(app, &stored.record)),
                &stored.version,
            )
        }
        Err(e) => app_error(e),
    }
}

fn user_and(app: &App, q: &[(String, String)]) -> Result<u32, Resp> {
    let Some(login) = param(q, "user") else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "user=LOGIN is required",
        ));
    };
    let engine = app
        .replica
        .read()
        .map_err(|_| app_error(AppError::Io("replica unavailable".into())))?;
    engine
        .find_user(login)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "not_found", "no such user"))
}

fn explain(app: &App, q: &[(String, String)]) -> Resp {
    let u = match user_and(app, q) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let Some(contact) = param(q, "contact") else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "contact=ID is required",
        );
    };
    let Ok(engine) = app.replica.read() else {
        return app_error(AppError::Io("replica unavailable".into()));
    };
    let Some(c) = engine.find_contact(contact) else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such contact");
    };
    let ex = engine.explain(u, c);
    let folder_name = ex.folder.map(|f| match f {
        VirtualFolder::My => app.config.folders.my_name.clone(),
        VirtualFolder::Global => app.config.folders.global_name.clone(),
    });
    let mut v = serde_json::to_value(&ex).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("folder_name".into(), json!(folder_name));
    }
    json(StatusCode::OK, &v)
}

/// Both folders of a user: counts and the first `limit` entries by display name.
pub fn preview_json(app: &App, u: u32, limit: usize) -> Value {
    let Ok(engine) = app.replica.read() else {
        return Value::Null;
    };
    let mut folders = Vec::new();
    for (f, name) in [
        (VirtualFolder::My, &app.config.folders.my_name),
        (VirtualFolder::Global, &app.config.folders.global_name),
    ] {
        if f == VirtualFolder::Global && !engine.global_offered() {
            continue;
        }
        let mut entries: Vec<(String, String)> = engine
            .list(u, f)
            .into_iter()
            .filter_map(|c| {
                let (r, _) = engine.contact_record(c)?;
                let companies: Vec<&crate::domain::Company> = engine
                    .contact_companies(c)
                    .into_iter()
                    .map(|k| &**k)
                    .collect();
                let (name, _) = crate::domain::mapping::display_names(r, &companies);
                Some((name, r.id.0.clone()))
            })
            .collect();
        entries.sort();
        let first: Vec<Value> = entries
            .iter()
            .take(limit)
            .map(|(n, id)| json!({"id": id, "display_name": n}))
            .collect();
        folders.push(json!({"name": name, "folder": f, "count": entries.len(), "first": first}));
    }
    let login = engine.user_record(u).map(|r| r.login.clone());
    json!({"user": login, "folders": folders})
}

fn preview(app: &App, q: &[(String, String)]) -> Resp {
    let u = match user_and(app, q) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let limit = param(q, "limit")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(10)
        .min(MAX_LIMIT);
    json(StatusCode::OK, &preview_json(app, u, limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("a%20b+c", true).as_deref(), Some("a b c"));
        assert_eq!(percent_decode("a+b", false).as_deref(), Some("a+b"));
        assert_eq!(percent_decode("%zz", false), None);
        assert_eq!(percent_decode("%ff", false), None, "not UTF-8");
        let q = query_pairs(Some("user=anna%40example.test&contact=c1"));
        assert_eq!(param(&q, "user"), Some("anna@example.test"));
    }
}
