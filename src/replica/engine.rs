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
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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
        }
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

    // ---- intern helpers -------------------------------------------------------------

    fn user(&mut self, id: &str) -> u32 {
        let i = self.users_ix.intern(id);
        grow(&mut self.users, i);
        i
    }

    fn contact(&mut self, id: &str) -> u32 {
        let known = self.contacts_ix.get(id);
        let i = self.contacts_ix.intern(id);
        grow(&mut self.contacts, i);
        if known.is_none() {
            add(
                self.contacts_by_lower_id
                    .entry(id.to_lowercase().into())
                    .or_default(),
                i,
            );
        }
        i
    }

    fn company(&mut self, id: &str) -> u32 {
        let i = self.companies_ix.intern(id);
        grow(&mut self.companies, i);
        i
    }

    fn project(&mut self, id: &str) -> u32 {
        let i = self.projects_ix.intern(id);
        grow(&mut self.projects, i);
        i
    }

    fn lead(&mut self, id: &str) -> u32 {
        let i = self.leads_ix.intern(id);
        grow(&mut self.leads, i);
        i
    }

    fn sub(&mut self, id: &str) -> u32 {
        let i = self.subs_ix.intern(id);
        grow(&mut self.subsystems, i);
        grow(&mut self.sub_contacts, i);
        i
    }

    fn subs_of<T: AsRef<str>>(&mut self, ids: &[T]) -> Vec<u32> {
        sorted(ids.iter().map(|s| self.sub(s.as_ref())).collect())
    }

    // ---- applying CRM changes --------------------------------------------------------

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

    fn upsert(&mut self, v: Versioned) {
        match v.record {
            Record::Subsystem(s) => {
                let i = self.sub(s.id.as_str());
                self.subsystems[i as usize] = Some(Arc::new(s));
            }
            Record::User(u) => self.set_user(&u.id.0.clone(), Some(u)),
            Record::Company(k) => self.set_company(&k.id.0.clone(), Some(k)),
            Record::Contact(c) => self.set_contact(&c.id.0.clone(), Some(c), &v.version),
            Record::Project(p) => self.set_project(&p.id.0.clone(), Some(p)),
            Record::Lead(l) => self.set_lead(&l.id.0.clone(), Some(l)),
        }
    }

    fn delete(&mut self, kind: Kind, id: &str) {
        match kind {
            Kind::Subsystem => {
                if let Some(i) = self.subs_ix.get(id) {
                    self.subsystems[i as usize] = None;
                }
            }
            Kind::User => self.set_user(id, None),
            Kind::Company => self.set_company(id, None),
            Kind::Contact => self.set_contact(id, None, ""),
            Kind::Project => self.set_project(id, None),
            Kind::Lead => self.set_lead(id, None),
        }
    }

    fn set_user(&mut self, id: &str, rec: Option<User>) {
        let u = self.user(id);
        let subs = match &rec {
            Some(r) => self.subs_of(&r.subsystems),
            None => Vec::new(),
        };
        let node = &mut self.users[u as usize];
        if let Some(old) = &node.rec {
            self.users_by_login.remove(&old.login.to_lowercase());
        }
        if let Some(r) = &rec {
            self.users_by_login.insert(r.login.to_lowercase(), u);
        }
        node.subs = subs;
        node.rec = rec.map(Arc::new);
        self.dirty_users.insert(u);
    }

    fn set_company(&mut self, id: &str, rec: Option<Company>) {
        let k = self.company(id);
        let (resp, subs, excluded) = match &rec {
            Some(r) => {
                let resp: Vec<u32> = sorted(
                    r.responsible
                        .iter()
                        .map(|u| self.user(u.as_str()))
                        .collect(),
                );
                let subs = self.subs_of(&r.subsystems);
                let excl = r.types.iter().any(|t| self.rules.is_excluded_type(t));
                (resp, subs, excl)
            }
            None => (Vec::new(), Vec::new(), false),
        };
        let node = &mut self.companies[k as usize];
        let old_resp = std::mem::replace(&mut node.responsible, resp.clone());
        node.subs = subs;
        node.excluded = excluded;
        node.rec = rec.map(Arc::new);
        let contacts = node.contacts.clone();
        for u in &old_resp {
            if !resp.contains(u) {
                remove(&mut self.users[*u as usize].resp_companies, k);
            }
        }
        for u in &resp {
            add(&mut self.users[*u as usize].resp_companies, k);
        }
        self.dirty_contacts.extend(contacts);
    }

    fn set_contact(&mut self, id: &str, rec: Option<Contact>, version: &str) {
        let c = self.contact(id);
        let (companies, own_subs, owner) = match &rec {
            Some(r) => {
                let ks = sorted(
                    r.companies
                        .iter()
                        .map(|k| self.company(k.as_str()))
                        .collect(),
                );
                let subs = self.subs_of(&r.subsystems);
                let owner = r.owner.as_ref().map(|u| self.user(u.as_str()));
                (ks, subs, owner)
            }
            None => (Vec::new(), Vec::new(), None),
        };
        let new_emails = rec.as_ref().map(email_keys).unwrap_or_default();
        let node = &mut self.contacts[c as usize];
        let old_emails = node.rec.as_deref().map(email_keys).unwrap_or_default();
        for e in old_emails.iter().filter(|e| !new_emails.contains(e)) {
            if let Some(v) = self.contacts_by_email.get_mut(&**e) {
                remove(v, c);
                if v.is_empty() {
                    self.contacts_by_email.remove(&**e);
                }
            }
        }
        for e in new_emails {
            add(self.contacts_by_email.entry(e).or_default(), c);
        }
        let node = &mut self.contacts[c as usize];
        if let Some(old) = node.rec.take() {
            if !node.logged_ver.is_empty() {
                node.history.push((node.logged_ver.clone(), old));
                if node.history.len() > HISTORY {
                    node.history.remove(0);
                }
            }
        }
        let old_companies = std::mem::replace(&mut node.companies, companies.clone());
        let old_owner = std::mem::replace(&mut node.owner, owner);
        node.own_subs = own_subs;
        node.rec = rec.map(Arc::new);
        node.version = version.into();
        for k in &old_companies {
            if !companies.contains(k) {
                remove(&mut self.companies[*k as usize].contacts, c);
            }
        }
        for k in &companies {
            add(&mut self.companies[*k as usize].contacts, c);
        }
        if old_owner != owner {
            if let Some(u) = old_owner {
                remove(&mut self.users[u as usize].owned, c);
            }
            if let Some(u) = owner {
                add(&mut self.users[u as usize].owned, c);
            }
        }
        self.dirty_contacts.insert(c);
    }

    fn set_project(&mut self, id: &str, rec: Option<Project>) {
        let p = self.project(id);
        let (contacts, team) = match &rec {
            Some(r) => (
                sorted(
                    r.contacts
                        .iter()
                        .map(|c| self.contact(c.as_str()))
                        .collect(),
                ),
                sorted(r.team.iter().map(|u| self.user(u.as_str())).collect()),
            ),
            None => (Vec::new(), Vec::new()),
        };
        let node = &mut self.projects[p as usize];
        node.rec = rec.map(Arc::new);
        let old_contacts = std::mem::replace(&mut node.contacts, contacts.clone());
        let old_team = std::mem::replace(&mut node.team, team.clone());
        for u in old_team.iter().filter(|u| !team.contains(u)) {
            remove(&mut self.users[*u as usize].team_projects, p);
        }
        for u in &team {
            add(&mut self.users[*u as usize].team_projects, p);
        }
        let team_changed = old_team != team;
        for c in old_contacts.iter().filter(|c| !contacts.contains(c)) {
            remove(&mut self.contacts[*c as usize].projects, p);
            self.dirty_contacts.insert(*c);
        }
        for c in &contacts {
            let n = &mut self.contacts[*c as usize];
            if !n.projects.contains(&p) {
                n.projects.push(p);
                self.dirty_contacts.insert(*c);
            } else if team_changed {
                self.dirty_contacts.insert(*c);
            }
        }
    }

    fn set_lead(&mut self, id: &str, rec: Option<Lead>) {
        let l = self.lead(id);
        let (contacts, resp) = match &rec {
            Some(r) => (
                sorted(
                    r.contacts
                        .iter()
                        .map(|c| self.contact(c.as_str()))
                        .collect(),
                ),
                r.responsible.as_ref().map(|u| self.user(u.as_str())),
            ),
            None => (Vec::new(), None),
        };
        let node = &mut self.leads[l as usize];
        node.rec = rec.map(Arc::new);
        let old_contacts = std::mem::replace(&mut node.contacts, contacts.clone());
        let old_resp = std::mem::replace(&mut node.responsible, resp);
        if old_resp != resp {
            if let Some(u) = old_resp {
                remove(&mut self.users[u as usize].resp_leads, l);
            }
            if let Some(u) = resp {
                add(&mut self.users[u as usize].resp_leads, l);
            }
        }
        for c in old_contacts.iter().filter(|c| !contacts.contains(c)) {
            remove(&mut self.contacts[*c as usize].leads, l);
            self.dirty_contacts.insert(*c);
        }
        for c in &contacts {
            let n = &mut self.contacts[*c as usize];
            if !n.leads.contains(&l) {
                n.leads.push(l);
                self.dirty_contacts.insert(*c);
            } else if old_resp != resp {
                self.dirty_contacts.insert(*c);
            }
        }
    }

    // ---- reconciliation ---------------------------------------------------------------

    fn user_exists(&self, u: u32) -> bool {
        self.users.get(u as usize).is_some_and(|n| n.rec.is_some())
    }

    fn scope_ok(&self, user_subs: &[u32], contact_subs: &[u32]) -> bool {
        match self.rules.global_scope {
            GlobalScope::Subsystem => intersects(user_subs, contact_subs),
            GlobalScope::All | GlobalScope::Off => true,
        }
    }

    /// (visible, derived subsystems, candidate My users before the scope check, content
    /// version: the CRM version and a digest of the company names the contact shows).
    fn derive(&self, c: u32) -> (bool, Vec<u32>, Vec<u32>, String) {
        let node = &self.contacts[c as usize];
        let Some(rec) = &node.rec else {
            return (false, Vec::new(), Vec::new(), String::new());
        };
        let comps: Vec<&CompanyNode> = node
            .companies
            .iter()
            .map(|k| &self.companies[*k as usize])
            .filter(|k| k.rec.is_some())
            .collect();
        let excluded = comps.iter().any(|k| k.excluded)
            || rec.types.iter().any(|t| self.rules.is_excluded_type(t));
        let visible = !excluded && self.rules.passes_sync_tag(&rec.categories);
        let mut subs = node.own_subs.clone();
        for k in &comps {
            subs.extend_from_slice(&k.subs);
        }
        let subs = sorted(subs);
        let mut cand: Vec<u32> = Vec::new();
        for k in &comps {
            cand.extend_from_slice(&k.responsible);
        }
        for p in &node.projects {
            cand.extend_from_slice(&self.projects[*p as usize].team);
        }
        for l in &node.leads {
            cand.extend(self.leads[*l as usize].responsible);
        }
        if self.rules.owner_rule {
            cand.extend(node.owner);
        }
        // In the record's own order: interned indices differ between runs.
        let mut digest = Fnv::default();
        for k in &rec.companies {
            if let Some(r) = self.company_record(k.as_str()) {
                digest.write(r.name.as_bytes());
                digest.write(&[0]);
            }
        }
        let ver = format!("{}:{:x}", node.version, digest.0);
        (visible, subs, cand, ver)
    }

    fn reconcile(&mut self) -> Applied {
        let mut out = Applied::default();
        let dirty: Vec<u32> = std::mem::take(&mut self.dirty_contacts)
            .into_iter()
            .collect();
        for c in dirty {
            if self.reconcile_contact(c, &mut out.log) {
                out.contacts_touched += 1;
            }
        }
        let users: Vec<u32> = std::mem::take(&mut self.dirty_users).into_iter().collect();
        for u in users {
            self.reconcile_user(u, &mut out.log);
        }
        out
    }

    fn reconcile_contact(&mut self, c: u32, log: &mut Vec<LogRecord>) -> bool {
        let (visible, subs, cand, ver) = self.derive(c);
        let exists = self.contacts[c as usize].rec.is_some();
        let my: Vec<u32> = if visible {
            sorted(
                cand.into_iter()
                    .filter(|u| {
                        self.user_exists(*u) && self.scope_ok(&self.users[*u as usize].subs, &subs)
                    })
                    .collect(),
            )
        } else {
            Vec::new()
        };
        let node = &self.contacts[c as usize];
        let had_entry = node.last_entry != NONE;
        let changed = node.logged_exists != exists
            || node.visible != visible
            || node.subs != subs
            || node.in_my != my
            || (exists && *node.logged_ver != *ver);
        if !changed || (!had_entry && !exists) {
            return false;
        }
        self.seq += 1;
        let seq = self.seq;
        let time = unix_now().max(self.contacts[c as usize].modified + 1);
        let rec = LogRecord::Contact {
            s: seq,
            id: self.contacts_ix.name(c).to_owned(),
            x: exists,
            v: visible,
            sub: subs
                .iter()
                .map(|s| self.subs_ix.name(*s).to_owned())
                .collect(),
            my: my
                .iter()
                .map(|u| self.users_ix.name(*u).to_owned())
                .collect(),
            ver: ver.clone(),
            at: time,
        };
        let state = ContactState {
            exists,
            visible,
            subs,
            my,
            ver,
            time,
        };
        self.push_contact_entry(c, seq, state);
        log.push(rec);
        true
    }

    fn push_contact_entry(&mut self, c: u32, seq: u64, state: ContactState) {
        let ContactState {
            exists,
            visible,
            subs,
            my,
            ver,
            time,
        } = state;
        let prev = self.contacts[c as usize].last_entry;
        self.log.push(Entry::Contact {
            seq,
            contact: c,
            exists,
            visible,
            subs: subs.clone().into_boxed_slice(),
            prev,
        });
        let idx = (self.log.len() - 1) as u32;
        let node = &mut self.contacts[c as usize];
        let old_my = std::mem::replace(&mut node.in_my, my.clone());
        let old_subs = std::mem::replace(&mut node.subs, subs.clone());
        let was_visible = node.visible;
        node.visible = visible;
        node.logged_exists = exists;
        node.logged_ver = ver.into();
        node.seq = seq;
        node.modified = time;
        if node.first_seq == 0 {
            node.first_seq = seq;
            self.contacts_by_uid.insert(seq, c);
        }
        node.last_entry = idx;
        if was_visible != visible {
            if visible {
                self.visible_count += 1;
            } else {
                self.visible_count -= 1;
            }
        }
        // Subsystem index over existing contacts.
        for s in &old_subs {
            self.sub_contacts[*s as usize].remove(&c);
        }
        if exists {
            for s in &subs {
                self.sub_contacts[*s as usize].insert(c);
            }
        }
        for u in &old_my {
            if !my.contains(u) {
                let un = &mut self.users[*u as usize];
                un.my.remove(&c);
                un.my_log.push(MyEvent {
                    seq,
                    contact: c,
                    added: false,
                });
            }
        }
        for u in &my {
            if !old_my.contains(u) {
                let un = &mut self.users[*u as usize];
                un.my.insert(c);
                un.my_log.push(MyEvent {
                    seq,
                    contact: c,
                    added: true,
                });
            }
        }
    }

    fn my_target(&self, u: u32) -> HashSet<u32> {
        let node = &self.users[u as usize];
        let mut out = HashSet::new();
        if node.rec.is_none() {
            return out;
        }
        let mut consider = |c: u32| {
            let cn = &self.contacts[c as usize];
            if cn.visible && cn.logged_exists && self.scope_ok(&node.subs, &cn.subs) {
                out.insert(c);
            }
        };
        for k in &node.resp_companies {
            if self.companies[*k as usize].rec.is_some() {
                self.companies[*k as usize]
                    .contacts
                    .iter()
                    .for_each(|c| consider(*c));
            }
        }
        for p in &node.team_projects {
            self.projects[*p as usize]
                .contacts
                .iter()
                .for_each(|c| consider(*c));
        }
        for l in &node.resp_leads {
            self.leads[*l as usize]
                .contacts
                .iter()
                .for_each(|c| consider(*c));
        }
        if self.rules.owner_rule {
            node.owned.iter().for_each(|c| consider(*c));
        }
        out
    }

    fn reconcile_user(&mut self, u: u32, log: &mut Vec<LogRecord>) {
        let target = self.my_target(u);
        let node = &self.users[u as usize];
        let exists = node.rec.is_some();
        let mut flips: Vec<(u32, bool)> = target
            .iter()
            .filter(|c| !node.my.contains(c))
            .map(|c| (*c, true))
            .chain(
                node.my
                    .iter()
                    .filter(|c| !target.contains(c))
                    .map(|c| (*c, false)),
            )
            .collect();
        flips.sort_unstable();
        let scope_changed = node.logged_exists != exists || node.logged_subs != node.subs;
        if flips.is_empty() && !scope_changed {
            return;
        }
        self.seq += 1;
        let seq = self.seq;
        let subs = node.subs.clone();
        log.push(LogRecord::User {
            s: seq,
            id: self.users_ix.name(u).to_owned(),
            x: exists,
            sub: subs
                .iter()
                .map(|s| self.subs_ix.name(*s).to_owned())
                .collect(),
            flips: flips
                .iter()
                .map(|(c, a)| (self.contacts_ix.name(*c).to_owned(), *a))
                .collect(),
        });
        self.push_user_entry(u, seq, exists, subs, &flips);
    }

    fn push_user_entry(
        &mut self,
        u: u32,
        seq: u64,
        exists: bool,
        subs: Vec<u32>,
        flips: &[(u32, bool)],
    ) {
        let prev = self.users[u as usize].last_entry;
        self.log.push(Entry::User {
            seq,
            user: u,
            subs: subs.clone().into_boxed_slice(),
            prev,
        });
        let idx = (self.log.len() - 1) as u32;
        let node = &mut self.users[u as usize];
        node.last_entry = idx;
        node.logged_exists = exists;
        node.logged_subs = subs;
        for &(c, added) in flips {
            if added {
                node.my.insert(c);
            } else {
                node.my.remove(&c);
            }
            node.my_log.push(MyEvent {
                seq,
                contact: c,
                added,
            });
        }
        for &(c, added) in flips {
            let cm = &mut self.contacts[c as usize].in_my;
            if added {
                add(cm, u);
                cm.sort_unstable();
            } else if let Some(p) = cm.iter().position(|x| *x == u) {
                cm.remove(p);
            }
        }
    }

    /// Replays one persisted log entry (restart). Records are loaded afterwards, then
    /// [`Engine::apply`] reconciles what differs.
    pub fn replay(&mut self, rec: &LogRecord) {
        match rec {
            LogRecord::Contact {
                s,
                id,
                x,
                v,
                sub,
                my,
                ver,
                at,
            } => {
                let c = self.contact(id);
                let subs = self.subs_of(sub);
                let my = sorted(my.iter().map(|u| self.user(u)).collect());
                let state = ContactState {
                    exists: *x,
                    visible: *v,
                    subs,
                    my,
                    ver: ver.clone(),
                    time: *at,
                };
                self.push_contact_entry(c, *s, state);
            }
            LogRecord::User {
                s,
                id,
                x,
                sub,
                flips,
            } => {
                let u = self.user(id);
                let subs = self.subs_of(sub);
                let flips: Vec<(u32, bool)> =
                    flips.iter().map(|(c, a)| (self.contact(c), *a)).collect();
                self.push_user_entry(u, *s, *x, subs, &flips);
            }
            LogRecord::Hide { s, user, id } => {
                let (u, c) = (self.user(user), self.contact(id));
                let n = &mut self.users[u as usize];
                if n.hidden.insert(c) {
                    n.hidden_log.push((*s, c));
                }
            }
        }
        self.seq = self.seq.max(rec.seq());
    }

    fn mark_all_dirty(&mut self) {
        self.dirty_contacts.extend(0..self.contacts.len() as u32);
        self.dirty_users.extend(0..self.users.len() as u32);
    }

    /// Hides a contact from one user's folders (delete policy `hide`); returns the log entry
    /// to persist, or `None` when it was hidden already.
    pub fn hide(&mut self, u: u32, c: u32) -> Option<LogRecord> {
        if self.users.get(u as usize)?.hidden.contains(&c) {
            return None;
        }
        self.seq += 1;
        let s = self.seq;
        let n = &mut self.users[u as usize];
        n.hidden.insert(c);
        n.hidden_log.push((s, c));
        Some(LogRecord::Hide {
            s,
            user: self.users_ix.name(u).to_owned(),
            id: self.contacts_ix.name(c).to_owned(),
        })
    }

    /// Companies named `name` (case-insensitive) whose subsystems the user may see.
    pub fn companies_named(&self, u: u32, name: &str) -> Vec<Arc<Company>> {
        let want = name.trim().to_lowercase();
        let Some(un) = self.users.get(u as usize) else {
            return Vec::new();
        };
        self.companies
            .iter()
            .filter_map(|k| k.rec.as_ref().map(|r| (k, r)))
            .filter(|(_, r)| r.name.trim().to_lowercase() == want)
            .filter(|(k, _)| self.scope_ok(&un.subs, &k.subs))
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// Earlier versions of a contact a client may still hold, newest last.
    pub fn contact_history(&self, c: u32) -> &[(Box<str>, Arc<Contact>)] {
        self.contacts
            .get(c as usize)
            .map(|n| &n.history[..])
            .unwrap_or(&[])
    }

    fn hidden(&self, u: u32, c: u32) -> bool {
        self.users
            .get(u as usize)
            .is_some_and(|n| n.hidden.contains(&c))
    }

    // ---- reads ------------------------------------------------------------------------

    /// The user index for a login (case-insensitive) or a user id.
    pub fn find_user(&self, login_or_id: &str) -> Option<u32> {
        self.users_by_login
            .get(&login_or_id.to_lowercase())
            .copied()
            .or_else(|| {
                self.users_ix
                    .get(login_or_id)
                    .filter(|u| self.user_exists(*u))
            })
    }

    /// The user index for a login (case-insensitive); what sign-in uses.
    pub fn find_login(&self, login: &str) -> Option<u32> {
        self.users_by_login.get(&login.to_lowercase()).copied()
    }

    /// A user's record.
    pub fn user_record(&self, u: u32) -> Option<&Arc<User>> {
        self.users.get(u as usize).and_then(|n| n.rec.as_ref())
    }

    /// All existing users.
    pub fn user_ids(&self) -> Vec<u32> {
        (0..self.users.len() as u32)
            .filter(|u| self.user_exists(*u))
            .collect()
    }

    /// The contact index for an id.
    pub fn find_contact(&self, id: &str) -> Option<u32> {
        self.contacts_ix.get(id)
    }

    /// A contact's record by id.
    pub fn contact_record_by_id(&self, id: &str) -> Option<&Arc<Contact>> {
        self.contact_record(self.find_contact(id)?).map(|(r, _)| r)
    }

    /// A contact's record and CRM version.
    pub fn contact_record(&self, c: u32) -> Option<(&Arc<Contact>, &str)> {
        let n = self.contacts.get(c as usize)?;
        n.rec.as_ref().map(|r| (r, &*n.version))
    }

    /// The contact id of an index.
    pub fn contact_id(&self, c: u32) -> &str {
        self.contacts_ix.name(c)
    }

    /// A stable number per contact, increasing with the time it first appeared (its first
    /// sequence number): a sort and paging key that never changes.
    pub fn contact_uid(&self, c: u32) -> u64 {
        self.contacts
            .get(c as usize)
            .map(|n| n.first_seq)
            .unwrap_or(0)
    }

    /// Contacts whose id, lower-cased, is `lower_id`.
    pub fn contacts_by_lower_id(&self, lower_id: &str) -> &[u32] {
        self.contacts_by_lower_id
            .get(lower_id)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The contact whose [`Engine::contact_uid`] is `uid`.
    pub fn contact_by_uid(&self, uid: u64) -> Option<u32> {
        self.contacts_by_uid.get(&uid).copied()
    }

    /// Contacts with the e-mail address `lower` (lower-cased, trimmed) in their record.
    pub fn contacts_by_email(&self, lower: &str) -> &[u32] {
        self.contacts_by_email
            .get(lower)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// When the contact last changed (unix seconds; moves at least 1 s per change).
    pub fn contact_modified(&self, c: u32) -> u64 {
        self.contacts
            .get(c as usize)
            .map(|n| n.modified)
            .unwrap_or(0)
    }

    /// The content version of a contact (CRM version and company-name digest).
    pub fn contact_version(&self, c: u32) -> &str {
        self.contacts
            .get(c as usize)
            .map(|n| &*n.logged_ver)
            .unwrap_or("")
    }

    /// The companies of a contact, in the record's order (existing ones only).
    pub fn contact_companies(&self, c: u32) -> Vec<&Arc<Company>> {
        self.contacts
            .get(c as usize)
            .and_then(|n| n.rec.as_ref())
            .map(|r| {
                r.companies
                    .iter()
                    .filter_map(|k| self.company_record(k.as_str()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The sequence number of a contact's last change.
    pub fn contact_seq(&self, c: u32) -> u64 {
        self.contacts.get(c as usize).map(|n| n.seq).unwrap_or(0)
    }

    /// A company record by id.
    pub fn company_record(&self, id: &str) -> Option<&Arc<Company>> {
        let k = self.companies_ix.get(id)?;
        self.companies[k as usize].rec.as_ref()
    }

    /// A record of any kind by id, as the replica holds it.
    pub fn record(&self, kind: Kind, id: &str) -> Option<Record> {
        Some(match kind {
            Kind::Subsystem => Record::Subsystem(
                (**self.subsystems[self.subs_ix.get(id)? as usize].as_ref()?).clone(),
            ),
            Kind::User => Record::User((**self.user_record(self.users_ix.get(id)?)?).clone()),
            Kind::Company => Record::Company((**self.company_record(id)?).clone()),
            Kind::Contact => {
                Record::Contact((**self.contact_record(self.contacts_ix.get(id)?)?.0).clone())
            }
            Kind::Project => Record::Project(
                (**self.projects[self.projects_ix.get(id)? as usize]
                    .rec
                    .as_ref()?)
                .clone(),
            ),
            Kind::Lead => {
                Record::Lead((**self.leads[self.leads_ix.get(id)? as usize].rec.as_ref()?).clone())
            }
        })
    }

    /// Ids of the live records of a kind, sorted.
    pub fn ids(&self, kind: Kind) -> Vec<String> {
        fn live<T>(ix: &Interner, recs: &[T], has: impl Fn(&T) -> bool) -> Vec<String> {
            let mut v: Vec<String> = (0..recs.len())
                .filter(|i| has(&recs[*i]))
                .map(|i| ix.name(i as u32).to_owned())
                .collect();
            v.sort();
            v
        }
        match kind {
            Kind::Subsystem => live(&self.subs_ix, &self.subsystems, |r| r.is_some()),
            Kind::User => live(&self.users_ix, &self.users, |n| n.rec.is_some()),
            Kind::Company => live(&self.companies_ix, &self.companies, |n| n.rec.is_some()),
            Kind::Contact => live(&self.contacts_ix, &self.contacts, |n| n.rec.is_some()),
            Kind::Project => live(&self.projects_ix, &self.projects, |n| n.rec.is_some()),
            Kind::Lead => live(&self.leads_ix, &self.leads, |n| n.rec.is_some()),
        }
    }

    /// Counts of live records per kind.
    pub fn counts(&self) -> [(Kind, usize); 6] {
        [
            (
                Kind::Subsystem,
                self.subsystems.iter().filter(|s| s.is_some()).count(),
            ),
            (
                Kind::User,
                self.users.iter().filter(|n| n.rec.is_some()).count(),
            ),
            (
                Kind::Company,
                self.companies.iter().filter(|n| n.rec.is_some()).count(),
            ),
            (
                Kind::Contact,
                self.contacts.iter().filter(|n| n.rec.is_some()).count(),
            ),
            (
                Kind::Project,
                self.projects.iter().filter(|n| n.rec.is_some()).count(),
            ),
            (
                Kind::Lead,
                self.leads.iter().filter(|n| n.rec.is_some()).count(),
            ),
        ]
    }

    fn in_global_now(&self, u: u32, c: u32) -> bool {
        let un = &self.users[u as usize];
        let cn = &self.contacts[c as usize];
        if self.rules.global_scope == GlobalScope::Off || !cn.visible || un.my.contains(&c) {
            return false;
        }
        self.scope_ok(&un.subs, &cn.subs)
    }

    /// Which folder of user `u` holds contact `c` now.
    pub fn folder_of(&self, u: u32, c: u32) -> Option<VirtualFolder> {
        if !self.user_exists(u) || self.contacts.get(c as usize).is_none() || self.hidden(u, c) {
            return None;
        }
        if self.users[u as usize].my.contains(&c) {
            Some(VirtualFolder::My)
        } else if self.in_global_now(u, c) {
            Some(VirtualFolder::Global)
        } else {
            None
        }
    }

    /// Whether the Global folder is offered.
    pub fn global_offered(&self) -> bool {
        self.rules.global_scope != GlobalScope::Off
    }

    /// Contacts in a folder, ascending by index (unspecified but stable order).
    pub fn list(&self, u: u32, folder: VirtualFolder) -> Vec<u32> {
        let Some(un) = self.users.get(u as usize).filter(|n| n.rec.is_some()) else {
            return Vec::new();
        };
        let mut v: Vec<u32> = match folder {
            VirtualFolder::My => un.my.iter().copied().collect(),
            VirtualFolder::Global => match self.rules.global_scope {
                GlobalScope::Off => Vec::new(),
                GlobalScope::All => (0..self.contacts.len() as u32)
                    .filter(|c| self.contacts[*c as usize].visible && !un.my.contains(c))
                    .collect(),
                GlobalScope::Subsystem => {
                    let mut set: HashSet<u32> = HashSet::new();
                    for s in &un.subs {
                        set.extend(self.sub_contacts[*s as usize].iter().copied());
                    }
                    set.into_iter()
                        .filter(|c| self.contacts[*c as usize].visible && !un.my.contains(c))
                        .collect()
                }
            },
        };
        if !un.hidden.is_empty() {
            v.retain(|c| !un.hidden.contains(c));
        }
        v.sort_unstable();
        v
    }

    /// Number of contacts in a folder.
    pub fn count(&self, u: u32, folder: VirtualFolder) -> usize {
        let Some(n) = self.users.get(u as usize).filter(|n| n.rec.is_some()) else {
            return 0;
        };
        // Hidden contacts currently in this folder.
        let hidden = n.hidden.iter().filter(|c| {
            let in_my = n.my.contains(c);
            match folder {
                VirtualFolder::My => in_my,
                VirtualFolder::Global => !in_my && self.in_global_now(u, **c),
            }
        });
        let hidden = hidden.count();
        match (folder, self.rules.global_scope) {
            (VirtualFolder::My, _) => n.my.len() - hidden,
            (VirtualFolder::Global, GlobalScope::All) => self.visible_count - n.my.len() - hidden,
            _ => self.list(u, folder).len(),
        }
    }

    /// The user's My-membership log.
    pub fn my_log(&self, u: u32) -> &[MyEvent] {
        self.users
            .get(u as usize)
            .map(|n| &n.my_log[..])
            .unwrap_or(&[])
    }

    /// The user id of an index.
    pub fn user_id(&self, u: u32) -> &str {
        self.users_ix.name(u)
    }

    // ---- history ----------------------------------------------------------------------

    /// (exists, visible, subs) of a contact as of sequence `s`.
    fn contact_at(&self, c: u32, s: u64) -> Option<(bool, &[u32])> {
        let mut e = self.contacts[c as usize].last_entry;
        while e != NONE {
            match &self.log[e as usize] {
                Entry::Contact {
                    seq,
                    exists,
                    visible,
                    subs,
                    prev,
                    ..
                } => {
                    if *seq <= s {
                        return Some((*exists && *visible, subs));
                    }
                    e = *prev;
                }
                Entry::User { .. } => return None,
            }
        }
        None
    }

    fn user_subs_at(&self, u: u32, s: u64) -> &[u32] {
        let mut e = self.users[u as usize].last_entry;
        while e != NONE {
            match &self.log[e as usize] {
                Entry::User {
                    seq, subs, prev, ..
                } => {
                    if *seq <= s {
                        return subs;
                    }
                    e = *prev;
                }
                Entry::Contact { .. } => return &[],
            }
        }
        &[]
    }

    /// What changed in folder `folder` of user `u` after sequence `since`, in sequence order.
    /// `since == 0` lists the whole folder as creates. Returns `None` for a cursor from the
    /// future (not issued by this replica).
    pub fn changes_since(
        &self,
        u: u32,
        folder: VirtualFolder,
        since: u64,
    ) -> Option<Vec<(u32, ItemChange)>> {
        self.changes_since_seq(u, folder, since)
            .map(|v| v.into_iter().map(|(_, c, ch)| (c, ch)).collect())
    }

    /// Like [`Engine::changes_since`], with the sequence number of each item's latest change
    /// (for resumable paging), in (sequence, index) order.
    pub fn changes_since_seq(
        &self,
        u: u32,
        folder: VirtualFolder,
        since: u64,
    ) -> Option<Vec<(u64, u32, ItemChange)>> {
        if since > self.seq || !self.user_exists(u) {
            return None;
        }
        if since == 0 {
            let mut v: Vec<(u64, u32, ItemChange)> = self
                .list(u, folder)
                .into_iter()
                .map(|c| (self.contact_seq(c), c, ItemChange::Create))
                .collect();
            v.sort_unstable_by_key(|(s, c, _)| (*s, *c));
            return Some(v);
        }
        let un = &self.users[u as usize];
        let tail_start = self.log.partition_point(|e| e.seq() <= since);
        let my_start = un.my_log.partition_point(|e| e.seq <= since);
        // First My event after `since` per contact tells whether it was in My then.
        let mut first_my: HashMap<u32, bool> = HashMap::new();
        let mut last_seq: HashMap<u32, u64> = HashMap::new();
        for ev in &un.my_log[my_start..] {
            first_my.entry(ev.contact).or_insert(ev.added);
            let e = last_seq.entry(ev.contact).or_insert(0);
            *e = (*e).max(ev.seq);
        }
        let mut scope_changed = false;
        for e in &self.log[tail_start..] {
            match e {
                Entry::Contact { seq, contact, .. } => {
                    let x = last_seq.entry(*contact).or_insert(0);
                    *x = (*x).max(*seq);
                }
                Entry::User { user, .. } if *user == u => scope_changed = true,
                Entry::User { .. } => {}
            }
        }
        if scope_changed && folder == VirtualFolder::Global {
            let old = self.user_subs_at(u, since).to_vec();
            let candidates: Vec<u32> = match self.rules.global_scope {
                GlobalScope::Subsystem => {
                    let mut set = HashSet::new();
                    for s in old.iter().chain(un.subs.iter()) {
                        set.extend(self.sub_contacts[*s as usize].iter().copied());
                    }
                    set.into_iter().collect()
                }
                _ => Vec::new(),
            };
            let seq = self.seq;
            for c in candidates {
                last_seq.entry(c).or_insert(seq);
            }
        }
        let hide_start = un.hidden_log.partition_point(|(s, _)| *s <= since);
        for (s, c) in &un.hidden_log[hide_start..] {
            let e = last_seq.entry(*c).or_insert(0);
            *e = (*e).max(*s);
        }
        let hidden_then = |c: u32| un.hidden_log[..hide_start].iter().any(|(_, h)| *h == c);
        let user_subs_then = self.user_subs_at(u, since);
        let mut out: Vec<(u64, u32, ItemChange)> = Vec::new();
        for (&c, &seq) in &last_seq {
            let now_my = un.my.contains(&c);
            let was_my = match first_my.get(&c) {
                Some(added) => !added,
                None => now_my,
            };
            let (was, now) = match folder {
                VirtualFolder::My => (was_my, now_my),
                VirtualFolder::Global => {
                    let now = self.in_global_now(u, c);
                    let was = self.global_offered()
                        && !was_my
                        && match self.contact_at(c, since) {
                            Some((true, subs)) => self.scope_ok(user_subs_then, subs),
                            _ => false,
                        };
                    (was, now)
                }
            };
            // A contact the user hid is gone from their folders from the hide on.
            let was = was && !hidden_then(c);
            let now = now && !un.hidden.contains(&c);
            let change = match (was, now) {
                (true, true)
                    if self.contacts[c as usize].seq > since || first_my.contains_key(&c) =>
                {
                    ItemChange::Update
                }
                (false, true) => ItemChange::Create,
                (true, false) => ItemChange::Delete,
                _ => continue,
            };
            out.push((seq, c, change));
        }
        out.sort_unstable_by_key(|(s, c, _)| (*s, *c));
        Some(out)
    }

    // ---- explain ----------------------------------------------------------------------

    /// Explains where contact `c` is for user `u` and why.
    pub fn explain(&self, u: u32, c: u32) -> Explanation {
        let user = self
            .user_record(u)
            .map(|r| r.login.clone())
            .unwrap_or_default();
        let contact = self.contacts_ix.name(c).to_owned();
        let mk = |folder, rules, reason: String| Explanation {
            user: user.clone(),
            contact: contact.clone(),
            folder,
            rules,
            reason,
        };
        let Some(cn) = self.contacts.get(c as usize) else {
            return mk(None, vec![], "no such contact".into());
        };
        let Some(rec) = &cn.rec else {
            return mk(None, vec![], "the contact is deleted in the CRM".into());
        };
        let un = &self.users[u as usize];
        let uid = u;
        let mut rules = Vec::new();
        for k in &cn.companies {
            let kn = &self.companies[*k as usize];
            if let Some(kr) = &kn.rec {
                if kn.responsible.contains(&uid) {
                    rules.push(format!(
                        "company {} ({}) → responsible: you",
                        kr.name, kr.id
                    ));
                }
            }
        }
        for p in &cn.projects {
            let pn = &self.projects[*p as usize];
            if let Some(pr) = &pn.rec {
                if pn.team.contains(&uid) {
                    rules.push(format!(
                        "project {} ({}) → team member: you",
                        pr.name, pr.id
                    ));
                }
            }
        }
        for l in &cn.leads {
            let ln = &self.leads[*l as usize];
            if let Some(lr) = &ln.rec {
                if ln.responsible == Some(uid) {
                    rules.push(format!("lead {} ({}) → responsible: you", lr.name, lr.id));
                }
            }
        }
        if cn.owner == Some(uid) {
            if self.rules.owner_rule {
                rules.push("owner: you".into());
            } else {
                rules.push("owner: you (owner rule is off)".into());
            }
        }
        // Visibility.
        if let Some(t) = rec.types.iter().find(|t| self.rules.is_excluded_type(t)) {
            return mk(None, rules, format!("hidden: contact type {t} is excluded"));
        }
        for k in &cn.companies {
            let kn = &self.companies[*k as usize];
            if let Some(kr) = &kn.rec {
                if let Some(t) = kr.types.iter().find(|t| self.rules.is_excluded_type(t)) {
                    return mk(
                        None,
                        rules,
                        format!(
                            "hidden: company {} ({}) has excluded type {t}",
                            kr.name, kr.id
                        ),
                    );
                }
            }
        }
        if !self.rules.passes_sync_tag(&rec.categories) {
            let tag = self.rules.sync_tag.clone().unwrap_or_default();
            return mk(None, rules, format!("hidden: not tagged {tag} for sync"));
        }
        let names = |subs: &[u32]| {
            subs.iter()
                .map(|s| self.subs_ix.name(*s).to_owned())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let in_scope = self.scope_ok(&un.subs, &cn.subs);
        let folder = self.folder_of(u, c);
        let reason = match folder {
            Some(VirtualFolder::My) => "in My: a My rule applies".to_owned(),
            Some(VirtualFolder::Global) => match self.rules.global_scope {
                GlobalScope::All => "in Global: no My rule applies; global scope is all".into(),
                _ => format!(
                    "in Global: no My rule applies; shares a subsystem with you ({})",
                    names(&cn.subs)
                ),
            },
            None if !in_scope => format!(
                "hidden: tenant separation: the contact's subsystems [{}] share none with yours [{}]",
                names(&cn.subs),
                names(&un.subs)
            ),
            None => "hidden: no My rule applies and the Global folder is off".into(),
        };
        mk(folder, rules, reason)
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
