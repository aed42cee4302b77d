//! An in-process, stateful simulator of the helloHQ v1 OData API for crmgate's adapter tests.
//!
//! It serves the subset of `fixtures/hellohq/v1-odata-swagger.json` that crmgate uses:
//! the entity sets `Subsystem`, `Users`, `Companies`, `ContactPersons`, `Projects`, `Leads`,
//! `CompanyTypes`, `LeadStatuses`, the deleted-entity feed `ConfigSystemEvents/do.GetDeleted()`,
//! contact-person writes, company addresses (`Companies({Id})/Addresses`) and the `/Token`
//! refresh grant. Objects are kept as JSON in the v1 PascalCase field names.
//!
//! Where the published API is silent it takes the strict reading, so crmgate cannot come to
//! rely on more than the spec promises:
//! - navigation properties are only emitted when named in `$expand`, write answers included;
//! - related entities inline in a contact-person POST or PUT (`DefaultAddress`, `Addresses`,
//!   …) are ignored (OData v4 updates them through their own resources); the scalar
//!   `DefaultAddressId` links an address of the contact person's company;
//! - a contact person is created for a company: a POST without `CompanyId` is refused;
//! - `/Token` takes the client credentials only as HTTP Basic (as helloHQ's developer guide
//!   requires) and rotates the refresh token: the one used is invalid afterwards;
//! - lists are capped at [`Sim::set_page_cap`] entities per page (default 500, below crmgate's
//!   default page size) and carry `@odata.nextLink` when more remain.
//!
//! It also serves the v2 REST read endpoints `GET /v2/Subsystems[/{id}]` and
//! `GET /v2/Companies[/{id}]` of `fixtures/hellohq/v2-rest-openapi.json` from the same stored
//! objects, converted to the v2 camelCase schemas (`SubsystemGet`, `CompanyGetRelated`), with the
//! v2 query parameters `filter`, `orderby`, `top`, `skip` and the `helloHQ-Count` /
//! `helloHQ-NextLink` headers. Both generations share tokens, faults and the rate-limit budget.
//!
//! The sim runs on the caller's tokio runtime and stops when the [`Sim`] is dropped.
//! Its clock starts at 2026-11-01T08:00:00Z and runs with real time plus [`Sim::advance_clock`].

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE, DATE, ETAG, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Fault switches, checked per request (see [`Sim::set_faults`]).
#[derive(Clone, Debug)]
pub struct Faults {
    /// Added to every response.
    pub latency: Duration,
    /// Share of requests answered with 500.
    pub fail_rate: f64,
    /// Share of requests answered with 429.
    pub throttle_rate: f64,
    /// `Retry-After` seconds sent with throttle 429s (none when `None`).
    pub retry_after: Option<u32>,
    /// Share of requests that sleep `hang` before being answered normally.
    pub timeout_rate: f64,
    /// How long a "timed out" request hangs.
    pub hang: Duration,
    /// Share of requests whose connection is dropped without a response.
    pub drop_rate: f64,
    /// Every request gets 503.
    pub down: bool,
    /// Per-credential limit over a sliding 60 s window (sim clock); 429 + `Retry-After` beyond it.
    pub rate_limit_per_min: Option<u32>,
    /// Every write is refused with 422 and an OData error naming a property, as helloHQ
    /// answers an entity its own validation rejects. Nothing is stored.
    pub refuse_writes: bool,
    /// Every v1 list page links to itself as `@odata.nextLink` (a broken server).
    pub next_link_loop: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            latency: Duration::ZERO,
            fail_rate: 0.0,
            throttle_rate: 0.0,
            retry_after: None,
            timeout_rate: 0.0,
            hang: Duration::from_secs(60),
            drop_rate: 0.0,
            down: false,
            rate_limit_per_min: None,
            refuse_writes: false,
            next_link_loop: false,
        }
    }
}

/// Request counters since start or the last [`Sim::reset_stats`].
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// All requests, including faulted ones and `/Token`.
    pub requests: u64,
    /// Per route, e.g. `"GET ContactPersons"`, `"GET ContactPersons(id)"`, `"POST Token"`.
    pub by_route: BTreeMap<String, u64>,
    /// Most requests seen in any sliding 60 s window of the sim clock.
    pub max_per_minute: u64,
    /// Every write body as received: (`"PUT /v1/ContactPersons(7)"`, body).
    pub write_bodies: Vec<(String, Value)>,
    /// Every request as `"/v1/Set?query"` (query percent-decoded), in arrival order.
    pub paths: Vec<String>,
}

/// Ids created by [`Sim::populate`].
#[derive(Clone, Debug, Default)]
pub struct Populated {
    pub users: Vec<i32>,
    pub companies: Vec<i32>,
    pub contacts: Vec<i32>,
    pub projects: Vec<i32>,
    pub leads: Vec<i32>,
}

/// A running simulator.
pub struct Sim {
    /// `http://127.0.0.1:PORT`
    pub base_url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// Set definitions

/// Nav property: name and whether it is a collection.
type Nav = (&'static str, bool);

struct SetDef {
    name: &'static str,
    /// `DatabaseObject` name used in deleted events.
    entity: &'static str,
    /// Scalar properties besides the common ones; always emitted (null when unset).
    scalars: &'static [&'static str],
    navs: &'static [Nav],
}

const COMMON: &[&str] = &["Id", "CreatedBy", "UpdatedBy", "CreatedOn", "UpdatedOn"];
const EVENTS: &str = "ConfigSystemEvents";

const CONTACT_SCALARS: &[&str] = &[
    "FirstName",
    "LastName",
    "Position",
    "CompanyId",
    "PhoneLandline",
    "PhoneMobile",
    "Salutation",
    "Birthdate",
    "SalutationForm",
    "Title",
    "Language",
    "DefaultAddressId",
];

const SETS: &[SetDef] = &[
    SetDef {
        name: "Subsystem",
        entity: "Subsystem",
        scalars: &["Name", "IsMaster"],
        navs: &[],
    },
    SetDef {
        name: "Users",
        entity: "User",
        scalars: &[
            "FirstName",
            "LastName",
            "UserName",
            "EMailWork",
            "LeavingDate",
        ],
        navs: &[("UserGroups", true)],
    },
    SetDef {
        name: "Companies",
        entity: "Company",
        scalars: &["Name"],
        navs: &[
            ("ResponsibleUsers", true),
            ("Subsystems", true),
            ("CompanyTypes", true),
            ("DefaultAddress", false),
            ("Addresses", true),
            ("CustomFields", true),
        ],
    },
    SetDef {
        name: "ContactPersons",
        entity: "ContactPerson",
        scalars: CONTACT_SCALARS,
        navs: &[
            ("DefaultAddress", false),
            ("Addresses", true),
            ("CustomFields", true),
            ("Company", false),
        ],
    },
    SetDef {
        name: "Projects",
        entity: "Project",
        scalars: &["Name", "Number", "CompanyId", "ResponsibleUserId"],
        navs: &[
            ("Members", true),
            ("ContactPersons", true),
            ("Subsystems", true),
        ],
    },
    SetDef {
        name: "Leads",
        entity: "Lead",
        scalars: &["Name", "ResponsibleUserId", "CompanyId", "StatusId"],
        navs: &[
            ("ContactPersons", true),
            ("Subsystems", true),
            ("Status", false),
        ],
    },
    SetDef {
        name: "CompanyTypes",
        entity: "CompanyType",
        scalars: &["Name"],
        navs: &[],
    },
    SetDef {
        name: "LeadStatuses",
        entity: "LeadStatus",
        scalars: &["Name", "Type"],
        navs: &[],
    },
    SetDef {
        name: EVENTS,
        entity: "ConfigSystemEvent",
        scalars: &[
            "PropertyName",
            "EntityId",
            "OldValue",
            "NewValue",
            "Type",
            "DatabaseObject",
        ],
        navs: &[],
    },
];

fn set_def(name: &str) -> Option<&'static SetDef> {
    SETS.iter().find(|d| d.name == name)
}

// ---------------------------------------------------------------------------------------------
// State

struct Entry {
    obj: Value,
    created_ms: i64,
    updated_ms: i64,
}

#[derive(Default)]
struct Table {
    rows: BTreeMap<i32, Entry>,
    next_id: i32,
}

struct TokenInfo {
    client: String,
    expires_ms: i64,
}

/// An address made through `Companies({Id})/Addresses` (the company's own, populated
/// addresses stay inline in the company; the populated contacts' inline in the contact).
struct Addr {
    company: i32,
    obj: Value,
}

struct State {
    tables: HashMap<&'static str, Table>,
    next_address_id: i32,
    addresses: BTreeMap<i32, Addr>,
    /// Refresh tokens that may be used (each once: a refresh rotates it).
    refresh_tokens: std::collections::HashSet<String>,
    page_cap: usize,
    deleted_events: bool,
    tokens: HashMap<String, TokenInfo>,
    token_seq: u64,
    faults: Faults,
    rng: StdRng,
    stats: Stats,
    window: VecDeque<i64>,
    per_credential: HashMap<String, VecDeque<i64>>,
    advanced: Duration,
    /// v2 `ResponsibleUsersBase.id`: the id of the (company, user) link, assigned on first use.
    responsible_links: HashMap<(i32, i32), i32>,
}

struct Shared {
    started: Instant,
    state: Mutex<State>,
}

/// 2026-11-01T08:00:00Z in unix milliseconds.
const START_MS: i64 = 1_793_520_000_000;
/// `$top` a list may ask for (larger values are cut to it).
const PAGE_CAP: usize = 1000;
/// Entities the server puts on one page at most, whatever `$top` asks for.
const DEFAULT_PAGE_CAP: usize = 500;
const TOKEN_LIFETIME_S: i64 = 1199;

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms_with(&self, st: &State) -> i64 {
        START_MS + (self.started.elapsed() + st.advanced).as_millis() as i64
    }
}

impl State {
    fn table(&mut self, set: &str) -> &mut Table {
        let def = set_def(set).unwrap_or_else(|| panic!("hellohq_sim: unknown set {set}"));
        self.tables.entry(def.name).or_default()
    }

    /// Inserts with explicit timestamps (seconds precision applied), returning the new Id.
    fn insert_at(&mut self, set: &str, mut obj: Value, created_ms: i64, updated_ms: i64) -> i32 {
        let created_ms = created_ms - created_ms.rem_euclid(1000);
        let updated_ms = updated_ms - updated_ms.rem_euclid(1000);
        let t = self.table(set);
        let id = t.next_id.max(1);
        t.next_id = id + 1;
        if !obj.is_object() {
            obj = json!({});
        }
        let m = obj.as_object_mut().expect("object");
        m.insert("Id".into(), json!(id));
        m.insert("CreatedOn".into(), json!(fmt_ts(created_ms)));
        m.insert("UpdatedOn".into(), json!(fmt_ts(updated_ms)));
        m.entry("CreatedBy").or_insert(json!(1));
        m.entry("UpdatedBy").or_insert(json!(1));
        t.rows.insert(
            id,
            Entry {
                obj,
                created_ms,
                updated_ms,
            },
        );
        id
    }

    fn new_address_id(&mut self) -> i32 {
        self.next_address_id += 1;
        self.next_address_id
    }

