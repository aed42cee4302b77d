//! Small HTTP helpers shared by the routes and the admin API: bounded body reading and JSON
//! error answers.

// Handlers return a ready response as their error: it is built once, on the way out.
#![allow(clippy::result_large_err)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
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

/// A request body read within the server's memory budget; the budget is given back when the
/// body (and so the request's work on it) is dropped.
pub struct Body {
    bytes: Bytes,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Body {
    /// The bytes, and the budget they hold (keep it until the request is answered).
    pub fn into_parts(self) -> (Bytes, tokio::sync::OwnedSemaphorePermit) {
        (self.bytes, self._permit)
    }
}

impl std::ops::Deref for Body {
    type Target = Bytes;
    fn deref(&self) -> &Bytes {
        &self.bytes
    }
}

/// Why a body was not read.
pub enum BodyError {
    /// Over the per-request limit (the answer says so; the connection is closed).
    TooLarge(Resp),
    /// The server's budget for request memory is spent: retry later.
    Busy,
    /// The body could not be read.
    Unreadable(Resp),
}

impl BodyError {
    /// The JSON answer for this error (`503` with `Retry-After` when busy).
    pub fn response(self) -> Resp {
        match self {
            BodyError::TooLarge(r) | BodyError::Unreadable(r) => r,
            BodyError::Busy => busy(),
        }
    }
}

/// `503` with `Retry-After: 1`, closing the connection: the server is out of request memory.
pub fn busy() -> Resp {
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        "the server is handling too many large requests; retry shortly",
    );
    r.headers_mut()
        .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
    close_connection(&mut r);
    r
}

/// How much of an over-long body is still read, and dropped, before the 413 goes out: the
/// client is usually still sending, and closing on it makes it see a broken pipe instead of
/// the answer (a lingering close). Bodies declared larger get the answer and the close at once.
const DRAIN_MAX_BYTES: usize = 16 << 20;
/// How long that reading may take.
const DRAIN_MAX_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads and drops the rest of `body` (see [`DRAIN_MAX_BYTES`]); `seen`: bytes already read.
async fn drain(body: &mut Incoming, seen: usize) {
    let deadline = tokio::time::Instant::now() + DRAIN_MAX_TIME;
    let mut seen = seen;
    while seen <= DRAIN_MAX_BYTES {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(d) = frame.into_data() {
                    seen += d.len();
                }
            }
            _ => break,
        }
    }
}

fn too_large(max: usize) -> Resp {
    let mut r = error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        &format!("request body exceeds {max} bytes"),
    );
    close_connection(&mut r);
    r
}

/// What a request is charged against the memory budget per body byte: the body, and what
/// parsing it may build. Measured by the fuzz targets (docs/security.md): an XML element tree
/// reaches about 36 × its text, a JSON value tree 16–42 ×; 48 covers both.
pub const BUDGET_PER_BODY_BYTE: usize = 48;

/// Reads `body`, at most `max` bytes: a body declared or found larger is refused with 413
/// (after [`drain`]); `on_len` is told the length to hold before reading (the declared one,
/// or 0) and after each chunk, and may refuse.
async fn read_limited(
    mut body: Incoming,
    max: usize,
    mut on_len: impl FnMut(usize) -> Result<(), BodyError>,
) -> Result<Bytes, BodyError> {
    use hyper::body::Body as _;
    let declared = body.size_hint().exact().map(|n| n as usize);
    if let Some(n) = declared.filter(|n| *n > max) {
        if n <= DRAIN_MAX_BYTES {
            drain(&mut body, 0).await;
        }
        return Err(BodyError::TooLarge(too_large(max)));
    }
    on_len(declared.unwrap_or(0))?;
    let mut buf = bytes::BytesMut::with_capacity(declared.unwrap_or(0).min(max));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| {
            BodyError::Unreadable(error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "could not read the request body",
            ))
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                drain(&mut body, buf.len() + data.len()).await;
                return Err(BodyError::TooLarge(too_large(max)));
            }
            buf.extend_from_slice(&data);
            on_len(buf.len())?;
        }
    }
    Ok(buf.freeze())
}

/// Reads a body of at most `max` bytes, charging it against `budget` (in bytes) as it
/// arrives; refuses as soon as the budget cannot cover it, so many large requests at once
/// cannot take more memory than the budget.
pub async fn read_body_within(
    body: Incoming,
    max: usize,
    budget: &std::sync::Arc<tokio::sync::Semaphore>,
) -> Result<Body, BodyError> {
    let charge = |n: usize| -> Result<tokio::sync::OwnedSemaphorePermit, BodyError> {
        let n = u32::try_from(n.saturating_mul(BUDGET_PER_BODY_BYTE).div_ceil(1024))
            .unwrap_or(u32::MAX);
        budget
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| BodyError::Busy)
    };
    let mut permit: Option<tokio::sync::OwnedSemaphorePermit> = None;
    let bytes = read_limited(body, max, |len| {
        match &mut permit {
            None => permit = Some(charge(len)?),
            Some(p) => {
                let covered = p.num_permits() * 1024 / BUDGET_PER_BODY_BYTE;
                if len > covered {
                    p.merge(charge(len - covered)?);
                }
            }
        }
        Ok(())
    })
    .await?;
    match permit {
        Some(p) => Ok(Body { bytes, _permit: p }),
        None => Err(BodyError::Busy),
    }
}

/// Reads a request body of at most `max` bytes.
pub async fn read_body(body: Incoming, max: usize) -> Result<Bytes, Resp> {
    read_limited(body, max, |_| Ok(()))
        .await
        .map_err(BodyError::response)
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

/// `s` with everything but unreserved characters and commas percent-encoded (for a path
/// segment or query value of a URL crmgate writes).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~,".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
