//! An in-process, stateful simulator of the HubSpot CRM API subset a crmgate backend needs,
//! built from the facts in `../shared/specs/hubspot/README.md` (HubSpot's own OpenAPI files are
//! proprietary and not used), for the HubSpot backend's tests (issue 14).
//!
//! Served: `GET /crm/v3/owners`; `/crm/v3/objects/{contacts,companies,deals}` (also `0-1`,
//! `0-2`, `0-3`): list, get (also `?idProperty=email`), create (201), `PATCH` (200), archive
//! (`DELETE`, 204), `batch/read`, `batch/create`, `batch/update`, `batch/archive`, `search`;
//! associations v4: `PUT …/associations/default/{to}/{toId}`, `GET …/associations/{to}`,
//! `POST /crm/v4/associations/{from}/{to}/batch/read`.
//!
//! Strict where the README is silent, so the adapter cannot come to rely on more:
//! - every request needs `Authorization: Bearer <token>` with a token the sim issued
//!   ([`HubSpotSim::TOKEN`]); anything else is 401 with HubSpot's `Error` body;
//! - answers carry only the properties asked for (`properties=`; default: the object type's
//!   defaults, never everything), and associations only when asked for;
//! - list `limit` above 100, search `limit` above 200, more than 6 filter groups, more than
//!   100 batch inputs, a search paging past 10,000 results: 400 with the `Error` body;
//! - `paging` is absent on the last page;
//! - 100 requests per rolling 10 s (the Free/Starter burst) across all endpoints but search,
//!   which has its own budget of 5 per second; beyond: 429 with HubSpot's rate-limit body;
//! - new or changed records reach search after a delay ([`HubSpotSim::set_search_lag`]).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The object types served, with their HubSpot type ids and default properties.
const TYPES: [(&str, &str, &[&str]); 3] = [
    (
        "contacts",
        "0-1",
        &[
            "firstname",
            "lastname",
            "email",
            "createdate",
            "lastmodifieddate",
            "hs_object_id",
        ],
    ),
    (
        "companies",
        "0-2",
        &[
            "name",
            "domain",
            "createdate",
            "hs_lastmodifieddate",
            "hs_object_id",
        ],
    ),
    (
        "deals",
        "0-3",
        &[
            "dealname",
            "amount",
            "dealstage",
            "pipeline",
            "closedate",
            "createdate",
            "hs_lastmodifieddate",
            "hs_object_id",
        ],
    ),
];

/// HubSpot-defined association type ids (unlabelled defaults), from → to.
const ASSOC_TYPES: [(&str, &str, u32); 6] = [
    ("contacts", "companies", 279),
    ("companies", "contacts", 280),
    ("contacts", "deals", 4),
    ("deals", "contacts", 3),
    ("deals", "companies", 341),
    ("companies", "deals", 342),
];

fn modified_prop(t: &str) -> &'static str {
    if t == "contacts" {
        "lastmodifieddate"
    } else {
        "hs_lastmodifieddate"
    }
}

/// One stored record.
#[derive(Clone, Debug)]
struct Rec {
    id: u64,
    properties: Map<String, Value>,
    created_ms: i64,
    updated_ms: i64,
    archived: bool,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<&'static str, BTreeMap<u64, Rec>>,
    owners: Vec<Value>,
    /// (from type, from id, to type) → to ids.
    assoc: BTreeMap<(&'static str, u64, &'static str), Vec<u64>>,
    next_id: u64,
    window: VecDeque<Instant>,
    search_window: VecDeque<Instant>,
    search_lag: Duration,
    requests: u64,
    by_route: BTreeMap<String, u64>,
    /// Every write to an object as received: ("PATCH contacts/123", body).
    writes: Vec<(String, Value)>,
    /// Webhook events not delivered yet (only while deliveries are on).
    events: Vec<Value>,
    webhooks_on: bool,
    next_event: u64,
    /// Deliveries sent: (timestamp header, signature header, body).
    deliveries: Vec<(String, String, Vec<u8>)>,
    delivery: Option<tokio::task::JoinHandle<()>>,
    faults: Faults,
    faults_injected: u64,
    /// Added before every answer.
    latency: Duration,
    /// OAuth: the refresh token that works now (each use rotates it), the access tokens
    /// issued with their expiry, their lifetime, and how many were issued.
    refresh_token: String,
    /// The portal's daily limit is used up: every API request answers HubSpot's DAILY 429.
    daily_exhausted: bool,
    access_tokens: BTreeMap<String, Instant>,
    access_ttl: Duration,
    token_grants: u64,
}

/// Fault switches (all off by default).
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// Share of requests answered `502` without doing anything.
    pub fail_before: f64,
    /// Share of successful writes whose connection is dropped after the write was applied.
    pub drop_after_write: f64,
}

/// HubSpot's v3 request signature: base64(HMAC-SHA256(secret, method + URI + body +
/// timestamp)), written here from HubSpot's documentation, independently of crmgate's.
pub fn v3_signature(secret: &str, method: &str, uri: &str, body: &[u8], ts: &str) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(method.as_bytes());
    mac.update(uri.as_bytes());
    mac.update(body);
    mac.update(ts.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The singular HubSpot uses in event names (`contact.creation`).
fn singular(t: &str) -> &'static str {
    match t {
        "contacts" => "contact",
        "companies" => "company",
        _ => "deal",
    }
}

