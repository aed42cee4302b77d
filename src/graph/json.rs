//! Graph JSON for contacts and contact folders, rendered from the same cards as EWS (one
//! mapping, two renderings); and the input side: a contact body as field edits.
//!
//! See <https://learn.microsoft.com/en-us/graph/api/resources/contact>.

use super::error::GraphError;
use crate::domain::mapping::{AddressSlot, PhoneSlot};
use crate::domain::patch::{AddrPart, Edit, Field};
use crate::view::Item;
use serde_json::{Map, Value};

/// Graph ids are URL-safe: the same bytes as EWS ids in the base64url alphabet.
pub fn to_graph_id(ews: &str) -> String {
    ews.replace('+', "-").replace('/', "_")
}

/// The EWS form of a Graph id.
pub fn from_graph_id(id: &str) -> String {
    id.replace('-', "+").replace('_', "/")
}

fn time(secs: u64) -> String {
    crate::domain::time::system_time(secs)
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct EmailOut<'a> {
    name: &'a str,
    address: &'a str,
}

#[derive(serde::Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct AddressOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    street: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    city: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    country_or_region: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    postal_code: Option<&'a str>,
}

/// The whole contact, borrowed, in Graph's property order: serialised straight to bytes for
/// full-shape answers (delta rounds), without building a JSON tree.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ContactOut<'a> {
    #[serde(rename = "@odata.type", skip_serializing_if = "Option::is_none")]
    odata_type: Option<&'static str>,
    #[serde(rename = "@odata.etag")]
    etag: String,
    id: String,
    created_date_time: &'a str,
    last_modified_date_time: &'a str,
    change_key: &'a str,
    categories: &'a [String],
    parent_folder_id: &'a str,
    birthday: Option<String>,
    file_as: &'a str,
    display_name: &'a str,
    given_name: Option<&'a str>,
    initials: Option<&'a str>,
    middle_name: Option<&'a str>,
    nick_name: Option<&'a str>,
    surname: Option<&'a str>,
    title: Option<&'a str>,
    yomi_given_name: Option<&'a str>,
    yomi_surname: Option<&'a str>,
    yomi_company_name: Option<&'a str>,
    generation: Option<&'a str>,
    im_addresses: [&'a str; 0],
    job_title: Option<&'a str>,
    company_name: Option<&'a str>,
    department: Option<&'a str>,
    office_location: Option<&'a str>,
    profession: Option<&'a str>,
    business_home_page: Option<&'a str>,
    assistant_name: Option<&'a str>,
    manager: Option<&'a str>,
    home_phones: Vec<&'a str>,
    mobile_phone: Option<&'a str>,
    business_phones: Vec<&'a str>,
    personal_notes: Option<&'a str>,
    spouse_name: Option<&'a str>,
    children: [&'a str; 0],
    email_addresses: Vec<EmailOut<'a>>,
    home_address: AddressOut<'a>,
    business_address: AddressOut<'a>,
    other_address: AddressOut<'a>,
}

fn address_out(item: &Item, slot: AddressSlot) -> AddressOut<'_> {
    match item.card.addresses.iter().find(|(s, _)| *s == slot) {
        None => AddressOut::default(),
        Some((_, a)) => AddressOut {
            street: a.street.as_deref(),
            city: a.city.as_deref(),
            state: a.region.as_deref(),
            country_or_region: a.country.as_deref(),
            postal_code: a.postal_code.as_deref(),
        },
    }
}

/// The full contact as JSON bytes (no `$select`), optionally with `@odata.type`.
pub fn contact_bytes(item: &Item, parent_id: &str, typed: bool) -> Vec<u8> {
    let t = time(item.modified);
    serde_json::to_vec(&contact_out(item, parent_id, &t, typed)).unwrap_or_default()
}