    fn delete_at(&mut self, set: &str, id: i32, now_ms: i64) -> bool {
        let def = match set_def(set) {
            Some(d) => d,
            None => return false,
        };
        if self.table(set).rows.remove(&id).is_none() {
            return false;
        }
        if self.deleted_events && set != EVENTS {
            let ev = json!({
                "Type": "EntityDeleted",
                "DatabaseObject": def.entity,
                "EntityId": id,
                "PropertyName": null,
                "OldValue": null,
                "NewValue": null,
            });
            self.insert_at(EVENTS, ev, now_ms, now_ms);
        }
        true
    }
}

// ---------------------------------------------------------------------------------------------
// Public API

impl Sim {
    pub const REFRESH_TOKEN: &'static str = "sim-refresh";
    pub const CLIENT_ID: &'static str = "1234-crmgate";
    pub const CLIENT_SECRET: &'static str = "sim-secret";

    /// Binds 127.0.0.1:0 and serves on the current tokio runtime.
    pub async fn start() -> Sim {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("hellohq_sim: bind");
        let addr = listener.local_addr().expect("hellohq_sim: addr");
        let base_url = format!("http://127.0.0.1:{}", addr.port());
        let mut tables = HashMap::new();
        for d in SETS {
            tables.insert(
                d.name,
                Table {
                    rows: BTreeMap::new(),
                    next_id: 1,
                },
            );
        }
        let shared = Arc::new(Shared {
            started: Instant::now(),
            state: Mutex::new(State {
                tables,
                next_address_id: 0,
                addresses: BTreeMap::new(),
                refresh_tokens: [Sim::REFRESH_TOKEN.to_owned()].into_iter().collect(),
                page_cap: DEFAULT_PAGE_CAP,
                deleted_events: true,
                tokens: HashMap::new(),
                token_seq: 0,
                faults: Faults::default(),
                rng: StdRng::seed_from_u64(0x68_71_73_69_6d),
                stats: Stats::default(),
                window: VecDeque::new(),
                per_credential: HashMap::new(),
                advanced: Duration::ZERO,
                responsible_links: HashMap::new(),
            }),
        });
        let sh = shared.clone();
        let base = base_url.clone();
        let task = tokio::spawn(async move {
            // Connection tasks live in this set so that aborting the accept task ends them too.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                while conns.try_join_next().is_some() {}
                let (stream, _) = match listener.accept().await {
                    Ok(s) => s,
                    Err(_) => continue,
                };
                let sh = sh.clone();
                let base = base.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let sh = sh.clone();
                        let base = base.clone();
                        async move { handle(sh, base, req).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Sim {
            base_url,
            shared,
            task,
        }
    }

    fn now_ms(&self) -> i64 {
        let st = self.shared.lock();
        self.shared.now_ms_with(&st)
    }

    /// Adds an object to `set`: Id = next per set, CreatedOn/UpdatedOn = now, CreatedBy/UpdatedBy = 1.
    pub fn insert(&self, set: &str, obj: Value) -> i32 {
        let mut st = self.shared.lock();
        let now = self.shared.now_ms_with(&st);
        st.insert_at(set, obj, now, now)
    }

    /// Edits an object and bumps UpdatedOn to now.
    pub fn update(&self, set: &str, id: i32, f: impl FnOnce(&mut Value)) -> bool {
        let mut st = self.shared.lock();
        let now = self.shared.now_ms_with(&st);
        let now = now - now.rem_euclid(1000);
        let Some(e) = st.table(set).rows.get_mut(&id) else {
            return false;
        };
        f(&mut e.obj);
        e.obj["Id"] = json!(id);
        e.obj["UpdatedOn"] = json!(fmt_ts(now));
        e.obj["UpdatedBy"] = json!(1);
        e.updated_ms = now;
        true
    }

    /// Edits an object without touching UpdatedOn (e.g. membership edits helloHQ may not stamp).
    /// If `f` itself rewrites `UpdatedOn`/`CreatedOn`, the filters follow the new values.
    pub fn update_silent(&self, set: &str, id: i32, f: impl FnOnce(&mut Value)) -> bool {
        let mut st = self.shared.lock();
        let Some(e) = st.table(set).rows.get_mut(&id) else {
            return false;
        };
        f(&mut e.obj);
        e.obj["Id"] = json!(id);
        if let Some(ms) = e.obj["UpdatedOn"].as_str().and_then(parse_ts) {
            e.updated_ms = ms;
        }
        if let Some(ms) = e.obj["CreatedOn"].as_str().and_then(parse_ts) {
            e.created_ms = ms;
        }
        true
    }

    /// Hard delete; records a deleted event unless switched off.
    pub fn delete(&self, set: &str, id: i32) -> bool {
        let mut st = self.shared.lock();
        let now = self.shared.now_ms_with(&st);
        st.delete_at(set, id, now)
    }

    /// The full stored object, including stored navigation properties (a contact person's
    /// `DefaultAddress` as its `DefaultAddressId` names it).
    pub fn get(&self, set: &str, id: i32) -> Option<Value> {
        let mut st = self.shared.lock();
        let obj = st.table(set).rows.get(&id).map(|e| e.obj.clone())?;
        Some(with_address(&st, set, obj))
    }

    /// All stored objects of a set in Id order (as [`Sim::get`] gives them).
    pub fn list(&self, set: &str) -> Vec<Value> {
        let mut st = self.shared.lock();
        let objs: Vec<Value> = st.table(set).rows.values().map(|e| e.obj.clone()).collect();
        objs.into_iter()
            .map(|o| with_address(&st, set, o))
            .collect()
    }

    /// Everything stored (entity sets in name order, then company addresses), to show that a
    /// refused write changed nothing.
    pub fn snapshot(&self) -> Value {
        let st = self.shared.lock();
        let mut sets: Vec<(&str, &Table)> = st.tables.iter().map(|(k, t)| (*k, t)).collect();
        sets.sort_by_key(|(k, _)| *k);
        let sets: Vec<Value> = sets
            .into_iter()
            .map(|(k, t)| {
                json!([
                    k,
                    t.rows.values().map(|e| e.obj.clone()).collect::<Vec<_>>()
                ])
            })
            .collect();
        let addresses: Vec<Value> = st
            .addresses
            .iter()
            .map(|(id, a)| json!([id, a.company, a.obj]))
            .collect();
        json!({"sets": sets, "addresses": addresses})
    }

    /// Logins for every helloHQ user: (work e-mail lower-cased, "pw", "user").
    pub fn logins(&self) -> Vec<(String, String, String)> {
        self.list("Users")
            .iter()
            .map(|u| {
                (
                    u["EMailWork"].as_str().unwrap_or("").to_lowercase(),
                    "pw".to_owned(),
                    "user".to_owned(),
                )
            })
            .collect()
    }

    /// The most entities one list page holds (default 500).
    pub fn set_page_cap(&self, n: usize) {
        self.shared.lock().page_cap = n.max(1);
    }

    /// A refresh token that is valid now (one that was never used since the last rotation).
    pub fn refresh_token(&self) -> String {
        let st = self.shared.lock();
        let mut valid: Vec<&String> = st.refresh_tokens.iter().collect();
        valid.sort();
        valid.first().map(|t| (*t).clone()).unwrap_or_default()
    }

    /// The `Authorization` header a token request must carry.
    pub fn basic_auth() -> String {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                Sim::CLIENT_ID,
                Sim::CLIENT_SECRET
            ))
        )
    }

    pub fn set_faults(&self, f: Faults) {
        self.shared.lock().faults = f;
    }

    pub fn faults(&self) -> Faults {
        self.shared.lock().faults.clone()
    }

    /// Invalidates every access token issued so far (requests with them get 401).
    pub fn expire_tokens(&self) {
        self.shared.lock().tokens.clear();
    }

    /// On by default. Off: deletes record no event, so GetDeleted returns nothing new.
    pub fn set_deleted_events(&self, on: bool) {
        self.shared.lock().deleted_events = on;
    }

    pub fn stats(&self) -> Stats {
        self.shared.lock().stats.clone()
    }

    pub fn reset_stats(&self) {
        let mut st = self.shared.lock();
        st.stats = Stats::default();
        st.window.clear();
    }

    /// Moves the sim clock forward (timestamps, `Date`, token expiry, rate-limit windows).
    pub fn advance_clock(&self, d: Duration) {
        self.shared.lock().advanced += d;
    }

    /// The sim clock's current time as `2026-11-01T08:00:00Z`.
    pub fn now(&self) -> String {
        fmt_ts(self.now_ms())
    }

    /// Builds deterministic, realistic data. Call on a fresh sim: reference data (subsystems,
    /// company types, lead statuses) is created once. Records get CreatedOn/UpdatedOn spread over
    /// the 30 days before the current sim time.
    pub fn populate(&self, contacts: usize, seed: u64) -> Populated {
        let mut st = self.shared.lock();
        let now = self.shared.now_ms_with(&st);
        populate(&mut st, now, contacts, seed)
    }
}

// ---------------------------------------------------------------------------------------------
// Data generation

const FIRST: &[&str] = &[
    "Anna", "Ben", "Clara", "David", "Emma", "Felix", "Greta", "Hannes", "Ida", "Jonas", "Karla",
    "Lukas", "Mia", "Noah", "Olga", "Paul", "Queenie", "Ralf", "Sophie", "Tim", "Ute", "Volker",
    "Wiebke", "Xaver", "Yvonne", "Zoe", "Jürgen", "Mehmet", "Sören", "Élodie",
];
const LAST: &[&str] = &[
    "Müller",
    "Schmidt",
    "Schneider",
    "Fischer",
    "Weber",
    "Meyer",
    "Wagner",
    "Becker",
    "Schulz",
    "Hoffmann",
    "Koch",
    "Richter",
    "Klein",
    "Wolf",
    "Schröder",
    "Neumann",
    "Schwarz",
    "Braun",
    "Zimmermann",
    "Krüger",
    "Hofmann",
    "Hartmann",
    "Lange",
    "Schmitt",
    "Werner",
    "Krause",
    "Yılmaz",
    "Nowak",
    "Huber",
    "Gruber",
];
const CITIES: &[(&str, &str, &str, &str)] = &[
    ("Berlin", "10115", "DE", "30"),
    ("Hamburg", "20095", "DE", "40"),
    ("München", "80331", "DE", "89"),
    ("Köln", "50667", "DE", "221"),
    ("Wien", "1010", "AT", "1"),
    ("Graz", "8010", "AT", "316"),
    ("Zürich", "8001", "CH", "44"),
    ("Basel", "4051", "CH", "61"),
];
const STREETS: &[&str] = &[
    "Hauptstraße",
    "Bahnhofstraße",
    "Gartenweg",
    "Lindenallee",
    "Marktplatz",
    "Schillerstraße",
    "Am Hafen",
    "Industriering",
];
const COMPANY_WORDS: &[&str] = &[
    "Nord", "Süd", "Alpen", "Rhein", "Elb", "Tech", "Bau", "Logistik", "Werk", "Handel", "Data",
    "Medien",
];
const COMPANY_FORMS: &[&str] = &["GmbH", "AG", "KG", "GmbH & Co. KG", "e.K."];
const POSITIONS: &[&str] = &[
    "Geschäftsführer",
    "Einkauf",
    "Vertrieb",
    "Buchhaltung",
    "IT-Leitung",
    "Projektleitung",
];

