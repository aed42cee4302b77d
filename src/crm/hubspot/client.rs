//! HTTP to a HubSpot portal: Bearer token, a client-side budget that never exceeds the
//! configured rate (HubSpot's default burst: 100 requests per rolling 10 s), `429` and `5xx`
//! retried with back-off, paging followed; and the snapshot of a portal as crmgate records
//! (owners, teams, companies, contacts, deals, with their associations).

use super::map::{self, Mapping, CONTACT_PROPERTIES};
use crate::crm::CrmError;
use crate::domain::Record;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One portal's API.
pub struct Client {
    http: reqwest::Client,
    base: String,
    auth: Auth,
    per_10s: usize,
    sent: tokio::sync::Mutex<VecDeque<Instant>>,
    /// Search has its own budget (per second), apart from the 10-second one.
    search_per_s: usize,
    searched: tokio::sync::Mutex<VecDeque<Instant>>,
    /// Records per list page and inputs per batch call (at most 100).
    page: usize,
    /// Records per search page (at most 200).
    search_page: usize,
    /// HubSpot's clock (unix ms) from the `Date` of the latest answer; 0 before any.
    server_ms: AtomicI64,
    /// Counters for `/metrics`.
    pub stats: Stats,
    /// Consecutive failed calls, and until when calls fail at once after too many.
    breaker: std::sync::Mutex<(u32, Option<Instant>)>,
    /// Failed calls in a row that open the breaker.
    breaker_failures: u32,
    /// How long it stays open.
    breaker_cooldown: Duration,
}

/// A wait of about `d`, spread ±50 % so that clients retrying together do not stay together.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::Rng::gen_range(&mut rand::thread_rng(), 0.5..1.5))
}

/// What the client did, for `/metrics` and the benchmark.
#[derive(Default)]
pub struct Stats {
    /// Requests sent (attempts, retries included).
    pub requests: AtomicU64,
    /// `429` answers, all policies.
    pub throttled: AtomicU64,
    /// `429` answers naming the daily limit.
    pub daily_exhausted: AtomicU64,
    /// Access tokens fetched (OAuth).
    pub token_refreshes: AtomicU64,
    /// Unix seconds of the latest daily-limit `429` (0: none).
    pub daily_exhausted_at: AtomicI64,
    /// `5xx` answers and failed connections.
    pub failures: AtomicU64,
}

fn unavailable(reason: impl Into<String>) -> CrmError {
    CrmError::Unavailable {
        retry_after: None,
        reason: reason.into(),
    }
}

/// How requests are authorised.
enum Auth {
    /// A private app's static token.
    Static(String),
    /// An OAuth app: access tokens from the refresh token (refreshed on `401`).
    OAuth(Box<crate::crm::oauth::Refresher>),
}

/// What became of a request sent with [`Client::send_once`].
pub enum Sent {
    /// HubSpot answered (any status but `429`, `5xx`, `401`, `403`).
    Answer(u16, Value),
    /// It was certainly not applied.
    NotApplied(CrmError),
    /// It may or may not have been applied.
    Unknown(CrmError),
}

/// Records per list page and inputs per batch call by default (HubSpot's documented maximum).
pub const PAGE: usize = 100;
/// Records per search page by default (HubSpot's documented maximum).
pub const SEARCH_PAGE: usize = 200;
/// Attempts at one request through 429s and 5xx.
const ATTEMPTS: u32 = 4;

