//! HTTP side of the CardDAV face: `/dav/…` and `/.well-known/carddav` (RFC 6764).
//! Authentication, body limits, per-user limits and moving heavy work off the async workers
//! live here; the WebDAV work is `crate::carddav`.

use super::http::{read_body_within, BodyError, Resp};
use super::{authenticate, with_session};
use crate::app::App;
use crate::auth::Principal;
use crate::carddav::{self, Answer};
use crate::view::service::Failed;
use crate::view::write::WriteError;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, LOCATION};
use hyper::{Request, Response, StatusCode};
use std::net::IpAddr;
use std::sync::Arc;

fn respond(a: Answer) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(a.body)));
    *r.status_mut() = StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    if !a.content_type.is_empty() {
        h.insert(CONTENT_TYPE, HeaderValue::from_static(a.content_type));
    }
    h.insert("dav", HeaderValue::from_static("1, 3, addressbook"));
    for (k, v) in a.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::from_str(&v)) {
            h.insert(k, v);
        }
    }
    r
}

fn busy() -> Resp {
    respond(
        Answer {
            status: 503,
            headers: Vec::new(),
            content_type: "text/plain; charset=utf-8",
            body: b"The server is busy; try again shortly.\n".to_vec(),
        }
        .with("retry-after", "1"),
    )
}

/// `/.well-known/carddav`: where the CardDAV context is (RFC 6764 §5).
pub fn well_known() -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
    r.headers_mut()
        .insert(LOCATION, HeaderValue::from_static(carddav::ROOT));
    r
}

fn limits(app: &App) -> carddav::Limits {
    carddav::Limits {
        max_answer_bytes: app.config.server.max_answer_bytes,
        max_resource_bytes: app.config.server.max_body_bytes,
        max_hrefs: app.config.ews.max_item_ids,
    }
}

/// A request's parts, owned, so it can move to the blocking pool.
struct Owned {
    method: String,
    path: String,
    depth: Option<String>,
    content_type: Option<String>,
    accept: Option<String>,
    if_match: Option<String>,
    if_none_match: Option<String>,
    body: Bytes,
}

impl Owned {
    fn request(&self) -> carddav::Request<'_> {
        carddav::Request {
            method: &self.method,
            path: &self.path,
            depth: self.depth.as_deref(),
            body: &self.body,
            content_type: self.content_type.as_deref(),
            accept: self.accept.as_deref(),
            if_match: self.if_match.as_deref(),
            if_none_match: self.if_none_match.as_deref(),
        }
    }
}

/// `/dav/…`.
pub async fn handle(app: &Arc<App>, ip: IpAddr, req: Request<Incoming>) -> Resp {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let method = req.method().as_str().to_ascii_uppercase();
    if method == "OPTIONS" {
        // Discovery probes come before credentials.
        return respond(carddav::read_options());
    }
    let principal = match authenticate(app, ip, &req).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    if !app.replica.is_ready() {
        return busy();
    }
    if app.dav_limit.check(&principal.login).is_some() {
        return busy();
    }
    let _slot = app.dav_limit.enter(&principal.login);
    let mut owned = Owned {
        method,
        path: req.uri().path().to_owned(),
        depth: header("depth"),
        content_type: header("content-type"),
        accept: header("accept"),
        if_match: header("if-match"),
        if_none_match: header("if-none-match"),
        body: Bytes::new(),
    };
    let body = match read_body_within(
        req.into_body(),
        app.config.server.max_body_bytes,
        &app.request_memory,
    )
    .await
    {
        Ok(b) => b,
        Err(BodyError::Busy) => return busy(),
        Err(BodyError::TooLarge(_)) => {
            let mut r = respond(carddav::precondition(413, "card:max-resource-size"));
            super::http::close_connection(&mut r);
            return r;
        }
        Err(e) => return e.response(),
    };
    let (bytes, permit) = body.into_parts();
    owned.body = bytes;
    if carddav::is_write(&owned.request()) {
        let r = write(app, &principal, &owned).await;
        drop(permit);
        return r;
    }
    let lim = limits(app);
    let light = with_session(app, &principal, |s| carddav::is_light(s, &owned.request()));
    if light == Some(true) {
        return match with_session(app, &principal, |s| carddav::read(s, &owned.request(), lim)) {
            Some(a) => respond(a),
            None => busy(),
        };
    }
    let app2 = app.clone();
    let answer = crate::app::heavy(app, move || {
        let a = with_session(&app2, &principal, |s| {
            carddav::read(s, &owned.request(), lim)
        });
        drop(permit);
        a
    })
    .await;
    match answer {
        Some(Some(a)) => respond(a),
        _ => busy(),
    }
}

/// PUT and DELETE: plan under the replica lock, execute through the write service without
/// it; a write that lost a race is planned again (the plan checks the client's If-Match).
async fn write(app: &App, principal: &Principal, owned: &Owned) -> Resp {
    let req = owned.request();
    let plan = || match with_session(app, principal, |s| carddav::plan_write(s, &req)) {
        Some(Ok(w)) => Ok(w),
        Some(Err(a)) => Err(Failed::Plan(a)),
        None => Err(Failed::Write(WriteError::CONFLICT)),
    };
    let op = format!("carddav {}", owned.method);
    let first = match plan() {
        Ok(w) => w,
        Err(Failed::Plan(a)) => {
            let _ = app
                .writer
                .audit(principal, &op, "refused", "", &[], &a.status.to_string())
                .await;
            return respond(a);
        }
        Err(Failed::Write(_)) => return busy(),
    };
    match app
        .writer
        .commit(principal, &op, first, |w| &w.planned, plan)
        .await
    {
        Ok(w) => {
            if !w.dropped.is_empty() {
                // What the client sent and the CRM has no place for, for the admin.
                let _ = app
                    .writer
                    .audit(
                        principal,
                        &op,
                        "dropped",
                        &w.planned.contact_id,
                        &w.dropped,
                        "ok",
                    )
                    .await;
            }
            respond(carddav::answer_write(&w))
        }
        Err(Failed::Plan(a)) => respond(a),
        Err(Failed::Write(e)) => respond(carddav::write_error(&e)),
    }
}
