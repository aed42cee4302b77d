//! CRM records as crmgate normalises them, in the field names of the dataset format
//! (`docs/dataset.md`). Fields crmgate does not map are kept in `extra`, so a write-back
//! never drops them.

use super::ids::*;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// Fields of a record that crmgate does not map, kept verbatim.
pub type Extra = Map<String, Value>;

/// A subsystem (tenant).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Subsystem {
    /// Id.
    pub id: SubsystemId,
    /// Display name.
    pub name: String,
    /// Unmapped fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// What a user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An ordinary user: sees their own mailbox only.
    #[default]
    User,
    /// May use the admin API and act for other users.
    Admin,
}

/// A CRM user; each one gets a mailbox with the virtual folders.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Id.
    pub id: UserId,
    /// Login name (UPN / e-mail address).
    pub login: String,
    /// Display name.
    pub name: String,
    /// Plain password, accepted on import only; hashed before it is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Argon2 PHC string; never shown by the admin API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    /// Subsystems the user belongs to.
    #[serde(default)]
    pub subsystems: Vec<SubsystemId>,
    /// Role.
    #[serde(default)]
    pub role: Role,
    /// Inactive users cannot sign in.
    #[serde(default = "yes")]
    pub active: bool,
    /// Unmapped fields.
    #[serde(flatten)]
    pub extra: Extra,
}

fn yes() -> bool {
    true
}

/// Kind of an e-mail address or postal address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressKind {
    /// Business.
    #[default]
    Work,
    /// Private.
    Home,
    /// Anything else.
    Other,
}

/// Kind of a phone number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PhoneKind {
    /// Business landline.
    Work,
    /// Private landline.
    Home,
    /// Mobile.
    Mobile,
    /// Fax.
    Fax,
    /// Anything else.
    Other,
}

/// A postal address.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct PostalAddress {
    /// Kind (contacts only; companies have one address).
    #[serde(default)]
    pub kind: AddressKind,
    /// Street and house number.
    #[serde(default)]
    pub street: Option<String>,
    /// City.
    #[serde(default)]
    pub city: Option<String>,
    /// Postal code.
    #[serde(default)]
    pub postal_code: Option<String>,
    /// Region or state.
    #[serde(default)]
    pub region: Option<String>,
    /// Country (ISO 3166 alpha-2 preferred, free text accepted).
    #[serde(default)]
    pub country: Option<String>,
}

/// A typed e-mail address.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Email {
    /// The address.
    pub address: String,
    /// Kind.
    #[serde(default)]
    pub kind: AddressKind,
}

/// A typed phone number, in the CRM's own text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Phone {
    /// The number as the CRM stores it.
    pub number: String,
    /// Kind.
    pub kind: PhoneKind,
}