/// The one rendering of a contact; `t` is its timestamp.
fn contact_out<'a>(item: &'a Item, parent_id: &'a str, t: &'a str, typed: bool) -> ContactOut<'a> {
    let c = &item.card;
    let phone = |s: PhoneSlot| {
        c.phones
            .iter()
            .find(|(k, _)| *k == s)
            .map(|(_, n)| n.as_str())
    };
    ContactOut {
        odata_type: typed.then_some("#microsoft.graph.contact"),
        etag: format!("W/\"{}\"", item.change_key),
        id: to_graph_id(&item.id),
        created_date_time: t,
        last_modified_date_time: t,
        change_key: &item.change_key,
        categories: &c.categories,
        parent_folder_id: parent_id,
        birthday: c.birthday.as_ref().map(|b| format!("{b}T11:59:00Z")),
        file_as: &c.file_as,
        display_name: &c.display_name,
        given_name: c.given_name.as_deref(),
        initials: None,
        middle_name: c.middle_name.as_deref(),
        nick_name: None,
        surname: c.surname.as_deref(),
        title: c.title.as_deref(),
        yomi_given_name: None,
        yomi_surname: None,
        yomi_company_name: None,
        generation: None,
        im_addresses: [],
        job_title: c.job_title.as_deref(),
        company_name: c.company_name.as_deref(),
        department: c.department.as_deref(),
        office_location: None,
        profession: None,
        business_home_page: c.web_page.as_deref(),
        assistant_name: None,
        manager: None,
        home_phones: [PhoneSlot::HomePhone, PhoneSlot::HomePhone2]
            .into_iter()
            .filter_map(phone)
            .collect(),
        mobile_phone: phone(PhoneSlot::MobilePhone),
        business_phones: [PhoneSlot::BusinessPhone, PhoneSlot::BusinessPhone2]
            .into_iter()
            .filter_map(phone)
            .collect(),
        personal_notes: c.notes.as_deref(),
        spouse_name: None,
        children: [],
        email_addresses: c
            .emails
            .iter()
            .map(|e| EmailOut {
                name: &c.display_name,
                address: &e.address,
            })
            .collect(),
        home_address: address_out(item, AddressSlot::Home),
        business_address: address_out(item, AddressSlot::Business),
        other_address: address_out(item, AddressSlot::Other),
    }
}

/// A contact as Graph shows it; `select` limits the properties (id and etag always stay).
pub fn contact(item: &Item, parent_id: &str, select: Option<&[String]>) -> Value {
    let t = time(item.modified);
    let mut v = serde_json::to_value(contact_out(item, parent_id, &t, false)).unwrap_or_default();
    if let (Some(sel), Value::Object(m)) = (select, &mut v) {
        m.retain(|k, _| k == "@odata.etag" || k == "id" || sel.iter().any(|x| x == k));
    }
    v
}

/// A property of a contact as a string, for `$filter` and `$orderby`.
pub fn prop(item: &Item, name: &str) -> Option<String> {
    let c = &item.card;
    match name {
        "displayName" => Some(c.display_name.clone()),
        "givenName" => c.given_name.clone(),
        "surname" => c.surname.clone(),
        "middleName" => c.middle_name.clone(),
        "companyName" => c.company_name.clone(),
        "jobTitle" => c.job_title.clone(),
        "department" => c.department.clone(),
        "fileAs" => Some(c.file_as.clone()),
        "title" => c.title.clone(),
        "businessHomePage" => c.web_page.clone(),
        "personalNotes" => c.notes.clone(),
        "mobilePhone" => c
            .phones
            .iter()
            .find(|(s, _)| *s == PhoneSlot::MobilePhone)
            .map(|(_, n)| n.clone()),
        "id" => Some(to_graph_id(&item.id)),
        "createdDateTime" | "lastModifiedDateTime" => Some(time(item.modified)),
        _ => None,
    }
}

/// Largest string a client may send in one property.
const MAX_STRING: usize = 32 * 1024;
/// Largest array a client may send in one property.
const MAX_ARRAY: usize = 50;

fn string(name: &str, v: &Value) -> Result<Option<String>, GraphError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.len() > MAX_STRING => Err(GraphError::bad(format!(
            "The value of '{name}' is too long."
        ))),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(GraphError::bad(format!(
            "The property '{name}' must be a string."
        ))),
    }
}

fn array<'a>(name: &str, v: &'a Value, max: usize) -> Result<&'a [Value], GraphError> {
    match v {
        Value::Null => Ok(&[]),
        Value::Array(a) if a.len() > max => Err(GraphError::bad(format!(
            "The multi value property '{name}' has {} entries, that exceeds the max allowed value of {max}.",
            a.len()
        ))),
        Value::Array(a) => Ok(a),
        _ => Err(GraphError::bad(format!("The property '{name}' must be an array."))),
    }
}

fn set(f: Field, v: Option<String>) -> Edit {
    match v {
        Some(s) => Edit::Set(f, s),
        None => Edit::Delete(f),
    }
}

