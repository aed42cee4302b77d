//! The sled backend. Batches go through `apply_batch` (atomic) and are followed by `flush`
//! (durable), so an acknowledged write survives a kill.

use super::{Op, ScanFn, StoreError};
use std::ops::Bound;
use std::path::Path;

/// sled database in a directory.
pub struct SledStore {
    db: sled::Db,
}

fn engine(e: sled::Error) -> StoreError {
    StoreError::Engine(e.to_string())
}

impl SledStore {
    pub(super) fn open(dir: &Path) -> Result<SledStore, StoreError> {
        let db = sled::Config::new()
            .path(dir.join("db"))
            .cache_capacity(128 * 1024 * 1024)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(engine)?;
        Ok(SledStore { db })
    }

    pub(super) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(key).map_err(engine)?.map(|v| v.to_vec()))
    }

    pub(super) fn scan(
        &self,
        start: &[u8],
        end: Bound<&[u8]>,
        f: &mut ScanFn<'_>,
    ) -> Result<(), StoreError> {
        let range = (Bound::Included(start), end);
        for item in self.db.range::<&[u8], _>(range) {
            let (k, v) = item.map_err(engine)?;
            if !f(&k, &v)? {
                break;
            }
        }
        Ok(())
    }

    pub(super) fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for op in ops {
            match op {
                Op::Put(k, v) => batch.insert(k, v),
                Op::Delete(k) => batch.remove(k),
            }
        }
        self.db.apply_batch(batch).map_err(engine)?;
        self.db.flush().map_err(engine)?;
        Ok(())
    }

    pub(super) fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}
