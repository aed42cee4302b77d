//! The reusable part of a remote-CRM backend: the remote CRM read into a local mirror, the
//! replica fed from the mirror, and durable side tables the adapter keeps next to it (the
//! sync position, ids of records crmgate created, an outbox of writes whose outcome is not
//! known yet). A backend for a remote CRM (helloHQ, next HubSpot) is an adapter on top: HTTP,
//! mapping to crmgate's records, and its own sync schedule.
//!
//! Everything that touches the store runs on the blocking pool, never on an async worker.

use super::{ChangePage, CrmError, EmbeddedCrm, Versioned};
use crate::domain::{Kind, Record};
use crate::store::{KvStore, Op, Store, StoreError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A record crmgate created in the remote CRM: the id clients know it by, and what only
/// crmgate keeps about it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Alias {
    /// crmgate's id of the record.
    pub local: String,
    /// The user who created it (keeps it in their My folder).
    pub owner: Option<String>,
    /// The creator's subsystems at the time (for CRMs whose contacts have none of their own).
    #[serde(default)]
    pub subsystems: Vec<String>,
}

/// The outbox key of a create: a digest of the body sent and its creator, so that the same
/// create sent again (a client retrying) finds the entry of the attempt whose outcome was lost.
pub fn outbox_key(body: &serde_json::Value, owner: Option<&str>) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(body.to_string().as_bytes());
    h.update(owner.unwrap_or("").as_bytes());
    h.finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A local mirror of a remote CRM with its side tables, under one key prefix of the store.
pub struct Mirror {
    local: EmbeddedCrm,
    store: Arc<Store>,
    /// Key prefix of the side tables, e.g. `hq/`.
    prefix: String,
    loaded: AtomicBool,
}

fn unavailable(reason: impl Into<String>) -> CrmError {
    CrmError::Unavailable {
        retry_after: Some(Duration::from_secs(5)),
        reason: reason.into(),
    }
}

fn corrupt(key: &[u8], e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        msg: e.to_string(),
    }
}

impl Mirror {
    /// Opens the mirror in `store`; its side tables live under `prefix` (`hq/` for helloHQ).
    pub fn open(store: Arc<Store>, prefix: &str) -> Result<Mirror, String> {
        let local = EmbeddedCrm::open(store.clone()).map_err(|e| e.to_string())?;
        Ok(Mirror {
            local,
            store,
            prefix: prefix.to_owned(),
            loaded: AtomicBool::new(false),
        })
    }

    /// The local copy (for reads that must not wait for the blocking pool at start-up).
    pub fn local(&self) -> &EmbeddedCrm {
        &self.local
    }

    fn key(&self, table: &str, id: &str) -> Vec<u8> {
        format!("{}{table}{id}", self.prefix).into_bytes()
    }

    // ---- the mirror ----------------------------------------------------------------------

    /// True once the first full load from the remote CRM is complete.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Marks the first full load complete (or not).
    pub fn set_loaded(&self, loaded: bool) {
        self.loaded.store(loaded, Ordering::Release);
    }

    /// Writes records read from the remote CRM into the mirror and drops deleted ones;
    /// returns how many changed (unchanged records are not logged again).
    pub async fn apply(
        &self,
        records: Vec<Record>,
        deletes: Vec<(Kind, String)>,
    ) -> Result<usize, CrmError> {
        let local = self.local.clone();
        tokio::task::spawn_blocking(move || local.mirror_blocking(records, &deletes))
            .await
            .map_err(|e| unavailable(format!("worker failed: {e}")))?
    }

    /// A record of the mirror.
    pub async fn read(&self, kind: Kind, id: &str) -> Result<Option<Versioned>, CrmError> {
        let (local, id) = (self.local.clone(), id.to_owned());
        tokio::task::spawn_blocking(move || local.read_blocking(kind, &id))
            .await
            .map_err(|e| unavailable(format!("worker failed: {e}")))?
    }

