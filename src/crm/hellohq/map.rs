//! helloHQ v1 entities (PascalCase JSON, as the v1 Swagger names them) to crmgate records and
//! back. Pure: no I/O. Field mapping:
//!
//! | helloHQ | crmgate |
//! |---|---|
//! | `ContactPerson.FirstName/LastName/Salutation/Title/Position` | first/last name, salutation, title, job title |
//! | `ContactPerson.PhoneLandline` / `PhoneMobile` | first work / first mobile phone |
//! | `ContactPerson.DefaultAddress.Email/Website` | first e-mail / first web site |
//! | `ContactPerson.DefaultAddress.Street+HouseNumber/ZipCode/City/Country` | first (work) address |
//! | `ContactPerson.CompanyId`, `Birthdate` | company, birthday |
//! | `Company.ResponsibleUsers[].Id/Subsystems[].Id/CompanyTypes[].Name` | responsible, subsystems, types |
//! | `Project.Members[].UserId/ContactPersons[].Id`, `Lead.ResponsibleUserId/ContactPersons[].Id` | team, contacts, responsible |
//! | `User.EMailWork` (or `UserName`), `UserGroups[].Name` matching a subsystem's name | login, subsystems |
//!
//! The entity's `UpdatedOn` is kept in the record as `hq_updated_on`, so a re-read of an
//! unchanged entity yields an equal record (de-duplication on id and `UpdatedOn`) and a write
//! can tell whether helloHQ changed since crmgate last saw the entity.

use crate::domain::capabilities::{Capabilities, ContactField, Multi};
use crate::domain::dataset::Problem;
use crate::domain::*;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// Key under which a record keeps its helloHQ `UpdatedOn`.
pub const UPDATED_ON: &str = "hq_updated_on";

/// The v1 entity sets crmgate reads, in dependency order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Set {
    /// `Subsystem`.
    Subsystem,
    /// `Users`.
    Users,
    /// `Companies`.
    Companies,
    /// `ContactPersons`.
    ContactPersons,
    /// `Projects`.
    Projects,
    /// `Leads`.
    Leads,
}

impl Set {
    /// All sets, referenced ones first.
    pub const ALL: [Set; 6] = [
        Set::Subsystem,
        Set::Users,
        Set::Companies,
        Set::ContactPersons,
        Set::Projects,
        Set::Leads,
    ];
    /// The sets whose membership collections may change without `UpdatedOn`.
    pub const MEMBERSHIP: [Set; 3] = [Set::Companies, Set::Projects, Set::Leads];

    /// The OData entity set name.
    pub fn name(self) -> &'static str {
        match self {
            Set::Subsystem => "Subsystem",
            Set::Users => "Users",
            Set::Companies => "Companies",
            Set::ContactPersons => "ContactPersons",
            Set::Projects => "Projects",
            Set::Leads => "Leads",
        }
    }

    /// The `$expand` that brings the fields crmgate maps.
    pub fn expand(self) -> Option<&'static str> {
        match self {
            Set::Subsystem => None,
            Set::Users => Some("UserGroups"),
            Set::Companies => Some("ResponsibleUsers,Subsystems,CompanyTypes,DefaultAddress"),
            Set::ContactPersons => Some("DefaultAddress"),
            Set::Projects => Some("Members,ContactPersons,Subsystems"),
            Set::Leads => Some("ContactPersons,Subsystems,Status"),
        }
    }

    /// The v2 REST resource, for the sets where v2 carries everything crmgate maps.
    /// Not the others: v2 has no leads, its contact persons lack `companyId`, its users lack
    /// groups, and its projects lack members and contacts.
    pub fn v2_name(self) -> Option<&'static str> {
        match self {
            Set::Subsystem => Some("Subsystems"),
            Set::Companies => Some("Companies"),
            _ => None,
        }
    }

    /// The crmgate kind.
    pub fn kind(self) -> Kind {
        match self {
            Set::Subsystem => Kind::Subsystem,
            Set::Users => Kind::User,
            Set::Companies => Kind::Company,
            Set::ContactPersons => Kind::Contact,
            Set::Projects => Kind::Project,
            Set::Leads => Kind::Lead,
        }
    }

    /// The set of a kind.
    pub fn of(kind: Kind) -> Set {
        match kind {
            Kind::Subsystem => Set::Subsystem,
            Kind::User => Set::Users,
            Kind::Company => Set::Companies,
            Kind::Contact => Set::ContactPersons,
            Kind::Project => Set::Projects,
            Kind::Lead => Set::Leads,
        }
    }

    /// The set named by a deleted-entity event's `DatabaseObject`.
    pub fn from_database_object(s: &str) -> Option<Set> {
        match s {
            "Subsystem" => Some(Set::Subsystem),
            "User" | "Users" => Some(Set::Users),
            "Company" | "Companies" => Some(Set::Companies),
            "ContactPerson" | "ContactPersons" => Some(Set::ContactPersons),
            "Project" | "Projects" => Some(Set::Projects),
            "Lead" | "Leads" => Some(Set::Leads),
            _ => None,
        }
    }
}

