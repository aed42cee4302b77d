//! Client → crmgate: `t:Contact` elements (CreateItem) and update paths with their values
//! (UpdateItem) turned into field edits. Paths crmgate derives itself (DisplayName, FileAs,
//! Subject) and the bookkeeping properties DavMail sends are accepted and ignored; any other
//! unknown path is refused, so nothing a client writes is silently lost.

use super::error::EwsError;
use super::shape::{ExtKey, Path};
use super::xml::Element;
use crate::domain::mapping::{AddressSlot, PhoneSlot};
use crate::domain::patch::{AddrPart, Edit, Field};

/// A path refused as unknown.
pub const UNKNOWN_PATH: EwsError = EwsError::new(
    "ErrorInvalidPropertyRequest",
    "The property path is not supported for contacts by this server.",
);
/// A SetItemField wrapper with other than one value.
pub const UPDATE_COUNT: EwsError = EwsError::new(
    "ErrorIncorrectUpdatePropertyCount",
    "Each property update must name exactly one property.",
);

fn phone_slot(key: &str) -> Option<PhoneSlot> {
    Some(match key {
        "BusinessPhone" => PhoneSlot::BusinessPhone,
        "BusinessPhone2" => PhoneSlot::BusinessPhone2,
        "HomePhone" => PhoneSlot::HomePhone,
        "HomePhone2" => PhoneSlot::HomePhone2,
        "MobilePhone" => PhoneSlot::MobilePhone,
        "BusinessFax" => PhoneSlot::BusinessFax,
        "OtherTelephone" => PhoneSlot::OtherTelephone,
        _ => return None,
    })
}

fn addr_slot(key: &str) -> Option<AddressSlot> {
    Some(match key {
        "Business" => AddressSlot::Business,
        "Home" => AddressSlot::Home,
        "Other" => AddressSlot::Other,
        _ => return None,
    })
}

fn addr_part(name: &str) -> Option<AddrPart> {
    Some(match name {
        "Street" => AddrPart::Street,
        "City" => AddrPart::City,
        "State" => AddrPart::State,
        "PostalCode" => AddrPart::PostalCode,
        "CountryOrRegion" => AddrPart::Country,
        _ => return None,
    })
}

/// What a path means: a field, something to ignore, or unknown.
enum Meaning {
    Field(Field),
    Ignore,
}

fn field_uri(u: &str) -> Option<Meaning> {
    use Meaning::*;
    Some(match u {
        "contacts:GivenName" => Field(crate::domain::patch::Field::GivenName),
        "contacts:MiddleName" => Field(crate::domain::patch::Field::MiddleName),
        "contacts:Surname" => Field(crate::domain::patch::Field::Surname),
        "contacts:CompanyName" => Field(crate::domain::patch::Field::CompanyName),
        "contacts:JobTitle" => Field(crate::domain::patch::Field::JobTitle),
        "contacts:Department" => Field(crate::domain::patch::Field::Department),
        "contacts:Birthday" => Field(crate::domain::patch::Field::Birthday),
        "contacts:BusinessHomePage" => Field(crate::domain::patch::Field::WebPage),
        "item:Body" => Field(crate::domain::patch::Field::Notes),
        "item:Categories" => Field(crate::domain::patch::Field::Categories),
        "contacts:DisplayName"
        | "contacts:FileAs"
        | "contacts:FileAsMapping"
        | "item:Subject"
        | "item:Sensitivity"
        | "item:Importance"
        | "item:ReminderIsSet"
        | "item:ReminderMinutesBeforeStart"
        | "contacts:PostalAddressIndex"
        | "contacts:Initials"
        | "contacts:Nickname"
        | "contacts:Generation"
        | "item:Culture" => Ignore,
        _ => return None,
    })
}

