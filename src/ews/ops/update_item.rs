//! `UpdateItem`: field-level edits (SetItemField, AppendToItemField, DeleteItemField on
//! FieldURI, IndexedFieldURI per index and address sub-field, ExtendedFieldURI; values in
//! `t:Contact` or `t:Item`), under `ConflictResolution`.
//!
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/updateitem-operation>.

use super::item_writes::ItemError;
use super::{required_ids, Fault};
use crate::ews::contact_in::update_edits;
use crate::ews::error::ID_MALFORMED;
use crate::ews::xml::Element;
use crate::ews::Ctx;
use crate::view::write::{ConflictMode, Planned};

/// Most item changes in one UpdateItem.
const MAX_ITEMS: usize = 100;

/// Plans each ItemChange of an UpdateItem.
pub fn plan(ctx: &Ctx<'_, '_>, op: &Element) -> Result<Vec<Result<Planned, ItemError>>, Fault> {
    let mode = match op.attr("ConflictResolution") {
        Some("NeverOverwrite") => ConflictMode::NeverOverwrite,
        Some("AlwaysOverwrite") => ConflictMode::AlwaysOverwrite,
        _ => ConflictMode::AutoResolve,
    };
    let changes = required_ids(op, "ItemChanges", ctx.limits.max_item_ids)?;
    if changes.len() > MAX_ITEMS {
        return Err(super::schema(&format!(
            "UpdateItem takes at most {MAX_ITEMS} changes."
        )));
    }
    Ok(changes
        .iter()
        .map(|ch| {
            let id = ch.child("ItemId").ok_or(ID_MALFORMED)?;
            let item_id = id.attr("Id").ok_or(ID_MALFORMED)?;
            let mut edits = Vec::new();
            for u in ch
                .child("Updates")
                .map(|u| u.children.as_slice())
                .unwrap_or(&[])
            {
                edits.extend(update_edits(u)?);
            }
            ctx.mailbox
                .plan_update(item_id, id.attr("ChangeKey"), mode, &edits)
                .map_err(ItemError::Write)
        })
        .collect())
}
