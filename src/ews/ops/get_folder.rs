//! `GetFolder`: folders by id or distinguished id, one response message per id, in order.
//!
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/getfolder-operation>.

use super::{required_ids, Fault, Seen};
use crate::ews::envelope::{close_response, error_message, open_response, open_success};
use crate::ews::shape::Shape;
use crate::ews::xml::{Element, Xml};
use crate::ews::{folder, Ctx};

/// Runs GetFolder.
pub fn run(ctx: &Ctx<'_, '_>, op: &Element, x: &mut Xml) -> Result<(), Fault> {
    let shape = Shape::read(op.child("FolderShape"));
    let ids = required_ids(op, "FolderIds", ctx.limits.max_folder_ids)?;
    let mut seen = Seen::default();
    open_response(x, "GetFolder");
    for id in ids {
        const TAG: &str = "m:GetFolderResponseMessage";
        if seen.repeated(id) {
            error_message(x, TAG, &crate::ews::error::DUPLICATE_ID);
            continue;
        }
        match ctx.folder(id) {
            Ok((mb, f)) => {
                open_success(x, TAG);
                x.open("m:Folders", &[]);
                folder::write(x, &mb.folder_info(f), mb.folder_ctag(f), &shape);
                x.close("m:Folders");
                x.close(TAG);
            }
            Err(e) => error_message(x, TAG, &e),
        }
    }
    close_response(x, "GetFolder");
    Ok(())
}
