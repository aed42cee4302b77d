//! `FindFolder`: the children (Shallow) or all descendants (Deep) of each parent, filtered by a
//! restriction (DavMail finds folders by `IsEqualTo folder:DisplayName`) and paged.
//!
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/findfolder-operation>.

use super::paging::{close_root, open_root, page};
use super::{required_ids, schema, Fault, Seen};
use crate::ews::envelope::{close_response, error_message, open_response, open_success};
use crate::ews::restriction;
use crate::ews::shape::Shape;
use crate::ews::xml::{Element, Xml};
use crate::ews::{folder, Ctx};

/// Runs FindFolder.
pub fn run(ctx: &Ctx<'_, '_>, op: &Element, x: &mut Xml) -> Result<(), Fault> {
    let deep = op.attr("Traversal") == Some("Deep");
    let shape = Shape::read(op.child("FolderShape"));
    let restriction = match op.child("Restriction").and_then(|r| r.children.first()) {
        Some(r) => Some(restriction::parse(r).map_err(|e| schema(&e.0))?),
        None => None,
    };
    let view = op.child("IndexedPageFolderView");
    let parents = required_ids(op, "ParentFolderIds", ctx.limits.max_folder_ids)?;
    let mut seen = Seen::default();
    open_response(x, "FindFolder");
    for p in parents {
        const TAG: &str = "m:FindFolderResponseMessage";
        if seen.repeated(p) {
            error_message(x, TAG, &crate::ews::error::DUPLICATE_ID);
            continue;
        }
        let (mb, parent) = match ctx.folder(p) {
            Ok(v) => v,
            Err(e) => {
                error_message(x, TAG, &e);
                continue;
            }
        };
        let found = if deep {
            mb.descendants(parent)
        } else {
            mb.children(parent)
        };
        let infos: Vec<_> = found
            .into_iter()
            .map(|f| mb.folder_info(f))
            .filter(|i| {
                restriction
                    .as_ref()
                    .is_none_or(|r| r.matches(&|p| folder::values(i, p)))
            })
            .collect();
        let pg = match page(view, infos.len()) {
            Ok(pg) => pg,
            Err(e) => {
                error_message(x, TAG, &e);
                continue;
            }
        };
        open_success(x, TAG);
        open_root(x, &pg, "t:Folders");
        for info in &infos[pg.start..pg.start + pg.len] {
            folder::write(x, info, mb.folder_ctag(info.folder), &shape);
        }
        close_root(x, "t:Folders");
        x.close(TAG);
    }
    close_response(x, "FindFolder");
    Ok(())
}
