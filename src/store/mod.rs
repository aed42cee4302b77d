//! Durable key-value storage behind a narrow trait: redb or sled on disk, an in-memory map for
//! tests. Every `apply` is atomic and flushed before it returns, so what a caller
//! acknowledges survives a kill.
//!
//! May import domain ids and sled; nothing above it.

mod memory;
mod redb_store;
mod sled_store;

pub use memory::MemStore;
pub use redb_store::RedbStore;
pub use sled_store::SledStore;

use std::ops::Bound;
use std::path::Path;

/// The schema version this build writes and accepts.
pub const SCHEMA_VERSION: u32 = 1;
const SCHEMA_KEY: &[u8] = b"meta/schema_version";

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The underlying engine failed (I/O, corruption).
    #[error("storage engine: {0}")]
    Engine(String),
    /// The data dir was written by an incompatible version.
    #[error("data dir has schema version {found}, this crmgate uses {expected}")]
    Schema {
        /// Found on disk.
        found: String,
        /// Expected by this build.
        expected: u32,
    },
    /// A stored value could not be decoded.
    #[error("corrupt value at {key}: {msg}")]
    Corrupt {
        /// Key.
        key: String,
        /// What failed.
        msg: String,
    },
}

/// One operation of an atomic batch.
#[derive(Clone, Debug)]
pub enum Op {
    /// Set key to value.
    Put(Vec<u8>, Vec<u8>),
    /// Remove key.
    Delete(Vec<u8>),
}

/// Callback for scans: return `Ok(false)` to stop early.
pub type ScanFn<'a> = dyn FnMut(&[u8], &[u8]) -> Result<bool, StoreError> + 'a;

/// The narrow storage interface crmgate needs.
pub trait KvStore: Send + Sync {
    /// Reads one key.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Visits keys in `[start, end)` in ascending order.
    fn scan(&self, start: &[u8], end: Bound<&[u8]>, f: &mut ScanFn<'_>) -> Result<(), StoreError>;
    /// Applies all operations atomically and durably (flushed before returning).
    fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError>;
    /// Bytes used on disk (approximate), for operators.
    fn size_on_disk(&self) -> u64;
}

/// Which on-disk engine to use (`store.engine`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    /// redb: a single file, copy-on-write B-tree, durable commits.
    Redb,
    /// sled: a log-structured tree.
    Sled,
}

/// The storage backend chosen at start-up.
pub enum Store {
    /// redb on disk.
    Redb(RedbStore),
    /// sled on disk.
    Sled(SledStore),
    /// In memory (tests).
    Memory(MemStore),
}

impl Store {
    /// Opens (or creates) the store in `dir` and checks its schema version. A data dir keeps
    /// the engine it was created with; asking for the other one is an error.
    pub fn open(dir: &Path, kind: EngineKind) -> Result<Store, StoreError> {
        let has_sled = dir.join("db").exists();
        let has_redb = dir.join("crmgate.redb").exists();
        let s = match kind {
            EngineKind::Sled if has_redb => {
                return Err(StoreError::Engine(format!(
                    "{} holds a redb store; set store.engine = \"redb\"",
                    dir.display()
                )))
            }
            EngineKind::Redb if has_sled => {
                return Err(StoreError::Engine(format!(
                    "{} holds a sled store; set store.engine = \"sled\"",
                    dir.display()
                )))
            }
            EngineKind::Sled => Store::Sled(SledStore::open(dir)?),
            EngineKind::Redb => Store::Redb(RedbStore::open(dir)?),
        };
        s.check_schema()?;
        Ok(s)
    }

    /// Opens a sled store (see [`Store::open`]).
    pub fn open_sled(dir: &Path) -> Result<Store, StoreError> {
        Self::open(dir, EngineKind::Sled)
    }

