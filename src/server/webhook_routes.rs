//! `POST /hubspot/webhooks`: HubSpot's app webhook deliveries (crm::hubspot::webhook). Open
//! to the network without a login: a delivery counts only with a valid v3 signature made with
//! the app's secret, and even then it only makes crmgate read the named records from HubSpot
//! sooner. Answered before the reads (HubSpot waits at most a few seconds); the reads and the
//! replica's catch-up run in the background, and polling stays the safety net.

use crate::app::App;
use crate::http::{error, read_body_within, BodyError, Resp};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use std::sync::Arc;

/// Handles one delivery.
pub async fn hubspot(app: &Arc<App>, req: Request<Incoming>) -> Resp {
    let Some(configured_url) = app.webhooks() else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "CRM webhooks are off (crm.hubspot.webhook_secret is not set)",
        );
    };
    if req.method() != Method::POST {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "webhook deliveries are POSTs",
        );
        r.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("POST"),
        );
        return r;
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let timestamp = header("x-hubspot-request-timestamp");
    let signature = header("x-hubspot-signature-v3");
    let uri = match configured_url {
        Some(u) => u,
        None => {
            let scheme = super::scheme(app);
            let host = header("host").unwrap_or_default();
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default();
            format!("{scheme}://{host}{path}")
        }
    };
    let body = match read_body_within(
        req.into_body(),
        app.config.server.max_body_bytes,
        &app.request_memory,
    )
    .await
    {
        Ok(b) => b,
        Err(BodyError::Busy) => return crate::http::busy(),
        Err(e) => return e.response(),
    };
    let (bytes, _permit) = body.into_parts();
    match app.receive_webhook(&uri, &bytes, timestamp.as_deref(), signature.as_deref()) {
        // 401 stops HubSpot's retries; a forger learns only that it failed.
        Err(why) => error(StatusCode::UNAUTHORIZED, "unauthorized", why),
        Ok(()) => {
            let mut r = Response::new(http_body_util::Full::new(bytes::Bytes::new()));
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
    }
}
