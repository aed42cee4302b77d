//! The replica: crmgate's in-memory copy of the CRM, the folder engine over it, and the
//! persisted change log that makes sync history survive restarts.
//!
//! Keys: `rep/l/{first_seq:020}` → a JSON array of the [`LogRecord`]s of one applied batch.
//! A batch's entries are written in one atomic, flushed store write under the engine's write
//! lock, so a sequence number is never shown to a reader before it is durable.
//!
//! Records are not stored twice: at start-up the replica replays its log and then loads the
//! CRM's full feed (for the embedded CRM a sequential scan of the local store); the engine
//! reconciles that snapshot against the log, so whatever changed while crmgate was down (or a
//! rule changed in the config) gets entries. Remote backends that cannot afford a full load
//! on every start will persist records here as well (helloHQ issue).
//!
//! May import domain, store and crm.

pub mod engine;
mod intern;
#[cfg(test)]
mod rules_tests;

pub use engine::{Applied, Engine, Explanation, ItemChange, LogRecord, MyEvent};

use crate::crm::{Change, CrmBackend, CrmError};
use crate::domain::rules::FolderRules;
use crate::store::{KvStore, Op, Store, StoreError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

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

fn corrupt(key: &[u8], e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        msg: e.to_string(),
    }
}

/// Figures of the log replay at open.
#[derive(Clone, Debug, Default)]
pub struct LoadStats {
    /// Log entries replayed.
    pub log_entries: usize,
    /// Milliseconds spent.
    pub ms: u64,
}

/// The replica.
pub struct Replica {
    engine: RwLock<Engine>,
    store: Arc<Store>,
    /// The CRM feed cursor of this process (`None` until the first full load); the mutex
    /// also serialises catch-ups.
    cursor: tokio::sync::Mutex<Option<String>>,
    ready: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// The engine's sequence after every change, for those who follow it (the mailbox mirror).
    changed: tokio::sync::watch::Sender<u64>,
}