    /// Records of the mirror, one blocking task for all of them (for reads of thousands).
    pub async fn read_many(
        &self,
        kind: Kind,
        ids: Vec<String>,
    ) -> Result<Vec<Option<Versioned>>, CrmError> {
        let local = self.local.clone();
        tokio::task::spawn_blocking(move || {
            ids.iter()
                .map(|id| local.read_blocking(kind, id))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| unavailable(format!("worker failed: {e}")))?
    }

    /// Every id of `kind` in the mirror.
    pub async fn ids(&self, kind: Kind) -> Result<Vec<String>, CrmError> {
        let local = self.local.clone();
        tokio::task::spawn_blocking(move || local.ids_blocking(kind))
            .await
            .map_err(|e| unavailable(format!("worker failed: {e}")))?
    }

    /// The change feed the replica reads: the mirror's own, once the first load is complete
    /// (before that a retryable error saying `progress`).
    pub async fn changes(
        &self,
        cursor: Option<String>,
        max: usize,
        progress: impl FnOnce() -> String,
    ) -> Result<ChangePage, CrmError> {
        if !self.is_loaded() {
            return Err(CrmError::Unavailable {
                retry_after: Some(Duration::from_secs(5)),
                reason: progress(),
            });
        }
        super::CrmBackend::changes(&self.local, cursor, max).await
    }

    // ---- side tables -------------------------------------------------------------------

    /// Writes entries of side tables (`(table, id, value)`; `None` deletes) in one durable
    /// batch.
    pub async fn write<T: Serialize>(
        &self,
        entries: Vec<(&str, &str, Option<&T>)>,
    ) -> Result<(), CrmError> {
        let mut ops = Vec::with_capacity(entries.len());
        for (table, id, value) in entries {
            let key = self.key(table, id);
            ops.push(match value {
                Some(v) => Op::Put(
                    key,
                    serde_json::to_vec(v).map_err(|e| unavailable(e.to_string()))?,
                ),
                None => Op::Delete(key),
            });
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.apply(ops))
            .await
            .map_err(|e| unavailable(format!("worker failed: {e}")))?
            .map_err(CrmError::Store)
    }

    /// Writes one entry of a side table.
    pub async fn put<T: Serialize>(
        &self,
        table: &str,
        id: &str,
        value: &T,
    ) -> Result<(), CrmError> {
        self.write(vec![(table, id, Some(value))]).await
    }

    /// Deletes one entry of a side table.
    pub async fn remove(&self, table: &str, id: &str) -> Result<(), CrmError> {
        self.write::<()>(vec![(table, id, None)]).await
    }

    /// One entry of a side table (`None` also when it cannot be decoded: it is then logged).
    pub async fn get<T: DeserializeOwned + Send + 'static>(
        &self,
        table: &str,
        id: &str,
    ) -> Result<Option<T>, CrmError> {
        let key = self.key(table, id);
        let store = self.store.clone();
        let bytes = tokio::task::spawn_blocking(move || store.get(&key))
            .await
            .map_err(|e| unavailable(format!("worker failed: {e}")))?
            .map_err(CrmError::Store)?;
        Ok(bytes.and_then(|b| match serde_json::from_slice(&b) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(table, id, error = %e, "undecodable side-table entry ignored");
                None
            }
        }))
    }

    /// A whole side table (at start-up, before serving).
    pub fn load_table<T: DeserializeOwned>(
        &self,
        table: &str,
    ) -> Result<HashMap<String, T>, String> {
        let prefix = format!("{}{table}", self.prefix);
        let mut out = HashMap::new();
        self.store
            .scan_prefix(prefix.as_bytes(), &mut |k, v| {
                let id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                out.insert(id, serde_json::from_slice(v).map_err(|e| corrupt(k, e))?);
                Ok(true)
            })
            .map_err(|e| e.to_string())?;
        Ok(out)
    }

    /// The adapter's persisted sync position (the default when none is stored).
    pub fn load_state<T: DeserializeOwned + Default>(&self) -> Result<T, String> {
        let key = format!("{}state", self.prefix);
        match self.store.get(key.as_bytes()).map_err(|e| e.to_string())? {
            Some(b) => serde_json::from_slice(&b).map_err(|e| format!("{key}: {e}")),
            None => Ok(T::default()),
        }
    }

    /// Persists the adapter's sync position (durable before it returns).
    pub async fn save_state<T: Serialize>(&self, state: &T) -> Result<(), CrmError> {
        let key = format!("{}state", self.prefix).into_bytes();
        let bytes = serde_json::to_vec(state).map_err(|e| unavailable(e.to_string()))?;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.put(&key, &bytes))
            .await
            .map_err(|e| unavailable(format!("worker failed: {e}")))?
            .map_err(CrmError::Store)
    }
}

/// The side tables every remote-CRM backend keeps.
pub mod tables {
    /// Aliases of records crmgate created, by remote id ([`super::Alias`]).
    pub const ALIAS: &str = "alias/";
    /// Creates whose outcome is not known yet, by content digest.
    pub const OUTBOX: &str = "outbox/";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Subsystem, SubsystemId};

    #[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
    struct State {
        page: u32,
    }

    #[tokio::test]
    async fn side_tables_state_and_feed_survive_a_reopen() {
        let store = Arc::new(Store::memory());
        let m = Mirror::open(store.clone(), "t/").expect("open");
        // Not loaded: the feed is a retryable error naming the progress.
        match m.changes(None, 10, || "page 3 of 7".into()).await {
            Err(CrmError::Unavailable { reason, .. }) => assert_eq!(reason, "page 3 of 7"),
            other => panic!("{other:?}"),
        }
        let alias = Alias {
            local: "c-local".into(),
            owner: Some("u1".into()),
            subsystems: vec![],
        };
        m.put(tables::ALIAS, "17", &alias).await.expect("put");
        m.put(tables::OUTBOX, "ab12", &"pending")
            .await
            .expect("put");
        m.remove(tables::OUTBOX, "ab12").await.expect("remove");
        m.save_state(&State { page: 3 }).await.expect("state");
        let sub = Record::Subsystem(Subsystem {
            id: SubsystemId::from("s1"),
            name: "North".into(),
            extra: Default::default(),
        });
        assert_eq!(m.apply(vec![sub.clone()], vec![]).await.expect("apply"), 1);
        assert_eq!(
            m.apply(vec![sub], vec![]).await.expect("apply"),
            0,
            "unchanged"
        );
        m.set_loaded(true);
        let page = m.changes(None, 10, String::new).await.expect("feed");
        assert_eq!(page.changes.len(), 1);

        let again = Mirror::open(store, "t/").expect("reopen");
        let aliases: HashMap<String, Alias> = again.load_table(tables::ALIAS).expect("aliases");
        assert_eq!(aliases.get("17"), Some(&alias));
        let outbox: HashMap<String, String> = again.load_table(tables::OUTBOX).expect("outbox");
        assert!(outbox.is_empty());
        assert_eq!(
            again.load_state::<State>().expect("state"),
            State { page: 3 }
        );
        assert!(again
            .read(Kind::Subsystem, "s1")
            .await
            .expect("read")
            .is_some());
        assert!(
            !again.is_loaded(),
            "the adapter decides when its load is complete"
        );
    }
}
