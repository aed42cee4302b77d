//! Field-level patches of a CRM contact, addressed by the slots clients see (see `mapping`).
//! A patch changes only the values it names: a 4th e-mail, a 3rd work phone, a second
//! website, unmapped fields all survive. A phone number the client did not change keeps the
//! CRM's own text; one the client typed is stored in international form. Placeholder e-mail
//! addresses are never written.

use super::dataset::{check_date, check_email, check_phone};
use super::mapping::{
    display_phone, placeholder_email, AddressSlot, Card, FieldPolicy, MappingRules, PhoneSlot,
};
use super::model::{AddressKind, Contact, Email, Phone, PhoneKind, PostalAddress};
use std::fmt;

/// A part of a postal address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddrPart {
    /// Street.
    Street,
    /// City.
    City,
    /// State / region.
    State,
    /// Postal code.
    PostalCode,
    /// Country.
    Country,
}

/// A field a client can write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    /// Academic title.
    Title,
    /// Given name.
    GivenName,
    /// Middle name.
    MiddleName,
    /// Surname.
    Surname,
    /// Display name (derived from the names; a write of the same value is accepted).
    DisplayName,
    /// Company name.
    CompanyName,
    /// Job title.
    JobTitle,
    /// Department.
    Department,
    /// E-mail slot 1..=3.
    Email(u8),
    /// A phone slot.
    Phone(PhoneSlot),
    /// A part of an address slot.
    Address(AddressSlot, AddrPart),
    /// Web page.
    WebPage,
    /// Birthday.
    Birthday,
    /// Notes.
    Notes,
    /// Categories.
    Categories,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Email(n) => write!(f, "EmailAddress{n}"),
            Field::Phone(s) => f.write_str(s.key()),
            Field::Address(s, p) => write!(f, "{}Address.{p:?}", s.key()),
            other => write!(f, "{other:?}"),
        }
    }
}

/// One edit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edit {
    /// Set a value.
    Set(Field, String),
    /// Set the categories.
    SetList(Field, Vec<String>),
    /// Remove a value.
    Delete(Field),
}

impl Edit {
    /// The field edited.
    pub fn field(&self) -> Field {
        match self {
            Edit::Set(f, _) | Edit::SetList(f, _) | Edit::Delete(f) => *f,
        }
    }
}

/// Why an edit was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EditError {
    /// The field.
    pub field: Field,
    /// What is wrong (safe to show).
    pub message: String,
}

/// Longest value of a name-like field.
pub const MAX_TEXT: usize = 255;
/// Longest notes.
pub const MAX_NOTES: usize = 32 * 1024;
/// Most categories.
pub const MAX_CATEGORIES: usize = 50;

fn phone_kind(slot: PhoneSlot) -> PhoneKind {
    match slot {
        PhoneSlot::BusinessPhone | PhoneSlot::BusinessPhone2 => PhoneKind::Work,
        PhoneSlot::HomePhone | PhoneSlot::HomePhone2 => PhoneKind::Home,
        PhoneSlot::MobilePhone => PhoneKind::Mobile,
        PhoneSlot::BusinessFax => PhoneKind::Fax,
        PhoneSlot::OtherTelephone => PhoneKind::Other,
    }
}

/// Which CRM phone sits in a slot (same rule as the mapping).
fn phone_index(c: &Contact, slot: PhoneSlot) -> Option<usize> {
    let kind = phone_kind(slot);
    let nth = matches!(slot, PhoneSlot::BusinessPhone2 | PhoneSlot::HomePhone2) as usize;
    c.phones
        .iter()
        .enumerate()
        .filter(|(_, p)| p.kind == kind)
        .nth(nth)
        .map(|(i, _)| i)
}

/// Which CRM e-mail sits in slot n (1-based).
fn email_index(c: &Contact, n: u8) -> Option<usize> {
    c.emails
        .iter()
        .enumerate()
        .filter(|(_, e)| !e.address.trim().is_empty())
        .nth(n as usize - 1)
        .map(|(i, _)| i)
}

fn address_kind(slot: AddressSlot) -> AddressKind {
    match slot {
        AddressSlot::Business => AddressKind::Work,
        AddressSlot::Home => AddressKind::Home,
        AddressSlot::Other => AddressKind::Other,
    }
}

fn text(field: Field, v: &str, max: usize) -> Result<Option<String>, EditError> {
    let v = v.trim();
    if v.chars().count() > max {
        return Err(EditError {
            field,
            message: format!("longer than {max} characters"),
        });
    }
    if v.chars()
        .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
    {
        return Err(EditError {
            field,
            message: "contains control characters".into(),
        });
    }
    Ok((!v.is_empty()).then(|| v.to_owned()))
}

