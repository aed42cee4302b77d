//! The way back: the mirrored folders read with Graph delta, and every change a user made in
//! Outlook taken through crmgate's write path like any client's write — folder direction,
//! field rules, conflicts (the mailbox's version is the base: fields changed in the CRM since
//! keep the CRM's value, the user's other fields are taken), delete policies. crmgate's own writes come back with the change key their answer
//! carried and are skipped.

use super::body;
use super::client::Call;
use super::state::{self, Entry, Meta};
use super::sync::{MbError, Run};
use crate::auth::Principal;
use crate::domain::rules::VirtualFolder;
use crate::view::service::Failed;
use crate::view::write::{ConflictMode, Planned, WriteError};
use crate::view::FolderRef;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// Delta pages followed per folder and step (a long first round goes on next step).
const MAX_PAGES: usize = 200;

/// Brings the item → (contact, entry) map in line with entry changes about to be saved.
fn remember(
    by_item: &mut HashMap<String, (String, Entry)>,
    entries: &[(VirtualFolder, String, Option<Entry>)],
) {
    for (_, contact, e) in entries {
        match e {
            Some(e) => {
                by_item.insert(e.item.clone(), (contact.clone(), e.clone()));
            }
            None => by_item.retain(|_, (c, _)| c != contact),
        }
    }
}

/// What to do with one change read back.
enum Act {
    /// Nothing (crmgate's own write, or nothing crmgate mirrors changed).
    Skip,
    /// A new change key to remember for an item.
    Seen(String, Entry),
    /// Through the write path.
    Write(Box<Pending>),
}

struct Pending {
    planned: Result<Planned, WriteError>,
    /// The contact (existing ones) and its entry.
    contact: Option<(String, Entry)>,
    /// The mailbox item and its change key.
    item: String,
    ck: String,
    op: &'static str,
    edits: Vec<crate::domain::patch::Edit>,
}

