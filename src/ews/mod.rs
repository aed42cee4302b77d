//! The EWS face: SOAP 1.1 at `/EWS/Exchange.asmx`. Parses the envelope, opens the mailbox
//! (honouring `ExchangeImpersonation`), dispatches to one file per operation, and renders the
//! answer. Translation only: folders, membership, ids and sync live in `view`.
//!
//! May import view, domain and quick-xml; never crm, replica or store.

pub mod autodiscover;
pub mod contact;
pub mod contact_in;
pub mod envelope;
pub mod error;
pub mod folder;
pub mod folders;
pub mod ops;
pub mod restriction;
pub mod shape;
pub mod xml;

use crate::view::{FolderRef, Mailbox, MailboxError, Session};
use envelope::Fault;
use error::EwsError;
use xml::{Element, Xml};

/// What the server sends back: HTTP status and body (always `text/xml; charset=utf-8`).
#[derive(Debug)]
pub struct Answer {
    /// 200 for responses, 500 for faults.
    pub status: u16,
    /// The envelope.
    pub body: Vec<u8>,
}

/// What one request may cost: ids it may name, work its restriction may take, and the size
/// of its answer. Everything a client controls is bounded by these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest answer body; past it the request gets an `ErrorInsufficientResources` fault.
    pub max_answer_bytes: usize,
    /// Most folder ids in one FindItem, FindFolder or GetFolder.
    pub max_folder_ids: usize,
    /// Most item ids in one GetItem, ConvertId or item write.
    pub max_item_ids: usize,
    /// Most restriction-node evaluations one request may cost (items tested × nodes).
    pub max_evaluations: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_answer_bytes: 32 << 20,
            max_folder_ids: 64,
            max_item_ids: 1000,
            max_evaluations: 4_000_000,
        }
    }
}

/// Everything an operation needs.
pub struct Ctx<'s, 'a> {
    /// The session (for mailboxes named in requests).
    pub session: &'s Session<'a>,
    /// The mailbox of this request (own, or impersonated).
    pub mailbox: Mailbox<'a>,
    /// This request's bounds.
    pub limits: Limits,
    /// Restriction evaluations left for this request.
    pub evaluations: std::cell::Cell<u64>,
}

impl Ctx<'_, '_> {
    /// Takes `n` restriction evaluations from the request's budget; a fault once it is spent.
    pub fn spend(&self, n: u64) -> Result<(), Fault> {
        let left = self.evaluations.get();
        if n > left {
            return Err(Fault {
                code: "ErrorQueryFilterTooLong",
                message: format!(
                    "The restriction would be tested more than {} times in this request; \
                     name fewer folders or a smaller restriction.",
                    self.limits.max_evaluations
                ),
            });
        }
        self.evaluations.set(left - n);
        Ok(())
    }

    /// A fault once the answer written so far is over the size bound.
    pub fn check_size(&self, x: &Xml) -> Result<(), Fault> {
        if x.len() > self.limits.max_answer_bytes {
            return Err(answer_too_large(self.limits.max_answer_bytes));
        }
        Ok(())
    }
}

/// The fault for an answer over `max` bytes.
pub fn answer_too_large(max: usize) -> Fault {
    Fault {
        code: "ErrorInsufficientResources",
        message: format!(
            "The answer would be larger than {max} bytes; ask for fewer items or a smaller page."
        ),
    }
}

impl<'a> Ctx<'_, 'a> {
    /// Resolves a `t:FolderId` or `t:DistinguishedFolderId` to a mailbox and folder.
    pub fn folder(&self, e: &Element) -> Result<(Mailbox<'a>, FolderRef), EwsError> {
        match e.name.as_str() {
            "FolderId" => {
                let id = e.attr("Id").ok_or(error::ID_MALFORMED)?;
                let mb = self
                    .session
                    .mailbox(Some(&self.mailbox.login()))
                    .map_err(mailbox_error)?;
                let f = mb
                    .folder_by_id(id)
                    .map_err(|e| error::from_view(&e, false))?;
                Ok((mb, f))
            }
            "DistinguishedFolderId" => {
                let id = e.attr("Id").ok_or(error::FOLDER_NOT_FOUND)?;
                let addr = e
                    .path(&["Mailbox", "EmailAddress"])
                    .map(|m| m.text.as_str());
                let mb = match addr {
                    Some(a) => self.session.mailbox(Some(a)).map_err(mailbox_error)?,
                    None => self
                        .session
                        .mailbox(Some(&self.mailbox.login()))
                        .map_err(mailbox_error)?,
                };
                let f = mb.distinguished(id).ok_or(error::FOLDER_NOT_FOUND)?;
                Ok((mb, f))
            }
            _ => Err(error::FOLDER_NOT_FOUND),
        }
    }
}