/// Queues a webhook event about `id` of type `t` (when deliveries are on).
fn event(st: &mut State, t: &str, what: &str, id: u64, extra: Value) {
    if !st.webhooks_on {
        return;
    }
    st.next_event += 1;
    let mut e = json!({"eventId": st.next_event, "subscriptionId": 4001, "portalId": 62515,
        "appId": 1160452, "subscriptionType": format!("{}.{what}", singular(t)),
        "attemptNumber": 0, "objectId": id, "changeFlag": what.to_uppercase(), "changeSource": "CRM_UI"});
    if let (Some(m), Some(x)) = (e.as_object_mut(), extra.as_object()) {
        for (k, v) in x {
            m.insert(k.clone(), v.clone());
        }
    }
    st.events.push(e);
}

fn association_event(st: &mut State, f: &str, fid: u64, t: &str, tid: u64, removed: bool) {
    let kind = format!(
        "{}_TO_{}",
        singular(f).to_uppercase(),
        singular(t).to_uppercase()
    );
    event(
        st,
        f,
        "associationChange",
        fid,
        json!({"associationType": kind, "fromObjectId": fid, "toObjectId": tid,
            "associationRemoved": removed, "isPrimaryAssociation": false}),
    );
}

/// The simulator; stops when dropped.
pub struct HubSpotSim {
    /// `http://127.0.0.1:port`.
    pub base_url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    started: Instant,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sim time: 2026-11-01T08:00:00Z plus real time.
    fn now_ms(&self) -> i64 {
        1_793_520_000_000 + self.started.elapsed().as_millis() as i64
    }
}

impl Drop for HubSpotSim {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(t) = self.shared.lock().delivery.take() {
            t.abort();
        }
    }
}

fn iso(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

fn error(status: u16, category: &str, message: &str) -> (u16, Value) {
    (
        status,
        json!({"status": "error", "category": category, "message": message,
            "correlationId": "00000000-0000-4000-8000-000000000000"}),
    )
}

fn bad(message: &str) -> (u16, Value) {
    error(400, "VALIDATION_ERROR", message)
}

fn type_name(t: &str) -> Option<&'static str> {
    TYPES
        .iter()
        .find(|(n, id, _)| *n == t || *id == t)
        .map(|(n, _, _)| *n)
}

fn defaults(t: &str) -> &'static [&'static str] {
    TYPES
        .iter()
        .find(|(n, _, _)| *n == t)
        .map(|(_, _, d)| *d)
        .unwrap_or(&[])
}

impl HubSpotSim {
    /// The private-app token the sim accepts.
    pub const TOKEN: &'static str = "pat-sim-0001";
    /// The OAuth app the sim knows, and its first refresh token.
    pub const CLIENT_ID: &'static str = "sim-client-0001";
    /// The OAuth app's secret.
    pub const CLIENT_SECRET: &'static str = "sim-client-secret";
    /// The refresh token an install gives first.
    pub const REFRESH_TOKEN: &'static str = "sim-refresh-0001";

    /// How long OAuth access tokens live (default 30 minutes, HubSpot's).
    pub fn set_access_ttl(&self, d: Duration) {
        self.shared.lock().access_ttl = d;
    }

    /// OAuth access tokens issued so far.
    pub fn token_grants(&self) -> u64 {
        self.shared.lock().token_grants
    }

