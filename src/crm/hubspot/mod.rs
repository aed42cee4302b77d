//! The HubSpot backend (issue 14, docs/hubspot.md): an adapter on the generic mirror
//! (`crm::mirror`). `map` turns HubSpot's records into crmgate's model and changed fields into
//! PATCH properties; `client` speaks HTTP within HubSpot's budgets and reads a portal (whole,
//! or by modification time); [`HubSpot`] keeps the mirror and writes contacts. Tested against
//! the simulator in tests/support/hubspot_sim.rs, which tests/hubspot_contract.rs pins to the
//! spec. After the first whole read, polls read only what changed (search on the modification
//! time, archived lists, a scheduled association re-read, a periodic reconciliation).

pub mod client;
pub mod config;
pub mod map;
pub mod webhook;

use crate::crm::mirror::{tables, Alias, Mirror};
use crate::crm::{Capabilities, ChangePage, CrmBackend, CrmError, Precondition, Versioned};
use crate::domain::{Contact, ContactField, Kind, Record};
use crate::store::Store;
use client::Client;
use config::HubSpotConfig;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

/// Key prefix of the mirror and its side tables.
const PREFIX: &str = "hs/";

/// The sync position kept in the store.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct SyncState {
    /// The first full read finished.
    loaded: bool,
    /// Object type → HubSpot time (unix ms) the next change search starts from: the newest
    /// modification seen less the overlap (search shows changes late), or, after a whole read,
    /// the moment it began (what changed before was read by it; lists do not lag).
    #[serde(default)]
    since: BTreeMap<String, i64>,
    /// When the portal was last read whole (our clock, unix s).
    #[serde(default)]
    last_full: i64,
    /// When the associations were last read again (our clock, unix s).
    #[serde(default)]
    last_associations: i64,
    /// The first load's position while it runs (a restart resumes there).
    #[serde(default)]
    load: Option<LoadPos>,
}

/// Where the first load is: object types before `object` are read, and of that one the pages
/// before the cursor `after`.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct LoadPos {
    /// Index into `client::OBJECTS`.
    object: usize,
    after: Option<String>,
    /// HubSpot's clock when the load began.
    began: i64,
    /// Records read so far.
    done: u64,
    /// Records per object type when the load began (search's totals; for progress).
    totals: BTreeMap<String, u64>,
    /// Pages read so far (all types).
    pages: u64,
}

/// What the last syncs did, for `/metrics` and the admin.
#[derive(Clone, Debug, Default)]
pub struct SyncReport {
    /// Full reads of the portal.
    pub full_reads: u64,
    /// Incremental polls.
    pub polls: u64,
    /// Records changed in the mirror by the latest sync.
    pub last_changed: usize,
    /// The first load's progress: records read and the portal's total (companies, contacts,
    /// deals), while it runs.
    pub loading: Option<(u64, u64)>,
    /// Pages the first load read in this process (a resumed load reads only the rest).
    pub load_pages: u64,
}

/// A HubSpot portal read into a local mirror that feeds the replica; contact writes go to
/// HubSpot first (PATCH of the changed properties, POST with the company association,
/// archive) and then into the mirror.
#[derive(Clone)]
pub struct HubSpot {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    mirror: Mirror,
    cfg: HubSpotConfig,
    /// HubSpot id → crmgate's id, for contacts created through crmgate.
    aliases: RwLock<HashMap<String, Alias>>,
    /// crmgate's id → HubSpot id, the reverse of `aliases` (looked up per contact when the
    /// associations are read again).
    hs_ids: RwLock<HashMap<String, String>>,
    syncing: tokio::sync::Mutex<()>,
    writes: tokio::sync::Mutex<()>,
    state: Mutex<SyncState>,
    report: Mutex<SyncReport>,
    webhooks: Option<webhook::Receiver>,
}

fn unavailable(reason: impl Into<String>) -> CrmError {
    CrmError::Unavailable {
        retry_after: None,
        reason: reason.into(),
    }
}

