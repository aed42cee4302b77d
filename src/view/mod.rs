//! `Mailbox`: the one protocol-neutral view both faces call. It holds a read view of the
//! replica for one signed-in user and answers with folders, items (cards), opaque ids, change
//! keys and resumable sync pages. Everything a client presents (ids, sync states) is checked
//! against what this user can see now; anything else is "not found".
//!
//! May import domain, replica, and (for the write service, [`service`]) the CRM, the store
//! and the signed-in principal; never a protocol face (`ews`, `graph`, `server`).

pub mod query;
pub mod service;
pub mod sync_state;
pub mod wire_id;
pub mod write;

use crate::domain::mapping::{card, display_names, Card, MappingRules};
use crate::domain::rules::VirtualFolder;
use crate::replica::Engine;
pub use crate::replica::ItemChange;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use sync_state::{HierarchyState, ItemState, Resume};
pub use wire_id::{IdCodec, IdError, IdKind, WireId};

/// Bumped when the mapping changes what a contact looks like, so change keys move.
pub const MAPPING_VERSION: u32 = 1;

/// A folder a face adds to the mailbox so its clients find what they look for (EWS: the
/// root, the message folder root and the distinguished folders of an Exchange mailbox);
/// always empty and read-only. The face supplies the table ([`ViewConfig::face_folders`]);
/// the view only hosts it and knows none of its names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtraFolder {
    /// Its code in folder ids (not 3, 4 or 5: the view's own folders); never reused.
    pub code: u8,
    /// Distinguished name.
    pub name: &'static str,
    /// Display name.
    pub display: &'static str,
    /// The face's own class label (EWS: the IPF folder class).
    pub class: &'static str,
    /// Kind, for rendering.
    pub kind: FolderKind,
    /// The code of its parent (`None`: a top-level folder).
    pub parent: Option<u8>,
}

/// A folder of a mailbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FolderRef {
    /// The default Contacts folder: parent of the virtual folders.
    Contacts,
    /// A virtual folder.
    Virtual(VirtualFolder),
    /// An always-empty folder a face adds (its code in [`ViewConfig::face_folders`]).
    Face(u8),
}

impl FolderRef {
    fn code(self) -> u8 {
        match self {
            FolderRef::Contacts => 3,
            FolderRef::Virtual(VirtualFolder::My) => 4,
            FolderRef::Virtual(VirtualFolder::Global) => 5,
            FolderRef::Face(c) => c,
        }
    }

    fn from_code(c: u8) -> FolderRef {
        match c {
            3 => FolderRef::Contacts,
            4 => FolderRef::Virtual(VirtualFolder::My),
            5 => FolderRef::Virtual(VirtualFolder::Global),
            c => FolderRef::Face(c),
        }
    }
}

/// What kind of folder, for rendering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FolderKind {
    /// Holds contacts.
    Contacts,
    /// Calendar.
    Calendar,
    /// Tasks.
    Tasks,
    /// Anything else.
    Generic,
}

/// A folder as clients see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderInfo {
    /// Which folder.
    pub folder: FolderRef,
    /// Opaque id.
    pub id: String,
    /// Change key.
    pub change_key: String,
    /// Parent, with its id.
    pub parent: Option<(FolderRef, String)>,
    /// Display name.
    pub display_name: String,
    /// The face's class label of an extra folder (EWS: the IPF folder class); empty for
    /// crmgate's own folders (the face knows theirs).
    pub class: &'static str,
    /// Distinguished name, if the folder has one.
    pub distinguished: Option<&'static str>,
    /// Kind.
    pub kind: FolderKind,
    /// Items in it.
    pub total: usize,
    /// Child folders.
    pub child_count: usize,
    /// Whether the user may create, change and delete items in it.
    pub writable: bool,
}

/// An item: a contact in a virtual folder.
#[derive(Clone, Debug)]
pub struct Item {
    /// Folder.
    pub folder: VirtualFolder,
    /// Contact id.
    pub contact_id: String,
    /// Opaque item id.
    pub id: String,
    /// Change key.
    pub change_key: String,
    /// Stable increasing number (sort key for DavMail's `0xe23`).
    pub uid: u64,
    /// Last change, unix seconds.
    pub modified: u64,
    /// The address-book card.
    pub card: Card,
}

/// A view failure, mapped to each protocol in one place.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    /// An id that is no id.
    #[error("malformed id")]
    Malformed,
    /// No such folder for this user.
    #[error("folder not found")]
    FolderNotFound,
    /// No such item for this user.
    #[error("item not found")]
    ItemNotFound,
    /// A sync state that is not valid for this user and folder.
    #[error("invalid sync state")]
    InvalidSyncState,
}

/// Folder display names and mapping settings the view needs.
#[derive(Clone, Debug)]
pub struct ViewConfig {
    /// My folder name.
    pub my_name: String,
    /// Global folder name.
    pub global_name: String,
    /// Mapping.
    pub mapping: MappingRules,
    /// Whether My accepts writes.
    pub my_writable: bool,
    /// Whether Global accepts writes.
    pub global_writable: bool,
    /// Delete policies.
    pub policies: write::WritePolicies,
    /// Always-empty folders a face adds around crmgate's (EWS: the Exchange folder tree).
    pub face_folders: &'static [ExtraFolder],
    /// The code of the face folder that holds the default Contacts folder (`None`: it is
    /// a top-level folder).
    pub contacts_parent: Option<u8>,
    /// What the CRM can hold (planned writes that need more are refused).
    pub capabilities: crate::domain::capabilities::Capabilities,
}

