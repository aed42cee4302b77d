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

/// Creates the data dir `dir` (and missing parents) open to its owner only (0700): it holds
/// password hashes, token hashes and the key that signs wire ids. An existing dir is left as
/// it is, with a warning when group or others may enter it.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        warn_if_open(dir);
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

/// Warns when `path` may be read or entered by group or others.
fn warn_if_open(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path) {
            let mode = m.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{mode:o}"),
                    "open to other users, but crmgate keeps secrets here (password and token \
                     hashes, keys): chmod 700 it"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Makes the files an engine created owner-only (files 0600, directories 0700), whatever the
/// umask was; a failure only warns, the data dir's own mode still guards them.
fn restrict(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fn walk(p: &Path) -> std::io::Result<()> {
            let m = std::fs::symlink_metadata(p)?;
            if m.file_type().is_symlink() {
                return Ok(());
            }
            let want = if m.is_dir() { 0o700 } else { 0o600 };
            if m.permissions().mode() & 0o777 != want {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(want))?;
            }
            if m.is_dir() {
                for e in std::fs::read_dir(p)? {
                    walk(&e?.path())?;
                }
            }
            Ok(())
        }
        if let Err(e) = walk(path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot make the store owner-only");
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

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
        warn_if_open(dir);
        restrict(&dir.join(match kind {
            EngineKind::Sled => "db",
            EngineKind::Redb => "crmgate.redb",
        }));
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
            // sled releases its file lock from a background thread shortly after the drop.
            let reopen = || {
                let mut r = Store::open(dir.path(), kind);
                for _ in 0..100 {
                    match &r {
                        Err(e) if e.to_string().contains("acquire lock") => {
                            std::thread::sleep(std::time::Duration::from_millis(20));
                            r = Store::open(dir.path(), kind);
                        }
                        _ => break,
                    }
                }
                r
            };
            match reopen() {
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

    #[cfg(unix)]
    #[test]
    fn store_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        for kind in [EngineKind::Sled, EngineKind::Redb] {
            let tmp = tempfile::tempdir().expect("tempdir");
            let dir = tmp.path().join("data").join("dir");
            create_private_dir(&dir).expect("create");
            assert_eq!(mode(&dir), 0o700);
            let s = Store::open(&dir, kind).expect("open");
            s.put(b"k", b"v").expect("put");
            let mut seen = 0;
            let mut stack = vec![dir.clone()];
            while let Some(p) = stack.pop() {
                for e in std::fs::read_dir(&p).expect("read_dir") {
                    let p = e.expect("entry").path();
                    if p.is_dir() {
                        assert_eq!(mode(&p), 0o700, "{}", p.display());
                        stack.push(p);
                    } else {
                        assert_eq!(mode(&p), 0o600, "{}", p.display());
                        seen += 1;
                    }
                }
            }
            assert!(seen > 0);
        }
    }

    #[test]
    fn prefix_end_handles_ff() {
        assert_eq!(prefix_end(b"a"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(&[0x61, 0xff]), Some(vec![0x62]));
        assert_eq!(prefix_end(&[0xff]), None);
    }
}