impl HubSpot {
    /// Opens the backend: token, client, mirror and aliases.
    pub fn open(cfg: HubSpotConfig, store: Arc<Store>) -> Result<HubSpot, String> {
        let client = match cfg.read_oauth()? {
            Some(creds) => Client::new(&cfg.base_url, "", cfg.requests_per_10s as usize)?
                .with_oauth(crate::crm::oauth::Refresher::new(
                    "HubSpot",
                    &cfg.token_url,
                    creds,
                    crate::crm::oauth::ClientAuth::Body,
                    Some(store.clone()),
                    b"hs/refresh_token",
                )?),
            None => Client::new(
                &cfg.base_url,
                &cfg.read_token()?,
                cfg.requests_per_10s as usize,
            )?,
        }
        .with_breaker(cfg.breaker_failures, cfg.breaker_cooldown)
        .with_search_budget(cfg.searches_per_second as usize)
        .with_pages(cfg.page_size as usize, cfg.search_page_size as usize);
        let mirror = Mirror::open(store, PREFIX)?;
        let state: SyncState = mirror.load_state()?;
        mirror.set_loaded(state.loaded);
        let aliases: HashMap<String, Alias> = mirror.load_table(tables::ALIAS)?;
        let webhooks = cfg.read_webhook_secret()?.map(webhook::Receiver::new);
        Ok(HubSpot {
            inner: Arc::new(Inner {
                client,
                mirror,
                cfg,
                hs_ids: RwLock::new(
                    aliases
                        .iter()
                        .map(|(hs, a)| (a.local.clone(), hs.clone()))
                        .collect(),
                ),
                aliases: RwLock::new(aliases),
                syncing: tokio::sync::Mutex::new(()),
                writes: tokio::sync::Mutex::new(()),
                state: Mutex::new(state),
                report: Mutex::new(SyncReport::default()),
                webhooks,
            }),
        })
    }

    fn local_id(&self, hs: &str) -> String {
        self.inner
            .aliases
            .read()
            .ok()
            .and_then(|a| a.get(hs).map(|x| x.local.clone()))
            .unwrap_or_else(|| hs.to_owned())
    }

    fn hs_id(&self, local: &str) -> String {
        self.inner
            .hs_ids
            .read()
            .ok()
            .and_then(|m| m.get(local).cloned())
            .unwrap_or_else(|| local.to_owned())
    }

    /// A HubSpot record in crmgate's terms: aliased ids, the creator kept as owner.
    fn localize(&self, r: Record) -> Record {
        match r {
            Record::Contact(mut c) => {
                let hs = c.id.as_str().to_owned();
                if let Some(a) = self
                    .inner
                    .aliases
                    .read()
                    .ok()
                    .and_then(|a| a.get(&hs).cloned())
                {
                    c.id = a.local.as_str().into();
                    if c.owner.is_none() {
                        c.owner = a.owner.as_deref().map(Into::into);
                    }
                }
                c.extra.insert("hs_id".into(), Value::String(hs));
                Record::Contact(c)
            }
            Record::Lead(mut l) => {
                for c in &mut l.contacts {
                    *c = self.local_id(c.as_str()).as_str().into();
                }
                Record::Lead(l)
            }
            other => other,
        }
    }