/// The value a card shows in a field (for three-way merges of stale writes).
pub fn card_value(c: &Card, f: Field) -> Vec<String> {
    let one = |v: &Option<String>| v.clone().into_iter().collect::<Vec<_>>();
    match f {
        Field::Title => one(&c.title),
        Field::GivenName => one(&c.given_name),
        Field::MiddleName => one(&c.middle_name),
        Field::Surname => one(&c.surname),
        Field::DisplayName => vec![c.display_name.clone()],
        Field::CompanyName => one(&c.company_name),
        Field::JobTitle => one(&c.job_title),
        Field::Department => one(&c.department),
        Field::Email(n) => c
            .emails
            .iter()
            .filter(|e| e.index == n)
            .map(|e| e.address.clone())
            .collect(),
        Field::Phone(s) => c
            .phones
            .iter()
            .filter(|(k, _)| *k == s)
            .map(|(_, n)| n.clone())
            .collect(),
        Field::Address(s, p) => c
            .addresses
            .iter()
            .filter(|(k, _)| *k == s)
            .filter_map(|(_, a)| match p {
                AddrPart::Street => a.street.clone(),
                AddrPart::City => a.city.clone(),
                AddrPart::State => a.region.clone(),
                AddrPart::PostalCode => a.postal_code.clone(),
                AddrPart::Country => a.country.clone(),
            })
            .collect(),
        Field::WebPage => one(&c.web_page),
        Field::Birthday => one(&c.birthday),
        Field::Notes => one(&c.notes),
        Field::Categories => c.categories.clone(),
    }
}

