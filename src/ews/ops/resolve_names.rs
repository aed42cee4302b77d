//! `ResolveNames`: matches a name or address against the contacts the user can see (My, then
//! Global): names by prefix, e-mail addresses by prefix or in full, case-insensitively.
//!
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/resolvenames-operation>.

use super::{schema, Fault};
use crate::domain::rules::VirtualFolder;
use crate::ews::envelope::{close_response, error_message, open_response};
use crate::ews::error::NAME_NO_RESULTS;
use crate::ews::shape::{BaseShape, Shape};
use crate::ews::xml::{Element, Xml};
use crate::ews::{contact, Ctx};
use crate::view::FolderRef;

/// Most resolutions returned.
const MAX: usize = 100;

/// Runs ResolveNames.
pub fn run(ctx: &Ctx<'_, '_>, op: &Element, x: &mut Xml) -> Result<(), Fault> {
    const TAG: &str = "m:ResolveNamesResponseMessage";
    let entry = op
        .child_text("UnresolvedEntry")
        .map(|s| {
            s.trim()
                .trim_start_matches("smtp:")
                .trim_start_matches("SMTP:")
                .to_lowercase()
        })
        .filter(|s| !s.is_empty())
        .ok_or_else(|| schema("ResolveNames requires UnresolvedEntry."))?;
    let full = op.attr("ReturnFullContactData") == Some("true");
    let mb = &ctx.mailbox;
    let mut found = Vec::new();
    'outer: for f in [VirtualFolder::My, VirtualFolder::Global] {
        let folder = FolderRef::Virtual(f);
        if mb.folder_by_id(&mb.folder_id(folder)).is_err() {
            continue;
        }
        for c in mb.contacts(f) {
            let Some(item) = mb.item(f, c) else { continue };
            let card = &item.card;
            let hit = [&card.given_name, &card.surname]
                .into_iter()
                .flatten()
                .chain(std::iter::once(&card.display_name))
                .any(|n| n.to_lowercase().starts_with(&entry))
                || card
                    .emails
                    .iter()
                    .any(|e| !e.placeholder && e.address.to_lowercase().starts_with(&entry));
            if hit {
                found.push(item);
                if found.len() >= MAX {
                    break 'outer;
                }
            }
        }
    }
    open_response(x, "ResolveNames");
    if found.is_empty() {
        error_message(x, TAG, &NAME_NO_RESULTS);
    } else {
        let class = if found.len() == 1 {
            "Success"
        } else {
            "Warning"
        };
        x.open(TAG, &[("ResponseClass", class)]);
        if found.len() > 1 {
            x.text("m:MessageText", &[], "Multiple results were found.");
            x.text("m:ResponseCode", &[], "ErrorNameResolutionMultipleResults");
            x.text("m:DescriptiveLinkKey", &[], "0");
        } else {
            x.text("m:ResponseCode", &[], "NoError");
        }
        let n = found.len().to_string();
        x.open(
            "m:ResolutionSet",
            &[
                ("TotalItemsInView", &n),
                ("IncludesLastItemInRange", "true"),
            ],
        );
        let shape = Shape {
            base: BaseShape::Default,
            extra: Vec::new(),
        };
        for item in &found {
            let folder = FolderRef::Virtual(item.folder);
            let (fid, writable) = (mb.folder_id(folder), mb.writable(folder));
            x.open("t:Resolution", &[]);
            x.open("t:Mailbox", &[]);
            x.text("t:Name", &[], &item.card.display_name);
            // A real address if the contact has one; the placeholder only otherwise.
            let email = item
                .card
                .emails
                .iter()
                .find(|e| !e.placeholder)
                .or(item.card.emails.first());
            if let Some(e) = email {
                x.text("t:EmailAddress", &[], &e.address);
            }
            x.text("t:RoutingType", &[], "SMTP");
            x.text("t:MailboxType", &[], "Contact");
            x.empty(
                "t:ItemId",
                &[("Id", &item.id), ("ChangeKey", &item.change_key)],
            );
            x.close("t:Mailbox");
            if full {
                contact::write(x, item, &shape, &fid, writable);
            }
            x.close("t:Resolution");
        }
        x.close("m:ResolutionSet");
        x.close(TAG);
    }
    close_response(x, "ResolveNames");
    Ok(())
}
