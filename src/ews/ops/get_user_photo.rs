//! `GetUserPhoto`: crmgate has no photos; a clean "not found" (DavMail asks on every GET and
//! ignores errors).
//!
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/getuserphoto-operation>.

use super::Fault;
use crate::ews::error::ITEM_NOT_FOUND;
use crate::ews::xml::{Element, Xml, NS_M, NS_T};
use crate::ews::Ctx;

/// Runs GetUserPhoto.
pub fn run(_ctx: &Ctx<'_, '_>, _op: &Element, x: &mut Xml) -> Result<(), Fault> {
    x.open(
        "m:GetUserPhotoResponse",
        &[
            ("ResponseClass", "Error"),
            ("xmlns:m", NS_M),
            ("xmlns:t", NS_T),
        ],
    );
    x.text("m:MessageText", &[], "The user has no photo.");
    x.text("m:ResponseCode", &[], ITEM_NOT_FOUND.code);
    x.text("m:DescriptiveLinkKey", &[], "0");
    x.text("m:HasChanged", &[], "false");
    x.empty("m:PictureData", &[]);
    x.close("m:GetUserPhotoResponse");
    Ok(())
}
