//! The write service every producer of writes calls (EWS, Graph, the admin API; next CardDAV
//! and the mailbox mirror): a planned write is executed against the CRM under the plan's
//! precondition, the replica catches up, the attempt is audited, and the result comes back as
//! a [`WriteError`] the caller renders in its protocol's terms. A write that lost a race against
//! another writer of the same contact is planned again by the caller's planner and retried.
//!
//! Protocol-neutral: no face types here, and no CRM error leaves this module.

use super::write::{Plan, Planned, WriteError};
use crate::auth::Principal;
use crate::crm::{Crm, CrmBackend, CrmError, Precondition, Versioned};
use crate::domain::{Kind, Record};
use crate::replica::Replica;
use crate::store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

/// How often a write that lost a race against another writer of the same contact is planned
/// and tried again before the client hears of a conflict.
pub const REPLAN_ATTEMPTS: u32 = 32;

/// Why a write through [`Writer::commit`] was not done.
#[derive(Debug)]
pub enum Failed<E> {
    /// The caller's planner refused it (on a re-plan after a lost race).
    Plan(E),
    /// The write path refused it, or the CRM did.
    Write(WriteError),
}

/// Executes planned writes. Cheap to share (`Arc`).
pub struct Writer {
    crm: Crm,
    replica: Arc<Replica>,
    store: Arc<Store>,
    audit_seq: AtomicU64,
    writes: AtomicU64,
    /// One lock per contact being written, so crmgate's own writers of one contact take
    /// turns (in arrival order) instead of losing races to each other.
    contact_locks: std::sync::Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
    /// Re-plans after lost races, and the longest run of them one write needed.
    replans: AtomicU64,
    longest_streak: AtomicU64,
}

impl Writer {
    /// A writer over these shared handles.
    pub fn new(crm: Crm, replica: Arc<Replica>, store: Arc<Store>) -> Writer {
        Writer {
            crm,
            replica,
            store,
            audit_seq: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            contact_locks: std::sync::Mutex::new(HashMap::new()),
            replans: AtomicU64::new(0),
            longest_streak: AtomicU64::new(0),
        }
    }

    /// Re-plans after lost races since start.
    pub fn replans(&self) -> u64 {
        self.replans.load(Ordering::Relaxed)
    }

    /// The most re-plans one write needed since start.
    pub fn longest_replan_streak(&self) -> u64 {
        self.longest_streak.load(Ordering::Relaxed)
    }

