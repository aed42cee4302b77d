//! HubSpot records ↔ crmgate's model (docs/hubspot.md). Pure: JSON in, records out, and the
//! other way for writes — the properties a changed contact field becomes, so an update is a
//! PATCH of exactly those (HubSpot updates are partial; nothing unseen is wiped).
//!
//! HubSpot's shapes (`../shared/specs/hubspot/README.md`): a record is `{id, properties,
//! createdAt, updatedAt, archived}` with every property value a string or null; an owner is
//! `{id, email, firstName, lastName, type, teams: [{id, name, primary}], archived}`.

use crate::domain::capabilities::{Capabilities, Multi};
use crate::domain::{
    AddressKind, Company, CompanyId, Contact, ContactField, ContactId, Email, Kind, Lead, LeadId,
    Phone, PhoneKind, PostalAddress, Subsystem, SubsystemId, User, UserId,
};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Where portals differ: which properties and values mean what (configuration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Company properties naming further responsible owners besides `hubspot_owner_id`.
    pub extra_company_owners: Vec<String>,
    /// Deal stages that close a deal as won.
    pub won_stages: Vec<String>,
    /// Deal stages that close a deal as lost.
    pub lost_stages: Vec<String>,
    /// Lifecycle stage given to contacts created through crmgate (`None`: HubSpot's default).
    pub default_lifecycle_stage: Option<String>,
    /// Whether a closed (won or lost) deal still puts its contacts in its owner's My.
    pub count_closed_deals: bool,
    /// Custom contact properties holding fields HubSpot has no standard property for:
    /// field (`title`, `middle_name`, `department`, `notes`) → property name. A mapped field
    /// is read and written; an unmapped one is refused on writes.
    pub custom: BTreeMap<String, String>,
}

/// The contact fields a custom property can hold, by their configuration name.
pub const CUSTOM_FIELDS: [(&str, ContactField); 4] = [
    ("title", ContactField::Title),
    ("middle_name", ContactField::MiddleName),
    ("department", ContactField::Department),
    ("notes", ContactField::Notes),
];

impl Mapping {
    /// The custom property holding `field`, if one is configured.
    pub fn custom_property(&self, field: ContactField) -> Option<&str> {
        CUSTOM_FIELDS
            .iter()
            .find(|(_, f)| *f == field)
            .and_then(|(name, _)| self.custom.get(*name))
            .map(String::as_str)
    }
}

impl Default for Mapping {
    fn default() -> Self {
        Mapping {
            extra_company_owners: Vec::new(),
            won_stages: vec!["closedwon".into()],
            lost_stages: vec!["closedlost".into()],
            default_lifecycle_stage: None,
            count_closed_deals: true,
            custom: BTreeMap::new(),
        }
    }
}

/// The contact properties crmgate reads (and asks HubSpot for).
pub const CONTACT_PROPERTIES: [&str; 18] = [
    "firstname",
    "lastname",
    "salutation",
    "jobtitle",
    "email",
    "hs_additional_emails",
    "phone",
    "mobilephone",
    "fax",
    "address",
    "city",
    "zip",
    "state",
    "country",
    "website",
    "date_of_birth",
    "hubspot_owner_id",
    "lifecyclestage",
];

fn prop<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
    v.get("properties")?
        .get(name)?
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn owned(v: &Value, name: &str) -> Option<String> {
    prop(v, name).map(str::to_owned)
}

fn id_of(v: &Value) -> Option<String> {
    match v.get("id")? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The properties crmgate does not map, kept as the record's extra fields (so nothing is lost
/// on the way through).
fn extra(v: &Value, mapped: &[&str]) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(p) = v.get("properties").and_then(Value::as_object) {
        for (k, x) in p {
            if !mapped.contains(&k.as_str()) && !x.is_null() {
                out.insert(k.clone(), x.clone());
            }
        }
    }
    out
}

