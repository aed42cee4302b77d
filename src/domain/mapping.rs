//! CRM contact → address-book card: the one mapping both protocol faces render. Exchange
//! contacts have fixed slots (3 e-mails, 2 business + 2 home phones, 1 mobile, 1 business fax,
//! 1 other phone, 3 postal addresses, 1 web page); the first CRM values of each kind fill them
//! in CRM order, and values without a slot stay in the CRM untouched.
//!
//! | CRM | slot |
//! |---|---|
//! | e-mails 1–3 (any kind) | EmailAddress1–3 |
//! | phones `work` 1–2 | BusinessPhone, BusinessPhone2 |
//! | phones `home` 1–2 | HomePhone, HomePhone2 |
//! | first `mobile` | MobilePhone |
//! | first `fax` | BusinessFax |
//! | first `other` | OtherTelephone |
//! | first address of kind work / home / other | Business / Home / Other |
//! | first website | BusinessHomePage |
//! | first company's name | CompanyName |

use super::model::{AddressKind, Company, Contact, PhoneKind, PostalAddress};
use serde::{Deserialize, Serialize};

/// Where a phone number goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PhoneSlot {
    /// First work phone.
    BusinessPhone,
    /// Second work phone.
    BusinessPhone2,
    /// First home phone.
    HomePhone,
    /// Second home phone.
    HomePhone2,
    /// First mobile.
    MobilePhone,
    /// First fax.
    BusinessFax,
    /// First other phone.
    OtherTelephone,
}

impl PhoneSlot {
    /// The slot's name (EWS `PhoneNumbers` key).
    pub fn key(self) -> &'static str {
        match self {
            PhoneSlot::BusinessPhone => "BusinessPhone",
            PhoneSlot::BusinessPhone2 => "BusinessPhone2",
            PhoneSlot::HomePhone => "HomePhone",
            PhoneSlot::HomePhone2 => "HomePhone2",
            PhoneSlot::MobilePhone => "MobilePhone",
            PhoneSlot::BusinessFax => "BusinessFax",
            PhoneSlot::OtherTelephone => "OtherTelephone",
        }
    }
}

/// Where a postal address goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressSlot {
    /// Work.
    Business,
    /// Home.
    Home,
    /// Other.
    Other,
}

impl AddressSlot {
    /// The slot's name (EWS `PhysicalAddresses` key).
    pub fn key(self) -> &'static str {
        match self {
            AddressSlot::Business => "Business",
            AddressSlot::Home => "Home",
            AddressSlot::Other => "Other",
        }
    }
}

/// How notes and birthdays are treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FieldPolicy {
    /// Shown and writable.
    #[default]
    Shown,
    /// Shown, writes refused.
    ReadOnly,
    /// Not shown.
    Hidden,
}

/// Mapping settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappingRules {
    /// Region for numbers written without a country code (ISO 3166 alpha-2).
    pub default_region: String,
    /// Domain of placeholder e-mail addresses; `None`: no placeholders.
    pub placeholder_domain: Option<String>,
    /// Notes policy.
    pub notes: FieldPolicy,
    /// Birthday policy.
    pub birthday: FieldPolicy,
}

impl Default for MappingRules {
    fn default() -> Self {
        MappingRules {
            default_region: "DE".into(),
            placeholder_domain: Some("nomail.invalid".into()),
            notes: FieldPolicy::Shown,
            birthday: FieldPolicy::Shown,
        }
    }
}

/// An e-mail slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardEmail {
    /// 1..=3.
    pub index: u8,
    /// Address.
    pub address: String,
    /// A placeholder made up by crmgate (never written back).
    pub placeholder: bool,
}

/// A contact as address books see it.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Card {
    /// Display name (synthesized when the CRM has none).
    pub display_name: String,
    /// "Surname, Given" or the display name.
    pub file_as: String,
    /// Title ("Dr.").
    pub title: Option<String>,
    /// Given name.
    pub given_name: Option<String>,
    /// Middle name.
    pub middle_name: Option<String>,
    /// Surname.
    pub surname: Option<String>,
    /// Company name.
    pub company_name: Option<String>,
    /// Job title.
    pub job_title: Option<String>,
    /// Department.
    pub department: Option<String>,
    /// E-mail slots.
    pub emails: Vec<CardEmail>,
    /// Phone slots, display form.
    pub phones: Vec<(PhoneSlot, String)>,
    /// Address slots.
    pub addresses: Vec<(AddressSlot, PostalAddress)>,
    /// Web page.
    pub web_page: Option<String>,
    /// Birthday `YYYY-MM-DD`.
    pub birthday: Option<String>,
    /// Notes.
    pub notes: Option<String>,
    /// Categories.
    pub categories: Vec<String>,
}