/// One page of changes.
#[derive(Clone, Debug)]
pub struct SyncPage {
    /// Creates and updates carry the item; deletes carry its id.
    pub changes: Vec<(ItemChange, Result<Item, String>)>,
    /// State to ask with next.
    pub state: String,
    /// Nothing more waits.
    pub last: bool,
}

/// What a folder listing can be ordered by without building cards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrderKey {
    /// Creation order (the DavMail `0xe23` uid).
    Uid,
    /// Display name.
    DisplayName,
    /// File-as.
    FileAs,
    /// Given name.
    GivenName,
    /// Surname.
    Surname,
    /// Company name.
    CompanyName,
}

/// A contact as the faces hold it: opaque, so the replica's internal index never leaves the
/// view (a face can only hand it back to the mailbox that gave it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct ContactKey(u32);

type OrderCacheKey = (u32, bool, OrderKey, bool);
/// A cached listing: the replica sequence it was computed at, and the order.
type CachedOrder = (u64, Arc<Vec<ContactKey>>);

/// Sorted folder listings, kept until the replica changes (its sequence number moves), so a
/// client paging through a large folder does not pay for the sort on every page.
#[derive(Default)]
pub struct ViewCache {
    orders: Mutex<HashMap<OrderCacheKey, CachedOrder>>,
}

/// Most listings kept.
const ORDER_CACHE_MAX: usize = 1024;

/// A user's mailbox over a read view of the replica.
pub struct Mailbox<'a> {
    engine: &'a Engine,
    codec: &'a IdCodec,
    cfg: &'a ViewConfig,
    user: u32,
    user_id: String,
    cache: Option<&'a ViewCache>,
}

fn keys(v: &[u32]) -> Vec<ContactKey> {
    v.iter().copied().map(ContactKey).collect()
}

fn hash_key(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
        h.update([0]);
    }
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(&h.finalize()[..12])
}

