//! The in-memory virtual-folder engine: records, secondary indexes, the global change log and
//! each user's My-membership log, all kept incrementally.
//!
//! A batch of CRM changes first updates records and reverse indexes and marks the contacts and
//! users it touches dirty; then each dirty contact, and each dirty user, is reconciled: its
//! folder state is recomputed from the indexes and compared with its last logged state. Only
//! differences produce log entries. Work is proportional to the contacts and users a change
//! affects, never to users × contacts. Restart replays the persisted log, loads the records,
//! and reconciles everything once, which also picks up rule changes made in the config.

use super::intern::Interner;
use crate::crm::{Change, Versioned};
use crate::domain::rules::{FolderRules, GlobalScope, VirtualFolder};
use crate::domain::{Company, Contact, Kind, Lead, Project, Record, Subsystem, User};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

mod changelog;
mod history;
mod membership;
mod records;

const NONE: u32 = u32::MAX;
/// Earlier versions kept per contact for three-way merges of stale client writes.
const HISTORY: usize = 4;

/// One change to a user's My folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MyEvent {
    /// Sequence number of the change.
    pub seq: u64,
    /// Contact index.
    pub contact: u32,
    /// Entered (true) or left (false) My.
    pub added: bool,
}

/// A contact's folder-relevant state after a change.
struct ContactState {
    exists: bool,
    visible: bool,
    subs: Vec<u32>,
    my: Vec<u32>,
    ver: String,
    time: u64,
}

/// An entry of the global change log, as kept in memory.
#[derive(Clone, Debug)]
enum Entry {
    Contact {
        seq: u64,
        contact: u32,
        exists: bool,
        visible: bool,
        subs: Box<[u32]>,
        prev: u32,
    },
    User {
        seq: u64,
        user: u32,
        subs: Box<[u32]>,
        prev: u32,
    },
}

impl Entry {
    fn seq(&self) -> u64 {
        match self {
            Entry::Contact { seq, .. } | Entry::User { seq, .. } => *seq,
        }
    }
}

/// A log entry in its persisted form (ids as strings).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t")]
pub enum LogRecord {
    /// A contact's state after a change.
    #[serde(rename = "c")]
    Contact {
        /// Sequence number.
        s: u64,
        /// Contact id.
        id: String,
        /// Exists.
        x: bool,
        /// Visible.
        v: bool,
        /// Derived subsystems.
        sub: Vec<String>,
        /// Users whose My folder holds the contact after the change.
        my: Vec<String>,
        /// What the contact looked like: CRM version and a digest of its companies' names.
        #[serde(default)]
        ver: String,
        /// When the contact last changed, unix seconds (moves at least 1 s per change).
        #[serde(default)]
        at: u64,
    },
    /// A user's scope change and the My flips it caused.
    #[serde(rename = "u")]
    User {
        /// Sequence number.
        s: u64,
        /// User id.
        id: String,
        /// Exists.
        x: bool,
        /// Subsystems.
        sub: Vec<String>,
        /// Contacts that entered (true) or left (false) the user's My folder.
        flips: Vec<(String, bool)>,
    },
    /// A user deleted a contact from their view (delete policy `hide`): it stays in the CRM
    /// and disappears from that user's folders only.
    #[serde(rename = "h")]
    Hide {
        /// Sequence number.
        s: u64,
        /// User id.
        user: String,
        /// Contact id.
        id: String,
    },
}

impl LogRecord {
    /// Sequence number.
    pub fn seq(&self) -> u64 {
        match self {
            LogRecord::Contact { s, .. }
            | LogRecord::User { s, .. }
            | LogRecord::Hide { s, .. } => *s,
        }
    }
}

struct UserNode {
    rec: Option<Arc<User>>,
    subs: Vec<u32>,
    resp_companies: Vec<u32>,
    team_projects: Vec<u32>,
    resp_leads: Vec<u32>,
    owned: Vec<u32>,
    my: HashSet<u32>,
    my_log: Vec<MyEvent>,
    logged_exists: bool,
    logged_subs: Vec<u32>,
    last_entry: u32,
    hidden: HashSet<u32>,
    hidden_log: Vec<(u64, u32)>,
}

