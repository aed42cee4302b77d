//! `FindItem`: the contacts of a virtual folder, filtered by a restriction, sorted, paged and
//! rendered in the requested shape. Other folders are empty.
//!
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/finditem-operation>.

use super::paging::{close_root, open_root, page};
use super::{required_ids, schema, Fault, Seen};
use crate::domain::rules::VirtualFolder;
use crate::ews::contact::{self, values};
use crate::ews::envelope::{close_response, error_message, open_response, open_success};
use crate::ews::restriction::{self, cmp_values, matches, sort_order, Cmp};
use crate::ews::restriction::{Restriction, SortKey};
use crate::ews::shape::Path;
use crate::ews::shape::Shape;
use crate::ews::xml::{Element, Xml};
use crate::ews::Ctx;
use crate::view::{ContactKey, FolderRef, Item, Mailbox, OrderKey};
use std::sync::Arc;

/// A folder listing: contacts in answer order; cards are built for the page only.
struct Listing {
    order: Arc<Vec<ContactKey>>,
    folder: VirtualFolder,
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

/// A contact under evaluation: values of identifying paths come from the replica, others from
/// its card, which is built the first time one of them is asked for (and only then).
struct Lazy<'m, 'a> {
    mb: &'m Mailbox<'a>,
    folder: VirtualFolder,
    c: ContactKey,
    item: std::cell::OnceCell<Option<Item>>,
}

impl<'m, 'a> Lazy<'m, 'a> {
    fn new(mb: &'m Mailbox<'a>, folder: VirtualFolder, c: ContactKey) -> Self {
        Lazy {
            mb,
            folder,
            c,
            item: std::cell::OnceCell::new(),
        }
    }

