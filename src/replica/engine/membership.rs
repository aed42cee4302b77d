//! Membership: which folder of which user a contact is in, recomputed for what a change
//! touched (reconciliation), read per user, and explained.

use super::*;

impl Engine {
    pub(super) fn user_exists(&self, u: u32) -> bool {
        self.users.get(u as usize).is_some_and(|n| n.rec.is_some())
    }

    pub(super) fn scope_ok(&self, user_subs: &[u32], contact_subs: &[u32]) -> bool {
        match self.rules.global_scope {
            GlobalScope::Subsystem => intersects(user_subs, contact_subs),
            GlobalScope::All | GlobalScope::Off => true,
        }
    }

    /// Why the contact is in no folder at all, if it is hidden: its own type, a company's
    /// type, or the sync tag. The one definition both reconciliation and `explain` use.
    pub(super) fn hidden_by(&self, c: u32) -> Option<Hidden<'_>> {
        let node = &self.contacts[c as usize];
        let rec = node.rec.as_ref()?;
        if let Some(t) = rec.types.iter().find(|t| self.rules.is_excluded_type(t)) {
            return Some(Hidden::ContactType(t));
        }
        for k in &node.companies {
            let kn = &self.companies[*k as usize];
            if let (true, Some(kr)) = (kn.excluded, &kn.rec) {
                let t = kr
                    .types
                    .iter()
                    .find(|t| self.rules.is_excluded_type(t))
                    .map_or("", String::as_str);
                return Some(Hidden::CompanyType {
                    company: kr,
                    kind: t,
                });
            }
        }
        if !self.rules.passes_sync_tag(&rec.categories) {
            return Some(Hidden::NotTagged);
        }
        None
    }

    /// Calls `f` with every (user, rule) that puts the contact in that user's My folder,
    /// and with the contact's owner when the owner rule is off (`counted` false). The one
    /// definition both reconciliation and `explain` use.
    pub(super) fn for_each_my_rule<'a>(&'a self, c: u32, mut f: impl FnMut(u32, MyRule<'a>)) {
        let node = &self.contacts[c as usize];
        for k in &node.companies {
            let kn = &self.companies[*k as usize];
            if let Some(kr) = &kn.rec {
                for u in &kn.responsible {
                    f(*u, MyRule::Responsible(kr));
                }
            }
        }
        for p in &node.projects {
            let pn = &self.projects[*p as usize];
            if let Some(pr) = &pn.rec {
                for u in &pn.team {
                    f(*u, MyRule::TeamMember(pr));
                }
            }
        }
        for l in &node.leads {
            let ln = &self.leads[*l as usize];
            if let (Some(lr), Some(u)) = (&ln.rec, ln.responsible) {
                f(u, MyRule::LeadResponsible(lr));
            }
        }
        if let Some(u) = node.owner {
            f(
                u,
                MyRule::Owner {
                    counted: self.rules.owner_rule,
                },
            );
        }
    }

    /// (visible, derived subsystems, candidate My users before the scope check, content
    /// version: the CRM version and a digest of the company names the contact shows).
    pub(super) fn derive(&self, c: u32) -> (bool, Vec<u32>, Vec<u32>, String) {
        let node = &self.contacts[c as usize];
        let Some(rec) = &node.rec else {
            return (false, Vec::new(), Vec::new(), String::new());
        };
        let visible = self.hidden_by(c).is_none();
        let mut subs = node.own_subs.clone();
        for k in &node.companies {
            let kn = &self.companies[*k as usize];
            if kn.rec.is_some() {
                subs.extend_from_slice(&kn.subs);
            }
        }
        let subs = sorted(subs);
        let mut cand: Vec<u32> = Vec::new();
        self.for_each_my_rule(c, |u, rule| {
            if rule.counts() {
                cand.push(u);
            }
        });
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

    pub(super) fn reconcile(&mut self) -> Applied {
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

    pub(super) fn reconcile_contact(&mut self, c: u32, log: &mut Vec<LogRecord>) -> bool {
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
        let time = (self.clock)().max(self.contacts[c as usize].modified + 1);
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

    pub(super) fn my_target(&self, u: u32) -> HashSet<u32> {
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

    pub(super) fn reconcile_user(&mut self, u: u32, log: &mut Vec<LogRecord>) {
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

    pub(super) fn mark_all_dirty(&mut self) {
        self.dirty_contacts.extend(0..self.contacts.len() as u32);
        self.dirty_users.extend(0..self.users.len() as u32);
    }

    pub(super) fn hidden(&self, u: u32, c: u32) -> bool {
        self.users
            .get(u as usize)
            .is_some_and(|n| n.hidden.contains(&c))
    }

    pub(super) fn in_global_now(&self, u: u32, c: u32) -> bool {
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
        if cn.rec.is_none() {
            return mk(None, vec![], "the contact is deleted in the CRM".into());
        }
        let un = &self.users[u as usize];
        let mut rules = Vec::new();
        self.for_each_my_rule(c, |who, rule| {
            if who == u {
                rules.push(rule.to_string());
            }
        });
        if let Some(h) = self.hidden_by(c) {
            return mk(None, rules, format!("hidden: {}", h.describe(&self.rules)));
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

/// Why a contact is in no folder (see [`Engine::hidden_by`]).
#[derive(Debug)]
pub(super) enum Hidden<'a> {
    /// Its own type is excluded.
    ContactType(&'a str),
    /// A company's type is excluded.
    CompanyType {
        /// The company.
        company: &'a Company,
        /// Its excluded type.
        kind: &'a str,
    },
    /// It lacks the sync tag.
    NotTagged,
}

/// A rule that puts a contact in a user's My folder (see [`Engine::for_each_my_rule`]).
#[derive(Debug)]
pub(super) enum MyRule<'a> {
    /// The user is responsible for a company of the contact.
    Responsible(&'a Company),
    /// The user is on the team of a project of the contact.
    TeamMember(&'a Project),
    /// The user is responsible for a lead of the contact.
    LeadResponsible(&'a Lead),
    /// The user owns the contact; `counted` is false while the owner rule is off.
    Owner {
        /// Whether the owner rule is on.
        counted: bool,
    },
}

impl MyRule<'_> {
    /// Whether the rule puts the contact in My.
    pub(super) fn counts(&self) -> bool {
        !matches!(self, MyRule::Owner { counted: false })
    }
}

impl std::fmt::Display for MyRule<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MyRule::Responsible(k) => write!(f, "company {} ({}) → responsible: you", k.name, k.id),
            MyRule::TeamMember(p) => write!(f, "project {} ({}) → team member: you", p.name, p.id),
            MyRule::LeadResponsible(l) => {
                write!(f, "lead {} ({}) → responsible: you", l.name, l.id)
            }
            MyRule::Owner { counted: true } => f.write_str("owner: you"),
            MyRule::Owner { counted: false } => f.write_str("owner: you (owner rule is off)"),
        }
    }
}

impl<'a> Hidden<'a> {
    fn describe(&self, rules: &FolderRules) -> String {
        match self {
            Hidden::ContactType(t) => format!("contact type {t} is excluded"),
            Hidden::CompanyType { company, kind } => {
                format!(
                    "company {} ({}) has excluded type {kind}",
                    company.name, company.id
                )
            }
            Hidden::NotTagged => format!(
                "not tagged {} for sync",
                rules.sync_tag.clone().unwrap_or_default()
            ),
        }
    }
}
