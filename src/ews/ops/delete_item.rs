//! `DeleteItem` (HardDelete, SoftDelete, MoveToDeletedItems alike): the folder's delete policy
//! decides — hide for this user, delete in the CRM, or refuse.
//!
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/deleteitem-operation>.

use super::item_writes::ItemError;
use super::{required_ids, Fault};
use crate::ews::error::ID_MALFORMED;
use crate::ews::xml::Element;
use crate::ews::Ctx;
use crate::view::write::Planned;

/// Most ids in one DeleteItem.
const MAX_ITEMS: usize = 1000;

/// Plans each id of a DeleteItem.
pub fn plan(ctx: &Ctx<'_, '_>, op: &Element) -> Result<Vec<Result<Planned, ItemError>>, Fault> {
    let ids = required_ids(op, "ItemIds", ctx.limits.max_item_ids)?;
    if ids.len() > MAX_ITEMS {
        return Err(super::schema(&format!(
            "DeleteItem takes at most {MAX_ITEMS} ids."
        )));
    }
    let policies = ctx.session.cfg.policies;
    Ok(ids
        .iter()
        .map(|id| {
            let item_id = id.attr("Id").ok_or(ID_MALFORMED)?;
            ctx.mailbox
                .plan_delete(item_id, &policies)
                .map_err(ItemError::Write)
        })
        .collect())
}