/// The teams of the owners, as subsystems (id = team id).
pub fn teams(owners: &[Value]) -> Vec<Subsystem> {
    let mut out: Vec<Subsystem> = Vec::new();
    for t in owners
        .iter()
        .filter_map(|o| o.get("teams")?.as_array())
        .flatten()
    {
        let Some(id) = t.get("id").and_then(|i| match i {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }) else {
            continue;
        };
        if out.iter().any(|s| s.id.as_str() == id) {
            continue;
        }
        out.push(Subsystem {
            id: SubsystemId::from(id.as_str()),
            name: t
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or(&id)
                .to_owned(),
            extra: Map::new(),
        });
    }
    out
}

/// A HubSpot owner as a crmgate user: only people (`type` PERSON) with an e-mail; login = the
/// e-mail in lower case; subsystems = the owner's teams; an archived owner is inactive.
pub fn user(owner: &Value) -> Option<User> {
    if owner.get("type").and_then(Value::as_str) != Some("PERSON") {
        return None;
    }
    let id = id_of(owner)?;
    let login = owner
        .get("email")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|e| e.contains('@'))?
        .to_lowercase();
    let name = [owner.get("firstName"), owner.get("lastName")]
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let mut subsystems: Vec<SubsystemId> = teams(std::slice::from_ref(owner))
        .into_iter()
        .map(|s| s.id)
        .collect();
    subsystems.sort();
    Some(User {
        id: UserId::from(id.as_str()),
        name: if name.is_empty() { login.clone() } else { name },
        login,
        password: None,
        password_hash: None,
        subsystems,
        role: Default::default(),
        active: !owner
            .get("archived")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        extra: Map::new(),
    })
}

fn team_of(v: &Value) -> Vec<SubsystemId> {
    owned(v, "hubspot_team_id")
        .map(|t| vec![SubsystemId::from(t.as_str())])
        .unwrap_or_default()
}

/// A HubSpot company: responsible = `hubspot_owner_id` (plus the configured owner
/// properties), types = `type`, subsystems = the record's team.
pub fn company(v: &Value, m: &Mapping) -> Option<Company> {
    let id = id_of(v)?;
    let mut responsible: Vec<UserId> = std::iter::once("hubspot_owner_id")
        .chain(m.extra_company_owners.iter().map(String::as_str))
        .filter_map(|p| prop(v, p))
        .map(UserId::from)
        .collect();
    responsible.dedup();
    let address =
        (prop(v, "address").is_some() || prop(v, "city").is_some()).then(|| PostalAddress {
            kind: AddressKind::Work,
            street: owned(v, "address"),
            city: owned(v, "city"),
            postal_code: owned(v, "zip"),
            region: owned(v, "state"),
            country: owned(v, "country"),
        });
    Some(Company {
        id: CompanyId::from(id.as_str()),
        name: owned(v, "name").unwrap_or_default(),
        subsystems: team_of(v),
        responsible,
        types: owned(v, "type").into_iter().collect(),
        phone: owned(v, "phone"),
        email: None,
        website: owned(v, "website").or_else(|| owned(v, "domain")),
        address,
        extra: extra(
            v,
            &[
                "name",
                "hubspot_owner_id",
                "type",
                "phone",
                "website",
                "domain",
                "address",
                "city",
                "zip",
                "state",
                "country",
                "hubspot_team_id",
            ],
        ),
    })
}