pub use crate::crm::mirror::Alias;

/// What mapping needs besides the entity.
#[derive(Default)]
pub struct Ctx {
    /// helloHQ contact id → alias.
    pub aliases: HashMap<String, Alias>,
    /// Subsystem name → id (for users' groups).
    pub subsystems_by_name: HashMap<String, String>,
    /// Now, unix seconds (for `LeavingDate`).
    pub now: i64,
}

impl Ctx {
    fn contact_id(&self, hq: &str) -> String {
        match self.aliases.get(hq) {
            Some(a) => a.local.clone(),
            None => hq.to_owned(),
        }
    }
}

/// An entity's `Id` as a string.
pub fn id_of(v: &Value) -> Option<String> {
    match v.get("Id")? {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

fn s(v: &Value, k: &str) -> Option<String> {
    match v.get(k)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn ids(v: &Value, k: &str, field: &str) -> Vec<String> {
    let mut out: Vec<String> = v
        .get(k)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|x| s(x, field)).collect())
        .unwrap_or_default();
    out.sort();
    out.dedup();
    out
}

fn extra(v: &Value) -> Extra {
    let mut m = Map::new();
    if let Some(u) = s(v, "UpdatedOn") {
        // One canonical form, whichever API generation wrote it.
        let u = parse_time(&u).map(format_time).unwrap_or(u);
        m.insert(UPDATED_ON.into(), Value::String(u));
    }
    m
}

fn pascal(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let mut c = k.chars();
                    let k = match c.next() {
                        Some(f) => f.to_uppercase().chain(c).collect(),
                        None => k,
                    };
                    (k, pascal(v))
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(pascal).collect()),
        other => other,
    }
}

/// A v2 entity (camelCase) in the v1 shape the mapping reads. v2 company responsible users
/// are link objects (`userId`); v2 company subsystems carry no id, only the name, which
/// mapping resolves through the subsystems it knows.
pub fn v2_to_v1(set: Set, v: Value) -> Value {
    let mut out = pascal(v);
    if set == Set::Companies {
        if let Some(a) = out
            .get_mut("ResponsibleUsers")
            .and_then(Value::as_array_mut)
        {
            for u in a.iter_mut() {
                if let Some(id) = u.get("UserId").cloned() {
                    *u = json!({ "Id": id });
                }
            }
        }
    }
    out
}

/// Subsystem ids of a company, project or lead: by id, or by name where only the name is given.
fn subsystem_ids(v: &Value, ctx: &Ctx) -> Vec<SubsystemId> {
    let mut out: Vec<SubsystemId> = v
        .get("Subsystems")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| {
                    s(x, "Id").or_else(|| ctx.subsystems_by_name.get(&s(x, "Name")?).cloned())
                })
                .map(|i| SubsystemId::from(i.as_str()))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out.dedup();
    out
}

