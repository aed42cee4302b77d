//! `CreateItem`: new contacts, in My (the writer becomes the owner), in the default Contacts
//! folder (captured into My the same way), or in Global when it is configured writable.
//!
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/createitem-operation-contact>.

use super::item_writes::{saved_folder, ItemError};
use super::{required_ids, Fault};
use crate::ews::contact_in::create_edits;
use crate::ews::error::ACCESS_DENIED;
use crate::ews::xml::Element;
use crate::ews::Ctx;
use crate::view::write::Planned;

/// Most items in one CreateItem.
const MAX_ITEMS: usize = 100;

/// Plans each contact of a CreateItem.
pub fn plan(ctx: &Ctx<'_, '_>, op: &Element) -> Result<Vec<Result<Planned, ItemError>>, Fault> {
    let items = required_ids(op, "Items", ctx.limits.max_item_ids)?;
    if items.len() > MAX_ITEMS {
        return Err(super::schema(&format!(
            "CreateItem takes at most {MAX_ITEMS} items."
        )));
    }
    let folder = saved_folder(ctx, op);
    Ok(items
        .iter()
        .map(|item| {
            let f = folder.clone()?;
            if item.name != "Contact" {
                return Err(ACCESS_DENIED.into());
            }
            let (edits, wanted) = create_edits(item)?;
            ctx.mailbox
                .plan_create(f, &edits, wanted.as_deref())
                .map_err(ItemError::Write)
        })
        .collect())
}
