//! HTTP side of the EWS face: `/EWS/Exchange.asmx` (path matched case-insensitively),
//! `/EWS/Services.wsdl`, and autodiscover. Authentication, body limits and the exact
//! `Content-Type` DavMail insists on live here; the SOAP work is `crate::ews`.

use super::http::{read_body_within, text, BodyError, Resp};
use super::{authenticate, with_session};
use crate::app::App;
use crate::auth::Principal;
use crate::ews;
use crate::ews::ops::item_writes::{ItemError, ItemResult};
use crate::view::service::Failed;
use crate::view::write::WriteError;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use std::net::IpAddr;
use std::sync::Arc;

const WSDL: &str = include_str!("../../wsdl/Services.wsdl");

fn xml(status: u16, body: Vec<u8>) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    // Exactly this string: DavMail compares it whole.
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/xml; charset=utf-8"),
    );
    r
}

fn server_busy() -> Resp {
    xml(
        500,
        ews::envelope::busy_fault(
            "The server cannot service this request right now. Try again later.",
            BACK_OFF_MS,
        ),
    )
}

/// What a busy answer asks the client to wait.
const BACK_OFF_MS: u64 = 1000;

/// The bounds of one EWS request, from the configuration.
fn limits(app: &App) -> ews::Limits {
    let c = &app.config.ews;
    ews::Limits {
        max_answer_bytes: app.config.server.max_answer_bytes,
        max_folder_ids: c.max_folder_ids,
        max_item_ids: c.max_item_ids,
        max_evaluations: c.max_evaluations,
    }
}

fn only_post(req: &Request<Incoming>) -> Option<Resp> {
    if req.method() == Method::POST {
        return None;
    }
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static("POST"));
    Some(r)
}

/// `POST /EWS/Exchange.asmx`.
pub async fn exchange(app: &Arc<App>, ip: IpAddr, req: Request<Incoming>) -> Resp {
    if let Some(r) = only_post(&req) {
        return r;
    }
    let principal = match authenticate(app, ip, &req).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let body = match read_body_within(
        req.into_body(),
        app.config.server.max_body_bytes,
        &app.request_memory,
    )
    .await
    {
        Ok(b) => b,
        Err(BodyError::Busy) => {
            let mut r = server_busy();
            super::http::close_connection(&mut r);
            return r;
        }
        Err(_) => {
            let f = ews::envelope::Fault {
                code: "ErrorSchemaValidation",
                message: format!(
                    "The request is larger than {} bytes.",
                    app.config.server.max_body_bytes
                ),
            };
            let mut r = xml(500, ews::envelope::fault(&f));
            super::http::close_connection(&mut r);
            return r;
        }
    };
    // Parse before taking the replica lock, on the blocking pool: a body of megabytes is
    // milliseconds of work the async workers should not do.
    if !app.replica.is_ready() {
        return server_busy();
    }
    // One user's requests in flight are bounded, so one user cannot take every worker.
    if app.ews_limit.check(&principal.login).is_some() {
        return server_busy();
    }
    let _slot = app.ews_limit.enter(&principal.login);
    // Parsing and evaluation are synchronous and bounded by the body limit and `limits`.
    // A small body whose request is known to be little work (a sync poll, a few ids) is
    // answered here; everything else is parsed and answered in one trip to the blocking
    // pool, so the async workers keep serving everyone else (and /healthz) meanwhile.
    let mut parsed = None;
    if body.len() <= INLINE_PARSE_BYTES {
        let p = match ews::parse(&body) {
            Ok(p) => p,
            Err(a) => return xml(a.status, a.body),
        };
        if ews::is_item_write(&p) {
            return write(app, &principal, &p).await;
        }
        if with_session(app, &principal, |s| ews::is_light(s, &p)).unwrap_or(false) {
            return match with_session(app, &principal, |s| ews::handle(s, &p, limits(app))) {
                Some(answer) => xml(answer.status, answer.body),
                None => server_busy(),
            };
        }
        parsed = Some(p);
    }
    let app2 = app.clone();
    let who = principal.clone();
    let outcome = crate::app::heavy(app, move || {
        let parsed = match parsed {
            Some(p) => p,
            None => match ews::parse(&body) {
                Ok(p) => p,
                Err(a) => return Outcome::Answer(Some(a)),
            },
        };
        if ews::is_item_write(&parsed) {
            return Outcome::Write(Box::new(parsed));
        }
        let limits = limits(&app2);
        // The body (and its share of the memory budget) is held until the answer is made.
        let answer = with_session(&app2, &who, |s| ews::handle(s, &parsed, limits));
        drop(body);
        Outcome::Answer(answer)
    })
    .await;
    match outcome {
        Some(Outcome::Answer(Some(answer))) => xml(answer.status, answer.body),
        Some(Outcome::Write(parsed)) => write(app, &principal, &parsed).await,
        Some(Outcome::Answer(None)) | None => server_busy(),
    }
}

