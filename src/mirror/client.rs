//! The mirror's Graph client: an application token (client credentials), requests and JSON
//! batches, and the budgets Microsoft enforces per app and mailbox (requests per window,
//! requests in flight, a mailbox's `Retry-After`), kept on this side so the mirror is throttled
//! as rarely as possible — and waits as told when it is.

use super::config::MirrorConfig;
use super::credential::AppCredential;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The token scope of application permissions.
const SCOPE: &str = "https://graph.microsoft.com/.default";
/// A token is renewed this long before it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(120);

/// One request to Graph: method, URL relative to the version (`/users/…`), body.
#[derive(Clone, Debug)]
pub struct Call {
    /// GET, POST, PATCH, DELETE.
    pub method: &'static str,
    /// Relative URL, query included.
    pub url: String,
    /// JSON body (shared: an op keeps its body for a retry while its call is sent).
    pub body: Option<Arc<Value>>,
}

/// Graph's answer to one request or batch item.
#[derive(Clone, Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `Retry-After`, if given.
    pub retry_after: Option<Duration>,
    /// JSON body (`Null` when empty or not JSON).
    pub body: Value,
}

impl Answer {
    /// 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The OData error code, if any.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// A short description for logs and status (never a secret).
    pub fn describe(&self) -> String {
        let msg = self.body["error"]["message"].as_str().unwrap_or("");
        let msg: String = msg.chars().take(200).collect();
        format!("{} {} {}", self.status, self.code(), msg)
            .trim()
            .to_owned()
    }

    /// Transient: throttled, unavailable, gateway timeout, or an item not run because one it
    /// depended on failed.
    pub fn transient(&self) -> bool {
        // 401 on a batch item: the token expired while the batch ran (renewed, sent again).
        matches!(self.status, 401 | 429 | 500 | 502 | 503 | 504 | 424)
    }
}

/// Why a request got no answer.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SendError {
    /// Sent (or possibly sent) and no answer came: the outcome of a write is unknown.
    #[error("no answer from Graph: {0}")]
    NoAnswer(String),
    /// No token: the credentials were refused or the token endpoint is unreachable.
    #[error("{0}")]
    Token(String),
}

/// Requests per span of time, counted at admission.
struct Window {
    span: Duration,
    limit: u32,
    used: VecDeque<(Instant, u32)>,
    sum: u32,
}

impl Window {
    fn new(limit: u32, span: Duration) -> Window {
        Window {
            span,
            limit,
            used: VecDeque::new(),
            sum: 0,
        }
    }

    /// Admits `n` requests now (`None`), or says how long to wait.
    fn admit(&mut self, n: u32, now: Instant) -> Option<Duration> {
        while let Some(&(t, k)) = self.used.front() {
            if now.duration_since(t) >= self.span {
                self.used.pop_front();
                self.sum -= k;
            } else {
                break;
            }
        }
        let n = n.min(self.limit);
        if self.sum + n <= self.limit {
            self.used.push_back((now, n));
            self.sum += n;
            return None;
        }
        // Wait until enough of the oldest admissions leave the window.
        let mut freed = 0;
        for &(t, k) in &self.used {
            freed += k;
            if self.sum - freed + n <= self.limit {
                return Some(
                    (t + self.span).saturating_duration_since(now) + Duration::from_millis(1),
                );
            }
        }
        Some(self.span)
    }
}

/// One mailbox's budget: requests in flight, requests per window, and the time until which
/// Graph told crmgate to wait.
pub struct MailboxBudget {
    inflight: Arc<Semaphore>,
    window: Mutex<Window>,
    until: Mutex<Option<Instant>>,
}

impl MailboxBudget {
    /// The budget of the configured limits.
    pub fn new(cfg: &MirrorConfig) -> MailboxBudget {
        MailboxBudget {
            inflight: Arc::new(Semaphore::new(cfg.concurrent_per_mailbox.max(1) as usize)),
            window: Mutex::new(Window::new(cfg.requests_per_window.max(1), cfg.window)),
            until: Mutex::new(None),
        }
    }

