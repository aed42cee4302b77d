//! `t:Contact`: an item rendered in the element order of types.xsd, for any shape; and the
//! values of property paths (used for rendering extended properties, restrictions and sort).
//!
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/contact>.

use super::shape::{system_time, BaseShape, ExtKey, ExtendedField, Path, Shape};
use super::xml::Xml;
use crate::domain::mapping::{AddressSlot, PhoneSlot};
use crate::view::Item;

/// A property value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// One value.
    One(String),
    /// Several (`StringArray`).
    Many(Vec<String>),
}

/// The `.EML` name DavMail uses as the resource name of a contact: stable, filterable.
pub fn url_name(contact_id: &str) -> String {
    let safe: String = contact_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}.EML")
}

/// Birthday as EWS dateTime: date-only values travel as UTC 11:59 (what clients send).
fn birthday_time(d: &str) -> String {
    format!("{d}T11:59:00Z")
}

fn address_field<'a>(item: &'a Item, slot: AddressSlot, field: &str) -> Option<&'a str> {
    let (_, a) = item.card.addresses.iter().find(|(s, _)| *s == slot)?;
    match field {
        "Street" => a.street.as_deref(),
        "City" => a.city.as_deref(),
        "State" => a.region.as_deref(),
        "PostalCode" => a.postal_code.as_deref(),
        "CountryOrRegion" => a.country.as_deref(),
        _ => None,
    }
}

fn phone(item: &Item, slot: PhoneSlot) -> Option<&str> {
    item.card
        .phones
        .iter()
        .find(|(s, _)| *s == slot)
        .map(|(_, n)| n.as_str())
}

fn one(v: Option<&str>) -> Option<Value> {
    v.filter(|s| !s.is_empty())
        .map(|s| Value::One(s.to_owned()))
}

/// The value of an extended property of a contact, if crmgate has one.
pub fn extended_value(item: &Item, key: &ExtKey) -> Option<Value> {
    let c = &item.card;
    match key {
        ExtKey::Tag(tag) => match *tag {
            0x1a => one(Some("IPM.Contact")),
            0x37 | 0x3001 => one(Some(&c.display_name)),
            0xe23 => one(Some(&item.uid.to_string())),
            0x10f3 => one(Some(&url_name(&item.contact_id))),
            0x3007 | 0x3008 => one(Some(&system_time(item.modified))),
            0x36 => one(Some("0")),
            0x3a06 => one(c.given_name.as_deref()),
            0x3a11 => one(c.surname.as_deref()),
            0x3a44 => one(c.middle_name.as_deref()),
            0x3a45 => one(c.title.as_deref()),
            0x3a16 => one(c.company_name.as_deref()),
            0x3a18 => one(c.department.as_deref()),
            0x3a17 => one(c.job_title.as_deref()),
            0x3a08 => one(phone(item, PhoneSlot::BusinessPhone)),
            0x3a1b => one(phone(item, PhoneSlot::BusinessPhone2)),
            0x3a09 => one(phone(item, PhoneSlot::HomePhone)),
            0x3a2f => one(phone(item, PhoneSlot::HomePhone2)),
            0x3a1c => one(phone(item, PhoneSlot::MobilePhone)),
            0x3a24 => one(phone(item, PhoneSlot::BusinessFax)),
            0x3a1f => one(phone(item, PhoneSlot::OtherTelephone)),
            0x3a5d => one(address_field(item, AddressSlot::Home, "Street")),
            0x3a59 => one(address_field(item, AddressSlot::Home, "City")),
            0x3a5c => one(address_field(item, AddressSlot::Home, "State")),
            0x3a5b => one(address_field(item, AddressSlot::Home, "PostalCode")),
            0x3a5a => one(address_field(item, AddressSlot::Home, "CountryOrRegion")),
            0x3a63 => one(address_field(item, AddressSlot::Other, "Street")),
            0x3a5f => one(address_field(item, AddressSlot::Other, "City")),
            0x3a62 => one(address_field(item, AddressSlot::Other, "State")),
            0x3a61 => one(address_field(item, AddressSlot::Other, "PostalCode")),
            0x3a60 => one(address_field(item, AddressSlot::Other, "CountryOrRegion")),
            0x3a42 => c.birthday.as_deref().map(|b| Value::One(birthday_time(b))),
            0x3a51 => one(c.web_page.as_deref()),
            0x1000 => one(c.notes.as_deref()),
            _ => None,
        },
        ExtKey::Named { set, id, name } => match (set.as_str(), id, name.as_deref()) {
            ("Address", Some(32837), _) => {
                one(address_field(item, AddressSlot::Business, "Street"))
            }
            ("Address", Some(32838), _) => one(address_field(item, AddressSlot::Business, "City")),
            ("Address", Some(32839), _) => one(address_field(item, AddressSlot::Business, "State")),
            ("Address", Some(32840), _) => {
                one(address_field(item, AddressSlot::Business, "PostalCode"))
            }
            ("Address", Some(32841), _) => one(address_field(
                item,
                AddressSlot::Business,
                "CountryOrRegion",
            )),
            ("Address", Some(32789), _) => one(Some("false")),
            ("PublicStrings", _, Some("Keywords")) if !c.categories.is_empty() => {
                Some(Value::Many(c.categories.clone()))
            }
            _ => None,
        },
    }
}

