//! Folder rules: which contacts a user sees in "My" and "Global", defined once here in the
//! plain, from-scratch form. The replica keeps the same sets incrementally; tests compare the
//! two.

use super::dataset::Dataset;
use super::ids::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Which contacts the Global folder offers a user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GlobalScope {
    /// Every visible contact (helloHQ's default).
    #[default]
    All,
    /// Contacts sharing a subsystem with the user. Tenant separation: My is restricted to the
    /// user's subsystems as well.
    Subsystem,
    /// No Global folder.
    Off,
}

/// The two virtual folders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VirtualFolder {
    /// Contacts the user is responsible for.
    My,
    /// Everything else in the user's scope.
    Global,
}

/// The configurable membership rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderRules {
    /// Global folder scope.
    pub global_scope: GlobalScope,
    /// Contact or company types that hide a contact (compared case-insensitively).
    pub excluded_types: Vec<String>,
    /// Whether a contact's owner gets it in My.
    pub owner_rule: bool,
    /// When set, only contacts carrying this category are visible.
    pub sync_tag: Option<String>,
}

impl Default for FolderRules {
    fn default() -> Self {
        FolderRules {
            global_scope: GlobalScope::All,
            excluded_types: vec!["Interessent".into()],
            owner_rule: true,
            sync_tag: None,
        }
    }
}

impl FolderRules {
    /// True when `t` is one of the excluded types.
    pub fn is_excluded_type(&self, t: &str) -> bool {
        self.excluded_types
            .iter()
            .any(|x| x.trim().eq_ignore_ascii_case(t.trim()))
    }

    /// True when the category list satisfies the sync-tag filter.
    pub fn passes_sync_tag(&self, categories: &[String]) -> bool {
        match &self.sync_tag {
            None => true,
            Some(tag) => categories.iter().any(|c| c.eq_ignore_ascii_case(tag)),
        }
    }
}

/// My and Global of one user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Folders {
    /// My contacts.
    pub my: BTreeSet<ContactId>,
    /// Global contacts.
    pub global: BTreeSet<ContactId>,
}

/// Computes every user's folders from scratch, straight from the definition in
/// ARCHITECTURE.md §3. Dangling references are ignored. This is the reference the incremental
/// engine is tested against; it is not fast.
pub fn compute_folders(ds: &Dataset, rules: &FolderRules) -> BTreeMap<UserId, Folders> {
    let companies: HashMap<&CompanyId, _> = ds.companies.iter().map(|c| (&c.id, c)).collect();
    let mut out = BTreeMap::new();
    for user in &ds.users {
        let user_subs: HashSet<&SubsystemId> = user.subsystems.iter().collect();
        let mut f = Folders::default();
        for c in &ds.contacts {
            let comps: Vec<_> = c
                .companies
                .iter()
                .filter_map(|k| companies.get(k))
                .collect();
            let excluded = c.types.iter().any(|t| rules.is_excluded_type(t))
                || comps
                    .iter()
                    .any(|k| k.types.iter().any(|t| rules.is_excluded_type(t)));
            if excluded || !rules.passes_sync_tag(&c.categories) {
                continue;
            }
            let subs: HashSet<&SubsystemId> = c
                .subsystems
                .iter()
                .chain(comps.iter().flat_map(|k| k.subsystems.iter()))
                .collect();
            let in_scope = !subs.is_disjoint(&user_subs);
            let mine = comps.iter().any(|k| k.responsible.contains(&user.id))
                || ds
                    .projects
                    .iter()
                    .any(|p| p.contacts.contains(&c.id) && p.team.contains(&user.id))
                || ds.leads.iter().any(|l| {
                    l.contacts.contains(&c.id) && l.responsible.as_ref() == Some(&user.id)
                })
                || (rules.owner_rule && c.owner.as_ref() == Some(&user.id));
            let my_allowed = rules.global_scope != GlobalScope::Subsystem || in_scope;
            if mine && my_allowed {
                f.my.insert(c.id.clone());
            } else {
                let global = match rules.global_scope {
                    GlobalScope::All => true,
                    GlobalScope::Subsystem => in_scope,
                    GlobalScope::Off => false,
                };
                if global {
                    f.global.insert(c.id.clone());
                }
            }
        }
        out.insert(user.id.clone(), f);
    }
    out
}

/// What happens when a client deletes a contact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeletePolicy {
    /// Gone for this user only; the CRM keeps it.
    Hide,
    /// Deleted in the CRM.
    Crm,
    /// Refused.
    Deny,
}
