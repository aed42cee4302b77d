//! `POST /hubspot/webhooks`: HubSpot's app webhook deliveries (crm::hubspot::webhook). Open
//! to the network without a login: a delivery counts only with a valid v3 signature made with
//! the app's secret, and even then it only makes crmgate read the named records from HubSpot
//! sooner. Answered before the reads (HubSpot waits at most a few seconds); the reads and the
//! replica's catch-up run in the background, and polling stays the safety net.

use crate::app::App;
use crate::crm::Crm;
use crate::http::{error, read_body_within, BodyError, Resp};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Handles one delivery.
pub async fn hubspot(app: &Arc<App>, req: Request<Incoming>) -> Resp {
    let Crm::HubSpot(hs) = &app.crm else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such endpoint");
    };
    if hs.webhooks().is_none() {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "HubSpot webhooks are off (crm.hubspot.webhook_secret is not set)",
        );
    }
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
    let uri = match hs.webhook_url() {
        Some(u) => u.to_owned(),
        None => {
            let scheme = if app.config.server.tls == crate::config::TlsMode::Off {
                "http"
            } else {
                "https"
            };
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
    let Some(receiver) = hs.webhooks() else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such endpoint");
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    match receiver.accept(
        "POST",
        &uri,
        &bytes,
        timestamp.as_deref(),
        signature.as_deref(),
        now_ms,
    ) {
        Err(why) => {
            app.metrics.webhooks_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(reason = why.text(), "HubSpot webhook delivery refused");
            // 401 stops HubSpot's retries; a forger learns only that it failed.
            error(StatusCode::UNAUTHORIZED, "unauthorized", why.text())
        }
        Ok(targets) => {
            app.metrics
                .webhooks_accepted
                .fetch_add(1, Ordering::Relaxed);
            if !targets.is_empty() {
                let (app, hs) = (app.clone(), hs.clone());
                tokio::spawn(async move {
                    let n = targets.len();
                    match hs.confirm(targets).await {
                        Ok(_) => {
                            if let Err(e) = app.catch_up().await {
                                tracing::warn!(error = %e, "replica catch-up after a webhook failed");
                            }
                        }
                        Err(e) => tracing::warn!(
                            error = %e, records = n,
                            "records named by a HubSpot webhook could not be read; the next poll finds them"
                        ),
                    }
                });
            }
            let mut r = Response::new(http_body_util::Full::new(bytes::Bytes::new()));
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
    }
}