    /// Binds 127.0.0.1:0 and serves on the current tokio runtime.
    pub async fn start() -> HubSpotSim {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("hubspot_sim: bind");
        let addr = listener.local_addr().expect("addr");
        let base_url = format!("http://127.0.0.1:{}", addr.port());
        let mut st = State {
            next_id: 100,
            refresh_token: HubSpotSim::REFRESH_TOKEN.to_owned(),
            access_ttl: Duration::from_secs(1800),
            ..State::default()
        };
        for (t, _, _) in TYPES {
            st.objects.insert(t, BTreeMap::new());
        }
        let shared = Arc::new(Shared {
            started: Instant::now(),
            state: Mutex::new(st),
        });
        let sh = shared.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                while conns.try_join_next().is_some() {}
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let sh = sh.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let sh = sh.clone();
                        async move { handle(&sh, req).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        HubSpotSim {
            base_url,
            shared,
            task,
        }
    }

    /// Adds an owner (`type` PERSON unless `queue`), returns its id.
    pub fn add_owner(
        &self,
        email: &str,
        first: &str,
        last: &str,
        teams: &[(&str, &str)],
        queue: bool,
    ) -> String {
        let mut st = self.shared.lock();
        st.next_id += 1;
        let id = st.next_id.to_string();
        let now = iso(self.shared.now_ms());
        let teams: Vec<Value> = teams
            .iter()
            .enumerate()
            .map(|(i, (tid, name))| json!({"id": tid, "name": name, "primary": i == 0}))
            .collect();
        let user_id = st.next_id + 1_000_000;
        st.owners.push(
            json!({"id": id, "email": email, "firstName": first, "lastName": last,
            "userId": user_id, "userIdIncludingInactive": user_id,
            "type": if queue { "QUEUE" } else { "PERSON" }, "teams": teams,
            "createdAt": now, "updatedAt": now, "archived": false}),
        );
        id
    }

    /// Adds a record of `object_type` with these (string) properties, returns its id.
    pub fn add(&self, object_type: &str, properties: Value) -> u64 {
        let t = type_name(object_type).expect("object type");
        let now = self.shared.now_ms();
        let mut st = self.shared.lock();
        create(
            &mut st,
            t,
            properties.as_object().cloned().unwrap_or_default(),
            now,
        )
    }

    /// Associates two records both ways (the default unlabelled association).
    pub fn associate(&self, from: &str, from_id: u64, to: &str, to_id: u64) {
        let (f, t) = (type_name(from).expect("from"), type_name(to).expect("to"));
        let mut st = self.shared.lock();
        link(&mut st, f, from_id, t, to_id);
    }

    /// Changes properties of a record as a HubSpot user would (its modification time moves).
    pub fn update(&self, object_type: &str, id: u64, properties: Value) {
        let t = type_name(object_type).expect("object type");
        let now = self.shared.now_ms();
        let mut st = self.shared.lock();
        if let Some(r) = st.objects.get_mut(t).and_then(|m| m.get_mut(&id)) {
            for (k, v) in properties.as_object().into_iter().flatten() {
                r.properties.insert(k.clone(), v.clone());
            }
            r.updated_ms = now;
            r.properties
                .insert(modified_prop(t).into(), json!(iso(now)));
            for (k, v) in properties.as_object().into_iter().flatten() {
                event(
                    &mut st,
                    t,
                    "propertyChange",
                    id,
                    json!({"propertyName": k, "propertyValue": v}),
                );
            }
        }
    }

    /// Archives a record as a HubSpot user would (gone from lists, search and associations).
    pub fn archive(&self, object_type: &str, id: u64) {
        let t = type_name(object_type).expect("object type");
        let now = self.shared.now_ms();
        let mut st = self.shared.lock();
        if let Some(r) = st.objects.get_mut(t).and_then(|m| m.get_mut(&id)) {
            r.archived = true;
            r.updated_ms = now;
            event(&mut st, t, "deletion", id, json!({}));
        }
    }

    /// Restores an archived record. Strict reading: HubSpot does not promise that a restore
    /// moves the modification time, so it does not here.
    pub fn restore(&self, object_type: &str, id: u64) {
        let t = type_name(object_type).expect("object type");
        let mut st = self.shared.lock();
        if let Some(r) = st.objects.get_mut(t).and_then(|m| m.get_mut(&id)) {
            r.archived = false;
            event(&mut st, t, "restore", id, json!({}));
        }
    }

    /// Removes an association both ways. Like adding one, it leaves modification times alone.
    pub fn unassociate(&self, from: &str, from_id: u64, to: &str, to_id: u64) {
        let (f, t) = (type_name(from).expect("from"), type_name(to).expect("to"));
        let mut st = self.shared.lock();
        for (a, ai, b, bi) in [(f, from_id, t, to_id), (t, to_id, f, from_id)] {
            if let Some(v) = st.assoc.get_mut(&(a, ai, b)) {
                v.retain(|x| *x != bi);
            }
        }
        association_event(&mut st, f, from_id, t, to_id, true);
    }

    /// Turns webhook deliveries on: every change (by a HubSpot user through this handle, or
    /// through the API) becomes an event, and every 50 ms the pending events (at most 100)
    /// are POSTed to `target` as HubSpot does, signed with v3 (HMAC-SHA256 with `secret` over
    /// method, URI, body and timestamp, base64) and timestamped with the real clock.
    pub fn deliver_webhooks(&self, target: &str, secret: &str) {
        self.shared.lock().webhooks_on = true;
        let (sh, target, secret) = (self.shared.clone(), target.to_owned(), secret.to_owned());
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .expect("client");
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let batch: Vec<Value> = {
                    let mut st = sh.lock();
                    let n = st.events.len().min(100);
                    st.events.drain(..n).collect()
                };
                if batch.is_empty() {
                    continue;
                }
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0);
                let batch: Vec<Value> = batch
                    .into_iter()
                    .map(|mut e| {
                        e["occurredAt"] = json!(now_ms);
                        e
                    })
                    .collect();
                let body = serde_json::to_vec(&batch).expect("json");
                let ts = now_ms.to_string();
                let sig = v3_signature(&secret, "POST", &target, &body, &ts);
                sh.lock()
                    .deliveries
                    .push((ts.clone(), sig.clone(), body.clone()));
                let _ = http
                    .post(&target)
                    .header("content-type", "application/json")
                    .header("X-HubSpot-Request-Timestamp", ts)
                    .header("X-HubSpot-Signature-v3", sig)
                    .body(body)
                    .send()
                    .await;
            }
        });
        self.shared.lock().delivery = Some(task);
    }

    /// Stops webhook deliveries (events are no longer queued).
    pub fn stop_webhooks(&self) {
        let mut st = self.shared.lock();
        st.webhooks_on = false;
        st.events.clear();
        if let Some(t) = st.delivery.take() {
            t.abort();
        }
    }

    /// The deliveries sent so far: (timestamp, signature, body).
    pub fn deliveries(&self) -> Vec<(String, String, Vec<u8>)> {
        self.shared.lock().deliveries.clone()
    }

    /// Moves an owner to other teams (first = primary).
    pub fn set_teams(&self, owner: &str, teams: &[(&str, &str)]) {
        let now = iso(self.shared.now_ms());
        let mut st = self.shared.lock();
        if let Some(o) = st.owners.iter_mut().find(|o| o["id"] == owner) {
            o["teams"] = teams
                .iter()
                .enumerate()
                .map(|(i, (tid, name))| json!({"id": tid, "name": name, "primary": i == 0}))
                .collect();
            o["updatedAt"] = json!(now);
        }
    }

    /// The portal as it is: live records with their properties, live associations, owners.
    pub fn raw(&self) -> Raw {
        let st = self.shared.lock();
        let objects = st
            .objects
            .iter()
            .map(|(t, m)| {
                let live: BTreeMap<u64, Map<String, Value>> = m
                    .values()
                    .filter(|r| !r.archived)
                    .map(|r| (r.id, r.properties.clone()))
                    .collect();
                ((*t).to_owned(), live)
            })
            .collect();
        let mut assoc: BTreeMap<(String, u64, String), Vec<u64>> = BTreeMap::new();
        for ((f, fid, t), tos) in &st.assoc {
            if !live(&st, f, *fid) {
                continue;
            }
            let tos: Vec<u64> = tos.iter().copied().filter(|x| live(&st, t, *x)).collect();
            if !tos.is_empty() {
                assoc.insert(((*f).to_owned(), *fid, (*t).to_owned()), tos);
            }
        }
        Raw {
            objects,
            assoc,
            owners: st.owners.clone(),
        }
    }

    /// Uses up (or restores) the portal's daily limit.
    pub fn set_daily_exhausted(&self, on: bool) {
        self.shared.lock().daily_exhausted = on;
    }

    /// Delays every answer by `d` (default none).
    pub fn set_latency(&self, d: Duration) {
        self.shared.lock().latency = d;
    }

    /// Sets the fault switches.
    pub fn set_faults(&self, f: Faults) {
        self.shared.lock().faults = f;
    }

    /// Faults injected so far.
    pub fn faults_injected(&self) -> u64 {
        self.shared.lock().faults_injected
    }

    /// Sim time now, unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.shared.now_ms()
    }

    /// How long a change takes to reach search (default 0).
    pub fn set_search_lag(&self, d: Duration) {
        self.shared.lock().search_lag = d;
    }

    /// Every object write received, in order: (`"PATCH contacts/123"`, body).
    pub fn writes(&self) -> Vec<(String, Value)> {
        self.shared.lock().writes.clone()
    }

    /// Requests served, all and per route.
    pub fn requests(&self) -> (u64, BTreeMap<String, u64>) {
        let st = self.shared.lock();
        (st.requests, st.by_route.clone())
    }
}