struct ContactNode {
    rec: Option<Arc<Contact>>,
    version: Arc<str>,
    companies: Vec<u32>,
    own_subs: Vec<u32>,
    projects: Vec<u32>,
    leads: Vec<u32>,
    owner: Option<u32>,
    logged_exists: bool,
    visible: bool,
    subs: Vec<u32>,
    in_my: Vec<u32>,
    logged_ver: Box<str>,
    seq: u64,
    first_seq: u64,
    modified: u64,
    last_entry: u32,
    /// Earlier versions a client may still hold: (content version, record), newest last.
    history: Vec<(Box<str>, Arc<Contact>)>,
}

impl Default for UserNode {
    fn default() -> Self {
        UserNode {
            rec: None,
            subs: Vec::new(),
            resp_companies: Vec::new(),
            team_projects: Vec::new(),
            resp_leads: Vec::new(),
            owned: Vec::new(),
            my: HashSet::new(),
            my_log: Vec::new(),
            logged_exists: false,
            logged_subs: Vec::new(),
            last_entry: NONE,
            hidden: HashSet::new(),
            hidden_log: Vec::new(),
        }
    }
}

impl Default for ContactNode {
    fn default() -> Self {
        ContactNode {
            rec: None,
            version: "".into(),
            companies: Vec::new(),
            own_subs: Vec::new(),
            projects: Vec::new(),
            leads: Vec::new(),
            owner: None,
            logged_exists: false,
            visible: false,
            subs: Vec::new(),
            in_my: Vec::new(),
            logged_ver: "".into(),
            seq: 0,
            first_seq: 0,
            modified: 0,
            last_entry: NONE,
            history: Vec::new(),
        }
    }
}

#[derive(Default)]
struct CompanyNode {
    rec: Option<Arc<Company>>,
    contacts: Vec<u32>,
    responsible: Vec<u32>,
    subs: Vec<u32>,
    excluded: bool,
}

#[derive(Default)]
struct ProjectNode {
    rec: Option<Arc<Project>>,
    contacts: Vec<u32>,
    team: Vec<u32>,
}

#[derive(Default)]
struct LeadNode {
    rec: Option<Arc<Lead>>,
    contacts: Vec<u32>,
    responsible: Option<u32>,
}

/// What changed in one applied batch.
#[derive(Debug, Default)]
pub struct Applied {
    /// New log entries, to persist with the batch.
    pub log: Vec<LogRecord>,
    /// Contacts whose entries were written.
    pub contacts_touched: usize,
}

/// How a contact changed in a folder since a cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ItemChange {
    /// Entered the folder.
    Create,
    /// Still in the folder, changed.
    Update,
    /// Left the folder.
    Delete,
}

/// The engine. Not thread-safe by itself; the replica wraps it in a lock.
pub struct Engine {
    rules: FolderRules,
    users_ix: Interner,
    contacts_ix: Interner,
    companies_ix: Interner,
    projects_ix: Interner,
    leads_ix: Interner,
    subs_ix: Interner,
    users: Vec<UserNode>,
    contacts: Vec<ContactNode>,
    companies: Vec<CompanyNode>,
    projects: Vec<ProjectNode>,
    leads: Vec<LeadNode>,
    subsystems: Vec<Option<Arc<Subsystem>>>,
    sub_contacts: Vec<HashSet<u32>>,
    visible_count: usize,
    log: Vec<Entry>,
    seq: u64,
    dirty_contacts: BTreeSet<u32>,
    dirty_users: BTreeSet<u32>,
    users_by_login: HashMap<String, u32>,
    /// Lookup indexes for identifying properties, so an equality restriction on one of them
    /// (DavMail looks every contact up by its resource name) costs a hash lookup, not a
    /// folder scan: contacts by lower-cased id, by first sequence number, and by lower-cased
    /// e-mail address.
    contacts_by_lower_id: HashMap<Box<str>, Vec<u32>>,
    contacts_by_uid: HashMap<u64, u32>,
    contacts_by_email: HashMap<Box<str>, Vec<u32>>,
    /// Seconds since the epoch, for contacts' modification times (injected, so tests and
    /// replays can fix it; the system clock by default).
    clock: fn() -> u64,
}