/// A HubSpot contact with the ids of the companies it is associated with.
pub fn contact(v: &Value, companies: &[String], m: &Mapping) -> Option<Contact> {
    let id = id_of(v)?;
    let mut emails: Vec<Email> = owned(v, "email")
        .into_iter()
        .map(|address| Email {
            address,
            kind: AddressKind::Work,
        })
        .collect();
    if let Some(more) = prop(v, "hs_additional_emails") {
        for a in more.split(';').map(str::trim).filter(|a| !a.is_empty()) {
            emails.push(Email {
                address: a.to_owned(),
                kind: AddressKind::Other,
            });
        }
    }
    let phones: Vec<Phone> = [
        ("phone", PhoneKind::Work),
        ("mobilephone", PhoneKind::Mobile),
        ("fax", PhoneKind::Fax),
    ]
    .into_iter()
    .filter_map(|(p, kind)| owned(v, p).map(|number| Phone { number, kind }))
    .collect();
    let has_address = ["address", "city", "zip", "state", "country"]
        .iter()
        .any(|p| prop(v, p).is_some());
    let custom = |f: ContactField| m.custom_property(f).and_then(|p| owned(v, p));
    let mapped: Vec<&str> = CONTACT_PROPERTIES
        .iter()
        .copied()
        .chain(m.custom.values().map(String::as_str))
        .collect();
    let mut extra = extra(v, &mapped);
    if companies.is_empty() {
        if let Some(c) = owned(v, "company") {
            extra.insert("company_name".into(), Value::String(c));
        }
    }
    extra.remove("company");
    Some(Contact {
        id: ContactId::from(id.as_str()),
        companies: companies
            .iter()
            .map(|c| CompanyId::from(c.as_str()))
            .collect(),
        subsystems: team_of(v),
        salutation: owned(v, "salutation"),
        title: custom(ContactField::Title),
        first_name: owned(v, "firstname"),
        middle_name: custom(ContactField::MiddleName),
        last_name: owned(v, "lastname"),
        job_title: owned(v, "jobtitle"),
        department: custom(ContactField::Department),
        emails,
        phones,
        addresses: if has_address {
            vec![PostalAddress {
                kind: AddressKind::Work,
                street: owned(v, "address"),
                city: owned(v, "city"),
                postal_code: owned(v, "zip"),
                region: owned(v, "state"),
                country: owned(v, "country"),
            }]
        } else {
            Vec::new()
        },
        websites: owned(v, "website").into_iter().collect(),
        // `YYYY-MM-DD` (HubSpot's date properties), possibly followed by a time; anything
        // else is no birthday.
        birthday: owned(v, "date_of_birth")
            .and_then(|d| d.get(..10).map(str::to_owned))
            .filter(|d| crate::domain::dataset::check_date(d).is_ok()),
        notes: custom(ContactField::Notes),
        categories: Vec::new(),
        owner: owned(v, "hubspot_owner_id").map(|o| UserId::from(o.as_str())),
        types: owned(v, "lifecyclestage").into_iter().collect(),
        extra,
    })
}

/// A HubSpot deal as a lead (the rule "contacts of leads the user owns"): responsible =
/// `hubspot_owner_id`, contacts and company from its associations, status from its stage.
pub fn deal(v: &Value, contacts: &[String], companies: &[String], m: &Mapping) -> Option<Lead> {
    let id = id_of(v)?;
    let stage = prop(v, "dealstage").unwrap_or("");
    let status = if m.won_stages.iter().any(|s| s == stage) {
        "won"
    } else if m.lost_stages.iter().any(|s| s == stage) {
        "lost"
    } else {
        "open"
    };
    let owner = owned(v, "hubspot_owner_id").map(|o| UserId::from(o.as_str()));
    // A closed deal that is not to count keeps its owner out of the rule: nobody is
    // responsible for it (the owner stays visible as an extra field).
    let counted = status == "open" || m.count_closed_deals;
    let mut extra = Map::new();
    if !counted {
        if let Some(o) = &owner {
            extra.insert("hubspot_owner_id".into(), Value::String(o.as_str().into()));
        }
    }
    Some(Lead {
        id: LeadId::from(id.as_str()),
        name: owned(v, "dealname").unwrap_or_default(),
        subsystems: team_of(v),
        responsible: owner.filter(|_| counted),
        contacts: contacts
            .iter()
            .map(|c| ContactId::from(c.as_str()))
            .collect(),
        company: companies.first().map(|c| CompanyId::from(c.as_str())),
        status: Some(status.into()),
        extra,
    })
}