    /// Graph answered `429` with this `Retry-After`: nothing more goes to the mailbox before.
    pub fn throttle(&self, wait: Duration) {
        let t = Instant::now() + wait;
        let mut u = self.until.lock().unwrap_or_else(|p| p.into_inner());
        if u.is_none_or(|x| x < t) {
            *u = Some(t);
        }
    }

    /// True while a `Retry-After` runs.
    pub fn throttled(&self) -> bool {
        self.until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|u| u > Instant::now())
    }

    /// Waits for a slot, the end of any `Retry-After`, and room for `items` requests.
    async fn admit(&self, items: u32) -> Option<OwnedSemaphorePermit> {
        let permit = self.inflight.clone().acquire_owned().await.ok()?;
        loop {
            let now = Instant::now();
            let wait = {
                let until = *self.until.lock().unwrap_or_else(|p| p.into_inner());
                match until.filter(|u| *u > now) {
                    Some(u) => u - now,
                    None => {
                        match self
                            .window
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .admit(items, now)
                        {
                            None => return Some(permit),
                            Some(d) => d,
                        }
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// Counters of the client, for `/metrics`.
#[derive(Default)]
pub struct ClientCounters {
    /// HTTP requests sent (a batch is one).
    pub http_requests: AtomicU64,
    /// Graph requests (a batch counts its items, as Microsoft does).
    pub graph_requests: AtomicU64,
    /// `429` answers (requests and items).
    pub throttled: AtomicU64,
    /// Requests without an answer.
    pub no_answer: AtomicU64,
    /// Tokens fetched.
    pub token_grants: AtomicU64,
}

/// The Graph client. Cheap to share.
pub struct GraphClient {
    http: reqwest::Client,
    cfg: Arc<MirrorConfig>,
    credential: AppCredential,
    /// The token and when to renew it.
    token: tokio::sync::Mutex<Option<(String, Instant)>>,
    total: Arc<Semaphore>,
    global: Mutex<Window>,
    /// Counters.
    pub counters: ClientCounters,
}

fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    h.get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

impl GraphClient {
    /// A client for the configured app with its loaded credential.
    pub fn new(cfg: Arc<MirrorConfig>, credential: AppCredential) -> Result<GraphClient, String> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .pool_max_idle_per_host(cfg.concurrent_total as usize)
            .build()
            .map_err(|e| format!("mirror: HTTP client: {e}"))?;
        Ok(GraphClient {
            http,
            total: Arc::new(Semaphore::new(cfg.concurrent_total.max(1) as usize)),
            global: Mutex::new(Window::new(
                cfg.requests_per_10s.max(1),
                Duration::from_secs(10),
            )),
            cfg,
            credential,
            token: tokio::sync::Mutex::new(None),
            counters: ClientCounters::default(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &MirrorConfig {
        &self.cfg
    }

    /// A valid application token (`renew`: the last one was refused).
    async fn token(&self, renew: bool) -> Result<String, SendError> {
        let mut t = self.token.lock().await;
        if let Some((tok, exp)) = t.as_ref() {
            if !renew && *exp > Instant::now() {
                return Ok(tok.clone());
            }
        }
        let proof = self
            .credential
            .form_fields(&self.cfg.client_id, &self.cfg.token_url, super::unix_now())
            .map_err(SendError::Token)?;
        let mut form: Vec<(&str, &str)> = vec![("client_id", self.cfg.client_id.as_str())];
        form.extend(proof.iter().map(|(k, v)| (*k, v.as_str())));
        form.extend([("scope", SCOPE), ("grant_type", "client_credentials")]);
        self.counters.token_grants.fetch_add(1, Ordering::Relaxed);
        let resp = self
            .http
            .post(&self.cfg.token_url)
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                SendError::Token(format!("token endpoint unreachable: {}", e.without_url()))
            })?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status != 200 {
            let why = body["error_description"]
                .as_str()
                .or(body["error"].as_str())
                .unwrap_or("no reason given");
            let why: String = why.lines().next().unwrap_or("").chars().take(200).collect();
            return Err(SendError::Token(format!(
                "the token endpoint refused the app's credentials ({status}): {why}"
            )));
        }
        let Some(tok) = body["access_token"].as_str() else {
            return Err(SendError::Token("token answer without access_token".into()));
        };
        let secs = body["expires_in"].as_u64().unwrap_or(3599);
        // Renewed TOKEN_MARGIN before it expires, or at half its life when that is shorter.
        let life = Duration::from_secs(secs);
        let margin = TOKEN_MARGIN.min(life / 2);
        *t = Some((tok.to_owned(), Instant::now() + life - margin));
        Ok(tok.to_owned())
    }

    /// Waits for the global budget (`n` Graph requests) and a slot.
    async fn admit_global(&self, n: u32) -> Option<OwnedSemaphorePermit> {
        let permit = self.total.clone().acquire_owned().await.ok()?;
        loop {
            let wait = self
                .global
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .admit(n, Instant::now());
            match wait {
                None => return Some(permit),
                Some(d) => tokio::time::sleep(d).await,
            }
        }
    }

    /// Sends one HTTP request to Graph within the budgets; a refused token is renewed once.
    async fn http(
        &self,
        budget: &MailboxBudget,
        items: u32,
        method: &str,
        url: &str,
        body: Option<&Value>,
        prefer: Option<&str>,
    ) -> Result<Answer, SendError> {
        let body = match body {
            Some(b) => Some(
                serde_json::to_vec(b)
                    .map_err(|e| SendError::NoAnswer(format!("body: {e}")))?
                    .into(),
            ),
            None => None,
        };
        let (status, retry_after, bytes) = self
            .http_raw(budget, items, method, url, body, prefer)
            .await?;
        Ok(Answer {
            status,
            retry_after,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        })
    }

    /// One HTTP request with a JSON body already serialized: status, `Retry-After`, body.
    async fn http_raw(
        &self,
        budget: &MailboxBudget,
        items: u32,
        method: &str,
        url: &str,
        body: Option<bytes::Bytes>,
        prefer: Option<&str>,
    ) -> Result<(u16, Option<Duration>, bytes::Bytes), SendError> {
        let _mb = budget.admit(items).await;
        let _all = self.admit_global(items).await;
        let mut renew = false;
        loop {
            let token = self.token(renew).await?;
            let m = reqwest::Method::from_bytes(method.as_bytes())
                .map_err(|e| SendError::NoAnswer(e.to_string()))?;
            let mut req = self.http.request(m, url).bearer_auth(&token);
            if let Some(b) = &body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.clone());
            }
            if let Some(p) = prefer {
                req = req.header("prefer", p);
            }
            self.counters.http_requests.fetch_add(1, Ordering::Relaxed);
            self.counters
                .graph_requests
                .fetch_add(u64::from(items), Ordering::Relaxed);
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    self.counters.no_answer.fetch_add(1, Ordering::Relaxed);
                    return Err(SendError::NoAnswer(e.without_url().to_string()));
                }
            };
            let status = resp.status().as_u16();
            let ra = retry_after(resp.headers());
            let bytes = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    self.counters.no_answer.fetch_add(1, Ordering::Relaxed);
                    return Err(SendError::NoAnswer(e.without_url().to_string()));
                }
            };
            if status == 401 && !renew {
                renew = true;
                continue;
            }
            if status == 429 {
                self.counters.throttled.fetch_add(1, Ordering::Relaxed);
                budget.throttle(ra.unwrap_or(Duration::from_secs(5)));
            }
            return Ok((status, ra, bytes));
        }
    }

    /// One request (its URL relative to the Graph version).
    pub async fn call(&self, budget: &MailboxBudget, call: &Call) -> Result<Answer, SendError> {
        let url = format!("{}{}", self.cfg.graph_url, call.url);
        self.http(budget, 1, call.method, &url, call.body.as_deref(), None)
            .await
    }

    /// A GET of an absolute link Graph gave (`@odata.nextLink`, `@odata.deltaLink`).
    pub async fn follow(
        &self,
        budget: &MailboxBudget,
        link: &str,
        page: Option<usize>,
    ) -> Result<Answer, SendError> {
        if !link.starts_with(&self.cfg.graph_url) {
            return Err(SendError::NoAnswer(format!(
                "a link outside the Graph base URL was not followed: {}",
                link.chars().take(100).collect::<String>()
            )));
        }
        let prefer = page.map(|n| format!("odata.maxpagesize={n}"));
        self.http(budget, 1, "GET", link, None, prefer.as_deref())
            .await
    }

    /// Items run one after another in one `$batch` (each depends on the one before, so the
    /// batch holds one of the mailbox's slots). Answers in the order of `calls`; an item that
    /// came back without an answer is `None`. A failed item makes the rest answer `424`.
    pub async fn chain(
        &self,
        budget: &MailboxBudget,
        calls: &[Call],
    ) -> Result<Vec<Option<Answer>>, SendError> {
        if calls.len() == 1 {
            return self.call(budget, &calls[0]).await.map(|a| vec![Some(a)]);
        }
        // Serialized from the calls as they are (bodies are not copied into a JSON tree).
        let requests = BatchOut {
            requests: calls
                .iter()
                .enumerate()
                .map(|(i, c)| BatchItemOut {
                    id: (i + 1).to_string(),
                    method: c.method,
                    url: &c.url,
                    depends_on: (i > 0).then(|| [i.to_string()]),
                    headers: c.body.as_ref().map(|_| JsonType {
                        content_type: "application/json",
                    }),
                    body: c.body.as_deref(),
                })
                .collect(),
        };
        let envelope = serde_json::to_vec(&requests)
            .map_err(|e| SendError::NoAnswer(format!("batch: {e}")))?;
        let url = format!("{}/$batch", self.cfg.graph_url);
        let (status, retry_after, bytes) = self
            .http_raw(
                budget,
                calls.len() as u32,
                "POST",
                &url,
                Some(envelope.into()),
                None,
            )
            .await?;
        if status != 200 {
            // The whole batch failed (throttled, unavailable, refused): every item with it.
            let env = Answer {
                status,
                retry_after,
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            return Ok(vec![Some(env); calls.len()]);
        }
        let out = read_batch(calls, &bytes);
        for a in out.iter().flatten() {
            if a.status == 401 {
                // The token expired while the batch ran: the next request gets a new one.
                *self.token.lock().await = None;
            }
            if a.status == 429 {
                self.counters.throttled.fetch_add(1, Ordering::Relaxed);
                budget.throttle(a.retry_after.unwrap_or(Duration::from_secs(5)));
            }
        }
        Ok(out)
    }
}

/// The answers of a `$batch` envelope in the order of `calls` (`None`: no answer for that
/// item). Items' bodies stay raw until read: a written contact comes back whole, and only its
/// id and change key are kept.
fn read_batch(calls: &[Call], bytes: &[u8]) -> Vec<Option<Answer>> {
    let mut out: Vec<Option<Answer>> = vec![None; calls.len()];
    let responses = serde_json::from_slice::<BatchIn>(bytes)
        .map(|b| b.responses)
        .unwrap_or_default();
    for r in responses {
        let Some(i) =
            r.id.as_str()
                .and_then(|s| s.parse::<usize>().ok())
                .filter(|i| (1..=calls.len()).contains(i))
        else {
            continue;
        };
        let retry_after = r
            .headers
            .as_object()
            .and_then(|h| {
                h.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
                    .map(|(_, v)| v.clone())
            })
            .and_then(|v| match v {
                Value::String(s) => s.trim().parse::<u64>().ok(),
                Value::Number(n) => n.as_u64(),
                _ => None,
            })
            .map(Duration::from_secs);
        let status = r.status.as_u64().unwrap_or(0) as u16;
        let written = matches!(calls[i - 1].method, "POST" | "PATCH");
        let body = match r.body {
            None => Value::Null,
            Some(raw) if written && (200..300).contains(&status) => {
                match serde_json::from_str::<Written>(raw.get()) {
                    Ok(w) => w.into_value(),
                    Err(_) => serde_json::from_str(raw.get()).unwrap_or(Value::Null),
                }
            }
            Some(raw) => serde_json::from_str(raw.get()).unwrap_or(Value::Null),
        };
        out[i - 1] = Some(Answer {
            status,
            retry_after,
            body,
        });
    }
    out
}

/// A `$batch` request as sent.
#[derive(serde::Serialize)]
struct BatchOut<'a> {
    requests: Vec<BatchItemOut<'a>>,
}

