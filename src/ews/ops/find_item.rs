//! `FindItem`: the contacts of a virtual folder, filtered by a restriction, sorted, paged and
//! rendered in the requested shape. Other folders are empty.
//!
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/finditem-operation>.

use super::paging::{close_root, open_root, page};
use super::{required_ids, schema, Fault, Seen};
use crate::domain::rules::VirtualFolder;
use crate::ews::contact::{self, values};
use crate::ews::envelope::{close_response, error_message, open_response, open_success};
use crate::ews::restriction::{self, cmp_values, matches, sort_order};
use crate::ews::restriction::{Restriction, SortKey};
use crate::ews::shape::Path;
use crate::ews::shape::Shape;
use crate::ews::xml::{Element, Xml};
use crate::ews::Ctx;
use crate::view::{FolderRef, Item, Mailbox, OrderKey};
use std::sync::Arc;

/// A folder listing: full items (when a restriction or an unusual sort needs them), or an
/// order of contacts whose cards are built for the page only.
enum Listing {
    Items(Vec<Item>),
    Order(Arc<Vec<u32>>, VirtualFolder),
}

fn order_key(p: &Path) -> Option<OrderKey> {
    match p {
        Path::Field(u) => match u.as_str() {
            "contacts:DisplayName" | "item:Subject" => Some(OrderKey::DisplayName),
            "contacts:FileAs" => Some(OrderKey::FileAs),
            "contacts:GivenName" => Some(OrderKey::GivenName),
            "contacts:Surname" => Some(OrderKey::Surname),
            "contacts:CompanyName" => Some(OrderKey::CompanyName),
            "item:DateTimeCreated" => Some(OrderKey::Uid),
            _ => None,
        },
        Path::Extended(x) => {
            matches!(x.key, crate::ews::shape::ExtKey::Tag(0xe23)).then_some(OrderKey::Uid)
        }
        Path::Indexed(..) => None,
    }
}

fn listing(
    ctx: &Ctx<'_, '_>,
    mb: &Mailbox<'_>,
    f: VirtualFolder,
    restriction: Option<&Restriction>,
    sort: &[SortKey],
) -> Result<Listing, Fault> {
    if restriction.is_none() {
        let fast = match sort {
            [] => Some((OrderKey::Uid, false)),
            [k] => order_key(&k.path).map(|o| (o, k.descending)),
            _ => None,
        };
        if let Some((key, desc)) = fast {
            return Ok(Listing::Order(mb.ordered(f, key, desc), f));
        }
    }
    let contacts = mb.contacts(f);
    // Testing a restriction costs its nodes per item, sorting its keys per item: paid for
    // before any of it runs.
    let per_item = restriction.map_or(0, Restriction::nodes) + sort.len() + 1;
    ctx.spend((contacts.len() as u64).saturating_mul(per_item as u64))?;
    let mut items: Vec<Item> = contacts
        .into_iter()
        .filter_map(|c| mb.item(f, c))
        .filter(|i| restriction.is_none_or(|r| matches(r, &|p| values(i, p))))
        .collect();
    // Sort keys computed once per item, then a stable order: the keys, then the uid.
    let mut keyed: Vec<(Vec<Vec<String>>, Item)> = items
        .drain(..)
        .map(|i| (sort.iter().map(|k| values(&i, &k.path)).collect(), i))
        .collect();
    keyed.sort_by(|a, b| {
        for (n, k) in sort.iter().enumerate() {
            let o = cmp_values(&a.0[n], &b.0[n]);
            let o = if k.descending { o.reverse() } else { o };
            if o.is_ne() {
                return o;
            }
        }
        a.1.uid.cmp(&b.1.uid)
    });
    Ok(Listing::Items(keyed.into_iter().map(|(_, i)| i).collect()))
}

/// Runs FindItem.
pub fn run(ctx: &Ctx<'_, '_>, op: &Element, x: &mut Xml) -> Result<(), Fault> {
    let shape = Shape::read(op.child("ItemShape"));
    let restriction = match op.child("Restriction").and_then(|r| r.children.first()) {
        Some(r) => Some(restriction::parse(r).map_err(|e| schema(&e.0))?),
        None => None,
    };
    let sort = sort_order(op.child("SortOrder"));
    let view = op.child("IndexedPageItemView");
    let parents = required_ids(op, "ParentFolderIds", ctx.limits.max_folder_ids)?;
    let mut seen = Seen::default();
    open_response(x, "FindItem");
    for p in parents {
        const TAG: &str = "m:FindItemResponseMessage";
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
        let (items, writable, parent_id) = match parent {
            FolderRef::Virtual(f) => {
                let (fid, w) = (mb.folder_id(parent), mb.writable(parent));
                (listing(ctx, &mb, f, restriction.as_ref(), &sort)?, w, fid)
            }
            _ => (Listing::Items(Vec::new()), false, String::new()),
        };
        let total = match &items {
            Listing::Items(v) => v.len(),
            Listing::Order(v, _) => v.len(),
        };
        let pg = match page(view, total) {
            Ok(pg) => pg,
            Err(e) => {
                error_message(x, TAG, &e);
                continue;
            }
        };
        open_success(x, TAG);
        open_root(x, &pg, "t:Items");

        match &items {
            Listing::Items(v) => {
                for item in &v[pg.start..pg.start + pg.len] {
                    contact::write(x, item, &shape, &parent_id, writable);
                    ctx.check_size(x)?;
                }
            }
            Listing::Order(v, f) => {
                // Cards only for the page.
                for c in &v[pg.start..pg.start + pg.len] {
                    if let Some(item) = mb.item(*f, *c) {
                        contact::write(x, &item, &shape, &parent_id, writable);
                        ctx.check_size(x)?;
                    }
                }
            }
        }
        close_root(x, "t:Items");
        x.close(TAG);
    }
    close_response(x, "FindItem");
    Ok(())
}
