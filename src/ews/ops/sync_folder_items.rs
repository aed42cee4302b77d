//! `SyncFolderItems`: the changes of a folder since a sync state, at most
//! `MaxChangesReturned` (1–512) per call; creates and updates carry the item in the requested
//! shape, deletes its id. A state of another user or folder, or a tampered one, is
//! `ErrorInvalidSyncStateData`.
//!
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/syncfolderitems-operation>.

use super::{schema, Fault};
use crate::ews::envelope::{close_response, error_message_with, open_response, open_success};
use crate::ews::error::from_view;
use crate::ews::shape::Shape;
use crate::ews::xml::{Element, Xml};
use crate::ews::{contact, Ctx};
use crate::view::FolderRef;
use crate::view::ItemChange;
use std::collections::HashSet;

/// Runs SyncFolderItems.
pub fn run(ctx: &Ctx<'_, '_>, op: &Element, x: &mut Xml) -> Result<(), Fault> {
    const TAG: &str = "m:SyncFolderItemsResponseMessage";
    let shape = Shape::read(op.child("ItemShape"));
    let max: usize = op
        .child_text("MaxChangesReturned")
        .and_then(|m| m.trim().parse().ok())
        .filter(|m| (1..=512).contains(m))
        .ok_or_else(|| schema("MaxChangesReturned must be an integer from 1 to 512."))?;
    let folder_el = op
        .child("SyncFolderId")
        .and_then(|s| s.children.first())
        .ok_or_else(|| schema("SyncFolderItems requires SyncFolderId."))?;
    let state = op
        .child_text("SyncState")
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let ignore: HashSet<String> = op
        .child("Ignore")
        .map(|i| {
            i.children
                .iter()
                .filter_map(|c| c.attr("Id").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    open_response(x, "SyncFolderItems");
    let (mb, f) = match ctx.folder(folder_el) {
        Ok(v) => v,
        Err(e) => {
            error_message_with(x, TAG, &e, sync_extra);
            close_response(x, "SyncFolderItems");
            return Ok(());
        }
    };
    let page = match f {
        FolderRef::Virtual(v) => mb.changes(v, state, max, &ignore, 0),
        other => mb.empty_changes(other, state),
    };
    let page = match page {
        Ok(p) => p,
        Err(e) => {
            error_message_with(x, TAG, &from_view(&e, false), sync_extra);
            close_response(x, "SyncFolderItems");
            return Ok(());
        }
    };
    let (fid, writable) = (mb.folder_id(f), mb.writable(f));
    open_success(x, TAG);
    x.text("m:SyncState", &[], &page.state);
    x.text(
        "m:IncludesLastItemInRange",
        &[],
        if page.last { "true" } else { "false" },
    );
    x.open("m:Changes", &[]);
    for (ch, item) in &page.changes {
        match (ch, item) {
            (ItemChange::Delete, Err(id)) => {
                x.open("t:Delete", &[]);
                x.empty("t:ItemId", &[("Id", id)]);
                x.close("t:Delete");
            }
            (ch, Ok(item)) => {
                let tag = if *ch == ItemChange::Create {
                    "t:Create"
                } else {
                    "t:Update"
                };
                x.open(tag, &[]);
                contact::write(x, item, &shape, &fid, writable);
                x.close(tag);
                ctx.check_size(x)?;
            }
            _ => {}
        }
    }
    x.close("m:Changes");
    x.close(TAG);
    close_response(x, "SyncFolderItems");
    Ok(())
}

fn sync_extra(x: &mut Xml) {
    x.empty("m:SyncState", &[]);
    x.text("m:IncludesLastItemInRange", &[], "true");
}
