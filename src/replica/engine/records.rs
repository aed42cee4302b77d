//! Records: interning CRM ids to dense indexes, applying CRM records to the nodes and the
//! reverse and lookup indexes, and reading records back.

use super::*;

impl Engine {
    pub(super) fn user(&mut self, id: &str) -> u32 {
        let i = self.users_ix.intern(id);
        grow(&mut self.users, i);
        i
    }

    pub(super) fn contact(&mut self, id: &str) -> u32 {
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

    pub(super) fn company(&mut self, id: &str) -> u32 {
        let i = self.companies_ix.intern(id);
        grow(&mut self.companies, i);
        i
    }

    pub(super) fn project(&mut self, id: &str) -> u32 {
        let i = self.projects_ix.intern(id);
        grow(&mut self.projects, i);
        i
    }

    pub(super) fn lead(&mut self, id: &str) -> u32 {
        let i = self.leads_ix.intern(id);
        grow(&mut self.leads, i);
        i
    }

    pub(super) fn sub(&mut self, id: &str) -> u32 {
        let i = self.subs_ix.intern(id);
        grow(&mut self.subsystems, i);
        grow(&mut self.sub_contacts, i);
        i
    }

    pub(super) fn subs_of<T: AsRef<str>>(&mut self, ids: &[T]) -> Vec<u32> {
        sorted(ids.iter().map(|s| self.sub(s.as_ref())).collect())
    }

    pub(super) fn upsert(&mut self, v: Versioned) {
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

    pub(super) fn delete(&mut self, kind: Kind, id: &str) {
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

    pub(super) fn set_user(&mut self, id: &str, rec: Option<User>) {
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

    pub(super) fn set_company(&mut self, id: &str, rec: Option<Company>) {
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

    pub(super) fn set_contact(&mut self, id: &str, rec: Option<Contact>, version: &str) {
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

    pub(super) fn set_project(&mut self, id: &str, rec: Option<Project>) {
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

    pub(super) fn set_lead(&mut self, id: &str, rec: Option<Lead>) {
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

    /// The user id of an index.
    pub fn user_id(&self, u: u32) -> &str {
        self.users_ix.name(u)
    }
}