fn ext_meaning(key: &ExtKey) -> Meaning {
    use Meaning::*;
    match key {
        ExtKey::Tag(t) => match *t {
            0x3a06 => Field(crate::domain::patch::Field::GivenName),
            0x3a11 => Field(crate::domain::patch::Field::Surname),
            0x3a44 => Field(crate::domain::patch::Field::MiddleName),
            0x3a45 => Field(crate::domain::patch::Field::Title),
            0x3a16 => Field(crate::domain::patch::Field::CompanyName),
            0x3a18 => Field(crate::domain::patch::Field::Department),
            0x3a17 => Field(crate::domain::patch::Field::JobTitle),
            0x3a08 => Field(crate::domain::patch::Field::Phone(PhoneSlot::BusinessPhone)),
            0x3a1b => Field(crate::domain::patch::Field::Phone(
                PhoneSlot::BusinessPhone2,
            )),
            0x3a09 => Field(crate::domain::patch::Field::Phone(PhoneSlot::HomePhone)),
            0x3a2f => Field(crate::domain::patch::Field::Phone(PhoneSlot::HomePhone2)),
            0x3a1c => Field(crate::domain::patch::Field::Phone(PhoneSlot::MobilePhone)),
            0x3a24 => Field(crate::domain::patch::Field::Phone(PhoneSlot::BusinessFax)),
            0x3a1f => Field(crate::domain::patch::Field::Phone(
                PhoneSlot::OtherTelephone,
            )),
            0x3a5d => Field(crate::domain::patch::Field::Address(
                AddressSlot::Home,
                AddrPart::Street,
            )),
            0x3a59 => Field(crate::domain::patch::Field::Address(
                AddressSlot::Home,
                AddrPart::City,
            )),
            0x3a5c => Field(crate::domain::patch::Field::Address(
                AddressSlot::Home,
                AddrPart::State,
            )),
            0x3a5b => Field(crate::domain::patch::Field::Address(
                AddressSlot::Home,
                AddrPart::PostalCode,
            )),
            0x3a5a => Field(crate::domain::patch::Field::Address(
                AddressSlot::Home,
                AddrPart::Country,
            )),
            0x3a63 => Field(crate::domain::patch::Field::Address(
                AddressSlot::Other,
                AddrPart::Street,
            )),
            0x3a5f => Field(crate::domain::patch::Field::Address(
                AddressSlot::Other,
                AddrPart::City,
            )),
            0x3a62 => Field(crate::domain::patch::Field::Address(
                AddressSlot::Other,
                AddrPart::State,
            )),
            0x3a61 => Field(crate::domain::patch::Field::Address(
                AddressSlot::Other,
                AddrPart::PostalCode,
            )),
            0x3a60 => Field(crate::domain::patch::Field::Address(
                AddressSlot::Other,
                AddrPart::Country,
            )),
            0x3a42 => Field(crate::domain::patch::Field::Birthday),
            0x3a51 => Field(crate::domain::patch::Field::WebPage),
            0x1000 => Field(crate::domain::patch::Field::Notes),
            // Bookkeeping DavMail and others send (class, subject, file-as, resource name,
            // times, gender, sensitivity, nickname, …): accepted, derived or not kept.
            _ => Ignore,
        },
        ExtKey::Named { set, id, name } => match (set.as_str(), id, name.as_deref()) {
            ("Address", Some(32837), _) => Field(crate::domain::patch::Field::Address(
                AddressSlot::Business,
                AddrPart::Street,
            )),
            ("Address", Some(32838), _) => Field(crate::domain::patch::Field::Address(
                AddressSlot::Business,
                AddrPart::City,
            )),
            ("Address", Some(32839), _) => Field(crate::domain::patch::Field::Address(
                AddressSlot::Business,
                AddrPart::State,
            )),
            ("Address", Some(32840), _) => Field(crate::domain::patch::Field::Address(
                AddressSlot::Business,
                AddrPart::PostalCode,
            )),
            ("Address", Some(32841), _) => Field(crate::domain::patch::Field::Address(
                AddressSlot::Business,
                AddrPart::Country,
            )),
            ("PublicStrings", _, Some("Keywords")) => {
                Field(crate::domain::patch::Field::Categories)
            }
            _ => Ignore,
        },
    }
}

fn meaning(p: &Path) -> Result<Meaning, EwsError> {
    match p {
        Path::Field(u) => field_uri(u).ok_or(UNKNOWN_PATH),
        Path::Indexed(u, i) => {
            let f = match u.as_str() {
                "contacts:EmailAddress" => match i.as_str() {
                    "EmailAddress1" => Field::Email(1),
                    "EmailAddress2" => Field::Email(2),
                    "EmailAddress3" => Field::Email(3),
                    _ => return Err(UNKNOWN_PATH),
                },
                "contacts:PhoneNumber" => Field::Phone(phone_slot(i).ok_or(UNKNOWN_PATH)?),
                "contacts:ImAddress" => return Ok(Meaning::Ignore),
                u if u.starts_with("contacts:PhysicalAddress:") => Field::Address(
                    addr_slot(i).ok_or(UNKNOWN_PATH)?,
                    addr_part(&u["contacts:PhysicalAddress:".len()..]).ok_or(UNKNOWN_PATH)?,
                ),
                _ => return Err(UNKNOWN_PATH),
            };
            Ok(Meaning::Field(f))
        }
        Path::Extended(x) => Ok(ext_meaning(&x.key)),
    }
}

fn ext_value(e: &Element) -> Option<Result<String, Vec<String>>> {
    if let Some(vs) = e.child("Values") {
        return Some(Err(vs
            .children_named("Value")
            .map(|v| v.text.clone())
            .collect()));
    }
    e.child_text("Value").map(|v| Ok(v.to_owned()))
}

fn edit(field: Field, value: Option<Result<String, Vec<String>>>) -> Edit {
    match value {
        Some(Ok(v)) if field == Field::Categories => Edit::SetList(field, vec![v]),
        Some(Ok(v)) => Edit::Set(field, v),
        Some(Err(list)) if field == Field::Categories => Edit::SetList(field, list),
        Some(Err(list)) => Edit::Set(field, list.join(", ")),
        None => Edit::Delete(field),
    }
}