    fn state(&self) -> SyncState {
        self.inner
            .state
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    async fn save(&self, st: SyncState) -> Result<(), CrmError> {
        self.inner.mirror.save_state(&st).await?;
        if let Ok(mut s) = self.inner.state.lock() {
            *s = st;
        }
        Ok(())
    }

    /// The webhook receiver, when webhooks are on.
    pub fn webhooks(&self) -> Option<&webhook::Receiver> {
        self.inner.webhooks.as_ref()
    }

    /// The public URL webhooks are signed for, if configured.
    pub fn webhook_url(&self) -> Option<&str> {
        self.inner.cfg.webhook_url.as_deref()
    }

    /// Reads the records webhook events named and brings the mirror to what HubSpot says
    /// now: a record HubSpot no longer has (archived, deleted) leaves the mirror; the others
    /// are written with their associations. Returns how many records changed.
    pub async fn confirm(&self, targets: Vec<webhook::Target>) -> Result<usize, CrmError> {
        // Taken for the reads too: a poll that read a record before this read must not
        // write its older copy after this one.
        let _one = self.inner.syncing.lock().await;
        let m = &self.inner.cfg.mapping;
        let client = &self.inner.client;
        let mut records = Vec::new();
        let mut deletes = Vec::new();
        // Records a created or restored record is associated with are read too: their
        // associations were read while it did not exist.
        let mut more: Vec<(&str, String)> = Vec::new();
        for (object, next) in [
            ("companies", Some("contacts")),
            ("contacts", Some("deals")),
            ("deals", None),
        ] {
            let mut ids: Vec<String> = targets
                .iter()
                .filter(|(o, _, _)| *o == object)
                .map(|(_, id, _)| id.clone())
                .chain(
                    more.iter()
                        .filter(|(o, _)| *o == object)
                        .map(|(_, id)| id.clone()),
                )
                .collect();
            ids.sort();
            ids.dedup();
            if ids.is_empty() {
                continue;
            }
            let props = client::Client::properties(object, m);
            let rows = client.batch_read(object, &ids, &props).await?;
            let found: HashSet<&str> = rows.iter().filter_map(|r| r["id"].as_str()).collect();
            let kind = match object {
                "companies" => Kind::Company,
                "contacts" => Kind::Contact,
                _ => Kind::Lead,
            };
            for id in ids.iter().filter(|i| !found.contains(i.as_str())) {
                deletes.push((kind, self.local_id(id)));
            }
            if let Some(next) = next {
                let cascading: Vec<String> = targets
                    .iter()
                    .filter(|(o, id, c)| *o == object && *c && found.contains(id.as_str()))
                    .map(|(_, id, _)| id.clone())
                    .collect();
                if !cascading.is_empty() {
                    let linked = client.associations(object, next, &cascading).await?;
                    more.extend(linked.into_values().flatten().map(|id| (next, id)));
                }
            }
            records.extend(client.records(object, &rows, m).await?);
        }
        let records: Vec<Record> = records.into_iter().map(|r| self.localize(r)).collect();
        self.inner.mirror.apply(records, deletes).await
    }

    /// What the syncs so far did.
    pub fn report(&self) -> SyncReport {
        self.inner
            .report
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// The client's counters.
    pub fn stats(&self) -> &client::Stats {
        &self.inner.client.stats
    }

    /// One sync: the whole portal when nothing is loaded yet or the reconciliation is due,
    /// otherwise a poll (owners, records changed since the last one, archived records, and
    /// associations when their re-read is due). Returns how many records changed.
    pub async fn sync_once(&self) -> Result<usize, CrmError> {
        let _one = self.inner.syncing.lock().await;
        let st = self.state();
        let now = crate::domain::time::unix_now();
        let due =
            now.saturating_sub(st.last_full) >= self.inner.cfg.reconcile_interval.as_secs() as i64;
        let n = if !self.inner.mirror.is_loaded() {
            self.first_load(st, now).await?
        } else if due {
            self.full_read(st, now).await?
        } else {
            self.poll(st, now).await?
        };
        if let Ok(mut r) = self.inner.report.lock() {
            r.last_changed = n;
        }
        Ok(n)
    }

    /// The first load: owners, then companies, contacts and deals page by page (each page
    /// written to the mirror with its associations, the position saved after it, so a restart
    /// resumes at the next page); ready when complete.
    async fn first_load(&self, mut st: SyncState, now: i64) -> Result<usize, CrmError> {
        let m = &self.inner.cfg.mapping;
        let client = &self.inner.client;
        let mut n = 0;
        let mut pos = match st.load.take() {
            Some(p) => p,
            None => {
                let people = client.people().await?;
                let began = client.server_ms();
                let mut totals = BTreeMap::new();
                for object in client::OBJECTS {
                    totals.insert(object.to_owned(), client.count(object).await?);
                }
                n += self.inner.mirror.apply(people, Vec::new()).await?;
                LoadPos {
                    began,
                    totals,
                    ..LoadPos::default()
                }
            }
        };
        let total: u64 = pos.totals.values().sum();
        while let Some(object) = client::OBJECTS.get(pos.object).copied() {
            let props = client::Client::properties(object, m);
            let (rows, next) = client
                .list_page(object, &props, pos.after.as_deref())
                .await?;
            let records: Vec<Record> = client
                .records(object, &rows, m)
                .await?
                .into_iter()
                .map(|r| self.localize(r))
                .collect();
            n += self.inner.mirror.apply(records, Vec::new()).await?;
            pos.done += rows.len() as u64;
            pos.pages += 1;
            match next {
                Some(a) => pos.after = Some(a),
                None => {
                    pos.object += 1;
                    pos.after = None;
                }
            }
            st.load = Some(pos.clone());
            self.save(st.clone()).await?;
            if let Ok(mut r) = self.inner.report.lock() {
                r.loading = Some((pos.done, total.max(pos.done)));
                r.load_pages += 1;
            }
        }
        for object in client::OBJECTS {
            st.since.insert(object.to_owned(), pos.began);
        }
        st.load = None;
        st.loaded = true;
        st.last_full = now;
        st.last_associations = now;
        self.save(st).await?;
        self.inner.mirror.set_loaded(true);
        if let Ok(mut r) = self.inner.report.lock() {
            r.loading = None;
            r.full_reads += 1;
        }
        Ok(n)
    }

    /// Reads the whole portal and brings the mirror to it (records gone from HubSpot are
    /// removed): the reconciliation.
    async fn full_read(&self, mut st: SyncState, now: i64) -> Result<usize, CrmError> {
        let (records, began) = self.inner.client.snapshot(&self.inner.cfg.mapping).await?;
        let records: Vec<Record> = records.into_iter().map(|r| self.localize(r)).collect();
        let present: HashSet<(Kind, String)> = records
            .iter()
            .map(|r| (r.kind(), r.id().to_owned()))
            .collect();
        let mut deletes = Vec::new();
        for kind in [
            Kind::Subsystem,
            Kind::User,
            Kind::Company,
            Kind::Contact,
            Kind::Lead,
        ] {
            for id in self.inner.mirror.ids(kind).await? {
                if !present.contains(&(kind, id.clone())) {
                    deletes.push((kind, id));
                }
            }
        }
        let n = self.inner.mirror.apply(records, deletes).await?;
        // Changes from the moment the read began are searched for afterwards (a record
        // changed while the read ran may have been read before its change).
        for object in client::OBJECTS {
            let e = st.since.entry(object.to_owned()).or_insert(began);
            *e = began.max(*e);
        }
        st.loaded = true;
        st.last_full = now;
        st.last_associations = now;
        self.save(st).await?;
        self.inner.mirror.set_loaded(true);
        if let Ok(mut r) = self.inner.report.lock() {
            r.full_reads += 1;
        }
        Ok(n)
    }

    /// A poll: owners and teams (a few pages), then per object type the records modified
    /// since the last poll (HubSpot's search, ascending on the modification time, from the
    /// newest time seen less the overlap that covers search lag), the archived ones, and the
    /// associations when their re-read is due.
    async fn poll(&self, mut st: SyncState, now: i64) -> Result<usize, CrmError> {
        let m = &self.inner.cfg.mapping;
        let client = &self.inner.client;
        let people = client.people().await?;
        let mut deletes = Vec::new();
        for kind in [Kind::Subsystem, Kind::User] {
            let present: HashSet<&str> = people
                .iter()
                .filter(|r| r.kind() == kind)
                .map(Record::id)
                .collect();
            for id in self.inner.mirror.ids(kind).await? {
                if !present.contains(id.as_str()) {
                    deletes.push((kind, id));
                }
            }
        }
        let mut records = people;
        let overlap = self.inner.cfg.overlap.as_millis() as i64;
        let mut newest = BTreeMap::new();
        for object in client::OBJECTS {
            let since = st.since.get(object).copied().unwrap_or(0);
            let props = client::Client::properties(object, m);
            let (rows, seen) = client.modified_since(object, since, &props).await?;
            // The same record may come twice (at a search restart): keep its last row.
            let mut last: HashMap<&str, &Value> = HashMap::new();
            for r in &rows {
                if let Some(id) = r["id"].as_str() {
                    last.insert(id, r);
                }
            }
            let rows: Vec<Value> = last.into_values().cloned().collect();
            records.extend(client.records(object, &rows, m).await?);
            newest.insert(object, seen.saturating_sub(overlap).max(since));
            let kind = match object {
                "companies" => Kind::Company,
                "contacts" => Kind::Contact,
                _ => Kind::Lead,
            };
            for hs in client.archived_ids(object).await? {
                deletes.push((kind, self.local_id(&hs)));
            }
        }
        if now.saturating_sub(st.last_associations)
            >= self.inner.cfg.associations_interval.as_secs() as i64
        {
            records.extend(self.associations_changed().await?);
            st.last_associations = now;
        }
        let records: Vec<Record> = records.into_iter().map(|r| self.localize(r)).collect();
        // An archived record that came back (restored) is live again.
        let live: HashSet<(Kind, &str)> = records.iter().map(|r| (r.kind(), r.id())).collect();
        deletes.retain(|(k, id)| !live.contains(&(*k, id.as_str())));
        let n = self.inner.mirror.apply(records, deletes).await?;
        for (object, t) in newest {
            st.since.insert(object.to_owned(), t);
        }
        self.save(st).await?;
        if let Ok(mut r) = self.inner.report.lock() {
            r.polls += 1;
        }
        Ok(n)
    }

    /// Contacts and deals of the mirror whose associations changed in HubSpot (association
    /// edits need not move a record's modification time), with their new associations.
    async fn associations_changed(&self) -> Result<Vec<Record>, CrmError> {
        let client = &self.inner.client;
        let mut out = Vec::new();
        let contacts = self.inner.mirror.ids(Kind::Contact).await?;
        let hs: Vec<String> = contacts.iter().map(|c| self.hs_id(c)).collect();
        let now = client.associations("contacts", "companies", &hs).await?;
        let mut stored = Vec::with_capacity(contacts.len());
        for chunk in contacts.chunks(1000) {
            stored.extend(
                self.inner
                    .mirror
                    .read_many(Kind::Contact, chunk.to_vec())
                    .await?,
            );
        }
        for (v, hs) in stored.into_iter().zip(&hs) {
            let Some(Versioned {
                record: Record::Contact(mut c),
                ..
            }) = v
            else {
                continue;
            };
            let mut want: Vec<crate::domain::CompanyId> = now
                .get(hs)
                .map(|v| v.iter().map(|s| s.as_str().into()).collect())
                .unwrap_or_default();
            want.sort();
            let mut have = c.companies.clone();
            have.sort();
            if want != have {
                c.companies = want;
                c.id = hs.as_str().into();
                out.push(Record::Contact(c));
            }
        }
        let deals = self.inner.mirror.ids(Kind::Lead).await?;
        let to_contacts = client.associations("deals", "contacts", &deals).await?;
        let to_companies = client.associations("deals", "companies", &deals).await?;
        let stored = self
            .inner
            .mirror
            .read_many(Kind::Lead, deals.clone())
            .await?;
        for (id, v) in deals.iter().zip(stored) {
            let Some(Versioned {
                record: Record::Lead(mut l),
                ..
            }) = v
            else {
                continue;
            };
            let contacts: Vec<crate::domain::ContactId> = to_contacts
                .get(id)
                .map(|v| v.iter().map(|s| s.as_str().into()).collect())
                .unwrap_or_default();
            let company = to_companies
                .get(id)
                .and_then(|v| v.first())
                .map(|s| s.as_str().into());
            // The mirror holds crmgate's ids; compare in HubSpot's.
            let have: Vec<String> = l.contacts.iter().map(|c| self.hs_id(c.as_str())).collect();
            let want: Vec<String> = contacts.iter().map(|c| c.as_str().to_owned()).collect();
            if have != want || l.company != company {
                l.contacts = contacts;
                l.company = company;
                out.push(Record::Lead(l));
            }
        }
        Ok(out)
    }

    async fn check(&self, id: &str, pre: &Precondition) -> Result<Option<Versioned>, CrmError> {
        let cur = self.inner.mirror.read(Kind::Contact, id).await?;
        match (pre, &cur) {
            (Precondition::MustNotExist, Some(_)) => Err(CrmError::AlreadyExists),
            (Precondition::MustExist | Precondition::Version(_), None) => Err(CrmError::NotFound),
            (Precondition::Version(v), Some(c)) if *v != c.version => {
                Err(CrmError::PreconditionFailed {
                    current: Some(c.version.clone()),
                })
            }
            _ => Ok(cur),
        }
    }

    /// Reads one contact back from HubSpot into the mirror.
    async fn reread(&self, hs: &str) -> Result<Versioned, CrmError> {
        let props = client::Client::properties("contacts", &self.inner.cfg.mapping);
        let (status, v) = self
            .inner
            .client
            .call(
                reqwest::Method::GET,
                &format!(
                    "/crm/v3/objects/contacts/{hs}?properties={}",
                    props.join(",")
                ),
                None,
            )
            .await?;
        if status == 404 {
            return Err(CrmError::NotFound);
        }
        if status != 200 {
            return Err(unavailable(format!(
                "HubSpot read of contact {hs}: {status}"
            )));
        }
        let companies = self
            .inner
            .client
            .associations("contacts", "companies", &[hs.to_owned()])
            .await?
            .remove(hs)
            .unwrap_or_default();
        let record = map::contact(&v, &companies, &self.inner.cfg.mapping)
            .map(|c| self.localize(Record::Contact(c)))
            .ok_or_else(|| unavailable("HubSpot answered a contact without id"))?;
        let id = record.id().to_owned();
        self.inner.mirror.apply(vec![record], Vec::new()).await?;
        self.inner
            .mirror
            .read(Kind::Contact, &id)
            .await?
            .ok_or(CrmError::NotFound)
    }

    fn refused(status: u16, v: &Value) -> CrmError {
        let message = v["message"].as_str().unwrap_or("").to_owned();
        match status {
            404 => CrmError::NotFound,
            409 => CrmError::AlreadyExists,
            400 | 422 => CrmError::Invalid(vec![crate::domain::dataset::Problem {
                path: "contact".into(),
                message: format!("HubSpot refused it: {message}"),
            }]),
            s => unavailable(format!("HubSpot answered {s}: {message}")),
        }
    }

    async fn associate_company(&self, hs: &str, company: &str) -> Result<(), CrmError> {
        let (status, v) = self
            .inner
            .client
            .call(
                reqwest::Method::PUT,
                &format!("/crm/v4/objects/contacts/{hs}/associations/default/companies/{company}"),
                None,
            )
            .await?;
        if status >= 300 {
            return Err(Self::refused(status, &v));
        }
        Ok(())
    }

    async fn create(&self, c: Contact) -> Result<Versioned, CrmError> {
        self.check(c.id.as_str(), &Precondition::MustNotExist)
            .await?;
        let mut props = map::contact_properties(&c, ContactField::ALL, &self.inner.cfg.mapping);
        if let Some(stage) = &self.inner.cfg.mapping.default_lifecycle_stage {
            props.insert("lifecyclestage".into(), Value::String(stage.clone()));
        }
        props.retain(|_, v| !v.is_null());
        let valid_email = props
            .get("email")
            .and_then(Value::as_str)
            .is_some_and(|e| crate::domain::dataset::check_email(e).is_ok());
        if self.inner.cfg.require_email && !valid_email {
            return Err(CrmError::Invalid(vec![crate::domain::dataset::Problem {
                path: "emails".into(),
                message: "crm.hubspot.require_email: a contact needs a valid e-mail address to be created in HubSpot".into(),
            }]));
        }
        let associations: Vec<Value> = c
            .companies
            .iter()
            .map(|k| {
                json!({"to": {"id": k.as_str()}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279}]})
            })
            .collect();
        let body = json!({"properties": props, "associations": associations});
        let owner = c.owner.as_ref().map(|o| o.as_str().to_owned());
        let key = crate::crm::mirror::outbox_key(&body, owner.as_deref());
        let outbox = &self.inner.mirror;
        // A create with the same content whose outcome was never learnt: look it up first.
        if let Some(entry) = outbox.get::<OutboxEntry>(tables::OUTBOX, &key).await? {
            match self.find_created(&entry).await? {
                Found::Yes(hs) => {
                    let r = self.adopt(&hs, &entry).await;
                    if r.is_ok() {
                        outbox.remove(tables::OUTBOX, &key).await?;
                    }
                    return r;
                }
                Found::NotYet => {
                    return Err(CrmError::Unavailable {
                        retry_after: Some(std::time::Duration::from_secs(10)),
                        reason: "an earlier attempt at this create is not confirmed by HubSpot yet; it is checked before anything is sent again".into(),
                    })
                }
                Found::No => outbox.remove(tables::OUTBOX, &key).await?,
            }
        }
        let entry = OutboxEntry {
            email: props
                .get("email")
                .and_then(Value::as_str)
                .map(str::to_owned),
            properties: props.clone(),
            local: c.id.as_str().to_owned(),
            owner,
            subsystems: c.subsystems.iter().map(|s| s.as_str().to_owned()).collect(),
            since_ms: self.inner.client.server_ms().saturating_sub(60_000),
            at: crate::domain::time::unix_now(),
        };
        outbox.put(tables::OUTBOX, &key, &entry).await?;
        // Once HubSpot has the contact, the entry stays until it is adopted: should the
        // adoption fail (the read back), the next attempt finds the contact instead of
        // sending it again.
        let adopted = |r: Result<Versioned, CrmError>| async {
            if r.is_ok() {
                outbox.remove(tables::OUTBOX, &key).await?;
            }
            r
        };
        let outcome = match self
            .inner
            .client
            .send_once(reqwest::Method::POST, "/crm/v3/objects/contacts", &body)
            .await
        {
            client::Sent::Answer(200 | 201, v) => match v["id"].as_str() {
                Some(hs) => return adopted(self.adopt(hs, &entry).await).await,
                None => Err(unavailable("HubSpot create answer without id")),
            },
            client::Sent::Answer(status, v) => Err(Self::refused(status, &v)),
            client::Sent::NotApplied(e) => Err(e),
            client::Sent::Unknown(e) => match self.find_created(&entry).await {
                Ok(Found::Yes(hs)) => return adopted(self.adopt(&hs, &entry).await).await,
                Ok(Found::No) => Err(e),
                Ok(Found::NotYet) | Err(_) => {
                    tracing::warn!(local = %entry.local, "HubSpot create outcome unknown; kept in the outbox");
                    return Err(unavailable(
                        "HubSpot did not confirm the create; it is checked before any retry",
                    ));
                }
            },
        };
        outbox.remove(tables::OUTBOX, &key).await?;
        outcome
    }