/// The live portal (see [`HubSpotSim::raw`]).
pub struct Raw {
    /// Object type → id → properties.
    pub objects: BTreeMap<String, BTreeMap<u64, Map<String, Value>>>,
    /// (from type, from id, to type) → live associated ids.
    pub assoc: BTreeMap<(String, u64, String), Vec<u64>>,
    /// The owners as `GET /crm/v3/owners` shows them.
    pub owners: Vec<Value>,
}

impl Raw {
    /// The live ids `from` → `to` of one record.
    pub fn linked(&self, from: &str, id: u64, to: &str) -> &[u64] {
        self.assoc
            .get(&(from.to_owned(), id, to.to_owned()))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

fn create(st: &mut State, t: &'static str, mut props: Map<String, Value>, now: i64) -> u64 {
    st.next_id += 1;
    let id = st.next_id;
    for v in props.values_mut() {
        if !v.is_null() && !v.is_string() {
            *v = Value::String(v.to_string());
        }
    }
    event(st, t, "creation", id, json!({}));
    props.insert("hs_object_id".into(), json!(id.to_string()));
    props.insert("createdate".into(), json!(iso(now)));
    props.insert(modified_prop(t).into(), json!(iso(now)));
    if let Some(m) = st.objects.get_mut(t) {
        m.insert(
            id,
            Rec {
                id,
                properties: props,
                created_ms: now,
                updated_ms: now,
                archived: false,
            },
        );
    }
    id
}

fn link(st: &mut State, f: &'static str, fid: u64, t: &'static str, tid: u64) {
    association_event(st, f, fid, t, tid, false);
    for (a, ai, b, bi) in [(f, fid, t, tid), (t, tid, f, fid)] {
        let v = st.assoc.entry((a, ai, b)).or_default();
        if !v.contains(&bi) {
            v.push(bi);
        }
    }
}

fn render(r: &Rec, props: &[String]) -> Value {
    let mut p = Map::new();
    for name in props {
        p.insert(
            name.clone(),
            r.properties.get(name).cloned().unwrap_or(Value::Null),
        );
    }
    let mut v = json!({"id": r.id.to_string(), "properties": p,
        "createdAt": iso(r.created_ms), "updatedAt": iso(r.updated_ms), "archived": r.archived});
    if r.archived {
        v["archivedAt"] = json!(iso(r.updated_ms));
    }
    v
}

fn wanted(t: &str, props: Option<&Value>, query: Option<&str>) -> Vec<String> {
    if let Some(a) = props.and_then(Value::as_array) {
        return a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
    }
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        return q.split(',').map(|s| s.trim().to_owned()).collect();
    }
    defaults(t).iter().map(|s| (*s).to_owned()).collect()
}

/// A path segment as sent, percent-decoded (HTTP's rule for paths).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_param(q: &str, name: &str) -> Option<String> {
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| v.replace("%2C", ",").replace("%40", "@"))
    })
}