fn clean(s: &Option<String>) -> Option<String> {
    s.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Formats a phone number internationally (`+49 30 1234567`) with the default region for
/// numbers without a country code; text that is no phone number is shown as the CRM has it.
pub fn display_phone(number: &str, default_region: &str) -> String {
    // Parsing with libphonenumber's metadata costs ~23 µs a number, and every listing formats
    // the same numbers again: memoise (a pure function; bounded; shared by all threads).
    if let Some(hit) = PHONE_MEMO
        .read()
        .ok()
        .and_then(|m| m.get(default_region, number))
    {
        return hit;
    }
    let shown = format_phone(number, default_region);
    if let Ok(mut m) = PHONE_MEMO.write() {
        m.insert(default_region, number, &shown);
    }
    shown
}

/// The phone memo, kept compact: one byte arena and an index of 64-bit hashes to arena
/// offsets. A large map of small strings measurably slowed unrelated request paths (about 5
/// points of the no-change poll ratio); two allocations do not.
#[derive(Default)]
struct PhoneMemo {
    index: std::collections::HashMap<u64, u32>,
    /// Entries `region 0 number 0 display 0`, each found by its offset.
    arena: Vec<u8>,
}

/// Arena bytes before the memo starts over (about 600,000 numbers).
const PHONE_MEMO_MAX_BYTES: usize = 32 << 20;

impl PhoneMemo {
    fn hash(region: &str, number: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        region.hash(&mut h);
        number.hash(&mut h);
        h.finish()
    }

    fn get(&self, region: &str, number: &str) -> Option<String> {
        let at = *self.index.get(&Self::hash(region, number))? as usize;
        let mut parts = self.arena.get(at..)?.splitn(4, |b| *b == 0);
        // A hash collision is caught here: the stored key must match.
        if parts.next()? != region.as_bytes() || parts.next()? != number.as_bytes() {
            return None;
        }
        std::str::from_utf8(parts.next()?).ok().map(str::to_owned)
    }

    fn insert(&mut self, region: &str, number: &str, shown: &str) {
        if [region, number, shown].iter().any(|s| s.contains('\0')) {
            return;
        }
        if self.arena.len() + region.len() + number.len() + shown.len() + 3 > PHONE_MEMO_MAX_BYTES {
            *self = PhoneMemo::default();
        }
        let Ok(at) = u32::try_from(self.arena.len()) else {
            return;
        };
        let hash = Self::hash(region, number);
        if self.index.contains_key(&hash) {
            return;
        }
        for part in [region, number, shown] {
            self.arena.extend_from_slice(part.as_bytes());
            self.arena.push(0);
        }
        self.index.insert(hash, at);
    }
}

static PHONE_MEMO: std::sync::LazyLock<std::sync::RwLock<PhoneMemo>> =
    std::sync::LazyLock::new(|| std::sync::RwLock::new(PhoneMemo::default()));

fn format_phone(number: &str, default_region: &str) -> String {
    let region = default_region.parse::<phonenumber::country::Id>().ok();
    match phonenumber::parse(region, number) {
        Ok(n) if phonenumber::is_valid(&n) => n
            .format()
            .mode(phonenumber::Mode::International)
            .to_string(),
        _ => number.trim().to_owned(),
    }
}

/// The placeholder address of a contact without e-mail.
pub fn placeholder_email(contact_id: &str, domain: &str) -> String {
    let local: String = contact_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("crm-{local}@{domain}")
}

/// The names a contact is shown and sorted by: (display name, file-as). Cheap: no phone or
/// address work, so views can sort whole folders by them.
pub fn names(c: &Contact, company_name: Option<&str>) -> (String, String) {
    let title = clean(&c.title);
    let given = clean(&c.first_name);
    let middle = clean(&c.middle_name);
    let surname = clean(&c.last_name);
    let parts: Vec<&str> = [&title, &given, &middle, &surname]
        .into_iter()
        .filter_map(|p| p.as_deref())
        .collect();
    let display = if !parts.is_empty() {
        parts.join(" ")
    } else if let Some(k) = company_name.map(str::trim).filter(|k| !k.is_empty()) {
        k.to_owned()
    } else if let Some(e) = c
        .emails
        .iter()
        .map(|e| e.address.trim())
        .find(|e| !e.is_empty())
    {
        e.to_owned()
    } else {
        c.id.0.clone()
    };
    let file_as = match (&surname, &given) {
        (Some(s), Some(g)) => format!("{s}, {g}"),
        (Some(s), None) => s.clone(),
        _ => display.clone(),
    };
    (display, file_as)
}

/// The company a contact is shown with: a linked company's name, else the company text a
/// client wrote (kept on the contact).
pub fn company_name(c: &Contact, companies: &[&Company]) -> Option<String> {
    companies
        .first()
        .map(|k| k.name.trim().to_owned())
        .or_else(|| {
            c.extra
                .get("company_name")
                .and_then(|v| v.as_str())
                .map(|s| s.trim().to_owned())
        })
        .filter(|n| !n.is_empty())
}

/// The one display-name rule (what every face shows, sorts by, and `preview` lists):
/// (display name, file-as) of a contact with its companies. See [`names`].
pub fn display_names(c: &Contact, companies: &[&Company]) -> (String, String) {
    names(c, company_name(c, companies).as_deref())
}

/// Maps a CRM contact (with its companies) to a card.
pub fn card(c: &Contact, companies: &[&Company], rules: &MappingRules) -> Card {
    let title = clean(&c.title);
    let given_name = clean(&c.first_name);
    let middle_name = clean(&c.middle_name);
    let surname = clean(&c.last_name);
    let company_name = company_name(c, companies);
    let mut emails: Vec<CardEmail> = c
        .emails
        .iter()
        .filter(|e| !e.address.trim().is_empty())
        .take(3)
        .enumerate()
        .map(|(i, e)| CardEmail {
            index: i as u8 + 1,
            address: e.address.trim().to_owned(),
            placeholder: false,
        })
        .collect();
    if emails.is_empty() {
        if let Some(d) = &rules.placeholder_domain {
            emails.push(CardEmail {
                index: 1,
                address: placeholder_email(c.id.as_str(), d),
                placeholder: true,
            });
        }
    }
    let mut phones = Vec::new();
    let taken =
        |slot: PhoneSlot, phones: &Vec<(PhoneSlot, String)>| phones.iter().any(|(s, _)| *s == slot);
    for p in &c.phones {
        let candidates: &[PhoneSlot] = match p.kind {
            PhoneKind::Work => &[PhoneSlot::BusinessPhone, PhoneSlot::BusinessPhone2],
            PhoneKind::Home => &[PhoneSlot::HomePhone, PhoneSlot::HomePhone2],
            PhoneKind::Mobile => &[PhoneSlot::MobilePhone],
            PhoneKind::Fax => &[PhoneSlot::BusinessFax],
            PhoneKind::Other => &[PhoneSlot::OtherTelephone],
        };
        if let Some(slot) = candidates.iter().copied().find(|s| !taken(*s, &phones)) {
            phones.push((slot, display_phone(&p.number, &rules.default_region)));
        }
    }
    let mut addresses: Vec<(AddressSlot, PostalAddress)> = Vec::new();
    for a in &c.addresses {
        let slot = match a.kind {
            AddressKind::Work => AddressSlot::Business,
            AddressKind::Home => AddressSlot::Home,
            AddressKind::Other => AddressSlot::Other,
        };
        if !addresses.iter().any(|(s, _)| *s == slot) {
            addresses.push((slot, a.clone()));
        }
    }
    let (display_name, file_as) = names(c, company_name.as_deref());
    Card {
        display_name,
        file_as,
        title,
        given_name,
        middle_name,
        surname,
        company_name,
        job_title: clean(&c.job_title),
        department: clean(&c.department),
        emails,
        phones,
        addresses,
        web_page: c
            .websites
            .iter()
            .map(|w| w.trim())
            .find(|w| !w.is_empty())
            .map(str::to_owned),
        birthday: if rules.birthday == FieldPolicy::Hidden {
            None
        } else {
            clean(&c.birthday)
        },
        notes: if rules.notes == FieldPolicy::Hidden {
            None
        } else {
            clean(&c.notes)
        },
        categories: c.categories.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One display-name rule: what a card shows is what views sort by and `preview` lists,
    /// for named contacts, contacts known by their company (linked or as text), by e-mail
    /// only, and by id only.
    #[test]
    fn the_display_name_rule_is_the_cards() {
        let company: Company =
            serde_json::from_value(serde_json::json!({"id": "k1", "name": "Acme"}))
                .expect("company");
        let named: Contact = serde_json::from_value(serde_json::json!(
            {"id": "c1", "first_name": "Eva", "last_name": "Klein"}))
        .expect("contact");
        let texted: Contact = serde_json::from_value(serde_json::json!(
            {"id": "c2", "company_name": "Written Ltd", "emails": [{"address": "x@y.test"}]}))
        .expect("contact");
        let mailed: Contact = serde_json::from_value(serde_json::json!(
            {"id": "c3", "emails": [{"address": "x@y.test"}]}))
        .expect("contact");
        let bare: Contact = serde_json::from_value(serde_json::json!({"id": "c4"})).expect("c");
        let rules = MappingRules::default();
        let cases: [(&Contact, Vec<&Company>, &str); 5] = [
            (&named, vec![], "Eva Klein"),
            (&mailed, vec![&company], "Acme"),
            (&texted, vec![], "Written Ltd"),
            (&mailed, vec![], "x@y.test"),
            (&bare, vec![], "c4"),
        ];
        for (c, companies, want) in cases {
            let shown = card(c, &companies, &rules);
            let (display, file_as) = display_names(c, &companies);
            assert_eq!(display, want);
            assert_eq!((display, file_as), (shown.display_name, shown.file_as));
        }
    }

    #[test]
    fn phone_memo_checks_the_key_it_finds() {
        let mut m = PhoneMemo::default();
        m.insert("DE", "030 1234567", "+49 30 1234567");
        m.insert("US", "(212) 555-0142", "+1 212-555-0142");
        assert_eq!(
            m.get("DE", "030 1234567").as_deref(),
            Some("+49 30 1234567")
        );
        assert_eq!(
            m.get("US", "(212) 555-0142").as_deref(),
            Some("+1 212-555-0142")
        );
        assert_eq!(m.get("US", "030 1234567"), None);
        // An index entry that leads to another key (a hash collision) is not trusted.
        m.index.insert(PhoneMemo::hash("DE", "999"), 0);
        assert_eq!(m.get("DE", "999"), None);
        m.insert("DE", "a\0b", "x");
        assert_eq!(m.get("DE", "a\0b"), None, "keys with NUL are not memoised");
    }
    use crate::domain::model::{Email, Phone};

    fn contact() -> Contact {
        Contact {
            id: "c1".into(),
            first_name: Some("Eva".into()),
            last_name: Some("Klein".into()),
            title: Some("Dr.".into()),
            emails: (1..=4)
                .map(|i| Email {
                    address: format!("e{i}@acme.example"),
                    kind: AddressKind::Work,
                })
                .collect(),
            phones: vec![
                Phone {
                    number: "030 1234567".into(),
                    kind: PhoneKind::Work,
                },
                Phone {
                    number: "030 7654321".into(),
                    kind: PhoneKind::Work,
                },
                Phone {
                    number: "030 1111111".into(),
                    kind: PhoneKind::Work,
                },
                Phone {
                    number: "0171 2345678".into(),
                    kind: PhoneKind::Mobile,
                },
                Phone {
                    number: "+44 20 7946 0123".into(),
                    kind: PhoneKind::Home,
                },
                Phone {
                    number: "call reception".into(),
                    kind: PhoneKind::Other,
                },
            ],
            websites: vec!["https://a.example".into(), "https://b.example".into()],
            ..Default::default()
        }
    }

    #[test]
    fn slots_follow_crm_order_and_extra_values_stay_out() {
        let c = card(&contact(), &[], &MappingRules::default());
        assert_eq!(c.emails.len(), 3);
        assert_eq!(c.emails[2].address, "e3@acme.example");
        assert_eq!(
            c.phones,
            vec![
                (PhoneSlot::BusinessPhone, "+49 30 1234567".to_string()),
                (PhoneSlot::BusinessPhone2, "+49 30 7654321".to_string()),
                (PhoneSlot::MobilePhone, "+49 171 2345678".to_string()),
                (PhoneSlot::HomePhone, "+44 20 7946 0123".to_string()),
                (PhoneSlot::OtherTelephone, "call reception".to_string()),
            ]
        );
        assert_eq!(c.web_page.as_deref(), Some("https://a.example"));
        assert_eq!(c.display_name, "Dr. Eva Klein");
        assert_eq!(c.file_as, "Klein, Eva");
    }

    #[test]
    fn placeholder_and_synthesized_names() {
        let bare = Contact {
            id: "c/9".into(),
            ..Default::default()
        };
        let c = card(&bare, &[], &MappingRules::default());
        assert_eq!(c.emails[0].address, "crm-c-9@nomail.invalid");
        assert!(c.emails[0].placeholder);
        assert_eq!(c.display_name, "c/9");
        let rules = MappingRules {
            placeholder_domain: None,
            ..Default::default()
        };
        assert!(card(&bare, &[], &rules).emails.is_empty());
        assert_eq!(display_phone("(212) 555-0142", "US"), "+1 212-555-0142");
    }
}
