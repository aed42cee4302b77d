//! One file per EWS operation, named after it. Each parses its element, asks the view, and
//! renders; `dispatch` picks the operation by its local name.

pub mod convert_id;
pub mod create_item;
pub mod delete_item;
pub mod find_folder;
pub mod find_item;
pub mod get_folder;
pub mod get_item;
pub mod get_user_photo;
pub mod item_writes;
pub mod paging;
pub mod resolve_names;
pub mod sync_folder_hierarchy;
pub mod sync_folder_items;
pub mod update_item;
pub mod writes;

use super::envelope::Fault;
use super::xml::{Element, Xml};
use super::Ctx;

/// Runs the operation named by `op`.
pub fn dispatch(ctx: &Ctx<'_, '_>, op: &Element, x: &mut Xml) -> Result<(), Fault> {
    match op.name.as_str() {
        "GetFolder" => get_folder::run(ctx, op, x),
        "FindFolder" => find_folder::run(ctx, op, x),
        "SyncFolderHierarchy" => sync_folder_hierarchy::run(ctx, op, x),
        "FindItem" => find_item::run(ctx, op, x),
        "GetItem" => get_item::run(ctx, op, x),
        "SyncFolderItems" => sync_folder_items::run(ctx, op, x),
        "ConvertId" => convert_id::run(ctx, op, x),
        "GetUserPhoto" => get_user_photo::run(ctx, op, x),
        "ResolveNames" => resolve_names::run(ctx, op, x),
        "MoveItem" | "CopyItem" | "CreateFolder" | "UpdateFolder" | "DeleteFolder"
        | "EmptyFolder" | "MoveFolder" | "CopyFolder" | "CreateAttachment" | "DeleteAttachment" => {
            writes::run(ctx, op, x)
        }
        other => Err(schema(&format!(
            "The operation {other} is not supported by this server."
        ))),
    }
}

/// A schema-validation fault.
pub fn schema(message: &str) -> Fault {
    Fault {
        code: "ErrorSchemaValidation",
        message: message.to_owned(),
    }
}

/// The children of a required id container, or a fault when it is missing or names more than
/// `max` ids.
pub fn required_ids<'e>(op: &'e Element, name: &str, max: usize) -> Result<&'e [Element], Fault> {
    let ids = required(op, name)?;
    if ids.len() > max {
        return Err(Fault {
            code: "ErrorInvalidRequest",
            message: format!("{} takes at most {max} entries in {name}.", op.name),
        });
    }
    Ok(ids)
}

/// Remembers the ids a request named, so a repeated one is answered with
/// [`crate::ews::error::DUPLICATE_ID`] instead of a second copy of the same answer.
#[derive(Default)]
pub struct Seen(std::collections::HashSet<Vec<(String, String)>>);

impl Seen {
    /// True when an id element equal to `e` (name, attributes and any mailbox) came before.
    pub fn repeated(&mut self, e: &Element) -> bool {
        let mut key: Vec<(String, String)> = vec![(String::new(), e.name.clone())];
        key.extend(e.attrs.iter().cloned());
        if let Some(a) = e.path(&["Mailbox", "EmailAddress"]) {
            key.push(("Mailbox".into(), a.text.trim().to_lowercase()));
        }
        !self.0.insert(key)
    }
}

/// The children of a required container element, or a schema fault.
pub fn required<'e>(op: &'e Element, name: &str) -> Result<&'e [Element], Fault> {
    op.child(name)
        .map(|c| c.children.as_slice())
        .ok_or_else(|| schema(&format!("{} requires {name}.", op.name)))
}