async fn handle(
    sh: &Shared,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    // Faults: a 502 before anything is done, or, for a write, the connection dropped after
    // the write was applied (the client cannot know whether it was).
    let is_write =
        method != Method::GET && !path.ends_with("/search") && !path.contains("/batch/read");
    let (fail_before, drop_after, latency) = {
        let st = sh.lock();
        (
            st.faults.fail_before,
            st.faults.drop_after_write,
            st.latency,
        )
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if fail_before > 0.0 && rand::random::<f64>() < fail_before {
        sh.lock().faults_injected += 1;
        let mut r = Response::new(Full::new(Bytes::from_static(
            b"{\"status\":\"error\",\"message\":\"Bad gateway\",\"category\":\"BAD_GATEWAY\"}",
        )));
        *r.status_mut() = StatusCode::BAD_GATEWAY;
        return Ok(r);
    }
    let (status, v) = answer(sh, &method, &path, &query, auth.as_deref(), &body);
    if is_write && status < 300 && drop_after > 0.0 && rand::random::<f64>() < drop_after {
        sh.lock().faults_injected += 1;
        return Err(std::io::Error::other("connection dropped after the write"));
    }
    let mut r = Response::new(Full::new(if status == 204 {
        Bytes::new()
    } else {
        Bytes::from(v.to_string())
    }));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    // The `Date` of the sim's own clock, the one its modification times use.
    let date = httpdate::fmt_http_date(
        std::time::UNIX_EPOCH + Duration::from_millis(sh.now_ms().max(0) as u64),
    );
    if let Ok(d) = date.parse() {
        r.headers_mut().insert("date", d);
    }
    if status != 204 {
        r.headers_mut().insert(
            "content-type",
            "application/json;charset=utf-8".parse().expect("ct"),
        );
    }
    Ok(r)
}

fn answer(
    sh: &Shared,
    method: &Method,
    path: &str,
    query: &str,
    auth: Option<&str>,
    body: &[u8],
) -> (u16, Value) {
    let now = sh.now_ms();
    let mut st = sh.lock();
    st.requests += 1;
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let route = format!(
        "{method} {}",
        segs.iter()
            .map(|s| if s.chars().all(|c| c.is_ascii_digit()) {
                "{id}"
            } else {
                s
            })
            .collect::<Vec<_>>()
            .join("/")
    );
    *st.by_route.entry(route).or_default() += 1;
    if method == Method::POST && path == "/oauth/v1/token" {
        return token_grant(&mut st, body);
    }
    let bearer = auth.and_then(|a| a.strip_prefix("Bearer ")).unwrap_or("");
    let issued = st
        .access_tokens
        .get(bearer)
        .is_some_and(|until| Instant::now() < *until);
    if bearer != HubSpotSim::TOKEN && !issued {
        return error(
            401,
            "INVALID_AUTHENTICATION",
            "Authentication credentials not found. This API supports OAuth 2.0 authentication.",
        );
    }
    if st.daily_exhausted {
        return (
            429,
            json!({"status": "error", "message": "You have reached your daily limit.",
                "errorType": "RATE_LIMIT", "correlationId": "00000000-0000-4000-8000-000000000003",
                "policyName": "DAILY", "requestId": "00000000-0000-4000-8000-000000000004"}),
        );
    }
    // Rate limits: search has its own (5/s); the rest share 100 per rolling 10 s.
    let is_search = segs.last() == Some(&"search");
    let t = Instant::now();
    let (window, cap, span, policy) = if is_search {
        (&mut st.search_window, 5, Duration::from_secs(1), "SECONDLY")
    } else {
        (
            &mut st.window,
            100,
            Duration::from_secs(10),
            "TEN_SECONDLY_ROLLING",
        )
    };
    while window.front().is_some_and(|x| t.duration_since(*x) > span) {
        window.pop_front();
    }
    if window.len() >= cap {
        return (
            429,
            json!({"status": "error", "message": format!("You have reached your {} limit.", policy.to_lowercase()),
                "errorType": "RATE_LIMIT", "correlationId": "00000000-0000-4000-8000-000000000001",
                "policyName": policy}),
        );
    }
    window.push_back(t);
    let json_body = || serde_json::from_slice::<Value>(body).ok();
    if matches!(method.as_str(), "POST" | "PATCH" | "DELETE")
        && segs.len() >= 4
        && segs[..3] == ["crm", "v3", "objects"]
        && !segs.contains(&"search")
        && !segs.contains(&"batch")
    {
        let what = format!("{method} {}", segs[3..].join("/"));
        st.writes.push((what, json_body().unwrap_or(Value::Null)));
    }
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["crm", "v3", "owners"]) => {
            let limit = query_param(query, "limit")
                .and_then(|l| l.parse::<usize>().ok())
                .unwrap_or(100);
            if limit > 500 {
                return bad("limit must be at most 500");
            }
            let after = query_param(query, "after")
                .and_then(|a| a.parse::<usize>().ok())
                .unwrap_or(0);
            let page: Vec<Value> = st.owners.iter().skip(after).take(limit).cloned().collect();
            let mut v = json!({"results": page});
            if after + limit < st.owners.len() {
                v["paging"] = json!({"next": {"after": (after + limit).to_string()}});
            }
            (200, v)
        }
        ("GET", ["crm", "v3", "objects", t]) => {
            let Some(t) = type_name(t) else {
                return error(404, "OBJECT_NOT_FOUND", "unknown object type");
            };
            let limit = query_param(query, "limit")
                .and_then(|l| l.parse::<usize>().ok())
                .unwrap_or(10);
            if !(1..=100).contains(&limit) {
                return bad("limit must be between 1 and 100");
            }
            let after: u64 = query_param(query, "after")
                .and_then(|a| a.parse().ok())
                .unwrap_or(0);
            let archived = query_param(query, "archived").as_deref() == Some("true");
            let props = wanted(t, None, query_param(query, "properties").as_deref());
            let assoc: Vec<String> = query_param(query, "associations")
                .map(|a| a.split(',').map(str::to_owned).collect())
                .unwrap_or_default();
            let rows: Vec<&Rec> = st.objects[t]
                .values()
                .filter(|r| r.id > after && r.archived == archived)
                .take(limit + 1)
                .collect();
            let more = rows.len() > limit;
            let results: Vec<Value> = rows
                .iter()
                .take(limit)
                .map(|r| {
                    let mut v = render(r, &props);
                    if !assoc.is_empty() {
                        let mut a = Map::new();
                        for to in &assoc {
                            if let Some(to) = type_name(to) {
                                let ids: Vec<u64> = st.assoc.get(&(t, r.id, to)).cloned().unwrap_or_default().into_iter().filter(|i| live(&st, to, *i)).collect();
                                if !ids.is_empty() {
                                    let ty = ASSOC_TYPES.iter().find(|(f, x, _)| *f == t && *x == to).map(|x| x.2).unwrap_or(0);
                                    let results: Vec<Value> = ids.iter().map(|i| json!({"id": i.to_string(), "type": format!("{t}_to_{to}"), "typeId": ty})).collect();
                                    a.insert(to.to_owned(), json!({"results": results}));
                                }
                            }
                        }
                        v["associations"] = Value::Object(a);
                    }
                    v
                })
                .collect();
            let mut v = json!({"results": results});
            if more {
                if let Some(last) = rows.get(limit - 1) {
                    v["paging"] = json!({"next": {"after": last.id.to_string(), "link": format!("?after={}", last.id)}});
                }
            }
            (200, v)
        }
        ("GET", ["crm", "v3", "objects", t, id]) => {
            let Some(t) = type_name(t) else {
                return error(404, "OBJECT_NOT_FOUND", "unknown object type");
            };
            let props = wanted(t, None, query_param(query, "properties").as_deref());
            let by = query_param(query, "idProperty");
            let id = &percent_decode(id);
            let found = st.objects[t].values().find(|r| {
                !r.archived
                    && match &by {
                        Some(p) => r
                            .properties
                            .get(p)
                            .and_then(Value::as_str)
                            .is_some_and(|v| v.eq_ignore_ascii_case(id)),
                        None => r.id.to_string() == *id,
                    }
            });
            match found {
                Some(r) => (200, render(r, &props)),
                None => error(404, "OBJECT_NOT_FOUND", "Object not found."),
            }
        }
        ("POST", ["crm", "v3", "objects", t]) => {
            let Some(t) = type_name(t) else {
                return error(404, "OBJECT_NOT_FOUND", "unknown object type");
            };
            let Some(b) = json_body() else {
                return bad("Invalid input JSON");
            };
            let Some(props) = b.get("properties").and_then(Value::as_object).cloned() else {
                return bad("properties is required");
            };
            if t == "contacts" {
                if let Some(e) = props.get("email").and_then(Value::as_str) {
                    if !e.contains('@') {
                        return bad("Property values were not valid: email");
                    }
                    // E-mail addresses are unique among a portal's contacts (compared
                    // without case).
                    if let Some(r) = st.objects[t].values().find(|r| {
                        !r.archived
                            && r.properties
                                .get("email")
                                .and_then(Value::as_str)
                                .is_some_and(|x| x.eq_ignore_ascii_case(e))
                    }) {
                        return error(
                            409,
                            "CONFLICT",
                            &format!("Contact already exists. Existing ID: {}", r.id),
                        );
                    }
                }
            }
            let id = create(&mut st, t, props.clone(), now);
            for a in b
                .get("associations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let to_id = a["to"]["id"].as_str().and_then(|s| s.parse::<u64>().ok());
                let ty = a["types"][0]["associationTypeId"].as_u64();
                if let (Some(to_id), Some(ty)) = (to_id, ty) {
                    if let Some((_, to, _)) = ASSOC_TYPES
                        .iter()
                        .find(|(f, _, x)| *f == t && u64::from(*x) == ty)
                    {
                        link(&mut st, t, id, to, to_id);
                    }
                }
            }
            let r = st.objects[t][&id].clone();
            let names: Vec<String> = props
                .keys()
                .cloned()
                .chain([
                    "hs_object_id".to_owned(),
                    "createdate".to_owned(),
                    modified_prop(t).to_owned(),
                ])
                .collect();
            (201, render(&r, &names))
        }
        ("PATCH", ["crm", "v3", "objects", t, id]) => {
            let Some(t) = type_name(t) else {
                return error(404, "OBJECT_NOT_FOUND", "unknown object type");
            };
            let Some(b) = json_body() else {
                return bad("Invalid input JSON");
            };
            let Some(props) = b.get("properties").and_then(Value::as_object).cloned() else {
                return bad("properties is required");
            };
            let id: u64 = id.parse().unwrap_or(0);
            let Some(r) = st
                .objects
                .get_mut(t)
                .and_then(|m| m.get_mut(&id))
                .filter(|r| !r.archived)
            else {
                return error(404, "OBJECT_NOT_FOUND", "Object not found.");
            };
            for (k, v) in &props {
                let v = if v.is_null() || v.is_string() {
                    v.clone()
                } else {
                    Value::String(v.to_string())
                };
                r.properties.insert(k.clone(), v);
            }
            r.updated_ms = now;
            r.properties
                .insert(modified_prop(t).into(), json!(iso(now)));
            let names: Vec<String> = props
                .keys()
                .cloned()
                .chain([modified_prop(t).to_owned()])
                .collect();
            let answer = render(r, &names);
            for (k, v) in &props {
                event(
                    &mut st,
                    t,
                    "propertyChange",
                    id,
                    json!({"propertyName": k, "propertyValue": v}),
                );
            }
            (200, answer)
        }
        ("DELETE", ["crm", "v3", "objects", t, id]) => {
            let Some(t) = type_name(t) else {
                return error(404, "OBJECT_NOT_FOUND", "unknown object type");
            };
            let id: u64 = id.parse().unwrap_or(0);
            if let Some(r) = st.objects.get_mut(t).and_then(|m| m.get_mut(&id)) {
                r.archived = true;
                r.updated_ms = now;
                event(&mut st, t, "deletion", id, json!({}));
            }
            (204, Value::Null)
        }
        ("POST", ["crm", "v3", "objects", t, "batch", "read"]) => {
            let Some(t) = type_name(t) else {
                return error(404, "OBJECT_NOT_FOUND", "unknown object type");
            };
            let Some(b) = json_body() else {
                return bad("Invalid input JSON");
            };
            let inputs = b["inputs"].as_array().cloned().unwrap_or_default();
            if inputs.len() > 100 {
                return bad("Batch input is limited to 100 inputs");
            }
            let props = wanted(t, b.get("properties"), None);
            let mut results = Vec::new();
            let mut errors = Vec::new();
            for i in inputs {
                let id = i["id"].as_str().unwrap_or("");
                match id.parse::<u64>().ok().and_then(|n| st.objects[t].get(&n)).filter(|r| !r.archived) {
                    Some(r) => results.push(render(r, &props)),
                    None => errors.push(json!({"status": "error", "category": "OBJECT_NOT_FOUND",
                        "message": format!("Could not get some {t} objects, they may be deleted or not exist."),
                        "context": {"ids": [id]}})),
                }
            }
            let started = iso(now);
            if errors.is_empty() {
                (
                    200,
                    json!({"status": "COMPLETE", "results": results, "startedAt": started, "completedAt": started}),
                )
            } else {
                (
                    207,
                    json!({"status": "COMPLETE", "results": results, "numErrors": errors.len(), "errors": errors, "startedAt": started, "completedAt": started}),
                )
            }
        }
        ("POST", ["crm", "v3", "objects", t, "search"]) => {
            let Some(t) = type_name(t) else {
                return error(404, "OBJECT_NOT_FOUND", "unknown object type");
            };
            let Some(b) = json_body() else {
                return bad("Invalid input JSON");
            };
            let limit = b["limit"].as_u64().unwrap_or(10) as usize;
            if !(1..=200).contains(&limit) {
                return bad("limit must be between 1 and 200");
            }
            let groups = b["filterGroups"].as_array().cloned().unwrap_or_default();
            if groups.len() > 6 {
                return bad("Too many filter groups (at most 6)");
            }
            let after = b["after"]
                .as_str()
                .and_then(|a| a.parse::<usize>().ok())
                .or_else(|| b["after"].as_u64().map(|a| a as usize))
                .unwrap_or(0);
            if after + limit > 10_000 {
                return bad("The search API cannot page past 10,000 results");
            }
            let lag = st.search_lag.as_millis() as i64;
            let props = wanted(t, b.get("properties"), None);
            let mut hits: Vec<&Rec> = st.objects[t]
                .values()
                .filter(|r| !r.archived && r.updated_ms <= now - lag)
                .filter(|r| {
                    groups.is_empty()
                        || groups.iter().any(|g| {
                            g["filters"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .all(|f| filter_ok(r, f))
                        })
                })
                .collect();
            if let Some(s) = b["sorts"].as_array().and_then(|a| a.first()) {
                let (name, desc) = match s {
                    Value::String(n) => (n.trim_start_matches('-').to_owned(), n.starts_with('-')),
                    o => (
                        o["propertyName"].as_str().unwrap_or("").to_owned(),
                        o["direction"] == "DESCENDING",
                    ),
                };
                hits.sort_by(|a, b| {
                    let key = |r: &Rec| {
                        r.properties
                            .get(&name)
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned()
                    };
                    let o = key(a).cmp(&key(b)).then(a.id.cmp(&b.id));
                    if desc {
                        o.reverse()
                    } else {
                        o
                    }
                });
            }
            let total = hits.len();
            let results: Vec<Value> = hits
                .iter()
                .skip(after)
                .take(limit)
                .map(|r| render(r, &props))
                .collect();
            let mut v = json!({"total": total, "results": results});
            if after + limit < total {
                v["paging"] = json!({"next": {"after": (after + limit).to_string()}});
            }
            (200, v)
        }
        ("PUT", ["crm", "v4", "objects", f, fid, "associations", "default", to, tid]) => {
            let (Some(f), Some(to)) = (type_name(f), type_name(to)) else {
                return bad("unknown object type");
            };
            let (Ok(fid), Ok(tid)) = (fid.parse::<u64>(), tid.parse::<u64>()) else {
                return bad("invalid id");
            };
            link(&mut st, f, fid, to, tid);
            (
                200,
                json!({"status": "COMPLETE", "results": [{"from": {"id": fid.to_string()}, "to": {"id": tid.to_string()}}]}),
            )
        }
        ("GET", ["crm", "v4", "objects", f, fid, "associations", to]) => {
            let (Some(f), Some(to)) = (type_name(f), type_name(to)) else {
                return bad("unknown object type");
            };
            let fid: u64 = fid.parse().unwrap_or(0);
            let ty = ASSOC_TYPES
                .iter()
                .find(|(a, b, _)| *a == f && *b == to)
                .map(|x| x.2)
                .unwrap_or(0);
            let results: Vec<Value> = st.assoc.get(&(f, fid, to)).cloned().unwrap_or_default().iter()
                .filter(|i| live(&st, to, **i))
                .map(|i| json!({"toObjectId": i, "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": ty, "label": null}]}))
                .collect();
            (200, json!({"results": results}))
        }
        ("POST", ["crm", "v4", "associations", f, to, "batch", "read"]) => {
            let (Some(f), Some(to)) = (type_name(f), type_name(to)) else {
                return bad("unknown object type");
            };
            let Some(b) = json_body() else {
                return bad("Invalid input JSON");
            };
            let inputs = b["inputs"].as_array().cloned().unwrap_or_default();
            // The README documents 100 inputs per batch call and no other figure for
            // association batches: the strict reading.
            if inputs.len() > 100 {
                return bad("Batch input is limited to 100 inputs");
            }
            let ty = ASSOC_TYPES
                .iter()
                .find(|(a, x, _)| *a == f && *x == to)
                .map(|x| x.2)
                .unwrap_or(0);
            let results: Vec<Value> = inputs.iter().filter_map(|i| {
                let id: u64 = i["id"].as_str()?.parse().ok()?;
                // Archived records have no associations to show.
                let tos: Vec<u64> = st.assoc.get(&(f, id, to))?.iter().copied().filter(|t| live(&st, to, *t)).collect();
                Some(json!({"from": {"id": id.to_string()}, "to": tos.iter().map(|t| json!({"toObjectId": t, "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": ty, "label": null}]})).collect::<Vec<_>>()}))
            }).collect();
            (
                200,
                json!({"status": "COMPLETE", "results": results, "startedAt": iso(now), "completedAt": iso(now)}),
            )
        }
        _ => error(404, "NOT_FOUND", "No route"),
    }
}