    /// The write lock of contact `id` (dropped from the table once nobody holds it).
    fn contact_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.contact_locks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = m.get(id).and_then(Weak::upgrade) {
            return l;
        }
        if m.len() >= 1024 {
            m.retain(|_, w| w.strong_count() > 0);
        }
        let l = Arc::new(tokio::sync::Mutex::new(()));
        m.insert(id.to_owned(), Arc::downgrade(&l));
        l
    }

    /// CRM writes done since start.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Executes `first`, the plan of one item; when it loses a race against another writer
    /// (the CRM version moved between planning and writing), the replica learns of the other
    /// write and `replan` plans the same client request again against it, up to
    /// [`REPLAN_ATTEMPTS`] times. The plan is what checks the client's own precondition (its
    /// change key, If-Match, conflict mode), so planning again answers exactly what the
    /// client asked for. `planned` reads the plan out of the caller's type.
    pub async fn commit<T, E>(
        &self,
        who: &Principal,
        op: &str,
        first: T,
        planned: impl Fn(&T) -> &Planned,
        mut replan: impl FnMut() -> Result<T, Failed<E>>,
    ) -> Result<T, Failed<E>> {
        let mut current = first;
        let mut attempt = 0;
        // crmgate's writers of one contact take turns: a write waits for the one before it,
        // so it loses a race only to writers outside crmgate (and, having lost, re-plans and
        // writes while still holding its turn).
        let lock = self.contact_lock(&planned(&current).contact_id);
        let _turn = lock.lock().await;
        loop {
            let p = planned(&current);
            match self.run(who, op, p).await {
                Ok(()) => return Ok(current),
                Err(e) if is_race(&e, p) && attempt < REPLAN_ATTEMPTS => {
                    attempt += 1;
                    self.replans.fetch_add(1, Ordering::Relaxed);
                    self.longest_streak
                        .fetch_max(u64::from(attempt), Ordering::Relaxed);
                    if let Err(e) = self.replica.catch_up(&self.crm).await {
                        tracing::warn!(error = %e, "replica catch-up before a re-plan failed");
                    }
                    current = replan()?;
                }
                Err(e) => return Err(Failed::Write(WriteError::from_crm(&e))),
            }
        }
    }

    /// The CRM first (under the plan's precondition), then the replica catches up;
    /// acknowledged only when both are done. Every attempt is audited.
    async fn run(&self, who: &Principal, op: &str, planned: &Planned) -> Result<(), CrmError> {
        let result = match &planned.plan {
            Plan::Nothing => Ok(()),
            Plan::Hide => {
                let (replica, user, contact) = (
                    self.replica.clone(),
                    planned.user.clone(),
                    planned.contact_id.clone(),
                );
                match tokio::task::spawn_blocking(move || replica.hide(&user, &contact)).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(internal(e)),
                    Err(e) => Err(internal(e)),
                }
            }
            Plan::Create { record } => self
                .write_record(
                    Record::Contact((**record).clone()),
                    Precondition::MustNotExist,
                )
                .await
                .map(|_| ()),
            Plan::Update {
                record,
                changed,
                version,
            } => {
                let pre = Precondition::Version(version.clone());
                self.crm
                    .update_contact((**record).clone(), changed.clone(), pre)
                    .await?;
                self.writes.fetch_add(1, Ordering::Relaxed);
                self.replica
                    .catch_up(&self.crm)
                    .await
                    .map(|_| ())
                    .map_err(internal)
            }
            Plan::Delete { version } => {
                let pre = Precondition::Version(version.clone());
                self.delete_record(Kind::Contact, &planned.contact_id, pre)
                    .await
            }
        };
        let outcome = match &result {
            Ok(()) => "ok".to_owned(),
            Err(CrmError::Unavailable { .. }) => "crm-unavailable".to_owned(),
            Err(CrmError::PreconditionFailed { .. }) => "conflict".to_owned(),
            Err(e) => format!("error: {e}"),
        };
        let action = match &planned.plan {
            Plan::Nothing => "none",
            Plan::Hide => "hide",
            Plan::Create { .. } => "create",
            Plan::Update { .. } => "update",
            Plan::Delete { .. } => "delete",
        };
        let fields: Vec<String> = planned.fields.iter().map(|f| f.to_string()).collect();
        if let Err(e) = self
            .audit(who, op, action, &planned.contact_id, &fields, &outcome)
            .await
        {
            tracing::error!(error = %e, "audit log write failed");
        }
        result
    }

    /// Stores a whole record through the CRM; acknowledged once the CRM stored it and the
    /// replica applied it (the admin API's writes, and every planned put).
    pub async fn write_record(
        &self,
        record: Record,
        pre: Precondition,
    ) -> Result<Versioned, CrmError> {
        let v = self.crm.put(record, pre).await?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.replica.catch_up(&self.crm).await.map_err(internal)?;
        Ok(v)
    }

    /// Deletes a record through the CRM; acknowledged once the replica applied it.
    pub async fn delete_record(
        &self,
        kind: Kind,
        id: &str,
        pre: Precondition,
    ) -> Result<(), CrmError> {
        self.crm.delete(kind, id.to_owned(), pre).await?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.replica.catch_up(&self.crm).await.map_err(internal)?;
        Ok(())
    }

    /// Appends an audit record, durable before it returns (the store write runs on the
    /// blocking pool).
    pub async fn audit(
        &self,
        who: &Principal,
        op: &str,
        action: &str,
        contact: &str,
        fields: &[String],
        outcome: &str,
    ) -> Result<(), StoreError> {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0);
        let n = self.audit_seq.fetch_add(1, Ordering::Relaxed);
        let rec = serde_json::json!({
            "at_us": at as u64, "user": who.login, "op": op, "action": action,
            "contact": contact, "fields": fields, "result": outcome,
        });
        let key = format!("audit/{at:020}-{n:06}").into_bytes();
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.put(&key, rec.to_string().as_bytes()))
            .await
            .map_err(|e| StoreError::Engine(format!("audit worker failed: {e}")))?
    }

    /// The newest audit records, newest last.
    pub fn audit_tail(&self, limit: usize) -> Result<Vec<serde_json::Value>, StoreError> {
        let mut all = Vec::new();
        self.store.scan_prefix(b"audit/", &mut |_, v| {
            if let Ok(j) = serde_json::from_slice(v) {
                all.push(j);
            }
            Ok(true)
        })?;
        let skip = all.len().saturating_sub(limit);
        Ok(all.split_off(skip))
    }
}

/// True when an update or delete lost a race against another writer of the same contact.
fn is_race(e: &CrmError, planned: &Planned) -> bool {
    matches!(e, CrmError::PreconditionFailed { .. })
        && matches!(planned.plan, Plan::Update { .. } | Plan::Delete { .. })
}

/// A local failure on the write path (the replica, a worker): an internal error.
fn internal(e: impl std::fmt::Display) -> CrmError {
    CrmError::Store(StoreError::Engine(format!("write path: {e}")))
}
