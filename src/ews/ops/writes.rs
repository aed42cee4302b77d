//! Write operations: not offered by the read-side EWS face yet. Each requested item gets a
//! clean per-message `ErrorAccessDenied`, in request order, so clients fail one change at a
//! time instead of the whole call.

use super::Fault;
use crate::ews::envelope::{close_response, error_message, open_response};
use crate::ews::error::ACCESS_DENIED;
use crate::ews::xml::{Element, Xml};
use crate::ews::Ctx;

/// Runs CreateItem, UpdateItem, DeleteItem and the other writes.
pub fn run(_ctx: &Ctx<'_, '_>, op: &Element, x: &mut Xml) -> Result<(), Fault> {
    let container = match op.name.as_str() {
        "CreateItem" => "Items",
        "UpdateItem" => "ItemChanges",
        "DeleteItem" | "MoveItem" | "CopyItem" => "ItemIds",
        "CreateFolder" => "Folders",
        "UpdateFolder" => "FolderChanges",
        "CreateAttachment" => "Attachments",
        "DeleteAttachment" => "AttachmentIds",
        _ => "FolderIds",
    };
    let n = op
        .child(container)
        .map(|c| c.children.len())
        .unwrap_or(0)
        .max(1);
    let tag = format!("m:{}ResponseMessage", op.name);
    open_response(x, &op.name);
    for _ in 0..n {
        error_message(x, &tag, &ACCESS_DENIED);
    }
    close_response(x, &op.name);
    Ok(())
}