/// Parses an OData date-time (`2026-11-01T08:00:00Z`, fractions and offsets allowed) into
/// unix seconds.
pub fn parse_time(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &t[19..];
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        rest = &r[n..];
    }
    let offset = match rest {
        "" | "Z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) => {
            let oh: i64 = o.get(1..3)?.parse().ok()?;
            let om: i64 = o.get(4..6)?.parse().ok()?;
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    let days = crate::domain::time::days_from_civil(y, mo, d);
    Some(days * 86_400 + h * 3600 + mi * 60 + se - offset)
}

/// Formats unix seconds as an OData date-time literal.
pub fn format_time(secs: i64) -> String {
    crate::domain::time::system_time(secs.max(0) as u64)
}

/// Maps one helloHQ entity of `set` to a crmgate record.
pub fn from_hq(set: Set, v: &Value, ctx: &Ctx) -> Result<Record, String> {
    let id = id_of(v).ok_or_else(|| format!("{}: an entity without Id", set.name()))?;
    Ok(match set {
        Set::Subsystem => Record::Subsystem(Subsystem {
            id: SubsystemId::from(id.as_str()),
            name: s(v, "Name").unwrap_or_else(|| id.clone()),
            extra: extra(v),
        }),
        Set::Users => {
            let login = s(v, "EMailWork")
                .or_else(|| s(v, "UserName"))
                .unwrap_or_else(|| format!("hq-user-{id}"))
                .to_lowercase();
            let name = [s(v, "FirstName"), s(v, "LastName")]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            let mut subsystems: Vec<SubsystemId> = v
                .get("UserGroups")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|g| s(g, "Name"))
                        .filter_map(|n| ctx.subsystems_by_name.get(&n))
                        .map(|i| SubsystemId::from(i.as_str()))
                        .collect()
                })
                .unwrap_or_default();
            subsystems.sort();
            subsystems.dedup();
            let active = match s(v, "LeavingDate").and_then(|d| parse_time(&d)) {
                Some(t) => t > ctx.now,
                None => true,
            };
            Record::User(User {
                id: UserId::from(id.as_str()),
                name: if name.is_empty() { login.clone() } else { name },
                login,
                password: None,
                password_hash: None,
                subsystems,
                role: Role::default(),
                active,
                extra: extra(v),
            })
        }
        Set::Companies => {
            let addr = v.get("DefaultAddress").filter(|a| a.is_object());
            let mut types: Vec<String> = v
                .get("CompanyTypes")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|t| s(t, "Name")).collect())
                .unwrap_or_default();
            types.sort();
            types.dedup();
            Record::Company(Company {
                id: CompanyId::from(id.as_str()),
                name: s(v, "Name").unwrap_or_default(),
                subsystems: subsystem_ids(v, ctx),
                responsible: ids(v, "ResponsibleUsers", "Id")
                    .iter()
                    .map(|x| UserId::from(x.as_str()))
                    .collect(),
                types,
                phone: addr.and_then(|a| s(a, "Phone")),
                email: addr.and_then(|a| s(a, "Email")),
                website: addr.and_then(|a| s(a, "Website")),
                address: addr.and_then(postal),
                extra: extra(v),
            })
        }
        Set::ContactPersons => {
            let addr = v.get("DefaultAddress").filter(|a| a.is_object());
            let mut phones = Vec::new();
            if let Some(p) = s(v, "PhoneLandline") {
                phones.push(Phone {
                    number: p,
                    kind: PhoneKind::Work,
                });
            }
            if let Some(p) = s(v, "PhoneMobile") {
                phones.push(Phone {
                    number: p,
                    kind: PhoneKind::Mobile,
                });
            }
            let alias = ctx.aliases.get(&id);
            Record::Contact(Contact {
                id: ContactId::from(ctx.contact_id(&id).as_str()),
                companies: s(v, "CompanyId")
                    .map(|c| CompanyId::from(c.as_str()))
                    .into_iter()
                    .collect(),
                salutation: s(v, "Salutation"),
                title: s(v, "Title"),
                first_name: s(v, "FirstName"),
                last_name: s(v, "LastName"),
                job_title: s(v, "Position"),
                emails: addr
                    .and_then(|a| s(a, "Email"))
                    .map(|e| Email {
                        address: e,
                        kind: AddressKind::Work,
                    })
                    .into_iter()
                    .collect(),
                phones,
                addresses: addr.and_then(postal).into_iter().collect(),
                websites: addr.and_then(|a| s(a, "Website")).into_iter().collect(),
                birthday: s(v, "Birthdate").and_then(|b| {
                    let d = b.get(..10)?;
                    parse_time(&format!("{d}T00:00:00Z")).map(|_| d.to_owned())
                }),
                owner: alias.and_then(|a| a.owner.as_deref()).map(UserId::from),
                extra: {
                    let mut e = extra(v);
                    if alias.is_some() {
                        e.insert("hq_id".into(), Value::String(id.clone()));
                    }
                    e
                },
                subsystems: alias
                    .map(|a| {
                        a.subsystems
                            .iter()
                            .map(|s| SubsystemId::from(s.as_str()))
                            .collect()
                    })
                    .unwrap_or_default(),
                ..Default::default()
            })
        }
        Set::Projects => Record::Project(Project {
            id: ProjectId::from(id.as_str()),
            name: s(v, "Name").unwrap_or_default(),
            subsystems: subsystem_ids(v, ctx),
            team: ids(v, "Members", "UserId")
                .iter()
                .map(|x| UserId::from(x.as_str()))
                .collect(),
            responsible: s(v, "ResponsibleUserId").map(|x| UserId::from(x.as_str())),
            contacts: contact_refs(v, ctx),
            company: s(v, "CompanyId").map(|x| CompanyId::from(x.as_str())),
            extra: extra(v),
        }),
        Set::Leads => Record::Lead(Lead {
            id: LeadId::from(id.as_str()),
            name: s(v, "Name").unwrap_or_default(),
            subsystems: subsystem_ids(v, ctx),
            responsible: s(v, "ResponsibleUserId").map(|x| UserId::from(x.as_str())),
            contacts: contact_refs(v, ctx),
            company: s(v, "CompanyId").map(|x| CompanyId::from(x.as_str())),
            status: v
                .get("Status")
                .and_then(|st| s(st, "Type"))
                .map(|t| match t.as_str() {
                    "Open" => "open".to_owned(),
                    "Successful" => "won".to_owned(),
                    "Unsuccessful" => "lost".to_owned(),
                    _ => t,
                }),
            extra: extra(v),
        }),
    })
}

