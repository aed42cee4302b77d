//! The redb backend: one table, one write transaction per `apply`, committed durably (redb's
//! commit fsyncs), so an acknowledged write survives a kill.

use super::{Op, ScanFn, StoreError};
use redb::{Database, TableDefinition};
use std::ops::Bound;
use std::path::Path;

const KV: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("kv");

/// redb database file in a directory.
pub struct RedbStore {
    db: Database,
    path: std::path::PathBuf,
}

fn engine(e: impl std::fmt::Display) -> StoreError {
    StoreError::Engine(e.to_string())
}

impl RedbStore {
    pub(super) fn open(dir: &Path) -> Result<RedbStore, StoreError> {
        let path = dir.join("crmgate.redb");
        // redb's default cache is 1 GiB; crmgate keeps its working set in the replica, so the
        // store needs little.
        let db = redb::Builder::new()
            .set_cache_size(64 << 20)
            .create(&path)
            .map_err(engine)?;
        // Make sure the table exists, so readers never see "no such table".
        let tx = db.begin_write().map_err(engine)?;
        tx.open_table(KV).map_err(engine)?;
        tx.commit().map_err(engine)?;
        Ok(RedbStore { db, path })
    }

    pub(super) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(engine)?;
        let t = tx.open_table(KV).map_err(engine)?;
        Ok(t.get(key).map_err(engine)?.map(|v| v.value().to_vec()))
    }

    pub(super) fn scan(
        &self,
        start: &[u8],
        end: Bound<&[u8]>,
        f: &mut ScanFn<'_>,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_read().map_err(engine)?;
        let t = tx.open_table(KV).map_err(engine)?;
        let range = t
            .range::<&[u8]>((Bound::Included(start), end))
            .map_err(engine)?;
        for item in range {
            let (k, v) = item.map_err(engine)?;
            if !f(k.value(), v.value())? {
                break;
            }
        }
        Ok(())
    }

    pub(super) fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(engine)?;
        {
            let mut t = tx.open_table(KV).map_err(engine)?;
            for op in &ops {
                match op {
                    Op::Put(k, v) => {
                        t.insert(k.as_slice(), v.as_slice()).map_err(engine)?;
                    }
                    Op::Delete(k) => {
                        t.remove(k.as_slice()).map_err(engine)?;
                    }
                }
            }
        }
        tx.commit().map_err(engine)
    }

    pub(super) fn size_on_disk(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }
}
