//! History: a contact's earlier versions (for three-way merges of stale client writes) and
//! its and a user's state as of a past sequence number.

use super::*;

impl Engine {
    /// Earlier versions of a contact a client may still hold, newest last.
    pub fn contact_history(&self, c: u32) -> &[(Box<str>, Arc<Contact>)] {
        self.contacts
            .get(c as usize)
            .map(|n| &n.history[..])
            .unwrap_or(&[])
    }

    /// (exists, visible, subs) of a contact as of sequence `s`.
    pub(super) fn contact_at(&self, c: u32, s: u64) -> Option<(bool, &[u32])> {
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

    pub(super) fn user_subs_at(&self, u: u32, s: u64) -> &[u32] {
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
}
