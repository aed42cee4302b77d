//! The write path both faces share: a client's create, update or delete is planned against
//! the replica (ids, folder direction, conflicts, field-level patch), then executed against
//! the CRM by the caller, outside the replica lock.
//!
//! Policies (per folder): direction `read-write` / `read-only`; delete `hide` (a per-user
//! tombstone, CRM untouched), `crm` (deleted in the CRM) or `deny`. A create in My, or in the
//! default Contacts folder, makes the writer the contact's owner so it stays in their My
//! folder; a `CompanyName` that matches exactly one company in the writer's scope links the
//! contact to it, otherwise the name is kept as text on the contact.

use super::{FolderRef, Mailbox, ViewError};
use crate::domain::mapping::card;
use crate::domain::patch::{self, card_value, Edit, EditError, Field};
use crate::domain::rules::VirtualFolder;
use crate::domain::{CompanyId, Contact, ContactField, ContactId};

pub use crate::domain::rules::DeletePolicy;

/// How to treat a write based on an older version (EWS `ConflictResolution`, Graph If-Match).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConflictMode {
    /// Refuse.
    NeverOverwrite,
    /// Apply when the fields written did not change in between.
    AutoResolve,
    /// Apply the fields written that did not change in between; a field changed since keeps
    /// its current value (a two-way mirror's merge: the later change wins per field).
    Merge,
    /// Apply.
    AlwaysOverwrite,
}

/// Why a client write was not done: the one error of the write path, whether the plan refused
/// it or the CRM did. Each face renders it in exactly one function. Nothing was written in any
/// of these cases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteError {
    /// The item or folder id is no id.
    Malformed,
    /// No such item for this user (or the CRM no longer has it).
    NotFound,
    /// No such folder for this user.
    FolderNotFound,
    /// The folder's direction or a policy forbids it.
    Forbidden,
    /// The contact changed since the client's version, in the fields it writes; `current`:
    /// the CRM version it has now, when known.
    Conflict {
        /// Current CRM version.
        current: Option<String>,
    },
    /// Bad input: which fields, and why.
    Invalid(Vec<EditError>),
    /// The CRM refused it (it cannot hold a value, or its own checks failed): which field,
    /// and the reason, safe to show to the client.
    Refused {
        /// The field at fault (`middle_name`, `emails`, `companies`, …), or `contact`.
        field: String,
        /// The reason.
        reason: String,
    },
    /// The CRM is down or throttling; retry after this many milliseconds.
    Unavailable {
        /// Suggested back-off.
        retry_after_ms: u64,
    },
    /// Anything else (logged where it happened).
    Internal,
}

impl WriteError {
    /// A conflict whose current version is not known.
    pub const CONFLICT: WriteError = WriteError::Conflict { current: None };

    /// A short code for the audit log.
    pub fn code(&self) -> &'static str {
        match self {
            WriteError::Malformed => "malformed",
            WriteError::NotFound => "not-found",
            WriteError::FolderNotFound => "folder-not-found",
            WriteError::Forbidden => "forbidden",
            WriteError::Conflict { .. } => "conflict",
            WriteError::Invalid(_) => "invalid",
            WriteError::Refused { .. } => "crm-refused",
            WriteError::Unavailable { .. } => "crm-unavailable",
            WriteError::Internal => "internal",
        }
    }

    /// The CRM cannot take these values (declared by its capabilities, or said by the CRM).
    pub fn refused(problems: &[crate::domain::dataset::Problem]) -> WriteError {
        let field = problems
            .first()
            .map(|p| p.path.clone())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "contact".into());
        let reason = problems
            .iter()
            .take(5)
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        WriteError::Refused { field, reason }
    }

    /// How a CRM failure reaches the faces: the one site that reads CRM errors.
    pub fn from_crm(e: &crate::crm::CrmError) -> WriteError {
        use crate::crm::CrmError;
        match e {
            CrmError::Unavailable { retry_after, .. } => WriteError::Unavailable {
                retry_after_ms: retry_after.map(|d| d.as_millis() as u64).unwrap_or(5000),
            },
            CrmError::PreconditionFailed { current } => WriteError::Conflict {
                current: current.clone(),
            },
            CrmError::AlreadyExists => WriteError::CONFLICT,
            CrmError::Invalid(problems) => WriteError::refused(problems),
            CrmError::NotFound => WriteError::NotFound,
            other => {
                tracing::error!(error = %other, "write failed at the CRM");
                WriteError::Internal
            }
        }
    }
}

