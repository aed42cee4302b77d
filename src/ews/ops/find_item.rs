//! `FindItem`: the contacts of a virtual folder, filtered by a restriction, sorted, paged and
//! rendered in the requested shape. Other folders are empty.
//!
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/finditem-operation>.

use super::paging::page;
use super::{required, schema, Fault};
use crate::ews::contact::{self, values};
use crate::ews::envelope::{close_response, error_message, open_response, open_success};
use crate::ews::restriction::{self, cmp_values, matches, sort_order};
use crate::ews::shape::Shape;
use crate::ews::xml::{Element, Xml};
use crate::ews::Ctx;
use crate::view::{FolderRef, Item};

/// Runs FindItem.
pub fn run(ctx: &Ctx<'_, '_>, op: &Element, x: &mut Xml) -> Result<(), Fault> {
    let shape = Shape::read(op.child("ItemShape"));
    let restriction = match op.child("Restriction").and_then(|r| r.children.first()) {
        Some(r) => Some(restriction::parse(r).map_err(|e| schema(&e.0))?),
        None => None,
    };
    let sort = sort_order(op.child("SortOrder"));
    let view = op.child("IndexedPageItemView");
    let parents = required(op, "ParentFolderIds")?;
    open_response(x, "FindItem");
    for p in parents {
        const TAG: &str = "m:FindItemResponseMessage";
        let (mb, parent) = match ctx.folder(p) {
            Ok(v) => v,
            Err(e) => {
                error_message(x, TAG, &e);
                continue;
            }
        };
        let (mut items, writable, parent_id): (Vec<Item>, bool, String) = match parent {
            FolderRef::Virtual(f) => {
                let info = mb.folder_info(parent);
                let items = mb
                    .contacts(f)
                    .into_iter()
                    .filter_map(|c| mb.item(f, c))
                    .filter(|i| {
                        restriction
                            .as_ref()
                            .is_none_or(|r| matches(r, &|p| values(i, p)))
                    })
                    .collect();
                (items, info.writable, info.id)
            }
            _ => (Vec::new(), false, String::new()),
        };
        // Stable order: the sort keys, then the uid (creation order).
        items.sort_by(|a, b| {
            for k in &sort {
                let o = cmp_values(&values(a, &k.path), &values(b, &k.path));
                let o = if k.descending { o.reverse() } else { o };
                if o.is_ne() {
                    return o;
                }
            }
            a.uid.cmp(&b.uid)
        });
        let pg = match page(view, items.len()) {
            Ok(pg) => pg,
            Err(e) => {
                error_message(x, TAG, &e);
                continue;
            }
        };
        open_success(x, TAG);
        let (next, total) = (pg.next_offset.to_string(), pg.total.to_string());
        x.open(
            "m:RootFolder",
            &[
                ("IndexedPagingOffset", &next),
                ("TotalItemsInView", &total),
                (
                    "IncludesLastItemInRange",
                    if pg.last { "true" } else { "false" },
                ),
            ],
        );
        x.open("t:Items", &[]);
        for item in &items[pg.start..pg.start + pg.len] {
            contact::write(x, item, &shape, &parent_id, writable);
        }
        x.close("t:Items");
        x.close("m:RootFolder");
        x.close(TAG);
    }
    close_response(x, "FindItem");
    Ok(())
}