fn phone(rng: &mut StdRng, country: &str, area: &str, mobile: bool) -> String {
    let cc = match country {
        "AT" => "43",
        "CH" => "41",
        _ => "49",
    };
    if mobile {
        format!(
            "+{cc} 1{} {}",
            rng.gen_range(50..80),
            rng.gen_range(1_000_000..9_999_999)
        )
    } else {
        format!("+{cc} {area} {}", rng.gen_range(100_000..9_999_999))
    }
}

fn mail_part(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            'ä' => "ae".chars().collect::<Vec<_>>(),
            'ö' => "oe".chars().collect(),
            'ü' => "ue".chars().collect(),
            'ß' => "ss".chars().collect(),
            'é' | 'É' => vec!['e'],
            'ı' => vec!['i'],
            c if c.is_ascii_alphanumeric() => vec![c.to_ascii_lowercase()],
            _ => vec![],
        })
        .collect()
}

fn address(st: &mut State, rng: &mut StdRng, email: Option<String>) -> Value {
    let (city, zip, country, area) = CITIES[rng.gen_range(0..CITIES.len())];
    let id = st.new_address_id();
    let mut a = json!({
        "Id": id,
        "Street": STREETS[rng.gen_range(0..STREETS.len())],
        "HouseNumber": rng.gen_range(1..200).to_string(),
        "ZipCode": zip,
        "City": city,
        "Country": country,
        "Phone": phone(rng, country, area, false),
    });
    if let Some(e) = email {
        a["Email"] = json!(e);
    }
    a
}