impl From<ViewError> for WriteError {
    fn from(e: ViewError) -> Self {
        match e {
            ViewError::Malformed => WriteError::Malformed,
            ViewError::FolderNotFound => WriteError::FolderNotFound,
            ViewError::ItemNotFound | ViewError::InvalidSyncState => WriteError::NotFound,
        }
    }
}

/// A planned write.
#[derive(Clone, Debug)]
pub enum Plan {
    /// Create this contact (it must not exist yet).
    Create {
        /// The new record (boxed: the other plans are small).
        record: Box<Contact>,
    },
    /// Change these fields of the contact to their values in `record`, at `version`.
    Update {
        /// The contact after the change.
        record: Box<Contact>,
        /// The contact fields that change (what the CRM is sent).
        changed: Vec<ContactField>,
        /// Required current CRM version.
        version: String,
    },
    /// Delete in the CRM at this version.
    Delete {
        /// Required current CRM version.
        version: String,
    },
    /// Hide from this user.
    Hide,
    /// Nothing changes (the client wrote what is there).
    Nothing,
}

/// A planned write with what it concerns.
#[derive(Clone, Debug)]
pub struct Planned {
    /// The user whose mailbox it is (hides are per user).
    pub user: String,
    /// The plan.
    pub plan: Plan,
    /// Folder the item is in (or lands in).
    pub folder: VirtualFolder,
    /// The contact.
    pub contact_id: String,
    /// Fields written (for the audit log).
    pub fields: Vec<Field>,
}

/// The per-folder write policies.
#[derive(Clone, Copy, Debug)]
pub struct WritePolicies {
    /// Delete policy of My.
    pub my_delete: DeletePolicy,
    /// Delete policy of Global.
    pub global_delete: DeletePolicy,
}

fn new_id(wanted: Option<&str>) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .take(64)
            .collect()
    };
    match wanted.map(clean).filter(|s| s.len() >= 4) {
        Some(s) => s,
        None => {
            let r: u64 = rand::random();
            format!("gw-{r:016x}")
        }
    }
}