impl Client {
    /// A client of the portal at `base` (https, or http on loopback for tests) with a private
    /// app's token, sending at most `per_10s` requests in any 10 seconds.
    pub fn new(base: &str, token: &str, per_10s: usize) -> Result<Client, String> {
        let base = base.trim_end_matches('/').to_owned();
        let loopback = base.starts_with("http://127.0.0.1") || base.starts_with("http://localhost");
        if !base.starts_with("https://") && !loopback {
            return Err(format!(
                "crm.hubspot.base_url: {base} is neither https nor loopback"
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Client {
            http,
            base,
            auth: Auth::Static(token.to_owned()),
            per_10s: per_10s.max(1),
            sent: tokio::sync::Mutex::new(VecDeque::new()),
            search_per_s: 4,
            searched: tokio::sync::Mutex::new(VecDeque::new()),
            page: PAGE,
            search_page: SEARCH_PAGE,
            server_ms: AtomicI64::new(0),
            stats: Stats::default(),
            breaker: std::sync::Mutex::new((0, None)),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(15),
        })
    }

    /// The same client authorised as an OAuth app instead (access tokens from `oauth`).
    pub fn with_oauth(mut self, oauth: crate::crm::oauth::Refresher) -> Client {
        self.auth = Auth::OAuth(Box::new(oauth));
        self
    }

    /// The bearer token for the next request (`fresh`: after a `401`, a new one).
    async fn bearer(&self, fresh: bool) -> Result<String, CrmError> {
        match &self.auth {
            Auth::Static(t) => Ok(t.clone()),
            Auth::OAuth(o) => o
                .access_token(&self.http, fresh, &self.stats.token_refreshes)
                .await
                .map_err(|e| match e {
                    crate::crm::oauth::TokenFailure::Unreachable(m)
                    | crate::crm::oauth::TokenFailure::Refused { message: m, .. } => unavailable(m),
                }),
        }
    }

    /// Sets the page sizes: records per list page and inputs per batch call (1–100), records
    /// per search page (1–200).
    pub fn with_pages(mut self, page: usize, search_page: usize) -> Client {
        self.page = page.clamp(1, PAGE);
        self.search_page = search_page.clamp(1, SEARCH_PAGE);
        self
    }

    /// Sets the search budget: at most `per_s` searches in any second (HubSpot's own search
    /// limit is 4 or 5 per second, depending on when the portal was created).
    pub fn with_search_budget(mut self, per_s: usize) -> Client {
        self.search_per_s = per_s.max(1);
        self
    }

    /// Sets the circuit breaker: after `failures` failed calls in a row, calls fail at once
    /// for `cooldown` (reads go on from the mirror; writes get a retryable error).
    pub fn with_breaker(mut self, failures: u32, cooldown: Duration) -> Client {
        self.breaker_failures = failures.max(1);
        self.breaker_cooldown = cooldown;
        self
    }

    /// `Err` while the breaker is open.
    fn breaker_closed(&self) -> Result<(), CrmError> {
        let b = self
            .breaker
            .lock()
            .map_err(|_| unavailable("breaker lock"))?;
        match b.1 {
            Some(until) if Instant::now() < until => Err(CrmError::Unavailable {
                retry_after: Some(until.saturating_duration_since(Instant::now())),
                reason: "HubSpot failed repeatedly; waiting before the next attempt".into(),
            }),
            _ => Ok(()),
        }
    }

    /// Records the outcome of a call for the breaker.
    fn breaker_note(&self, ok: bool) {
        if let Ok(mut b) = self.breaker.lock() {
            if ok {
                *b = (0, None);
            } else {
                b.0 += 1;
                if b.0 >= self.breaker_failures {
                    b.1 = Some(Instant::now() + self.breaker_cooldown);
                    tracing::warn!(
                        failures = b.0,
                        cooldown_secs = self.breaker_cooldown.as_secs(),
                        "HubSpot keeps failing; pausing calls"
                    );
                }
            }
        }
    }

    /// Whether the breaker is open now (for `/metrics`).
    pub fn breaker_open(&self) -> bool {
        self.breaker_closed().is_err()
    }

    /// HubSpot's clock as of the latest answer (unix ms; 0 before any answer).
    pub fn server_ms(&self) -> i64 {
        self.server_ms.load(Ordering::Relaxed)
    }

    /// Waits until one more request to `path` stays within its budget: searches count
    /// against the search budget (per second), everything else against the 10-second one.
    async fn slot(&self, path: &str) {
        // Each window a little longer than HubSpot's: HubSpot counts arrivals, which network
        // delays can bring closer together than the sends were.
        let (window, cap, span) = if path.ends_with("/search") {
            (
                &self.searched,
                self.search_per_s,
                Duration::from_millis(1100),
            )
        } else {
            (&self.sent, self.per_10s, Duration::from_millis(10_250))
        };
        loop {
            let wait = {
                let mut sent = window.lock().await;
                let now = Instant::now();
                while sent.front().is_some_and(|t| now.duration_since(*t) >= span) {
                    sent.pop_front();
                }
                if sent.len() < cap {
                    sent.push_back(now);
                    return;
                }
                sent.front()
                    .map(|t| span.saturating_sub(now.duration_since(*t)))
                    .unwrap_or_default()
            };
            tokio::time::sleep(wait + Duration::from_millis(5)).await;
        }
    }

    /// One request; `429` and `5xx` retried with growing waits (with jitter), other errors
    /// returned; while the circuit breaker is open, an error at once.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), CrmError> {
        self.breaker_closed()?;
        let r = self.call_inner(method, path, body).await;
        match &r {
            Ok((status, _)) => self.breaker_note(*status < 500),
            // A used-up daily limit is no failure of HubSpot's.
            Err(CrmError::Unavailable { reason, .. }) if reason.contains("daily") => {}
            Err(_) => self.breaker_note(false),
        }
        r
    }

    async fn call_inner(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), CrmError> {
        let mut wait = Duration::from_millis(250);
        let mut fresh = false;
        for attempt in 1..=ATTEMPTS {
            self.slot(path).await;
            let token = self.bearer(fresh).await?;
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .bearer_auth(token);
            if let Some(b) = body {
                req = req.json(b);
            }
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) if attempt < ATTEMPTS => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, "HubSpot request failed; retrying");
                    tokio::time::sleep(jitter(wait)).await;
                    wait *= 2;
                    continue;
                }
                Err(e) => return Err(unavailable(format!("HubSpot: {e}"))),
            };
            let status = resp.status().as_u16();
            if let Some(at) = resp
                .headers()
                .get(reqwest::header::DATE)
                .and_then(|d| d.to_str().ok())
                .and_then(|d| httpdate::parse_http_date(d).ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            {
                self.server_ms
                    .store(at.as_millis() as i64, Ordering::Relaxed);
            }
            let text = resp.text().await.unwrap_or_default();
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if status == 429 {
                self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                if v["policyName"] == "DAILY" {
                    // Retrying within the day only burns more of nothing: report it and
                    // let the caller keep serving from the mirror.
                    self.stats.daily_exhausted.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .daily_exhausted_at
                        .store(crate::domain::time::unix_now(), Ordering::Relaxed);
                    return Err(CrmError::Unavailable {
                        retry_after: Some(Duration::from_secs(300)),
                        reason: "HubSpot's daily API limit is used up".into(),
                    });
                }
            } else if status >= 500 {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
            }
            if (status == 429 || status >= 500) && attempt < ATTEMPTS {
                // HubSpot's 429 names its policy; the burst window is 10 s, the search one 1 s.
                let pause = if v["policyName"] == "TEN_SECONDLY_ROLLING" {
                    Duration::from_secs(1).max(wait)
                } else {
                    wait
                };
                tokio::time::sleep(jitter(pause)).await;
                wait *= 2;
                continue;
            }
            // An expired access token: a new one, and the request once more.
            if status == 401 && !fresh && matches!(self.auth, Auth::OAuth(_)) {
                fresh = true;
                continue;
            }
            if status == 401 || status == 403 {
                return Err(unavailable(format!(
                    "HubSpot refused the token ({status}): {}",
                    v["message"].as_str().unwrap_or("")
                )));
            }
            return Ok((status, v));
        }
        Err(unavailable("HubSpot kept failing"))
    }

    /// A request that must not be repeated blindly (a create): sent until HubSpot answers
    /// or it is clear it was not applied (no connection, `429`); a lost answer or a `5xx` is
    /// [`Sent::Unknown`], for the caller to look up before anything is sent again.
    pub async fn send_once(&self, method: reqwest::Method, path: &str, body: &Value) -> Sent {
        if let Err(e) = self.breaker_closed() {
            return Sent::NotApplied(e);
        }
        let sent = self.send_once_inner(method, path, body).await;
        self.breaker_note(matches!(sent, Sent::Answer(..)));
        sent
    }

    async fn send_once_inner(&self, method: reqwest::Method, path: &str, body: &Value) -> Sent {
        let mut wait = Duration::from_millis(250);
        let mut fresh = false;
        for attempt in 1..=ATTEMPTS {
            self.slot(path).await;
            let token = match self.bearer(fresh).await {
                Ok(t) => t,
                Err(e) => return Sent::NotApplied(e),
            };
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let sent = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .bearer_auth(token)
                .json(body)
                .send()
                .await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) if e.is_connect() && attempt < ATTEMPTS => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(jitter(wait)).await;
                    wait *= 2;
                    continue;
                }
                Err(e) if e.is_connect() => {
                    return Sent::NotApplied(unavailable(format!("HubSpot: {e}")))
                }
                Err(e) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    return Sent::Unknown(unavailable(format!("HubSpot: {e}")));
                }
            };
            let status = resp.status().as_u16();
            let text = match resp.text().await {
                Ok(t) => t,
                Err(e) => return Sent::Unknown(unavailable(format!("HubSpot: {e}"))),
            };
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if status == 429 {
                self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                if v["policyName"] == "DAILY" || attempt == ATTEMPTS {
                    return Sent::NotApplied(unavailable("HubSpot's API limit is used up"));
                }
                tokio::time::sleep(jitter(Duration::from_secs(1).max(wait))).await;
                wait *= 2;
                continue;
            }
            if status >= 500 {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                return Sent::Unknown(unavailable(format!("HubSpot answered {status}")));
            }
            // A 401 is answered before anything is done: with a new token, once more.
            if status == 401 && !fresh && matches!(self.auth, Auth::OAuth(_)) {
                fresh = true;
                continue;
            }
            if status == 401 || status == 403 {
                return Sent::NotApplied(unavailable(format!(
                    "HubSpot refused the token ({status})"
                )));
            }
            return Sent::Answer(status, v);
        }
        Sent::NotApplied(unavailable("HubSpot kept throttling"))
    }

    async fn get_ok(&self, path: &str) -> Result<Value, CrmError> {
        match self.call(reqwest::Method::GET, path, None).await? {
            (200, v) => Ok(v),
            (s, v) => Err(unavailable(format!(
                "HubSpot GET {path}: {s} {}",
                v["message"].as_str().unwrap_or("")
            ))),
        }
    }

    /// Every owner.
    pub async fn owners(&self) -> Result<Vec<Value>, CrmError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let q = after
                .as_deref()
                .map(|a| format!("&after={a}"))
                .unwrap_or_default();
            let mut v = self.get_ok(&format!("/crm/v3/owners?limit=100{q}")).await?;
            out.extend(take_results(&mut v));
            match v["paging"]["next"]["after"].as_str() {
                Some(a) if after.as_deref() != Some(a) => after = Some(a.to_owned()),
                _ => return Ok(out),
            }
        }
    }

    /// Every live record of an object type with these properties, page by page.
    pub async fn list(&self, object: &str, properties: &[&str]) -> Result<Vec<Value>, CrmError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (rows, next) = self.list_page(object, properties, after.as_deref()).await?;
            out.extend(rows);
            match next {
                Some(a) if after.as_deref() != Some(a.as_str()) => after = Some(a),
                _ => return Ok(out),
            }
        }
    }

    /// One page of live records (`page_size`) after the cursor `after`, and the next cursor (none on
    /// the last page).
    pub async fn list_page(
        &self,
        object: &str,
        properties: &[&str],
        after: Option<&str>,
    ) -> Result<(Vec<Value>, Option<String>), CrmError> {
        let q = after.map(|a| format!("&after={a}")).unwrap_or_default();
        let mut v = self
            .get_ok(&format!(
                "/crm/v3/objects/{object}?limit={}&properties={}{q}",
                self.page,
                properties.join(",")
            ))
            .await?;
        let rows = take_results(&mut v);
        let next = v["paging"]["next"]["after"]
            .as_str()
            .filter(|a| Some(*a) != after)
            .map(str::to_owned);
        Ok((rows, next))
    }

    /// How many live records an object type has (search's `total`; for progress only).
    pub async fn count(&self, object: &str) -> Result<u64, CrmError> {
        let (status, v) = self
            .call(
                reqwest::Method::POST,
                &format!("/crm/v3/objects/{object}/search"),
                Some(&json!({"limit": 1, "properties": ["hs_object_id"]})),
            )
            .await?;
        match (status, v["total"].as_u64()) {
            (200, Some(n)) => Ok(n),
            _ => Err(unavailable(format!("HubSpot count of {object}: {status}"))),
        }
    }

    /// The associations `from` → `to` of these records: record id → associated ids.
    pub async fn associations(
        &self,
        from: &str,
        to: &str,
        ids: &[String],
    ) -> Result<HashMap<String, Vec<String>>, CrmError> {
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for chunk in ids.chunks(self.page) {
            let inputs: Vec<Value> = chunk.iter().map(|i| json!({"id": i})).collect();
            let (status, v) = self
                .call(
                    reqwest::Method::POST,
                    &format!("/crm/v4/associations/{from}/{to}/batch/read"),
                    Some(&json!({"inputs": inputs})),
                )
                .await?;
            if status != 200 && status != 207 {
                return Err(unavailable(format!(
                    "HubSpot associations {from}→{to}: {status}"
                )));
            }
            for r in v["results"].as_array().into_iter().flatten() {
                let Some(id) = r["from"]["id"].as_str() else {
                    continue;
                };
                let tos = r["to"].as_array().into_iter().flatten().filter_map(|t| {
                    match &t["toObjectId"] {
                        Value::Number(n) => Some(n.to_string()),
                        Value::String(s) => Some(s.clone()),
                        _ => None,
                    }
                });
                out.entry(id.to_owned()).or_default().extend(tos);
            }
        }
        for v in out.values_mut() {
            v.sort();
            v.dedup();
        }
        Ok(out)
    }

    /// Records of `object` modified at or after `since_ms` (unix milliseconds), oldest first,
    /// with the newest modification seen: HubSpot's search on the last-modified property,
    /// ascending, paged by `after`, and restarted from the last timestamp seen before the
    /// 10,000-result cap a search cannot page past. Records at the boundary timestamp may come
    /// twice; the caller keeps the newest of each id.
    pub async fn modified_since(
        &self,
        object: &str,
        since_ms: i64,
        properties: &[&str],
    ) -> Result<(Vec<Value>, i64), CrmError> {
        let limit = self.search_page;
        const CAP: usize = 10_000;
        let prop = if object == "contacts" {
            "lastmodifieddate"
        } else {
            "hs_lastmodifieddate"
        };
        let mut from = since_ms;
        let mut newest = since_ms;
        let mut out: Vec<Value> = Vec::new();
        let mut after = 0usize;
        loop {
            let body = json!({
                "filterGroups": [{"filters": [{"propertyName": prop, "operator": "GTE", "value": from.to_string()}]}],
                "sorts": [{"propertyName": prop, "direction": "ASCENDING"}],
                "properties": properties.iter().copied().chain([prop]).collect::<Vec<_>>(),
                "limit": limit,
                "after": after.to_string(),
            });
            let (status, mut v) = self
                .call(
                    reqwest::Method::POST,
                    &format!("/crm/v3/objects/{object}/search"),
                    Some(&body),
                )
                .await?;
            if status != 200 {
                return Err(unavailable(format!(
                    "HubSpot search {object}: {status} {}",
                    v["message"].as_str().unwrap_or("")
                )));
            }
            let page = take_results(&mut v);
            for r in &page {
                if let Some(ms) = r["properties"][prop].as_str().and_then(parse_time_ms) {
                    newest = newest.max(ms);
                }
            }
            let n = page.len();
            out.extend(page);
            let next = v["paging"]["next"]["after"]
                .as_str()
                .and_then(|a| a.parse::<usize>().ok());
            match next {
                None => return Ok((out, newest)),
                Some(a) if a + limit <= CAP => after = a,
                // At the cap: a new search from the newest timestamp seen. Should one
                // timestamp hold more than a whole capped search, nothing moves: stop.
                Some(_) if newest > from => {
                    from = newest;
                    after = 0;
                }
                Some(_) => {
                    return Err(unavailable(format!(
                        "HubSpot search {object}: more than {CAP} records at one timestamp"
                    )))
                }
            }
            if n == 0 {
                return Ok((out, newest));
            }
        }
    }

    /// Live records of an object type by id, in batches of 100 (ids HubSpot does not have, or
    /// has archived, are simply absent from the answer).
    pub async fn batch_read(
        &self,
        object: &str,
        ids: &[String],
        properties: &[&str],
    ) -> Result<Vec<Value>, CrmError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(self.page) {
            let inputs: Vec<Value> = chunk.iter().map(|i| json!({"id": i})).collect();
            let (status, mut v) = self
                .call(
                    reqwest::Method::POST,
                    &format!("/crm/v3/objects/{object}/batch/read"),
                    Some(&json!({"inputs": inputs, "properties": properties})),
                )
                .await?;
            if status != 200 && status != 207 {
                return Err(unavailable(format!(
                    "HubSpot batch read of {object}: {status} {}",
                    v["message"].as_str().unwrap_or("")
                )));
            }
            out.extend(take_results(&mut v));
        }
        Ok(out)
    }

    /// Ids of the archived records of an object type (HubSpot keeps archived contacts for
    /// 90 days; a record deleted for good is caught by the full reconciliation instead).
    pub async fn archived_ids(&self, object: &str) -> Result<Vec<String>, CrmError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let q = after
                .as_deref()
                .map(|a| format!("&after={a}"))
                .unwrap_or_default();
            let v = self
                .get_ok(&format!(
                    "/crm/v3/objects/{object}?limit={}&archived=true&properties=hs_object_id{q}",
                    self.page
                ))
                .await?;
            out.extend(
                v["results"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r["id"].as_str().map(str::to_owned)),
            );
            match v["paging"]["next"]["after"].as_str() {
                Some(a) if after.as_deref() != Some(a) => after = Some(a.to_owned()),
                _ => return Ok(out),
            }
        }
    }

    /// Teams and people from the owners.
    pub async fn people(&self) -> Result<Vec<Record>, CrmError> {
        let owners = self.owners().await?;
        let mut out: Vec<Record> = map::teams(&owners)
            .into_iter()
            .map(Record::Subsystem)
            .collect();
        out.extend(owners.iter().filter_map(map::user).map(Record::User));
        Ok(out)
    }

    /// The properties read of an object type.
    pub fn properties<'m>(object: &str, m: &'m Mapping) -> Vec<&'m str> {
        match object {
            "companies" => COMPANY_PROPERTIES
                .iter()
                .copied()
                .chain(m.extra_company_owners.iter().map(String::as_str))
                .collect(),
            "contacts" => CONTACT_PROPERTIES
                .iter()
                .copied()
                .chain(["company", "hubspot_team_id"])
                .chain(m.custom.values().map(String::as_str))
                .collect(),
            _ => DEAL_PROPERTIES.to_vec(),
        }
    }

    /// HubSpot rows of an object type as crmgate records, with the associations they need
    /// read in batches (contacts: their companies; deals: their contacts and companies).
    pub async fn records(
        &self,
        object: &str,
        rows: &[Value],
        m: &Mapping,
    ) -> Result<Vec<Record>, CrmError> {
        let ids: Vec<String> = rows
            .iter()
            .filter_map(|c| c["id"].as_str().map(str::to_owned))
            .collect();
        Ok(match object {
            "companies" => rows
                .iter()
                .filter_map(|c| map::company(c, m))
                .map(Record::Company)
                .collect(),
            "contacts" => {
                let of_contact = self.associations("contacts", "companies", &ids).await?;
                rows.iter()
                    .filter_map(|c| {
                        let id = c["id"].as_str()?;
                        let companies = of_contact.get(id).cloned().unwrap_or_default();
                        map::contact(c, &companies, m).map(Record::Contact)
                    })
                    .collect()
            }
            _ => {
                let contacts = self.associations("deals", "contacts", &ids).await?;
                let companies = self.associations("deals", "companies", &ids).await?;
                rows.iter()
                    .filter_map(|d| {
                        let id = d["id"].as_str()?;
                        map::deal(
                            d,
                            contacts.get(id).map(Vec::as_slice).unwrap_or(&[]),
                            companies.get(id).map(Vec::as_slice).unwrap_or(&[]),
                            m,
                        )
                        .map(Record::Lead)
                    })
                    .collect()
            }
        })
    }

    /// The whole portal as crmgate records: teams, people, companies, contacts with their
    /// companies, deals with their contacts and companies; and HubSpot's clock when the read
    /// began (after the owners), from which changes are searched afterwards.
    pub async fn snapshot(&self, m: &Mapping) -> Result<(Vec<Record>, i64), CrmError> {
        let mut out = self.people().await?;
        let began = self.server_ms();
        for object in OBJECTS {
            let rows = self.list(object, &Self::properties(object, m)).await?;
            out.extend(self.records(object, &rows, m).await?);
        }
        Ok((out, began))
    }
}