fn contact_refs(v: &Value, ctx: &Ctx) -> Vec<ContactId> {
    let mut out: Vec<ContactId> = ids(v, "ContactPersons", "Id")
        .iter()
        .map(|x| ContactId::from(ctx.contact_id(x).as_str()))
        .collect();
    out.sort();
    out
}

fn postal(a: &Value) -> Option<PostalAddress> {
    let street = match (s(a, "Street"), s(a, "HouseNumber")) {
        (Some(st), Some(n)) => Some(format!("{st} {n}")),
        (st, None) => st,
        (None, Some(n)) => Some(n),
    };
    let p = PostalAddress {
        kind: AddressKind::Work,
        street,
        city: s(a, "City"),
        postal_code: s(a, "ZipCode"),
        region: None,
        country: s(a, "Country"),
    };
    (p.street.is_some() || p.city.is_some() || p.postal_code.is_some() || p.country.is_some())
        .then_some(p)
}

fn first_phone(c: &Contact, kind: PhoneKind) -> Option<&str> {
    c.phones
        .iter()
        .find(|p| p.kind == kind)
        .map(|p| p.number.as_str())
}

fn set_opt(obj: &mut Map<String, Value>, k: &str, v: Option<&str>) {
    obj.insert(
        k.into(),
        v.map(|x| Value::String(x.to_owned()))
            .unwrap_or(Value::Null),
    );
}

