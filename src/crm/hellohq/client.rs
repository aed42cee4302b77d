//! The HTTP side of the helloHQ backend: OAuth2 refresh-token grant (tokens refreshed on
//! expiry and on any 401, never logged), one client-side rate limiter per credential, `429`
//! with or without `Retry-After`, time-outs, and a circuit breaker. Each call says whether a
//! failed request may have taken effect, so writes can re-check before they retry.

use super::config::{HelloHqConfig, HelloHqCredentials, TokenAuth};
use crate::crm::CrmError;
use crate::store::Store;
use rand::Rng;
use reqwest::Method;
use serde_json::Value;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use crate::crm::oauth::Credentials;

/// Reads helloHQ's credentials from the environment or a file.
pub fn load_credentials(src: &HelloHqCredentials) -> Result<Credentials, String> {
    match src {
        HelloHqCredentials::Env => Credentials::from_env("CRMGATE_HELLOHQ", "crm.hellohq"),
        HelloHqCredentials::File(p) => Credentials::from_file(p, "crm.hellohq.credentials"),
    }
}

/// An answer from helloHQ (any status).
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: bytes::Bytes,
    /// `ETag` header.
    pub etag: Option<String>,
    /// `Date` header, unix seconds.
    pub date: Option<i64>,
    /// v2's `helloHQ-Count` header: entities matching the query.
    pub count: Option<u64>,
    /// v2's `helloHQ-NextLink` header: where the next page is.
    pub next_link: Option<String>,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> Result<Value, CrmError> {
        serde_json::from_slice(&self.body).map_err(|e| CrmError::Unavailable {
            retry_after: None,
            reason: format!(
                "helloHQ answered {} with a body that is not JSON: {e}",
                self.status
            ),
        })
    }

    /// The OData error message of a failed answer, if any.
    pub fn error_message(&self) -> String {
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| {
                v.pointer("/error/message")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| format!("HTTP {}", self.status))
    }
}

/// Why a request failed.
#[derive(Debug)]
pub enum Failure {
    /// The request did not take effect.
    NotApplied(CrmError),
    /// The request may have taken effect (time-out, connection lost after sending, 5xx).
    Unknown(CrmError),
}

impl Failure {
    /// The error, whatever the outcome.
    pub fn into_error(self) -> CrmError {
        match self {
            Failure::NotApplied(e) | Failure::Unknown(e) => e,
        }
    }
}

struct Bucket {
    tokens: f64,
    last: Instant,
    paused_until: Option<Instant>,
    throttles: u32,
}

struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct Counters {
    /// Requests sent.
    pub requests: AtomicU64,
    /// `429` answers.
    pub throttled: AtomicU64,
    /// Failed requests (5xx, time-outs, connection errors).
    pub failures: AtomicU64,
    /// Token refreshes.
    pub token_refreshes: AtomicU64,
}

/// The backend's health as `/metrics` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Answering.
    Ok,
    /// Throttling us (`429`); requests wait.
    Throttled,
    /// Failing; the circuit breaker is open.
    Down,
}

impl Health {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Throttled => "throttled",
            Health::Down => "down",
        }
    }
}

/// The helloHQ HTTP client.
pub struct Client {
    http: reqwest::Client,
    cfg: HelloHqConfig,
    /// The access token and the refresh token in use (helloHQ may rotate the latter; a
    /// rotated one is kept in the data dir).
    oauth: crate::crm::oauth::Refresher,
    bucket: Mutex<Bucket>,
    breaker: Mutex<Breaker>,
    /// helloHQ's clock minus ours, seconds (from `Date` headers).
    skew: AtomicI64,
    /// Counters.
    pub counters: Counters,
}

/// Store key of the refresh token in use when helloHQ rotated the configured one.
const REFRESH_KEY: &[u8] = b"hq/refresh_token";

fn unavailable(retry_after: Option<Duration>, reason: impl Into<String>) -> CrmError {
    CrmError::Unavailable {
        retry_after,
        reason: reason.into(),
    }
}

pub use crate::domain::time::unix_now;

fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s.min(3600)));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(3600)),
    )
}