    /// Looks for the contact an unconfirmed create made. With an e-mail address, HubSpot's
    /// lookup by the `email` property answers at once (addresses are unique among a portal's
    /// contacts); without one, search for contacts created since the attempt with the same
    /// properties, and while the attempt is younger than search's lag, say "not yet".
    async fn find_created(&self, entry: &OutboxEntry) -> Result<Found, CrmError> {
        let taken = |hs: &str| {
            self.inner
                .aliases
                .read()
                .map(|a| a.get(hs).is_some_and(|x| x.local != entry.local))
                .unwrap_or(true)
        };
        // HubSpot may normalise what it stores (e-mail case): compare without case.
        let same = |v: &Value| {
            entry.properties.iter().all(|(k, want)| {
                match (
                    v["properties"].get(k).and_then(Value::as_str),
                    want.as_str(),
                ) {
                    (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                    _ => false,
                }
            })
        };
        let created_since = |v: &Value| {
            v["createdAt"]
                .as_str()
                .and_then(client::parse_time_ms)
                .is_some_and(|t| t >= entry.since_ms)
        };
        let props: Vec<&str> = entry.properties.keys().map(String::as_str).collect();
        if let Some(email) = &entry.email {
            let (status, v) = self
                .inner
                .client
                .call(
                    reqwest::Method::GET,
                    &format!(
                        "/crm/v3/objects/contacts/{}?idProperty=email&properties={}",
                        crate::http::percent_encode(email),
                        props.join(",")
                    ),
                    None,
                )
                .await?;
            return Ok(match (status, v["id"].as_str()) {
                (200, Some(hs)) if !taken(hs) && created_since(&v) => Found::Yes(hs.to_owned()),
                (200, _) | (404, _) => Found::No,
                (s, _) => return Err(unavailable(format!("HubSpot lookup by e-mail: {s}"))),
            });
        }
        let mut filters = vec![
            json!({"propertyName": "createdate", "operator": "GTE", "value": entry.since_ms.to_string()}),
        ];
        for k in ["firstname", "lastname"] {
            if let Some(Value::String(x)) = entry.properties.get(k) {
                filters.push(json!({"propertyName": k, "operator": "EQ", "value": x}));
            }
        }
        let (status, v) = self
            .inner
            .client
            .call(
                reqwest::Method::POST,
                "/crm/v3/objects/contacts/search",
                Some(&json!({"filterGroups": [{"filters": filters}], "properties": props, "limit": 100})),
            )
            .await?;
        if status != 200 {
            return Err(unavailable(format!("HubSpot search: {status}")));
        }
        let hit = v["results"].as_array().into_iter().flatten().find_map(|r| {
            let hs = r["id"].as_str()?;
            (!taken(hs) && same(r)).then(|| hs.to_owned())
        });
        let young = crate::domain::time::unix_now().saturating_sub(entry.at)
            < self.inner.cfg.overlap.as_secs() as i64;
        Ok(match hit {
            Some(hs) => Found::Yes(hs),
            None if young => Found::NotYet,
            None => Found::No,
        })
    }

    /// Takes a contact HubSpot created for crmgate: crmgate's id kept through an alias,
    /// then read back with its associations.
    async fn adopt(&self, hs: &str, entry: &OutboxEntry) -> Result<Versioned, CrmError> {
        let alias = Alias {
            local: entry.local.clone(),
            owner: entry.owner.clone(),
            subsystems: entry.subsystems.clone(),
        };
        self.inner.mirror.put(tables::ALIAS, hs, &alias).await?;
        if let Ok(mut m) = self.inner.hs_ids.write() {
            m.insert(alias.local.clone(), hs.to_owned());
        }
        if let Ok(mut a) = self.inner.aliases.write() {
            a.insert(hs.to_owned(), alias);
        }
        self.reread(hs).await
    }
}

/// A create sent to HubSpot whose outcome is not known yet.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct OutboxEntry {
    properties: serde_json::Map<String, Value>,
    email: Option<String>,
    local: String,
    owner: Option<String>,
    subsystems: Vec<String>,
    /// HubSpot time a minute before the attempt (unix ms), for the search.
    since_ms: i64,
    /// When it was first sent (our clock, unix s).
    at: i64,
}