/// Edits of one element of a `t:Contact` (or `t:Item`) body; `Ok(vec![])` for elements that
/// are accepted and ignored. `only`: the element must hold exactly that field (UpdateItem).
fn element_edits(e: &Element, only: Option<Field>) -> Result<Vec<Edit>, EwsError> {
    let mut out = Vec::new();
    let mut push = |f: Field, v: Option<Result<String, Vec<String>>>| -> Result<(), EwsError> {
        if only.is_some_and(|o| o != f) {
            return Err(UPDATE_COUNT);
        }
        out.push(edit(f, v));
        Ok(())
    };
    match e.name.as_str() {
        "EmailAddresses" => {
            for en in e.children_named("Entry") {
                let n = match en.attr("Key") {
                    Some("EmailAddress1") => 1,
                    Some("EmailAddress2") => 2,
                    Some("EmailAddress3") => 3,
                    _ => return Err(UNKNOWN_PATH),
                };
                push(Field::Email(n), Some(Ok(en.text.clone())))?;
            }
        }
        "PhoneNumbers" => {
            for en in e.children_named("Entry") {
                match en.attr("Key").and_then(phone_slot) {
                    Some(s) => push(Field::Phone(s), Some(Ok(en.text.clone())))?,
                    None if only.is_some() => return Err(UNKNOWN_PATH),
                    None => {} // a key crmgate has no slot for (Pager, …): not kept
                }
            }
        }
        "PhysicalAddresses" => {
            for en in e.children_named("Entry") {
                let slot = en.attr("Key").and_then(addr_slot).ok_or(UNKNOWN_PATH)?;
                for part in &en.children {
                    let p = addr_part(&part.name).ok_or(UNKNOWN_PATH)?;
                    push(Field::Address(slot, p), Some(Ok(part.text.clone())))?;
                }
            }
        }
        "Categories" => {
            let list = e.children_named("String").map(|s| s.text.clone()).collect();
            push(Field::Categories, Some(Err(list)))?;
        }
        "Body" => push(Field::Notes, Some(Ok(e.text.clone())))?,
        "ExtendedProperty" => {
            let uri = e
                .child("ExtendedFieldURI")
                .and_then(super::shape::path)
                .ok_or(UNKNOWN_PATH)?;
            if let (Meaning::Field(f), Path::Extended(_)) = (meaning(&uri)?, &uri) {
                push(f, ext_value(e))?;
            }
        }
        "CompleteName" => {
            if let Some(t) = e.child_text("Title") {
                push(Field::Title, Some(Ok(t.to_owned())))?;
            }
        }
        name => match field_uri(&format!("contacts:{name}"))
            .or_else(|| field_uri(&format!("item:{name}")))
        {
            Some(Meaning::Field(f)) => push(f, Some(Ok(e.text.clone())))?,
            Some(Meaning::Ignore) => {}
            // Anything else in a new contact is not a contact field crmgate keeps.
            None if only.is_none() => {}
            None => return Err(UNKNOWN_PATH),
        },
    }
    Ok(out)
}

/// The edits that make up a new contact, and the resource name DavMail chose (0x10f3).
pub fn create_edits(contact: &Element) -> Result<(Vec<Edit>, Option<String>), EwsError> {
    let mut edits = Vec::new();
    let mut name = None;
    for e in &contact.children {
        if e.name == "ExtendedProperty" {
            let uri = e.child("ExtendedFieldURI").and_then(super::shape::path);
            if let Some(Path::Extended(x)) = &uri {
                if x.key == ExtKey::Tag(0x10f3) {
                    name = e.child_text("Value").map(|v| {
                        v.trim_end_matches(".EML")
                            .trim_end_matches(".eml")
                            .to_owned()
                    });
                    continue;
                }
            }
        }
        edits.extend(element_edits(e, None)?);
    }
    Ok((edits, name))
}

/// One update (`SetItemField`, `AppendToItemField`, `DeleteItemField`) as edits.
pub fn update_edits(u: &Element) -> Result<Vec<Edit>, EwsError> {
    let path_el = u
        .children
        .iter()
        .find(|c| {
            matches!(
                c.name.as_str(),
                "FieldURI" | "IndexedFieldURI" | "ExtendedFieldURI"
            )
        })
        .ok_or(UNKNOWN_PATH)?;
    let path = super::shape::path(path_el).ok_or(UNKNOWN_PATH)?;
    let field = match meaning(&path)? {
        Meaning::Field(f) => f,
        Meaning::Ignore => return Ok(Vec::new()),
    };
    match u.name.as_str() {
        "DeleteItemField" => Ok(vec![Edit::Delete(field)]),
        "SetItemField" | "AppendToItemField" => {
            let wrapper = u
                .children
                .iter()
                .find(|c| matches!(c.name.as_str(), "Contact" | "Item"))
                .ok_or(UPDATE_COUNT)?;
            if wrapper.children.len() != 1 {
                return Err(UPDATE_COUNT);
            }
            let edits = element_edits(&wrapper.children[0], Some(field))?;
            if edits.len() != 1 {
                return Err(UPDATE_COUNT);
            }
            Ok(edits)
        }
        _ => Err(UNKNOWN_PATH),
    }
}
