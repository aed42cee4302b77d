//! The helloHQ backend: an adapter (HTTP, mapping, sync schedule) over the generic remote-CRM
//! [`Mirror`]. helloHQ is read into the local mirror in crmgate's store, and the replica is fed
//! from the mirror's change feed, so reads never wait for helloHQ and a restart does not
//! reload it. A sync cycle ([`HelloHq::sync_once`]) does:
//!
//! 1. the **initial load**, set by set in dependency order and page by page (`$orderby=Id`,
//!    `$top`/`$skip`), persisting its position after every page, so a restart continues where
//!    it stopped; until it is complete the feed answers "unavailable" and the replica stays
//!    not ready;
//! 2. then **polls** `UpdatedOn gt cursor − overlap` per set; the mirror writes only records
//!    that differ, which de-duplicates the overlap on (id, `UpdatedOn`);
//! 3. reads `ConfigSystemEvents/do.GetDeleted()` as a hint for hard deletes, and confirms each
//!    with a `GET` that answers 404 before deleting;
//! 4. re-reads the membership collections (responsible users, members, lead contacts) in full
//!    on a slower schedule, in case helloHQ changes them without stamping `UpdatedOn`;
//! 5. reconciles ids (`$select=Id`) on a slower schedule still, the safety net for deletes and
//!    for entities a paged read skipped.
//!
//! Writes go to helloHQ first: updates re-read the entity, refuse if helloHQ changed since the
//! mirror saw it, apply only the changed fields to the entity as read and `PUT` it back whole;
//! creates are recorded in an outbox before the `POST`, so a create whose answer was lost is
//! looked up in helloHQ before it is ever sent again.

pub mod client;
pub mod config;
pub mod map;

use super::mirror::{tables, Mirror};
use super::{ChangePage, CrmBackend, CrmError, Precondition, Versioned};
use crate::domain::dataset::Problem;
use crate::domain::{Contact, ContactField, Kind, Record};
use crate::store::Store;
use client::{unix_now, Client, Failure, Health, Reply};
use config::HelloHqConfig;
use map::{Alias, Ctx, Set};
use reqwest::Method;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Key prefix of the mirror's side tables (sync state, aliases, outbox). `auth` keeps the
/// sign-in data of helloHQ users under `hq/login/`, where this backend once kept it.
const PREFIX: &str = "hq/";
/// How long a write waits for the rate limiter before it fails as retryable.
const WRITE_WAIT: Duration = Duration::from_secs(2);

/// The `CompanyAddress` properties crmgate copies into an address it makes.
const ADDRESS_FIELDS: [&str; 11] = [
    "City",
    "Street",
    "HouseNumber",
    "ZipCode",
    "AddressLine2",
    "Country",
    "Phone",
    "Fax",
    "Email",
    "Website",
    "DefaultForDocumentType",
];

/// The `Description` of an address crmgate made for a contact person (crmgate id `local`):
/// only such an address is removed when the contact person moves to a new one.
fn address_marker(local: &str) -> String {
    format!("crmgate: contact person {local}")
}

/// Most pages one read follows (a backstop: a set of 10 million entities at 100 a page).
const MAX_PAGES: u64 = 100_000;

/// The pages one read has requested, so a server whose next links repeat, or never end, makes
/// the read fail (retryable) instead of looping forever.
#[derive(Default)]
struct Pager {
    seen: HashSet<String>,
    pages: u64,
}

impl Pager {
    /// Records that `path` is about to be requested while reading `what`.
    fn request(&mut self, what: &str, path: &str) -> Result<(), CrmError> {
        self.pages += 1;
        if self.pages > MAX_PAGES {
            return Err(unavailable(format!(
                "helloHQ served more than {MAX_PAGES} pages for one read of {what}; stopped"
            )));
        }
        if !self.seen.insert(path.to_owned()) {
            tracing::warn!(what, path, "helloHQ's next links repeat a page");
            return Err(unavailable(format!(
                "helloHQ's next links for {what} repeat a page; stopped"
            )));
        }
        Ok(())
    }
}

/// What follows a page of a list.
enum Next {
    /// The path of the next link helloHQ sent.
    Path(String),
    /// The same query with `$skip` past what was read.
    Skip,
    /// Nothing: that was the last page.
    End,
}

/// Where the sync stands; persisted after every step.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct SyncState {
    load_done: bool,
    load_set: usize,
    load_skip: u64,
    /// The next link of the last page loaded, if helloHQ sent one.
    #[serde(default)]
    load_next: Option<String>,
    /// Entities read since the load last built a request itself (see `next_page`).
    #[serde(default)]
    load_chain: u64,
    load_total: Option<u64>,
    /// Set name → `UpdatedOn` high-water mark (helloHQ's clock, unix seconds).
    cursors: BTreeMap<String, i64>,
    /// High-water mark of the deleted-entity events.
    deleted_cursor: Option<i64>,
    /// The deleted-entity events are not offered by this helloHQ.
    deleted_feed_off: bool,
    /// Last id reconciliation / membership re-read (our clock).
    last_reconcile: i64,
    last_membership: i64,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct OutboxEntry {
    body: Value,
    local: String,
    owner: Option<String>,
    subsystems: Vec<String>,
    /// helloHQ time just before the first attempt, minus slack.
    since: i64,
}

/// What a list request selects.
#[derive(Clone, Debug)]
enum Query {
    /// Every entity, in id order.
    All,
    /// Ids only, in id order (reconciliation; v2 reads whole entities).
    Ids,
    /// Entities changed since (helloHQ time, unix seconds), in `UpdatedOn` order.
    Since(i64),
    /// A v1 `$filter`, in id order.
    Filter(String),
}

/// A contact about to be written: the mirror's copy and helloHQ's current entity.
struct Fresh {
    version: String,
    old: Contact,
    hq: String,
    remote: Value,
    etag: Option<String>,
}

/// What one sync cycle did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CycleReport {
    /// Requests sent to helloHQ.
    pub requests: u64,
    /// Records written to or deleted from the mirror.
    pub changed: usize,
    /// The initial load is complete.
    pub loaded: bool,
}

struct Inner {
    cfg: HelloHqConfig,
    /// Sets read through v2.
    v2: HashSet<Set>,
    client: Client,
    /// The local mirror of helloHQ and its side tables.
    mirror: Mirror,
    state: tokio::sync::Mutex<SyncState>,
    progress: std::sync::Mutex<String>,
    ctx: RwLock<Ctx>,
    /// helloHQ contact id by crmgate id, for contacts created through crmgate.
    hq_ids: RwLock<HashMap<String, String>>,
    writes: tokio::sync::Mutex<()>,
    /// helloHQ served shorter pages than asked for (logged once).
    capped: AtomicBool,
    /// helloHQ time of the newest change applied, unix seconds.
    newest_change: AtomicI64,
    /// Our time at the start of the last cycle that completed.
    last_cycle_start: AtomicI64,
    last_cycle_requests: AtomicU64,
    last_error: std::sync::Mutex<Option<String>>,
}