#[derive(serde::Serialize)]
struct BatchItemOut<'a> {
    id: String,
    method: &'a str,
    url: &'a str,
    #[serde(rename = "dependsOn", skip_serializing_if = "Option::is_none")]
    depends_on: Option<[String; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    headers: Option<JsonType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a Value>,
}

#[derive(serde::Serialize)]
struct JsonType {
    #[serde(rename = "Content-Type")]
    content_type: &'static str,
}

/// A `$batch` answer as read: items' bodies unparsed.
#[derive(serde::Deserialize)]
struct BatchIn {
    #[serde(default)]
    responses: Vec<BatchItemIn>,
}

#[derive(serde::Deserialize)]
struct BatchItemIn {
    #[serde(default)]
    id: Value,
    #[serde(default)]
    status: Value,
    /// Any JSON: an odd member costs that item its answer, not the batch.
    #[serde(default)]
    headers: Value,
    #[serde(default)]
    body: Option<Box<serde_json::value::RawValue>>,
}

/// What the mirror reads of a contact it wrote.
#[derive(serde::Deserialize)]
struct Written {
    id: Option<String>,
    #[serde(rename = "changeKey")]
    change_key: Option<String>,
}

impl Written {
    fn into_value(self) -> Value {
        let mut o = serde_json::Map::new();
        if let Some(id) = self.id {
            o.insert("id".into(), Value::String(id));
        }
        if let Some(ck) = self.change_key {
            o.insert("changeKey".into(), Value::String(ck));
        }
        Value::Object(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_answers_keep_what_is_read_and_survive_odd_members() {
        let call = |method, url: &str| Call {
            method,
            url: url.into(),
            body: None,
        };
        let calls = [
            call("POST", "/users/a/contactFolders/f/contacts"),
            call("GET", "/users/a/contactFolders/f/contacts?$filter=x"),
            call("PATCH", "/users/a/contactFolders/f/contacts/i"),
            call("POST", "/users/a/contactFolders/f/contacts"),
        ];
        let env = serde_json::json!({"responses": [
            {"id": "3", "status": 429, "headers": {"Retry-After": "7"},
             "body": {"error": {"code": "TooManyRequests", "message": "later"}}},
            {"id": "1", "status": 201, "headers": "odd",
             "body": {"id": "AAM1", "changeKey": "ck1", "givenName": "Ada",
                      "emailAddresses": [{"address": "ada@example.test"}]}},
            {"id": "2", "status": 200, "body": {"value": [{"id": "AAM2"}]}},
            {"id": "9", "status": 200, "body": {}},
            {"id": 4, "status": 201, "body": {"id": "lost"}}
        ]});
        let out = read_batch(&calls, &serde_json::to_vec(&env).expect("json"));
        let created = out[0].as_ref().expect("answered");
        assert_eq!(created.status, 201);
        assert_eq!(
            created.body,
            serde_json::json!({"id": "AAM1", "changeKey": "ck1"}),
            "a written contact keeps only id and change key"
        );
        let found = out[1].as_ref().expect("answered");
        assert_eq!(
            found.body["value"][0]["id"], "AAM2",
            "a read keeps its body"
        );
        let throttled = out[2].as_ref().expect("answered");
        assert_eq!(throttled.retry_after, Some(Duration::from_secs(7)));
        assert_eq!(
            throttled.code(),
            "TooManyRequests",
            "an error keeps its body"
        );
        assert!(
            out[3].is_none(),
            "an item id that is not a string is no answer"
        );
        assert!(read_batch(&calls, b"not json").iter().all(Option::is_none));
    }

    #[test]
    fn the_window_admits_up_to_its_limit_then_says_how_long_to_wait() {
        let mut w = Window::new(10, Duration::from_secs(600));
        let t0 = Instant::now();
        assert_eq!(w.admit(6, t0), None);
        assert_eq!(w.admit(4, t0 + Duration::from_secs(1)), None);
        let wait = w.admit(3, t0 + Duration::from_secs(2)).expect("full");
        // The first 6 leave at t0 + 600 s: 598 s from now.
        assert!(wait >= Duration::from_secs(598) && wait < Duration::from_secs(599));
        assert_eq!(w.admit(3, t0 + Duration::from_secs(601)), None);
    }
}