fn problem(path: &str, message: &str) -> Problem {
    Problem {
        path: path.into(),
        message: message.into(),
    }
}

/// What a helloHQ v1 contact person can hold: no middle name, department, notes, categories,
/// types or own subsystems; one e-mail, web site and address (its `DefaultAddress`), one
/// company, one landline and one mobile number; addresses without a region. Contact persons
/// are created for a company. crmgate writes contact persons, and users' sign-in data.
pub fn capabilities() -> Capabilities {
    Capabilities {
        crm: "helloHQ",
        writable: vec![Kind::Contact],
        unstorable: vec![
            ContactField::MiddleName,
            ContactField::Department,
            ContactField::Notes,
            ContactField::Categories,
            ContactField::Types,
            ContactField::Subsystems,
        ],
        max_values: vec![
            (Multi::Emails, 1),
            (Multi::Websites, 1),
            (Multi::Addresses, 1),
            (Multi::Companies, 1),
            (Multi::Phones(PhoneKind::Work), 1),
            (Multi::Phones(PhoneKind::Mobile), 1),
            (Multi::Phones(PhoneKind::Home), 0),
            (Multi::Phones(PhoneKind::Fax), 0),
            (Multi::Phones(PhoneKind::Other), 0),
        ],
        address_region: false,
        create_needs_company: true,
        keeps_sign_in: false,
    }
}

