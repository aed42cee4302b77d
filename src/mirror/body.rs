//! What the mirror writes: a contact in Graph's JSON (the Graph face's one rendering, so every
//! face and the mailbox agree), the writable properties only, with crmgate's extended
//! properties; per-property digests so an update sends only what changed.

use crate::view::Item;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// crmgate's property set (a GUID of its own) for the named extended properties it writes.
pub const PROPERTY_SET: &str = "{6a0b1c3e-3f0d-4c5e-9b8a-63726d676174}";

/// Extended property: the crmgate contact id (found with `$filter`).
pub fn id_prop() -> String {
    format!("String {PROPERTY_SET} Name crmgate.id")
}

/// Extended property: `v1 <change key> <contact id>` (read with `$expand`).
pub fn state_prop() -> String {
    format!("String {PROPERTY_SET} Name crmgate.state")
}

/// Extended property of a folder crmgate made: `my` or `global`.
pub fn folder_prop() -> String {
    format!("String {PROPERTY_SET} Name crmgate.folder")
}

/// The value of the state property.
pub fn state_value(change_key: &str, contact_id: &str) -> String {
    format!("v1 {change_key} {contact_id}")
}

/// (change key, contact id) of a state property value.
pub fn parse_state(v: &str) -> Option<(&str, &str)> {
    let mut it = v.splitn(3, ' ');
    if it.next()? != "v1" {
        return None;
    }
    let ck = it.next()?;
    let id = it.next()?;
    (!ck.is_empty() && !id.is_empty()).then_some((ck, id))
}

/// The state property of a Graph item read with the `$expand` of [`state_prop`].
pub fn state_of(item: &Value) -> Option<String> {
    let want = state_prop();
    item["singleValueExtendedProperties"]
        .as_array()?
        .iter()
        .find(|p| {
            p["id"]
                .as_str()
                .is_some_and(|i| i.eq_ignore_ascii_case(&want))
        })
        .and_then(|p| p["value"].as_str())
        .map(str::to_owned)
}

/// The contact properties the mirror writes, in a fixed order (digests follow it).
pub const PROPS: [&str; 20] = [
    "givenName",
    "surname",
    "middleName",
    "title",
    "displayName",
    "fileAs",
    "companyName",
    "jobTitle",
    "department",
    "businessHomePage",
    "personalNotes",
    "birthday",
    "mobilePhone",
    "categories",
    "emailAddresses",
    "businessPhones",
    "homePhones",
    "homeAddress",
    "businessAddress",
    "otherAddress",
];

/// The mirrored properties of an item, `Null` where it has none.
pub fn render(item: &Item) -> Map<String, Value> {
    let mut full = match crate::graph::json::contact(item, "", None) {
        Value::Object(o) => o,
        _ => Map::new(),
    };
    let mut out = Map::new();
    for p in PROPS {
        out.insert(p.to_owned(), full.remove(p).unwrap_or(Value::Null));
    }
    out
}

fn empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// The digest of one property's value, as [`digests`] computes it.
pub fn digest(v: &Value) -> u32 {
    // An empty value and an absent one are the same to a mailbox.
    if empty(v) {
        return 0;
    }
    // The value's JSON text, hashed as it is written (no string in between).
    let mut h = HashWriter(Sha256::new());
    if serde_json::to_writer(&mut h, v).is_err() {
        return 1;
    }
    let h = h.0.finalize();
    u32::from_be_bytes([h[0], h[1], h[2], h[3]]) | 1
}

struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Digests of the rendered properties, in [`PROPS`] order.
pub fn digests(props: &Map<String, Value>) -> Vec<u32> {
    PROPS
        .iter()
        .map(|p| digest(props.get(*p).unwrap_or(&Value::Null)))
        .collect()
}

fn ext(item: &Item, with_id: bool) -> Value {
    let mut v =
        vec![json!({"id": state_prop(), "value": state_value(&item.change_key, &item.contact_id)})];
    if with_id {
        v.push(json!({"id": id_prop(), "value": item.contact_id}));
    }
    Value::Array(v)
}

