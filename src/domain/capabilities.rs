//! What a CRM backend can hold. Each backend declares it (`CrmBackend::capabilities`); the
//! write path checks every planned contact write against it, so a value the CRM has no place
//! for is refused before anything is sent, naming the field, with the same answer on every
//! face.

use super::dataset::Problem;
use super::model::{Contact, Kind, PhoneKind};

pub use super::model::ContactField;

/// How many values of a multi-valued contact field a CRM keeps per contact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Multi {
    /// `emails`.
    Emails,
    /// `websites`.
    Websites,
    /// `addresses`.
    Addresses,
    /// `companies`.
    Companies,
    /// Phones of one kind (`phones` with that kind).
    Phones(PhoneKind),
}

impl Multi {
    fn count(self, c: &Contact) -> usize {
        match self {
            Multi::Emails => c.emails.len(),
            Multi::Websites => c.websites.len(),
            Multi::Addresses => c.addresses.len(),
            Multi::Companies => c.companies.len(),
            Multi::Phones(k) => c.phones.iter().filter(|p| p.kind == k).count(),
        }
    }

    /// The field name a refusal names.
    pub fn name(self) -> &'static str {
        match self {
            Multi::Emails => "emails",
            Multi::Websites => "websites",
            Multi::Addresses => "addresses",
            Multi::Companies => "companies",
            Multi::Phones(_) => "phones",
        }
    }
}

/// What a CRM backend can hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Display name of the CRM in refusals ("helloHQ").
    pub crm: &'static str,
    /// Record kinds crmgate may write (the faces write contacts; the admin API any of these).
    pub writable: Vec<Kind>,
    /// Contact fields the CRM has no place for.
    pub unstorable: Vec<ContactField>,
    /// Most values per contact of a multi-valued field; fields not listed are unbounded.
    pub max_values: Vec<(Multi, usize)>,
    /// Whether postal addresses keep a region (state).
    pub address_region: bool,
    /// Whether a contact can only be created for a company.
    pub create_needs_company: bool,
    /// Whether the CRM keeps crmgate's sign-in data (password hash, role) on its user
    /// records. When it does not, crmgate keeps them itself (`auth::logins::SignIns`).
    pub keeps_sign_in: bool,
}

impl Capabilities {
    /// A CRM that holds everything crmgate's model has (the embedded CRM).
    pub fn everything(crm: &'static str) -> Capabilities {
        Capabilities {
            crm,
            writable: Kind::ALL.to_vec(),
            unstorable: Vec::new(),
            max_values: Vec::new(),
            address_region: true,
            create_needs_company: false,
            keeps_sign_in: true,
        }
    }

    /// Whether records of `kind` may be written.
    pub fn can_write(&self, kind: Kind) -> bool {
        self.writable.contains(&kind)
    }

    /// Like [`Capabilities::check_contact`] for a create of `new`; `base` is the contact as
    /// crmgate starts it (its id, owner and subsystems, which the client did not write).
    pub fn check_create(&self, base: &Contact, new: &Contact) -> Vec<Problem> {
        let mut problems = self.check_contact(base, new);
        if self.create_needs_company && new.companies.is_empty() {
            problems.push(Problem {
                path: "companies".into(),
                message: format!(
                    "{} creates contact persons only for a company; give the contact the name of \
                     a company in your CRM scope, nothing was written",
                    self.crm
                ),
            });
        }
        problems
    }

    /// The fields of `new` the CRM cannot hold, given that it holds `old` now (for a create,
    /// an empty contact): a field is refused only when the write changes it, and a count only
    /// when it grows beyond what the CRM keeps. Empty when the CRM can store `new`.
    pub fn check_contact(&self, old: &Contact, new: &Contact) -> Vec<Problem> {
        let mut problems = Vec::new();
        for f in &self.unstorable {
            if f.differs(old, new) {
                problems.push(Problem {
                    path: f.name().into(),
                    message: format!(
                        "{} contact persons have no such field; nothing was written",
                        self.crm
                    ),
                });
            }
        }
        for (m, max) in &self.max_values {
            let n = m.count(new);
            if n > *max && n > m.count(old) {
                let what = match (m, max) {
                    (Multi::Phones(k), 0) => {
                        format!("no {} numbers", format!("{k:?}").to_lowercase())
                    }
                    (Multi::Phones(k), n) => {
                        format!("at most {n} {} number(s)", format!("{k:?}").to_lowercase())
                    }
                    (other, 0) => format!("no {}", other.name()),
                    (other, n) => format!("at most {n} {}", other.name()),
                };
                problems.push(Problem {
                    path: m.name().into(),
                    message: format!(
                        "{} keeps {what} per contact person; nothing was written",
                        self.crm
                    ),
                });
            }
        }
        if !self.address_region {
            if let Some(a) = new.addresses.first() {
                let before = old.addresses.first().map(|o| &o.region);
                if a.region.is_some() && before != Some(&a.region) {
                    problems.push(Problem {
                        path: "addresses[0].region".into(),
                        message: format!(
                            "{} addresses have no region; nothing was written",
                            self.crm
                        ),
                    });
                }
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::Phone;

    fn limited() -> Capabilities {
        Capabilities {
            crm: "TestCRM",
            writable: vec![Kind::Contact],
            unstorable: vec![ContactField::MiddleName, ContactField::Notes],
            max_values: vec![
                (Multi::Emails, 1),
                (Multi::Phones(PhoneKind::Work), 1),
                (Multi::Phones(PhoneKind::Fax), 0),
            ],
            address_region: false,
            create_needs_company: true,
            keeps_sign_in: false,
        }
    }

    #[test]
    fn refuses_only_what_a_write_changes_beyond_the_crm() {
        let caps = limited();
        let old = Contact::default();
        let mut new = old.clone();
        assert!(caps.check_contact(&old, &new).is_empty());
        new.middle_name = Some("Q".into());
        new.phones.push(Phone {
            kind: PhoneKind::Fax,
            number: "+49 30 1".into(),
        });
        let paths: Vec<String> = caps
            .check_contact(&old, &new)
            .into_iter()
            .map(|p| p.path)
            .collect();
        assert_eq!(paths, vec!["middle_name", "phones"]);
        // What the CRM holds already is no refusal, nor is a field left as it was.
        let held = new.clone();
        assert!(caps.check_contact(&held, &new).is_empty());
        assert!(Capabilities::everything("x")
            .check_contact(&old, &new)
            .is_empty());
        assert!(caps.can_write(Kind::Contact) && !caps.can_write(Kind::User));
        let paths: Vec<String> = caps
            .check_create(&Contact::default(), &Contact::default())
            .into_iter()
            .map(|p| p.path)
            .collect();
        assert_eq!(paths, vec!["companies"]);
    }
}