/// The helloHQ backend. Cheap to clone.
#[derive(Clone)]
pub struct HelloHq {
    inner: Arc<Inner>,
}

fn invalid(path: &str, message: impl Into<String>) -> CrmError {
    CrmError::Invalid(vec![Problem {
        path: path.into(),
        message: message.into(),
    }])
}

fn unavailable(reason: impl Into<String>) -> CrmError {
    CrmError::Unavailable {
        retry_after: Some(Duration::from_secs(5)),
        reason: reason.into(),
    }
}

/// The entities of a list answer, and its `@odata.nextLink` (v1) or `helloHQ-NextLink` (v2).
fn values(reply: &Reply) -> Result<(Vec<Value>, Option<String>), CrmError> {
    match reply.json()? {
        Value::Object(mut m) => {
            let next = match m.remove("@odata.nextLink") {
                Some(Value::String(s)) if !s.trim().is_empty() => Some(s),
                _ => reply.next_link.clone(),
            };
            match m.remove("value") {
                Some(Value::Array(a)) => Ok((a, next)),
                _ => Err(unavailable("helloHQ list answer without a value array")),
            }
        }
        Value::Array(a) => Ok((a, reply.next_link.clone())),
        _ => Err(unavailable("helloHQ list answer is not an object")),
    }
}

/// The path (below the base URL) a next link names. A link to another origin is refused:
/// the access token goes with every request, and it is for helloHQ only.
fn next_path(base_url: &str, api: &str, link: &str) -> Result<String, CrmError> {
    let link = link.trim();
    if let Some(rest) = link.strip_prefix(base_url) {
        if rest.starts_with('/') {
            return Ok(rest.to_owned());
        }
    } else if link.starts_with('/') && !link.starts_with("//") {
        return Ok(link.to_owned());
    } else if !link.contains("://") && !link.starts_with("//") {
        // Relative to the service root (`ContactPersons?$skip=100`).
        return Ok(format!("/{api}/{link}"));
    }
    Err(unavailable(format!(
        "helloHQ sent a next link outside {base_url}; it is not followed"
    )))
}

fn updated_on(v: &Value) -> Option<i64> {
    v.get("UpdatedOn")
        .and_then(Value::as_str)
        .and_then(map::parse_time)
}

fn strip_annotations(v: &mut Value) {
    if let Some(m) = v.as_object_mut() {
        m.retain(|k, _| !k.starts_with("@odata."));
    }
}

impl HelloHq {
    /// Opens the backend: credentials, the mirror and the sync state. Sign-in data of
    /// helloHQ users is no business of the CRM layer: `auth` keeps it and lays it over the
    /// user records this backend emits (which carry no password or role).
    pub fn open(cfg: HelloHqConfig, store: Arc<Store>) -> Result<HelloHq, String> {
        let creds = client::load_credentials(&cfg.credentials)?;
        let client = Client::new(cfg.clone(), creds, Some(store.clone()))?;
        let mirror = Mirror::open(store, PREFIX)?;
        let state: SyncState = mirror.load_state()?;
        let aliases: HashMap<String, Alias> = mirror.load_table(tables::ALIAS)?;
        let hq_ids: HashMap<String, String> = aliases
            .iter()
            .map(|(hq, a)| (a.local.clone(), hq.clone()))
            .collect();
        let mut subsystems_by_name = HashMap::new();
        for id in mirror
            .local()
            .ids_blocking(Kind::Subsystem)
            .map_err(|e| e.to_string())?
        {
            if let Ok(Some(Versioned {
                record: Record::Subsystem(s),
                ..
            })) = mirror.local().read_blocking(Kind::Subsystem, &id)
            {
                subsystems_by_name.insert(s.name, s.id.as_str().to_owned());
            }
        }
        mirror.set_loaded(state.load_done);
        Ok(HelloHq {
            inner: Arc::new(Inner {
                client,
                mirror,
                state: tokio::sync::Mutex::new(state),
                progress: std::sync::Mutex::new(String::new()),
                ctx: RwLock::new(Ctx {
                    aliases,
                    subsystems_by_name,
                    now: unix_now(),
                }),
                hq_ids: RwLock::new(hq_ids),
                writes: tokio::sync::Mutex::new(()),
                capped: AtomicBool::new(false),
                newest_change: AtomicI64::new(0),
                last_cycle_start: AtomicI64::new(0),
                last_cycle_requests: AtomicU64::new(0),
                last_error: std::sync::Mutex::new(None),
                v2: cfg
                    .v2
                    .iter()
                    .filter_map(|n| {
                        Set::ALL
                            .into_iter()
                            .find(|s| s.v2_name() == Some(n.as_str()))
                    })
                    .collect(),
                cfg,
            }),
        })
    }

    /// True once the first full load is complete.
    pub fn is_loaded(&self) -> bool {
        self.inner.mirror.is_loaded()
    }

    fn requests(&self) -> u64 {
        self.inner.client.counters.requests.load(Ordering::Relaxed)
    }

    async fn save(&self, st: &SyncState) -> Result<(), CrmError> {
        self.inner.mirror.save_state(st).await
    }

