//! What the mirror keeps per mailbox, durably: the folders it made, its position in each
//! folder's change log, Graph's delta links, whether writes of unknown outcome may be out
//! there, and the id map (crmgate contact → mailbox item, with what was written).
//!
//! Keys: `mirror/<mailbox key>/meta` and `mirror/<mailbox key>/e/<folder>/<contact id>`; the
//! mailbox key is a hash of the login, so no login can reach into another's keys.

use crate::domain::rules::VirtualFolder;
use crate::store::{KvStore, Op, Store, StoreError};
use sha2::{Digest, Sha256};

/// The mirrored folders, in a fixed order.
pub const FOLDERS: [VirtualFolder; 2] = [VirtualFolder::My, VirtualFolder::Global];

/// Index of a folder in [`FOLDERS`].
pub fn slot(f: VirtualFolder) -> usize {
    match f {
        VirtualFolder::My => 0,
        VirtualFolder::Global => 1,
    }
}

/// The marker value of a folder (its `crmgate.folder` property).
pub fn folder_tag(f: VirtualFolder) -> &'static str {
    match f {
        VirtualFolder::My => "my",
        VirtualFolder::Global => "global",
    }
}

/// The marker value of the folder holding both (`parent_folder_name`).
pub const PARENT_TAG: &str = "parent";

/// A folder crmgate made in the mailbox.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FolderMeta {
    /// Graph id.
    pub id: String,
    /// The display name it was given.
    pub name: String,
}

/// A mailbox's position and settings.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    /// The mailbox (UPN) these folders are in; another one means starting over.
    pub upn: String,
    /// The folder holding both when `parent_folder_name` is set.
    #[serde(default)]
    pub parent: Option<FolderMeta>,
    /// The folders (My, Global).
    pub folders: [Option<FolderMeta>; 2],
    /// The view's sync state per folder: everything before it is in the mailbox.
    pub states: [Option<String>; 2],
    /// Graph's delta link per folder (read-back of users' edits).
    pub delta: [Option<String>; 2],
    /// Writes whose outcome is unknown may have landed: the id map is rebuilt from the
    /// mailbox before anything else is written.
    pub doubtful: bool,
    /// The initial fill of both folders is done.
    pub filled: bool,
    /// Unix seconds of the last full comparison.
    pub last_repair: u64,
}

/// One mirrored contact: where it is and what was written.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// The mailbox item's Graph id.
    pub item: String,
    /// Graph's change key after crmgate's last write (its own writes come back through delta
    /// with it, and are not taken for users' edits).
    pub ck: String,
    /// The crmgate change key written.
    pub v: String,
    /// Digest per mirrored property of what was written (empty: unknown, everything is
    /// written next time).
    pub d: Vec<u32>,
}

/// The store keys of one mailbox.
#[derive(Clone, Debug)]
pub struct Keys {
    base: String,
}

impl Keys {
    /// The keys of `login`'s mailbox.
    pub fn new(login: &str) -> Keys {
        let h = Sha256::digest(login.to_lowercase().as_bytes());
        let hex: String = h[..12].iter().map(|b| format!("{b:02x}")).collect();
        Keys {
            base: format!("mirror/{hex}/"),
        }
    }

    fn meta(&self) -> Vec<u8> {
        format!("{}meta", self.base).into_bytes()
    }

    fn folder_prefix(&self, f: VirtualFolder) -> Vec<u8> {
        format!("{}e/{}/", self.base, folder_tag(f)).into_bytes()
    }

    fn entry(&self, f: VirtualFolder, contact: &str) -> Vec<u8> {
        let mut k = self.folder_prefix(f);
        k.extend_from_slice(contact.as_bytes());
        k
    }

    /// The stored meta (default when none).
    pub fn load_meta(&self, store: &Store) -> Result<Meta, StoreError> {
        Ok(store
            .get(&self.meta())?
            .and_then(|v| serde_json::from_slice(&v).ok())
            .unwrap_or_default())
    }