/// A company.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Company {
    /// Id.
    pub id: CompanyId,
    /// Name.
    pub name: String,
    /// Subsystems.
    #[serde(default)]
    pub subsystems: Vec<SubsystemId>,
    /// Responsible users.
    #[serde(default)]
    pub responsible: Vec<UserId>,
    /// Company types ("Kunde", "Interessent", ...).
    #[serde(default)]
    pub types: Vec<String>,
    /// Main phone.
    #[serde(default)]
    pub phone: Option<String>,
    /// Main e-mail.
    #[serde(default)]
    pub email: Option<String>,
    /// Web site.
    #[serde(default)]
    pub website: Option<String>,
    /// Main address.
    #[serde(default)]
    pub address: Option<PostalAddress>,
    /// Unmapped fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A contact person.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct Contact {
    /// Id.
    pub id: ContactId,
    /// Companies the contact belongs to.
    #[serde(default)]
    pub companies: Vec<CompanyId>,
    /// Own subsystems (a contact's subsystems are its companies' plus these).
    #[serde(default)]
    pub subsystems: Vec<SubsystemId>,
    /// Salutation ("Frau", "Mr").
    #[serde(default)]
    pub salutation: Option<String>,
    /// Academic title ("Dr.").
    #[serde(default)]
    pub title: Option<String>,
    /// Given name.
    #[serde(default)]
    pub first_name: Option<String>,
    /// Middle name.
    #[serde(default)]
    pub middle_name: Option<String>,
    /// Surname.
    #[serde(default)]
    pub last_name: Option<String>,
    /// Job title.
    #[serde(default)]
    pub job_title: Option<String>,
    /// Department.
    #[serde(default)]
    pub department: Option<String>,
    /// E-mail addresses, in CRM order.
    #[serde(default)]
    pub emails: Vec<Email>,
    /// Phone numbers, in CRM order.
    #[serde(default)]
    pub phones: Vec<Phone>,
    /// Postal addresses.
    #[serde(default)]
    pub addresses: Vec<PostalAddress>,
    /// Web sites.
    #[serde(default)]
    pub websites: Vec<String>,
    /// Birthday, `YYYY-MM-DD`.
    #[serde(default)]
    pub birthday: Option<String>,
    /// Free-text notes.
    #[serde(default)]
    pub notes: Option<String>,
    /// Categories / tags.
    #[serde(default)]
    pub categories: Vec<String>,
    /// Owner (set for contacts created through crmgate).
    #[serde(default)]
    pub owner: Option<UserId>,
    /// Contact types (matched against the excluded types).
    #[serde(default)]
    pub types: Vec<String>,
    /// Unmapped fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Declares [`ContactField`] with the `Contact` member each variant stands for, so the
