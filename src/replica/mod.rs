//! The replica: crmgate's local copy of the CRM, the folder engine over it, and their
//! persistence. Reads never call the CRM; they take a read lock on the engine.
//!
//! Keys: `rep/r/{kind}/{id}` (`{"v":version,"r":record}`), `rep/l/{seq:020}` (a
//! [`LogRecord`]), `rep/cursor` (the CRM feed cursor). A batch of CRM changes, its log entries
//! and the new cursor are written in one atomic, flushed store batch, under the engine's write
//! lock, so a sequence number is never shown to a reader before it is durable.
//!
//! May import domain, store and crm.

pub mod engine;
mod intern;

pub use engine::{Applied, Engine, Explanation, ItemChange, LogRecord, MyEvent};

use crate::crm::{Change, CrmBackend, CrmError, Versioned};
use crate::domain::rules::FolderRules;
use crate::domain::{Kind, Record};
use crate::store::{KvStore, Op, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

const CURSOR_KEY: &[u8] = b"rep/cursor";
/// Feed page size when catching up with the CRM.
const PAGE: usize = 10_000;

/// A replica failure.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// Local storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The CRM failed.
    #[error(transparent)]
    Crm(#[from] CrmError),
    /// A lock was poisoned by a panic.
    #[error("replica lock poisoned")]
    Poisoned,
}

#[derive(Serialize, Deserialize)]
struct StoredRecord {
    v: String,
    r: Value,
}

fn corrupt(key: &[u8], e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        msg: e.to_string(),
    }
}

/// Figures of a load, for logs and benchmarks.
#[derive(Clone, Debug, Default)]
pub struct LoadStats {
    /// Records loaded.
    pub records: usize,
    /// Log entries replayed.
    pub log_entries: usize,
    /// New entries written by reconciliation.
    pub new_entries: usize,
}

/// The replica.
pub struct Replica {
    engine: RwLock<Engine>,
    store: Arc<Store>,
    /// The CRM feed cursor; the mutex also serialises catch-ups.
    cursor: tokio::sync::Mutex<Option<String>>,
    ready: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl Replica {
    /// Opens the replica persisted in `store` (empty if none), replays its log, loads its
    /// records and reconciles them under `rules`.
    pub fn open(
        store: Arc<Store>,
        rules: FolderRules,
    ) -> Result<(Replica, LoadStats), ReplicaError> {
        let mut engine = Engine::new(rules);
        let mut stats = LoadStats::default();
        store.scan_prefix(b"rep/l/", &mut |k, v| {
            let rec: LogRecord = serde_json::from_slice(v).map_err(|e| corrupt(k, e))?;
            engine.replay(&rec);
            stats.log_entries += 1;
            Ok(true)
        })?;
        let mut changes = Vec::new();
        store.scan_prefix(b"rep/r/", &mut |k, v| {
            let key = std::str::from_utf8(k).map_err(|e| corrupt(k, e))?;
            let kind = key
                .split('/')
                .nth(2)
                .and_then(Kind::from_plural)
                .ok_or_else(|| corrupt(k, "unknown kind"))?;
            let s: StoredRecord = serde_json::from_slice(v).map_err(|e| corrupt(k, e))?;
            let record =
                Record::from_json(kind, &s.r).map_err(|(p, m)| corrupt(k, format!("{p}: {m}")))?;
            changes.push(Change::Upsert(Versioned {
                record,
                version: s.v,
            }));
            Ok(true)
        })?;
        stats.records = changes.len();
        let applied = engine.load(&changes);
        stats.new_entries = applied.log.len();
        if !applied.log.is_empty() {
            store.apply(log_ops(&applied.log)?)?;
        }
        let cursor = store
            .get(CURSOR_KEY)?
            .map(|v| String::from_utf8_lossy(&v).into_owned());
        let ready = cursor.is_some();
        Ok((
            Replica {
                engine: RwLock::new(engine),
                store,
                cursor: tokio::sync::Mutex::new(cursor),
                ready: AtomicBool::new(ready),
                last_error: Mutex::new(None),
            },
            stats,
        ))
    }

    /// A read view of the engine. Do not hold it across an `.await`.
    pub fn read(&self) -> Result<RwLockReadGuard<'_, Engine>, ReplicaError> {
        self.engine.read().map_err(|_| ReplicaError::Poisoned)
    }