fn mailbox_error(e: MailboxError) -> EwsError {
    match e {
        MailboxError::Denied => error::ACCESS_DENIED,
        MailboxError::NoSuchMailbox => error::NON_EXISTENT_MAILBOX,
    }
}

fn fault_answer(f: &Fault) -> Answer {
    Answer {
        status: 500,
        body: envelope::fault(f),
    }
}

/// Parses a request body: malformed XML and envelopes become faults before any lock is taken.
pub fn parse(body: &[u8]) -> Result<envelope::Request, Answer> {
    let root = xml::parse(body).map_err(|e| {
        fault_answer(&Fault {
            code: "ErrorSchemaValidation",
            message: format!("The request failed schema validation: {e}"),
        })
    })?;
    envelope::read(root).map_err(|f| fault_answer(&f))
}

fn context<'s, 'a>(
    session: &'s Session<'a>,
    req: &envelope::Request,
    limits: Limits,
) -> Result<Ctx<'s, 'a>, Answer> {
    match session.mailbox(req.impersonate.as_deref()) {
        Ok(mailbox) => Ok(Ctx {
            session,
            mailbox,
            limits,
            evaluations: std::cell::Cell::new(limits.max_evaluations),
        }),
        Err(e) => {
            let err = match e {
                MailboxError::Denied => error::IMPERSONATE_DENIED,
                MailboxError::NoSuchMailbox => error::NON_EXISTENT_MAILBOX,
            };
            Err(fault_answer(&Fault {
                code: err.code,
                message: err.text.to_owned(),
            }))
        }
    }
}

/// Plans an item write (CreateItem, UpdateItem, DeleteItem) for the signed-in session: one
/// result per item, in request order. The caller executes the plans, then calls
/// [`answer_write`].
pub fn plan_write(
    session: &Session<'_>,
    req: &envelope::Request,
    limits: Limits,
) -> Result<Vec<Result<crate::view::write::Planned, ops::item_writes::ItemError>>, Answer> {
    let ctx = context(session, req, limits)?;
    ops::item_writes::plan(&ctx, &req.op).map_err(|f| fault_answer(&f))
}

/// Renders the answer to an executed item write.
pub fn answer_write(
    session: &Session<'_>,
    req: &envelope::Request,
    results: &[ops::item_writes::ItemResult],
    limits: Limits,
) -> Answer {
    match context(session, req, limits) {
        Ok(ctx) => Answer {
            status: 200,
            body: ops::item_writes::answer(&ctx, &req.op, results),
        },
        Err(a) => a,
    }
}

/// True when the request is an item write, answered through [`plan_write`].
pub fn is_item_write(req: &envelope::Request) -> bool {
    ops::item_writes::is_item_write(&req.op)
}

/// True when answering `req` is known beforehand to be little work (well under a
/// millisecond): folder operations, a few ids, and a sync poll with few changes waiting. Such
/// requests are answered on the async worker; all others go where heavy work goes.
pub fn is_light(session: &Session<'_>, req: &envelope::Request) -> bool {
    const FEW: usize = 16;
    let op = &req.op;
    let ids = |name: &str| op.child(name).map_or(0, |c| c.children.len());
    match op.name.as_str() {
        "GetFolder" | "FindFolder" | "SyncFolderHierarchy" | "GetUserPhoto" => {
            ids("FolderIds") + ids("ParentFolderIds") <= FEW
        }
        "GetItem" => ids("ItemIds") <= FEW,
        "ConvertId" => ids("SourceIds") <= FEW,
        "SyncFolderItems" => {
            let Ok(ctx) = context(session, req, Limits::default()) else {
                return true;
            };
            let state = op.child_text("SyncState").map(str::trim).unwrap_or("");
            let folder = op.child("SyncFolderId").and_then(|s| s.children.first());
            match (folder.map(|f| ctx.folder(f)), state) {
                (Some(Ok((mb, FolderRef::Virtual(f)))), s) if !s.is_empty() => {
                    mb.changes_pending(f, s).is_some_and(|n| n <= FEW as u64)
                }
                // Other folders are empty; unknown folders and missing states are errors or
                // first syncs: only the latter is work.
                (Some(Ok((_, FolderRef::Virtual(_)))), _) => false,
                _ => true,
            }
        }
        _ => false,
    }
}

/// Answers one parsed request for the signed-in session, within `limits`.
pub fn handle(session: &Session<'_>, req: &envelope::Request, limits: Limits) -> Answer {
    let ctx = match context(session, req, limits) {
        Ok(c) => c,
        Err(a) => return a,
    };
    let mut x = Xml::new();
    envelope::open(&mut x);
    let result = ops::dispatch(&ctx, &req.op, &mut x);
    match result {
        Ok(()) => {
            envelope::close(&mut x);
            if let Err(f) = ctx.check_size(&x) {
                return fault_answer(&f);
            }
            Answer {
                status: 200,
                body: x.finish(),
            }
        }
        Err(f) => fault_answer(&f),
    }
}
