//! The EWS face: SOAP 1.1 at `/EWS/Exchange.asmx`. Parses the envelope, opens the mailbox
//! (honouring `ExchangeImpersonation`), dispatches to one file per operation, and renders the
//! answer. Translation only: folders, membership, ids and sync live in `view`.
//!
//! May import view, domain and quick-xml; never crm, replica or store.

pub mod autodiscover;
pub mod contact;
pub mod envelope;
pub mod error;
pub mod folder;
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

/// Everything an operation needs.
pub struct Ctx<'s, 'a> {
    /// The session (for mailboxes named in requests).
    pub session: &'s Session<'a>,
    /// The mailbox of this request (own, or impersonated).
    pub mailbox: Mailbox<'a>,
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

/// Answers one parsed request for the signed-in session.
pub fn handle(session: &Session<'_>, req: &envelope::Request) -> Answer {
    let mailbox = match session.mailbox(req.impersonate.as_deref()) {
        Ok(m) => m,
        Err(e) => {
            let (code, message) = match e {
                MailboxError::Denied => (
                    error::IMPERSONATE_DENIED.code,
                    error::IMPERSONATE_DENIED.text,
                ),
                MailboxError::NoSuchMailbox => (
                    error::NON_EXISTENT_MAILBOX.code,
                    error::NON_EXISTENT_MAILBOX.text,
                ),
            };
            return fault_answer(&Fault {
                code,
                message: message.to_owned(),
            });
        }
    };
    let ctx = Ctx { session, mailbox };
    let mut x = Xml::new();
    envelope::open(&mut x);
    let result = ops::dispatch(&ctx, &req.op, &mut x);
    match result {
        Ok(()) => {
            envelope::close(&mut x);
            Answer {
                status: 200,
                body: x.finish(),
            }
        }
        Err(f) => fault_answer(&f),
    }
}