impl Replica {
    /// Opens the replica persisted in `store`: replays its log. It is ready after the first
    /// [`Replica::catch_up`].
    pub fn open(
        store: Arc<Store>,
        rules: FolderRules,
    ) -> Result<(Replica, LoadStats), ReplicaError> {
        let t = Instant::now();
        let mut engine = Engine::new(rules);
        let mut stats = LoadStats::default();
        store.scan_prefix(b"rep/l/", &mut |k, v| {
            let batch: Vec<LogRecord> = serde_json::from_slice(v).map_err(|e| corrupt(k, e))?;
            for rec in &batch {
                engine.replay(rec);
            }
            stats.log_entries += batch.len();
            Ok(true)
        })?;
        stats.ms = t.elapsed().as_millis() as u64;
        Ok((
            Replica {
                engine: RwLock::new(engine),
                store,
                cursor: tokio::sync::Mutex::new(None),
                ready: AtomicBool::new(false),
                last_error: Mutex::new(None),
                changed: tokio::sync::watch::Sender::new(0),
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

    /// A receiver that sees the engine's sequence move with every change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// True once the first full load from the CRM is done.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The last catch-up error, if the last catch-up failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// Applies CRM changes (`full`: a whole snapshot, reconciled against the log) and persists
    /// the log entries they produce in one durable write before any reader can see them.
    pub fn apply(&self, changes: Vec<Change>, full: bool) -> Result<Applied, ReplicaError> {
        let t = Instant::now();
        let mut engine = self.write()?;
        let applied = if full {
            engine.load(changes)
        } else {
            engine.apply(changes)
        };
        let engine_ms = t.elapsed().as_millis() as u64;
        if let Some(first) = applied.log.first() {
            let body = serde_json::to_vec(&applied.log).map_err(|e| corrupt(b"rep/l", e))?;
            let key = format!("rep/l/{:020}", first.seq()).into_bytes();
            if let Err(e) = self.store.apply(vec![Op::Put(key, body)]) {
                // The engine is ahead of the store now and nothing was acknowledged: rebuild
                // it from the store rather than serve state that could vanish on restart.
                drop(engine);
                self.reset()?;
                return Err(e.into());
            }
        }
        if !applied.log.is_empty() {
            self.changed.send_replace(engine.seq());
        }
        tracing::debug!(
            entries = applied.log.len(),
            engine_ms,
            total_ms = t.elapsed().as_millis() as u64,
            "replica batch"
        );
        Ok(applied)
    }

    fn reset(&self) -> Result<(), ReplicaError> {
        let rules = self.read()?.rules().clone();
        let (fresh, _) = Replica::open(self.store.clone(), rules)?;
        let engine = fresh
            .engine
            .into_inner()
            .map_err(|_| ReplicaError::Poisoned)?;
        *self.write()? = engine;
        self.ready.store(false, Ordering::Release);
        Ok(())
    }

    /// Hides a contact from one user's folders, durably (delete policy `hide`). Returns false
    /// when it was hidden already.
    pub fn hide(&self, user: &str, contact: &str) -> Result<bool, ReplicaError> {
        let mut engine = self.write()?;
        let (Some(u), Some(c)) = (engine.find_user(user), engine.find_contact(contact)) else {
            return Ok(false);
        };
        let Some(rec) = engine.hide(u, c) else {
            return Ok(false);
        };
        let body = serde_json::to_vec(&vec![rec.clone()]).map_err(|e| corrupt(b"rep/l", e))?;
        let key = format!("rep/l/{:020}", rec.seq()).into_bytes();
        if let Err(e) = self.store.apply(vec![Op::Put(key, body)]) {
            drop(engine);
            self.reset()?;
            return Err(e.into());
        }
        self.changed.send_replace(engine.seq());
        Ok(true)
    }

    /// Loads a full snapshot the caller already holds (the embedded CRM's seed) as the first
    /// load, with the feed cursor that follows it; the replica is ready afterwards.
    pub fn prime(&self, snapshot: Vec<Change>, cursor: String) -> Result<Applied, ReplicaError> {
        let mut guard = self.cursor.try_lock().map_err(|_| {
            ReplicaError::Crm(CrmError::Unavailable {
                retry_after: None,
                reason: "replica is busy loading".into(),
            })
        })?;
        let applied = self.apply(snapshot, true)?;
        *guard = Some(cursor);
        self.ready.store(true, Ordering::Release);
        self.changed.send_modify(|_| {});
        Ok(applied)
    }

    /// Pulls every change from the CRM since the last cursor and applies it. The first call
    /// loads the CRM's whole feed as one snapshot; only then is the replica ready.
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
        let full = cursor.is_none();
        let t = Instant::now();
        let mut total = 0;
        let mut pending: Vec<Change> = Vec::new();
        let mut next = cursor.clone();
        loop {
            let page = crm.changes(next.clone(), PAGE).await?;
            total += page.changes.len();
            next = Some(page.next);
            if full {
                pending.extend(page.changes);
            } else if !page.changes.is_empty() {
                if let Err(e) = tokio::task::block_in_place(|| self.apply(page.changes, false)) {
                    // The engine was reset to the store; load the CRM in full next time.
                    *cursor = None;
                    return Err(e);
                }
                *cursor = next.clone();
            }
            if !page.more {
                break;
            }
        }
        if full {
            let n = pending.len();
            // block_in_place: the flush blocks, keep it off the async workers (multi-thread
            // runtime required, as everywhere in crmgate).
            let applied = tokio::task::block_in_place(|| self.apply(pending, true))?;
            tracing::info!(
                records = n,
                new_entries = applied.log.len(),
                ms = t.elapsed().as_millis() as u64,
                "replica loaded the CRM"
            );
        }
        *cursor = next;
        self.ready.store(true, Ordering::Release);
        self.changed.send_modify(|_| {});
        Ok(total)
    }
}
