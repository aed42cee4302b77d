//! `SyncFolderHierarchy`: the folder tree under the sync folder (default: root). The first
//! call lists every folder as a create; later calls report the virtual folders as updated
//! when their names or presence changed (configuration), else nothing.
//!
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/syncfolderhierarchy-operation>.

use super::Fault;
use crate::ews::envelope::{close_response, error_message_with, open_response, open_success};
use crate::ews::error::from_view;
use crate::ews::shape::Shape;
use crate::ews::xml::{Element, Xml};
use crate::ews::{folder, Ctx};
use crate::view::FolderRef;

/// Runs SyncFolderHierarchy.
pub fn run(ctx: &Ctx<'_, '_>, op: &Element, x: &mut Xml) -> Result<(), Fault> {
    const TAG: &str = "m:SyncFolderHierarchyResponseMessage";
    let shape = Shape::read(op.child("FolderShape"));
    let state = op
        .child_text("SyncState")
        .map(str::trim)
        .filter(|s| !s.is_empty());
    open_response(x, "SyncFolderHierarchy");
    let (mb, top) = match op.child("SyncFolderId").and_then(|s| s.children.first()) {
        Some(e) => match ctx.folder(e) {
            Ok(v) => v,
            Err(e) => {
                error_message_with(x, TAG, &e, sync_extra);
                close_response(x, "SyncFolderHierarchy");
                return Ok(());
            }
        },
        None => (
            ctx.session
                .mailbox(Some(&ctx.mailbox.login()))
                .map_err(|_| super::schema("mailbox"))?,
            FolderRef::Face(crate::ews::folders::ROOT),
        ),
    };
    let (changed, new_state) = match mb.hierarchy_changes(top, state) {
        Ok(v) => v,
        Err(e) => {
            error_message_with(x, TAG, &from_view(&e, false), sync_extra);
            close_response(x, "SyncFolderHierarchy");
            return Ok(());
        }
    };
    open_success(x, TAG);
    x.text("m:SyncState", &[], &new_state);
    x.text("m:IncludesLastFolderInRange", &[], "true");
    x.open("m:Changes", &[]);
    for (create, f) in changed {
        let tag = if create { "t:Create" } else { "t:Update" };
        x.open(tag, &[]);
        folder::write(x, &mb.folder_info(f), mb.folder_ctag(f), &shape);
        x.close(tag);
    }
    x.close("m:Changes");
    x.close(TAG);
    close_response(x, "SyncFolderHierarchy");
    Ok(())
}

fn sync_extra(x: &mut Xml) {
    x.empty("m:SyncState", &[]);
    x.text("m:IncludesLastFolderInRange", &[], "true");
}