    /// A fresh in-memory store.
    pub fn memory() -> Store {
        let s = Store::Memory(MemStore::default());
        // A fresh map has no schema key, so this only writes it.
        let _ = s.check_schema();
        s
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        match self.get(SCHEMA_KEY)? {
            Some(v) => {
                let found = String::from_utf8_lossy(&v).into_owned();
                if found != SCHEMA_VERSION.to_string() {
                    return Err(StoreError::Schema {
                        found,
                        expected: SCHEMA_VERSION,
                    });
                }
                Ok(())
            }
            None => self.apply(vec![Op::Put(
                SCHEMA_KEY.to_vec(),
                SCHEMA_VERSION.to_string().into_bytes(),
            )]),
        }
    }

    /// Visits every key starting with `prefix`.
    pub fn scan_prefix(&self, prefix: &[u8], f: &mut ScanFn<'_>) -> Result<(), StoreError> {
        match prefix_end(prefix) {
            Some(end) => self.scan(prefix, Bound::Excluded(&end), f),
            None => self.scan(prefix, Bound::Unbounded, f),
        }
    }

    /// Writes one key durably.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.apply(vec![Op::Put(key.to_vec(), value.to_vec())])
    }
}

/// The smallest key greater than every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl KvStore for Store {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Store::Redb(s) => s.get(key),
            Store::Sled(s) => s.get(key),
            Store::Memory(s) => s.get(key),
        }
    }
    fn scan(&self, start: &[u8], end: Bound<&[u8]>, f: &mut ScanFn<'_>) -> Result<(), StoreError> {
        match self {
            Store::Redb(s) => s.scan(start, end, f),
            Store::Sled(s) => s.scan(start, end, f),
            Store::Memory(s) => s.scan(start, end, f),
        }
    }
    fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        match self {
            Store::Redb(s) => s.apply(ops),
            Store::Sled(s) => s.apply(ops),
            Store::Memory(s) => s.apply(ops),
        }
    }
    fn size_on_disk(&self) -> u64 {
        match self {
            Store::Redb(s) => s.size_on_disk(),
            Store::Sled(s) => s.size_on_disk(),
            Store::Memory(s) => s.size_on_disk(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(s: &Store) {
        s.apply(vec![
            Op::Put(b"a/1".to_vec(), b"x".to_vec()),
            Op::Put(b"a/2".to_vec(), b"y".to_vec()),
            Op::Put(b"b/1".to_vec(), b"z".to_vec()),
        ])
        .expect("apply");
        assert_eq!(s.get(b"a/2").expect("get"), Some(b"y".to_vec()));
        let mut seen = Vec::new();
        s.scan_prefix(b"a/", &mut |k, _| {
            seen.push(k.to_vec());
            Ok(true)
        })
        .expect("scan");
        assert_eq!(seen, vec![b"a/1".to_vec(), b"a/2".to_vec()]);
        s.apply(vec![Op::Delete(b"a/1".to_vec())]).expect("delete");
        assert_eq!(s.get(b"a/1").expect("get"), None);
    }

    #[test]
    fn memory_store() {
        exercise(&Store::memory());
    }

    #[test]
    fn disk_stores_and_schema_check() {
        for kind in [EngineKind::Sled, EngineKind::Redb] {
            let dir = tempfile::tempdir().expect("tempdir");
            {
                let s = Store::open(dir.path(), kind).expect("open");
                exercise(&s);
                s.put(SCHEMA_KEY, b"99").expect("put");
            }
            match Store::open(dir.path(), kind) {
                Err(StoreError::Schema { found, .. }) => assert_eq!(found, "99"),
                Err(e) => panic!("wrong error {e}"),
                Ok(_) => panic!("a foreign schema version must be refused"),
            }
            let other = if kind == EngineKind::Sled {
                EngineKind::Redb
            } else {
                EngineKind::Sled
            };
            assert!(
                Store::open(dir.path(), other).is_err(),
                "engines are not mixed"
            );
        }
    }

    #[test]
    fn prefix_end_handles_ff() {
        assert_eq!(prefix_end(b"a"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(&[0x61, 0xff]), Some(vec![0x62]));
        assert_eq!(prefix_end(&[0xff]), None);
    }
}