/// Whether an unconfirmed create was found.
enum Found {
    Yes(String),
    No,
    NotYet,
}

impl CrmBackend for HubSpot {
    async fn changes(&self, cursor: Option<String>, max: usize) -> Result<ChangePage, CrmError> {
        let report = self.report();
        self.inner
            .mirror
            .changes(cursor, max, || match report.loading {
                Some((done, total)) => format!(
                    "reading the HubSpot portal: {done} of {total} records ({} %)",
                    done * 100 / total.max(1)
                ),
                None => "reading the HubSpot portal".into(),
            })
            .await
    }

    async fn get(&self, kind: Kind, id: String) -> Result<Option<Versioned>, CrmError> {
        self.inner.mirror.read(kind, &id).await
    }

    async fn put(&self, record: Record, pre: Precondition) -> Result<Versioned, CrmError> {
        let Record::Contact(c) = record else {
            return Err(CrmError::Invalid(vec![crate::domain::dataset::Problem {
                path: record.kind().plural().into(),
                message: format!(
                    "with crm.backend = \"hubspot\" {}s are changed in HubSpot; crmgate writes contacts only",
                    record.kind()
                ),
            }]));
        };
        let _one = self.inner.writes.lock().await;
        match pre {
            Precondition::MustNotExist => self.create(c).await,
            other => {
                drop(_one);
                self.update_contact(c, ContactField::ALL.to_vec(), other)
                    .await
            }
        }
    }

