//! `ConvertId`: crmgate has one id format, so EwsId → EwsId of a folder or item of the
//! mailbox succeeds (with the user's SMTP address, which DavMail reads at login) and anything
//! else is a per-message `ErrorInvalidIdMalformed` (exchangelib's version probe only reads the
//! header).
//!
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/convertid-operation>.

use super::{required_ids, Fault};
use crate::ews::envelope::{close_response, error_message, open_response, open_success};
use crate::ews::error::ID_MALFORMED;
use crate::ews::xml::{Element, Xml};
use crate::ews::Ctx;

/// Runs ConvertId.
pub fn run(ctx: &Ctx<'_, '_>, op: &Element, x: &mut Xml) -> Result<(), Fault> {
    let dest = op.attr("DestinationFormat").unwrap_or("EwsId");
    let ids = required_ids(op, "SourceIds", ctx.limits.max_item_ids)?;
    let login = ctx.mailbox.login();
    open_response(x, "ConvertId");
    for id in ids {
        const TAG: &str = "m:ConvertIdResponseMessage";
        let value = id.attr("Id").unwrap_or("");
        let ours = ctx.mailbox.folder_by_id(value).is_ok() || ctx.mailbox.item_by_id(value).is_ok();
        let same_format =
            matches!(id.attr("Format"), Some("EwsId") | Some("EwsLegacyId")) && dest == "EwsId";
        if ours && same_format {
            open_success(x, TAG);
            x.empty(
                "m:AlternateId",
                &[
                    ("xmlns:xsi", "http://www.w3.org/2001/XMLSchema-instance"),
                    ("xsi:type", "t:AlternateIdType"),
                    ("Format", dest),
                    ("Id", value),
                    ("Mailbox", &login),
                ],
            );
            x.close(TAG);
        } else {
            error_message(x, TAG, &ID_MALFORMED);
        }
    }
    close_response(x, "ConvertId");
    Ok(())
}