/// `POST /oauth/v1/token` with `grant_type=refresh_token`: the client id and secret as form
/// fields, the current refresh token; answers an access token and a new refresh token (the
/// old one stops working: the strict reading of rotation).
fn token_grant(st: &mut State, body: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(body);
    let field = |name: &str| {
        text.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then(|| percent_decode(&v.replace('+', " ")))
        })
    };
    let bad = |message: &str| {
        (
            400,
            json!({"status": "BAD_REFRESH_TOKEN", "message": message,
                "correlationId": "00000000-0000-4000-8000-000000000002"}),
        )
    };
    if field("grant_type").as_deref() != Some("refresh_token") {
        return bad("grant_type must be refresh_token");
    }
    if field("client_id").as_deref() != Some(HubSpotSim::CLIENT_ID)
        || field("client_secret").as_deref() != Some(HubSpotSim::CLIENT_SECRET)
    {
        return (
            400,
            json!({"status": "BAD_CLIENT_ID", "message": "missing or unknown client id or secret"}),
        );
    }
    if field("refresh_token").as_deref() != Some(st.refresh_token.as_str()) {
        return bad("missing or unknown refresh token");
    }
    st.token_grants += 1;
    let access = format!("oat-sim-{:04}", st.token_grants);
    st.refresh_token = format!("sim-refresh-{:04}", st.token_grants + 1);
    let until = Instant::now() + st.access_ttl;
    st.access_tokens.insert(access.clone(), until);
    (
        200,
        json!({"token_type": "bearer", "access_token": access, "refresh_token": st.refresh_token,
            "expires_in": st.access_ttl.as_secs()}),
    )
}