/// What the blocking part of an EWS request produced.
enum Outcome {
    /// The answer (`None`: the replica could not be read).
    Answer(Option<ews::Answer>),
    /// An item write, parsed, to be executed against the CRM.
    Write(Box<ews::envelope::Request>),
}

/// Bodies up to this size are parsed on the async worker (tens of microseconds).
const INLINE_PARSE_BYTES: usize = 16 * 1024;

/// CreateItem, UpdateItem, DeleteItem: plan under the replica lock, execute through the write
/// service without it (one item at a time, each acknowledged only when durable), answer under
/// it.
async fn write(app: &App, principal: &Principal, req: &ews::envelope::Request) -> Resp {
    let plans = match with_session(app, principal, |s| ews::plan_write(s, req, limits(app))) {
        None => return server_busy(),
        Some(Err(a)) => return xml(a.status, a.body),
        Some(Ok(p)) => p,
    };
    let op = req.op.name.clone();
    let mut results = Vec::with_capacity(plans.len());
    for (n, p) in plans.into_iter().enumerate() {
        let result = match p {
            Err(e) => {
                let _ = app
                    .writer
                    .audit(principal, &op, "refused", "", &[], e.code())
                    .await;
                ItemResult::Failed(e)
            }
            Ok(planned) => {
                // A re-plan after a lost race plans the whole request again and takes item n.
                let replan =
                    || match with_session(app, principal, |s| ews::plan_write(s, req, limits(app)))
                    {
                        Some(Ok(v)) => match v.into_iter().nth(n) {
                            Some(Ok(p)) => Ok(p),
                            Some(Err(e)) => Err(Failed::Plan(e)),
                            None => Err(Failed::Write(WriteError::CONFLICT)),
                        },
                        _ => Err(Failed::Write(WriteError::CONFLICT)),
                    };
                match app
                    .writer
                    .commit(principal, &op, planned, |p| p, replan)
                    .await
                {
                    Ok(planned) => ItemResult::Done(Box::new(planned)),
                    Err(Failed::Plan(e)) => {
                        let _ = app
                            .writer
                            .audit(principal, &op, "refused", "", &[], e.code())
                            .await;
                        ItemResult::Failed(e)
                    }
                    Err(Failed::Write(e)) => ItemResult::Failed(ItemError::Write(e)),
                }
            }
        };
        results.push(result);
    }
    match with_session(app, principal, |s| {
        ews::answer_write(s, req, &results, limits(app))
    }) {
        Some(a) => xml(a.status, a.body),
        None => server_busy(),
    }
}

/// `GET /EWS/Services.wsdl`.
pub fn wsdl() -> Resp {
    xml(200, WSDL.as_bytes().to_vec())
}

fn ews_url(app: &App, req_host: Option<&str>) -> String {
    let scheme = super::scheme(app);
    let host = req_host
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| app.config.server.listen.to_string());
    format!("{scheme}://{host}/EWS/Exchange.asmx")
}

fn discovery_headers(r: &mut Resp) {
    for (k, v) in [
        ("x-soap-enabled", "True"),
        ("x-wssecurity-enabled", "False"),
        ("x-oauth-enabled", "False"),
    ] {
        r.headers_mut().insert(k, HeaderValue::from_static(v));
    }
}

/// `/autodiscover/autodiscover.svc` (SOAP) and `/autodiscover/autodiscover.xml` (POX).
pub async fn autodiscover(app: &App, ip: IpAddr, req: Request<Incoming>, soap: bool) -> Resp {
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    let principal = match authenticate(app, ip, &req).await {
        Ok(p) => p,
        Err(mut r) => {
            discovery_headers(&mut r);
            return r;
        }
    };
    if let Some(mut r) = only_post(&req) {
        discovery_headers(&mut r);
        return r;
    }
    let body = match read_body_within(
        req.into_body(),
        app.config.server.max_body_bytes,
        &app.request_memory,
    )
    .await
    {
        Ok(b) => b,
        Err(e) => return e.response(),
    };
    let name = app
        .replica
        .read()
        .ok()
        .and_then(|e| {
            e.find_login(&principal.login)
                .and_then(|u| e.user_record(u).map(|r| r.name.clone()))
        })
        .unwrap_or_default();
    let url = ews_url(app, host.as_deref());
    let d = ews::autodiscover::Discovered {
        smtp: &principal.login,
        name: &name,
        ews_url: &url,
    };
    let mut r = if soap {
        match ews::xml::parse(&body) {
            Ok(root) => xml(200, ews::autodiscover::soap(&root, &d)),
            Err(e) => {
                let f = ews::envelope::Fault {
                    code: "ErrorSchemaValidation",
                    message: e.to_string(),
                };
                xml(500, ews::envelope::fault(&f))
            }
        }
    } else {
        xml(200, ews::autodiscover::pox(&d))
    };
    discovery_headers(&mut r);
    r
}
