//! `FindItem`: the contacts of a virtual folder, filtered by a restriction, sorted, paged and
//! rendered in the requested shape. Other folders are empty.
//!
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/finditem-operation>.

use super::paging::{close_root, open_root, page};
use super::{required_ids, schema, Fault, Seen};
use crate::domain::rules::VirtualFolder;
use crate::ews::contact::{self, values};
use crate::ews::envelope::{close_response, error_message, open_response, open_success};
use crate::ews::restriction::{self, sort_order};
use crate::ews::restriction::{Restriction, SortKey};
use crate::ews::shape::Path;
use crate::ews::shape::Shape;
use crate::ews::xml::{Element, Xml};
use crate::ews::Ctx;
use crate::view::query::Props;
use crate::view::{ContactKey, FolderRef, Item, Mailbox, OrderKey};
use std::sync::Arc;

/// A folder listing: contacts in answer order; cards are built for the page only.
struct Listing {
    order: Arc<Vec<ContactKey>>,
    folder: VirtualFolder,
}

/// How EWS property paths reach the view's data, for the view's query.
struct EwsProps;

impl Props for EwsProps {
    type Prop = Path;

    fn order_key(&self, p: &Path) -> Option<OrderKey> {
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

    /// Candidates for `path` equal to `value`, compared as restrictions compare (numbers as
    /// numbers, text case-insensitively).
    fn lookup(&self, mb: &Mailbox<'_>, path: &Path, value: &str) -> Option<Vec<ContactKey>> {
        let lower = value.to_lowercase();
        match path {
            Path::Extended(x) => match x.key {
                crate::ews::shape::ExtKey::Tag(0x10f3) => {
                    // `{id}.EML`, with characters other than letters, digits, '-' and '_'
                    // turned into '_': a name without '_' names exactly the ids equal to its
                    // stem.
                    let stem = lower.strip_suffix(".eml")?;
                    if stem.contains('_') {
                        return None;
                    }
                    Some(mb.contacts_by_lower_id(stem))
                }
                crate::ews::shape::ExtKey::Tag(0xe23) => {
                    // Compared as numbers when both sides are; the uid always is.
                    let n: i64 = value.trim().parse().ok()?;
                    Some(
                        u64::try_from(n)
                            .ok()
                            .and_then(|u| mb.contact_by_uid(u))
                            .into_iter()
                            .collect(),
                    )
                }
                _ => None,
            },
            Path::Indexed(u, _) if u == "contacts:EmailAddress" => mb.contacts_by_address(&lower),
            Path::Field(u) if u == "contacts:EmailAddresses" => mb.contacts_by_address(&lower),
            _ => None,
        }
    }

    fn identity(&self, mb: &Mailbox<'_>, c: ContactKey, p: &Path) -> Option<Vec<String>> {
        contact::identity_values(
            p,
            mb.contact_id(c),
            mb.contact_uid(c),
            mb.contact_modified(c),
        )
    }

    fn values(&self, item: &Item, p: &Path) -> Vec<String> {
        values(item, p)
    }
}

fn listing(
    ctx: &Ctx<'_, '_>,
    mb: &Mailbox<'_>,
    f: VirtualFolder,
    restriction: Option<&Restriction>,
    sort: &[SortKey],
) -> Result<Listing, Fault> {
    // Testing a restriction costs its nodes per item, sorting its keys per item: paid for
    // before any of it runs.
    let order = mb.query(f, restriction, sort, &EwsProps, &mut |n| ctx.spend(n))?;
    Ok(Listing { order, folder: f })
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
                (
                    Some(listing(ctx, &mb, f, restriction.as_ref(), &sort)?),
                    w,
                    fid,
                )
            }
            _ => (None, false, String::new()),
        };
        let total = items.as_ref().map_or(0, |l| l.order.len());
        let pg = match page(view, total) {
            Ok(pg) => pg,
            Err(e) => {
                error_message(x, TAG, &e);
                continue;
            }
        };
        open_success(x, TAG);
        open_root(x, &pg, "t:Items");
        if let Some(l) = &items {
            // Cards only for the page.
            for c in &l.order[pg.start..pg.start + pg.len] {
                if let Some(item) = mb.item(l.folder, *c) {
                    contact::write(x, &item, &shape, &parent_id, writable);
                    ctx.check_size(x)?;
                }
            }
        }
        close_root(x, "t:Items");
        x.close(TAG);
    }
    close_response(x, "FindItem");
    Ok(())
}
