//! In-memory store for tests: a BTreeMap behind a lock.

use super::{Op, ScanFn, StoreError};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::RwLock;

/// A map in memory; `apply` is atomic under one lock.
#[derive(Default)]
pub struct MemStore {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

fn poisoned() -> StoreError {
    StoreError::Engine("memory store lock poisoned".into())
}

impl MemStore {
    pub(super) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.map.read().map_err(|_| poisoned())?.get(key).cloned())
    }

    pub(super) fn scan(
        &self,
        start: &[u8],
        end: Bound<&[u8]>,
        f: &mut ScanFn<'_>,
    ) -> Result<(), StoreError> {
        let map = self.map.read().map_err(|_| poisoned())?;
        let end = end.map(|e| e.to_vec());
        for (k, v) in map.range((Bound::Included(start.to_vec()), end)) {
            if !f(k, v)? {
                break;
            }
        }
        Ok(())
    }

    pub(super) fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let mut map = self.map.write().map_err(|_| poisoned())?;
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    map.insert(k, v);
                }
                Op::Delete(k) => {
                    map.remove(&k);
                }
            }
        }
        Ok(())
    }

    pub(super) fn size_on_disk(&self) -> u64 {
        0
    }
}