    async fn update_contact(
        &self,
        contact: Contact,
        changed: Vec<ContactField>,
        pre: Precondition,
    ) -> Result<Versioned, CrmError> {
        let _one = self.inner.writes.lock().await;
        if pre == Precondition::MustNotExist {
            return self.create(contact).await;
        }
        let Some(cur) = self.check(contact.id.as_str(), &pre).await? else {
            return Err(CrmError::NotFound);
        };
        let hs = self.hs_id(contact.id.as_str());
        // Only the changed properties travel: HubSpot updates are partial. A changed field
        // spans several properties (phones: phone, mobilephone, fax); those whose value
        // stays are left out.
        let Record::Contact(old) = &cur.record else {
            return Err(CrmError::NotFound);
        };
        let m = &self.inner.cfg.mapping;
        let before = map::contact_properties(old, &changed, m);
        let mut props = map::contact_properties(&contact, &changed, m);
        props.retain(|k, v| before.get(k) != Some(v));
        if !props.is_empty() {
            let (status, v) = self
                .inner
                .client
                .call(
                    reqwest::Method::PATCH,
                    &format!("/crm/v3/objects/contacts/{hs}"),
                    Some(&json!({"properties": props})),
                )
                .await?;
            if status != 200 {
                return Err(Self::refused(status, &v));
            }
        }
        if changed.contains(&ContactField::Companies) {
            for k in contact
                .companies
                .iter()
                .filter(|k| !old.companies.contains(k))
            {
                self.associate_company(&hs, k.as_str()).await?;
            }
        }
        self.reread(&hs).await
    }