fn populate(st: &mut State, now: i64, contacts: usize, seed: u64) -> Populated {
    let mut rng = StdRng::seed_from_u64(seed);
    const DAY_MS: i64 = 86_400_000;
    let stamp = |rng: &mut StdRng| {
        let created = now - rng.gen_range(0..30 * DAY_MS);
        let updated = created + rng.gen_range(0..=(now - created));
        (created, updated)
    };
    let mut out = Populated::default();

    // Reference data.
    let fresh = st.table("Subsystem").rows.is_empty();
    let (subsystems, types, statuses): (Vec<Value>, Vec<Value>, Vec<Value>) = if fresh {
        let subs = [("DE", true), ("AT", false), ("CH", false)]
            .iter()
            .map(|(n, m)| {
                let id = st.insert_at(
                    "Subsystem",
                    json!({"Name": n, "IsMaster": m}),
                    now - 60 * DAY_MS,
                    now - 60 * DAY_MS,
                );
                json!({"Id": id, "Name": n, "IsMaster": m})
            })
            .collect();
        let types = ["Kunde", "Lieferant", "Interessent"]
            .iter()
            .map(|n| {
                let id = st.insert_at(
                    "CompanyTypes",
                    json!({"Name": n}),
                    now - 60 * DAY_MS,
                    now - 60 * DAY_MS,
                );
                json!({"Id": id, "Name": n})
            })
            .collect();
        let statuses = [
            ("Neu", "Open"),
            ("In Verhandlung", "Open"),
            ("Gewonnen", "Successful"),
            ("Verloren", "Unsuccessful"),
        ]
        .iter()
        .map(|(n, t)| {
            let id = st.insert_at(
                "LeadStatuses",
                json!({"Name": n, "Type": t}),
                now - 60 * DAY_MS,
                now - 60 * DAY_MS,
            );
            json!({"Id": id, "Name": n, "Type": t})
        })
        .collect();
        (subs, types, statuses)
    } else {
        let strip = |v: Value, keys: &[&str]| {
            let mut o = Map::new();
            for k in keys {
                o.insert((*k).into(), v[*k].clone());
            }
            Value::Object(o)
        };
        (
            st.table("Subsystem")
                .rows
                .values()
                .map(|e| strip(e.obj.clone(), &["Id", "Name", "IsMaster"]))
                .collect(),
            st.table("CompanyTypes")
                .rows
                .values()
                .map(|e| strip(e.obj.clone(), &["Id", "Name"]))
                .collect(),
            st.table("LeadStatuses")
                .rows
                .values()
                .map(|e| strip(e.obj.clone(), &["Id", "Name", "Type"]))
                .collect(),
        )
    };
    let type_named = |n: &str| types.iter().find(|t| t["Name"] == n).cloned();

    // Users: one user group named after a subsystem each.
    let n_users = (contacts / 100).max(5);
    let mut user_refs = Vec::with_capacity(n_users);
    for _ in 0..n_users {
        let (c, u) = stamp(&mut rng);
        let fname = FIRST[rng.gen_range(0..FIRST.len())];
        let lname = LAST[rng.gen_range(0..LAST.len())];
        let sub = &subsystems[rng.gen_range(0..subsystems.len())];
        let id = st.insert_at("Users", json!({}), c, u);
        let n = id;
        let obj = &mut st.table("Users").rows.get_mut(&id).expect("user").obj;
        obj["FirstName"] = json!(fname);
        obj["LastName"] = json!(lname);
        obj["UserName"] = json!(format!("user{n}"));
        obj["EMailWork"] = json!(format!("user{n}@hq.test"));
        obj["UserGroups"] = json!([{"Id": sub["Id"], "Name": sub["Name"]}]);
        user_refs.push(json!({"Id": id, "FirstName": fname, "LastName": lname, "EMailWork": format!("user{n}@hq.test")}));
        out.users.push(id);
    }

    // Companies.
    let n_companies = (contacts / 5).max(1);
    let mut company_meta: Vec<(i32, String, String)> = Vec::with_capacity(n_companies); // id, domain, country
    for i in 0..n_companies {
        let (c, u) = stamp(&mut rng);
        let name = format!(
            "{}{} {}",
            COMPANY_WORDS[rng.gen_range(0..COMPANY_WORDS.len())],
            COMPANY_WORDS[rng.gen_range(0..COMPANY_WORDS.len())].to_lowercase(),
            COMPANY_FORMS[rng.gen_range(0..COMPANY_FORMS.len())]
        );
        let domain = format!("firma{}.example", i + 1);
        let n_resp = rng.gen_range(1..=2);
        let mut resp: Vec<Value> = Vec::with_capacity(2);
        while resp.len() < n_resp.min(user_refs.len()) {
            let u = &user_refs[rng.gen_range(0..user_refs.len())];
            if !resp.iter().any(|r| r["Id"] == u["Id"]) {
                resp.push(u.clone());
            }
        }
        let sub = subsystems[rng.gen_range(0..subsystems.len())].clone();
        let roll = rng.gen_range(0..100);
        let ctypes: Vec<Value> = if roll < 5 {
            type_named("Interessent").into_iter().collect()
        } else if roll < 75 {
            type_named("Kunde").into_iter().collect()
        } else if roll < 90 {
            type_named("Lieferant").into_iter().collect()
        } else {
            type_named("Kunde")
                .into_iter()
                .chain(type_named("Lieferant"))
                .collect()
        };
        let mut addr = address(st, &mut rng, Some(format!("info@{domain}")));
        addr["Website"] = json!(format!("https://www.{domain}"));
        let country = addr["Country"].as_str().unwrap_or("DE").to_owned();
        let obj = json!({
            "Name": name,
            "ResponsibleUsers": resp,
            "Subsystems": [sub],
            "CompanyTypes": ctypes,
            "DefaultAddress": addr,
        });
        let id = st.insert_at("Companies", obj, c, u);
        company_meta.push((id, domain, country));
        out.companies.push(id);
    }

    // Contact persons.
    let mut contact_refs: Vec<Value> = Vec::with_capacity(contacts);
    for _ in 0..contacts {
        let (c, u) = stamp(&mut rng);
        let (cid, domain, _) = &company_meta[rng.gen_range(0..company_meta.len())];
        let fname = FIRST[rng.gen_range(0..FIRST.len())];
        let lname = LAST[rng.gen_range(0..LAST.len())];
        let email = format!("{}.{}@{domain}", mail_part(fname), mail_part(lname));
        let addr = address(st, &mut rng, Some(email));
        let country = addr["Country"].as_str().unwrap_or("DE").to_owned();
        let area = CITIES
            .iter()
            .find(|c| c.0 == addr["City"])
            .map(|c| c.3)
            .unwrap_or("30");
        let mut m = Map::new();
        m.insert("FirstName".into(), json!(fname));
        m.insert("LastName".into(), json!(lname));
        m.insert("CompanyId".into(), json!(cid));
        m.insert(
            "PhoneLandline".into(),
            json!(phone(&mut rng, &country, area, false)),
        );
        if rng.gen_bool(0.6) {
            m.insert(
                "PhoneMobile".into(),
                json!(phone(&mut rng, &country, area, true)),
            );
        }
        let female = rng.gen_bool(0.5);
        m.insert(
            "Salutation".into(),
            json!(if female { "Frau" } else { "Herr" }),
        );
        m.insert("SalutationForm".into(), json!("Formal"));
        m.insert("Language".into(), json!("DE"));
        if rng.gen_bool(0.5) {
            m.insert(
                "Position".into(),
                json!(POSITIONS[rng.gen_range(0..POSITIONS.len())]),
            );
        }
        if rng.gen_bool(0.1) {
            m.insert("Title".into(), json!("Dr."));
        }
        if rng.gen_bool(0.3) {
            m.insert(
                "Birthdate".into(),
                json!(format!(
                    "{}-{:02}-{:02}T00:00:00",
                    rng.gen_range(1950..2004),
                    rng.gen_range(1..=12),
                    rng.gen_range(1..=28)
                )),
            );
        }
        m.insert("DefaultAddressId".into(), addr["Id"].clone());
        m.insert("DefaultAddress".into(), addr);
        let id = st.insert_at("ContactPersons", Value::Object(m), c, u);
        contact_refs
            .push(json!({"Id": id, "FirstName": fname, "LastName": lname, "CompanyId": cid}));
        out.contacts.push(id);
    }

    let pick_contacts = |rng: &mut StdRng, lo: usize, hi: usize| -> Vec<Value> {
        let n = rng.gen_range(lo..=hi).min(contact_refs.len());
        let mut v: Vec<Value> = Vec::with_capacity(n);
        let mut tries = 0;
        while v.len() < n && tries < 50 {
            tries += 1;
            let c = &contact_refs[rng.gen_range(0..contact_refs.len())];
            if !v.iter().any(|x| x["Id"] == c["Id"]) {
                v.push(c.clone());
            }
        }
        v
    };

    // Projects.
    let mut member_seq = st.table("Projects").next_id * 10;
    if !contact_refs.is_empty() {
        for i in 0..(contacts / 50).max(1) {
            let (c, u) = stamp(&mut rng);
            let cps = pick_contacts(&mut rng, 1, 5);
            let company = cps[0]["CompanyId"].clone();
            let responsible = user_refs[rng.gen_range(0..user_refs.len())]["Id"].clone();
            let id = st.insert_at("Projects", json!({}), c, u);
            let n_members = rng.gen_range(2..=4).min(user_refs.len());
            let mut members: Vec<Value> = Vec::new();
            while members.len() < n_members {
                let uid = user_refs[rng.gen_range(0..user_refs.len())]["Id"].clone();
                if !members.iter().any(|m| m["UserId"] == uid) {
                    member_seq += 1;
                    let mid = member_seq;
                    members.push(json!({"Id": mid, "UserId": uid, "ProjectId": id, "ProjectRoleId": rng.gen_range(1..=3)}));
                }
            }
            let sub = subsystems[rng.gen_range(0..subsystems.len())].clone();
            let obj = &mut st.table("Projects").rows.get_mut(&id).expect("project").obj;
            obj["Name"] = json!(format!("Projekt {}", i + 1));
            obj["Number"] = json!(format!("P-2026-{:04}", i + 1));
            obj["CompanyId"] = company;
            obj["ResponsibleUserId"] = responsible;
            obj["Members"] = json!(members);
            obj["ContactPersons"] = json!(cps);
            obj["Subsystems"] = json!([sub]);
            out.projects.push(id);
        }

        // Leads.
        for i in 0..(contacts / 50).max(1) {
            let (c, u) = stamp(&mut rng);
            let cps = pick_contacts(&mut rng, 1, 3);
            let status = statuses[rng.gen_range(0..statuses.len())].clone();
            let sub = subsystems[rng.gen_range(0..subsystems.len())].clone();
            let obj = json!({
                "Name": format!("Lead {}", i + 1),
                "ResponsibleUserId": user_refs[rng.gen_range(0..user_refs.len())]["Id"],
                "CompanyId": cps[0]["CompanyId"],
                "StatusId": status["Id"],
                "Status": status,
                "ContactPersons": cps,
                "Subsystems": [sub],
            });
            out.leads.push(st.insert_at("Leads", obj, c, u));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Time helpers

use crmgate::domain::time::days_from_civil;

/// Unix millis → `2026-11-01T08:00:00Z` (seconds precision).
fn fmt_ts(ms: i64) -> String {
    crmgate::domain::time::system_time(ms.div_euclid(1000).max(0) as u64)
}

/// IMF-fixdate for the `Date` header.
fn http_date(ms: i64) -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM]` to unix millis. A space where the offset sign
/// should be is read as `+` (an unencoded `+` in a query string decodes to a space).
fn parse_ts(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut frac_ms = 0i64;
    if let Some(r) = rest.strip_prefix('.') {
        let digits: String = r.chars().take_while(|c| c.is_ascii_digit()).collect();
        if digits.is_empty() {
            return None;
        }
        let mut ms = digits.clone();
        ms.truncate(3);
        while ms.len() < 3 {
            ms.push('0');
        }
        frac_ms = ms.parse().ok()?;
        rest = &r[digits.len()..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' | b' ' => 1,
                b'-' => -1,
                _ => return None,
            };
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (oh * 60 + om)
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset_min * 60;
    Some(secs * 1000 + frac_ms)
}

// ---------------------------------------------------------------------------------------------
// HTTP

type Resp = Response<Full<Bytes>>;

fn json_resp(status: StatusCode, v: &Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(v).unwrap_or_default(),
    )));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; odata.metadata=minimal; charset=utf-8"),
    );
    r.headers_mut()
        .insert("OData-Version", HeaderValue::from_static("4.0"));
    r
}

fn odata_error(status: StatusCode, msg: &str) -> Resp {
    json_resp(status, &json!({"error": {"code": "", "message": msg}}))
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_form(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (pct_decode(k), pct_decode(v))
        })
        .collect()
}

#[derive(Debug)]
struct DropConn;

impl std::fmt::Display for DropConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by hellohq_sim")
    }
}

impl std::error::Error for DropConn {}

/// Splits `/v1/Set(Id)` into the set and an optional key; `None` for other paths.
fn split_entity(rest: &str) -> Option<(&str, Option<&str>)> {
    if let Some(open) = rest.find('(') {
        let inner = rest[open + 1..].strip_suffix(')')?;
        Some((&rest[..open], Some(inner)))
    } else if rest.contains('/') {
        None
    } else {
        Some((rest, None))
    }
}

fn route_key(method: &Method, path: &str) -> String {
    if let Some(p) = path.strip_prefix("/v2/") {
        return match p.split('/').collect::<Vec<_>>().as_slice() {
            [set, id] if id.parse::<i64>().is_ok() => format!("{method} v2/{set}(id)"),
            _ => format!("{method} v2/{p}"),
        };
    }
    let p = path
        .strip_prefix("/v1/")
        .unwrap_or(path.trim_start_matches('/'));
    if p.starts_with("ConfigSystemEvents/") {
        return format!("{method} {p}");
    }
    match split_entity(p) {
        Some((set, Some(_))) => format!("{method} {set}(id)"),
        Some((set, None)) => format!("{method} {set}"),
        None => format!("{method} {p}"),
    }
}

enum Decision {
    Respond(Resp),
    Hang,
    Drop,
    Go,
}

async fn handle(
    sh: Arc<Shared>,
    base: String,
    req: Request<hyper::body::Incoming>,
) -> Result<Resp, DropConn> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let auth = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let if_match = req
        .headers()
        .get(hyper::header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(DropConn),
    };
    let is_token = path == "/Token" || path == "/token";
    let is_write = matches!(
        method,
        Method::POST | Method::PUT | Method::DELETE | Method::PATCH
    ) && !is_token;
    // Fault answers carry the error body of the API generation that was called.
    let error: fn(StatusCode, &str) -> Resp = if path.starts_with("/v2/") {
        v2_error
    } else {
        odata_error
    };

    // Stats and fault decisions.
    let (decision, latency, hang, apply_before_drop) = {
        let mut st = sh.lock();
        let now = sh.now_ms_with(&st);
        st.stats.requests += 1;
        st.stats.paths.push(format!(
            "{path}?{}",
            query.replace("%20", " ").replace("%24", "$")
        ));
        *st.stats
            .by_route
            .entry(route_key(&method, &path))
            .or_default() += 1;
        st.window.push_back(now);
        while st.window.front().is_some_and(|t| *t <= now - 60_000) {
            st.window.pop_front();
        }
        st.stats.max_per_minute = st.stats.max_per_minute.max(st.window.len() as u64);
        if is_write {
            let b = serde_json::from_slice(&body).unwrap_or(Value::Null);
            st.stats.write_bodies.push((format!("{method} {path}"), b));
        }
        let f = st.faults.clone();
        let mut d = Decision::Go;
        if f.down {
            d = Decision::Respond(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "The service is temporarily unavailable.",
            ));
        } else if is_token {
            if f.fail_rate > 0.0 && st.rng.gen_bool(f.fail_rate.min(1.0)) {
                d = Decision::Respond(error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "An error has occurred.",
                ));
            }
        } else {
            if let Some(limit) = f.rate_limit_per_min {
                let token = auth.strip_prefix("Bearer ").unwrap_or(&auth).to_owned();
                let cred = st
                    .tokens
                    .get(&token)
                    .map(|t| t.client.clone())
                    .unwrap_or_else(|| format!("raw:{auth}"));
                let q = st.per_credential.entry(cred).or_default();
                while q.front().is_some_and(|t| *t <= now - 60_000) {
                    q.pop_front();
                }
                if q.len() >= limit as usize {
                    let wait_ms = q.front().map_or(1000, |t| t + 60_000 - now);
                    let secs = ((wait_ms + 999) / 1000).max(1);
                    let mut r = error(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded.");
                    r.headers_mut()
                        .insert(RETRY_AFTER, HeaderValue::from(secs as u64));
                    d = Decision::Respond(r);
                } else {
                    q.push_back(now);
                }
            }
            if matches!(d, Decision::Go)
                && f.throttle_rate > 0.0
                && st.rng.gen_bool(f.throttle_rate.min(1.0))
            {
                let mut r = error(StatusCode::TOO_MANY_REQUESTS, "Too many requests.");
                if let Some(s) = f.retry_after {
                    r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(s));
                }
                d = Decision::Respond(r);
            }
            if matches!(d, Decision::Go)
                && f.fail_rate > 0.0
                && st.rng.gen_bool(f.fail_rate.min(1.0))
            {
                d = Decision::Respond(error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "An error has occurred.",
                ));
            }
            if matches!(d, Decision::Go) && f.refuse_writes && is_write {
                d = Decision::Respond(error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "The entity is not valid: Position exceeds the allowed length.",
                ));
            }
            if matches!(d, Decision::Go)
                && f.timeout_rate > 0.0
                && st.rng.gen_bool(f.timeout_rate.min(1.0))
            {
                d = Decision::Hang;
            }
            if matches!(d, Decision::Go | Decision::Hang)
                && f.drop_rate > 0.0
                && st.rng.gen_bool(f.drop_rate.min(1.0))
            {
                d = Decision::Drop;
            }
        }
        let apply = st.rng.gen_bool(0.5);
        (d, f.latency, f.hang, apply)
    };

    match decision {
        Decision::Respond(r) => {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            return Ok(finish(&sh, r));
        }
        Decision::Drop => {
            if is_write && apply_before_drop {
                let _ = route(
                    &sh,
                    &base,
                    &method,
                    &path,
                    &query,
                    &auth,
                    if_match.as_deref(),
                    &body,
                );
            }
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            return Err(DropConn);
        }
        Decision::Hang => tokio::time::sleep(hang).await,
        Decision::Go => {}
    }
    let r = route(
        &sh,
        &base,
        &method,
        &path,
        &query,
        &auth,
        if_match.as_deref(),
        &body,
    );
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    Ok(finish(&sh, r))
}

fn finish(sh: &Shared, mut r: Resp) -> Resp {
    let now = {
        let st = sh.lock();
        sh.now_ms_with(&st)
    };
    if let Ok(v) = HeaderValue::from_str(&http_date(now)) {
        r.headers_mut().insert(DATE, v);
    }
    r
}

#[allow(clippy::too_many_arguments)]
fn route(
    sh: &Shared,
    base: &str,
    method: &Method,
    path: &str,
    query: &str,
    auth: &str,
    if_match: Option<&str>,
    body: &[u8],
) -> Resp {
    let mut st = sh.lock();
    let now = sh.now_ms_with(&st);
    if path == "/Token" || path == "/token" {
        if method != Method::POST {
            return odata_error(StatusCode::METHOD_NOT_ALLOWED, "Use POST.");
        }
        return token(&mut st, now, auth, body);
    }
    if let Some(rest) = path.strip_prefix("/v2/") {
        if !authorized(&st, auth, now) {
            let mut r = v2_error(
                StatusCode::UNAUTHORIZED,
                "Authorization has been denied for this request.",
            );
            r.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
        return v2_route(&mut st, base, method, rest, query);
    }
    let Some(rest) = path.strip_prefix("/v1/") else {
        return odata_error(
            StatusCode::NOT_FOUND,
            &format!("No HTTP resource was found that matches the request URI '{path}'."),
        );
    };
    // Auth.
    if !authorized(&st, auth, now) {
        let mut r = json_resp(
            StatusCode::UNAUTHORIZED,
            &json!({"Message": "Authorization has been denied for this request."}),
        );
        r.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let q = match Query::parse(query) {
        Ok(q) => q,
        Err(e) => return odata_error(StatusCode::BAD_REQUEST, &e),
    };
    if let Some((cid, aid)) = address_route(rest) {
        return addresses(&mut st, base, method, cid, aid, body);
    }
    if rest == "ConfigSystemEvents/do.GetDeleted()" {
        if *method != Method::GET {
            return odata_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "The requested resource does not support this HTTP method.",
            );
        }
        return list(&mut st, base, EVENTS, &q, now, path, query);
    }
    let Some((set, key)) = split_entity(rest) else {
        return odata_error(
            StatusCode::NOT_FOUND,
            &format!("Resource not found for the segment '{rest}'."),
        );
    };
    let Some(def) = set_def(set).filter(|d| d.name != EVENTS) else {
        return odata_error(
            StatusCode::NOT_FOUND,
            &format!("Resource not found for the segment '{set}'."),
        );
    };
    let id = match key {
        None => None,
        Some(k) => match k.parse::<i32>() {
            Ok(i) => Some(i),
            Err(_) => {
                return odata_error(
                    StatusCode::BAD_REQUEST,
                    &format!("The key value '{k}' is not a valid Edm.Int32."),
                )
            }
        },
    };
    let writable = def.name == "ContactPersons";
    match (method.clone(), id) {
        (Method::GET, None) => list(&mut st, base, def.name, &q, now, path, query),
        (Method::GET, Some(id)) => single(&mut st, base, def, id, &q),
        (Method::POST, None) if writable => create_contact(&mut st, base, body, now, &q),
        (Method::PUT, Some(id)) if writable => replace_contact(&mut st, base, id, body, now, &q),
        (Method::DELETE, Some(id)) if writable => {
            let Some(e) = st.table(def.name).rows.get(&id) else {
                return not_found(def.name, id);
            };
            let etag = etag_of(e);
            if let Some(m) = if_match {
                if m.trim() != "*" && m.trim() != etag {
                    return odata_error(
                        StatusCode::PRECONDITION_FAILED,
                        "The entity has been modified since it was read (ETag mismatch).",
                    );
                }
            }
            st.delete_at(def.name, id, now);
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        _ => odata_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "The requested resource does not support this HTTP method.",
        ),
    }
}

/// A bearer token issued by `/Token` that has not expired on the sim clock.
fn authorized(st: &State, auth: &str, now: i64) -> bool {
    auth.strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
        .and_then(|t| st.tokens.get(t))
        .is_some_and(|t| t.expires_ms > now)
}

fn not_found(set: &str, id: i32) -> Resp {
    odata_error(
        StatusCode::NOT_FOUND,
        &format!("No {set} with Id {id} exists."),
    )
}

fn etag_of(e: &Entry) -> String {
    format!("W/\"{}\"", e.updated_ms)
}

/// The refresh grant. Client credentials only as HTTP Basic (the developer guide: "This request
/// requires the HTTP Basic Authentication header"); credentials in the body as well are a
/// second method, which RFC 6749 §2.3 forbids. Each refresh token works once: the answer
/// carries its successor.
fn token(st: &mut State, now: i64, auth: &str, body: &[u8]) -> Resp {
    let form = parse_form(std::str::from_utf8(body).unwrap_or(""));
    let get = |k: &str| form.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
    if get("client_secret").is_some() {
        return json_resp(
            StatusCode::BAD_REQUEST,
            &json!({"error": "invalid_request", "error_description": "client credentials go in the Authorization header"}),
        );
    }
    if auth != Sim::basic_auth() {
        let mut r = json_resp(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "invalid_client"}),
        );
        r.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
        return r;
    }
    if get("grant_type") != Some("refresh_token") {
        return json_resp(
            StatusCode::BAD_REQUEST,
            &json!({"error": "unsupported_grant_type"}),
        );
    }
    let used = get("refresh_token").unwrap_or("").to_owned();
    if !st.refresh_tokens.remove(&used) {
        return json_resp(StatusCode::BAD_REQUEST, &json!({"error": "invalid_grant"}));
    }
    st.token_seq += 1;
    let t = format!("sim-at-{}-{:016x}", st.token_seq, st.rng.gen::<u64>());
    let next = format!("sim-rt-{}-{:016x}", st.token_seq, st.rng.gen::<u64>());
    st.refresh_tokens.insert(next.clone());
    st.tokens.insert(
        t.clone(),
        TokenInfo {
            client: Sim::CLIENT_ID.to_owned(),
            expires_ms: now + TOKEN_LIFETIME_S * 1000,
        },
    );
    json_resp(
        StatusCode::OK,
        &json!({"access_token": t, "token_type": "bearer", "expires_in": TOKEN_LIFETIME_S, "refresh_token": next}),
    )
}

// ---------------------------------------------------------------------------------------------
// Query options

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Field {
    Id,
    CreatedOn,
    UpdatedOn,
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Eq,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Default)]
struct Query {
    filter: Vec<(Field, Op, i64)>,
    by_updated: bool,
    top: Option<usize>,
    skip: usize,
    select: Option<Vec<String>>,
    expand: Vec<String>,
    count: bool,
    include_deactivated: bool,
}

impl Query {
    fn parse(q: &str) -> Result<Query, String> {
        let mut out = Query::default();
        for (k, v) in parse_form(q) {
            match k.as_str() {
                "$filter" => out.filter = parse_filter(&v)?,
                "$orderby" => {
                    let norm: Vec<String> = v
                        .split(',')
                        .map(|p| {
                            let p = p.trim();
                            p.strip_suffix(" asc").unwrap_or(p).trim().to_owned()
                        })
                        .collect();
                    let norm: Vec<&str> = norm.iter().map(String::as_str).collect();
                    out.by_updated = match norm.as_slice() {
                        ["Id"] => false,
                        ["UpdatedOn"] | ["UpdatedOn", "Id"] => true,
                        _ => return Err(format!("The $orderby '{v}' is not supported.")),
                    };
                }
                "$top" => {
                    out.top =
                        Some(v.trim().parse().map_err(|_| {
                            format!("Invalid value '{v}' for $top query option found.")
                        })?)
                }
                "$skip" => {
                    out.skip = v
                        .trim()
                        .parse()
                        .map_err(|_| format!("Invalid value '{v}' for $skip query option found."))?
                }
                "$select" => out.select = Some(v.split(',').map(|s| s.trim().to_owned()).collect()),
                "$expand" => {
                    out.expand = v
                        .split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect()
                }
                "$count" => {
                    out.count = match v.as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(format!("'{v}' is not a valid count option.")),
                    }
                }
                "includedeactivated" => out.include_deactivated = v.eq_ignore_ascii_case("true"),
                k if k.starts_with('$') => {
                    return Err(format!("The query parameter '{k}' is not supported."))
                }
                _ => {}
            }
        }
        Ok(out)
    }

    fn check(&self, def: &SetDef) -> Result<(), String> {
        for e in &self.expand {
            if !def.navs.iter().any(|(n, _)| n == e) {
                return Err(format!(
                    "Could not find a property named '{e}' on type 'HQ.{}' to expand.",
                    def.entity
                ));
            }
        }
        if let Some(sel) = &self.select {
            for s in sel {
                let known = COMMON.contains(&s.as_str()) || def.scalars.contains(&s.as_str());
                if !known {
                    return Err(format!(
                        "Could not find a property named '{s}' on type 'HQ.{}'.",
                        def.entity
                    ));
                }
            }
        }
        Ok(())
    }
}

fn parse_filter(f: &str) -> Result<Vec<(Field, Op, i64)>, String> {
    let bad = || format!("The $filter expression '{f}' is not supported.");
    let mut out = Vec::new();
    for clause in f.split(" and ") {
        let parts: Vec<&str> = clause.trim().splitn(3, ' ').collect();
        if parts.len() != 3 {
            return Err(bad());
        }
        let field = match parts[0] {
            "Id" => Field::Id,
            "CreatedOn" => Field::CreatedOn,
            "UpdatedOn" => Field::UpdatedOn,
            _ => return Err(bad()),
        };
        let op = match parts[1] {
            "eq" => Op::Eq,
            "gt" => Op::Gt,
            "ge" => Op::Ge,
            "lt" => Op::Lt,
            "le" => Op::Le,
            _ => return Err(bad()),
        };
        let lit = parts[2].trim();
        let v = match field {
            Field::Id => lit.parse::<i64>().map_err(|_| bad())?,
            _ => parse_ts(lit).ok_or_else(|| {
                format!("The $filter literal '{lit}' is not a valid Edm.DateTimeOffset.")
            })?,
        };
        out.push((field, op, v));
    }
    Ok(out)
}

fn matches(e: &Entry, id: i32, filter: &[(Field, Op, i64)]) -> bool {
    filter.iter().all(|(f, op, v)| {
        let x = match f {
            Field::Id => id as i64,
            Field::CreatedOn => e.created_ms,
            Field::UpdatedOn => e.updated_ms,
        };
        match op {
            Op::Eq => x == *v,
            Op::Gt => x > *v,
            Op::Ge => x >= *v,
            Op::Lt => x < *v,
            Op::Le => x <= *v,
        }
    })
}

fn active_user(e: &Entry, now: i64) -> bool {
    match e
        .obj
        .get("LeavingDate")
        .and_then(Value::as_str)
        .and_then(parse_ts)
    {
        Some(t) => t > now,
        None => true,
    }
}

/// The next link of a capped page: the same request from `skip` on, with what is left of `$top`.
fn next_link(base: &str, path: &str, raw_query: &str, skip: usize, top: Option<usize>) -> String {
    let mut parts: Vec<String> = raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| {
            let k = pct_decode(p.split('=').next().unwrap_or(""));
            k != "$skip" && k != "$top"
        })
        .map(str::to_owned)
        .collect();
    if let Some(t) = top {
        parts.push(format!("$top={t}"));
    }
    parts.push(format!("$skip={skip}"));
    format!("{base}{path}?{}", parts.join("&"))
}

fn list(
    st: &mut State,
    base: &str,
    set: &'static str,
    q: &Query,
    now: i64,
    path: &str,
    raw_query: &str,
) -> Resp {
    let def = set_def(set).expect("known set");
    if let Err(e) = q.check(def) {
        return odata_error(StatusCode::BAD_REQUEST, &e);
    }
    let take = q.top.unwrap_or(PAGE_CAP).min(PAGE_CAP).min(st.page_cap);
    let st: &State = st;
    let users = set == "Users" && !q.include_deactivated;
    let tables = &st.tables;
    let table = &tables[set];
    let keep = |id: i32, e: &Entry| matches(e, id, &q.filter) && (!users || active_user(e, now));
    let mut count = 0usize;
    let page: Vec<&Entry> = if q.by_updated {
        let mut hits: Vec<(i64, i32, &Entry)> = table
            .rows
            .iter()
            .filter(|(id, e)| keep(**id, e))
            .map(|(id, e)| (e.updated_ms, *id, e))
            .collect();
        count = hits.len();
        hits.sort_unstable_by_key(|(u, id, _)| (*u, *id));
        hits.into_iter()
            .skip(q.skip)
            .take(take)
            .map(|(_, _, e)| e)
            .collect()
    } else {
        let mut page = Vec::with_capacity(take.min(table.rows.len()));
        for (id, e) in &table.rows {
            if !keep(*id, e) {
                continue;
            }
            if count >= q.skip && page.len() < take {
                page.push(e);
            }
            count += 1;
            // One past the page tells whether more remain (for the next link).
            if !q.count && page.len() >= take && count > q.skip + take {
                break;
            }
        }
        page
    };
    let n = page.len();
    let value: Vec<Value> = page.into_iter().map(|e| render(st, def, e, q)).collect();
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(format!("{base}/v1/$metadata#{set}")),
    );
    if q.count {
        body.insert("@odata.count".into(), json!(count));
    }
    body.insert("value".into(), Value::Array(value));
    // Server-driven paging: the server cut the page short of what was asked for.
    let asked = q.top.unwrap_or(usize::MAX);
    if st.faults.next_link_loop && n > 0 {
        body.insert(
            "@odata.nextLink".into(),
            json!(format!("{base}{path}?{raw_query}")),
        );
    } else if n < asked && count > q.skip + n {
        body.insert(
            "@odata.nextLink".into(),
            json!(next_link(
                base,
                path,
                raw_query,
                q.skip + n,
                q.top.map(|t| t - n)
            )),
        );
    }
    json_resp(StatusCode::OK, &Value::Object(body))
}

fn single(st: &mut State, base: &str, def: &'static SetDef, id: i32, q: &Query) -> Resp {
    if let Err(e) = q.check(def) {
        return odata_error(StatusCode::BAD_REQUEST, &e);
    }
    let Some(e) = st.tables[def.name].rows.get(&id) else {
        return not_found(def.name, id);
    };
    entity_resp(st, base, def, e, q, StatusCode::OK)
}

fn entity_resp(
    st: &State,
    base: &str,
    def: &SetDef,
    e: &Entry,
    q: &Query,
    status: StatusCode,
) -> Resp {
    let mut v = render(st, def, e, q);
    v["@odata.context"] = json!(format!("{base}/v1/$metadata#{}/$entity", def.name));
    let mut r = json_resp(status, &v);
    if let Ok(h) = HeaderValue::from_str(&etag_of(e)) {
        r.headers_mut().insert(ETAG, h);
    }
    r
}

/// A contact person's default address: the address `DefaultAddressId` names, made through
/// `Companies({Id})/Addresses`, or else the one stored inline (populated data).
fn contact_address(st: &State, obj: &Value) -> Value {
    let aid = obj["DefaultAddressId"].as_i64();
    if let Some(a) = aid.and_then(|a| st.addresses.get(&(a as i32))) {
        return a.obj.clone();
    }
    match &obj["DefaultAddress"] {
        a @ Value::Object(_) if aid.is_none() || a["Id"].as_i64() == aid => a.clone(),
        _ => Value::Null,
    }
}

/// `obj` of `set` with a contact person's `DefaultAddress` resolved (for the test-side API).
fn with_address(st: &State, set: &str, mut obj: Value) -> Value {
    if set == "ContactPersons" {
        let a = contact_address(st, &obj);
        obj["DefaultAddress"] = a;
    }
    obj
}

/// The wire form of a stored object: scalars (declared ones null when unset), plus expanded navs.
fn render(st: &State, def: &SetDef, e: &Entry, q: &Query) -> Value {
    let tables = &st.tables;
    let src = e.obj.as_object();
    let get = |k: &str| src.and_then(|m| m.get(k)).cloned().unwrap_or(Value::Null);
    let mut out = Map::new();
    match &q.select {
        Some(sel) => {
            for s in sel {
                out.insert(s.clone(), get(s));
            }
        }
        None => {
            for k in COMMON.iter().chain(def.scalars) {
                out.insert((*k).to_owned(), get(k));
            }
            if let Some(m) = src {
                for (k, v) in m {
                    let nav = def.navs.iter().any(|(n, _)| n == k);
                    if !nav && !out.contains_key(k) && !v.is_object() && !v.is_array() {
                        out.insert(k.clone(), v.clone());
                    }
                }
            }
        }
    }
    let contact = def.name == "ContactPersons";
    for x in &q.expand {
        let (name, many) = *def.navs.iter().find(|(n, _)| n == x).expect("checked");
        let stored = src.and_then(|m| m.get(name)).cloned();
        let v = match (stored, name) {
            (_, "DefaultAddress") if contact => contact_address(st, &e.obj),
            (_, "Addresses") if contact => match contact_address(st, &e.obj) {
                Value::Null => json!([]),
                a => json!([a]),
            },
            (Some(v), _) if !v.is_null() => v,
            (_, "Addresses") => match get("DefaultAddress") {
                Value::Null => json!([]),
                a => json!([a]),
            },
            (_, "Company") => get("CompanyId")
                .as_i64()
                .and_then(|cid| tables["Companies"].rows.get(&(cid as i32)))
                .map(|c| json!({"Id": c.obj["Id"], "Name": c.obj["Name"]}))
                .unwrap_or(Value::Null),
            _ if many => json!([]),
            _ => Value::Null,
        };
        out.insert(name.to_owned(), v);
    }
    Value::Object(out)
}

// ---------------------------------------------------------------------------------------------
// Company addresses

/// `Companies({Id})/Addresses[({AddressId})]` → (company id, address id).
fn address_route(rest: &str) -> Option<(String, Option<String>)> {
    let inner = rest.strip_prefix("Companies(")?;
    let (cid, tail) = inner.split_once(")/Addresses")?;
    match tail {
        "" => Some((cid.to_owned(), None)),
        t => Some((
            cid.to_owned(),
            Some(t.strip_prefix('(')?.strip_suffix(')')?.to_owned()),
        )),
    }
}

/// The `CompanyAddress` properties a client may set, with their JSON types.
const ADDRESS_STRINGS: &[&str] = &[
    "City",
    "Street",
    "HouseNumber",
    "ZipCode",
    "AddressLine2",
    "Description",
    "Country",
    "Phone",
    "Fax",
    "Email",
    "Website",
    "DefaultForDocumentType",
];

fn address_body(body: &[u8]) -> Result<Map<String, Value>, String> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("The request body is not valid JSON: {e}"))?;
    let Value::Object(m) = v else {
        return Err("The request body must be a CompanyAddress object.".into());
    };
    let mut out = Map::new();
    for (k, x) in m {
        let ok = match k.as_str() {
            "IsStandard" => x.is_null() || x.is_boolean(),
            "Id" | "CreatedBy" | "UpdatedBy" => x.is_null() || x.is_i64(),
            "CreatedOn" | "UpdatedOn" => x.is_null() || x.is_string(),
            k if ADDRESS_STRINGS.contains(&k) => x.is_null() || x.is_string(),
            _ => {
                return Err(format!(
                    "The property '{k}' does not exist on type 'HQ.CompanyAddress'."
                ))
            }
        };
        if !ok {
            return Err(format!("Cannot convert the value of property '{k}': {x}"));
        }
        if !x.is_null() && (k == "IsStandard" || ADDRESS_STRINGS.contains(&k.as_str())) {
            out.insert(k, x);
        }
    }
    Ok(out)
}

fn addresses(
    st: &mut State,
    base: &str,
    method: &Method,
    cid: String,
    aid: Option<String>,
    body: &[u8],
) -> Resp {
    let bad_key = |k: &str| {
        odata_error(
            StatusCode::BAD_REQUEST,
            &format!("The key value '{k}' is not a valid Edm.Int32."),
        )
    };
    let Ok(cid) = cid.parse::<i32>() else {
        return bad_key(&cid);
    };
    let aid = match aid.as_deref().map(|a| (a, a.parse::<i32>())) {
        None => None,
        Some((_, Ok(a))) => Some(a),
        Some((a, Err(_))) => return bad_key(a),
    };
    let Some(company) = st.table("Companies").rows.get(&cid) else {
        return not_found("Companies", cid);
    };
    let own = company.obj["DefaultAddress"].clone();
    let context = format!("{base}/v1/$metadata#Companies({cid})/Addresses");
    let one = |a: &Value, status: StatusCode| {
        let mut v = a.clone();
        v["@odata.context"] = json!(format!("{context}/$entity"));
        json_resp(status, &v)
    };
    match (method.clone(), aid) {
        (Method::GET, None) => {
            let mut value: Vec<Value> = own.is_object().then(|| own.clone()).into_iter().collect();
            value.extend(
                st.addresses
                    .values()
                    .filter(|a| a.company == cid)
                    .map(|a| a.obj.clone()),
            );
            json_resp(
                StatusCode::OK,
                &json!({"@odata.context": context, "value": value}),
            )
        }
        (Method::GET, Some(aid)) => match st.addresses.get(&aid) {
            Some(a) if a.company == cid => one(&a.obj, StatusCode::OK),
            _ if own["Id"].as_i64() == Some(i64::from(aid)) => one(&own, StatusCode::OK),
            _ => not_found("Addresses", aid),
        },
        (Method::POST, None) => {
            let mut m = match address_body(body) {
                Ok(m) => m,
                Err(e) => return odata_error(StatusCode::BAD_REQUEST, &e),
            };
            let aid = st.new_address_id();
            m.insert("Id".into(), json!(aid));
            let obj = Value::Object(m);
            st.addresses.insert(
                aid,
                Addr {
                    company: cid,
                    obj: obj.clone(),
                },
            );
            one(&obj, StatusCode::CREATED)
        }
        (Method::PUT, Some(aid)) => {
            let mut m = match address_body(body) {
                Ok(m) => m,
                Err(e) => return odata_error(StatusCode::BAD_REQUEST, &e),
            };
            match st.addresses.get_mut(&aid) {
                Some(a) if a.company == cid => {
                    m.insert("Id".into(), json!(aid));
                    a.obj = Value::Object(m);
                    one(&a.obj, StatusCode::OK)
                }
                _ => not_found("Addresses", aid),
            }
        }
        (Method::DELETE, Some(aid)) => match st.addresses.get(&aid) {
            Some(a) if a.company == cid => {
                st.addresses.remove(&aid);
                let mut r = Response::new(Full::new(Bytes::new()));
                *r.status_mut() = StatusCode::NO_CONTENT;
                r
            }
            _ => not_found("Addresses", aid),
        },
        _ => odata_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "The requested resource does not support this HTTP method.",
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Writes

/// Validates a contact-person body and returns the scalar values present in it. Navigation
/// properties sent inline (`DefaultAddress`, `Addresses`, `CustomFields`, `Company`) are
/// type-checked and then ignored: OData v4 changes related entities through their own
/// resources, not through the parent's POST or PUT.
fn contact_body(st: &mut State, body: &[u8]) -> Result<Map<String, Value>, String> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("The request body is not valid JSON: {e}"))?;
    let Value::Object(m) = v else {
        return Err("The request body must be a ContactPerson object.".into());
    };
    let mut scalars = Map::new();
    for k in CONTACT_SCALARS {
        let Some(x) = m.get(*k) else { continue };
        let ok = match *k {
            "CompanyId" | "DefaultAddressId" => {
                x.is_null() || x.as_i64().is_some_and(|n| i32::try_from(n).is_ok())
            }
            "SalutationForm" => {
                x.is_null()
                    || x.as_str()
                        .is_some_and(|s| ["Formal", "Informal", "Neutral", "NotSet"].contains(&s))
            }
            _ => x.is_null() || x.is_string(),
        };
        if !ok {
            return Err(format!("Cannot convert the value of property '{k}': {x}"));
        }
        scalars.insert((*k).to_owned(), x.clone());
    }
    if let Some(cid) = scalars.get("CompanyId").and_then(Value::as_i64) {
        if !st.table("Companies").rows.contains_key(&(cid as i32)) {
            return Err(format!("The company with Id {cid} does not exist."));
        }
    }
    for (k, many) in [
        ("DefaultAddress", false),
        ("Addresses", true),
        ("Company", false),
        ("CustomFields", true),
    ] {
        match m.get(k) {
            None | Some(Value::Null) => {}
            Some(Value::Object(_)) if !many => {}
            Some(Value::Array(_)) if many => {}
            Some(x) => return Err(format!("Cannot convert the value of property '{k}': {x}")),
        }
    }
    Ok(scalars)
}

/// Checks the `DefaultAddressId` of a contact person of company `cid` whose current default
/// address is `current`: an address of that company made through its `Addresses`, or the one
/// it has.
fn check_address_link(
    st: &State,
    cid: Option<i64>,
    aid: Option<i64>,
    current: Option<i64>,
) -> Result<(), String> {
    let Some(aid) = aid else { return Ok(()) };
    if Some(aid) == current {
        return Ok(());
    }
    match st.addresses.get(&(aid as i32)) {
        Some(a) if Some(i64::from(a.company)) == cid => Ok(()),
        Some(_) => Err(format!(
            "The address with Id {aid} is not an address of the contact person's company."
        )),
        None => Err(format!("The address with Id {aid} does not exist.")),
    }
}

fn create_contact(st: &mut State, base: &str, body: &[u8], now: i64, q: &Query) -> Resp {
    let def = set_def("ContactPersons").expect("set");
    if let Err(e) = q.check(def) {
        return odata_error(StatusCode::BAD_REQUEST, &e);
    }
    let scalars = match contact_body(st, body) {
        Ok(x) => x,
        Err(e) => return odata_error(StatusCode::BAD_REQUEST, &e),
    };
    // v2's create: "Creates a new contact person for the company with the given CompanyId".
    let cid = scalars.get("CompanyId").and_then(Value::as_i64);
    if cid.is_none() {
        return odata_error(
            StatusCode::BAD_REQUEST,
            "A contact person is created for a company: CompanyId is required.",
        );
    }
    let aid = scalars.get("DefaultAddressId").and_then(Value::as_i64);
    if let Err(e) = check_address_link(st, cid, aid, None) {
        return odata_error(StatusCode::BAD_REQUEST, &e);
    }
    let mut obj = Value::Object(scalars);
    obj["DefaultAddressId"] = aid.map(Value::from).unwrap_or(Value::Null);
    let id = st.insert_at("ContactPersons", obj, now, now);
    let e = &st.tables["ContactPersons"].rows[&id];
    entity_resp(st, base, def, e, q, StatusCode::CREATED)
}

fn replace_contact(st: &mut State, base: &str, id: i32, body: &[u8], now: i64, q: &Query) -> Resp {
    let def = set_def("ContactPersons").expect("set");
    if let Err(e) = q.check(def) {
        return odata_error(StatusCode::BAD_REQUEST, &e);
    }
    let Some(old) = st
        .table("ContactPersons")
        .rows
        .get(&id)
        .map(|e| e.obj.clone())
    else {
        return not_found("ContactPersons", id);
    };
    let scalars = match contact_body(st, body) {
        Ok(x) => x,
        Err(e) => return odata_error(StatusCode::BAD_REQUEST, &e),
    };
    let cid = scalars.get("CompanyId").and_then(Value::as_i64);
    if cid.is_none() && old["CompanyId"].as_i64().is_some() {
        return odata_error(
            StatusCode::BAD_REQUEST,
            "A contact person belongs to a company: CompanyId cannot be removed.",
        );
    }
    let aid = scalars.get("DefaultAddressId").and_then(Value::as_i64);
    if let Err(e) = check_address_link(st, cid, aid, old["DefaultAddressId"].as_i64()) {
        return odata_error(StatusCode::BAD_REQUEST, &e);
    }
    let now_s = now - now.rem_euclid(1000);
    let e = st
        .table("ContactPersons")
        .rows
        .get_mut(&id)
        .expect("exists");
    let m = e.obj.as_object_mut().expect("object");
    // A full replace of the scalars: omitted ones become null.
    for k in CONTACT_SCALARS {
        match scalars.get(*k) {
            Some(v) if !v.is_null() => {
                m.insert((*k).to_owned(), v.clone());
            }
            _ => {
                m.remove(*k);
            }
        }
    }
    // The inline address (populated data) stays only while it is the one linked.
    if m.get("DefaultAddress").and_then(|a| a["Id"].as_i64()) != aid {
        m.remove("DefaultAddress");
    }
    m.insert("UpdatedOn".into(), json!(fmt_ts(now_s)));
    m.insert("UpdatedBy".into(), json!(1));
    e.updated_ms = now_s;
    let e = &st.tables["ContactPersons"].rows[&id];
    entity_resp(st, base, def, e, q, StatusCode::OK)
}

// ---------------------------------------------------------------------------------------------
// v2 REST (read-only: Subsystems and Companies)

/// `DocumentType` names of the v2 spec (v1's `DefaultForDocumentType` spells some differently).
const V2_DOCUMENT_TYPES: &[&str] = &[
    "Quotation",
    "Invoice",
    "DeliveryNote",
    "Warning",
    "Reminder",
    "Cancellation",
    "CreditNote",
    "Confirmation",
    "IncomingInvoice",
    "Undefined",
    "Order",
    "PriceInquiry",
    "Letter",
    "Minute",
    "AdvancedInvoice",
    "PlannedRevenueStandard",
    "PlannedRevenueTimeAndMaterial",
    "PlannedCost",
    "FinalInvoice",
];

/// Nullable `CompanyGetRelated` scalars and the stored v1 property each is read from.
const V2_COMPANY_SCALARS: &[(&str, &str)] = &[
    ("industrialSector", "IndustrialSector"),
    ("description", "Description"),
    ("iban", "IBAN"),
    ("bic", "BIC"),
    ("homepage", "Homepage"),
    ("vatId", "TaxId"),
    ("financesChargeRateId", "FinancesChargeRateId"),
    ("standardDeliveryConditionId", "DefaultDeliveryConditionId"),
    ("standardPaymentConditionId", "DefaultPaymentConditionId"),
    ("debitorNumber", "DebitorNumber"),
    ("creditorNumber", "CreditorNumber"),
    ("documentDefaultMailEntityId", "DocumentDefaultMailEntityId"),
    ("routingId", "RoutingId"),
];

/// Nullable `CompanyAddressGet` strings and their stored v1 address property.
const V2_ADDRESS_STRINGS: &[(&str, &str)] = &[
    ("alternativeCompanyName", "AlternativeCompanyName"),
    ("additionalInformation", "AdditionalInformation"),
    ("houseNumber", "HouseNumber"),
    ("phone", "Phone"),
    ("email", "Email"),
    ("fax", "Fax"),
    ("website", "Website"),
    ("addressLine2", "AddressLine2"),
];

/// `CompanyAddressGet.description` is required; v1 addresses usually have none.
const V2_DEFAULT_ADDRESS_DESCRIPTION: &str = "Hauptadresse";

/// The v2 spec declares no error schema (no response besides 200 anywhere): `{"message": …}`.
fn v2_error(status: StatusCode, msg: &str) -> Resp {
    v2_json(status, &json!({ "message": msg }))
}

fn v2_json(status: StatusCode, v: &Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(v).unwrap_or_default(),
    )));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

/// Percent-encodes a query component (everything but RFC 3986 unreserved characters).
fn pct_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

struct V2Query {
    filter: Vec<(Field, Op, i64)>,
    by_updated: bool,
    top: usize,
    skip: usize,
    /// The decoded parameters as given, to build `helloHQ-NextLink` from.
    raw: Vec<(String, String)>,
}

impl V2Query {
    /// Parses the v2 list parameters; `list == false` (single GET) accepts none.
    fn parse(q: &str, list: bool) -> Result<V2Query, String> {
        let mut out = V2Query {
            filter: Vec::new(),
            by_updated: false,
            top: PAGE_CAP,
            skip: 0,
            raw: parse_form(q),
        };
        let mut seen: Vec<&str> = Vec::new();
        for (k, v) in &out.raw {
            if !list {
                return Err(format!(
                    "The query parameter '{k}' is not supported on a single-entity request."
                ));
            }
            if seen.contains(&k.as_str()) {
                return Err(format!(
                    "The query parameter '{k}' is given more than once."
                ));
            }
            seen.push(k);
            match k.as_str() {
                "filter" => out.filter = parse_v2_filter(v)?,
                "orderby" => {
                    let mut keys = Vec::new();
                    for p in v.split(',') {
                        let p = p.trim();
                        let lower = p.to_ascii_lowercase();
                        let name = match lower.strip_suffix(" asc") {
                            Some(n) => n.trim_end().to_owned(),
                            None => lower,
                        };
                        keys.push(name);
                    }
                    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                    out.by_updated = match keys.as_slice() {
                        ["id"] => false,
                        ["updatedon"] | ["updatedon", "id"] => true,
                        _ => {
                            return Err(format!(
                                "The orderby '{v}' is not supported; use 'id', 'updatedOn' or 'updatedOn,id' (ascending)."
                            ))
                        }
                    };
                }
                "top" => {
                    out.top = v
                        .trim()
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=PAGE_CAP).contains(n))
                        .ok_or_else(|| {
                            format!("The value '{v}' for top is invalid; it must be between 1 and {PAGE_CAP}.")
                        })?
                }
                "skip" => {
                    out.skip = v.trim().parse::<usize>().map_err(|_| {
                        format!("The value '{v}' for skip is invalid; it must be 0 or more.")
                    })?
                }
                k if k.starts_with('$') => {
                    return Err(format!(
                        "The query parameter '{k}' is not supported; v2 parameters have no '$' (use '{}').",
                        &k[1..]
                    ))
                }
                _ => return Err(format!("The query parameter '{k}' is not supported.")),
            }
        }
        Ok(out)
    }

    /// The absolute URL of the page after one that returned `taken` entities.
    fn next_link(&self, base: &str, path: &str, taken: usize) -> String {
        let mut pairs: Vec<(String, String)> = self
            .raw
            .iter()
            .filter(|(k, _)| k != "skip")
            .cloned()
            .collect();
        pairs.push(("skip".into(), (self.skip + taken).to_string()));
        let q: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", pct_encode(k), pct_encode(v)))
            .collect();
        format!("{base}{path}?{}", q.join("&"))
    }
}

/// `<field> <op> datetime'<timestamp>'` clauses joined by ` and `. Fields `updatedOn`,
/// `createdOn` (any case); ops `eq gt ge lt le`; the timestamp is RFC 3339 with optional
/// fraction and offset, read as UTC when it has neither `Z` nor an offset.
fn parse_v2_filter(f: &str) -> Result<Vec<(Field, Op, i64)>, String> {
    let bad = || {
        format!(
            "The filter '{f}' is not supported; use e.g. updatedOn ge datetime'2026-11-01T08:00:00Z'."
        )
    };
    let mut out = Vec::new();
    for clause in f.trim().split(" and ") {
        let clause = clause.trim();
        let mut parts = clause.splitn(3, ' ');
        let (Some(field), Some(op), Some(lit)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let field = match field.to_ascii_lowercase().as_str() {
            "updatedon" => Field::UpdatedOn,
            "createdon" => Field::CreatedOn,
            _ => return Err(bad()),
        };
        let op = match op.to_ascii_lowercase().as_str() {
            "eq" => Op::Eq,
            "gt" => Op::Gt,
            "ge" => Op::Ge,
            "lt" => Op::Lt,
            "le" => Op::Le,
            _ => return Err(bad()),
        };
        let lit = lit.trim();
        let inner = lit
            .strip_prefix("datetime'")
            .and_then(|l| l.strip_suffix('\''))
            .ok_or_else(bad)?;
        let ms = parse_ts(inner)
            .or_else(|| parse_ts(&format!("{inner}Z")))
            .ok_or_else(|| format!("The filter value '{inner}' is not a valid date-time."))?;
        out.push((field, op, ms));
    }
    Ok(out)
}

fn v2_route(st: &mut State, base: &str, method: &Method, rest: &str, query: &str) -> Resp {
    let segs: Vec<&str> = rest.split('/').collect();
    let (name, key) = match segs.as_slice() {
        [n] | [n, ""] => (*n, None),
        [n, k] => (*n, Some(*k)),
        _ => (rest, None),
    };
    let set = match (name, segs.len()) {
        ("Subsystems", 1 | 2) => "Subsystem",
        ("Companies", 1 | 2) => "Companies",
        _ => {
            return v2_error(
                StatusCode::NOT_FOUND,
                &format!("No resource was found that matches the request URI '/v2/{rest}'."),
            )
        }
    };
    if *method != Method::GET {
        return v2_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "The requested resource does not support this HTTP method.",
        );
    }
    let id = match key {
        None => None,
        Some(k) => match k.parse::<i32>() {
            Ok(i) => Some(i),
            Err(_) => {
                return v2_error(
                    StatusCode::BAD_REQUEST,
                    &format!("The value '{k}' is not a valid id."),
                )
            }
        },
    };
    let q = match V2Query::parse(query, id.is_none()) {
        Ok(q) => q,
        Err(e) => return v2_error(StatusCode::BAD_REQUEST, &e),
    };
    let State {
        tables,
        responsible_links,
        ..
    } = st;
    let convert = |id: i32, e: &Entry, links: &mut HashMap<(i32, i32), i32>| match set {
        "Subsystem" => v2_subsystem(id, e),
        _ => v2_company(tables, links, id, e),
    };
    let table = &tables[set];
    if let Some(id) = id {
        return match table.rows.get(&id) {
            Some(e) => v2_json(StatusCode::OK, &convert(id, e, responsible_links)),
            None => v2_error(
                StatusCode::NOT_FOUND,
                &format!("No {name} entity with id {id} exists."),
            ),
        };
    }
    let mut hits: Vec<(i64, i32, &Entry)> = table
        .rows
        .iter()
        .filter(|(id, e)| matches(e, **id, &q.filter))
        .map(|(id, e)| (e.updated_ms, *id, e))
        .collect();
    if q.by_updated {
        hits.sort_unstable_by_key(|(u, id, _)| (*u, *id));
    }
    let count = hits.len();
    let page: Vec<Value> = hits
        .into_iter()
        .skip(q.skip)
        .take(q.top)
        .map(|(_, id, e)| convert(id, e, responsible_links))
        .collect();
    let taken = page.len();
    let mut r = v2_json(StatusCode::OK, &Value::Array(page));
    r.headers_mut()
        .insert("helloHQ-Count", HeaderValue::from(count as u64));
    if q.skip + taken < count {
        let link = q.next_link(base, &format!("/v2/{name}"), taken);
        if let Ok(h) = HeaderValue::from_str(&link) {
            r.headers_mut().insert("helloHQ-NextLink", h);
        }
    }
    r
}

/// Stored `…On` string → second-precision UTC, else the fallback.
fn v2_ts(v: &Value, fallback_ms: i64) -> Value {
    let ms = v.as_str().and_then(parse_ts).unwrap_or(fallback_ms);
    json!(fmt_ts(ms - ms.rem_euclid(1000)))
}

/// `id`, `createdOn`, `createdBy`, `updatedOn`, `updatedBy` of an entity (the non-nullable
/// `…By` are left out when not stored).
fn v2_common(out: &mut Map<String, Value>, id: i32, e: &Entry) {
    out.insert("id".into(), json!(id));
    out.insert("createdOn".into(), json!(fmt_ts(e.created_ms)));
    out.insert("updatedOn".into(), json!(fmt_ts(e.updated_ms)));
    for (v2, v1) in [("createdBy", "CreatedBy"), ("updatedBy", "UpdatedBy")] {
        if let Some(n) = e.obj.get(v1).and_then(Value::as_i64) {
            out.insert(v2.into(), json!(n));
        }
    }
}

/// The owner's `createdOn…updatedBy` for a related item that has none of its own.
fn v2_stamps(out: &mut Map<String, Value>, item: &Value, owner: &Entry) {
    out.insert(
        "createdOn".into(),
        v2_ts(&item["CreatedOn"], owner.created_ms),
    );
    out.insert(
        "updatedOn".into(),
        v2_ts(&item["UpdatedOn"], owner.updated_ms),
    );
    for (v2, v1) in [("createdBy", "CreatedBy"), ("updatedBy", "UpdatedBy")] {
        if let Some(n) = item[v1].as_i64().or_else(|| owner.obj[v1].as_i64()) {
            out.insert(v2.into(), json!(n));
        }
    }
}

/// `SubsystemGet` of a stored v1 `Subsystem`.
fn v2_subsystem(id: i32, e: &Entry) -> Value {
    let mut out = Map::new();
    out.insert("name".into(), e.obj["Name"].clone());
    if let Some(b) = e.obj["IsMaster"].as_bool() {
        out.insert("isMaster".into(), json!(b));
    }
    out.insert("currency".into(), e.obj["Currency"].clone());
    v2_common(&mut out, id, e);
    Value::Object(out)
}

/// `CompanyAddressGet` of a stored v1 address.
fn v2_address(a: &Value, owner: &Entry) -> Value {
    let mut out = Map::new();
    for (v2, v1) in [
        ("street", "Street"),
        ("zipCode", "ZipCode"),
        ("city", "City"),
        ("country", "Country"),
    ] {
        if let Some(s) = a[v1].as_str() {
            out.insert(v2.into(), json!(s));
        }
    }
    let description = a["Description"]
        .as_str()
        .filter(|d| !d.is_empty())
        .unwrap_or(V2_DEFAULT_ADDRESS_DESCRIPTION);
    out.insert("description".into(), json!(description));
    for (v2, v1) in V2_ADDRESS_STRINGS {
        out.insert((*v2).into(), a[*v1].clone());
    }
    if let Some(t) = a["DefaultForDocumentType"]
        .as_str()
        .filter(|t| V2_DOCUMENT_TYPES.contains(t))
    {
        out.insert("standardForDocumentType".into(), json!(t));
    }
    if let Some(id) = a["Id"].as_i64() {
        out.insert("id".into(), json!(id));
    }
    v2_stamps(&mut out, a, owner);
    Value::Object(out)
}

/// `CompanyGetRelated` of a stored v1 `Company`, related data always included.
fn v2_company(
    tables: &HashMap<&'static str, Table>,
    links: &mut HashMap<(i32, i32), i32>,
    id: i32,
    e: &Entry,
) -> Value {
    let o = &e.obj;
    let items = |k: &str| o[k].as_array().cloned().unwrap_or_default();
    let mut out = Map::new();
    out.insert("name".into(), o["Name"].clone());
    for (v2, v1) in V2_COMPANY_SCALARS {
        out.insert((*v2).into(), o[*v1].clone());
    }
    v2_common(&mut out, id, e);

    let types: Vec<Value> = items("CompanyTypes")
        .iter()
        .map(|t| {
            let mut m = Map::new();
            let tid = t["Id"].as_i64();
            if let Some(tid) = tid {
                m.insert("id".into(), json!(tid));
            }
            m.insert("name".into(), t["Name"].clone());
            m.insert("number".into(), t["Number"].clone());
            m.insert("companyId".into(), json!(id));
            let row = tid.and_then(|t| tables["CompanyTypes"].rows.get(&(t as i32)));
            v2_stamps(&mut m, t, row.unwrap_or(e));
            Value::Object(m)
        })
        .collect();
    out.insert("companyTypes".into(), Value::Array(types));

    let addresses = match o.get("Addresses") {
        Some(Value::Array(a)) => a.clone(),
        _ => match &o["DefaultAddress"] {
            Value::Object(_) => vec![o["DefaultAddress"].clone()],
            _ => vec![],
        },
    };
    let addresses: Vec<Value> = addresses.iter().map(|a| v2_address(a, e)).collect();
    out.insert("addresses".into(), Value::Array(addresses));

    let subsystems: Vec<Value> = items("Subsystems")
        .iter()
        .map(|s| {
            let row = s["Id"]
                .as_i64()
                .and_then(|sid| tables["Subsystem"].rows.get(&(sid as i32)));
            let pick = |k: &str| match (&s[k], row) {
                (Value::Null, Some(r)) => r.obj[k].clone(),
                (v, _) => v.clone(),
            };
            let mut m = Map::new();
            m.insert("name".into(), pick("Name"));
            if let Some(b) = pick("IsMaster").as_bool() {
                m.insert("isMaster".into(), json!(b));
            }
            m.insert("currency".into(), pick("Currency"));
            Value::Object(m)
        })
        .collect();
    out.insert("subsystems".into(), Value::Array(subsystems));

    let responsible: Vec<Value> = items("ResponsibleUsers")
        .iter()
        .filter_map(|u| {
            let uid = u["Id"].as_i64()? as i32;
            let next = links.len() as i32 + 1;
            let link = *links.entry((id, uid)).or_insert(next);
            let row = tables["Users"].rows.get(&uid);
            let pick = |k: &str| match (&u[k], row) {
                (Value::Null, Some(r)) => r.obj[k].clone(),
                (v, _) => v.clone(),
            };
            let mut m = Map::new();
            m.insert("id".into(), json!(link));
            m.insert("userId".into(), json!(uid));
            m.insert("firstName".into(), pick("FirstName"));
            m.insert("lastName".into(), pick("LastName"));
            v2_stamps(&mut m, &Value::Null, e);
            Some(Value::Object(m))
        })
        .collect();
    out.insert("responsibleUsers".into(), Value::Array(responsible));

    if o["DefaultAddress"].is_object() {
        out.insert("defaultAddress".into(), v2_address(&o["DefaultAddress"], e));
    }
    out.insert("contactPersons".into(), Value::Null);

    let fields: Vec<Value> = items("CustomFields")
        .iter()
        .map(|c| {
            json!({
                "name": c["Name"],
                "type": c["Type"].as_str().unwrap_or("Text"),
                "value": c["Value"],
                "filterName": null,
            })
        })
        .collect();
    out.insert("customFields".into(), Value::Array(fields));
    Value::Object(out)
}