/// Writes the fields of `new` that differ from `old` onto `base`, a helloHQ ContactPerson
/// as read from helloHQ (or `{}` for a create). Fields `new` leaves as they were keep
/// helloHQ's exact text; fields helloHQ cannot hold are refused, never dropped.
pub fn contact_onto(old: &Contact, new: &Contact, base: &mut Value) -> Result<(), Vec<Problem>> {
    let mut problems = capabilities().check_contact(old, new);
    let company_id = match new.companies.first() {
        Some(c) if old.companies.first() != Some(c) => match c.as_str().parse::<i64>() {
            Ok(n) => Some(Some(n)),
            Err(_) => {
                problems.push(problem("companies[0]", "not a helloHQ company id"));
                None
            }
        },
        None if !old.companies.is_empty() => Some(None),
        _ => None,
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    if !base.is_object() {
        *base = json!({});
    }
    let Some(obj) = base.as_object_mut() else {
        return Ok(());
    };
    let scalars: [(&str, &Option<String>, &Option<String>); 5] = [
        ("FirstName", &old.first_name, &new.first_name),
        ("LastName", &old.last_name, &new.last_name),
        ("Salutation", &old.salutation, &new.salutation),
        ("Title", &old.title, &new.title),
        ("Position", &old.job_title, &new.job_title),
    ];
    for (k, o, n) in scalars {
        if o != n {
            set_opt(obj, k, n.as_deref());
        }
    }
    if old.birthday != new.birthday {
        set_opt(obj, "Birthdate", new.birthday.as_deref());
    }
    for (k, kind) in [
        ("PhoneLandline", PhoneKind::Work),
        ("PhoneMobile", PhoneKind::Mobile),
    ] {
        if first_phone(old, kind) != first_phone(new, kind) {
            set_opt(obj, k, first_phone(new, kind));
        }
    }
    if let Some(c) = company_id {
        obj.insert(
            "CompanyId".into(),
            c.map(Value::from).unwrap_or(Value::Null),
        );
    }
    let email = |c: &Contact| c.emails.first().map(|e| e.address.clone());
    let web = |c: &Contact| c.websites.first().cloned();
    let addr = |c: &Contact| c.addresses.first().cloned();
    if email(old) != email(new) || web(old) != web(new) || addr(old) != addr(new) {
        let da = obj.entry("DefaultAddress").or_insert_with(|| json!({}));
        if !da.is_object() {
            *da = json!({});
        }
        if let Some(da) = da.as_object_mut() {
            if email(old) != email(new) {
                set_opt(da, "Email", email(new).as_deref());
            }
            if web(old) != web(new) {
                set_opt(da, "Website", web(new).as_deref());
            }
            if addr(old) != addr(new) {
                let a = addr(new).unwrap_or_default();
                set_opt(da, "Street", a.street.as_deref());
                set_opt(da, "HouseNumber", None);
                set_opt(da, "ZipCode", a.postal_code.as_deref());
                set_opt(da, "City", a.city.as_deref());
                set_opt(da, "Country", a.country.as_deref());
            }
        }
    }
    Ok(())
}

/// True when helloHQ's `v` holds exactly the mapped fields of `want` (used to find out
/// whether a write whose answer was lost took effect).
pub fn contact_matches(v: &Value, want: &Contact, ctx: &Ctx) -> bool {
    match from_hq(Set::ContactPersons, v, ctx) {
        Ok(Record::Contact(mut got)) => {
            got.id = want.id.clone();
            got.owner = want.owner.clone();
            got.extra = want.extra.clone();
            got == *want
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_with_offsets_and_fractions() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_time("2018-01-26T18:15:00+01:00"),
            parse_time("2018-01-26T17:15:00Z")
        );
        assert_eq!(
            parse_time("2026-11-01T08:00:00.123Z"),
            parse_time("2026-11-01T08:00:00Z")
        );
        assert_eq!(
            format_time(parse_time("2026-11-01T08:00:05Z").unwrap_or(0)),
            "2026-11-01T08:00:05Z"
        );
        assert_eq!(parse_time("2026-13-01T08:00:00Z"), None);
        assert_eq!(parse_time("yesterday"), None);
    }

    fn cp() -> Value {
        json!({"Id": 7, "FirstName": "Anna", "LastName": "Berg", "Position": "CTO",
            "CompanyId": 3, "PhoneLandline": "030 1234567", "PhoneMobile": null,
            "Language": "DE", "SalutationForm": "Formal", "UpdatedOn": "2026-11-01T08:00:00Z",
            "DefaultAddress": {"Id": 9, "Email": "anna@acme.test", "Street": "Hauptstr.",
                "HouseNumber": "5", "City": "Berlin", "ZipCode": "10115", "Country": "DE",
                "Description": "kept"}})
    }

    #[test]
    fn contact_round_trip_changes_only_what_changed() {
        let ctx = Ctx::default();
        let Ok(Record::Contact(old)) = from_hq(Set::ContactPersons, &cp(), &ctx) else {
            panic!("maps")
        };
        assert_eq!(old.emails[0].address, "anna@acme.test");
        assert_eq!(old.addresses[0].street.as_deref(), Some("Hauptstr. 5"));
        assert_eq!(old.companies, vec![CompanyId::from("3")]);
        let mut new = old.clone();
        new.job_title = Some("CEO".into());
        new.phones.push(Phone {
            number: "+49 171 1".into(),
            kind: PhoneKind::Mobile,
        });
        let mut base = cp();
        contact_onto(&old, &new, &mut base).expect("applies");
        assert_eq!(base["Position"], "CEO");
        assert_eq!(base["PhoneMobile"], "+49 171 1");
        assert_eq!(base["PhoneLandline"], "030 1234567", "untouched text kept");
        assert_eq!(base["Language"], "DE", "unmapped field kept");
        assert_eq!(
            base["DefaultAddress"]["HouseNumber"], "5",
            "address untouched"
        );
        assert!(contact_matches(&base, &new, &ctx));
        assert!(!contact_matches(&cp(), &new, &ctx));
    }

    #[test]
    fn fields_hellohq_cannot_hold_are_refused() {
        let Ok(Record::Contact(old)) = from_hq(Set::ContactPersons, &cp(), &Ctx::default()) else {
            panic!("maps")
        };
        let mut new = old.clone();
        new.department = Some("R&D".into());
        new.emails.push(Email {
            address: "b@x.test".into(),
            kind: AddressKind::Home,
        });
        let mut base = cp();
        let e = contact_onto(&old, &new, &mut base).expect_err("refused");
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(base, cp(), "nothing applied");
    }
}
