//! `gen-dataset`: deterministic, realistically shaped datasets for benchmarks and load tests.
//! Companies have several contacts and one or two responsible users of their subsystem; a few
//! contacts have no company but an owner; projects and leads link users to contacts. The same
//! arguments give the same bytes on every machine (own SplitMix64, no external RNG).

use crate::domain::dataset::Dataset;
use crate::domain::*;
use argon2::password_hash::{PasswordHasher, SaltString};

/// Generator parameters.
#[derive(Clone, Debug)]
pub struct GenParams {
    /// Number of contacts.
    pub contacts: usize,
    /// Number of users.
    pub users: usize,
    /// Number of subsystems.
    pub subsystems: usize,
    /// Random seed.
    pub seed: u64,
}

/// The password every generated user has.
pub const GENERATED_PASSWORD: &str = "demo";

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn pick<'a>(&mut self, v: &'a [&'a str]) -> &'a str {
        v[self.below(v.len())]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const FIRST_DE: &[&str] = &[
    "Anna",
    "Lukas",
    "Marie",
    "Felix",
    "Sophie",
    "Jonas",
    "Lea",
    "Paul",
    "Hannah",
    "Leon",
    "Emma",
    "Maximilian",
    "Mia",
    "Elias",
    "Laura",
    "Jan",
    "Clara",
    "Tim",
    "Lena",
    "Moritz",
    "Katharina",
    "Stefan",
    "Sabine",
    "Jürgen",
    "Petra",
    "Andreas",
    "Birgit",
    "Thomas",
];
const LAST_DE: &[&str] = &[
    "Müller",
    "Schmidt",
    "Schneider",
    "Fischer",
    "Weber",
    "Meyer",
    "Wagner",
    "Becker",
    "Schulz",
    "Hoffmann",
    "Schäfer",
    "Koch",
    "Bauer",
    "Richter",
    "Klein",
    "Wolf",
    "Schröder",
    "Neumann",
    "Schwarz",
    "Zimmermann",
    "Braun",
    "Krüger",
    "Hofmann",
    "Hartmann",
    "Lange",
    "Schmitt",
];
const FIRST_EN: &[&str] = &[
    "Oliver", "Amelia", "George", "Isla", "Harry", "Ava", "Jack", "Emily", "Charlie", "Grace",
    "James", "Olivia", "William", "Sophia", "Thomas", "Lily",
];
const LAST_EN: &[&str] = &[
    "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Robinson",
    "Wright", "Thompson", "Evans", "Walker", "White", "Roberts", "Green",
];
const CITIES: &[(&str, &str, &str, &str)] = &[
    ("Berlin", "10115", "BE", "DE"),
    ("München", "80331", "BY", "DE"),
    ("Hamburg", "20095", "HH", "DE"),
    ("Köln", "50667", "NW", "DE"),
    ("Frankfurt am Main", "60311", "HE", "DE"),
    ("Stuttgart", "70173", "BW", "DE"),
    ("Leipzig", "04109", "SN", "DE"),
    ("Dresden", "01067", "SN", "DE"),
    ("London", "EC1A 1BB", "ENG", "GB"),
    ("Manchester", "M1 1AE", "ENG", "GB"),
];
const STREETS: &[&str] = &[
    "Hauptstraße",
    "Bahnhofstraße",
    "Gartenweg",
    "Schillerstraße",
    "Goethestraße",
    "Lindenallee",
    "Marktplatz",
    "Industriestraße",
    "High Street",
    "Station Road",
];
const COMPANY_WORDS: &[&str] = &[
    "Nord", "Süd", "Alpen", "Spree", "Rhein", "Elbe", "Havel", "Isar", "Main", "Weser", "Stern",
    "Licht", "Kraft", "Werk", "Technik", "Daten", "Logistik", "Bau", "Medien", "Handel",
];
const COMPANY_FORMS: &[&str] = &["GmbH", "AG", "KG", "GmbH & Co. KG", "e.K.", "Ltd"];
const JOBS: &[&str] = &[
    "Geschäftsführer",
    "Einkauf",
    "Vertriebsleiterin",
    "CTO",
    "Projektleiter",
    "Buchhaltung",
    "Head of Sales",
    "Office Manager",
    "Marketing",
    "IT-Leiter",
];
const DEPTS: &[&str] = &[
    "Vertrieb",
    "Einkauf",
    "IT",
    "Finanzen",
    "Marketing",
    "Management",
];
const TYPES: &[(&str, u64)] = &[
    ("Kunde", 70),
    ("Lieferant", 15),
    ("Partner", 8),
    ("Interessent", 7),
];

fn slug(s: &str) -> String {
    s.to_lowercase()
        .replace('ä', "ae")
        .replace('ö', "oe")
        .replace('ü', "ue")
        .replace('ß', "ss")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect()
}

/// The argon2 hash of [`GENERATED_PASSWORD`] with a fixed salt, so output is reproducible.
fn fixed_hash() -> Option<String> {
    let salt = SaltString::encode_b64(b"crmgate-gen-salt").ok()?;
    argon2::Argon2::default()
        .hash_password(GENERATED_PASSWORD.as_bytes(), &salt)
        .ok()
        .map(|h| h.to_string())
}

/// Generates a dataset.
pub fn generate(p: &GenParams) -> Dataset {
    let mut rng = Rng(p.seed ^ 0x5EED_C0DE);
    let subs_n = p.subsystems.max(1);
    let users_n = p.users.max(1);
    let hash = fixed_hash();
    let mut ds = Dataset::default();
    for s in 0..subs_n {
        let (city, ..) = CITIES[s % CITIES.len()];
        ds.subsystems.push(Subsystem {
            id: format!("s{}", s + 1).into(),
            name: if s < CITIES.len() {
                city.to_owned()
            } else {
                format!("{city} {}", s + 1)
            },
            extra: Default::default(),
        });
    }
    // Users: round-robin over subsystems, every 7th in a second one.
    let mut users_of: Vec<Vec<usize>> = vec![Vec::new(); subs_n];
    for u in 0..users_n {
        let s = u % subs_n;
        let mut subs = vec![SubsystemId::from(format!("s{}", s + 1))];
        users_of[s].push(u);
        if subs_n > 1 && u % 7 == 6 {
            let s2 = (s + 1) % subs_n;
            subs.push(format!("s{}", s2 + 1).into());
            users_of[s2].push(u);
        }
        let first = rng.pick(FIRST_DE);
        let last = rng.pick(LAST_DE);
        ds.users.push(User {
            id: format!("u{}", u + 1).into(),
            login: format!("{}.{}{}@example.test", slug(first), slug(last), u + 1),
            name: format!("{first} {last}"),
            password: None,
            password_hash: hash.clone(),
            subsystems: subs,
            role: if u == 0 { Role::Admin } else { Role::User },
            active: true,
            extra: Default::default(),
        });
    }
    let uid = |u: usize| UserId::from(format!("u{}", u + 1));
    // Companies with 1..=9 contacts each (about 5 on average); ~3 % of contacts stand alone.
    let mut c_next = 0usize;
    let mut k_next = 0usize;
    let mut company_contacts: Vec<(usize, Vec<usize>)> = Vec::new(); // (subsystem, contacts)
    let standalone = p.contacts * 3 / 100;
    while c_next < p.contacts.saturating_sub(standalone) {
        let n = (1 + rng.below(9)).min(p.contacts - standalone - c_next);
        let s = rng.below(subs_n);
        let (city, zip, region, country) = CITIES[s % CITIES.len()];
        let english = country == "GB";
        let name = format!(
            "{}{} {}",
            rng.pick(COMPANY_WORDS),
            rng.pick(COMPANY_WORDS).to_lowercase(),
            if english {
                "Ltd"
            } else {
                rng.pick(COMPANY_FORMS)
            }
        );
        let pool = &users_of[s];
        let mut responsible = Vec::new();
        if !pool.is_empty() {
            responsible.push(uid(pool[rng.below(pool.len())]));
            if rng.chance(30) {
                let second = uid(pool[rng.below(pool.len())]);
                if !responsible.contains(&second) {
                    responsible.push(second);
                }
            }
        }
        let roll = rng.below(100) as u64;
        let mut acc = 0;
        let ty = TYPES
            .iter()
            .find(|(_, w)| {
                acc += w;
                roll < acc
            })
            .map(|(t, _)| *t)
            .unwrap_or("Kunde");
        let k = k_next;
        k_next += 1;
        let domain = format!("{}-{}.example", slug(&name), k + 1);
        let street = format!("{} {}", rng.pick(STREETS), 1 + rng.below(120));
        ds.companies.push(Company {
            id: format!("k{}", k + 1).into(),
            name,
            subsystems: vec![format!("s{}", s + 1).into()],
            responsible,
            types: vec![ty.to_owned()],
            phone: Some(format!(
                "0{} {}",
                30 + rng.below(60),
                1_000_000 + rng.below(8_999_999)
            )),
            email: Some(format!("info@{domain}")),
            website: Some(format!("https://{domain}")),
            address: Some(PostalAddress {
                kind: AddressKind::Work,
                street: Some(street.clone()),
                city: Some(city.to_owned()),
                postal_code: Some(zip.to_owned()),
                region: Some(region.to_owned()),
                country: Some(country.to_owned()),
            }),
            extra: Default::default(),
        });
        let mut members = Vec::new();
        for _ in 0..n {
            let c = c_next;
            c_next += 1;
            members.push(c);
            ds.contacts.push(make_contact(
                &mut rng,
                c,
                Some((k, &domain, &street, s)),
                None,
            ));
        }
        company_contacts.push((s, members));
    }
    while c_next < p.contacts {
        let c = c_next;
        c_next += 1;
        let s = rng.below(subs_n);
        let owner = users_of[s].first().map(|u| uid(*u));
        let mut contact = make_contact(&mut rng, c, None, owner);
        contact.subsystems = vec![format!("s{}", s + 1).into()];
        ds.contacts.push(contact);
    }
    // Projects (one per ~20 contacts) and leads (one per ~25) on random companies.
    let pick_company = |rng: &mut Rng| {
        if company_contacts.is_empty() {
            None
        } else {
            Some(rng.below(company_contacts.len()))
        }
    };
    for p_i in 0..p.contacts / 20 {
        let Some(k) = pick_company(&mut rng) else {
            break;
        };
        let (s, members) = &company_contacts[k];
        let pool = &users_of[*s];
        let mut team: Vec<UserId> = Vec::new();
        for _ in 0..1 + rng.below(4) {
            if let Some(u) = pool.get(rng.below(pool.len().max(1))) {
                if !team.contains(&uid(*u)) {
                    team.push(uid(*u));
                }
            }
        }
        let contacts: Vec<ContactId> = members
            .iter()
            .take(1 + rng.below(5))
            .map(|c| format!("c{}", c + 1).into())
            .collect();
        ds.projects.push(Project {
            id: format!("p{}", p_i + 1).into(),
            name: format!("Projekt {}", p_i + 1),
            subsystems: vec![format!("s{}", s + 1).into()],
            responsible: team.first().cloned(),
            team,
            contacts,
            company: Some(format!("k{}", k + 1).into()),
            extra: Default::default(),
        });
    }
    for l_i in 0..p.contacts / 25 {
        let Some(k) = pick_company(&mut rng) else {
            break;
        };
        let (s, members) = &company_contacts[k];
        let pool = &users_of[*s];
        let contacts: Vec<ContactId> = members
            .iter()
            .take(1 + rng.below(3))
            .map(|c| format!("c{}", c + 1).into())
            .collect();
        ds.leads.push(Lead {
            id: format!("l{}", l_i + 1).into(),
            name: format!("Lead {}", l_i + 1),
            subsystems: vec![format!("s{}", s + 1).into()],
            responsible: pool.get(rng.below(pool.len().max(1))).map(|u| uid(*u)),
            contacts,
            company: Some(format!("k{}", k + 1).into()),
            status: Some(["open", "won", "lost"][rng.below(3)].to_owned()),
            extra: Default::default(),
        });
    }
    ds
}

fn make_contact(
    rng: &mut Rng,
    c: usize,
    company: Option<(usize, &str, &str, usize)>,
    owner: Option<UserId>,
) -> Contact {
    let english = company.is_some_and(|(.., s)| CITIES[s % CITIES.len()].3 == "GB");
    let (first, last) = if english {
        (rng.pick(FIRST_EN), rng.pick(LAST_EN))
    } else {
        (rng.pick(FIRST_DE), rng.pick(LAST_DE))
    };
    let domain = company
        .map(|(_, d, ..)| d.to_owned())
        .unwrap_or_else(|| "privat.example".into());
    let mut emails = Vec::new();
    let n_mail = [0, 1, 1, 1, 2, 2, 3][rng.below(7)];
    for i in 0..n_mail {
        let (addr, kind) = match i {
            0 => (
                format!("{}.{}{}@{domain}", slug(first), slug(last), c + 1),
                AddressKind::Work,
            ),
            1 => (
                format!("{}{}@mail.example", slug(first), c + 1),
                AddressKind::Home,
            ),
            _ => (
                format!("{}.{}{}@other.example", slug(last), slug(first), c + 1),
                AddressKind::Other,
            ),
        };
        emails.push(Email {
            address: addr,
            kind,
        });
    }
    let mut phones = vec![Phone {
        number: format!(
            "0{} {}",
            30 + rng.below(60),
            1_000_000 + rng.below(8_999_999)
        ),
        kind: PhoneKind::Work,
    }];
    if rng.chance(60) {
        phones.push(Phone {
            number: format!(
                "01{} {}",
                51 + rng.below(29),
                1_000_000 + rng.below(8_999_999)
            ),
            kind: PhoneKind::Mobile,
        });
    }
    if rng.chance(10) {
        phones.push(Phone {
            number: format!(
                "0{} {}",
                30 + rng.below(60),
                1_000_000 + rng.below(8_999_999)
            ),
            kind: PhoneKind::Fax,
        });
    }
    let addresses = company
        .map(|(.., street, s)| {
            let (city, zip, region, country) = CITIES[s % CITIES.len()];
            vec![PostalAddress {
                kind: AddressKind::Work,
                street: Some(street.to_owned()),
                city: Some(city.into()),
                postal_code: Some(zip.into()),
                region: Some(region.into()),
                country: Some(country.into()),
            }]
        })
        .unwrap_or_default();
    let birthday = rng.chance(50).then(|| {
        format!(
            "{}-{:02}-{:02}",
            1950 + rng.below(55),
            1 + rng.below(12),
            1 + rng.below(28)
        )
    });
    Contact {
        id: format!("c{}", c + 1).into(),
        companies: company
            .map(|(k, ..)| vec![format!("k{}", k + 1).into()])
            .unwrap_or_default(),
        subsystems: Vec::new(),
        salutation: Some(
            if english {
                "Mr"
            } else if rng.chance(50) {
                "Frau"
            } else {
                "Herr"
            }
            .into(),
        ),
        title: rng.chance(8).then(|| "Dr.".to_owned()),
        first_name: Some(first.into()),
        middle_name: None,
        last_name: Some(last.into()),
        job_title: Some(rng.pick(JOBS).into()),
        department: Some(rng.pick(DEPTS).into()),
        emails,
        phones,
        addresses,
        websites: Vec::new(),
        birthday,
        notes: rng.chance(10).then(|| "Kontakt von der Messe".to_owned()),
        categories: if rng.chance(15) {
            vec!["VIP".into()]
        } else {
            Vec::new()
        },
        owner,
        types: Vec::new(),
        extra: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_valid() {
        let p = GenParams {
            contacts: 2000,
            users: 40,
            subsystems: 3,
            seed: 7,
        };
        let a = generate(&p);
        let b = generate(&p);
        assert_eq!(a, b);
        assert_eq!(a.contacts.len(), 2000);
        assert_eq!(a.users.len(), 40);
        let problems = a.check(&|_, _| false);
        assert!(
            problems.is_empty(),
            "{:?}",
            &problems[..problems.len().min(5)]
        );
        assert!(
            a.companies.len() > 2000 / 10,
            "companies with several contacts"
        );
        assert!(!a.projects.is_empty() && !a.leads.is_empty());
        assert!(a
            .contacts
            .iter()
            .any(|c| c.companies.is_empty() && c.owner.is_some()));
        let c = generate(&GenParams { seed: 8, ..p });
        assert_ne!(a, c, "the seed matters");
    }
}
