//! Small HTTP helpers shared by the routes: bounded body reading and JSON error answers.

// Handlers return a ready response as their error: it is built once, on the way out.
#![allow(clippy::result_large_err)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};

/// The response type of every route.
pub type Resp = Response<Full<Bytes>>;

/// Marks a response as the last on its connection: after a body that was not read to the
/// end, the connection cannot carry another request, and clients must not reuse it.
pub fn close_connection(r: &mut Resp) {
    r.headers_mut()
        .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
}

/// Reads a request body of at most `max` bytes.
pub async fn read_body(body: Incoming, max: usize) -> Result<Bytes, Resp> {
    match Limited::new(body, max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            let mut r = error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                &format!("request body exceeds {max} bytes"),
            );
            close_connection(&mut r);
            Err(r)
        }
        Err(_) => Err(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "could not read the request body",
        )),
    }
}

/// A JSON response.
pub fn json(status: StatusCode, v: &serde_json::Value) -> Resp {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// The admin API's error shape: `{"error":{"code","message"}}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Resp {
    json(
        status,
        &serde_json::json!({"error": {"code": code, "message": message}}),
    )
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