fn unix_now() -> u64 {
    crate::domain::time::unix_now().max(0) as u64
}

/// FNV-1a, 64 bit: a digest that stays the same across builds (it is persisted).
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

fn sorted(mut v: Vec<u32>) -> Vec<u32> {
    v.sort_unstable();
    v.dedup();
    v
}

fn remove(v: &mut Vec<u32>, x: u32) {
    if let Some(p) = v.iter().position(|&y| y == x) {
        v.swap_remove(p);
    }
}

fn add(v: &mut Vec<u32>, x: u32) {
    if !v.contains(&x) {
        v.push(x);
    }
}

fn intersects(a: &[u32], b: &[u32]) -> bool {
    // Both sorted.
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Equal => return true,
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
        }
    }
    false
}

fn grow<T: Default>(v: &mut Vec<T>, i: u32) -> &mut T {
    let i = i as usize;
    if v.len() <= i {
        v.resize_with(i + 1, T::default);
    }
    &mut v[i]
}

/// Why a contact is where it is for a user: the answer of `explain`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// User login.
    pub user: String,
    /// Contact id.
    pub contact: String,
    /// The folder holding the contact, or none when it is hidden.
    pub folder: Option<VirtualFolder>,
    /// The rule paths that put the contact in My (may be non-empty for a hidden contact,
    /// showing which rule would apply).
    pub rules: Vec<String>,
    /// Why the contact is in that folder, or why it is hidden.
    pub reason: String,
}

impl Engine {
    /// An empty engine with the given rules.
    pub fn new(rules: FolderRules) -> Engine {
        Engine {
            rules,
            users_ix: Interner::default(),
            contacts_ix: Interner::default(),
            companies_ix: Interner::default(),
            projects_ix: Interner::default(),
            leads_ix: Interner::default(),
            subs_ix: Interner::default(),
            users: Vec::new(),
            contacts: Vec::new(),
            companies: Vec::new(),
            projects: Vec::new(),
            leads: Vec::new(),
            subsystems: Vec::new(),
            sub_contacts: Vec::new(),
            visible_count: 0,
            log: Vec::new(),
            seq: 0,
            dirty_contacts: BTreeSet::new(),
            dirty_users: BTreeSet::new(),
            users_by_login: HashMap::new(),
            contacts_by_lower_id: HashMap::new(),
            contacts_by_uid: HashMap::new(),
            contacts_by_email: HashMap::new(),
            clock: unix_now,
        }
    }

    /// Uses `clock` (seconds since the epoch) instead of the system clock.
    pub fn set_clock(&mut self, clock: fn() -> u64) {
        self.clock = clock;
    }

    /// The rules in force.
    pub fn rules(&self) -> &FolderRules {
        &self.rules
    }

    /// The last assigned sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Number of log entries kept.
    pub fn log_len(&self) -> usize {
        self.log.len()
    }

    /// Applies a batch of CRM changes and returns the log entries it produced.
    pub fn apply(&mut self, changes: Vec<Change>) -> Applied {
        self.ingest(changes);
        self.reconcile()
    }

    /// Loads a full snapshot of the CRM after [`Engine::replay`] (start-up): everything is
    /// reconciled against the log, so contacts that changed, appeared or vanished while
    /// crmgate was down, and rule changes made in the config, get entries; nothing else does.
    pub fn load(&mut self, changes: Vec<Change>) -> Applied {
        self.ingest(changes);
        self.mark_all_dirty();
        self.reconcile()
    }

    /// Updates records and reverse indexes, marking what must be reconciled.
    fn ingest(&mut self, changes: Vec<Change>) {
        for ch in changes {
            match ch {
                Change::Upsert(v) => self.upsert(v),
                Change::Deleted(kind, id) => self.delete(kind, &id),
            }
        }
    }
}

/// The index keys of a contact's e-mail addresses.
fn email_keys(c: &Contact) -> Vec<Box<str>> {
    let mut v: Vec<Box<str>> = c
        .emails
        .iter()
        .map(|e| e.address.trim().to_lowercase().into_boxed_str())
        .filter(|e| !e.is_empty())
        .collect();
    v.sort();
    v.dedup();
    v
}