    /// The entry of a contact in a folder.
    pub fn entry_of(
        &self,
        store: &Store,
        f: VirtualFolder,
        contact: &str,
    ) -> Result<Option<Entry>, StoreError> {
        Ok(store
            .get(&self.entry(f, contact))?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// Every entry of a folder: (contact id, entry).
    pub fn entries(
        &self,
        store: &Store,
        f: VirtualFolder,
    ) -> Result<Vec<(String, Entry)>, StoreError> {
        let prefix = self.folder_prefix(f);
        let mut out = Vec::new();
        store.scan_prefix(&prefix, &mut |k, v| {
            if let (Ok(c), Ok(e)) = (
                std::str::from_utf8(&k[prefix.len()..]),
                serde_json::from_slice::<Entry>(v),
            ) {
                out.push((c.to_owned(), e));
            }
            Ok(true)
        })?;
        Ok(out)
    }

    /// Writes the meta and entry changes in one durable write (`None`: the entry goes).
    pub fn commit(
        &self,
        store: &Store,
        meta: &Meta,
        entries: &[(VirtualFolder, String, Option<Entry>)],
    ) -> Result<(), StoreError> {
        store.apply(self.commit_ops(meta, entries))
    }

    /// The operations of [`Keys::commit`], to be applied together.
    pub fn commit_ops(
        &self,
        meta: &Meta,
        entries: &[(VirtualFolder, String, Option<Entry>)],
    ) -> Vec<Op> {
        let mut ops = Vec::with_capacity(entries.len() + 1);
        for (f, c, e) in entries {
            let k = self.entry(*f, c);
            ops.push(match e {
                Some(e) => Op::Put(k, serde_json::to_vec(e).unwrap_or_default()),
                None => Op::Delete(k),
            });
        }
        ops.push(Op::Put(
            self.meta(),
            serde_json::to_vec(meta).unwrap_or_default(),
        ));
        ops
    }

    /// Replaces a folder's whole id map and writes the meta, in one durable write (readers
    /// never see the folder half rebuilt).
    pub fn replace_folder(
        &self,
        store: &Store,
        meta: &Meta,
        f: VirtualFolder,
        entries: Vec<(String, Entry)>,
    ) -> Result<(), StoreError> {
        let mut ops = Vec::new();
        let keep: std::collections::HashSet<Vec<u8>> =
            entries.iter().map(|(c, _)| self.entry(f, c)).collect();
        store.scan_prefix(&self.folder_prefix(f), &mut |k, _| {
            if !keep.contains(k) {
                ops.push(Op::Delete(k.to_vec()));
            }
            Ok(true)
        })?;
        for (c, e) in entries {
            ops.push(Op::Put(
                self.entry(f, &c),
                serde_json::to_vec(&e).unwrap_or_default(),
            ));
        }
        ops.push(Op::Put(
            self.meta(),
            serde_json::to_vec(meta).unwrap_or_default(),
        ));
        store.apply(ops)
    }

    /// Removes every entry of a folder (the id map is rebuilt from the mailbox next).
    pub fn clear_folder(&self, store: &Store, f: VirtualFolder) -> Result<(), StoreError> {
        let mut ops = Vec::new();
        store.scan_prefix(&self.folder_prefix(f), &mut |k, _| {
            ops.push(Op::Delete(k.to_vec()));
            Ok(true)
        })?;
        if ops.is_empty() {
            return Ok(());
        }
        store.apply(ops)
    }

    /// Forgets the mailbox: meta and id map (`mirror resync`).
    pub fn forget(&self, store: &Store) -> Result<(), StoreError> {
        let mut ops = Vec::new();
        store.scan_prefix(self.base.as_bytes(), &mut |k, _| {
            ops.push(Op::Delete(k.to_vec()));
            Ok(true)
        })?;
        if ops.is_empty() {
            return Ok(());
        }
        store.apply(ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_meta_commit_together_and_stay_per_mailbox() {
        let store = Store::memory();
        let a = Keys::new("Anna@Example.test");
        let b = Keys::new("ben@example.test");
        let mut meta = a.load_meta(&store).expect("meta");
        meta.upn = "anna@example.test".into();
        meta.states[0] = Some("s1".into());
        let e = Entry {
            item: "AAA".into(),
            ck: "ck1".into(),
            v: "v1".into(),
            d: vec![1, 2],
        };
        a.commit(
            &store,
            &meta,
            &[(VirtualFolder::My, "c1".into(), Some(e.clone()))],
        )
        .expect("commit");
        assert_eq!(
            Keys::new("anna@example.test")
                .entry_of(&store, VirtualFolder::My, "c1")
                .expect("get"),
            Some(e.clone())
        );
        assert_eq!(
            b.entry_of(&store, VirtualFolder::My, "c1").expect("get"),
            None
        );
        assert_eq!(a.entries(&store, VirtualFolder::My).expect("scan").len(), 1);
        assert!(a
            .entries(&store, VirtualFolder::Global)
            .expect("scan")
            .is_empty());
        assert_eq!(
            a.load_meta(&store).expect("meta").states[0].as_deref(),
            Some("s1")
        );
        a.commit(&store, &meta, &[(VirtualFolder::My, "c1".into(), None)])
            .expect("commit");
        assert!(a
            .entries(&store, VirtualFolder::My)
            .expect("scan")
            .is_empty());
        a.forget(&store).expect("forget");
        assert!(a.load_meta(&store).expect("meta").states[0].is_none());
    }
}
