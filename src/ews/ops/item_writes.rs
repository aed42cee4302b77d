//! What CreateItem, UpdateItem and DeleteItem share: planning each item against the view,
//! and rendering one response message per item, in request order, after the server executed
//! the plans against the CRM (outside the replica lock).

use super::Fault;
use crate::ews::envelope::{
    close_response, error_message, error_message_text, error_message_with, open_response,
    open_success,
};
use crate::ews::error::{self, EwsError};
use crate::ews::xml::{Element, Xml};
use crate::ews::{envelope, Ctx};
use crate::view::write::{Planned, WriteError};
use crate::view::FolderRef;

/// Why one item of a write request was not written.
#[derive(Debug)]
pub enum ItemError {
    /// EWS's own checks of the request refused it.
    Request(EwsError),
    /// The write path refused it, or the CRM did.
    Write(WriteError),
}

impl From<EwsError> for ItemError {
    fn from(e: EwsError) -> Self {
        ItemError::Request(e)
    }
}

impl ItemError {
    /// A short code for the audit log.
    pub fn code(&self) -> &'static str {
        match self {
            ItemError::Request(e) => e.code,
            ItemError::Write(w) => w.code(),
        }
    }
}

/// The outcome of one item of a write request.
#[derive(Debug)]
pub enum ItemResult {
    /// Written (or nothing to write). Boxed: a plan carries a whole record.
    Done(Box<Planned>),
    /// Not written.
    Failed(ItemError),
}

/// True for the operations planned and executed this way.
pub fn is_item_write(op: &Element) -> bool {
    matches!(op.name.as_str(), "CreateItem" | "UpdateItem" | "DeleteItem")
}

/// How the write path's errors reach EWS clients: the one mapping site, one response message.
fn write_error(x: &mut Xml, tag: &str, e: &WriteError) {
    let fixed = match e {
        WriteError::Malformed => error::ID_MALFORMED,
        WriteError::NotFound => error::ITEM_NOT_FOUND,
        WriteError::FolderNotFound => error::FOLDER_NOT_FOUND,
        WriteError::Forbidden => error::ACCESS_DENIED,
        WriteError::Conflict { .. } => error::IRRESOLVABLE_CONFLICT,
        WriteError::Invalid(errs) if errs.iter().any(|e| e.message.contains("read-only")) => {
            error::READ_ONLY_PROPERTY
        }
        WriteError::Invalid(_) => error::INVALID_VALUE,
        WriteError::Refused { reason, .. } => {
            // The field is named in the text: the CRM cannot hold the value or refused it.
            let text = format!("The CRM refused the change: {reason}");
            return error_message_text(x, tag, error::INVALID_PROPERTY_SET_CODE, &text);
        }
        WriteError::Unavailable { retry_after_ms } => {
            let ms = retry_after_ms.to_string();
            return error_message_with(x, tag, &error::SERVER_BUSY, |x| {
                x.open("m:MessageXml", &[]);
                x.text("t:Value", &[("Name", "BackOffMilliseconds")], &ms);
                x.close("m:MessageXml");
            });
        }
        WriteError::Internal => error::INTERNAL,
    };
    error_message(x, tag, &fixed)
}

/// Plans every item of a write request (under the replica's read lock).
pub fn plan(ctx: &Ctx<'_, '_>, op: &Element) -> Result<Vec<Result<Planned, ItemError>>, Fault> {
    match op.name.as_str() {
        "CreateItem" => super::create_item::plan(ctx, op),
        "UpdateItem" => super::update_item::plan(ctx, op),
        "DeleteItem" => super::delete_item::plan(ctx, op),
        other => Err(super::schema(&format!("{other} is not an item write"))),
    }
}

/// Renders the response to a write request from the per-item results.
pub fn render(ctx: &Ctx<'_, '_>, op: &Element, results: &[ItemResult], x: &mut Xml) {
    let name = op.name.as_str();
    let tag = format!("m:{name}ResponseMessage");
    open_response(x, name);
    for r in results {
        match r {
            ItemResult::Failed(ItemError::Request(e)) => error_message(x, &tag, e),
            ItemResult::Failed(ItemError::Write(e)) => write_error(x, &tag, e),
            ItemResult::Done(p) => {
                open_success(x, &tag);
                if name != "DeleteItem" {
                    x.open("m:Items", &[]);
                    match ctx.mailbox.item_after_write(p.folder, &p.contact_id) {
                        Some(item) => {
                            x.open("t:Contact", &[]);
                            x.empty(
                                "t:ItemId",
                                &[("Id", &item.id), ("ChangeKey", &item.change_key)],
                            );
                            x.close("t:Contact");
                        }
                        None => {
                            // Written, but not in this user's folders (rules decide): the id
                            // of where it was written.
                            let id = ctx.mailbox.item_id_for(p.folder, &p.contact_id);
                            x.open("t:Contact", &[]);
                            x.empty("t:ItemId", &[("Id", &id)]);
                            x.close("t:Contact");
                        }
                    }
                    x.close("m:Items");
                    if name == "UpdateItem" {
                        x.open("m:ConflictResults", &[]);
                        x.text("t:Count", &[], "0");
                        x.close("m:ConflictResults");
                    }
                }
                x.close(&tag);
            }
        }
    }
    close_response(x, name);
}

/// The whole answer envelope for a write request.
pub fn answer(ctx: &Ctx<'_, '_>, op: &Element, results: &[ItemResult]) -> Vec<u8> {
    let mut x = Xml::new();
    envelope::open(&mut x);
    render(ctx, op, results, &mut x);
    envelope::close(&mut x);
    x.finish()
}

/// The folder a CreateItem saves into (default: the Contacts folder).
pub fn saved_folder(ctx: &Ctx<'_, '_>, op: &Element) -> Result<FolderRef, EwsError> {
    match op
        .child("SavedItemFolderId")
        .and_then(|s| s.children.first())
    {
        Some(e) => ctx.folder(e).map(|(_, f)| f),
        None => Ok(FolderRef::Contacts),
    }
}