/// The object types read, in the order a snapshot reads them.
pub const OBJECTS: [&str; 3] = ["companies", "contacts", "deals"];

const COMPANY_PROPERTIES: [&str; 12] = [
    "name",
    "domain",
    "website",
    "phone",
    "type",
    "hubspot_owner_id",
    "hubspot_team_id",
    "address",
    "city",
    "zip",
    "state",
    "country",
];

const DEAL_PROPERTIES: [&str; 5] = [
    "dealname",
    "dealstage",
    "pipeline",
    "hubspot_owner_id",
    "hubspot_team_id",
];

/// Unix milliseconds of HubSpot's `2026-11-01T08:00:00.123Z` (or a number of milliseconds).
pub fn parse_time_ms(s: &str) -> Option<i64> {
    if let Ok(n) = s.parse::<i64>() {
        return Some(n);
    }
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || !s.ends_with('Z') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let ms = match s.get(19..s.len() - 1) {
        Some(f) if f.starts_with('.') && f.len() > 1 => {
            let digits: String = f[1..].chars().take(3).collect();
            let n: i64 = digits.parse().ok()?;
            n * 10_i64.pow(3 - digits.len() as u32)
        }
        Some("") => 0,
        _ => return None,
    };
    let days = crate::domain::time::days_from_civil(y, mo, d);
    Some(((days * 86_400 + h * 3600 + mi * 60 + se) * 1000) + ms)
}

/// The `results` array of an answer, moved out of it (a page is never held twice).
pub fn take_results(v: &mut Value) -> Vec<Value> {
    match v.get_mut("results").map(Value::take) {
        Some(Value::Array(rows)) => rows,
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hubspot_times_parse() {
        assert_eq!(parse_time_ms("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(
            parse_time_ms("2026-11-01T08:00:00.123Z"),
            Some(1_793_520_000_123)
        );
        assert_eq!(
            parse_time_ms("2026-11-01T08:00:00Z"),
            Some(1_793_520_000_000)
        );
        assert_eq!(parse_time_ms("1793520000123"), Some(1_793_520_000_123));
        assert_eq!(parse_time_ms("2026-13-01T08:00:00Z"), None);
        assert_eq!(parse_time_ms("yesterday"), None);
    }
}