    fn values(&self, p: &Path) -> Vec<String> {
        let (mb, c) = (self.mb, self.c);
        if let Some(v) = contact::identity_values(
            p,
            mb.contact_id(c),
            mb.contact_uid(c),
            mb.contact_modified(c),
        ) {
            return v;
        }
        match self.item.get_or_init(|| mb.item(self.folder, c)) {
            Some(i) => values(i, p),
            None => Vec::new(),
        }
    }
}

/// A superset of the contacts (of any folder) an equality restriction can match, found
/// through the replica's indexes; `None` when the restriction names no indexed property in
/// a way that bounds its matches.
fn candidates(mb: &Mailbox<'_>, r: &Restriction) -> Option<Vec<ContactKey>> {
    match r {
        Restriction::Compare(p, Cmp::Eq, v) => indexed(mb, p, v),
        // Any bounded conjunct bounds the conjunction.
        Restriction::And(rs) => rs
            .iter()
            .filter_map(|r| candidates(mb, r))
            .min_by_key(Vec::len),
        // A disjunction is bounded when every disjunct is.
        Restriction::Or(rs) if !rs.is_empty() => {
            let mut all = Vec::new();
            for r in rs {
                all.extend(candidates(mb, r)?);
            }
            Some(all)
        }
        _ => None,
    }
}

/// Candidates for `path` equal to `value`, compared as restrictions compare (numbers as
/// numbers, text case-insensitively).
fn indexed(mb: &Mailbox<'_>, path: &Path, value: &str) -> Option<Vec<ContactKey>> {
    let lower = value.to_lowercase();
    match path {
        Path::Extended(x) => match x.key {
            crate::ews::shape::ExtKey::Tag(0x10f3) => {
                // `{id}.EML`, with characters other than letters, digits, '-' and '_' turned
                // into '_': a name without '_' names exactly the ids equal to its stem.
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
        Path::Indexed(u, _) if u == "contacts:EmailAddress" => email(mb, &lower),
        Path::Field(u) if u == "contacts:EmailAddresses" => email(mb, &lower),
        _ => None,
    }
}

fn email(mb: &Mailbox<'_>, lower: &str) -> Option<Vec<ContactKey>> {
    // Restrictions compare integers as numbers ("007" equals "7"): no index for those.
    if lower.trim().parse::<i64>().is_ok() {
        return None;
    }
    let mut v = mb.contacts_by_email(lower.trim()).to_vec();
    // Contacts without an address show a placeholder `crm-{id}@{domain}`; its id part is
    // exact when it holds no '-' (the character others are turned into).
    if let Some(domain) = mb.placeholder_domain() {
        if let Some(local) = lower
            .strip_suffix(&format!("@{}", domain.to_lowercase()))
            .and_then(|l| l.strip_prefix("crm-"))
        {
            if local.contains('-') {
                return None;
            }
            v.extend(mb.contacts_by_lower_id(local));
        }
    }
    Some(v)
}

fn listing(
    ctx: &Ctx<'_, '_>,
    mb: &Mailbox<'_>,
    f: VirtualFolder,
    restriction: Option<&Restriction>,
    sort: &[SortKey],
) -> Result<Listing, Fault> {
    let fast = match sort {
        [] => Some((OrderKey::Uid, false)),
        [k] => order_key(&k.path).map(|o| (o, k.descending)),
        _ => None,
    };
    let nodes = restriction.map_or(0, Restriction::nodes);
    let done = |order: Vec<ContactKey>| Listing {
        order: Arc::new(order),
        folder: f,
    };
    // An equality on an identifying property: a few lookups, whatever the folder's size.
    if let Some(mut found) = restriction.and_then(|r| candidates(mb, r)) {
        found.sort_unstable();
        found.dedup();
        found.retain(|c| mb.holds(f, *c));
        ctx.spend((found.len() as u64).saturating_mul((nodes + sort.len() + 1) as u64))?;
        return Ok(done(filter_and_sort(mb, f, found, restriction, sort)));
    }
    // A sort the view keeps listings for: the restriction filters that listing in order.
    if let Some((key, desc)) = fast {
        let order = mb.ordered(f, key, desc);
        let Some(r) = restriction else {
            return Ok(Listing { order, folder: f });
        };
        ctx.spend((order.len() as u64).saturating_mul((nodes + 1) as u64))?;
        let kept = order
            .iter()
            .copied()
            .filter(|c| {
                let lazy = Lazy::new(mb, f, *c);
                matches(r, &|p| lazy.values(p))
            })
            .collect();
        return Ok(done(kept));
    }
    let contacts = mb.contacts(f);
    // Testing a restriction costs its nodes per item, sorting its keys per item: paid for
    // before any of it runs.
    ctx.spend((contacts.len() as u64).saturating_mul((nodes + sort.len() + 1) as u64))?;
    Ok(done(filter_and_sort(mb, f, contacts, restriction, sort)))
}

/// The contacts of `cs` that match, in the order of `sort`, then by their stable number.
fn filter_and_sort(
    mb: &Mailbox<'_>,
    f: VirtualFolder,
    cs: Vec<ContactKey>,
    restriction: Option<&Restriction>,
    sort: &[SortKey],
) -> Vec<ContactKey> {
    // Sort keys computed once per contact, then a stable order: the keys, then the uid.
    let mut keyed: Vec<(Vec<Vec<String>>, u64, ContactKey)> = cs
        .into_iter()
        .filter_map(|c| {
            let lazy = Lazy::new(mb, f, c);
            if restriction.is_some_and(|r| !matches(r, &|p| lazy.values(p))) {
                return None;
            }
            let keys = sort.iter().map(|k| lazy.values(&k.path)).collect();
            Some((keys, mb.contact_uid(c), c))
        })
        .collect();
    keyed.sort_by(|a, b| {
        for (n, k) in sort.iter().enumerate() {
            let o = cmp_values(&a.0[n], &b.0[n]);
            let o = if k.descending { o.reverse() } else { o };
            if o.is_ne() {
                return o;
            }
        }
        a.1.cmp(&b.1)
    });
    keyed.into_iter().map(|(_, _, c)| c).collect()
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