    /// Maps entities and writes the changed ones into the mirror (off the async threads).
    async fn apply(
        &self,
        set: Set,
        entities: Vec<Value>,
        deletes: Vec<(Kind, String)>,
    ) -> Result<usize, CrmError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut records = Vec::with_capacity(entities.len());
            let mut newest = 0;
            {
                let mut ctx = me
                    .inner
                    .ctx
                    .write()
                    .map_err(|_| unavailable("ctx lock poisoned"))?;
                ctx.now = unix_now();
                for v in &entities {
                    newest = newest.max(updated_on(v).unwrap_or(0));
                    match map::from_hq(set, v, &ctx) {
                        Ok(r) => {
                            if let Record::Subsystem(s) = &r {
                                ctx.subsystems_by_name
                                    .insert(s.name.clone(), s.id.as_str().to_owned());
                            }
                            records.push(r);
                        }
                        Err(e) => tracing::warn!(set = set.name(), error = %e, "skipped an entity"),
                    }
                }
            }
            let n = me.inner.mirror.local().mirror_blocking(records, &deletes)?;
            if n > 0 && newest > 0 {
                me.inner.newest_change.fetch_max(newest, Ordering::Relaxed);
            }
            Ok(n)
        })
        .await
        .map_err(|e| unavailable(format!("worker failed: {e}")))?
    }

    fn local_id(&self, set: Set, hq: &str) -> String {
        if set == Set::ContactPersons {
            if let Ok(ctx) = self.inner.ctx.read() {
                if let Some(a) = ctx.aliases.get(hq) {
                    return a.local.clone();
                }
            }
        }
        hq.to_owned()
    }

    fn hq_id(&self, kind: Kind, local: &str) -> String {
        if kind == Kind::Contact {
            if let Ok(m) = self.inner.hq_ids.read() {
                if let Some(h) = m.get(local) {
                    return h.clone();
                }
            }
        }
        local.to_owned()
    }

    /// True when `set` is read through the v2 REST API (`crm.hellohq.v2`).
    fn v2(&self, set: Set) -> bool {
        self.inner.v2.contains(&set)
    }

    fn list_path(&self, set: Set, q: &Query, skip: u64) -> String {
        let top = self.inner.cfg.page_size;
        if let Some(name) = set.v2_name().filter(|_| self.v2(set)) {
            // v2 has no $select: ids are read with the entities.
            let mut p = match q {
                Query::Since(_) => format!("/v2/{name}?orderby=updatedOn,id&top={top}&skip={skip}"),
                _ => format!("/v2/{name}?orderby=id&top={top}&skip={skip}"),
            };
            if let Query::Since(t) = q {
                p.push_str(&format!(
                    "&filter=updatedOn%20ge%20datetime'{}'",
                    map::format_time(*t)
                ));
            }
            return p;
        }
        let mut p = format!("/v1/{}?", set.name());
        match q {
            Query::Ids => p.push_str("$select=Id&$orderby=Id"),
            Query::Since(_) => p.push_str("$orderby=UpdatedOn,Id"),
            Query::All | Query::Filter(_) => p.push_str("$orderby=Id"),
        }
        p.push_str(&format!("&$top={top}&$skip={skip}"));
        let filter = match q {
            Query::Since(t) => Some(format!("UpdatedOn gt {}", map::format_time(*t))),
            Query::Filter(f) => Some(f.clone()),
            _ => None,
        };
        if let Some(f) = filter {
            p.push_str("&$filter=");
            p.push_str(&f.replace(' ', "%20").replace('+', "%2B"));
        }
        if let (Some(e), false) = (set.expand(), matches!(q, Query::Ids)) {
            p.push_str("&$expand=");
            p.push_str(e);
        }
        if set == Set::Users {
            // Users who left are listed too, so their leaving reaches crmgate (they lose
            // sign-in) instead of looking like a deletion.
            p.push_str("&includedeactivated=true");
        }
        p
    }

    /// What follows a page of `n` entities of `set` that came with `link`, `chain` being the
    /// entities read since crmgate last built the request itself (this page included; a next
    /// link continues the same request): the link's path, the next `$skip` (the request was
    /// served in full without a link), or the end (it was not).
    fn next_page(
        &self,
        set: Set,
        n: u64,
        chain: u64,
        link: Option<String>,
    ) -> Result<Next, CrmError> {
        let asked = u64::from(self.inner.cfg.page_size);
        match link {
            Some(link) if n > 0 => {
                if n < asked && !self.inner.capped.swap(true, Ordering::Relaxed) {
                    tracing::info!(
                        set = set.name(),
                        asked,
                        served = n,
                        "helloHQ serves fewer entities per page than crm.hellohq.page_size; \
                         following its next links"
                    );
                }
                let api = if self.v2(set) { "v2" } else { "v1" };
                Ok(Next::Path(next_path(&self.inner.cfg.base_url, api, &link)?))
            }
            _ if chain < asked || n == 0 => Ok(Next::End),
            _ => Ok(Next::Skip),
        }
    }

    /// The entities of a list answer, in v1 shape whichever API answered, and its next link.
    fn entities(&self, set: Set, reply: &Reply) -> Result<(Vec<Value>, Option<String>), CrmError> {
        let (page, next) = values(reply)?;
        Ok(if self.v2(set) {
            (
                page.into_iter().map(|v| map::v2_to_v1(set, v)).collect(),
                next,
            )
        } else {
            (page, next)
        })
    }

    /// Reads every page of a list query. A next link in the answer is followed; without
    /// one, a page shorter than asked for is the last (a full one may be followed by more).
    async fn read_all(&self, set: Set, q: Query) -> Result<Vec<Value>, CrmError> {
        let mut out = Vec::new();
        let mut skip = 0u64;
        let mut path = self.list_path(set, &q, skip);
        let mut chain = 0;
        let mut pager = Pager::default();
        loop {
            pager.request(set.name(), &path)?;
            let reply = self.inner.client.get(&path).await?;
            let (page, next) = self.entities(set, &reply)?;
            let n = page.len() as u64;
            out.extend(page);
            skip += n;
            chain += n;
            path = match self.next_page(set, n, chain, next)? {
                Next::Path(p) => p,
                Next::Skip => {
                    chain = 0;
                    self.list_path(set, &q, skip)
                }
                Next::End => return Ok(out),
            };
        }
    }

    /// One sync cycle: the initial load (or the rest of it), or a poll, then the slower
    /// schedules when due. Progress is persisted as it goes, so a failed cycle loses nothing.
    pub async fn sync_once(&self) -> Result<CycleReport, CrmError> {
        let start_requests = self.requests();
        let started = unix_now();
        let mut st = self.inner.state.lock().await;
        let result = self.cycle(&mut st).await;
        let report = CycleReport {
            requests: self.requests() - start_requests,
            changed: *result.as_ref().unwrap_or(&0),
            loaded: st.load_done,
        };
        match &result {
            Ok(_) => {
                self.inner
                    .last_cycle_start
                    .store(started, Ordering::Relaxed);
                self.inner
                    .last_cycle_requests
                    .store(report.requests, Ordering::Relaxed);
                if let Ok(mut e) = self.inner.last_error.lock() {
                    *e = None;
                }
            }
            Err(e) => {
                if let Ok(mut le) = self.inner.last_error.lock() {
                    *le = Some(e.to_string());
                }
            }
        }
        result.map(|_| report)
    }

    async fn cycle(&self, st: &mut SyncState) -> Result<usize, CrmError> {
        let mut changed = 0;
        if !st.load_done {
            changed += self.load(st).await?;
        } else {
            changed += self.poll(st).await?;
        }
        if !st.deleted_feed_off {
            changed += self.deleted_events(st).await?;
        }
        let now = unix_now();
        if now - st.last_membership >= self.inner.cfg.membership_interval.as_secs() as i64 {
            for set in Set::MEMBERSHIP {
                let all = self.read_all(set, Query::All).await?;
                changed += self.apply(set, all, Vec::new()).await?;
            }
            st.last_membership = now;
            self.save(st).await?;
        }
        if now - st.last_reconcile >= self.inner.cfg.reconcile_interval.as_secs() as i64 {
            changed += self.reconcile().await?;
            st.last_reconcile = now;
            self.save(st).await?;
        }
        Ok(changed)
    }

    async fn load(&self, st: &mut SyncState) -> Result<usize, CrmError> {
        let mut changed = 0;
        let mut pager = Pager::default();
        while st.load_set < Set::ALL.len() {
            let set = Set::ALL[st.load_set];
            let mut path = match st.load_next.take() {
                Some(p) => p,
                None => self.list_path(set, &Query::All, st.load_skip),
            };
            if st.load_skip == 0 && !self.v2(set) {
                path.push_str("&$count=true");
            }
            pager.request(set.name(), &path)?;
            let reply = self.inner.client.get(&path).await?;
            if st.load_skip == 0 {
                // Changes made while the rest of this set loads are polled from here on.
                let at = reply.date.unwrap_or_else(|| self.inner.client.server_now());
                st.cursors.insert(set.name().to_owned(), at);
                if st.deleted_cursor.is_none() {
                    st.deleted_cursor = Some(at);
                }
                st.load_total = reply.count.or_else(|| {
                    reply
                        .json()
                        .ok()
                        .and_then(|v| v.get("@odata.count").and_then(Value::as_u64))
                });
            }
            let (page, link) = self.entities(set, &reply)?;
            let n = page.len() as u64;
            changed += self.apply(set, page, Vec::new()).await?;
            st.load_skip += n;
            st.load_chain += n;
            let next = self.next_page(set, n, st.load_chain, link)?;
            if !matches!(next, Next::Path(_)) {
                st.load_chain = 0;
            }
            let total = st.load_total;
            if let Ok(mut p) = self.inner.progress.lock() {
                *p = format!(
                    "{} {}/{}",
                    set.name(),
                    st.load_skip,
                    total.map(|t| t.to_string()).unwrap_or_else(|| "?".into())
                );
            }
            if let Next::Path(p) = &next {
                st.load_next = Some(p.clone());
            }
            if matches!(next, Next::End) {
                tracing::info!(
                    set = set.name(),
                    records = st.load_skip,
                    "helloHQ set loaded"
                );
                st.load_set += 1;
                st.load_skip = 0;
                st.load_total = None;
            } else if st.load_skip % (u64::from(self.inner.cfg.page_size) * 20) == 0 {
                tracing::info!(
                    set = set.name(),
                    loaded = st.load_skip,
                    total,
                    "loading helloHQ"
                );
            }
            self.save(st).await?;
        }
        st.load_done = true;
        // A paged read can skip an entity when others are deleted meanwhile: reconcile ids
        // right away, and re-read membership on its schedule from now.
        st.last_reconcile = 0;
        st.last_membership = unix_now();
        self.save(st).await?;
        self.inner.mirror.set_loaded(true);
        Ok(changed)
    }

    async fn poll(&self, st: &mut SyncState) -> Result<usize, CrmError> {
        let mut changed = 0;
        let overlap = self.inner.cfg.overlap.as_secs() as i64;
        for set in Set::ALL {
            let cursor = st.cursors.get(set.name()).copied().unwrap_or(0);
            let page = self.read_all(set, Query::Since(cursor - overlap)).await?;
            let high = page.iter().filter_map(updated_on).max().unwrap_or(cursor);
            changed += self.apply(set, page, Vec::new()).await?;
            if high > cursor {
                st.cursors.insert(set.name().to_owned(), high);
                self.save(st).await?;
            }
        }
        Ok(changed)
    }

    /// Deleted-entity events: a hint, each confirmed by a 404 before the mirror drops it.
    async fn deleted_events(&self, st: &mut SyncState) -> Result<usize, CrmError> {
        let since = st.deleted_cursor.unwrap_or(0) - self.inner.cfg.overlap.as_secs() as i64;
        let mut skip = 0u64;
        let mut changed = 0;
        let mut high = st.deleted_cursor.unwrap_or(0);
        let events_path = |skip: u64| {
            format!(
                "/v1/ConfigSystemEvents/do.GetDeleted()?$filter=UpdatedOn%20gt%20{}&$orderby=UpdatedOn,Id&$top={}&$skip={skip}",
                map::format_time(since),
                self.inner.cfg.page_size
            )
        };
        let mut path = events_path(skip);
        let mut chain = 0;
        let mut pager = Pager::default();
        loop {
            pager.request("ConfigSystemEvents", &path)?;
            let reply = self.inner.client.get(&path).await?;
            if matches!(reply.status, 400 | 404 | 405 | 501) {
                tracing::warn!(
                    status = reply.status,
                    "helloHQ does not offer deleted-entity events; relying on id reconciliation"
                );
                st.deleted_feed_off = true;
                self.save(st).await?;
                return Ok(0);
            }
            let (events, link) = values(&reply)?;
            let n = events.len() as u64;
            for ev in &events {
                high = high.max(updated_on(ev).unwrap_or(0));
                let set = ev
                    .get("DatabaseObject")
                    .and_then(Value::as_str)
                    .and_then(Set::from_database_object);
                let id = ev.get("EntityId").and_then(|i| i.as_i64());
                if let (Some(set), Some(id)) = (set, id) {
                    changed += self.confirm_gone(set, &id.to_string()).await?;
                }
            }
            skip += n;
            chain += n;
            path = match self.next_page(Set::ContactPersons, n, chain, link)? {
                Next::Path(p) => p,
                Next::Skip => {
                    chain = 0;
                    events_path(skip)
                }
                Next::End => break,
            };
        }
        if Some(high) != st.deleted_cursor && high > 0 {
            st.deleted_cursor = Some(high);
            self.save(st).await?;
        }
        Ok(changed)
    }

    /// Deletes `hq` of `set` from the mirror if helloHQ answers 404 for it; if it exists,
    /// refreshes it instead.
    async fn confirm_gone(&self, set: Set, hq: &str) -> Result<usize, CrmError> {
        let local = self.local_id(set, hq);
        let known = self.inner.mirror.read(set.kind(), &local).await?.is_some();
        let path = match set.v2_name().filter(|_| self.v2(set)) {
            Some(name) => format!("/v2/{name}/{hq}"),
            None => {
                let mut p = format!("/v1/{}({hq})", set.name());
                if let Some(e) = set.expand() {
                    p.push_str("?$expand=");
                    p.push_str(e);
                }
                p
            }
        };
        let reply = self.inner.client.get(&path).await?;
        match reply.status {
            404 if known => self.apply(set, Vec::new(), vec![(set.kind(), local)]).await,
            404 => Ok(0),
            200 => {
                let mut v = reply.json()?;
                strip_annotations(&mut v);
                if self.v2(set) {
                    v = map::v2_to_v1(set, v);
                }
                self.apply(set, vec![v], Vec::new()).await
            }
            s => Err(unavailable(format!(
                "helloHQ answered {s} for {}({hq}): {}",
                set.name(),
                reply.error_message()
            ))),
        }
    }

    /// Lists all ids of every set and repairs the mirror: ids helloHQ no longer has are
    /// confirmed gone and deleted, ids the mirror lacks are read.
    async fn reconcile(&self) -> Result<usize, CrmError> {
        let mut changed = 0;
        for set in Set::ALL {
            let mut remote = HashSet::new();
            let mut skip = 0u64;
            let mut path = self.list_path(set, &Query::Ids, skip);
            let mut chain = 0;
            let mut pager = Pager::default();
            loop {
                pager.request(set.name(), &path)?;
                let reply = self.inner.client.get(&path).await?;
                let (page, link) = self.entities(set, &reply)?;
                let n = page.len() as u64;
                remote.extend(page.iter().filter_map(map::id_of));
                skip += n;
                chain += n;
                path = match self.next_page(set, n, chain, link)? {
                    Next::Path(p) => p,
                    Next::Skip => {
                        chain = 0;
                        self.list_path(set, &Query::Ids, skip)
                    }
                    Next::End => break,
                };
            }
            let local: HashSet<String> = self
                .inner
                .mirror
                .ids(set.kind())
                .await?
                .into_iter()
                .map(|l| self.hq_id(set.kind(), &l))
                .collect();
            let gone: Vec<&String> = local.difference(&remote).collect();
            let missing: Vec<&String> = remote.difference(&local).collect();
            if !gone.is_empty() || !missing.is_empty() {
                tracing::info!(
                    set = set.name(),
                    gone = gone.len(),
                    missing = missing.len(),
                    "id reconciliation found differences"
                );
            }
            for hq in gone {
                changed += self.confirm_gone(set, hq).await?;
            }
            if missing.len() > 50 {
                let all = self.read_all(set, Query::All).await?;
                changed += self.apply(set, all, Vec::new()).await?;
            } else {
                for hq in missing {
                    changed += self.confirm_gone(set, hq).await?;
                }
            }
        }
        Ok(changed)
    }

    // ---- writes -------------------------------------------------------------------------

    async fn current(&self, id: &str) -> Result<Option<(String, Contact)>, CrmError> {
        match self.inner.mirror.read(Kind::Contact, id).await? {
            Some(Versioned {
                record: Record::Contact(c),
                version,
            }) => Ok(Some((version, c))),
            _ => Ok(None),
        }
    }

    /// True when helloHQ's copy of a contact is still the one the mirror holds: the same
    /// `UpdatedOn` and the same mapped fields (timestamps alone can collide within their
    /// precision).
    fn unchanged(&self, remote: &Value, old: &Contact) -> Result<bool, CrmError> {
        let ctx = self
            .inner
            .ctx
            .read()
            .map_err(|_| unavailable("ctx lock poisoned"))?;
        Ok(match map::from_hq(Set::ContactPersons, remote, &ctx) {
            Ok(Record::Contact(c)) => c == *old,
            _ => false,
        })
    }

    /// Writes helloHQ's answer for a contact into the mirror and returns it as stored.
    async fn adopt(&self, mut v: Value) -> Result<Versioned, CrmError> {
        strip_annotations(&mut v);
        let hq = map::id_of(&v).ok_or_else(|| unavailable("helloHQ answer without Id"))?;
        self.apply(Set::ContactPersons, vec![v], Vec::new()).await?;
        let local = self.local_id(Set::ContactPersons, &hq);
        self.inner
            .mirror
            .read(Kind::Contact, &local)
            .await?
            .ok_or_else(|| unavailable("the written contact is missing from the mirror"))
    }

    async fn fetch_contact(&self, hq: &str, wait: Duration) -> Result<Reply, Failure> {
        self.inner
            .client
            .send(
                Method::GET,
                &format!("/v1/ContactPersons({hq})?$expand=DefaultAddress"),
                None,
                None,
                wait,
            )
            .await
    }

    /// A contact as helloHQ holds it now, with its default address: what a write is
    /// confirmed against and what the mirror takes (a write answer is not whole: OData v4
    /// sends navigation properties only when `$expand`ed).
    async fn reread(&self, hq: &str) -> Result<Value, CrmError> {
        let r = self
            .fetch_contact(hq, WRITE_WAIT)
            .await
            .map_err(Failure::into_error)?;
        if r.status != 200 {
            return Err(self.refused(&r));
        }
        let mut v = r.json()?;
        strip_annotations(&mut v);
        Ok(v)
    }

    /// Makes the address `fields` for a contact person of company `cid` through the company's
    /// `Addresses` (v1 has no other resource for it; a contact person links one by
    /// `DefaultAddressId`). Returns its id.
    async fn post_address(&self, cid: i64, local: &str, fields: &Value) -> Result<i64, CrmError> {
        let mut body = serde_json::Map::new();
        if let Some(m) = fields.as_object() {
            for (k, v) in m {
                if ADDRESS_FIELDS.contains(&k.as_str()) && !v.is_null() {
                    body.insert(k.clone(), v.clone());
                }
            }
        }
        body.insert("Description".into(), Value::String(address_marker(local)));
        let sent = self
            .inner
            .client
            .send(
                Method::POST,
                &format!("/v1/Companies({cid})/Addresses"),
                Some(&Value::Object(body)),
                None,
                WRITE_WAIT,
            )
            .await
            .map_err(Failure::into_error)?;
        if sent.status != 200 && sent.status != 201 {
            return Err(self.refused(&sent));
        }
        sent.json()?
            .get("Id")
            .and_then(Value::as_i64)
            .ok_or_else(|| unavailable("helloHQ address answer without Id"))
    }

    /// Deletes an address crmgate made (best effort: a left-over address is harmless).
    async fn drop_address(&self, cid: i64, aid: i64) {
        let r = self
            .inner
            .client
            .send(
                Method::DELETE,
                &format!("/v1/Companies({cid})/Addresses({aid})"),
                None,
                None,
                WRITE_WAIT,
            )
            .await;
        if !matches!(&r, Ok(r) if matches!(r.status, 200 | 204 | 404)) {
            tracing::warn!(
                cid,
                aid,
                "could not delete an address crmgate no longer uses"
            );
        }
    }

    async fn create(&self, new: Contact) -> Result<Versioned, CrmError> {
        if self.current(new.id.as_str()).await?.is_some() {
            return Err(CrmError::AlreadyExists);
        }
        // helloHQ creates a contact person "for the company with the given CompanyId" (v2);
        // v1 keeps its e-mail and address on an address of that company. Without one there
        // is nothing to send.
        let Some(cid) = new
            .companies
            .first()
            .and_then(|c| c.as_str().parse::<i64>().ok())
        else {
            return Err(invalid(
                "companies",
                "helloHQ creates contact persons only for a company; give the contact the \
                 name of a company in your CRM scope, nothing was written",
            ));
        };
        let blank = Contact {
            id: new.id.clone(),
            subsystems: new.subsystems.clone(),
            owner: new.owner.clone(),
            extra: new.extra.clone(),
            ..Default::default()
        };
        let mut body = serde_json::json!({});
        map::contact_onto(&blank, &new, &mut body).map_err(CrmError::Invalid)?;
        let key = super::mirror::outbox_key(&body, new.owner.as_ref().map(|o| o.as_str()));
        // A create with the same content whose outcome was never learnt: look it up first.
        let outbox = &self.inner.mirror;
        if let Some(entry) = outbox.get::<OutboxEntry>(tables::OUTBOX, &key).await? {
            match self.find_created(&entry).await? {
                Some(v) => {
                    let r = self.adopt_created(v, &entry).await;
                    outbox.remove(tables::OUTBOX, &key).await?;
                    return r;
                }
                None => outbox.remove(tables::OUTBOX, &key).await?,
            }
        }
        let entry = OutboxEntry {
            body: body.clone(),
            local: new.id.as_str().to_owned(),
            owner: new.owner.as_ref().map(|o| o.as_str().to_owned()),
            subsystems: new
                .subsystems
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect(),
            since: self.inner.client.server_now() - 5,
        };
        outbox.put(tables::OUTBOX, &key, &entry).await?;
        // The address first, through its own resource; then the contact person linking it,
        // in one request (a failed link leaves only an unused address, which is removed).
        let mut wire = body.clone();
        let address = wire
            .as_object_mut()
            .and_then(|m| m.remove("DefaultAddress"))
            .filter(|a| {
                a.as_object()
                    .is_some_and(|m| m.values().any(|v| !v.is_null()))
            });
        let aid = match &address {
            Some(a) => match self.post_address(cid, &entry.local, a).await {
                Ok(aid) => Some(aid),
                Err(e) => {
                    outbox.remove(tables::OUTBOX, &key).await?;
                    return Err(e);
                }
            },
            None => None,
        };
        if let (Some(aid), Some(m)) = (aid, wire.as_object_mut()) {
            m.insert("DefaultAddressId".into(), Value::from(aid));
        }
        let sent = self
            .inner
            .client
            .send(
                Method::POST,
                "/v1/ContactPersons",
                Some(&wire),
                None,
                WRITE_WAIT,
            )
            .await;
        let outcome = match sent {
            Ok(reply) if reply.status == 200 || reply.status == 201 => {
                let answer = reply.json()?;
                let whole = match map::id_of(&answer) {
                    Some(hq) => self.reread(&hq).await.ok(),
                    None => None,
                };
                // Should the re-read fail, the answer plus the address just made is the
                // whole contact.
                let whole = whole.unwrap_or_else(|| {
                    let mut v = answer;
                    if let (Some(a), Some(m)) = (&address, v.as_object_mut()) {
                        m.insert("DefaultAddress".into(), a.clone());
                    }
                    v
                });
                self.adopt_created(whole, &entry).await
            }
            Ok(reply) => {
                if let Some(aid) = aid {
                    self.drop_address(cid, aid).await;
                }
                Err(self.refused(&reply))
            }
            Err(Failure::NotApplied(e)) => {
                if let Some(aid) = aid {
                    self.drop_address(cid, aid).await;
                }
                Err(e)
            }
            Err(Failure::Unknown(e)) => match self.find_created(&entry).await {
                Ok(Some(v)) => self.adopt_created(v, &entry).await,
                Ok(None) => Err(e),
                Err(_) => {
                    tracing::warn!(local = %entry.local, "create outcome unknown; kept in the outbox");
                    return Err(unavailable(
                        "helloHQ did not confirm the create; it is checked before any retry",
                    ));
                }
            },
        };
        outbox.remove(tables::OUTBOX, &key).await?;
        outcome
    }

    /// Looks for the contact an outbox entry created, among those created since it was sent.
    async fn find_created(&self, entry: &OutboxEntry) -> Result<Option<Value>, CrmError> {
        let filter = format!("CreatedOn ge {}", map::format_time(entry.since));
        let found = self
            .read_all(Set::ContactPersons, Query::Filter(filter))
            .await?;
        let want = {
            let ctx = self.inner.ctx.read().map_err(|_| unavailable("ctx lock"))?;
            let mut probe = entry.body.clone();
            if let Some(m) = probe.as_object_mut() {
                m.insert("Id".into(), Value::from(0));
            }
            match map::from_hq(Set::ContactPersons, &probe, &ctx) {
                Ok(Record::Contact(c)) => c,
                _ => return Ok(None),
            }
        };
        let ctx = self.inner.ctx.read().map_err(|_| unavailable("ctx lock"))?;
        let taken: HashSet<&String> = ctx.aliases.keys().collect();
        Ok(found.into_iter().find(|v| {
            map::id_of(v).is_some_and(|id| !taken.contains(&id))
                && map::contact_matches(v, &want, &Ctx::default())
        }))
    }

    async fn adopt_created(&self, v: Value, entry: &OutboxEntry) -> Result<Versioned, CrmError> {
        let hq = map::id_of(&v).ok_or_else(|| unavailable("helloHQ create answer without Id"))?;
        let alias = Alias {
            local: entry.local.clone(),
            owner: entry.owner.clone(),
            subsystems: entry.subsystems.clone(),
        };
        self.inner.mirror.put(tables::ALIAS, &hq, &alias).await?;
        if let Ok(mut m) = self.inner.hq_ids.write() {
            m.insert(entry.local.clone(), hq.clone());
        }
        if let Ok(mut ctx) = self.inner.ctx.write() {
            ctx.aliases.insert(hq, alias);
        }
        self.adopt(v).await
    }

    fn refused(&self, reply: &Reply) -> CrmError {
        match reply.status {
            404 => CrmError::NotFound,
            409 => CrmError::AlreadyExists,
            412 => CrmError::PreconditionFailed { current: None },
            400 | 422 => invalid(
                "contact",
                format!("helloHQ refused it: {}", reply.error_message()),
            ),
            s => unavailable(format!("helloHQ answered {s}: {}", reply.error_message())),
        }
    }

    /// Re-reads a contact whose stored copy is stale and reports the conflict.
    async fn stale(&self, remote: Value) -> CrmError {
        match self.adopt(remote).await {
            Ok(v) => CrmError::PreconditionFailed {
                current: Some(v.version),
            },
            Err(e) => e,
        }
    }

    /// The start of an update or delete: the mirror's copy, checked against the
    /// precondition, and helloHQ's entity as it is now, which must still be that copy
    /// (otherwise the mirror is refreshed and the write is a conflict). `None`: helloHQ no
    /// longer has it (the mirror drops it too).
    async fn fresh(&self, id: &str, pre: &Precondition) -> Result<Option<Fresh>, CrmError> {
        let Some((version, old)) = self.current(id).await? else {
            return Err(CrmError::NotFound);
        };
        if let Precondition::Version(v) = pre {
            if *v != version {
                return Err(CrmError::PreconditionFailed {
                    current: Some(version),
                });
            }
        }
        let hq = self.hq_id(Kind::Contact, id);
        let reply = self
            .fetch_contact(&hq, WRITE_WAIT)
            .await
            .map_err(Failure::into_error)?;
        if reply.status == 404 {
            let gone = vec![(Kind::Contact, id.to_owned())];
            self.apply(Set::ContactPersons, Vec::new(), gone).await?;
            return Ok(None);
        }
        if reply.status != 200 {
            return Err(self.refused(&reply));
        }
        let mut remote = reply.json()?;
        strip_annotations(&mut remote);
        if !self.unchanged(&remote, &old)? {
            return Err(self.stale(remote).await);
        }
        Ok(Some(Fresh {
            version,
            old,
            hq,
            remote,
            etag: reply.etag,
        }))
    }

    async fn update(
        &self,
        new: Contact,
        changed: &[ContactField],
        pre: Precondition,
    ) -> Result<Versioned, CrmError> {
        let Some(Fresh {
            version,
            old,
            hq,
            remote,
            ..
        }) = self.fresh(new.id.as_str(), &pre).await?
        else {
            return Err(CrmError::NotFound);
        };
        // Only the changed fields travel; the rest stays as helloHQ holds it.
        let new = old.with_fields_from(&new, changed);
        let mut body = remote.clone();
        map::contact_onto(&old, &new, &mut body).map_err(CrmError::Invalid)?;
        if body == remote {
            return Ok(Versioned {
                record: Record::Contact(old),
                version,
            });
        }
        // What is sent: the contact person's own properties. Related entities inline would be
        // ignored (OData v4 changes them through their own resources), so a changed address
        // is made through the company's `Addresses` and linked by `DefaultAddressId`.
        let mut wire = body.clone();
        let address = wire
            .as_object_mut()
            .and_then(|m| {
                for nav in ["Addresses", "Company", "CustomFields"] {
                    m.remove(nav);
                }
                m.remove("DefaultAddress")
            })
            .unwrap_or(Value::Null);
        let old_address = remote.get("DefaultAddress").cloned().unwrap_or(Value::Null);
        let cid = wire.get("CompanyId").and_then(Value::as_i64);
        let mut made = None;
        if address != old_address {
            let Some(cid) = cid else {
                return Err(invalid(
                    "emails",
                    "helloHQ keeps a contact person's e-mail, web site and postal address on an \
                     address of its company, and this contact person has none; nothing was written",
                ));
            };
            let aid = self.post_address(cid, new.id.as_str(), &address).await?;
            made = Some((cid, aid));
            if let Some(m) = wire.as_object_mut() {
                m.insert("DefaultAddressId".into(), Value::from(aid));
            }
        }
        let forget_made = |me: &Self| {
            let me = me.clone();
            async move {
                if let Some((cid, aid)) = made {
                    me.drop_address(cid, aid).await;
                }
            }
        };
        let sent = self
            .inner
            .client
            .send(
                Method::PUT,
                &format!("/v1/ContactPersons({hq})"),
                Some(&wire),
                None,
                WRITE_WAIT,
            )
            .await;
        // helloHQ's answer (not whole: no navigation properties), or the re-read that found
        // out whether a write whose answer was lost took effect.
        let (answer, reread) = match sent {
            Ok(r) if r.status == 200 || r.status == 204 => {
                let mut a = if r.status == 200 { r.json().ok() } else { None };
                if let Some(a) = a.as_mut() {
                    strip_annotations(a);
                }
                (a, None)
            }
            Ok(r) => {
                forget_made(self).await;
                return Err(self.refused(&r));
            }
            Err(Failure::NotApplied(e)) => {
                forget_made(self).await;
                return Err(e);
            }
            Err(Failure::Unknown(e)) => {
                let Ok(v) = self.reread(&hq).await else {
                    return Err(e);
                };
                if self.matches(&v, &new)? {
                    (None, Some(v))
                } else if self.unchanged(&v, &old)? {
                    forget_made(self).await;
                    return Err(e);
                } else {
                    return Err(self.stale(v).await);
                }
            }
        };
        // Confirm against a re-read: an acknowledged edit must be an applied one. Should the
        // re-read fail, helloHQ's acknowledgement stands, and the mirror takes the answer with
        // the address crmgate linked (never the answer alone, which lacks the address).
        let reread = match reread {
            Some(v) => Ok(v),
            None => self.reread(&hq).await,
        };
        let (v, confirmed) = match reread {
            Ok(v) => {
                let ok = self.matches(&v, &new)?;
                (v, ok)
            }
            Err(e) => {
                tracing::warn!(hq = %hq, error = %e, "could not re-read a contact after its update");
                let mut v = answer.unwrap_or_else(|| wire.clone());
                let mut a = address.clone();
                if let (Some((_, aid)), Some(m)) = (made, a.as_object_mut()) {
                    m.insert("Id".into(), Value::from(aid));
                }
                if let Some(m) = v.as_object_mut() {
                    m.insert("DefaultAddress".into(), a);
                }
                (v, true)
            }
        };
        let stored = self.adopt(v).await?;
        if !confirmed {
            tracing::error!(hq = %hq, "helloHQ acknowledged a contact update it did not apply");
            return Err(invalid(
                "contact",
                "helloHQ acknowledged the change but did not apply all of it; the contact \
                 shows what helloHQ holds",
            ));
        }
        // The address this contact person had, if crmgate made it for this contact and no
        // longer uses it.
        if made.is_some() {
            let old_aid = old_address.get("Id").and_then(Value::as_i64);
            let ours = old_address.get("Description").and_then(Value::as_str)
                == Some(address_marker(new.id.as_str()).as_str());
            let old_cid = remote.get("CompanyId").and_then(Value::as_i64);
            if let (Some(aid), Some(cid), true) = (old_aid, old_cid, ours) {
                self.drop_address(cid, aid).await;
            }
        }
        Ok(stored)
    }

    /// True when helloHQ's `v` holds what `want` asks for (crmgate-side data aside).
    fn matches(&self, v: &Value, want: &Contact) -> Result<bool, CrmError> {
        let ctx = self.inner.ctx.read().map_err(|_| unavailable("ctx lock"))?;
        let mut want = want.clone();
        want.extra = Default::default();
        Ok(map::contact_matches(v, &want, &ctx))
    }

    async fn remove(&self, id: &str, pre: Precondition) -> Result<(), CrmError> {
        let Some(Fresh { hq, etag, .. }) = self.fresh(id, &pre).await? else {
            return Ok(());
        };
        let gone = vec![(Kind::Contact, id.to_owned())];
        let sent = self
            .inner
            .client
            .send(
                Method::DELETE,
                &format!("/v1/ContactPersons({hq})"),
                None,
                etag.as_deref(),
                WRITE_WAIT,
            )
            .await;
        match sent {
            Ok(r) if matches!(r.status, 200 | 204 | 404) => {
                self.apply(Set::ContactPersons, Vec::new(), gone).await?;
                Ok(())
            }
            Ok(r) if r.status == 412 => {
                let again = self
                    .fetch_contact(&hq, WRITE_WAIT)
                    .await
                    .map_err(Failure::into_error)?;
                Err(self.stale(again.json()?).await)
            }
            Ok(r) => Err(self.refused(&r)),
            Err(Failure::NotApplied(e)) => Err(e),
            Err(Failure::Unknown(e)) => match self.fetch_contact(&hq, WRITE_WAIT).await {
                Ok(r) if r.status == 404 => {
                    self.apply(Set::ContactPersons, Vec::new(), gone).await?;
                    Ok(())
                }
                _ => Err(e),
            },
        }
    }

    /// Prometheus lines for `/metrics`.
    pub fn metrics_text(&self) -> String {
        let c = &self.inner.client.counters;
        let health = self.inner.client.health();
        let server_now = self.inner.client.server_now();
        let newest = self.inner.newest_change.load(Ordering::Relaxed);
        let last = self.inner.last_cycle_start.load(Ordering::Relaxed);
        let mut s = String::new();
        s.push_str("# TYPE crmgate_hellohq_loaded gauge\n");
        s.push_str(&format!(
            "crmgate_hellohq_loaded {}\n",
            self.is_loaded() as u8
        ));
        s.push_str("# TYPE crmgate_hellohq_state gauge\n");
        for h in [Health::Ok, Health::Throttled, Health::Down] {
            s.push_str(&format!(
                "crmgate_hellohq_state{{state=\"{}\"}} {}\n",
                h.as_str(),
                (h == health) as u8
            ));
        }
        for (name, v) in [
            ("requests", &c.requests),
            ("throttled", &c.throttled),
            ("failures", &c.failures),
            ("token_refreshes", &c.token_refreshes),
        ] {
            s.push_str(&format!(
                "# TYPE crmgate_hellohq_{name}_total counter\ncrmgate_hellohq_{name}_total {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
        s.push_str("# HELP crmgate_hellohq_sync_lag_seconds Every helloHQ change older than this is applied.\n");
        s.push_str("# TYPE crmgate_hellohq_sync_lag_seconds gauge\n");
        s.push_str(&format!(
            "crmgate_hellohq_sync_lag_seconds {}\n",
            if last > 0 { unix_now() - last } else { -1 }
        ));
        s.push_str("# HELP crmgate_hellohq_newest_change_age_seconds Age of the newest applied helloHQ change.\n");
        s.push_str("# TYPE crmgate_hellohq_newest_change_age_seconds gauge\n");
        s.push_str(&format!(
            "crmgate_hellohq_newest_change_age_seconds {}\n",
            if newest > 0 { server_now - newest } else { -1 }
        ));
        s.push_str(&format!(
            "# TYPE crmgate_hellohq_last_cycle_requests gauge\ncrmgate_hellohq_last_cycle_requests {}\n",
            self.inner.last_cycle_requests.load(Ordering::Relaxed)
        ));
        s
    }

    /// Load progress and the last sync error, for logs and `/readyz`.
    pub fn status(&self) -> String {
        let p = self
            .inner
            .progress
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default();
        let e = self
            .inner
            .last_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_default();
        format!("{p} {e}").trim().to_owned()
    }
}

impl CrmBackend for HelloHq {
    fn capabilities(&self) -> crate::crm::Capabilities {
        map::capabilities()
    }

    async fn changes(&self, cursor: Option<String>, max: usize) -> Result<ChangePage, CrmError> {
        let progress = || format!("initial load from helloHQ in progress ({})", self.status());
        self.inner.mirror.changes(cursor, max, progress).await
    }

    async fn get(&self, kind: Kind, id: String) -> Result<Option<Versioned>, CrmError> {
        self.inner.mirror.read(kind, &id).await
    }

    async fn put(&self, record: Record, pre: Precondition) -> Result<Versioned, CrmError> {
        let Record::Contact(c) = record else {
            return Err(invalid(
                record.kind().plural(),
                format!(
                    "with crm.backend = \"hellohq\" {}s are changed in helloHQ; crmgate writes \
                     contact persons only",
                    record.kind()
                ),
            ));
        };
        let _one_at_a_time = self.inner.writes.lock().await;
        match pre {
            Precondition::MustNotExist => self.create(c).await,
            other => self.update(c, ContactField::ALL, other).await,
        }
    }

    async fn update_contact(
        &self,
        contact: Contact,
        changed: Vec<ContactField>,
        pre: Precondition,
    ) -> Result<Versioned, CrmError> {
        let _one_at_a_time = self.inner.writes.lock().await;
        match pre {
            Precondition::MustNotExist => self.create(contact).await,
            other => self.update(contact, &changed, other).await,
        }
    }

    async fn delete(&self, kind: Kind, id: String, pre: Precondition) -> Result<(), CrmError> {
        if kind != Kind::Contact {
            return Err(invalid(
                kind.plural(),
                format!("with crm.backend = \"hellohq\" {kind}s are deleted in helloHQ"),
            ));
        }
        let _one_at_a_time = self.inner.writes.lock().await;
        self.remove(&id, pre).await
    }

    async fn sync(&self) -> Result<(), CrmError> {
        self.sync_once().await.map(|_| ())
    }

    fn metrics(&self) -> String {
        self.metrics_text()
    }
}