fn text(s: &Option<String>) -> Value {
    s.clone().map(Value::String).unwrap_or(Value::Null)
}

/// The HubSpot properties that make a contact hold `new`'s values of the `changed` fields:
/// the body of a PATCH (or, with every field, of a create). Fields HubSpot has no place for
/// are never here: [`capabilities`] refuses them before a write is planned.
pub fn contact_properties(
    new: &Contact,
    changed: &[ContactField],
    m: &Mapping,
) -> Map<String, Value> {
    let mut p = Map::new();
    for f in changed {
        let value = match f {
            ContactField::Title => &new.title,
            ContactField::MiddleName => &new.middle_name,
            ContactField::Department => &new.department,
            ContactField::Notes => &new.notes,
            _ => continue,
        };
        if let Some(name) = m.custom_property(*f) {
            p.insert(name.to_owned(), text(value));
        }
    }
    let first_of = |kind: PhoneKind| {
        new.phones
            .iter()
            .find(|x| x.kind == kind)
            .map(|x| x.number.clone())
    };
    for f in changed {
        match f {
            ContactField::FirstName => {
                p.insert("firstname".into(), text(&new.first_name));
            }
            ContactField::LastName => {
                p.insert("lastname".into(), text(&new.last_name));
            }
            ContactField::Salutation => {
                p.insert("salutation".into(), text(&new.salutation));
            }
            ContactField::JobTitle => {
                p.insert("jobtitle".into(), text(&new.job_title));
            }
            ContactField::Emails => {
                p.insert(
                    "email".into(),
                    text(&new.emails.first().map(|e| e.address.clone())),
                );
                let more: Vec<&str> = new
                    .emails
                    .iter()
                    .skip(1)
                    .map(|e| e.address.as_str())
                    .collect();
                p.insert(
                    "hs_additional_emails".into(),
                    if more.is_empty() {
                        Value::Null
                    } else {
                        Value::String(more.join(";"))
                    },
                );
            }
            ContactField::Phones => {
                p.insert("phone".into(), text(&first_of(PhoneKind::Work)));
                p.insert("mobilephone".into(), text(&first_of(PhoneKind::Mobile)));
                p.insert("fax".into(), text(&first_of(PhoneKind::Fax)));
            }
            ContactField::Addresses => {
                let a = new.addresses.first().cloned().unwrap_or_default();
                p.insert("address".into(), text(&a.street));
                p.insert("city".into(), text(&a.city));
                p.insert("zip".into(), text(&a.postal_code));
                p.insert("state".into(), text(&a.region));
                p.insert("country".into(), text(&a.country));
            }
            ContactField::Websites => {
                p.insert("website".into(), text(&new.websites.first().cloned()));
            }
            ContactField::Birthday => {
                p.insert("date_of_birth".into(), text(&new.birthday));
            }
            ContactField::Owner => {
                p.insert(
                    "hubspot_owner_id".into(),
                    text(&new.owner.as_ref().map(|o| o.as_str().to_owned())),
                );
            }
            // Companies are associations, not properties; the rest HubSpot cannot hold.
            _ => {}
        }
    }
    p
}

