//! The change log: entries appended when a contact's or a user's folder state changes, replayed
//! on restart, and read as per-user changes since a sequence number.

use super::*;

impl Engine {
    pub(super) fn push_contact_entry(&mut self, c: u32, seq: u64, state: ContactState) {
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

    pub(super) fn push_user_entry(
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

    /// The user's My-membership log.
    pub fn my_log(&self, u: u32) -> &[MyEvent] {
        self.users
            .get(u as usize)
            .map(|n| &n.my_log[..])
            .unwrap_or(&[])
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
}