/// A contact body (POST or PATCH) as edits. Unknown properties are refused; `@odata.*`
/// annotations are ignored; a supplied collection replaces the whole collection.
pub fn edits(body: &Value) -> Result<Vec<Edit>, GraphError> {
    let obj = body
        .as_object()
        .ok_or_else(|| GraphError::bad("The body must be a JSON object."))?;
    let mut out = Vec::new();
    for (k, v) in obj {
        if k.starts_with("@odata.") || k.contains("@odata.") {
            continue;
        }
        let scalar = |f: Field| -> Result<Edit, GraphError> { Ok(set(f, string(k, v)?)) };
        match k.as_str() {
            "givenName" => out.push(scalar(Field::GivenName)?),
            "surname" => out.push(scalar(Field::Surname)?),
            "middleName" => out.push(scalar(Field::MiddleName)?),
            "title" => out.push(scalar(Field::Title)?),
            "displayName" | "fileAs" => {
                string(k, v)?; // derived from the names; accepted and not stored
            }
            "companyName" => out.push(scalar(Field::CompanyName)?),
            "jobTitle" => out.push(scalar(Field::JobTitle)?),
            "department" => out.push(scalar(Field::Department)?),
            "businessHomePage" => out.push(scalar(Field::WebPage)?),
            "personalNotes" => out.push(scalar(Field::Notes)?),
            "birthday" => out.push(scalar(Field::Birthday)?),
            "mobilePhone" => out.push(scalar(Field::Phone(PhoneSlot::MobilePhone))?),
            "categories" => {
                let list = array(k, v, MAX_ARRAY)?
                    .iter()
                    .map(|x| string(k, x).map(|s| s.unwrap_or_default()))
                    .collect::<Result<Vec<_>, _>>()?;
                out.push(Edit::SetList(Field::Categories, list));
            }
            "emailAddresses" => {
                let a = array(k, v, 3)?;
                for n in 1..=3u8 {
                    let addr = match a.get(n as usize - 1) {
                        Some(e) => string("emailAddresses.address", e.get("address").unwrap_or(&Value::Null))?,
                        None => None,
                    };
                    out.push(set(Field::Email(n), addr));
                }
            }
            "businessPhones" | "homePhones" => {
                let a = array(k, v, 2)?;
                let slots = if k == "businessPhones" {
                    [PhoneSlot::BusinessPhone, PhoneSlot::BusinessPhone2]
                } else {
                    [PhoneSlot::HomePhone, PhoneSlot::HomePhone2]
                };
                for (i, slot) in slots.into_iter().enumerate() {
                    let n = match a.get(i) {
                        Some(x) => string(k, x)?,
                        None => None,
                    };
                    out.push(set(Field::Phone(slot), n));
                }
            }
            "homeAddress" | "businessAddress" | "otherAddress" => {
                let slot = match k.as_str() {
                    "homeAddress" => AddressSlot::Home,
                    "businessAddress" => AddressSlot::Business,
                    _ => AddressSlot::Other,
                };
                let o = match v {
                    Value::Null => Map::new(),
                    Value::Object(o) => o.clone(),
                    _ => return Err(GraphError::bad(format!("The property '{k}' must be an object."))),
                };
                for (name, part) in [
                    ("street", AddrPart::Street),
                    ("city", AddrPart::City),
                    ("state", AddrPart::State),
                    ("postalCode", AddrPart::PostalCode),
                    ("countryOrRegion", AddrPart::Country),
                ] {
                    out.push(set(Field::Address(slot, part), string(name, o.get(name).unwrap_or(&Value::Null))?));
                }
                if let Some(bad) = o.keys().find(|x| !["street", "city", "state", "postalCode", "countryOrRegion"].contains(&x.as_str()) && !x.starts_with('@')) {
                    return Err(GraphError::bad(format!("The property '{bad}' does not exist on type 'microsoft.graph.physicalAddress'.")));
                }
            }
            "imAddresses" | "children" => {
                if !array(k, v, 3)?.is_empty() {
                    return Err(GraphError::bad(format!("The property '{k}' cannot be stored for CRM contacts.")));
                }
            }
            "id" | "changeKey" | "parentFolderId" | "createdDateTime" | "lastModifiedDateTime" => {}
            other => {
                return Err(GraphError::bad(format!(
                    "The property '{other}' does not exist on type 'microsoft.graph.contact'. Make sure to only use property names that are defined by the type."
                )))
            }
        }
    }
    Ok(out)
}