/// What a HubSpot portal holds of a contact: no middle name, academic title, department,
/// notes or categories among the standard properties crmgate maps; one work, one mobile and
/// one fax number; one address; one web site. Contacts are written; the rest is HubSpot's.
pub fn capabilities(m: &Mapping) -> Capabilities {
    Capabilities {
        crm: "HubSpot",
        writable: vec![Kind::Contact],
        unstorable: [
            ContactField::Title,
            ContactField::MiddleName,
            ContactField::Department,
            ContactField::Notes,
            ContactField::Categories,
            ContactField::Types,
            ContactField::Subsystems,
        ]
        .into_iter()
        .filter(|f| m.custom_property(*f).is_none())
        .collect(),
        max_values: vec![
            (Multi::Websites, 1),
            (Multi::Addresses, 1),
            (Multi::Phones(PhoneKind::Work), 1),
            (Multi::Phones(PhoneKind::Mobile), 1),
            (Multi::Phones(PhoneKind::Fax), 1),
            (Multi::Phones(PhoneKind::Home), 0),
            (Multi::Phones(PhoneKind::Other), 0),
        ],
        address_region: true,
        create_needs_company: false,
        keeps_sign_in: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hs_contact() -> Value {
        json!({"id": "501", "archived": false, "createdAt": "2026-11-01T08:00:00.000Z",
            "updatedAt": "2026-11-02T08:00:00.000Z",
            "properties": {"firstname": "Ada", "lastname": "Lovelace", "email": "ada@acme.test",
                "hs_additional_emails": "a.l@home.test;ada@old.test", "phone": "+44 20 1",
                "mobilephone": "+44 7700 1", "fax": null, "jobtitle": "Analyst",
                "city": "London", "country": "GB", "website": "https://ada.test",
                "date_of_birth": "1815-12-10", "hubspot_owner_id": "77", "lifecyclestage": "customer",
                "company": "Acme Ltd", "favourite_engine": "analytical", "hs_object_id": "501"}})
    }

    #[test]
    fn a_contact_maps_with_its_associations_and_keeps_the_rest() {
        let c = contact(&hs_contact(), &["9".into()], &Mapping::default()).expect("maps");
        assert_eq!(c.id.as_str(), "501");
        assert_eq!(c.companies, vec![CompanyId::from("9")]);
        assert_eq!(c.emails.len(), 3);
        assert_eq!(c.emails[0].address, "ada@acme.test");
        assert_eq!(c.phones.len(), 2, "the null fax is no number");
        assert_eq!(c.addresses[0].city.as_deref(), Some("London"));
        assert_eq!(c.owner.as_ref().map(UserId::as_str), Some("77"));
        assert_eq!(c.types, vec!["customer"]);
        assert_eq!(c.extra.get("favourite_engine"), Some(&json!("analytical")));
        assert!(
            !c.extra.contains_key("company"),
            "the company is the association"
        );
        // A date of birth that is no date (or cuts a character in two) is no birthday.
        for odd in [
            "1815-12-\u{43606}10",
            "10.12.1815",
            "1815-12-10T00:00:00Z",
            "1815",
        ] {
            let mut v = hs_contact();
            v["properties"]["date_of_birth"] = json!(odd);
            let c = contact(&v, &[], &Mapping::default()).expect("maps");
            let want = odd
                .starts_with("1815-12-10")
                .then(|| "1815-12-10".to_owned());
            assert_eq!(c.birthday, want, "{odd}");
        }
        let alone = contact(&hs_contact(), &[], &Mapping::default()).expect("maps");
        assert_eq!(alone.extra.get("company_name"), Some(&json!("Acme Ltd")));
        assert!(
            contact(&json!({"properties": {}}), &[], &Mapping::default()).is_none(),
            "no id"
        );
    }

    #[test]
    fn owners_become_users_and_teams_subsystems() {
        let owners = vec![
            json!({"id": "77", "email": "Ada@Acme.test", "firstName": "Ada", "lastName": "L",
                "type": "PERSON", "archived": false,
                "teams": [{"id": "t2", "name": "London", "primary": true}, {"id": "t1", "name": "Berlin", "primary": false}]}),
            json!({"id": "78", "email": "queue@acme.test", "type": "QUEUE", "teams": []}),
            json!({"id": "79", "email": "gone@acme.test", "type": "PERSON", "archived": true, "teams": [{"id": "t1", "name": "Berlin"}]}),
        ];
        let u = user(&owners[0]).expect("a person");
        assert_eq!(
            (u.login.as_str(), u.name.as_str()),
            ("ada@acme.test", "Ada L")
        );
        assert_eq!(
            u.subsystems,
            vec![SubsystemId::from("t1"), SubsystemId::from("t2")]
        );
        assert!(u.active);
        assert!(user(&owners[1]).is_none(), "queues are no users");
        assert!(
            !user(&owners[2]).expect("a person").active,
            "archived: cannot sign in"
        );
        let t = teams(&owners);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].name, "London");
    }

    #[test]
    fn companies_and_deals_carry_the_ownership_rules() {
        let m = Mapping {
            extra_company_owners: vec!["account_manager".into()],
            ..Mapping::default()
        };
        let k = company(
            &json!({"id": "9", "properties": {"name": "Acme", "hubspot_owner_id": "77",
                "account_manager": "80", "type": "PROSPECT", "hubspot_team_id": "t1"}}),
            &m,
        )
        .expect("maps");
        assert_eq!(k.responsible, vec![UserId::from("77"), UserId::from("80")]);
        assert_eq!(k.types, vec!["PROSPECT"]);
        assert_eq!(k.subsystems, vec![SubsystemId::from("t1")]);
        for (stage, status) in [
            ("closedwon", "won"),
            ("closedlost", "lost"),
            ("qualifiedtobuy", "open"),
        ] {
            let d = deal(
                &json!({"id": "3", "properties": {"dealname": "Big", "dealstage": stage, "hubspot_owner_id": "77"}}),
                &["501".into()],
                &["9".into()],
                &m,
            )
            .expect("maps");
            assert_eq!(d.status.as_deref(), Some(status));
            assert_eq!(d.responsible.as_ref().map(UserId::as_str), Some("77"));
            assert_eq!(d.contacts, vec![ContactId::from("501")]);
            // Closed deals not counted: nobody is responsible for them, open ones unchanged.
            let only_open = Mapping {
                count_closed_deals: false,
                ..m.clone()
            };
            let d = deal(
                &json!({"id": "3", "properties": {"dealname": "Big", "dealstage": stage, "hubspot_owner_id": "77"}}),
                &["501".into()],
                &["9".into()],
                &only_open,
            )
            .expect("maps");
            let want = (status == "open").then_some("77");
            assert_eq!(d.responsible.as_ref().map(UserId::as_str), want, "{stage}");
        }
    }

    #[test]
    fn a_patch_holds_exactly_the_changed_fields() {
        let old = contact(&hs_contact(), &["9".into()], &Mapping::default()).expect("maps");
        let mut new = old.clone();
        new.job_title = Some("Engineer".into());
        new.phones.retain(|p| p.kind != PhoneKind::Mobile);
        let changed = old.changed_fields(&new);
        let p = contact_properties(&new, &changed, &Mapping::default());
        assert_eq!(
            p,
            json!({"jobtitle": "Engineer", "phone": "+44 20 1", "mobilephone": null, "fax": null})
                .as_object()
                .cloned()
                .unwrap_or_default()
        );
        assert!(contact_properties(&new, &[], &Mapping::default()).is_empty());
        // What HubSpot cannot hold is refused when the write is planned.
        let mut noted = old.clone();
        noted.notes = Some("x".into());
        assert_eq!(
            capabilities(&Mapping::default()).check_contact(&old, &noted)[0].path,
            "notes"
        );
        // Mapped to a custom property, notes are read and written.
        let mut m = Mapping::default();
        m.custom.insert("notes".into(), "crm_notes".into());
        assert!(capabilities(&m).check_contact(&old, &noted).is_empty());
        assert_eq!(
            contact_properties(&noted, &[ContactField::Notes], &m),
            json!({"crm_notes": noted.notes})
                .as_object()
                .cloned()
                .unwrap_or_default()
        );
        let mut v = hs_contact();
        v["properties"]["crm_notes"] = json!("met at the fair");
        let c = contact(&v, &[], &m).expect("maps");
        assert_eq!(c.notes.as_deref(), Some("met at the fair"));
        assert!(
            !c.extra.contains_key("crm_notes"),
            "mapped, so no extra field"
        );
    }
}
