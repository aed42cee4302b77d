//! One mailbox's work: make sure crmgate's folders are there, rebuild the id map from the
//! mailbox when it may be wrong, and write what the user's folder change log says since the
//! last position — in `$batch` chains, within the mailbox's budget, with every write of unknown
//! outcome looked up by its extended property before it is sent again.

use super::body;
use super::client::{Answer, Call, MailboxBudget, SendError};
use super::state::{self, Entry, FolderMeta, Keys, Meta, FOLDERS};
use super::Mirror;
use crate::app::App;
use crate::domain::rules::VirtualFolder;
use crate::view::{ItemChange, Session};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Changes taken from the log per round (and written before the position moves).
const PAGE: usize = 400;
/// Rounds of retries of one page's writes before the mailbox is put back in the queue.
const ROUNDS: u32 = 8;
/// Items per listing page when the id map is rebuilt.
const LIST_PAGE: usize = 1000;
/// A write found the folder gone.
pub(super) const FOLDER_GONE: &str = "folder gone";

/// Why a mailbox's step stopped.
#[derive(Clone, Debug, thiserror::Error)]
pub(super) enum MbError {
    /// Not worth retrying soon: no such mailbox, no consent, a folder name taken, credentials
    /// refused.
    #[error("{0}")]
    Skip(String),
    /// Transient: tried again shortly.
    #[error("{0}")]
    Retry(String),
    /// The user is gone or inactive.
    #[error("the user is no longer a crmgate user")]
    Gone,
}

fn from_send(e: SendError) -> MbError {
    match e {
        SendError::Token(m) => MbError::Skip(m),
        SendError::NoAnswer(m) => MbError::Retry(m),
    }
}

/// A write to send.
#[derive(Clone, Debug)]
enum Op {
    Create {
        contact: String,
        body: Arc<Value>,
        v: String,
        d: Vec<u32>,
    },
    /// A create whose outcome was unknown: looked up by crmgate's id before it is sent again.
    Find {
        contact: String,
        body: Arc<Value>,
        v: String,
        d: Vec<u32>,
    },
    Update {
        contact: String,
        item: String,
        body: Arc<Value>,
        v: String,
        d: Vec<u32>,
    },
    Delete {
        contact: String,
        item: String,
    },
    /// A second copy of a contact found by a lookup: removed, the entry stays.
    Drop {
        contact: String,
        item: String,
    },
}

impl Op {
    fn contact(&self) -> &str {
        match self {
            Op::Create { contact, .. }
            | Op::Find { contact, .. }
            | Op::Update { contact, .. }
            | Op::Delete { contact, .. }
            | Op::Drop { contact, .. } => contact,
        }
    }
}

/// What became of an op.
enum Done {
    /// The entry now (None: removed).
    Entry(Option<Entry>),
    /// Found by a lookup: the entry, and second copies to remove.
    Adopt(Entry, Vec<String>),
    /// Nothing to record.
    Nothing,
    /// Send again (transient, or a lookup decided).
    Again(Op, Option<Duration>),
    /// Refused for good: reported, the position moves on.
    Failed(String),
    /// The mailbox as a whole refused (403: no consent, an access policy): nothing of this
    /// step is given up; the mailbox is skipped and the op planned again once it answers.
    Denied(String),
    /// The folder is gone from the mailbox.
    FolderGone,
}

/// One mailbox being worked on.
pub(super) struct Run<'a> {
    pub app: &'a Arc<App>,
    pub mirror: &'a Mirror,
    pub login: String,
    pub upn: String,
    pub keys: Keys,
    pub budget: Arc<MailboxBudget>,
    /// Items per `$batch` chain now (adapts to the mailbox's answers).
    pub chain: Arc<std::sync::atomic::AtomicUsize>,
    /// Id-map entries written in this step (progress, even when the step fails later).
    pub progress: std::sync::atomic::AtomicU64,
    /// A write found an item gone from the mailbox: the read-back runs again at once.
    pub vanished: std::sync::atomic::AtomicBool,
    /// Contacts in the user's folders when the step began (for the status).
    pub contacts: std::sync::atomic::AtomicU64,
    /// Set when the mailbox refused a write as a whole (403): the step ends as a skip.
    pub denied: std::sync::Mutex<Option<String>>,
}

/// What a step did.
#[derive(Debug, Default)]
pub(super) struct Stepped {
    /// Writes that landed.
    pub written: u64,
    /// Changes still waiting in the log after the step.
    pub backlog: u64,
}