impl Client {
    /// A client for `cfg` with `creds`. With a `store`, a refresh token helloHQ rotated is
    /// kept there and used after a restart (unless the configured token changed since).
    pub fn new(
        cfg: HelloHqConfig,
        creds: Credentials,
        store: Option<Arc<Store>>,
    ) -> Result<Client, String> {
        let auth = match cfg.token_auth {
            TokenAuth::Basic => crate::crm::oauth::ClientAuth::Basic,
            TokenAuth::Body => crate::crm::oauth::ClientAuth::Body,
        };
        let oauth = crate::crm::oauth::Refresher::new(
            "helloHQ",
            &cfg.token_url,
            creds,
            auth,
            store,
            REFRESH_KEY,
        )?;
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(8)
            .user_agent(concat!("crmgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("crm.hellohq: cannot build the HTTP client: {e}"))?;
        let burst = Self::burst(cfg.requests_per_minute);
        Ok(Client {
            http,
            oauth,
            bucket: Mutex::new(Bucket {
                tokens: burst,
                last: Instant::now(),
                paused_until: None,
                throttles: 0,
            }),
            breaker: Mutex::new(Breaker {
                failures: 0,
                open_until: None,
            }),
            skew: AtomicI64::new(0),
            counters: Counters::default(),
            cfg,
        })
    }

    /// Burst size: a twentieth of the per-minute budget, so burst plus a minute's refill
    /// never exceeds the budget in any 60 s window.
    fn burst(per_minute: u32) -> f64 {
        (f64::from(per_minute) / 20.0).max(1.0)
    }

    fn rate_per_sec(&self) -> f64 {
        let pm = f64::from(self.cfg.requests_per_minute);
        ((pm - Self::burst(self.cfg.requests_per_minute)) / 60.0).max(pm / 600.0)
    }

    /// helloHQ's current time, estimated from its `Date` headers.
    pub fn server_now(&self) -> i64 {
        unix_now() + self.skew.load(Ordering::Relaxed)
    }

    /// The backend's health.
    pub fn health(&self) -> Health {
        let now = Instant::now();
        if let Ok(b) = self.breaker.lock() {
            if b.open_until.is_some_and(|t| t > now) {
                return Health::Down;
            }
        }
        if let Ok(b) = self.bucket.lock() {
            if b.paused_until.is_some_and(|t| t > now) {
                return Health::Throttled;
            }
        }
        Health::Ok
    }

    fn check_breaker(&self) -> Result<(), CrmError> {
        let now = Instant::now();
        let b = self
            .breaker
            .lock()
            .map_err(|_| unavailable(None, "breaker lock poisoned"))?;
        match b.open_until {
            Some(t) if t > now => Err(unavailable(
                Some(t - now),
                format!(
                    "helloHQ is failing ({} errors in a row); circuit open",
                    b.failures
                ),
            )),
            _ => Ok(()),
        }
    }

    fn record(&self, ok: bool) {
        if let Ok(mut b) = self.breaker.lock() {
            if ok {
                b.failures = 0;
                b.open_until = None;
            } else {
                b.failures += 1;
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                if b.failures >= self.cfg.breaker_failures {
                    b.open_until = Some(Instant::now() + self.cfg.breaker_cooldown);
                }
            }
        }
    }

    /// Waits for the rate limiter, at most `max_wait`.
    async fn admit(&self, max_wait: Duration) -> Result<(), CrmError> {
        let rate = self.rate_per_sec();
        let burst = Self::burst(self.cfg.requests_per_minute);
        loop {
            let wait = {
                let mut b = self
                    .bucket
                    .lock()
                    .map_err(|_| unavailable(None, "rate limiter lock poisoned"))?;
                let now = Instant::now();
                let dt = now.duration_since(b.last).as_secs_f64();
                b.last = now;
                b.tokens = (b.tokens + dt * rate).min(burst);
                match b.paused_until {
                    Some(t) if t > now => t - now,
                    _ if b.tokens >= 1.0 => {
                        b.tokens -= 1.0;
                        return Ok(());
                    }
                    _ => Duration::from_secs_f64((1.0 - b.tokens) / rate),
                }
            };
            if wait > max_wait {
                return Err(unavailable(
                    Some(wait),
                    "helloHQ request budget exhausted or helloHQ throttling; try again later",
                ));
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Pauses the whole limiter after a `429`.
    fn pause(&self, retry_after: Option<Duration>) -> Duration {
        let Ok(mut b) = self.bucket.lock() else {
            return Duration::from_secs(1);
        };
        b.throttles += 1;
        let wait = retry_after.unwrap_or_else(|| {
            let base = 2f64.powi(b.throttles.min(6) as i32 - 1).min(60.0);
            Duration::from_secs_f64(base * rand::thread_rng().gen_range(0.5..1.0))
        });
        let until = Instant::now() + wait;
        if b.paused_until.is_none_or(|t| t < until) {
            b.paused_until = Some(until);
        }
        b.tokens = 0.0;
        wait
    }

    async fn access_token(&self, refresh: bool) -> Result<String, CrmError> {
        use crate::crm::oauth::TokenFailure;
        match self
            .oauth
            .access_token(&self.http, refresh, &self.counters.token_refreshes)
            .await
        {
            Ok(t) => Ok(t),
            Err(TokenFailure::Unreachable(m)) => {
                self.record(false);
                Err(unavailable(None, m))
            }
            Err(TokenFailure::Refused { status, message }) => {
                if status >= 500 {
                    self.record(false);
                }
                Err(unavailable(None, message))
            }
        }
    }

    /// One request (a `401` refreshes the token and is retried once). `max_wait` bounds the
    /// wait for the rate limiter; writes pass a short one so they fail fast while throttled.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
        max_wait: Duration,
    ) -> Result<Reply, Failure> {
        let mut refresh = false;
        for _ in 0..2 {
            self.check_breaker().map_err(Failure::NotApplied)?;
            self.admit(max_wait).await.map_err(Failure::NotApplied)?;
            let token = self
                .access_token(refresh)
                .await
                .map_err(Failure::NotApplied)?;
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.cfg.base_url))
                .bearer_auth(token)
                .header("Accept", "application/json");
            if let Some(b) = body {
                req = req.json(b);
            }
            if let Some(m) = if_match {
                req = req.header("If-Match", m);
            }
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    self.record(false);
                    let connect = e.is_connect();
                    let err = unavailable(None, format!("helloHQ: {}", e.without_url()));
                    return Err(if connect {
                        Failure::NotApplied(err)
                    } else {
                        Failure::Unknown(err)
                    });
                }
            };
            let status = resp.status().as_u16();
            let header = |k: &str| {
                resp.headers()
                    .get(k)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let etag = header("etag");
            let date = header("date")
                .and_then(|d| httpdate::parse_http_date(&d).ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs() as i64);
            let retry_after = header("retry-after").and_then(|v| parse_retry_after(&v));
            let count = header("hellohq-count").and_then(|v| v.trim().parse().ok());
            let next_link = header("hellohq-nextlink").filter(|v| !v.trim().is_empty());
            if status == 401 {
                refresh = true;
                continue;
            }
            if status == 429 {
                self.counters.throttled.fetch_add(1, Ordering::Relaxed);
                let wait = self.pause(retry_after);
                return Err(Failure::NotApplied(unavailable(
                    Some(wait),
                    "helloHQ is throttling (429)",
                )));
            }
            let bytes = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    self.record(false);
                    return Err(Failure::Unknown(unavailable(
                        None,
                        format!("helloHQ: answer cut off: {}", e.without_url()),
                    )));
                }
            };
            if status >= 500 {
                self.record(false);
                let err = unavailable(retry_after, format!("helloHQ answered {status}"));
                return Err(if status == 503 {
                    Failure::NotApplied(err)
                } else {
                    Failure::Unknown(err)
                });
            }
            self.record(true);
            if let Ok(mut b) = self.bucket.lock() {
                b.throttles = 0;
            }
            if let Some(d) = date {
                self.skew.store(d - unix_now(), Ordering::Relaxed);
            }
            return Ok(Reply {
                status,
                body: bytes,
                etag,
                date,
                count,
                next_link,
            });
        }
        Err(Failure::NotApplied(unavailable(
            None,
            "helloHQ refused the fresh access token (401)",
        )))
    }

    /// A GET, retried with back-off while the failure is retryable and the wait short.
    pub async fn get(&self, path: &str) -> Result<Reply, CrmError> {
        let mut last = None;
        for attempt in 0..4u32 {
            match self
                .send(Method::GET, path, None, None, Duration::from_secs(90))
                .await
            {
                Ok(r) => return Ok(r),
                Err(f) => {
                    let e = f.into_error();
                    let wait = match &e {
                        CrmError::Unavailable { retry_after, .. } => {
                            retry_after.unwrap_or_else(|| {
                                Duration::from_millis(
                                    (200u64 << attempt) + rand::thread_rng().gen_range(0..200),
                                )
                            })
                        }
                        _ => return Err(e),
                    };
                    if wait > Duration::from_secs(30) || self.health() == Health::Down {
                        return Err(e);
                    }
                    last = Some(e);
                    tokio::time::sleep(wait).await;
                }
            }
        }
        Err(last.unwrap_or_else(|| unavailable(None, "helloHQ: no answer")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        let later = std::time::SystemTime::now() + Duration::from_secs(30);
        let d = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap_or_default();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn credentials_never_show_secrets() {
        let c = Credentials {
            client_id: "1-2".into(),
            client_secret: "s3cret".into(),
            refresh_token: "r3fresh".into(),
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("r3fresh"),
            "{shown}"
        );
    }

    #[test]
    fn the_bucket_never_exceeds_the_budget_in_a_minute() {
        for pm in [60u32, 1000, 6000] {
            let burst = Client::burst(pm);
            let rate = ((f64::from(pm) - burst) / 60.0).max(f64::from(pm) / 600.0);
            assert!(burst + rate * 60.0 <= f64::from(pm) + 1e-9, "{pm}");
        }
    }
}