impl<'a> Mailbox<'a> {
    /// The mailbox of user index `user` (faces get mailboxes from a [`Session`]).
    pub(crate) fn new(
        engine: &'a Engine,
        codec: &'a IdCodec,
        cfg: &'a ViewConfig,
        user: u32,
    ) -> Mailbox<'a> {
        Mailbox {
            engine,
            codec,
            cfg,
            user,
            user_id: engine.user_id(user).to_owned(),
            cache: None,
        }
    }

    /// The same mailbox, keeping sorted listings in `cache`.
    pub fn cached(mut self, cache: &'a ViewCache) -> Mailbox<'a> {
        self.cache = Some(cache);
        self
    }

    /// The contacts of a folder in the order of `key` (ties in creation order), descending
    /// when asked; cached until the replica changes.
    pub fn ordered(
        &self,
        f: VirtualFolder,
        key: OrderKey,
        descending: bool,
    ) -> Arc<Vec<ContactKey>> {
        let ck = (self.user, f == VirtualFolder::My, key, descending);
        let seq = self.engine.seq();
        if let Some(cache) = self.cache {
            if let Ok(m) = cache.orders.lock() {
                if let Some((s, v)) = m.get(&ck) {
                    if *s == seq {
                        return v.clone();
                    }
                }
            }
        }
        let e = self.engine;
        let mut keyed: Vec<(String, u64, u32)> = self
            .members(f)
            .into_iter()
            .filter_map(|c| {
                let (rec, _) = e.contact_record(c)?;
                let companies: Vec<&crate::domain::Company> =
                    e.contact_companies(c).into_iter().map(|k| &**k).collect();
                let text = match key {
                    OrderKey::Uid => String::new(),
                    OrderKey::DisplayName => display_names(rec, &companies).0,
                    OrderKey::FileAs => display_names(rec, &companies).1,
                    OrderKey::GivenName => rec.first_name.clone().unwrap_or_default(),
                    OrderKey::Surname => rec.last_name.clone().unwrap_or_default(),
                    OrderKey::CompanyName => {
                        crate::domain::mapping::company_name(rec, &companies).unwrap_or_default()
                    }
                };
                Some((text.trim().to_lowercase(), e.contact_uid(c), c))
            })
            .collect();
        keyed.sort_unstable_by(|a, b| {
            let o = a.0.cmp(&b.0);
            let o = if descending { o.reverse() } else { o };
            o.then(a.1.cmp(&b.1))
        });
        let v = Arc::new(
            keyed
                .into_iter()
                .map(|(_, _, c)| ContactKey(c))
                .collect::<Vec<_>>(),
        );
        if let Some(cache) = self.cache {
            if let Ok(mut m) = cache.orders.lock() {
                if m.len() >= ORDER_CACHE_MAX {
                    m.clear();
                }
                m.insert(ck, (seq, v.clone()));
            }
        }
        v
    }

    /// The user's login.
    pub fn login(&self) -> String {
        self.engine
            .user_record(self.user)
            .map(|u| u.login.clone())
            .unwrap_or_default()
    }

    /// The user's id.
    pub fn user_id_str(&self) -> &str {
        &self.user_id
    }

    /// The user's display name.
    pub fn user_name(&self) -> String {
        self.engine
            .user_record(self.user)
            .map(|u| u.name.clone())
            .unwrap_or_default()
    }

    /// The virtual folders this user has (Global only when offered).
    pub fn virtual_folders(&self) -> Vec<VirtualFolder> {
        if self.engine.global_offered() {
            vec![VirtualFolder::My, VirtualFolder::Global]
        } else {
            vec![VirtualFolder::My]
        }
    }

    /// A distinguished folder by its well-known name.
    pub fn distinguished(&self, name: &str) -> Option<FolderRef> {
        match name {
            "contacts" => Some(FolderRef::Contacts),
            n => self
                .cfg
                .face_folders
                .iter()
                .find(|w| w.name == n)
                .map(|w| FolderRef::Face(w.code)),
        }
    }

    /// The distinguished name of a folder, if it has one.
    pub fn distinguished_name(&self, f: FolderRef) -> Option<&'static str> {
        match f {
            FolderRef::Contacts => Some("contacts"),
            FolderRef::Virtual(_) => None,
            FolderRef::Face(c) => self.face(c).map(|w| w.name),
        }
    }

    fn face(&self, code: u8) -> Option<&'static ExtraFolder> {
        self.cfg.face_folders.iter().find(|w| w.code == code)
    }

    /// The folder an id names, if this user can see it.
    pub fn folder_by_id(&self, id: &str) -> Result<FolderRef, ViewError> {
        let w = self
            .codec
            .decode(&self.user_id, IdKind::Folder, id)
            .map_err(|e| match e {
                IdError::Malformed => ViewError::Malformed,
                IdError::NotFound => ViewError::FolderNotFound,
            })?;
        let f = FolderRef::from_code(w.folder);
        match f {
            FolderRef::Virtual(v) if !self.virtual_folders().contains(&v) => {
                Err(ViewError::FolderNotFound)
            }
            FolderRef::Face(c) if self.face(c).is_none() => Err(ViewError::FolderNotFound),
            _ => Ok(f),
        }
    }

    /// The opaque id of a folder.
    pub fn folder_id(&self, f: FolderRef) -> String {
        self.codec.encode(
            &self.user_id,
            &WireId {
                kind: IdKind::Folder,
                folder: f.code(),
                contact: String::new(),
                seq: 0,
                seq2: 0,
                tag: 0,
            },
        )
    }

    /// A folder's parent.
    pub fn parent(&self, f: FolderRef) -> Option<FolderRef> {
        match f {
            FolderRef::Contacts => self.cfg.contacts_parent.map(FolderRef::Face),
            FolderRef::Virtual(_) => Some(FolderRef::Contacts),
            FolderRef::Face(c) => self.face(c)?.parent.map(FolderRef::Face),
        }
    }

    /// A folder's children: the default Contacts folder first, then the face's folders in
    /// table order.
    pub fn children(&self, f: FolderRef) -> Vec<FolderRef> {
        match f {
            FolderRef::Contacts => self
                .virtual_folders()
                .into_iter()
                .map(FolderRef::Virtual)
                .collect(),
            FolderRef::Virtual(_) => Vec::new(),
            FolderRef::Face(c) => {
                let mut v = Vec::new();
                if self.cfg.contacts_parent == Some(c) {
                    v.push(FolderRef::Contacts);
                }
                v.extend(
                    self.cfg
                        .face_folders
                        .iter()
                        .filter(|w| w.parent == Some(c) && w.code != c)
                        .map(|w| FolderRef::Face(w.code)),
                );
                v
            }
        }
    }

    /// All descendants of a folder, depth first.
    pub fn descendants(&self, f: FolderRef) -> Vec<FolderRef> {
        let mut out = Vec::new();
        self.descend(f, 0, &mut out);
        out
    }

    fn descend(&self, f: FolderRef, depth: usize, out: &mut Vec<FolderRef>) {
        // A face's table is a tree a few levels deep; the bound keeps a faulty one finite.
        if depth > 8 {
            return;
        }
        for c in self.children(f) {
            out.push(c);
            self.descend(c, depth + 1, out);
        }
    }

    fn count(&self, f: FolderRef) -> usize {
        match f {
            FolderRef::Virtual(v) => self.engine.count(self.user, v),
            _ => 0,
        }
    }

    /// Describes a folder.
    pub fn folder_info(&self, f: FolderRef) -> FolderInfo {
        let (display_name, class, kind, writable) = match f {
            FolderRef::Contacts => ("Contacts".to_owned(), "", FolderKind::Contacts, false),
            FolderRef::Virtual(VirtualFolder::My) => (
                self.cfg.my_name.clone(),
                "",
                FolderKind::Contacts,
                self.cfg.my_writable,
            ),
            FolderRef::Virtual(VirtualFolder::Global) => (
                self.cfg.global_name.clone(),
                "",
                FolderKind::Contacts,
                self.cfg.global_writable,
            ),
            FolderRef::Face(c) => match self.face(c) {
                Some(w) => (w.display.to_owned(), w.class, w.kind, false),
                None => (String::new(), "", FolderKind::Generic, false),
            },
        };
        let total = self.count(f);
        let ctag = self.folder_ctag(f);
        FolderInfo {
            folder: f,
            id: self.folder_id(f),
            change_key: hash_key(&[b"folder", &ctag.to_be_bytes()]),
            parent: self.parent(f).map(|p| (p, self.folder_id(p))),
            display_name,
            class,
            distinguished: self.distinguished_name(f),
            kind,
            total,
            child_count: self.children(f).len(),
            writable,
        }
    }

    /// Whether the user may write into a folder (cheap: no counting).
    pub fn writable(&self, f: FolderRef) -> bool {
        match f {
            FolderRef::Virtual(VirtualFolder::My) => self.cfg.my_writable,
            FolderRef::Virtual(VirtualFolder::Global) => self.cfg.global_writable,
            _ => false,
        }
    }

    /// A number that changes whenever anything in the folder changes (the CardDAV ctag).
    pub fn folder_ctag(&self, f: FolderRef) -> u64 {
        match f {
            // The global sequence moves with every change anywhere; it never misses one.
            FolderRef::Virtual(_) => self.engine.seq(),
            _ => 0,
        }
    }

    /// The replica's indices of the contacts of a virtual folder (inside the view only).
    fn members(&self, f: VirtualFolder) -> Vec<u32> {
        self.engine.list(self.user, f)
    }

    /// Contacts of a virtual folder.
    pub fn contacts(&self, f: VirtualFolder) -> Vec<ContactKey> {
        // Collected in place: the index vector's allocation is reused.
        self.members(f).into_iter().map(ContactKey).collect()
    }

    /// True when contact `c` is in folder `f` of this mailbox now.
    pub fn holds(&self, f: VirtualFolder, c: ContactKey) -> bool {
        self.engine.folder_of(self.user, c.0) == Some(f)
    }

    /// Contacts (of any folder) whose id, lower-cased, is `lower_id`.
    pub fn contacts_by_lower_id(&self, lower_id: &str) -> Vec<ContactKey> {
        keys(self.engine.contacts_by_lower_id(lower_id))
    }

    /// The contact (of any folder) with this stable number.
    pub fn contact_by_uid(&self, uid: u64) -> Option<ContactKey> {
        self.engine.contact_by_uid(uid).map(ContactKey)
    }

    /// Contacts (of any folder) with this lower-cased e-mail address in their record.
    pub fn contacts_by_email(&self, lower: &str) -> Vec<ContactKey> {
        keys(self.engine.contacts_by_email(lower))
    }

    /// The domain of placeholder e-mail addresses, when the mapping makes them.
    pub fn placeholder_domain(&self) -> Option<&'a str> {
        self.cfg.mapping.placeholder_domain.as_deref()
    }

    /// A contact's stable number (see [`Item::uid`]).
    pub fn contact_uid(&self, c: ContactKey) -> u64 {
        self.engine.contact_uid(c.0)
    }

    /// A contact's last change (see [`Item::modified`]).
    pub fn contact_modified(&self, c: ContactKey) -> u64 {
        self.engine.contact_modified(c.0)
    }

    /// A contact's CRM id.
    pub fn contact_id(&self, c: ContactKey) -> &'a str {
        self.engine.contact_id(c.0)
    }

    /// An upper bound on the work of [`Mailbox::changes`] for an incremental `state` of folder
    /// `f`: the change-log entries written since it. `None` for a first sync (it pages the
    /// whole folder) or a state that is not valid here (answered as an error, which is cheap).
    pub fn changes_pending(&self, f: VirtualFolder, state: &str) -> Option<u64> {
        let code = FolderRef::Virtual(f).code();
        let st = ItemState::decode(self.codec, &self.user_id, code, state).ok()?;
        if matches!(st.resume, Resume::Initial { .. }) {
            return None;
        }
        Some(self.engine.seq().saturating_sub(st.watermark))
    }

    /// Builds the item of a contact in a folder.
    pub fn item(&self, f: VirtualFolder, c: ContactKey) -> Option<Item> {
        self.item_at(f, c.0)
    }

    fn item_at(&self, f: VirtualFolder, c: u32) -> Option<Item> {
        let (rec, _) = self.engine.contact_record(c)?;
        let companies: Vec<&crate::domain::Company> = self
            .engine
            .contact_companies(c)
            .into_iter()
            .map(|k| &**k)
            .collect();
        let contact_id = rec.id.0.clone();
        Some(Item {
            folder: f,
            id: self.codec.encode(
                &self.user_id,
                &WireId {
                    kind: IdKind::Item,
                    folder: FolderRef::Virtual(f).code(),
                    contact: contact_id.clone(),
                    seq: 0,
                    seq2: 0,
                    tag: 0,
                },
            ),
            change_key: self.change_key_at(c),
            uid: self.engine.contact_uid(c),
            modified: self.engine.contact_modified(c),
            card: card(rec, &companies, &self.cfg.mapping),
            contact_id,
        })
    }

    /// The change key of a contact.
    pub fn change_key(&self, c: ContactKey) -> String {
        self.change_key_at(c.0)
    }

    fn change_key_at(&self, c: u32) -> String {
        self.key_of(self.engine.contact_version(c))
    }

    /// The change key of a content version.
    pub(crate) fn key_of(&self, version: &str) -> String {
        hash_key(&[version.as_bytes(), &MAPPING_VERSION.to_be_bytes()])
    }

    /// The item an id names, if the user sees that contact in that folder now.
    pub fn item_by_id(&self, id: &str) -> Result<Item, ViewError> {
        let w = self
            .codec
            .decode(&self.user_id, IdKind::Item, id)
            .map_err(|e| match e {
                IdError::Malformed => ViewError::Malformed,
                IdError::NotFound => ViewError::ItemNotFound,
            })?;
        let FolderRef::Virtual(f) = FolderRef::from_code(w.folder) else {
            return Err(ViewError::ItemNotFound);
        };
        let c = self
            .engine
            .find_contact(&w.contact)
            .ok_or(ViewError::ItemNotFound)?;
        if self.engine.folder_of(self.user, c) != Some(f) {
            return Err(ViewError::ItemNotFound);
        }
        self.item_at(f, c).ok_or(ViewError::ItemNotFound)
    }

    /// The item id a contact would have in a folder (for deletes of items no longer visible).
    pub fn item_id_for(&self, f: VirtualFolder, contact_id: &str) -> String {
        self.codec.encode(
            &self.user_id,
            &WireId {
                kind: IdKind::Item,
                folder: FolderRef::Virtual(f).code(),
                contact: contact_id.to_owned(),
                seq: 0,
                seq2: 0,
                tag: 0,
            },
        )
    }

    /// The contact an item id of this user names, whether or not the user still sees it
    /// there (the resource a deletion removes); `None` for no id of this user.
    pub fn contact_of_item(&self, id: &str) -> Option<(VirtualFolder, String)> {
        let w = self.codec.decode(&self.user_id, IdKind::Item, id).ok()?;
        match FolderRef::from_code(w.folder) {
            FolderRef::Virtual(f) => Some((f, w.contact)),
            _ => None,
        }
    }

    /// The state of a folder with everything up to now (what a client that just finished a
    /// sync holds): a CardDAV collection's `sync-token`.
    pub fn current_state(&self, f: VirtualFolder) -> String {
        ItemState {
            folder: FolderRef::Virtual(f).code(),
            watermark: self.engine.seq(),
            resume: Resume::Done,
            binding: 0,
        }
        .encode(self.codec, &self.user_id)
    }

    /// Sync of a folder that holds no items: always empty, with a state bound to the folder.
    pub fn empty_changes(&self, f: FolderRef, state: Option<&str>) -> Result<SyncPage, ViewError> {
        if let Some(s) = state {
            sync_state::check_empty_state(self.codec, &self.user_id, f.code(), s)
                .map_err(|_| ViewError::InvalidSyncState)?;
        }
        Ok(SyncPage {
            changes: Vec::new(),
            state: sync_state::empty_state(self.codec, &self.user_id, f.code()),
            last: true,
        })
    }

    fn hierarchy_version(&self) -> u64 {
        let mut h = Sha256::new();
        h.update(self.cfg.my_name.as_bytes());
        h.update([0]);
        h.update(self.cfg.global_name.as_bytes());
        h.update([self.engine.global_offered() as u8]);
        let d = h.finalize();
        let mut a = [0u8; 8];
        a.copy_from_slice(&d[..8]);
        u64::from_be_bytes(a)
    }

    /// Versions of the two virtual folders as the hierarchy shows them (name, presence).
    fn folder_versions(&self) -> (u64, u64) {
        let v = |parts: &[&[u8]]| {
            let mut h = Sha256::new();
            for p in parts {
                h.update(p);
                h.update([0]);
            }
            let d = h.finalize();
            let mut a = [0u8; 8];
            a.copy_from_slice(&d[..8]);
            u64::from_be_bytes(a)
        };
        (
            v(&[b"my", self.cfg.my_name.as_bytes()]),
            v(&[
                b"global",
                self.cfg.global_name.as_bytes(),
                &[self.engine.global_offered() as u8],
            ]),
        )
    }

    /// Folder hierarchy changes under `top` since `state`: (is create, folder) and the next
    /// state. The tree is fixed but for the virtual folders' names and presence.
    pub fn hierarchy_changes(
        &self,
        top: FolderRef,
        state: Option<&str>,
    ) -> Result<(Vec<(bool, FolderRef)>, String), ViewError> {
        let version = self.hierarchy_version();
        let (my_version, global_version) = self.folder_versions();
        let folders = self.descendants(top);
        let changes = match state {
            None => folders.into_iter().map(|f| (true, f)).collect(),
            Some(s) => {
                let st = HierarchyState::decode(self.codec, &self.user_id, top.code(), s)
                    .map_err(|_| ViewError::InvalidSyncState)?;
                match st {
                    // Per-folder versions: only the folders that changed.
                    HierarchyState::Versions { my, global } => folders
                        .into_iter()
                        .filter(|f| match f {
                            FolderRef::Virtual(VirtualFolder::My) => my != my_version,
                            FolderRef::Virtual(VirtualFolder::Global) => global != global_version,
                            _ => false,
                        })
                        .map(|f| (false, f))
                        .collect(),
                    // States of earlier releases: one version for the whole tree.
                    HierarchyState::Whole(v) if v == version => Vec::new(),
                    HierarchyState::Whole(_) => folders
                        .into_iter()
                        .filter(|f| matches!(f, FolderRef::Virtual(_)))
                        .map(|f| (false, f))
                        .collect(),
                }
            }
        };
        let st = HierarchyState::Versions {
            my: my_version,
            global: global_version,
        };
        Ok((changes, st.encode(self.codec, &self.user_id, top.code())))
    }

    /// One page of the changes of folder `f` since `state` (`None`: from the start), at most
    /// `max`, leaving out the items in `ignore`.
    ///
    /// A first sync pages through the folder as it was at one sequence number W and ends with
    /// the state W; from then on a state is (W, K): everything up to W plus, of the later
    /// changes ordered by (sequence, contact id), those up to K. Both survive changes made
    /// while the client pages.
    pub fn changes(
        &self,
        f: VirtualFolder,
        state: Option<&str>,
        max: usize,
        ignore: &HashSet<String>,
        binding: u64,
    ) -> Result<SyncPage, ViewError> {
        const INITIAL: u64 = u64::MAX;
        let code = FolderRef::Virtual(f).code();
        // State: W (seq), and the resume key: (kseq, kuid) for incremental rounds, kuid alone
        // for a first sync (kseq = INITIAL). uids are stable per contact and unique.
        let (w, kseq, kuid) = match state {
            None => (self.engine.seq(), INITIAL, 0u64),
            Some(s) => {
                let st = ItemState::decode(self.codec, &self.user_id, code, s)
                    .map_err(|_| ViewError::InvalidSyncState)?;
                if st.watermark > self.engine.seq() || st.binding != binding {
                    return Err(ViewError::InvalidSyncState);
                }
                match st.resume {
                    Resume::Done => (st.watermark, 0, 0),
                    Resume::Initial { after_uid } => (st.watermark, INITIAL, after_uid),
                    Resume::After { seq, uid } => (st.watermark, seq, uid),
                }
            }
        };
        let e = self.engine;
        // Rows after the resume key, in (seq, uid) order: (key, contact, change).
        let rows: Vec<((u64, u64), u32, ItemChange)> = if kseq == INITIAL {
            let order: Arc<Vec<ContactKey>> = if w == e.seq() {
                // Nothing changed since W: the folder as of W is today's, in uid order.
                self.ordered(f, OrderKey::Uid, false)
            } else {
                // The folder as of W: today's members, minus those created since, plus those
                // deleted since (changes_since(W) tells both).
                let since = e
                    .changes_since_seq(self.user, f, w)
                    .ok_or(ViewError::InvalidSyncState)?;
                let created: HashSet<u32> = since
                    .iter()
                    .filter(|(_, _, ch)| *ch == ItemChange::Create)
                    .map(|(_, c, _)| *c)
                    .collect();
                let mut members: Vec<u32> = self
                    .members(f)
                    .into_iter()
                    .filter(|c| !created.contains(c))
                    .collect();
                members.extend(
                    since
                        .iter()
                        .filter(|(_, _, ch)| *ch == ItemChange::Delete)
                        .map(|(_, c, _)| *c),
                );
                members.sort_unstable_by_key(|c| e.contact_uid(*c));
                Arc::new(members.into_iter().map(ContactKey).collect())
            };
            let start = order.partition_point(|c| e.contact_uid(c.0) <= kuid);
            order[start..]
                .iter()
                .take(max + 1)
                .map(|c| ((0, e.contact_uid(c.0)), c.0, ItemChange::Create))
                .collect()
        } else {
            let mut v: Vec<((u64, u64), u32, ItemChange)> = e
                .changes_since_seq(self.user, f, w)
                .ok_or(ViewError::InvalidSyncState)?
                .into_iter()
                .map(|(s, c, ch)| ((s, e.contact_uid(c)), c, ch))
                .filter(|(k, _, _)| kseq == 0 || *k > (kseq, kuid))
                .collect();
            v.sort_unstable_by_key(|r| r.0);
            v
        };
        let last = rows.len() <= max;
        let mut changes = Vec::with_capacity(max.min(rows.len()));
        let mut last_key = (kseq, kuid);
        for (key, c, ch) in rows.into_iter().take(max) {
            last_key = key;
            let id = self.item_id_for(f, e.contact_id(c));
            if ignore.contains(&id) {
                continue;
            }
            match ch {
                ItemChange::Delete => changes.push((ch, Err(id))),
                _ => {
                    // An item gone from the CRM since the snapshot is deleted next round.
                    if let Some(item) = self.item_at(f, c) {
                        changes.push((ch, Ok(item)));
                    }
                }
            }
        }
        let (watermark, resume) = if last {
            // Caught up: everything up to W (first sync) or now is in the client's hands.
            let now = if kseq == INITIAL { w } else { e.seq() };
            (now, Resume::Done)
        } else if kseq == INITIAL {
            (
                w,
                Resume::Initial {
                    after_uid: last_key.1,
                },
            )
        } else {
            (
                w,
                Resume::After {
                    seq: last_key.0,
                    uid: last_key.1,
                },
            )
        };
        let state = ItemState {
            folder: code,
            watermark,
            resume,
            binding,
        };
        Ok(SyncPage {
            changes,
            state: state.encode(self.codec, &self.user_id),
            last,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crm::{Change, Versioned};
    use crate::domain::dataset::Dataset;
    use crate::domain::rules::FolderRules;
    use crate::domain::{Kind, Record};
    use std::collections::BTreeSet;

    fn engine() -> Engine {
        let ds = Dataset::parse(
            r#"{"users":[{"id":"u1","login":"a@x.test","name":"A"},{"id":"u2","login":"b@x.test","name":"B"}],
                "companies":[{"id":"k1","name":"K","responsible":["u1"]}],
                "contacts":[{"id":"c1","companies":["k1"]},{"id":"c2","companies":["k1"]},
                            {"id":"c3","companies":["k1"]},{"id":"c4","companies":["k1"]},
                            {"id":"c5","companies":["k1"]}]}"#,
        )
        .expect("parses");
        let mut e = Engine::new(FolderRules::default());
        e.apply(
            ds.records()
                .map(|r| {
                    Change::Upsert(Versioned {
                        record: r,
                        version: "1".into(),
                    })
                })
                .collect(),
        );
        e
    }

    fn cfg() -> ViewConfig {
        ViewConfig {
            my_name: "My".into(),
            global_name: "Global".into(),
            mapping: MappingRules::default(),
            my_writable: true,
            global_writable: false,
            policies: write::WritePolicies {
                my_delete: write::DeletePolicy::Hide,
                global_delete: write::DeletePolicy::Hide,
            },
            face_folders: &[],
            contacts_parent: None,
            capabilities: crate::domain::capabilities::Capabilities::everything("test"),
        }
    }

    /// Applies pages to a client-side set until caught up; returns the final state.
    fn drain(
        e: &Engine,
        codec: &IdCodec,
        state: Option<String>,
        set: &mut BTreeSet<String>,
        max: usize,
        mut between: impl FnMut(),
    ) -> String {
        let _ = &mut between;
        let cfg = cfg();
        let mb = Mailbox::new(e, codec, &cfg, e.find_user("a@x.test").expect("u"));
        let p = mb
            .changes(VirtualFolder::My, state.as_deref(), max, &HashSet::new(), 0)
            .expect("page");
        for (ch, it) in p.changes {
            match (ch, it) {
                (ItemChange::Delete, Err(id)) => {
                    set.retain(|c| mb.item_id_for(VirtualFolder::My, c) != id);
                }
                (_, Ok(item)) => {
                    set.insert(item.contact_id);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(p.last || !p.state.is_empty());
        p.state
    }

    #[test]
    fn paging_survives_changes_made_while_the_client_pages() {
        let mut e = engine();
        let codec = IdCodec::new([1; 32]);
        let mut set = BTreeSet::new();
        // Page 1 of the initial sync: 2 of 5.
        let s1 = drain(&e, &codec, None, &mut set, 2, || {});
        assert_eq!(set.len(), 2);
        // Meanwhile c1 (already sent) leaves, c6 arrives.
        e.apply(vec![
            Change::Deleted(Kind::Contact, "c1".into()),
            Change::Upsert(Versioned {
                record: Record::Contact(crate::domain::Contact {
                    id: "c6".into(),
                    companies: vec!["k1".into()],
                    ..Default::default()
                }),
                version: "2".into(),
            }),
        ]);
        let mut state = s1;
        for _ in 0..10 {
            state = drain(&e, &codec, Some(state), &mut set, 2, || {});
        }
        let want: BTreeSet<String> = ["c2", "c3", "c4", "c5", "c6"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(set, want);
        // A foreign user's state, another folder's state, garbage: all invalid.
        let cfg = cfg();
        let b = Mailbox::new(&e, &codec, &cfg, e.find_user("b@x.test").expect("u"));
        assert_eq!(
            b.changes(VirtualFolder::My, Some(&state), 10, &HashSet::new(), 0)
                .err(),
            Some(ViewError::InvalidSyncState)
        );
        let a = Mailbox::new(&e, &codec, &cfg, e.find_user("a@x.test").expect("u"));
        assert_eq!(
            a.changes(VirtualFolder::Global, Some(&state), 10, &HashSet::new(), 0)
                .err(),
            Some(ViewError::InvalidSyncState)
        );
        assert_eq!(
            a.changes(VirtualFolder::My, Some("bm9wZQ=="), 10, &HashSet::new(), 0)
                .err(),
            Some(ViewError::InvalidSyncState)
        );
        // Item ids: another user's id is not found, garbage is malformed.
        let id = a.item_id_for(VirtualFolder::My, "c2");
        assert_eq!(
            a.item_by_id(&id).map(|i| i.contact_id).ok().as_deref(),
            Some("c2")
        );
        assert_eq!(b.item_by_id(&id).err(), Some(ViewError::ItemNotFound));
        assert_eq!(a.item_by_id("garbage").err(), Some(ViewError::Malformed));
        let global_id = a.item_id_for(VirtualFolder::Global, "c2");
        assert_eq!(
            a.item_by_id(&global_id).err(),
            Some(ViewError::ItemNotFound),
            "not in Global"
        );
    }

    #[test]
    fn an_update_plan_names_the_contact_fields_it_changes() {
        use crate::domain::patch::{Edit, Field};
        let e = engine();
        let codec = IdCodec::new([1; 32]);
        let cfg = cfg();
        let a = Mailbox::new(&e, &codec, &cfg, e.find_user("a@x.test").expect("u"));
        let id = a.item_id_for(VirtualFolder::My, "c2");
        let planned = a
            .plan_update(
                &id,
                None,
                write::ConflictMode::AlwaysOverwrite,
                &[
                    Edit::Set(Field::JobTitle, "CEO".into()),
                    Edit::Set(Field::Email(1), "c2@k.test".into()),
                ],
            )
            .expect("plans");
        match planned.plan {
            write::Plan::Update {
                changed, version, ..
            } => {
                assert_eq!(
                    changed,
                    vec![
                        crate::domain::ContactField::JobTitle,
                        crate::domain::ContactField::Emails
                    ]
                );
                assert_eq!(version, "1");
            }
            other => panic!("an update, not {other:?}"),
        }
    }

    #[test]
    fn merge_takes_the_fields_unchanged_since_and_auto_resolve_refuses_them_all() {
        use crate::domain::patch::{Edit, Field};
        let mut e = engine();
        let codec = IdCodec::new([1; 32]);
        let cfg = cfg();
        let u = e.find_user("a@x.test").expect("u");
        let (id, read_at) = {
            let a = Mailbox::new(&e, &codec, &cfg, u);
            let id = a.item_id_for(VirtualFolder::My, "c2");
            let ck = a.item_by_id(&id).expect("item").change_key.clone();
            (id, ck)
        };
        // The CRM changes the job title after the client read the contact.
        let c = e.find_contact("c2").expect("c2");
        let (rec, _) = e.contact_record(c).expect("record");
        let mut rec = (**rec).clone();
        rec.job_title = Some("From the CRM".into());
        e.apply(vec![Change::Upsert(Versioned {
            record: Record::Contact(rec),
            version: "2".into(),
        })]);
        let a = Mailbox::new(&e, &codec, &cfg, u);
        let edits = [
            Edit::Set(Field::JobTitle, "From the client".into()),
            Edit::Set(Field::Department, "Sales".into()),
        ];
        let refused = a.plan_update(
            &id,
            Some(&read_at),
            write::ConflictMode::AutoResolve,
            &edits,
        );
        assert!(
            matches!(refused, Err(write::WriteError::Conflict { .. })),
            "{refused:?}"
        );
        let planned = a
            .plan_update(&id, Some(&read_at), write::ConflictMode::Merge, &edits)
            .expect("plans");
        match planned.plan {
            write::Plan::Update {
                record, changed, ..
            } => {
                assert_eq!(record.job_title.as_deref(), Some("From the CRM"));
                assert_eq!(record.department.as_deref(), Some("Sales"));
                assert_eq!(changed, vec![crate::domain::ContactField::Department]);
            }
            other => panic!("an update, not {other:?}"),
        }
        // A base the history no longer knows is still a conflict.
        let unknown = a.plan_update(&id, Some("no-such-key"), write::ConflictMode::Merge, &edits);
        assert!(matches!(unknown, Err(write::WriteError::Conflict { .. })));
    }
}

/// A signed-in user's access to mailboxes: their own, or another's when they are an admin
/// (EWS impersonation, Graph `/users/{id}`).
pub struct Session<'a> {
    cache: &'a ViewCache,
    engine: &'a Engine,
    codec: &'a IdCodec,
    /// View settings.
    pub cfg: &'a ViewConfig,
    /// The signed-in user (the replica's index: it stays inside the view).
    user: u32,
    admin: bool,
}

/// Why a mailbox could not be opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MailboxError {
    /// Another user's mailbox, and the caller is no admin.
    Denied,
    /// No such user.
    NoSuchMailbox,
}

impl<'a> Session<'a> {
    /// The session of the user signed in as `login` over a read view of the replica; `None`
    /// when the replica has no such login (any more).
    pub fn open(
        cache: &'a ViewCache,
        engine: &'a Engine,
        codec: &'a IdCodec,
        cfg: &'a ViewConfig,
        login: &str,
        admin: bool,
    ) -> Option<Session<'a>> {
        Some(Session {
            cache,
            engine,
            codec,
            cfg,
            user: engine.find_login(login)?,
            admin,
        })
    }

    /// The login of a user given by id or login.
    pub fn login_of(&self, id_or_login: &str) -> Option<String> {
        let u = self.engine.find_user(id_or_login)?;
        self.engine.user_record(u).map(|r| r.login.clone())
    }

    /// The mailbox of `address` (a login; `None`: the caller's own).
    pub fn mailbox(&self, address: Option<&str>) -> Result<Mailbox<'a>, MailboxError> {
        let own = Mailbox::new(self.engine, self.codec, self.cfg, self.user).cached(self.cache);
        let Some(addr) = address.map(str::trim).filter(|a| !a.is_empty()) else {
            return Ok(own);
        };
        match self.engine.find_login(addr) {
            Some(u) if u == self.user => Ok(own),
            Some(u) if self.admin => {
                Ok(Mailbox::new(self.engine, self.codec, self.cfg, u).cached(self.cache))
            }
            // A non-admin learns nothing about other mailboxes, not even whether they exist.
            _ if !self.admin => Err(MailboxError::Denied),
            _ => Err(MailboxError::NoSuchMailbox),
        }
    }
}
