//! `GetItem`: items by id, batched, one response message per id in request order. An id of
//! another user, a tampered id, or a contact the user no longer sees is "not found".
//!
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/getitem-operation>.

use super::{required_ids, Fault, Seen};
use crate::ews::envelope::{close_response, error_message, open_response, open_success};
use crate::ews::error::{self, from_view};
use crate::ews::shape::Shape;
use crate::ews::xml::{Element, Xml};
use crate::ews::{contact, Ctx};
use crate::view::FolderRef;

/// Runs GetItem.
pub fn run(ctx: &Ctx<'_, '_>, op: &Element, x: &mut Xml) -> Result<(), Fault> {
    let shape = Shape::read(op.child("ItemShape"));
    let ids = required_ids(op, "ItemIds", ctx.limits.max_item_ids)?;
    let mut seen = Seen::default();
    open_response(x, "GetItem");
    for id in ids {
        const TAG: &str = "m:GetItemResponseMessage";
        if seen.repeated(id) {
            error_message(x, TAG, &error::DUPLICATE_ID);
            continue;
        }
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
                ctx.check_size(x)?;
            }
            Err(e) => error_message(x, TAG, &from_view(&e, true)),
        }
    }
    close_response(x, "GetItem");
    Ok(())
}