impl Mailbox<'_> {
    fn virtual_target(&self, f: FolderRef) -> Result<VirtualFolder, WriteError> {
        match f {
            // A contact created in the default Contacts folder is captured into My.
            FolderRef::Contacts => Ok(VirtualFolder::My),
            FolderRef::Virtual(v) => Ok(v),
            _ => Err(WriteError::Forbidden),
        }
    }

    /// Links the contact to the one company in the user's scope its CompanyName names.
    fn link_company(&self, rec: &mut Contact, edits: &[Edit]) {
        let Some(name) = edits.iter().find_map(|e| match e {
            Edit::Set(Field::CompanyName, v) if !v.trim().is_empty() => Some(v.trim()),
            _ => None,
        }) else {
            return;
        };
        let found = self.engine.companies_named(self.user, name);
        if let [k] = found.as_slice() {
            rec.companies = vec![CompanyId::from(k.id.as_str())];
            rec.extra.remove("company_name");
        }
    }

    /// Plans the creation of a contact in folder `f`.
    pub fn plan_create(
        &self,
        f: FolderRef,
        edits: &[Edit],
        wanted_id: Option<&str>,
    ) -> Result<Planned, WriteError> {
        let v = self.virtual_target(f)?;
        if !self.writable(FolderRef::Virtual(v)) {
            return Err(WriteError::Forbidden);
        }
        let mut id = new_id(wanted_id);
        if self.engine.contact_record_by_id(&id).is_some() {
            id = new_id(None);
        }
        let user = self
            .engine
            .user_record(self.user)
            .ok_or(WriteError::Forbidden)?;
        let base = Contact {
            id: ContactId::from(id.clone()),
            subsystems: user.subsystems.clone(),
            owner: (v == VirtualFolder::My).then(|| user.id.clone()),
            ..Default::default()
        };
        let (mut record, fields) =
            patch::apply(&base, edits, &self.cfg.mapping).map_err(WriteError::Invalid)?;
        self.link_company(&mut record, edits);
        let problems = self.cfg.capabilities.check_create(&base, &record);
        if !problems.is_empty() {
            return Err(WriteError::refused(&problems));
        }
        Ok(Planned {
            user: self.user_id.clone(),
            plan: Plan::Create {
                record: Box::new(record),
            },
            folder: v,
            contact_id: id,
            fields,
        })
    }

    /// Plans an update of the item `item_id`, which the client read at `change_key`.
    pub fn plan_update(
        &self,
        item_id: &str,
        change_key: Option<&str>,
        mode: ConflictMode,
        edits: &[Edit],
    ) -> Result<Planned, WriteError> {
        let item = self.item_by_id(item_id)?;
        if !self.writable(FolderRef::Virtual(item.folder)) {
            return Err(WriteError::Forbidden);
        }
        let c = self
            .engine
            .find_contact(&item.contact_id)
            .ok_or(WriteError::NotFound)?;
        let (current, version) = self.engine.contact_record(c).ok_or(WriteError::NotFound)?;
        let stale = change_key.is_some_and(|k| k != item.change_key);
        let mut kept: Option<Vec<Edit>> = None;
        if stale {
            match mode {
                ConflictMode::NeverOverwrite => {
                    return Err(WriteError::Conflict {
                        current: Some(version.to_string()),
                    })
                }
                ConflictMode::AlwaysOverwrite => {}
                ConflictMode::AutoResolve | ConflictMode::Merge => {
                    // The version the client read, if still known; then the fields it writes
                    // must not have changed since (Merge: those that did are left out).
                    let key = change_key.unwrap_or("");
                    let base = self
                        .engine
                        .contact_history(c)
                        .iter()
                        .rev()
                        .find(|(ver, _)| self.key_of(ver) == key)
                        .map(|(_, r)| r.clone())
                        .ok_or_else(|| WriteError::Conflict {
                            current: Some(version.to_string()),
                        })?;
                    let companies: Vec<&crate::domain::Company> = self
                        .engine
                        .contact_companies(c)
                        .into_iter()
                        .map(|k| &**k)
                        .collect();
                    let then = card(&base, &companies, &self.cfg.mapping);
                    let now = card(current, &companies, &self.cfg.mapping);
                    let unchanged =
                        |e: &&Edit| card_value(&then, e.field()) == card_value(&now, e.field());
                    if mode == ConflictMode::Merge {
                        kept = Some(edits.iter().filter(unchanged).cloned().collect());
                    } else if !edits.iter().all(|e| unchanged(&e)) {
                        return Err(WriteError::Conflict {
                            current: Some(version.to_string()),
                        });
                    }
                }
            }
        }
        let edits = kept.as_deref().unwrap_or(edits);
        let (mut record, fields) =
            patch::apply(current, edits, &self.cfg.mapping).map_err(WriteError::Invalid)?;
        self.link_company(&mut record, edits);
        let plan = if fields.is_empty() && record == **current {
            Plan::Nothing
        } else {
            let problems = self.cfg.capabilities.check_contact(current, &record);
            if !problems.is_empty() {
                return Err(WriteError::refused(&problems));
            }
            Plan::Update {
                changed: current.changed_fields(&record),
                record: Box::new(record),
                version: version.to_owned(),
            }
        };
        Ok(Planned {
            user: self.user_id.clone(),
            plan,
            folder: item.folder,
            contact_id: item.contact_id,
            fields,
        })
    }

    /// Plans the deletion of the item `item_id` under the folder's delete policy.
    pub fn plan_delete(
        &self,
        item_id: &str,
        policies: &WritePolicies,
    ) -> Result<Planned, WriteError> {
        let item = self.item_by_id(item_id)?;
        if !self.writable(FolderRef::Virtual(item.folder)) {
            return Err(WriteError::Forbidden);
        }
        let policy = match item.folder {
            VirtualFolder::My => policies.my_delete,
            VirtualFolder::Global => policies.global_delete,
        };
        let c = self
            .engine
            .find_contact(&item.contact_id)
            .ok_or(WriteError::NotFound)?;
        let (_, version) = self.engine.contact_record(c).ok_or(WriteError::NotFound)?;
        let plan = match policy {
            DeletePolicy::Deny => return Err(WriteError::Forbidden),
            DeletePolicy::Crm => Plan::Delete {
                version: version.to_owned(),
            },
            DeletePolicy::Hide => Plan::Hide,
        };
        Ok(Planned {
            user: self.user_id.clone(),
            plan,
            folder: item.folder,
            contact_id: item.contact_id,
            fields: Vec::new(),
        })
    }

    /// The item of a contact in a folder after a write, if the user sees it there.
    pub fn item_after_write(&self, f: VirtualFolder, contact_id: &str) -> Option<super::Item> {
        let c = self.engine.find_contact(contact_id)?;
        let now = self.engine.folder_of(self.user, c)?;
        let _ = f;
        self.item_at(now, c)
    }
}
