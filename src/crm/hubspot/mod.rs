//! The HubSpot backend (issue 14, docs/hubspot.md): an adapter on the generic mirror
//! (`crm::mirror`). `map` turns HubSpot's records into crmgate's model and changed fields into
//! PATCH properties; `client` speaks HTTP within HubSpot's budgets and reads a portal (whole,
//! or by modification time); [`HubSpot`] keeps the mirror and writes contacts. Tested against
//! the simulator in tests/support/hubspot_sim.rs, which tests/hubspot_contract.rs pins to the
//! spec. Still to come: incremental polls and webhooks instead of a whole read per poll, the
//! outbox re-check of creates whose answer was lost.

pub mod client;
pub mod config;
pub mod map;

use crate::crm::mirror::{tables, Alias, Mirror};
use crate::crm::{Capabilities, ChangePage, CrmBackend, CrmError, Precondition, Versioned};
use crate::domain::{Contact, ContactField, Kind, Record};
use crate::store::Store;
use client::Client;
use config::HubSpotConfig;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

/// Key prefix of the mirror and its side tables.
const PREFIX: &str = "hs/";

/// The sync position kept in the store.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct SyncState {
    /// The first full read finished.
    loaded: bool,
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
    syncing: tokio::sync::Mutex<()>,
    writes: tokio::sync::Mutex<()>,
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
        let token = cfg.read_token()?;
        let client = Client::new(&cfg.base_url, &token, cfg.requests_per_10s as usize)?;
        let mirror = Mirror::open(store, PREFIX)?;
        let state: SyncState = mirror.load_state()?;
        mirror.set_loaded(state.loaded);
        let aliases: HashMap<String, Alias> = mirror.load_table(tables::ALIAS)?;
        Ok(HubSpot {
            inner: Arc::new(Inner {
                client,
                mirror,
                cfg,
                aliases: RwLock::new(aliases),
                syncing: tokio::sync::Mutex::new(()),
                writes: tokio::sync::Mutex::new(()),
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
            .aliases
            .read()
            .ok()
            .and_then(|a| {
                a.iter()
                    .find(|(_, x)| x.local == local)
                    .map(|(hs, _)| hs.clone())
            })
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

    /// Reads the whole portal and brings the mirror to it (records gone from HubSpot are
    /// removed); the first completed read makes the backend ready.
    pub async fn sync_once(&self) -> Result<usize, CrmError> {
        let _one = self.inner.syncing.lock().await;
        let records: Vec<Record> = self
            .inner
            .client
            .snapshot(&self.inner.cfg.mapping)
            .await?
            .into_iter()
            .map(|r| self.localize(r))
            .collect();
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
        if !self.inner.mirror.is_loaded() {
            self.inner
                .mirror
                .save_state(&SyncState { loaded: true })
                .await?;
            self.inner.mirror.set_loaded(true);
        }
        Ok(n)
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
        let mut props: Vec<&str> = map::CONTACT_PROPERTIES.to_vec();
        props.extend(["company", "hubspot_team_id"]);
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
        let record = map::contact(&v, &companies)
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
        let mut props = map::contact_properties(&c, ContactField::ALL);
        if let Some(stage) = &self.inner.cfg.mapping.default_lifecycle_stage {
            props.insert("lifecyclestage".into(), Value::String(stage.clone()));
        }
        props.retain(|_, v| !v.is_null());
        let associations: Vec<Value> = c
            .companies
            .iter()
            .map(|k| {
                json!({"to": {"id": k.as_str()}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279}]})
            })
            .collect();
        let (status, v) = self
            .inner
            .client
            .call(
                reqwest::Method::POST,
                "/crm/v3/objects/contacts",
                Some(&json!({"properties": props, "associations": associations})),
            )
            .await?;
        if status != 201 && status != 200 {
            return Err(Self::refused(status, &v));
        }
        let hs = v["id"]
            .as_str()
            .ok_or_else(|| unavailable("HubSpot create answer without id"))?
            .to_owned();
        let alias = Alias {
            local: c.id.as_str().to_owned(),
            owner: c.owner.as_ref().map(|o| o.as_str().to_owned()),
            subsystems: c.subsystems.iter().map(|s| s.as_str().to_owned()).collect(),
        };
        self.inner.mirror.put(tables::ALIAS, &hs, &alias).await?;
        if let Ok(mut a) = self.inner.aliases.write() {
            a.insert(hs.clone(), alias);
        }
        self.reread(&hs).await
    }
}

impl CrmBackend for HubSpot {
    async fn changes(&self, cursor: Option<String>, max: usize) -> Result<ChangePage, CrmError> {
        self.inner
            .mirror
            .changes(cursor, max, || "reading the HubSpot portal".into())
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
        // Only the changed properties travel: HubSpot updates are partial.
        let props = map::contact_properties(&contact, &changed);
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
            let Record::Contact(old) = &cur.record else {
                return Err(CrmError::NotFound);
            };
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
        map::capabilities()
    }
}