/// list, the diff and the merge cannot disagree.
macro_rules! contact_fields {
    ($($(#[$doc:meta])* $variant:ident => $member:ident,)*) => {
        /// One member of a contact as a CRM stores it: what a write changes. A backend that
        /// can write single properties sends these and keeps the rest as it has them.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum ContactField {
            $($(#[$doc])* $variant,)*
        }

        impl ContactField {
            /// Every field, in declaration order.
            pub const ALL: &'static [ContactField] = &[$(ContactField::$variant,)*];

            /// The model's member name (`job_title`), as problems and errors name it.
            pub fn name(self) -> &'static str {
                match self {
                    $(ContactField::$variant => stringify!($member),)*
                }
            }

            /// True when `a` and `b` differ in this field.
            pub fn differs(self, a: &Contact, b: &Contact) -> bool {
                match self {
                    $(ContactField::$variant => a.$member != b.$member,)*
                }
            }
        }

        impl Contact {
            /// The fields in which `new` differs from this contact (the id is not a field).
            pub fn changed_fields(&self, new: &Contact) -> Vec<ContactField> {
                // Exhaustive: a member added to `Contact` but not listed here fails the build.
                let Contact { id: _, $($member: _,)* } = self;
                let mut out = Vec::new();
                $(if self.$member != new.$member {
                    out.push(ContactField::$variant);
                })*
                out
            }

            /// This contact with the values of `fields` taken from `new`: a change of those
            /// fields applied onto whatever this copy holds.
            pub fn with_fields_from(&self, new: &Contact, fields: &[ContactField]) -> Contact {
                let mut out = self.clone();
                for f in fields {
                    match f {
                        $(ContactField::$variant => out.$member = new.$member.clone(),)*
                    }
                }
                out
            }
        }
    };
}

contact_fields! {
    /// Companies.
    Companies => companies,
    /// Own subsystems.
    Subsystems => subsystems,
    /// Salutation.
    Salutation => salutation,
    /// Academic title.
    Title => title,
    /// Given name.
    FirstName => first_name,
    /// Middle name.
    MiddleName => middle_name,
    /// Surname.
    LastName => last_name,
    /// Job title.
    JobTitle => job_title,
    /// Department.
    Department => department,
    /// E-mail addresses.
    Emails => emails,
    /// Phone numbers.
    Phones => phones,
    /// Postal addresses.
    Addresses => addresses,
    /// Web sites.
    Websites => websites,
    /// Birthday.
    Birthday => birthday,
    /// Notes.
    Notes => notes,
    /// Categories.
    Categories => categories,
    /// Owner.
    Owner => owner,
    /// Contact types.
    Types => types,
    /// Unmapped fields.
    Extra => extra,
}

/// A project.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Project {
    /// Id.
    pub id: ProjectId,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Subsystems.
    #[serde(default)]
    pub subsystems: Vec<SubsystemId>,
    /// Team members.
    #[serde(default)]
    pub team: Vec<UserId>,
    /// Responsible user.
    #[serde(default)]
    pub responsible: Option<UserId>,
    /// Contact persons.
    #[serde(default)]
    pub contacts: Vec<ContactId>,
    /// Company.
    #[serde(default)]
    pub company: Option<CompanyId>,
    /// Unmapped fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A sales lead.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lead {
    /// Id.
    pub id: LeadId,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Subsystems.
    #[serde(default)]
    pub subsystems: Vec<SubsystemId>,
    /// Responsible user.
    #[serde(default)]
    pub responsible: Option<UserId>,
    /// Contact persons.
    #[serde(default)]
    pub contacts: Vec<ContactId>,
    /// Company.
    #[serde(default)]
    pub company: Option<CompanyId>,
    /// Status (`open`, `won`, `lost`, or the CRM's own word).
    #[serde(default)]
    pub status: Option<String>,
    /// Unmapped fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The kinds of CRM record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Subsystem (tenant).
    Subsystem,
    /// User.
    User,
    /// Company.
    Company,
    /// Contact person.
    Contact,
    /// Project.
    Project,
    /// Lead.
    Lead,
}

impl Kind {
    /// All kinds, in dependency order (referenced kinds first).
    pub const ALL: [Kind; 6] = [
        Kind::Subsystem,
        Kind::User,
        Kind::Company,
        Kind::Contact,
        Kind::Project,
        Kind::Lead,
    ];

    /// The plural name used in the dataset format and the admin API.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Subsystem => "subsystems",
            Kind::User => "users",
            Kind::Company => "companies",
            Kind::Contact => "contacts",
            Kind::Project => "projects",
            Kind::Lead => "leads",
        }
    }

    /// Parses the plural name.
    pub fn from_plural(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.plural() == s)
    }

    /// The singular name, as used in messages.
    pub fn singular(self) -> &'static str {
        match self {
            Kind::Subsystem => "subsystem",
            Kind::User => "user",
            Kind::Company => "company",
            Kind::Contact => "contact",
            Kind::Project => "project",
            Kind::Lead => "lead",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.singular())
    }
}

/// One CRM record of any kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// Subsystem.
    Subsystem(Subsystem),
    /// User.
    User(User),
    /// Company.
    Company(Company),
    /// Contact.
    Contact(Contact),
    /// Project.
    Project(Project),
    /// Lead.
    Lead(Lead),
}

