//! `GetItem`: items by id, batched, one response message per id in request order. An id of
//! another user, a tampered id, or a contact the user no longer sees is "not found".
//!
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/getitem-operation>.

use super::{required, Fault};
use crate::ews::envelope::{close_response, error_message, open_response, open_success};
use crate::ews::error::{self, from_view};
use crate::ews::shape::Shape;
use crate::ews::xml::{Element, Xml};
use crate::ews::{contact, Ctx};
use crate::view::FolderRef;

/// Most ids in one GetItem.
pub const MAX_IDS: usize = 1000;

/// Runs GetItem.
pub fn run(ctx: &Ctx<'_, '_>, op: &Element, x: &mut Xml) -> Result<(), Fault> {
    let shape = Shape::read(op.child("ItemShape"));
    let ids = required(op, "ItemIds")?;
    if ids.len() > MAX_IDS {
        return Err(super::schema(&format!(
            "GetItem takes at most {MAX_IDS} ids."
        )));
    }
    open_response(x, "GetItem");
    for id in ids {
        const TAG: &str = "m:GetItemResponseMessage";
        let Some(id) = id.attr("Id") else {
            error_message(x, TAG, &error::ID_MALFORMED);
            continue;
        };
        match ctx.mailbox.item_by_id(id) {
            Ok(item) => {
                let folder = FolderRef::Virtual(item.folder);
                let (fid, writable) = (ctx.mailbox.folder_id(folder), ctx.mailbox.writable(folder));
                open_success(x, TAG);
                x.open("m:Items", &[]);
                contact::write(x, &item, &shape, &fid, writable);
                x.close("m:Items");
                x.close(TAG);
            }
            Err(e) => error_message(x, TAG, &from_view(&e, true)),
        }
    }
    close_response(x, "GetItem");
    Ok(())
}