/// Applies edits to a contact. All edits are checked first; on any error nothing is applied
/// and every error is returned. Returns the new record and the fields that really changed.
pub fn apply(
    c: &Contact,
    edits: &[Edit],
    rules: &MappingRules,
) -> Result<(Contact, Vec<Field>), Vec<EditError>> {
    let mut out = c.clone();
    let mut errors = Vec::new();
    let mut changed = Vec::new();
    // Removals are collected and done last, so slot positions stay those the client saw.
    let mut drop_emails: Vec<usize> = Vec::new();
    let mut drop_phones: Vec<usize> = Vec::new();
    let placeholder = rules
        .placeholder_domain
        .as_deref()
        .map(|d| placeholder_email(c.id.as_str(), d).to_lowercase());
    for e in edits {
        let field = e.field();
        let mut bad = |m: &str| {
            errors.push(EditError {
                field,
                message: m.to_owned(),
            })
        };
        let value = match e {
            Edit::Set(_, v) => Some(v.as_str()),
            _ => None,
        };
        let r: Result<bool, EditError> = (|| {
            Ok(match (field, e) {
                (
                    Field::Title
                    | Field::GivenName
                    | Field::MiddleName
                    | Field::Surname
                    | Field::JobTitle
                    | Field::Department,
                    _,
                ) => {
                    let v = match value {
                        Some(v) => text(field, v, MAX_TEXT)?,
                        None => None,
                    };
                    let slot = match field {
                        Field::Title => &mut out.title,
                        Field::GivenName => &mut out.first_name,
                        Field::MiddleName => &mut out.middle_name,
                        Field::Surname => &mut out.last_name,
                        Field::JobTitle => &mut out.job_title,
                        _ => &mut out.department,
                    };
                    let ch = *slot != v;
                    *slot = v;
                    ch
                }
                (Field::DisplayName, _) => false, // derived from the names
                (Field::CompanyName, _) => {
                    // Linking to a company is decided by the caller (it knows the user's scope);
                    // here the text is kept for contacts without a linked company.
                    let v = match value {
                        Some(v) => text(field, v, MAX_TEXT)?,
                        None => None,
                    };
                    let key = "company_name".to_owned();
                    let old = out
                        .extra
                        .get(&key)
                        .and_then(|x| x.as_str())
                        .map(str::to_owned);
                    match &v {
                        Some(s) => out.extra.insert(key, serde_json::Value::String(s.clone())),
                        None => out.extra.remove(&key),
                    };
                    old != v
                }
                (Field::Email(n), _) if !(1..=3).contains(&n) => {
                    return Err(EditError {
                        field,
                        message: "no such e-mail slot".into(),
                    })
                }
                (Field::Email(n), _) => {
                    let idx = email_index(c, n);
                    match value.map(str::trim) {
                        Some(v) if placeholder.as_deref() == Some(&v.to_lowercase()) => false,
                        Some("") => {
                            if let Some(i) = idx {
                                drop_emails.push(i);
                                true
                            } else {
                                false
                            }
                        }
                        Some(v) => {
                            check_email(v).map_err(|m| EditError { field, message: m })?;
                            match idx {
                                Some(i) if out.emails[i].address == v => false,
                                Some(i) => {
                                    out.emails[i].address = v.to_owned();
                                    true
                                }
                                None => {
                                    out.emails.push(Email {
                                        address: v.to_owned(),
                                        kind: AddressKind::Work,
                                    });
                                    true
                                }
                            }
                        }
                        None => {
                            if let Some(i) = idx {
                                drop_emails.push(i);
                                true
                            } else {
                                false
                            }
                        }
                    }
                }
                (Field::Phone(slot), _) => {
                    let idx = phone_index(c, slot);
                    match value.map(str::trim).filter(|v| !v.is_empty()) {
                        Some(v) => {
                            // Unchanged (as displayed, or as the CRM wrote it): keep the CRM text.
                            let same = idx.is_some_and(|i| {
                                let old = &c.phones[i].number;
                                old.trim() == v || display_phone(old, &rules.default_region) == v
                            });
                            if same {
                                false
                            } else {
                                check_phone(v).map_err(|m| EditError { field, message: m })?;
                                let stored = display_phone(v, &rules.default_region);
                                match idx {
                                    Some(i) => out.phones[i].number = stored,
                                    None => out.phones.push(Phone {
                                        number: stored,
                                        kind: phone_kind(slot),
                                    }),
                                }
                                true
                            }
                        }
                        None => {
                            if let Some(i) = idx {
                                drop_phones.push(i);
                                true
                            } else {
                                false
                            }
                        }
                    }
                }
                (Field::Address(slot, part), _) => {
                    let v = match value {
                        Some(v) => text(field, v, MAX_TEXT)?,
                        None => None,
                    };
                    let kind = address_kind(slot);
                    let pos = out.addresses.iter().position(|a| a.kind == kind);
                    let i = match (pos, &v) {
                        (Some(i), _) => i,
                        (None, None) => return Ok(false),
                        (None, Some(_)) => {
                            out.addresses.push(PostalAddress {
                                kind,
                                ..Default::default()
                            });
                            out.addresses.len() - 1
                        }
                    };
                    let a = &mut out.addresses[i];
                    let f = match part {
                        AddrPart::Street => &mut a.street,
                        AddrPart::City => &mut a.city,
                        AddrPart::State => &mut a.region,
                        AddrPart::PostalCode => &mut a.postal_code,
                        AddrPart::Country => &mut a.country,
                    };
                    let ch = *f != v;
                    *f = v;
                    ch
                }
                (Field::WebPage, _) => {
                    let v = match value {
                        Some(v) => text(field, v, 2048)?,
                        None => None,
                    };
                    match (v, out.websites.is_empty()) {
                        (Some(v), true) => {
                            out.websites.push(v);
                            true
                        }
                        (Some(v), false) => {
                            let ch = out.websites[0] != v;
                            out.websites[0] = v;
                            ch
                        }
                        (None, false) => {
                            out.websites.remove(0);
                            true
                        }
                        (None, true) => false,
                    }
                }
                (Field::Birthday, _) => {
                    if rules.birthday != FieldPolicy::Shown {
                        return Err(EditError {
                            field,
                            message: "the birthday is read-only here".into(),
                        });
                    }
                    let v = match value.map(str::trim).filter(|v| !v.is_empty()) {
                        Some(v) => {
                            let d = v.get(..10).unwrap_or(v);
                            check_date(d).map_err(|m| EditError { field, message: m })?;
                            Some(d.to_owned())
                        }
                        None => None,
                    };
                    let ch = out.birthday != v;
                    out.birthday = v;
                    ch
                }
                (Field::Notes, _) => {
                    if rules.notes != FieldPolicy::Shown {
                        return Err(EditError {
                            field,
                            message: "notes are read-only here".into(),
                        });
                    }
                    let v = match value {
                        Some(v) => text(field, v, MAX_NOTES)?,
                        None => None,
                    };
                    let ch = out.notes != v;
                    out.notes = v;
                    ch
                }
                (Field::Categories, Edit::SetList(_, list)) => {
                    if list.len() > MAX_CATEGORIES {
                        return Err(EditError {
                            field,
                            message: format!("more than {MAX_CATEGORIES} categories"),
                        });
                    }
                    let mut v = Vec::new();
                    for s in list {
                        if let Some(s) = text(field, s, MAX_TEXT)? {
                            v.push(s);
                        }
                    }
                    let ch = out.categories != v;
                    out.categories = v;
                    ch
                }
                (Field::Categories, Edit::Delete(_)) => {
                    let ch = !out.categories.is_empty();
                    out.categories.clear();
                    ch
                }
                (Field::Categories, Edit::Set(_, v)) => {
                    let v: Vec<String> = text(field, v, MAX_TEXT)?.into_iter().collect();
                    let ch = out.categories != v;
                    out.categories = v;
                    ch
                }
            })
        })();
        match r {
            Ok(true) => {
                if !changed.contains(&field) {
                    changed.push(field);
                }
            }
            Ok(false) => {}
            Err(err) => bad(&err.message),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    drop_emails.sort_unstable();
    drop_emails.dedup();
    for i in drop_emails.into_iter().rev() {
        out.emails.remove(i);
    }
    drop_phones.sort_unstable();
    drop_phones.dedup();
    for i in drop_phones.into_iter().rev() {
        out.phones.remove(i);
    }
    Ok((out, changed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact() -> Contact {
        Contact {
            id: "c1".into(),
            first_name: Some("Eva".into()),
            emails: (1..=4)
                .map(|i| Email {
                    address: format!("e{i}@x.example"),
                    kind: AddressKind::Work,
                })
                .collect(),
            phones: vec![
                Phone {
                    number: "030 1234567".into(),
                    kind: PhoneKind::Work,
                },
                Phone {
                    number: "030 2222222".into(),
                    kind: PhoneKind::Work,
                },
                Phone {
                    number: "030 3333333".into(),
                    kind: PhoneKind::Work,
                },
            ],
            websites: vec!["https://a.example".into(), "https://b.example".into()],
            ..Default::default()
        }
    }

    #[test]
    fn edit_of_first_email_keeps_the_fourth() {
        let r = MappingRules::default();
        let (c, ch) = apply(
            &contact(),
            &[Edit::Set(Field::Email(1), "new@x.example".into())],
            &r,
        )
        .expect("ok");
        assert_eq!(
            c.emails
                .iter()
                .map(|e| e.address.as_str())
                .collect::<Vec<_>>(),
            [
                "new@x.example",
                "e2@x.example",
                "e3@x.example",
                "e4@x.example"
            ]
        );
        assert_eq!(ch, vec![Field::Email(1)]);
        // exchangelib replaces EmailAddress1 by EmailAddress2: set 2, delete 1 and 3.
        let edits = [
            Edit::Delete(Field::Email(1)),
            Edit::Set(Field::Email(2), "e2@x.example".into()),
            Edit::Delete(Field::Email(3)),
        ];
        let (c, _) = apply(&contact(), &edits, &r).expect("ok");
        assert_eq!(
            c.emails
                .iter()
                .map(|e| e.address.as_str())
                .collect::<Vec<_>>(),
            ["e2@x.example", "e4@x.example"]
        );
    }

    #[test]
    fn phones_keep_crm_text_unless_changed() {
        let r = MappingRules::default();
        let edits = [
            Edit::Set(
                Field::Phone(PhoneSlot::BusinessPhone),
                "+49 30 1234567".into(),
            ),
            Edit::Set(Field::Phone(PhoneSlot::BusinessPhone2), "0301112233".into()),
        ];
        let (c, ch) = apply(&contact(), &edits, &r).expect("ok");
        assert_eq!(
            c.phones[0].number, "030 1234567",
            "shown form of the same number: untouched"
        );
        assert_eq!(
            c.phones[1].number, "+49 30 1112233",
            "typed number: normalised"
        );
        assert_eq!(
            c.phones[2].number, "030 3333333",
            "third work phone has no slot and survives"
        );
        assert_eq!(ch, vec![Field::Phone(PhoneSlot::BusinessPhone2)]);
    }

    #[test]
    fn placeholder_is_never_written_and_bad_values_apply_nothing() {
        let r = MappingRules::default();
        let bare = Contact {
            id: "c9".into(),
            ..Default::default()
        };
        let (c, ch) = apply(
            &bare,
            &[Edit::Set(Field::Email(1), "crm-c9@nomail.invalid".into())],
            &r,
        )
        .expect("ok");
        assert!(c.emails.is_empty() && ch.is_empty());
        let edits = [
            Edit::Set(Field::GivenName, "Ok".into()),
            Edit::Set(Field::Email(1), "nope".into()),
            Edit::Set(Field::Birthday, "1980-02-30T11:59:00Z".into()),
            Edit::Set(Field::Phone(PhoneSlot::MobilePhone), "call me".into()),
        ];
        let errs = apply(&contact(), &edits, &r).expect_err("refused");
        assert_eq!(errs.len(), 3);
        let ro = MappingRules {
            notes: FieldPolicy::ReadOnly,
            ..Default::default()
        };
        assert!(apply(&contact(), &[Edit::Set(Field::Notes, "x".into())], &ro).is_err());
        assert!(apply(
            &contact(),
            &[Edit::Set(Field::Surname, "x".repeat(300))],
            &r
        )
        .is_err());
    }
}