/// The values of a path that need no card: those computed from the contact's id, stable
/// number and last change alone. `None` for every other path. Restrictions and sorts on
/// these paths run without rendering the contact.
pub fn identity_values(
    path: &Path,
    contact_id: &str,
    uid: u64,
    modified: u64,
) -> Option<Vec<String>> {
    let v = match path {
        Path::Field(u) => match u.as_str() {
            "item:ItemClass" => vec!["IPM.Contact".into()],
            "item:LastModifiedTime" | "item:DateTimeCreated" => vec![system_time(modified)],
            _ => return None,
        },
        Path::Extended(x) => match x.key {
            ExtKey::Tag(0x1a) => vec!["IPM.Contact".into()],
            ExtKey::Tag(0xe23) => vec![uid.to_string()],
            ExtKey::Tag(0x10f3) => vec![url_name(contact_id)],
            ExtKey::Tag(0x3007 | 0x3008) => vec![system_time(modified)],
            ExtKey::Tag(0x36) => vec!["0".into()],
            _ => return None,
        },
        Path::Indexed(..) => return None,
    };
    Some(v)
}

/// The values of a property path, for restrictions and sorting.
pub fn values(item: &Item, path: &Path) -> Vec<String> {
    if let Some(v) = identity_values(path, &item.contact_id, item.uid, item.modified) {
        return v;
    }
    let c = &item.card;
    let opt = |v: Option<&String>| v.cloned().into_iter().collect::<Vec<_>>();
    match path {
        Path::Field(u) => match u.as_str() {
            "contacts:DisplayName" | "item:Subject" => vec![c.display_name.clone()],
            "contacts:FileAs" => vec![c.file_as.clone()],
            "contacts:GivenName" => opt(c.given_name.as_ref()),
            "contacts:Surname" => opt(c.surname.as_ref()),
            "contacts:MiddleName" => opt(c.middle_name.as_ref()),
            "contacts:CompanyName" => opt(c.company_name.as_ref()),
            "contacts:JobTitle" => opt(c.job_title.as_ref()),
            "contacts:Department" => opt(c.department.as_ref()),
            "contacts:BusinessHomePage" => opt(c.web_page.as_ref()),
            "contacts:EmailAddresses" => c.emails.iter().map(|e| e.address.clone()).collect(),
            "item:Categories" => c.categories.clone(),
            "item:ItemClass" => vec!["IPM.Contact".into()],
            "item:LastModifiedTime" | "item:DateTimeCreated" => vec![system_time(item.modified)],
            "contacts:Birthday" => c.birthday.iter().map(|b| birthday_time(b)).collect(),
            _ => Vec::new(),
        },
        Path::Indexed(u, i) => match u.as_str() {
            "contacts:EmailAddress" => c
                .emails
                .iter()
                .filter(|e| i == &format!("EmailAddress{}", e.index))
                .map(|e| e.address.clone())
                .collect(),
            "contacts:PhoneNumber" => c
                .phones
                .iter()
                .filter(|(s, _)| s.key() == i)
                .map(|(_, n)| n.clone())
                .collect(),
            u if u.starts_with("contacts:PhysicalAddress:") => {
                let field = &u["contacts:PhysicalAddress:".len()..];
                let slot = match i.as_str() {
                    "Business" => AddressSlot::Business,
                    "Home" => AddressSlot::Home,
                    _ => AddressSlot::Other,
                };
                address_field(item, slot, field)
                    .map(str::to_owned)
                    .into_iter()
                    .collect()
            }
            _ => Vec::new(),
        },
        Path::Extended(x) => match extended_value(item, &x.key) {
            Some(Value::One(s)) => vec![s],
            Some(Value::Many(v)) => v,
            None => Vec::new(),
        },
    }
}