/// A create: every property that has a value, and both extended properties.
pub fn create(item: &Item) -> (Value, Vec<u32>) {
    let props = render(item);
    let d = digests(&props);
    let mut body: Map<String, Value> = props.into_iter().filter(|(_, v)| !empty(v)).collect();
    body.insert("singleValueExtendedProperties".into(), ext(item, true));
    (Value::Object(body), d)
}

/// An update: the properties whose digest differs from `written` (all when unknown), and the
/// state property. `None` when nothing but the state would change and the state is current.
pub fn update(item: &Item, written: &[u32], written_ck: &str) -> Option<(Value, Vec<u32>)> {
    let props = render(item);
    let d = digests(&props);
    let known = written.len() == d.len();
    let mut body = Map::new();
    // In PROPS order, as the digests are (the map itself is ordered by name).
    for (i, p) in PROPS.iter().enumerate() {
        if !known || written[i] != d[i] {
            body.insert(
                (*p).to_owned(),
                props.get(*p).cloned().unwrap_or(Value::Null),
            );
        }
    }
    if body.is_empty() && written_ck == item.change_key {
        return None;
    }
    body.insert("singleValueExtendedProperties".into(), ext(item, !known));
    Some((Value::Object(body), d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_values_round_trip_and_strangers_are_refused() {
        let v = state_value("ck+/=", "c 1 with spaces");
        assert_eq!(parse_state(&v), Some(("ck+/=", "c 1 with spaces")));
        assert_eq!(parse_state("v2 a b"), None);
        assert_eq!(parse_state("v1 a"), None);
        assert_eq!(parse_state("v1  b"), None);
    }

    fn item(job: &str, phone: &str) -> Item {
        use crate::domain::mapping::{Card, PhoneSlot};
        Item {
            folder: crate::domain::rules::VirtualFolder::My,
            contact_id: "c1".into(),
            id: "id".into(),
            change_key: format!("ck-{job}-{phone}"),
            uid: 1,
            modified: 0,
            card: Card {
                display_name: "Ada Lovelace".into(),
                file_as: "Lovelace, Ada".into(),
                given_name: Some("Ada".into()),
                surname: Some("Lovelace".into()),
                job_title: Some(job.into()),
                phones: vec![(PhoneSlot::BusinessPhone, phone.into())],
                ..Card::default()
            },
        }
    }

    #[test]
    fn an_update_sends_exactly_the_properties_that_changed() {
        let (_, written) = create(&item("Engineer", "+1 555 0100"));
        let (b, _) = update(&item("Analyst", "+1 555 0199"), &written, "ck-old").expect("changes");
        let mut keys: Vec<&str> = b
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "businessPhones",
                "jobTitle",
                "singleValueExtendedProperties"
            ]
        );
        // Nothing changed and the version is current: no write at all.
        let same = item("Engineer", "+1 555 0100");
        assert!(update(&same, &written, &same.change_key).is_none());
        // Digests unknown (after a rebuild): every property, with the id property again.
        let (all, _) = update(&same, &[], "").expect("full");
        assert_eq!(all.as_object().expect("object").len(), PROPS.len() + 1);
        assert_eq!(
            all["singleValueExtendedProperties"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
    }

    #[test]
    fn digests_are_of_the_values_json_text() {
        // Stored digests outlive releases: the hashed bytes are the value's compact JSON.
        let v = json!({"city": "Köln", "street": "Ring 1"});
        let h = Sha256::digest(v.to_string().as_bytes());
        assert_eq!(digest(&v), u32::from_be_bytes([h[0], h[1], h[2], h[3]]) | 1);
    }

    #[test]
    fn empty_and_absent_digest_alike_and_values_differ() {
        assert_eq!(digest(&Value::Null), digest(&json!("")));
        assert_eq!(digest(&json!([])), digest(&json!({})));
        assert_ne!(digest(&json!("a")), digest(&json!("b")));
        assert_ne!(digest(&json!("a")), 0);
    }
}