/// True when `id` is a record of `t` that is not archived.
fn live(st: &State, t: &str, id: u64) -> bool {
    st.objects
        .get(t)
        .and_then(|m| m.get(&id))
        .is_some_and(|r| !r.archived)
}

/// One search filter on a record.
fn filter_ok(r: &Rec, f: &Value) -> bool {
    let name = f["propertyName"].as_str().unwrap_or("");
    let have = r.properties.get(name).and_then(Value::as_str);
    let want = f["value"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| f["value"].as_i64().map(|n| n.to_string()));
    // Dates compare as instants; HubSpot takes epoch milliseconds or ISO text in filters.
    let key = |s: &str| -> String {
        match s.parse::<i64>() {
            Ok(ms) if name.contains("date") => iso(ms),
            // Stored dates are ISO text of one format: compared as they are.
            _ if name.contains("date") => s.to_owned(),
            _ => s.to_lowercase(),
        }
    };
    let cmp = |o: std::cmp::Ordering| -> bool {
        match (have, &want) {
            (Some(h), Some(w)) => key(h).cmp(&key(w)) == o,
            _ => false,
        }
    };
    match f["operator"].as_str().unwrap_or("") {
        "EQ" => cmp(std::cmp::Ordering::Equal),
        "NEQ" => !cmp(std::cmp::Ordering::Equal),
        "LT" => cmp(std::cmp::Ordering::Less),
        "GT" => cmp(std::cmp::Ordering::Greater),
        "LTE" => cmp(std::cmp::Ordering::Less) || cmp(std::cmp::Ordering::Equal),
        "GTE" => cmp(std::cmp::Ordering::Greater) || cmp(std::cmp::Ordering::Equal),
        "HAS_PROPERTY" => have.is_some_and(|h| !h.is_empty()),
        "NOT_HAS_PROPERTY" => have.is_none_or(str::is_empty),
        "IN" | "NOT_IN" => {
            let values: Vec<String> = f["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_lowercase)
                .collect();
            let hit = have.is_some_and(|h| values.contains(&h.to_lowercase()));
            (f["operator"] == "IN") == hit
        }
        "BETWEEN" => {
            let hi = f["highValue"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| f["highValue"].as_i64().map(|n| n.to_string()));
            match (have, &want, hi) {
                (Some(h), Some(lo), Some(hi)) => key(h) >= key(lo) && key(h) <= key(&hi),
                _ => false,
            }
        }
        "CONTAINS_TOKEN" | "NOT_CONTAINS_TOKEN" => {
            let w = want
                .clone()
                .unwrap_or_default()
                .to_lowercase()
                .replace('*', "");
            let hit = have.is_some_and(|h| {
                h.to_lowercase()
                    .split(|c: char| !c.is_alphanumeric() && c != '@' && c != '.')
                    .any(|t| t.contains(&w))
            });
            (f["operator"] == "CONTAINS_TOKEN") == hit
        }
        _ => false,
    }
}