/// Runs `f` on `login`'s mailbox over a read view of the replica (never across an await).
pub(super) fn mailbox_of<T>(
    app: &App,
    login: &str,
    f: impl FnOnce(&crate::view::Mailbox<'_>) -> T,
) -> Result<T, MbError> {
    let engine = app
        .replica
        .read()
        .map_err(|_| MbError::Retry("replica unavailable".into()))?;
    let s = Session::open(
        &app.view_cache,
        &engine,
        &app.codec,
        &app.view,
        login,
        false,
    )
    .ok_or(MbError::Gone)?;
    let mb = s.mailbox(None).map_err(|_| MbError::Gone)?;
    Ok(f(&mb))
}

/// What to send for each contact given what the folder holds now (`None`: not in it) and the
/// id map: a create, a delete, or an update of the properties that differ from what was
/// written (`full`: of every property, whatever was written).
fn ops_for(
    app: &App,
    keys: &Keys,
    f: VirtualFolder,
    items: Vec<(String, Option<crate::view::Item>)>,
    full: bool,
) -> Result<Vec<Op>, MbError> {
    let mut ops = Vec::new();
    for (contact, item) in items {
        let e = keys
            .entry_of(&app.store, f, &contact)
            .map_err(|e| MbError::Retry(format!("store: {e}")))?;
        match (item, e) {
            (None, Some(e)) => ops.push(Op::Delete {
                contact,
                item: e.item,
            }),
            (None, None) => {}
            (Some(item), None) => {
                let (b, d) = body::create(&item);
                ops.push(Op::Create {
                    contact,
                    body: b.into(),
                    v: item.change_key,
                    d,
                });
            }
            (Some(item), Some(e)) => {
                if !full && e.v == item.change_key {
                    continue;
                }
                let (written, v) = if full {
                    (&[][..], "")
                } else {
                    (&e.d[..], e.v.as_str())
                };
                if let Some((b, d)) = body::update(&item, written, v) {
                    ops.push(Op::Update {
                        contact,
                        item: e.item,
                        body: b.into(),
                        v: item.change_key,
                        d,
                    });
                }
            }
        }
    }
    Ok(ops)
}

fn user_path(upn: &str) -> String {
    format!("/users/{}", crate::http::percent_encode(upn))
}

fn quote(s: &str) -> String {
    s.replace('\'', "''")
}

impl Run<'_> {
    pub(super) fn base(&self) -> String {
        user_path(&self.upn)
    }

    pub(super) fn folder_url(&self, id: &str) -> String {
        format!(
            "{}/contactFolders/{}",
            self.base(),
            crate::http::percent_encode(id)
        )
    }

    /// Runs `f` on the user's mailbox over a read view of the replica (never across an await).
    pub(super) fn with_mailbox<T>(
        &self,
        f: impl FnOnce(&crate::view::Mailbox<'_>) -> T,
    ) -> Result<T, MbError> {
        mailbox_of(self.app, &self.login, f)
    }

    pub(super) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&App) -> Result<T, MbError> + Send + 'static,
    ) -> Result<T, MbError> {
        let app = self.app.clone();
        let _permit = self.mirror.work.clone().acquire_owned().await;
        tokio::task::spawn_blocking(move || f(&app))
            .await
            .map_err(|e| MbError::Retry(format!("worker failed: {e}")))?
    }

    pub(super) async fn save(
        &self,
        meta: &Meta,
        entries: Vec<(VirtualFolder, String, Option<Entry>)>,
    ) -> Result<(), MbError> {
        self.progress
            .fetch_add(entries.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let ops = self.keys.commit_ops(meta, &entries);
        self.mirror
            .committer
            .commit(&self.app.store, ops)
            .await
            .map_err(MbError::Retry)
    }

    pub(super) async fn call(&self, c: Call) -> Result<Answer, MbError> {
        self.mirror
            .client
            .call(&self.budget, &c)
            .await
            .map_err(from_send)
    }

    /// Why a step stopped with writes waiting: the mailbox's refusal (a skip) or `why`.
    fn incomplete(&self, why: String) -> MbError {
        match self.denied.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(d) => MbError::Skip(format!("mailbox {}: {d}", self.upn)),
            None => MbError::Retry(why),
        }
    }

    /// A mailbox-level refusal (no mailbox, no consent) as a skip.
    fn refused(&self, a: &Answer) -> Option<MbError> {
        match (a.status, a.code()) {
            (404, "ErrorInvalidUser" | "ResourceNotFound" | "MailboxNotEnabledForRESTAPI")
            | (403, _)
            | (401, _) => Some(MbError::Skip(format!(
                "mailbox {}: {}",
                self.upn,
                a.describe()
            ))),
            _ => None,
        }
    }

    /// A GET, retried while transient (the budget waits out `Retry-After`).
    pub(super) async fn get(&self, url: String) -> Result<Answer, MbError> {
        let mut wait = Duration::from_millis(500);
        for _ in 0..ROUNDS {
            let a = self
                .call(Call {
                    method: "GET",
                    url: url.clone(),
                    body: None,
                })
                .await;
            match a {
                Ok(a) if !a.transient() => return Ok(a),
                Ok(a) if a.status == 429 => continue,
                Ok(a) => {
                    tokio::time::sleep(a.retry_after.unwrap_or(wait)).await;
                }
                Err(MbError::Retry(_)) => tokio::time::sleep(wait).await,
                Err(e) => return Err(e),
            }
            wait = (wait * 2).min(Duration::from_secs(30));
        }
        Err(MbError::Retry("Graph kept failing".into()))
    }

    /// All pages of a listing.
    async fn list(&self, first: String) -> Result<Vec<Value>, MbError> {
        self.list_of(first).await?.ok_or_else(|| {
            MbError::Retry("listing: 404: the collection is not in the mailbox".into())
        })
    }

    /// All pages of a listing; `None` when the collection is not there (404).
    async fn list_of(&self, first: String) -> Result<Option<Vec<Value>>, MbError> {
        let mut out = Vec::new();
        let mut a = self.get(first).await?;
        if a.status == 404 && self.refused(&a).is_none() {
            return Ok(None);
        }
        loop {
            if let Some(e) = self.refused(&a) {
                return Err(e);
            }
            if !a.ok() {
                return Err(MbError::Retry(format!("listing: {}", a.describe())));
            }
            out.extend(a.body["value"].as_array().cloned().unwrap_or_default());
            let Some(next) = a.body["@odata.nextLink"].as_str().map(str::to_owned) else {
                return Ok(Some(out));
            };
            if out.len() > 1_000_000 {
                return Err(MbError::Retry("listing too long".into()));
            }
            let mut wait = Duration::from_millis(500);
            let mut tries = 0;
            a = loop {
                tries += 1;
                if tries > ROUNDS {
                    return Err(MbError::Retry("Graph kept failing on a listing".into()));
                }
                match self.mirror.client.follow(&self.budget, &next, None).await {
                    Ok(x) if x.transient() => {
                        if x.status != 429 {
                            tokio::time::sleep(x.retry_after.unwrap_or(wait)).await;
                        }
                        wait = (wait * 2).min(Duration::from_secs(30));
                    }
                    Ok(x) => break x,
                    Err(SendError::NoAnswer(_)) => tokio::time::sleep(wait).await,
                    Err(e) => return Err(from_send(e)),
                }
            };
        }
    }

    /// Makes sure crmgate's folders exist with their names; a folder found again by its marker
    /// (after the store lost it) makes the id map doubtful.
    async fn ensure_folders(
        &self,
        meta: &mut Meta,
        offered: &[VirtualFolder],
    ) -> Result<(), MbError> {
        let names = [
            self.mirror.cfg.my_name.clone(),
            self.mirror.cfg.global_name.clone(),
        ];
        let parent = self.ensure_parent(meta).await?;
        // Where the folders are looked for and made.
        let home = match &parent {
            Some(p) => format!("{}/childFolders", self.folder_url(p)),
            None => format!("{}/contactFolders", self.base()),
        };
        for f in FOLDERS {
            let i = state::slot(f);
            let want = offered.contains(&f);
            if !want {
                // Global switched off: its folder goes.
                if let Some(fm) = meta.folders[i].clone() {
                    self.delete_folder(&fm.id).await?;
                    self.folder_gone(meta, f).await?;
                }
                continue;
            }
            if let Some(fm) = &meta.folders[i] {
                if fm.name != names[i] {
                    let a = self.rename_folder(&fm.id, &names[i]).await?;
                    if a.ok() {
                        meta.folders[i] = Some(FolderMeta {
                            id: fm.id.clone(),
                            name: names[i].clone(),
                        });
                        self.save(meta, Vec::new()).await?;
                    } else if a.status == 404 {
                        self.folder_gone(meta, f).await?;
                    } else {
                        return Err(MbError::Retry(format!("folder rename: {}", a.describe())));
                    }
                }
            }
            if meta.folders[i].is_some() {
                continue;
            }
            // Find it by its marker first: a folder crmgate made before the store forgot it.
            let Some(mut found) = self.find_marked(&home, state::folder_tag(f)).await? else {
                return Err(self.home_gone(meta, parent.is_some()).await?);
            };
            if let Some((id, name)) = found.first().cloned() {
                // More than one (a crash between create and save, twice): keep the first,
                // its contacts are read back; the others go.
                for (other, _) in found.drain(1..) {
                    self.delete_folder(&other).await?;
                }
                meta.folders[i] = Some(FolderMeta { id, name });
                meta.states[i] = None;
                meta.delta[i] = None;
                meta.doubtful = true;
                self.save(meta, Vec::new()).await?;
                // The rename, if any, on the next pass.
                continue;
            }
            if parent.is_none() {
                // A holding folder left from an earlier placement (the store forgot it): its
                // folders would be duplicates of these.
                for (old, _) in self.find_top(state::PARENT_TAG).await? {
                    self.delete_folder(&old).await?;
                }
            }
            // A lost answer: the next pass finds the folder by its marker.
            let Some(id) = self
                .create_marked(&home, &names[i], state::folder_tag(f))
                .await?
            else {
                return Err(self.home_gone(meta, parent.is_some()).await?);
            };
            let made = FolderMeta {
                id,
                name: names[i].clone(),
            };
            self.reset_folder(meta, f, Some(made)).await?;
        }
        Ok(())
    }

    /// Makes a folder with crmgate's marker `tag` in a folder collection; its id, or `None`
    /// when the collection's folder is gone.
    async fn create_marked(
        &self,
        home: &str,
        name: &str,
        tag: &str,
    ) -> Result<Option<String>, MbError> {
        let a = self
            .call(Call {
                method: "POST",
                url: home.to_owned(),
                body: Some(
                    json!({
                        "displayName": name,
                        "singleValueExtendedProperties": [{"id": body::folder_prop(), "value": tag}]
                    })
                    .into(),
                ),
            })
            .await?;
        if let Some(e) = self.refused(&a) {
            return Err(e);
        }
        match a.status {
            200 | 201 => match a.body["id"].as_str() {
                Some(id) if !id.is_empty() => Ok(Some(id.to_owned())),
                _ => Err(MbError::Retry("folder created without an id".into())),
            },
            404 => Ok(None),
            409 => Err(self.name_taken(name)),
            _ => Err(MbError::Retry(format!("folder create: {}", a.describe()))),
        }
    }

    async fn rename_folder(&self, id: &str, name: &str) -> Result<Answer, MbError> {
        self.call(Call {
            method: "PATCH",
            url: self.folder_url(id),
            body: Some(json!({ "displayName": name }).into()),
        })
        .await
    }

    /// A folder crmgate made: still there (`false`: gone), and named `name` again if the user
    /// renamed it.
    async fn check_folder(&self, id: &str, name: &str) -> Result<bool, MbError> {
        let a = self
            .call(Call {
                method: "GET",
                url: self.folder_url(id),
                body: None,
            })
            .await?;
        if let Some(e) = self.refused(&a) {
            return Err(e);
        }
        if a.status == 404 {
            return Ok(false);
        }
        if a.ok() && a.body["displayName"].as_str() != Some(name) {
            let r = self.rename_folder(id, name).await?;
            if !r.ok() {
                return Err(MbError::Retry(format!("folder rename: {}", r.describe())));
            }
        }
        Ok(true)
    }

    /// crmgate's folders (with `tag`) in a folder collection (`…/contactFolders` or
    /// `…/childFolders`): (id, display name); `None` when the collection's folder is gone.
    async fn find_marked(
        &self,
        home: &str,
        tag: &str,
    ) -> Result<Option<Vec<(String, String)>>, MbError> {
        let filter = format!(
            "singleValueExtendedProperties/Any(ep: ep/id eq '{}' and ep/value eq '{}')",
            quote(&body::folder_prop()),
            tag
        );
        let url = format!("{home}?$filter={}", crate::http::percent_encode(&filter));
        Ok(self.list_of(url).await?.map(|l| {
            l.iter()
                .filter_map(|v| {
                    Some((
                        v["id"].as_str()?.to_owned(),
                        v["displayName"].as_str().unwrap_or("").to_owned(),
                    ))
                })
                .collect()
        }))
    }

    /// [`Self::find_marked`] among the top-level folders (always there).
    async fn find_top(&self, tag: &str) -> Result<Vec<(String, String)>, MbError> {
        let top = format!("{}/contactFolders", self.base());
        Ok(self.find_marked(&top, tag).await?.unwrap_or_default())
    }

    /// Deletes a folder crmgate made (with its contacts and child folders); one already gone
    /// is fine.
    async fn delete_folder(&self, id: &str) -> Result<(), MbError> {
        let a = self
            .call(Call {
                method: "DELETE",
                url: self.folder_url(id),
                body: None,
            })
            .await?;
        if let Some(e) = self.refused(&a) {
            Err(e)
        } else if a.ok() || a.status == 404 {
            Ok(())
        } else {
            Err(MbError::Retry(format!("folder delete: {}", a.describe())))
        }
    }

    /// Makes sure the folder holding both exists when `parent_folder_name` is set, with its
    /// name, and that none is left when it is not; its id. Graph cannot move a contact folder,
    /// so folders made at the other place are deleted and made again.
    async fn ensure_parent(&self, meta: &mut Meta) -> Result<Option<String>, MbError> {
        let want = self.mirror.cfg.parent_name.clone();
        match (want, meta.parent.clone()) {
            (None, None) => Ok(None),
            (None, Some(p)) => {
                // Its child folders go with it.
                self.delete_folder(&p.id).await?;
                meta.parent = None;
                self.forget_folders(meta).await?;
                Ok(None)
            }
            (Some(name), Some(p)) => {
                if p.name != name {
                    let a = self.rename_folder(&p.id, &name).await?;
                    if let Some(e) = self.refused(&a) {
                        return Err(e);
                    }
                    if a.status == 404 {
                        return Err(self.parent_gone(meta).await?);
                    }
                    if a.status == 409 {
                        return Err(self.name_taken(&name));
                    }
                    if !a.ok() {
                        return Err(MbError::Retry(format!("folder rename: {}", a.describe())));
                    }
                    meta.parent = Some(FolderMeta {
                        id: p.id.clone(),
                        name,
                    });
                    self.save(meta, Vec::new()).await?;
                }
                Ok(Some(p.id))
            }
            (Some(name), None) => {
                // Folders made directly under Contacts (before a holding folder was set, or
                // before the store forgot them) go: they would be duplicates.
                let mut stale: Vec<String> = meta
                    .folders
                    .iter()
                    .flatten()
                    .map(|f| f.id.clone())
                    .collect();
                for f in FOLDERS {
                    stale.extend(
                        self.find_top(state::folder_tag(f))
                            .await?
                            .into_iter()
                            .map(|x| x.0),
                    );
                }
                if !stale.is_empty() || meta.folders.iter().any(Option::is_some) {
                    for id in stale {
                        self.delete_folder(&id).await?;
                    }
                    self.forget_folders(meta).await?;
                }
                let mut found = self.find_top(state::PARENT_TAG).await?;
                if let Some((id, got)) = found.first().cloned() {
                    for (other, _) in found.drain(1..) {
                        self.delete_folder(&other).await?;
                    }
                    // Found again after the store forgot it: its folders are found by their
                    // markers; a different name is set on the next pass.
                    meta.parent = Some(FolderMeta {
                        id: id.clone(),
                        name: got,
                    });
                    self.save(meta, Vec::new()).await?;
                    return Ok(Some(id));
                }
                let top = format!("{}/contactFolders", self.base());
                let id = self
                    .create_marked(&top, &name, state::PARENT_TAG)
                    .await?
                    .ok_or_else(|| MbError::Retry("the contact folders are not there".into()))?;
                meta.parent = Some(FolderMeta {
                    id: id.clone(),
                    name,
                });
                self.save(meta, Vec::new()).await?;
                Ok(Some(id))
            }
        }
    }

    /// The holding folder, if any: still there (else everything is made again) and with its
    /// name.
    async fn check_parent(&self, meta: &mut Meta) -> Result<(), MbError> {
        let Some(p) = meta.parent.clone() else {
            return Ok(());
        };
        if self.check_folder(&p.id, &p.name).await? {
            Ok(())
        } else {
            Err(self.parent_gone(meta).await?)
        }
    }

    fn name_taken(&self, name: &str) -> MbError {
        MbError::Skip(format!(
            "mailbox {}: a folder named \"{name}\" exists that crmgate did not make; \
             rename it or set another name in [mirror]",
            self.upn
        ))
    }

    /// The collection the folders are looked for and made in answered 404: the holding folder
    /// went (with everything in it), or the mailbox has no contact folders to speak of.
    async fn home_gone(&self, meta: &mut Meta, held: bool) -> Result<MbError, MbError> {
        if held {
            self.parent_gone(meta).await
        } else {
            Ok(MbError::Retry(
                "the mailbox's contact folders are not there".into(),
            ))
        }
    }

    /// The holding folder is gone from the mailbox (its folders with it): forget them all;
    /// the next pass makes them again. The error to end this step with.
    async fn parent_gone(&self, meta: &mut Meta) -> Result<MbError, MbError> {
        meta.parent = None;
        self.forget_folders(meta).await?;
        Ok(MbError::Retry(
            "the folder holding crmgate's folders was removed from the mailbox; made again next"
                .into(),
        ))
    }

    async fn forget_folders(&self, meta: &mut Meta) -> Result<(), MbError> {
        for f in FOLDERS {
            self.folder_gone(meta, f).await?;
        }
        Ok(())
    }

    /// The folder is gone from the mailbox: forget it and its id map; the next pass makes it
    /// again and fills it from the start.
    async fn folder_gone(&self, meta: &mut Meta, f: VirtualFolder) -> Result<(), MbError> {
        self.reset_folder(meta, f, None).await
    }

    /// A folder starts over (`now`: where it is now, if anywhere): no position, no delta
    /// link, no id map.
    async fn reset_folder(
        &self,
        meta: &mut Meta,
        f: VirtualFolder,
        now: Option<FolderMeta>,
    ) -> Result<(), MbError> {
        let i = state::slot(f);
        meta.folders[i] = now;
        meta.states[i] = None;
        meta.delta[i] = None;
        let keys = self.keys.clone();
        self.blocking(move |app| {
            keys.clear_folder(&app.store, f)
                .map_err(|e| MbError::Retry(format!("store: {e}")))
        })
        .await?;
        self.save(meta, Vec::new()).await
    }

    /// Rebuilds the id map of a folder from the mailbox: every item with crmgate's state
    /// property; duplicates of one contact are deleted. Returns what the mailbox holds:
    /// (contact, Graph change key now).
    pub(super) async fn rebuild(
        &self,
        meta: &mut Meta,
        f: VirtualFolder,
    ) -> Result<Vec<(String, String)>, MbError> {
        let i = state::slot(f);
        let Some(fm) = meta.folders[i].clone() else {
            return Ok(Vec::new());
        };
        let url = format!(
            "{}/contacts?$top={LIST_PAGE}&$select=id,changeKey&$expand={}",
            self.folder_url(&fm.id),
            crate::http::percent_encode(&format!(
                "singleValueExtendedProperties($filter=id eq '{}')",
                quote(&body::state_prop())
            ))
        );
        let items = match self.list(url).await {
            Ok(v) => v,
            Err(MbError::Retry(m)) if m.contains("404") => {
                self.folder_gone(meta, f).await?;
                return Ok(Vec::new());
            }
            Err(e) => return Err(e),
        };
        // What the id map held: digests and change keys of items that are still the same
        // stay (a user's edit made while crmgate was away still shows in delta).
        let keys = self.keys.clone();
        let before: HashMap<String, Entry> = self
            .blocking(move |app| {
                keys.entries(&app.store, f)
                    .map(|v| v.into_iter().collect())
                    .map_err(|e| MbError::Retry(format!("store: {e}")))
            })
            .await?;
        let mut map: BTreeMap<String, Entry> = BTreeMap::new();
        let mut extra = Vec::new();
        let mut listing = Vec::new();
        for it in &items {
            let (Some(id), Some(st)) = (it["id"].as_str(), body::state_of(it)) else {
                continue; // not crmgate's: a user's own contact in the folder
            };
            let Some((v, contact)) = body::parse_state(&st) else {
                continue;
            };
            if map.contains_key(contact) {
                extra.push(id.to_owned());
                continue;
            }
            let entry = match before.get(contact) {
                Some(old) if old.item == id && old.v == v => old.clone(),
                _ => Entry {
                    item: id.to_owned(),
                    ck: it["changeKey"].as_str().unwrap_or("").to_owned(),
                    v: v.to_owned(),
                    d: Vec::new(),
                },
            };
            listing.push((
                contact.to_owned(),
                it["changeKey"].as_str().unwrap_or("").to_owned(),
            ));
            map.insert(contact.to_owned(), entry);
        }
        for id in &extra {
            let a = self
                .call(Call {
                    method: "DELETE",
                    url: format!(
                        "{}/contacts/{}",
                        self.folder_url(&fm.id),
                        crate::http::percent_encode(id)
                    ),
                    body: None,
                })
                .await?;
            if !a.ok() && a.status != 404 {
                return Err(MbError::Retry(format!(
                    "duplicate delete: {}",
                    a.describe()
                )));
            }
        }
        if !extra.is_empty() {
            tracing::warn!(mailbox = %self.upn, folder = state::folder_tag(f), removed = extra.len(),
                "duplicates of crmgate contacts found and removed");
        }
        let keys = self.keys.clone();
        let meta2 = meta.clone();
        self.blocking(move |app| {
            keys.replace_folder(&app.store, &meta2, f, map.into_iter().collect())
                .map_err(|e| MbError::Retry(format!("store: {e}")))
        })
        .await?;
        Ok(listing)
    }

    /// Compares a folder in the mailbox with what it must hold and writes the differences:
    /// contacts missing or left over, changed behind crmgate's back, or behind the CRM.
    async fn repair(&self, meta: &mut Meta, f: VirtualFolder) -> Result<u64, MbError> {
        let Some(fm) = meta.folders[state::slot(f)].clone() else {
            return Ok(0);
        };
        // The folder itself: there, and with its name.
        if !self.check_folder(&fm.id, &fm.name).await? {
            self.folder_gone(meta, f).await?;
            return Err(MbError::Retry(
                "a folder was removed from the mailbox; made again next".into(),
            ));
        }
        let listing = self.rebuild(meta, f).await?;
        // The id map as rebuilt: what the mailbox holds, with the versions written.
        let keys = self.keys.clone();
        let held_v: HashMap<String, Entry> = self
            .blocking(move |app| {
                keys.entries(&app.store, f)
                    .map(|v| v.into_iter().collect())
                    .map_err(|e| MbError::Retry(format!("store: {e}")))
            })
            .await?;
        let login = self.login.clone();
        let want: HashMap<String, String> = self
            .blocking(move |app| {
                mailbox_of(app, &login, |mb| {
                    mb.contacts(f)
                        .into_iter()
                        .map(|c| (mb.contact_id(c).to_owned(), mb.change_key(c)))
                        .collect()
                })
            })
            .await?;
        let mut touched = Vec::new();
        let mut held = HashSet::new();
        // A contact changed in the mailbox is the read-back's (delta, or a new delta round
        // after its state expired, compares every item's change key): taken or set back there,
        // never here, where a user's edit made a moment ago would be lost.
        for (contact, _) in &listing {
            held.insert(contact.as_str());
            let stale = match (want.get(contact), held_v.get(contact)) {
                (None, _) => true,
                (Some(v), Some(e)) => *v != e.v,
                (Some(_), None) => true,
            };
            if stale {
                touched.push(contact.clone());
            }
        }
        touched.extend(want.keys().filter(|c| !held.contains(c.as_str())).cloned());
        if touched.is_empty() {
            return Ok(0);
        }
        tracing::info!(mailbox = %self.upn, folder = state::folder_tag(f), contacts = touched.len(),
            "repairing differences between the mailbox and the folder");
        // The rebuilt entries say what is there; everything touched is written in full.
        self.write_contacts(meta, f, touched).await
    }

    /// One page of the folder's change log as writes: (ops, next state, last page).
    async fn plan(
        &self,
        meta: &Meta,
        f: VirtualFolder,
    ) -> Result<(Vec<Op>, String, bool, u64), MbError> {
        let state = meta.states[state::slot(f)].clone();
        let (login, keys) = (self.login.clone(), self.keys.clone());
        self.blocking(move |app| {
            // The page is read under the replica lock; the id map after it is released.
            let (last, page_state, page_last, pending) = mailbox_of(app, &login, |mb| {
                let page = match mb.changes(f, state.as_deref(), PAGE, &HashSet::new(), 0) {
                    Ok(p) => p,
                    // A position the log no longer serves: start the folder over (the id map
                    // keeps what is in the mailbox, so nothing is written twice).
                    Err(_) => mb
                        .changes(f, None, PAGE, &HashSet::new(), 0)
                        .map_err(|e| MbError::Retry(format!("view: {e}")))?,
                };
                // The last change of each contact in the page wins.
                let mut last: Vec<(String, Option<crate::view::Item>)> = Vec::new();
                let mut at: HashMap<String, usize> = HashMap::new();
                for (ch, it) in page.changes {
                    let (contact, item) = match (ch, it) {
                        (ItemChange::Delete, Err(id)) => match mb.contact_of_item(&id) {
                            Some((_, c)) => (c, None),
                            None => continue,
                        },
                        (_, Ok(item)) => (item.contact_id.clone(), Some(item)),
                        _ => continue,
                    };
                    match at.get(&contact) {
                        Some(&i) => last[i] = (contact, item),
                        None => {
                            at.insert(contact.clone(), last.len());
                            last.push((contact, item));
                        }
                    }
                }
                let pending = mb.changes_pending(f, &page.state).unwrap_or(0);
                Ok::<_, MbError>((last, page.state, page.last, pending))
            })??;
            let ops = ops_for(app, &keys, f, last, false)?;
            Ok((ops, page_state, page_last, pending))
        })
        .await
    }

    /// Sends ops until each is done, failed for good, or the rounds run out. Returns the entry
    /// changes of what landed, what was refused, and whether everything landed.
    async fn execute(
        &self,
        folder_id: &str,
        ops: Vec<Op>,
    ) -> Result<(Vec<(String, Option<Entry>)>, Vec<String>, bool), MbError> {
        let mut todo = ops;
        let mut done = Vec::new();
        let mut failed = Vec::new();
        let mut wait = Duration::from_millis(500);
        // Rounds go on while they get writes in; only rounds without any progress count
        // towards giving up (sporadic failures are not an outage).
        let mut idle_rounds = 0;
        while idle_rounds < ROUNDS {
            if todo.is_empty() {
                return Ok((done, failed, true));
            }
            let landed = done.len();
            // Chains as long as the mailbox's recent answers allow: a failed item costs the
            // rest of its chain (`424`), so chains shrink while failures come and grow back.
            let size = self
                .chain
                .load(std::sync::atomic::Ordering::Relaxed)
                .clamp(1, 20);
            let ready = std::mem::take(&mut todo);
            let mut chains: Vec<Vec<Op>> = Vec::new();
            let mut ready = ready.into_iter().peekable();
            while ready.peek().is_some() {
                chains.push(ready.by_ref().take(size).collect());
            }
            let mut set = tokio::task::JoinSet::new();
            for chain in chains {
                let calls: Vec<Call> = chain.iter().map(|op| self.call_of(folder_id, op)).collect();
                let client = self.mirror.client.clone();
                let budget = self.budget.clone();
                set.spawn(async move {
                    let r = client.chain(&budget, &calls).await;
                    (chain, r)
                });
            }
            let mut hint: Option<Duration> = None;
            let mut gone = false;
            let mut denied = None;
            let mut clean = true;
            while let Some(j) = set.join_next().await {
                let Ok((chain, r)) = j else {
                    return Err(MbError::Retry("a batch task failed".into()));
                };
                let answers = match r {
                    Ok(a) => a,
                    Err(SendError::Token(m)) => return Err(MbError::Skip(m)),
                    Err(SendError::NoAnswer(_)) => vec![None; chain.len()],
                };
                for (op, a) in chain.into_iter().zip(answers) {
                    let contact = op.contact().to_owned();
                    match self.outcome(folder_id, op, a) {
                        Done::Entry(e) => done.push((contact, e)),
                        Done::Adopt(e, dups) => {
                            done.push((contact.clone(), Some(e)));
                            todo.extend(dups.into_iter().map(|item| Op::Drop {
                                contact: contact.clone(),
                                item,
                            }));
                        }
                        Done::Nothing => {}
                        Done::Again(op, ra) => {
                            clean = false;
                            if let Some(ra) = ra {
                                hint = Some(hint.map_or(ra, |h| h.max(ra)));
                            }
                            todo.push(op);
                        }
                        Done::Failed(why) => {
                            tracing::warn!(mailbox = %self.upn, contact = %contact, error = %why,
                                "the mailbox refused a contact");
                            failed.push(format!("{contact}: {why}"));
                        }
                        Done::FolderGone => gone = true,
                        Done::Denied(why) => denied = Some(why),
                    }
                }
            }
            if gone {
                return Err(MbError::Retry(FOLDER_GONE.into()));
            }
            if let Some(why) = denied {
                // What landed is kept; the rest waits, the position stays.
                *self.denied.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                return Ok((done, failed, false));
            }
            let max = self.mirror.cfg.batch_size.clamp(1, 20);
            let next = if clean {
                (size * 2).min(max)
            } else {
                (size / 2).max(1)
            };
            self.chain.store(next, std::sync::atomic::Ordering::Relaxed);
            let progressed = done.len() > landed;
            if progressed {
                idle_rounds = 0;
                wait = Duration::from_millis(500);
            } else {
                idle_rounds += 1;
            }
            if !todo.is_empty() {
                // 429s are waited out by the budget; a Retry-After on 5xx is honoured; without
                // one, rounds that got nothing in back off, doubling.
                if let Some(h) = hint {
                    tokio::time::sleep(h.min(Duration::from_secs(60))).await;
                } else if !progressed {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
            }
        }
        let complete = todo.is_empty();
        Ok((done, failed, complete))
    }

    fn call_of(&self, folder_id: &str, op: &Op) -> Call {
        let contacts = format!("{}/contacts", self.folder_url(folder_id));
        match op {
            Op::Create { body, .. } => Call {
                method: "POST",
                url: contacts,
                body: Some(Arc::clone(body)),
            },
            Op::Find { contact, .. } => {
                let filter = format!(
                    "singleValueExtendedProperties/Any(ep: ep/id eq '{}' and ep/value eq '{}')",
                    quote(&body::id_prop()),
                    quote(contact)
                );
                Call {
                    method: "GET",
                    url: format!(
                        "{contacts}?$filter={}&$select=id,changeKey&$expand={}",
                        crate::http::percent_encode(&filter),
                        crate::http::percent_encode(&format!(
                            "singleValueExtendedProperties($filter=id eq '{}')",
                            quote(&body::state_prop())
                        ))
                    ),
                    body: None,
                }
            }
            Op::Update { item, body, .. } => Call {
                method: "PATCH",
                url: format!("{contacts}/{}", crate::http::percent_encode(item)),
                body: Some(Arc::clone(body)),
            },
            Op::Delete { item, .. } | Op::Drop { item, .. } => Call {
                method: "DELETE",
                url: format!("{contacts}/{}", crate::http::percent_encode(item)),
                body: None,
            },
        }
    }

    fn outcome(&self, _folder_id: &str, op: Op, a: Option<Answer>) -> Done {
        let Some(a) = a else {
            // No answer: the write may have landed.
            return match op {
                Op::Create {
                    contact,
                    body,
                    v,
                    d,
                } => Done::Again(
                    Op::Find {
                        contact,
                        body,
                        v,
                        d,
                    },
                    None,
                ),
                other => Done::Again(other, None),
            };
        };
        if a.transient() {
            let ra = (a.status != 429).then_some(a.retry_after).flatten();
            return Done::Again(op, ra);
        }
        if a.status == 403 {
            return Done::Denied(a.describe());
        }
        match op {
            Op::Create { v, d, .. } => match a.status {
                200 | 201 => match a.body["id"].as_str() {
                    Some(id) => Done::Entry(Some(Entry {
                        item: id.to_owned(),
                        ck: a.body["changeKey"].as_str().unwrap_or("").to_owned(),
                        v,
                        d,
                    })),
                    None => Done::Failed("created without an id".into()),
                },
                404 => Done::FolderGone,
                _ => Done::Failed(a.describe()),
            },
            Op::Find {
                contact,
                body,
                v,
                d,
            } => match a.status {
                200 => {
                    // The filter matches values case-insensitively: exact matches only.
                    let mine: Vec<&Value> = a.body["value"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|it| {
                            body::state_of(it)
                                .as_deref()
                                .and_then(body::parse_state)
                                .is_some_and(|(_, c)| c == contact)
                        })
                        .collect();
                    match mine.split_first() {
                        // Not there: the create did not land; sent again.
                        None => Done::Again(
                            Op::Create {
                                contact,
                                body,
                                v,
                                d,
                            },
                            None,
                        ),
                        Some((first, rest)) => Done::Adopt(
                            Entry {
                                item: first["id"].as_str().unwrap_or("").to_owned(),
                                ck: first["changeKey"].as_str().unwrap_or("").to_owned(),
                                v,
                                d,
                            },
                            rest.iter()
                                .filter_map(|x| x["id"].as_str().map(str::to_owned))
                                .collect(),
                        ),
                    }
                }
                404 => Done::FolderGone,
                _ => Done::Failed(a.describe()),
            },
            Op::Update {
                contact,
                item,
                v,
                d,
                ..
            } => match a.status {
                200 => Done::Entry(Some(Entry {
                    item,
                    ck: a.body["changeKey"].as_str().unwrap_or("").to_owned(),
                    v,
                    d,
                })),
                // Deleted in the mailbox since the last read-back: what that means (hidden,
                // deleted in the CRM, or made again) is the read-back's to decide by the
                // folder's delete policy, which runs next. Making it again here would undo a
                // user's delete.
                404 => {
                    let _ = (contact, v, d);
                    self.vanished
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    Done::Nothing
                }
                _ => Done::Failed(a.describe()),
            },
            Op::Delete { .. } => match a.status {
                200 | 204 | 404 => Done::Entry(None),
                _ => Done::Failed(a.describe()),
            },
            Op::Drop { .. } => match a.status {
                200 | 204 | 404 => Done::Nothing,
                _ => Done::Failed(a.describe()),
            },
        }
    }

    /// Writes these contacts of a folder as the view has them now, whatever the id map says
    /// was written: in full where they are, made again where they are missing, removed where
    /// the folder no longer holds them.
    async fn write_contacts(
        &self,
        meta: &mut Meta,
        f: VirtualFolder,
        contacts: Vec<String>,
    ) -> Result<u64, MbError> {
        let Some(fm) = meta.folders[state::slot(f)].clone() else {
            return Ok(0);
        };
        let (login, keys) = (self.login.clone(), self.keys.clone());
        let ops = self
            .blocking(move |app| {
                let items = mailbox_of(app, &login, |mb| {
                    contacts
                        .into_iter()
                        .map(|contact| {
                            let item = mb
                                .contacts_by_lower_id(&contact.to_lowercase())
                                .into_iter()
                                .find(|c| mb.contact_id(*c) == contact && mb.holds(f, *c))
                                .and_then(|c| mb.item(f, c));
                            (contact, item)
                        })
                        .collect::<Vec<_>>()
                })?;
                // Written in full: the mailbox is set to what the folder holds.
                ops_for(app, &keys, f, items, true)
            })
            .await?;
        let (done, failed, complete) = self.execute(&fm.id, ops).await?;
        let n = done.len() as u64;
        let entries = done.into_iter().map(|(c, e)| (f, c, e)).collect();
        self.save(meta, entries).await?;
        if !failed.is_empty() {
            self.mirror.note_failures(&self.login, &failed);
        }
        if !complete {
            return Err(self.incomplete("writes back to the mailbox still waiting".into()));
        }
        Ok(n)
    }

    /// One step: folders, id map, users' edits read back (when `pull`), then the change log of
    /// each folder until caught up.
    pub(super) async fn step(
        &self,
        meta: &mut Meta,
        pull: bool,
        repair: bool,
    ) -> Result<Stepped, MbError> {
        let (offered, contacts) = self.with_mailbox(|mb| {
            let offered = mb.virtual_folders();
            let n: u64 = offered.iter().map(|f| mb.contacts(*f).len() as u64).sum();
            (offered, n)
        })?;
        self.contacts
            .store(contacts, std::sync::atomic::Ordering::Relaxed);
        if meta.upn != self.upn {
            // A new mailbox for this user (or the first): start over there.
            *meta = Meta {
                upn: self.upn.clone(),
                ..Meta::default()
            };
            let keys = self.keys.clone();
            self.blocking(move |app| {
                FOLDERS
                    .iter()
                    .try_for_each(|f| keys.clear_folder(&app.store, *f))
                    .map_err(|e| MbError::Retry(format!("store: {e}")))
            })
            .await?;
            self.save(meta, Vec::new()).await?;
        }
        self.ensure_folders(meta, &offered).await?;
        // After a doubt the id map is read back from the mailbox first.
        let doubted = meta.doubtful;
        // The read-back comes first whenever the folders are compared.
        let pull = pull || doubted || repair;
        tracing::debug!(mailbox = %self.upn, doubted, repair, pull, "mirror step");
        if meta.doubtful {
            for f in FOLDERS {
                self.rebuild(meta, f).await?;
            }
            meta.doubtful = false;
            self.save(meta, Vec::new()).await?;
        }
        let mut out = Stepped::default();
        if pull {
            let touched = match self.pull(meta).await {
                Ok(t) => t,
                Err(MbError::Retry(m)) if m == FOLDER_GONE => {
                    for f in FOLDERS {
                        if let Some(fm) = meta.folders[state::slot(f)].clone() {
                            let a = self
                                .call(Call {
                                    method: "GET",
                                    url: self.folder_url(&fm.id),
                                    body: None,
                                })
                                .await?;
                            if a.status == 404 {
                                self.folder_gone(meta, f).await?;
                            }
                        }
                    }
                    return Err(MbError::Retry(
                        "a folder was removed from the mailbox; made again next".into(),
                    ));
                }
                Err(e) => return Err(e),
            };
            for (f, contacts) in touched {
                out.written += self.write_contacts(meta, f, contacts).await?;
            }
        }
        // Users' edits are in; now the whole of each folder is compared (after a doubt, and
        // every repair interval) — never before the read-back, or a user's edit made while
        // crmgate was away would be set back before it was seen.
        if meta.filled && (doubted || repair) {
            self.check_parent(meta).await?;
            let mut written = 0;
            for f in FOLDERS {
                if offered.contains(&f) {
                    written += self.repair(meta, f).await?;
                }
            }
            meta.last_repair = super::unix_now();
            self.save(meta, Vec::new()).await?;
            if written > 0 {
                tracing::info!(mailbox = %self.upn, written, "mailbox repaired");
            }
            out.written += written;
        }
        for f in offered {
            let i = state::slot(f);
            while let Some(fm) = meta.folders[i].clone() {
                let (ops, next, last, pending) = self.plan(meta, f).await?;
                if ops.iter().any(|o| matches!(o, Op::Create { .. })) && !meta.doubtful {
                    // A create whose answer is lost could land unseen: until this page is
                    // saved, a restart rebuilds the id map from the mailbox first.
                    meta.doubtful = true;
                    self.save(meta, Vec::new()).await?;
                }
                let n = ops.len();
                for op in &ops {
                    tracing::debug!(mailbox = %self.upn, folder = state::folder_tag(f), op = ?op, "mirror op");
                }
                let r = self.execute(&fm.id, ops).await;
                let (done, failed, complete) = match r {
                    Ok(x) => x,
                    Err(MbError::Retry(m)) if m == FOLDER_GONE => {
                        self.folder_gone(meta, f).await?;
                        return Err(MbError::Retry(format!(
                            "folder \"{}\" was removed from the mailbox; made again next",
                            fm.name
                        )));
                    }
                    Err(e) => return Err(e),
                };
                out.written += done.len() as u64;
                if complete {
                    meta.states[i] = Some(next);
                    meta.doubtful = false;
                }
                let entries = done.into_iter().map(|(c, e)| (f, c, e)).collect();
                self.save(meta, entries).await?;
                if !failed.is_empty() {
                    self.mirror.note_failures(&self.login, &failed);
                }
                if !complete {
                    return Err(self.incomplete(format!("{n} writes still waiting")));
                }
                if last {
                    out.backlog += pending;
                    break;
                }
            }
        }
        if self
            .vanished
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            // Items deleted in the mailbox: the read-back applies the delete policy now.
            let touched = self.pull(meta).await?;
            for (f, contacts) in touched {
                out.written += self.write_contacts(meta, f, contacts).await?;
            }
        }
        if !meta.filled {
            meta.filled = true;
            meta.last_repair = super::unix_now();
        }
        self.save(meta, Vec::new()).await?;
        Ok(out)
    }
}