fn write_extended(x: &mut Xml, f: &ExtendedField, v: &Value) {
    x.open("t:ExtendedProperty", &[]);
    let attrs: Vec<(&str, &str)> = f
        .attrs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    x.empty("t:ExtendedFieldURI", &attrs);
    match v {
        Value::One(s) => x.text("t:Value", &[], s),
        Value::Many(vs) => {
            x.open("t:Values", &[]);
            for s in vs {
                x.text("t:Value", &[], s);
            }
            x.close("t:Values");
        }
    }
    x.close("t:ExtendedProperty");
}

/// Writes the effective rights of an item or folder.
pub fn write_rights(x: &mut Xml, writable: bool, folder: bool) {
    let w = if writable { "true" } else { "false" };
    x.open("t:EffectiveRights", &[]);
    x.text("t:CreateAssociated", &[], "false");
    x.text("t:CreateContents", &[], if folder { w } else { "false" });
    x.text("t:CreateHierarchy", &[], "false");
    x.text("t:Delete", &[], w);
    x.text("t:Modify", &[], w);
    x.text("t:Read", &[], "true");
    if !folder {
        x.text("t:ViewPrivateItems", &[], "true");
    }
    x.close("t:EffectiveRights");
}

/// Writes `t:Contact` for `item` in `shape`. `parent_id` is the folder's id; `writable`
/// tells the client whether it may change the item.
pub fn write(x: &mut Xml, item: &Item, shape: &Shape, parent_id: &str, writable: bool) {
    let c = &item.card;
    // (in Default, in AllProperties)
    let want = |uri: &str, d: bool, a: bool| shape.field(uri, d, a);
    x.open("t:Contact", &[]);
    x.empty(
        "t:ItemId",
        &[("Id", &item.id), ("ChangeKey", &item.change_key)],
    );
    if want("item:ParentFolderId", false, true) {
        x.empty("t:ParentFolderId", &[("Id", parent_id)]);
    }
    if want("item:ItemClass", true, true) {
        x.text("t:ItemClass", &[], "IPM.Contact");
    }
    if want("item:Subject", true, true) {
        x.text("t:Subject", &[], &c.display_name);
    }
    if want("item:Sensitivity", false, true) {
        x.text("t:Sensitivity", &[], "Normal");
    }
    if want("item:Body", false, true) {
        if let Some(n) = &c.notes {
            x.text("t:Body", &[("BodyType", "Text")], n);
        }
    }
    if want("item:Categories", true, true) && !c.categories.is_empty() {
        x.open("t:Categories", &[]);
        for cat in &c.categories {
            x.text("t:String", &[], cat);
        }
        x.close("t:Categories");
    }
    if want("item:Importance", false, true) {
        x.text("t:Importance", &[], "Normal");
    }
    if want("item:DateTimeCreated", false, true) {
        x.text("t:DateTimeCreated", &[], &system_time(item.modified));
    }
    if want("item:HasAttachments", false, true) {
        x.text("t:HasAttachments", &[], "false");
    }
    for f in shape.extended() {
        if let Some(v) = extended_value(item, &f.key) {
            write_extended(x, f, &v);
        }
    }
    if want("item:EffectiveRights", false, true) {
        write_rights(x, writable, false);
    }
    if want("item:LastModifiedTime", false, true) {
        x.text("t:LastModifiedTime", &[], &system_time(item.modified));
    }
    if want("contacts:FileAs", true, true) {
        x.text("t:FileAs", &[], &c.file_as);
    }
    if want("contacts:DisplayName", true, true) {
        x.text("t:DisplayName", &[], &c.display_name);
    }
    if want("contacts:GivenName", true, true) {
        if let Some(v) = &c.given_name {
            x.text("t:GivenName", &[], v);
        }
    }
    if want("contacts:MiddleName", true, true) {
        if let Some(v) = &c.middle_name {
            x.text("t:MiddleName", &[], v);
        }
    }
    if want("contacts:CompleteName", false, true) {
        x.open("t:CompleteName", &[]);
        for (tag, v) in [
            ("t:Title", &c.title),
            ("t:FirstName", &c.given_name),
            ("t:MiddleName", &c.middle_name),
            ("t:LastName", &c.surname),
        ] {
            if let Some(v) = v {
                x.text(tag, &[], v);
            }
        }
        x.text("t:FullName", &[], &c.display_name);
        x.close("t:CompleteName");
    }
    if want("contacts:CompanyName", true, true) {
        if let Some(v) = &c.company_name {
            x.text("t:CompanyName", &[], v);
        }
    }
    // Emails: the whole dictionary, or the indexes asked for.
    let email_idx = shape.indexes("contacts:EmailAddress");
    let all_emails = want("contacts:EmailAddresses", true, true);
    let emails: Vec<_> = c
        .emails
        .iter()
        .filter(|e| all_emails || email_idx.contains(&format!("EmailAddress{}", e.index).as_str()))
        .collect();
    if !emails.is_empty() {
        x.open("t:EmailAddresses", &[]);
        for e in emails {
            x.text(
                "t:Entry",
                &[("Key", &format!("EmailAddress{}", e.index))],
                &e.address,
            );
        }
        x.close("t:EmailAddresses");
    }
    // Addresses: whole, or per key and sub-field.
    let all_addr = want("contacts:PhysicalAddresses", true, true);
    let mut addr_out: Vec<(AddressSlot, Vec<(&str, &str)>)> = Vec::new();
    for (slot, _) in &c.addresses {
        let mut fields = Vec::new();
        for f in ["Street", "City", "State", "CountryOrRegion", "PostalCode"] {
            let asked = all_addr
                || shape
                    .indexes(&format!("contacts:PhysicalAddress:{f}"))
                    .contains(&slot.key());
            if asked {
                if let Some(v) = address_field(item, *slot, f) {
                    fields.push((f, v));
                }
            }
        }
        if !fields.is_empty() {
            addr_out.push((*slot, fields));
        }
    }
    if !addr_out.is_empty() {
        x.open("t:PhysicalAddresses", &[]);
        for (slot, fields) in addr_out {
            x.open("t:Entry", &[("Key", slot.key())]);
            for (f, v) in fields {
                x.text(&format!("t:{f}"), &[], v);
            }
            x.close("t:Entry");
        }
        x.close("t:PhysicalAddresses");
    }
    let phone_idx = shape.indexes("contacts:PhoneNumber");
    let all_phones = want("contacts:PhoneNumbers", true, true);
    let phones: Vec<_> = c
        .phones
        .iter()
        .filter(|(s, _)| all_phones || phone_idx.contains(&s.key()))
        .collect();
    if !phones.is_empty() {
        x.open("t:PhoneNumbers", &[]);
        for (s, n) in phones {
            x.text("t:Entry", &[("Key", s.key())], n);
        }
        x.close("t:PhoneNumbers");
    }
    if want("contacts:Birthday", true, true) {
        if let Some(b) = &c.birthday {
            x.text("t:Birthday", &[], &birthday_time(b));
        }
    }
    if want("contacts:BusinessHomePage", true, true) {
        if let Some(v) = &c.web_page {
            x.text("t:BusinessHomePage", &[], v);
        }
    }
    if want("contacts:ContactSource", false, true) {
        x.text("t:ContactSource", &[], "Store");
    }
    if want("contacts:Department", true, true) {
        if let Some(v) = &c.department {
            x.text("t:Department", &[], v);
        }
    }
    if want("contacts:JobTitle", true, true) {
        if let Some(v) = &c.job_title {
            x.text("t:JobTitle", &[], v);
        }
    }
    if want("contacts:PostalAddressIndex", false, true) {
        x.text("t:PostalAddressIndex", &[], "None");
    }
    if want("contacts:Surname", true, true) {
        if let Some(v) = &c.surname {
            x.text("t:Surname", &[], v);
        }
    }
    if want("contacts:HasPicture", false, true) {
        x.text("t:HasPicture", &[], "false");
    }
    x.close("t:Contact");
}

/// True for shapes that only need ids (no card).
pub fn id_only(shape: &Shape) -> bool {
    shape.base == BaseShape::IdOnly && shape.extra.is_empty()
}