    fn write(&self) -> Result<RwLockWriteGuard<'_, Engine>, ReplicaError> {
        self.engine.write().map_err(|_| ReplicaError::Poisoned)
    }

    /// True once the first full load from the CRM is done.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The last catch-up error, if the last catch-up failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// Applies CRM changes and persists them with their log entries and the new cursor, all
    /// in one durable batch, before any reader can see the new state.
    pub fn apply(&self, changes: &[Change], cursor: Option<&str>) -> Result<Applied, ReplicaError> {
        let mut engine = self.write()?;
        let applied = engine.apply(changes);
        let mut ops = log_ops(&applied.log)?;
        for ch in changes {
            match ch {
                Change::Upsert(v) => {
                    let body = serde_json::to_vec(&StoredRecord {
                        v: v.version.clone(),
                        r: v.record.to_json(),
                    })
                    .map_err(|e| corrupt(b"rep/r", e))?;
                    ops.push(Op::Put(rec_key(v.record.kind(), v.record.id()), body));
                }
                Change::Deleted(kind, id) => ops.push(Op::Delete(rec_key(*kind, id))),
            }
        }
        if let Some(c) = cursor {
            ops.push(Op::Put(CURSOR_KEY.to_vec(), c.as_bytes().to_vec()));
        }
        if let Err(e) = self.store.apply(ops) {
            // The in-memory engine is ahead of the store now; nothing was acknowledged, so
            // rebuild it from the store rather than serve state that may vanish on restart.
            drop(engine);
            self.reload()?;
            return Err(e.into());
        }
        Ok(applied)
    }

    fn reload(&self) -> Result<(), ReplicaError> {
        let rules = self.read()?.rules().clone();
        let (fresh, _) = Replica::open(self.store.clone(), rules)?;
        let engine = fresh
            .engine
            .into_inner()
            .map_err(|_| ReplicaError::Poisoned)?;
        *self.write()? = engine;
        Ok(())
    }

    /// Pulls every change from the CRM since the last cursor and applies it. The first call
    /// on an empty replica is the initial load: it gathers the whole feed and applies it in
    /// one batch, and only then is the replica ready.
    pub async fn catch_up<C: CrmBackend>(&self, crm: &C) -> Result<usize, ReplicaError> {
        let mut cursor = self.cursor.lock().await;
        let result = self.catch_up_locked(crm, &mut cursor).await;
        if let Ok(mut e) = self.last_error.lock() {
            *e = result.as_ref().err().map(|e| e.to_string());
        }
        result
    }

    async fn catch_up_locked<C: CrmBackend>(
        &self,
        crm: &C,
        cursor: &mut Option<String>,
    ) -> Result<usize, ReplicaError> {
        let initial = cursor.is_none();
        let mut total = 0;
        let mut pending: Vec<Change> = Vec::new();
        loop {
            let page = crm.changes(cursor.clone(), PAGE).await?;
            total += page.changes.len();
            if initial {
                pending.extend(page.changes);
                if !page.more {
                    self.apply_blocking(std::mem::take(&mut pending), page.next.clone())
                        .await?;
                }
            } else if !page.changes.is_empty() || cursor.as_deref() != Some(&page.next) {
                self.apply_blocking(page.changes, page.next.clone()).await?;
            }
            *cursor = Some(page.next);
            if !page.more {
                break;
            }
        }
        self.ready.store(true, Ordering::Release);
        Ok(total)
    }

    async fn apply_blocking(&self, changes: Vec<Change>, next: String) -> Result<(), ReplicaError> {
        // The flush blocks; keep it off the async workers.
        tokio::task::block_in_place(|| self.apply(&changes, Some(&next)).map(|_| ()))
    }
}

fn rec_key(kind: Kind, id: &str) -> Vec<u8> {
    format!("rep/r/{}/{}", kind.plural(), id).into_bytes()
}

fn log_ops(log: &[LogRecord]) -> Result<Vec<Op>, StoreError> {
    log.iter()
        .map(|r| {
            let body = serde_json::to_vec(r).map_err(|e| corrupt(b"rep/l", e))?;
            Ok(Op::Put(format!("rep/l/{:020}", r.seq()).into_bytes(), body))
        })
        .collect()
}
