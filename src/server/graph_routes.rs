//! HTTP side of the Graph face: `/v1.0/...` with crmgate-issued bearer tokens (401
//! `InvalidAuthenticationToken` + `WWW-Authenticate: Bearer` otherwise), request ids, the
//! `Prefer` header, bounded bodies; and `POST /oauth2/v2.0/token` (password grant for local
//! users). The JSON work is `crate::graph`.

use super::http::{read_body, read_body_within, BodyError, Resp};
use crate::app::{App, AuthFailure};
use crate::auth::tokens::{parse_scopes, TokenInfo};
use crate::auth::Principal;
use crate::domain::Role;
use crate::graph::{self, error::GraphError, Scopes};
use crate::view::service::Failed;
use crate::view::Session;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, RETRY_AFTER, WWW_AUTHENTICATE,
};
use hyper::{Request, Response, StatusCode};
use std::net::IpAddr;
use std::sync::Arc;

fn date_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    crate::domain::time::system_time(secs)
        .trim_end_matches('Z')
        .to_owned()
}

fn request_id() -> String {
    let r: u128 = rand::random();
    let h = format!("{r:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

struct Ids {
    request: String,
    client: Option<String>,
}

fn respond(
    status: u16,
    content_type: &str,
    body: Vec<u8>,
    ids: &Ids,
    extra: &[(&'static str, String)],
) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        h.insert(CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&ids.request) {
        h.insert("request-id", v);
    }
    if let Some(c) = ids
        .client
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
    {
        h.insert("client-request-id", c);
    }
    for (k, v) in extra {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(*k, v);
        }
    }
    r
}

fn error(e: &GraphError, ids: &Ids) -> Resp {
    let body = e.body(&ids.request, ids.client.as_deref(), &date_now());
    let mut extra: Vec<(&'static str, String)> = Vec::new();
    if e.status == 401 {
        extra.push(("www-authenticate", "Bearer realm=\"crmgate\"".into()));
    }
    if e.status == 503 {
        // Retryable: the CRM or the replica is not available yet; SDK retry handlers wait.
        extra.push(("retry-after", "5".into()));
    }
    respond(e.status, "application/json", body, ids, &extra)
}

fn scopes(info: &TokenInfo) -> Scopes {
    let write = info.scopes.iter().any(|s| s == "Contacts.ReadWrite");
    Scopes {
        read: write || info.scopes.iter().any(|s| s == "Contacts.Read"),
        write,
    }
}

fn max_page(req: &Request<Incoming>) -> Option<usize> {
    req.headers()
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|p| p.trim().strip_prefix("odata.maxpagesize="))
        .filter_map(|n| n.trim().parse::<usize>().ok())
        .next()
}

/// `/v1.0/...`.
pub async fn handle(app: &Arc<App>, _ip: IpAddr, req: Request<Incoming>) -> Resp {
    let ids = Ids {
        request: request_id(),
        client: req
            .headers()
            .get("client-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    let token = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .map(str::to_owned);
    let verified = match token.as_deref() {
        Some(t) => app.verify_token(t).await,
        None => None,
    };
    let Some(info) = verified else {
        let msg = if token.is_none() {
            "Access token is empty."
        } else {
            "Access token has expired or is not valid yet."
        };
        return error(
            &GraphError::new(401, "InvalidAuthenticationToken", msg),
            &ids,
        );
    };
    let principal = {
        let Ok(e) = app.replica.read() else {
            return error(
                &GraphError::new(503, "ServiceNotAvailable", "The service is not ready."),
                &ids,
            );
        };
        let Some(u) = e.find_user(&info.user) else {
            return error(
                &GraphError::new(
                    401,
                    "InvalidAuthenticationToken",
                    "The token's user no longer exists.",
                ),
                &ids,
            );
        };
        let Some(rec) = e.user_record(u).filter(|r| r.active) else {
            return error(
                &GraphError::new(
                    401,
                    "InvalidAuthenticationToken",
                    "The token's user is not active.",
                ),
                &ids,
            );
        };
        Principal {
            user: rec.id.clone(),
            login: rec.login.clone(),
            role: match &app.signins {
                None => rec.role,
                Some(s) => s.get(&rec.login).map(|s| s.role).unwrap_or_default(),
            },
        }
    };
    if let Some(wait) = app.graph_limit.check(&principal.login) {
        let e = GraphError::new(
            429,
            "ApplicationThrottled",
            "Application is over its request limit.",
        );
        let mut r = error(&e, &ids);
        if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
            r.headers_mut().insert(RETRY_AFTER, v);
        }
        return r;
    }
    let _slot = app.graph_limit.enter(&principal.login);
    let scheme = super::scheme(app);
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| app.config.server.listen.to_string());
    let base = format!("{scheme}://{host}");
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().trim_start_matches("/v1.0").to_owned();
    let query = req.uri().query().map(str::to_owned);
    let if_match = req
        .headers()
        .get("if-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let max_page = max_page(&req);
    let (body, _budget) = if method == "GET" || method == "DELETE" {
        (Bytes::new(), None)
    } else {
        match read_body_within(
            req.into_body(),
            app.config.server.max_body_bytes,
            &app.request_memory,
        )
        .await
        {
            Ok(b) => {
                let (bytes, permit) = b.into_parts();
                (bytes, Some(permit))
            }
            Err(BodyError::Busy) => {
                let e = GraphError::new(
                    503,
                    "ServiceNotAvailable",
                    "The server is handling too many large requests; retry shortly.",
                );
                let mut r = error(&e, &ids);
                super::http::close_connection(&mut r);
                return r;
            }
            Err(e) => return e.response(),
        }
    };
    if !app.replica.is_ready() {
        return error(
            &GraphError::new(503, "ServiceNotAvailable", "The service is loading."),
            &ids,
        );
    }
    let owned = Owned {
        method,
        path,
        query,
        base,
        max_page,
        if_match,
        body,
        scopes: scopes(&info),
    };
    let result = if owned.method == "GET" {
        // Reads evaluate $filter and render pages synchronously. One known to be little
        // work (a delta poll, one contact) is answered here; others on the blocking pool, so
        // the async workers keep serving everyone else meanwhile.
        let greq = owned.request();
        let mut light = false;
        let _ = with_session(app, &principal, &mut |s| {
            light = graph::is_light(s, &greq);
            Err(GraphError::denied())
        });
        if light {
            with_session(app, &principal, &mut |s| graph::read(s, &greq))
        } else {
            let app2 = app.clone();
            crate::app::heavy(app, move || {
                let greq = owned.request();
                with_session(&app2, &principal, &mut |s| graph::read(s, &greq))
            })
            .await
            .unwrap_or_else(|| {
                Err(GraphError::new(
                    500,
                    "UnknownError",
                    "An internal error occurred.",
                ))
            })
        }
    } else {
        let greq = owned.request();
        // Plan under the lock, execute through the write service without it, answer under
        // it. A write that lost a race against another writer is planned again: the plan
        // checks the client's own If-Match, so only a client that sent one can see 412.
        let plan = || {
            let mut plan = None;
            let planned = with_session(app, &principal, &mut |s| {
                plan = Some(graph::plan_write(s, &greq)?);
                Ok(graph::Answer {
                    status: 0,
                    content_type: "",
                    body: Vec::new(),
                    headers: Vec::new(),
                })
            });
            match (planned, plan) {
                (Err(e), _) => Err(Failed::Plan(e)),
                (Ok(_), None) => Err(Failed::Plan(GraphError::new(
                    500,
                    "UnknownError",
                    "No plan.",
                ))),
                (Ok(_), Some(p)) => Ok(p),
            }
        };
        let op = format!("graph {}", owned.method);
        let committed = match plan() {
            Err(e) => Err(e),
            Ok(first) => {
                app.writer
                    .commit(&principal, &op, first, |p| &p.planned, plan)
                    .await
            }
        };
        match committed {
            Ok(p) => with_session(app, &principal, &mut |s| graph::answer_write(s, &greq, &p)),
            Err(Failed::Plan(e)) => Err(e),
            Err(Failed::Write(e)) => Err(graph::write_error(&e)),
        }
    };
    match result {
        Ok(a) => respond(a.status, a.content_type, a.body, &ids, &a.headers),
        Err(e) => error(&e, &ids),
    }
}

/// A Graph request's parts, owned, so a read can move to the blocking pool.
struct Owned {
    method: String,
    path: String,
    query: Option<String>,
    base: String,
    max_page: Option<usize>,
    if_match: Option<String>,
    body: Bytes,
    scopes: Scopes,
}

impl Owned {
    fn request(&self) -> graph::Request<'_> {
        graph::Request {
            method: &self.method,
            path: &self.path,
            query: self.query.as_deref(),
            base: &self.base,
            max_page: self.max_page,
            if_match: self.if_match.as_deref(),
            body: &self.body,
            scopes: self.scopes,
        }
    }
}

/// Runs `f` with a session of `principal` over a read view of the replica (not across an
/// await).
fn with_session(
    app: &App,
    principal: &Principal,
    f: &mut dyn FnMut(&Session<'_>) -> Result<graph::Answer, GraphError>,
) -> Result<graph::Answer, GraphError> {
    let engine = app
        .replica
        .read()
        .map_err(|_| GraphError::new(503, "ServiceNotAvailable", "Try again."))?;
    let s = Session::open(
        &app.view_cache,
        &engine,
        &app.codec,
        &app.view,
        &principal.login,
        principal.role == Role::Admin,
    )
    .ok_or_else(GraphError::denied)?;
    f(&s)
}

/// `POST /oauth2/v2.0/token`: the password grant for crmgate's own users.
pub async fn token(app: &App, ip: IpAddr, req: Request<Incoming>) -> Resp {
    let json = |status: u16, v: serde_json::Value| {
        let mut r = Response::new(Full::new(Bytes::from(
            serde_json::to_vec(&v).unwrap_or_default(),
        )));
        *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    };
    let body = match read_body(req.into_body(), 64 * 1024).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let form: Vec<(String, String)> = String::from_utf8_lossy(&body)
        .split('&')
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((graph::odata::decode(k).ok()?, graph::odata::decode(v).ok()?))
        })
        .collect();
    let get = |k: &str| form.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
    if get("grant_type") != Some("password") {
        return json(
            400,
            serde_json::json!({"error": "unsupported_grant_type", "error_description": "Only the password grant is offered."}),
        );
    }
    let (Some(user), Some(pass)) = (get("username"), get("password")) else {
        return json(
            400,
            serde_json::json!({"error": "invalid_request", "error_description": "username and password are required."}),
        );
    };
    let basic = format!("Basic {}", {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    });
    let p = match app.authenticate(Some(&basic), ip) {
        Ok(p) => p,
        Err(AuthFailure::Invalid { delay }) => {
            tokio::time::sleep(delay).await;
            return json(
                400,
                serde_json::json!({"error": "invalid_grant", "error_description": "Wrong user name or password."}),
            );
        }
        Err(_) => {
            return json(
                429,
                serde_json::json!({"error": "temporarily_unavailable", "error_description": "Too many failed sign-ins; try again later."}),
            )
        }
    };
    let mut scopes = parse_scopes(get("scope").unwrap_or("Contacts.Read"));
    if scopes.is_empty() {
        scopes = vec!["Contacts.Read".into()];
    }
    match app.tokens.issue(p.user.as_str(), &p.login, &scopes, 3600) {
        Ok((tok, _)) => json(
            200,
            serde_json::json!({"token_type": "Bearer", "expires_in": 3600, "access_token": tok, "scope": scopes.join(" ")}),
        ),
        Err(e) => {
            tracing::error!(error = %e, "token issue failed");
            json(500, serde_json::json!({"error": "server_error"}))
        }
    }
}

/// Marker so unused-import lints stay quiet when WWW_AUTHENTICATE is set via a string.
#[allow(dead_code)]
const _WWW: hyper::header::HeaderName = WWW_AUTHENTICATE;