impl Run<'_> {
    fn principal(&self) -> Result<Principal, MbError> {
        let e = self
            .app
            .replica
            .read()
            .map_err(|_| MbError::Retry("replica unavailable".into()))?;
        let u = e
            .find_login(&self.login)
            .and_then(|u| e.user_record(u).cloned())
            .ok_or(MbError::Gone)?;
        let u = self.app.signed_in_as((*u).clone());
        Ok(Principal {
            user: u.id.clone(),
            login: u.login.clone(),
            role: u.role,
        })
    }

    /// Reads each mirrored folder's changes since its delta link and applies users' edits.
    /// Returns, per folder, the contacts to write back (set back to the CRM's values, made
    /// again, or given crmgate's properties).
    pub(super) async fn pull(
        &self,
        meta: &mut Meta,
    ) -> Result<Vec<(VirtualFolder, Vec<String>)>, MbError> {
        let mut out = Vec::new();
        for f in state::FOLDERS {
            let i = state::slot(f);
            let Some(fm) = meta.folders[i].clone() else {
                continue;
            };
            let mut link = meta.delta[i].clone();
            let mut touched = Vec::new();
            let mut pages = 0;
            // Item → (contact, entry), read once per round and kept current page by page.
            let keys = self.keys.clone();
            let mut by_item: HashMap<String, (String, Entry)> = self
                .blocking(move |app| {
                    keys.entries(&app.store, f)
                        .map(|v| {
                            v.into_iter()
                                .map(|(c, e)| (e.item.clone(), (c, e)))
                                .collect()
                        })
                        .map_err(|e| MbError::Retry(format!("store: {e}")))
                })
                .await?;
            // Each page is applied as it comes and the position saved after it, so a round
            // (the first lists the whole folder) never holds more than a page in memory, and
            // one cut short goes on from where it was.
            let end = loop {
                pages += 1;
                if pages > MAX_PAGES {
                    break None;
                }
                let a = match &link {
                    None => {
                        let select = body::PROPS.join(",") + ",changeKey";
                        self.get(format!(
                            "{}/contacts/delta?$select={select}",
                            self.folder_url_of(&fm.id)
                        ))
                        .await?
                    }
                    Some(l) => match self.mirror.client.follow(&self.budget, l, None).await {
                        Ok(a) => a,
                        Err(e) => return Err(MbError::Retry(e.to_string())),
                    },
                };
                // An expired or evicted state (410, syncStateNotFound), or one the service no
                // longer takes (a 4xx on a link it gave): a new round from the start.
                let refused_link = link.is_some()
                    && (400..500).contains(&a.status)
                    && a.status != 429
                    && a.status != 404
                    && a.status != 401;
                if a.status == 410
                    || a.code().eq_ignore_ascii_case("syncStateNotFound")
                    || refused_link
                {
                    // The delta state expired: a new round from the start; drift repair
                    // covers what it may have missed.
                    meta.delta[i] = None;
                    self.save(meta, Vec::new()).await?;
                    return Err(MbError::Retry("delta state expired; starting over".into()));
                }
                if a.status == 404 {
                    return Err(MbError::Retry(super::sync::FOLDER_GONE.into()));
                }
                if a.transient() {
                    return Err(MbError::Retry(format!("delta: {}", a.describe())));
                }
                if !a.ok() {
                    return Err(MbError::Retry(format!("delta: {}", a.describe())));
                }
                let mut a = a;
                let next = match (
                    a.body["@odata.deltaLink"].as_str(),
                    a.body["@odata.nextLink"].as_str(),
                ) {
                    (Some(d), _) => Ok(d.to_owned()),
                    (None, Some(n)) => Err(n.to_owned()),
                    (None, None) => return Err(MbError::Retry("delta page without a link".into())),
                };
                let page = match a.body.get_mut("value").map(Value::take) {
                    Some(Value::Array(v)) => v,
                    _ => Vec::new(),
                };
                // The first round lists what is there; crmgate's own items come back with
                // the change keys it knows, anything else is a user's. An edit the CRM cannot
                // take now ends the step here: the saved position is this page's.
                let got = self
                    .apply_changes(meta, f, &fm.id, page, &mut by_item)
                    .await?;
                // Contacts to write back end the round here: they are written before the
                // position moves on again (the round goes on next step).
                let write_back = !got.is_empty();
                touched.extend(got);
                match next {
                    Ok(d) => break Some(d),
                    Err(n) => {
                        meta.delta[i] = Some(n.clone());
                        self.save(meta, Vec::new()).await?;
                        if write_back {
                            break None;
                        }
                        link = Some(n);
                    }
                }
            };
            if !touched.is_empty() {
                out.push((f, touched));
            }
            if let Some(d) = end {
                meta.delta[i] = Some(d);
                self.save(meta, Vec::new()).await?;
            }
        }
        Ok(out)
    }

    fn folder_url_of(&self, id: &str) -> String {
        format!(
            "/users/{}/contactFolders/{}",
            crate::http::percent_encode(&self.upn),
            crate::http::percent_encode(id)
        )
    }

    async fn apply_changes(
        &self,
        meta: &mut Meta,
        f: VirtualFolder,
        folder_id: &str,
        changes: Vec<Value>,
        by_item: &mut HashMap<String, (String, Entry)>,
    ) -> Result<Vec<String>, MbError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        // The last change per item wins (delta may replay).
        let mut last: Vec<Value> = Vec::new();
        let mut at: HashMap<String, usize> = HashMap::new();
        for c in changes {
            let Some(id) = c["id"].as_str().map(str::to_owned) else {
                continue;
            };
            match at.get(&id) {
                Some(&k) => {
                    // An update after an update: merge the properties.
                    if c.get("@removed").is_none() && last[k].get("@removed").is_none() {
                        if let (Some(o), Some(n)) = (last[k].as_object_mut(), c.as_object()) {
                            for (key, v) in n {
                                o.insert(key.clone(), v.clone());
                            }
                        }
                    } else {
                        last[k] = c;
                    }
                }
                None => {
                    at.insert(id, last.len());
                    last.push(c);
                }
            }
        }
        let who = self.principal()?;
        let mut entries = Vec::new();
        let mut touched = Vec::new();
        for c in last {
            let item = c["id"].as_str().unwrap_or("").to_owned();
            let known = by_item.get(&item).cloned();
            tracing::debug!(mailbox = %self.upn, item = %item, known = known.is_some(), change = %c, "mirror read back");
            let act = self.decide(f, &c, &item, known)?;
            let p = match act {
                Act::Skip => continue,
                Act::Seen(contact, e) => {
                    entries.push((f, contact, Some(e)));
                    continue;
                }
                Act::Write(p) => p,
            };
            let result = match p.planned.clone() {
                Err(e) => Err(e),
                Ok(first) => {
                    let replan = || {
                        self.replan(f, &p)
                            .map_err(|_| Failed::Plan(WriteError::Internal))?
                            .map_err(Failed::Write)
                    };
                    self.app
                        .writer
                        .commit(&who, p.op, first, |x| x, replan)
                        .await
                        .map_err(|e| match e {
                            Failed::Plan(e) | Failed::Write(e) => e,
                        })
                }
            };
            match (result, p.op) {
                (Err(WriteError::Unavailable { .. }), _) | (Err(WriteError::Internal), _) => {
                    // The CRM is down: the user's change waits; the delta link stays.
                    remember(by_item, &entries);
                    self.save(meta, entries).await?;
                    return Err(MbError::Retry(
                        "the CRM is unavailable; users' edits wait".into(),
                    ));
                }
                (Ok(planned), "mirror create") => {
                    // The user's new contact is now the CRM's: this item is its copy. It is
                    // written in full next (with crmgate's properties), never created twice.
                    touched.push(planned.contact_id.clone());
                    entries.push((
                        f,
                        planned.contact_id.clone(),
                        Some(Entry {
                            item: p.item.clone(),
                            ck: p.ck.clone(),
                            v: String::new(),
                            d: Vec::new(),
                        }),
                    ));
                }
                (Ok(_), "mirror delete") => {
                    if let Some((contact, _)) = &p.contact {
                        entries.push((f, contact.clone(), None));
                    }
                }
                (Ok(planned), _) if matches!(planned.plan, crate::view::write::Plan::Nothing) => {
                    // Nothing the CRM holds changed (a property crmgate does not take, or the
                    // service's own spelling of a value): remembered, not written back, so a
                    // mailbox that spells a value its own way is not rewritten every poll.
                    if let Some((contact, mut e)) = p.contact.clone() {
                        e.ck = p.ck.clone();
                        entries.push((f, contact, Some(e)));
                    }
                }
                (Ok(_), _) => {
                    if let Some((contact, mut e)) = p.contact.clone() {
                        // The item now holds what the user wrote; it is written once more
                        // in full with the CRM's values (normalised, and what the CRM kept).
                        e.ck = p.ck.clone();
                        e.d = Vec::new();
                        e.v = String::new();
                        touched.push(contact.clone());
                        entries.push((f, contact, Some(e)));
                    }
                }
                (Err(why), op) => {
                    tracing::info!(mailbox = %self.upn, item = %p.item, op, reason = ?why,
                        "a change made in the mailbox was not taken; the mailbox is set back");
                    match (&p.contact, op) {
                        (Some((contact, _)), "mirror delete") => {
                            // Deleted in the mailbox, kept in the CRM: made again.
                            entries.push((f, contact.clone(), None));
                            touched.push(contact.clone());
                        }
                        (Some((contact, e)), _) => {
                            // Set back to the CRM's values.
                            let mut e = e.clone();
                            e.ck = p.ck.clone();
                            e.d = Vec::new();
                            e.v = String::new();
                            touched.push(contact.clone());
                            entries.push((f, contact.clone(), Some(e)));
                        }
                        (None, _) => {
                            // A contact the user made in a folder that takes none: removed.
                            let a = self
                                .call(Call {
                                    method: "DELETE",
                                    url: format!(
                                        "{}/contacts/{}",
                                        self.folder_url_of(folder_id),
                                        crate::http::percent_encode(&p.item)
                                    ),
                                    body: None,
                                })
                                .await?;
                            if !a.ok() && a.status != 404 {
                                return Err(MbError::Retry(format!(
                                    "removing a refused contact: {}",
                                    a.describe()
                                )));
                            }
                        }
                    }
                }
            }
        }
        remember(by_item, &entries);
        self.save(meta, entries).await?;
        Ok(touched)
    }

    /// What one change read back means.
    fn decide(
        &self,
        f: VirtualFolder,
        c: &Value,
        item: &str,
        known: Option<(String, Entry)>,
    ) -> Result<Act, MbError> {
        let ck = c["changeKey"].as_str().unwrap_or("").to_owned();
        let removed = c.get("@removed").is_some();
        match known {
            Some((contact, e)) => {
                if removed {
                    let planned = self.with_mailbox(|mb| {
                        let id = mb.item_id_for(f, &contact);
                        mb.plan_delete(&id, &self.app.view.policies)
                    })?;
                    return Ok(Act::Write(Box::new(Pending {
                        planned,
                        contact: Some((contact, e)),
                        item: item.to_owned(),
                        ck,
                        op: "mirror delete",
                        edits: Vec::new(),
                    })));
                }
                let mut props: Map<String, Value> = c
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| body::PROPS.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if !ck.is_empty() && ck == e.ck {
                    // crmgate's own write — unless a user changed another property just before
                    // it landed (the item then ends with crmgate's change key): what differs
                    // from what crmgate wrote is the user's.
                    if e.d.len() != body::PROPS.len() {
                        return Ok(Act::Skip);
                    }
                    props.retain(|k, v| {
                        body::PROPS
                            .iter()
                            .position(|p| p == k)
                            .is_some_and(|i| e.d[i] != body::digest(v))
                    });
                    if props.is_empty() {
                        return Ok(Act::Skip);
                    }
                }
                if props.is_empty() {
                    let mut e = e;
                    if !ck.is_empty() {
                        e.ck = ck;
                    }
                    return Ok(Act::Seen(contact, e));
                }
                let edits = crate::graph::json::edits(&Value::Object(props)).unwrap_or_default();
                let base = e.v.clone();
                let planned = self.with_mailbox(|mb| {
                    let id = mb.item_id_for(f, &contact);
                    // The mailbox's version is the base: a field also changed in the CRM since
                    // keeps the CRM's value, the user's other fields are taken.
                    let key = (!base.is_empty()).then_some(base.as_str());
                    mb.plan_update(&id, key, ConflictMode::Merge, &edits)
                })?;
                Ok(Act::Write(Box::new(Pending {
                    planned,
                    contact: Some((contact, e)),
                    item: item.to_owned(),
                    ck,
                    op: "mirror update",
                    edits,
                })))
            }
            None if removed => Ok(Act::Skip),
            None => {
                let props: Map<String, Value> = c
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| body::PROPS.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let edits = crate::graph::json::edits(&Value::Object(props)).map_err(|_| ());
                let planned = match edits {
                    Ok(edits) => {
                        let p = self.with_mailbox(|mb| {
                            mb.plan_create(FolderRef::Virtual(f), &edits, None)
                        })?;
                        return Ok(Act::Write(Box::new(Pending {
                            planned: p,
                            contact: None,
                            item: item.to_owned(),
                            ck,
                            op: "mirror create",
                            edits,
                        })));
                    }
                    Err(()) => Err(WriteError::Malformed),
                };
                Ok(Act::Write(Box::new(Pending {
                    planned,
                    contact: None,
                    item: item.to_owned(),
                    ck,
                    op: "mirror create",
                    edits: Vec::new(),
                })))
            }
        }
    }

    /// The same change planned again after a lost race.
    fn replan(
        &self,
        f: VirtualFolder,
        p: &Pending,
    ) -> Result<Result<Planned, WriteError>, MbError> {
        self.with_mailbox(|mb| match (&p.contact, p.op) {
            (Some((contact, _)), "mirror delete") => {
                mb.plan_delete(&mb.item_id_for(f, contact), &self.app.view.policies)
            }
            (Some((contact, e)), _) => {
                let key = (!e.v.is_empty()).then_some(e.v.as_str());
                mb.plan_update(
                    &mb.item_id_for(f, contact),
                    key,
                    ConflictMode::Merge,
                    &p.edits,
                )
            }
            (None, _) => mb.plan_create(FolderRef::Virtual(f), &p.edits, None),
        })
    }
}