impl Record {
    /// The record's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Record::Subsystem(_) => Kind::Subsystem,
            Record::User(_) => Kind::User,
            Record::Company(_) => Kind::Company,
            Record::Contact(_) => Kind::Contact,
            Record::Project(_) => Kind::Project,
            Record::Lead(_) => Kind::Lead,
        }
    }

    /// The record's id as a string.
    pub fn id(&self) -> &str {
        match self {
            Record::Subsystem(r) => r.id.as_str(),
            Record::User(r) => r.id.as_str(),
            Record::Company(r) => r.id.as_str(),
            Record::Contact(r) => r.id.as_str(),
            Record::Project(r) => r.id.as_str(),
            Record::Lead(r) => r.id.as_str(),
        }
    }

    /// Serialises the record in the dataset format.
    pub fn to_json(&self) -> Value {
        let v = match self {
            Record::Subsystem(r) => serde_json::to_value(r),
            Record::User(r) => serde_json::to_value(r),
            Record::Company(r) => serde_json::to_value(r),
            Record::Contact(r) => serde_json::to_value(r),
            Record::Project(r) => serde_json::to_value(r),
            Record::Lead(r) => serde_json::to_value(r),
        };
        // Serialising these plain structs into a Value cannot fail (string keys only).
        v.unwrap_or(Value::Null)
    }

    /// Parses a record of `kind` from JSON text (fast, typed; for stored records).
    pub fn from_json_str(kind: Kind, text: &str) -> Result<Record, String> {
        fn de<T: serde::de::DeserializeOwned>(t: &str) -> Result<T, String> {
            serde_json::from_str(t).map_err(|e| e.to_string())
        }
        Ok(match kind {
            Kind::Subsystem => Record::Subsystem(de(text)?),
            Kind::User => Record::User(de(text)?),
            Kind::Company => Record::Company(de(text)?),
            Kind::Contact => Record::Contact(de(text)?),
            Kind::Project => Record::Project(de(text)?),
            Kind::Lead => Record::Lead(de(text)?),
        })
    }

    /// Serialises the record as JSON text.
    pub fn to_json_string(&self) -> String {
        let r = match self {
            Record::Subsystem(r) => serde_json::to_string(r),
            Record::User(r) => serde_json::to_string(r),
            Record::Company(r) => serde_json::to_string(r),
            Record::Contact(r) => serde_json::to_string(r),
            Record::Project(r) => serde_json::to_string(r),
            Record::Lead(r) => serde_json::to_string(r),
        };
        r.unwrap_or_else(|_| "null".into())
    }

    /// Parses a record of `kind` from the dataset format; the error names the path of the
    /// offending value, relative to the record.
    pub fn from_json(kind: Kind, v: &Value) -> Result<Record, (String, String)> {
        fn de<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, (String, String)> {
            serde_path_to_error::deserialize(v).map_err(|e| {
                let path = e.path().to_string();
                let path = if path == "." { String::new() } else { path };
                (path, e.into_inner().to_string())
            })
        }
        Ok(match kind {
            Kind::Subsystem => Record::Subsystem(de(v)?),
            Kind::User => Record::User(de(v)?),
            Kind::Company => Record::Company(de(v)?),
            Kind::Contact => Record::Contact(de(v)?),
            Kind::Project => Record::Project(de(v)?),
            Kind::Lead => Record::Lead(de(v)?),
        })
    }
}

/// Local sign-in data for a user whose record lives in a remote CRM: what crmgate keeps
/// itself (the CRM knows nothing of crmgate passwords or roles).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignIn {
    /// Argon2 PHC string.
    pub password_hash: Option<String>,
    /// Role.
    pub role: Role,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_fields_and_merge_agree() {
        let old = Contact {
            id: ContactId::from("c1"),
            first_name: Some("Anna".into()),
            last_name: Some("Berg".into()),
            job_title: Some("CTO".into()),
            ..Default::default()
        };
        let mut new = old.clone();
        new.job_title = Some("CEO".into());
        new.websites.push("https://acme.test".into());
        assert_eq!(
            old.changed_fields(&new),
            vec![ContactField::JobTitle, ContactField::Websites]
        );
        // Someone else changed the surname meanwhile: a merge of the two fields keeps it.
        let mut theirs = old.clone();
        theirs.last_name = Some("Berg-Lund".into());
        let merged = theirs.with_fields_from(&new, &old.changed_fields(&new));
        assert_eq!(merged.last_name.as_deref(), Some("Berg-Lund"));
        assert_eq!(merged.job_title.as_deref(), Some("CEO"));
        assert_eq!(merged.websites, new.websites);
        assert!(old.changed_fields(&old).is_empty());
        assert_eq!(old.with_fields_from(&new, ContactField::ALL), new);
        assert_eq!(ContactField::JobTitle.name(), "job_title");
        assert!(ContactField::Websites.differs(&old, &new));
        assert!(!ContactField::LastName.differs(&old, &new));
    }
}