    async fn delete(&self, kind: Kind, id: String, pre: Precondition) -> Result<(), CrmError> {
        if kind != Kind::Contact {
            return Err(CrmError::Invalid(vec![crate::domain::dataset::Problem {
                path: kind.plural().into(),
                message: format!("with crm.backend = \"hubspot\" {kind}s are deleted in HubSpot"),
            }]));
        }
        let _one = self.inner.writes.lock().await;
        self.check(&id, &pre).await?;
        let hs = self.hs_id(&id);
        let (status, v) = self
            .inner
            .client
            .call(
                reqwest::Method::DELETE,
                &format!("/crm/v3/objects/contacts/{hs}"),
                None,
            )
            .await?;
        if status != 204 && status != 200 && status != 404 {
            return Err(Self::refused(status, &v));
        }
        self.inner
            .mirror
            .apply(Vec::new(), vec![(Kind::Contact, id)])
            .await?;
        Ok(())
    }

    async fn sync(&self) -> Result<(), CrmError> {
        self.sync_once().await.map(|_| ())
    }

    fn capabilities(&self) -> Capabilities {
        map::capabilities(&self.inner.cfg.mapping)
    }

    fn metrics(&self) -> String {
        use std::fmt::Write;
        use std::sync::atomic::Ordering::Relaxed;
        let c = self.stats();
        let r = self.report();
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# TYPE crmgate_hubspot_loaded gauge\ncrmgate_hubspot_loaded {}\n\
             # TYPE crmgate_hubspot_breaker_open gauge\ncrmgate_hubspot_breaker_open {}",
            self.inner.mirror.is_loaded() as u8,
            self.inner.client.breaker_open() as u8
        );
        for (name, v) in [
            ("requests", c.requests.load(Relaxed)),
            ("throttled", c.throttled.load(Relaxed)),
            ("daily_limit_hits", c.daily_exhausted.load(Relaxed)),
            ("failures", c.failures.load(Relaxed)),
            ("token_refreshes", c.token_refreshes.load(Relaxed)),
            ("full_reads", r.full_reads),
            ("polls", r.polls),
        ] {
            let _ = writeln!(
                s,
                "# TYPE crmgate_hubspot_{name}_total counter\ncrmgate_hubspot_{name}_total {v}"
            );
        }
        // The daily limit resets at midnight in the portal's time zone, which crmgate does
        // not know: "exhausted" means a daily-limit answer within the last hour.
        let at = c.daily_exhausted_at.load(Relaxed);
        let exhausted = at > 0 && crate::domain::time::unix_now() - at < 3600;
        let (done, total) = r.loading.unwrap_or((0, 0));
        let _ = writeln!(
            s,
            "# TYPE crmgate_hubspot_load_records gauge\ncrmgate_hubspot_load_records {done}\n\
             # TYPE crmgate_hubspot_load_total gauge\ncrmgate_hubspot_load_total {total}"
        );
        let _ = writeln!(
            s,
            "# TYPE crmgate_hubspot_daily_limit_exhausted gauge\ncrmgate_hubspot_daily_limit_exhausted {}",
            exhausted as u8
        );
        s
    }
}
