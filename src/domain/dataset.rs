//! The dataset format (`docs/dataset.md`): parsing with exact error paths, and the checks
//! that every record's values and references are sound before anything is imported.

use super::model::*;
use serde_json::Value;
use std::collections::HashSet;
use std::fmt;

/// A whole dataset: every kind of record.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dataset {
    /// Subsystems.
    pub subsystems: Vec<Subsystem>,
    /// Users.
    pub users: Vec<User>,
    /// Companies.
    pub companies: Vec<Company>,
    /// Contacts.
    pub contacts: Vec<Contact>,
    /// Projects.
    pub projects: Vec<Project>,
    /// Leads.
    pub leads: Vec<Lead>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataset {
    #[serde(default)]
    subsystems: Vec<Subsystem>,
    #[serde(default)]
    users: Vec<User>,
    #[serde(default)]
    companies: Vec<Company>,
    #[serde(default)]
    contacts: Vec<Contact>,
    #[serde(default)]
    projects: Vec<Project>,
    #[serde(default)]
    leads: Vec<Lead>,
}

/// One problem in a dataset or record, with the path of the value at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Path such as `contacts[17].companies[0]`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// The most problems a parse or check reports; past it one last entry says how many more there
/// were. Keeps a file of a million malformed records from holding a million messages.
pub const MAX_PROBLEMS: usize = 1000;

/// Cuts `problems` to [`MAX_PROBLEMS`], adding `dropped` (problems never pushed) to what is cut,
/// and names the total in a last entry.
fn cap_problems(problems: &mut Vec<Problem>, dropped: usize) {
    let over = problems.len().saturating_sub(MAX_PROBLEMS) + dropped;
    if over > 0 {
        problems.truncate(MAX_PROBLEMS);
        problems.push(Problem {
            path: String::new(),
            message: format!("… and {over} more problems not listed"),
        });
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

fn join(prefix: &str, rest: &str) -> String {
    match (prefix.is_empty(), rest.is_empty()) {
        (_, true) => prefix.to_owned(),
        (true, false) => rest.to_owned(),
        (false, false) if rest.starts_with('[') => format!("{prefix}{rest}"),
        (false, false) => format!("{prefix}.{rest}"),
    }
}

impl Dataset {
    /// Every record, in dependency order (subsystems first, leads last).
    pub fn records(&self) -> impl Iterator<Item = Record> + '_ {
        let s = self.subsystems.iter().cloned().map(Record::Subsystem);
        let u = self.users.iter().cloned().map(Record::User);
        let k = self.companies.iter().cloned().map(Record::Company);
        let c = self.contacts.iter().cloned().map(Record::Contact);
        let p = self.projects.iter().cloned().map(Record::Project);
        let l = self.leads.iter().cloned().map(Record::Lead);
        s.chain(u).chain(k).chain(c).chain(p).chain(l)
    }

    /// Number of records of all kinds.
    pub fn len(&self) -> usize {
        self.subsystems.len()
            + self.users.len()
            + self.companies.len()
            + self.contacts.len()
            + self.projects.len()
            + self.leads.len()
    }

    /// True when the dataset holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a record.
    pub fn push(&mut self, r: Record) {
        match r {
            Record::Subsystem(x) => self.subsystems.push(x),
            Record::User(x) => self.users.push(x),
            Record::Company(x) => self.companies.push(x),
            Record::Contact(x) => self.contacts.push(x),
            Record::Project(x) => self.projects.push(x),
            Record::Lead(x) => self.leads.push(x),
        }
    }

    /// Serialises the dataset in the documented format.
    pub fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        for kind in Kind::ALL {
            let items: Vec<Value> = self
                .records()
                .filter(|r| r.kind() == kind)
                .map(|r| r.to_json())
                .collect();
            m.insert(kind.plural().to_owned(), Value::Array(items));
        }
        Value::Object(m)
    }

    /// Parses a dataset from JSON text, reporting every malformed value with its path.
    /// References are not checked here; see [`Dataset::check`].
    pub fn parse(text: &str) -> Result<Dataset, Vec<Problem>> {
        // Fast path: a well-formed file parses straight into the records; only a file with
        // errors takes the slower walk that names every bad value's path.
        let fast = match serde_json::from_str::<RawDataset>(text) {
            Ok(raw) => {
                return Ok(Dataset {
                    subsystems: raw.subsystems,
                    users: raw.users,
                    companies: raw.companies,
                    contacts: raw.contacts,
                    projects: raw.projects,
                    leads: raw.leads,
                })
            }
            Err(e) => e,
        };
        // The walk builds a JSON tree, which costs far more than the text where objects and
        // arrays are packed tightly (a real dataset has one per 40 bytes or more). Past one
        // per 16 bytes, the first error is reported as the typed reader found it.
        let max = (text.len() / 16).max(crate::json_guard::MAX_CONTAINERS);
        let root = crate::json_guard::parse_within(text.as_bytes(), max).map_err(|e| {
            let message = match e {
                crate::json_guard::JsonError::TooComplex(_) => fast.to_string(),
                crate::json_guard::JsonError::Syntax(e) => format!("not valid JSON: {e}"),
            };
            vec![Problem {
                path: String::new(),
                message,
            }]
        })?;
        Self::from_value(&root)
    }

    /// Like [`Dataset::parse`], from an already parsed JSON value.
    pub fn from_value(root: &Value) -> Result<Dataset, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut dropped = 0usize;
        let mut out = Dataset::default();
        let Some(obj) = root.as_object() else {
            return Err(vec![Problem {
                path: String::new(),
                message: "a dataset is a JSON object".into(),
            }]);
        };
        for key in obj.keys() {
            if Kind::from_plural(key).is_none() {
                problems.push(Problem {
                    path: key.clone(),
                    message: format!(
                        "unknown section (expected one of {})",
                        Kind::ALL.map(|k| k.plural()).join(", ")
                    ),
                });
            }
        }
        for kind in Kind::ALL {
            let Some(section) = obj.get(kind.plural()) else {
                continue;
            };
            let Some(items) = section.as_array() else {
                problems.push(Problem {
                    path: kind.plural().into(),
                    message: "expected an array".into(),
                });
                continue;
            };
            for (i, item) in items.iter().enumerate() {
                let prefix = format!("{}[{i}]", kind.plural());
                match Record::from_json(kind, item) {
                    // Once the dataset is known to be bad, its records are not kept.
                    Ok(r) if problems.is_empty() => out.push(r),
                    Ok(_) => {}
                    Err(_) if problems.len() >= MAX_PROBLEMS => dropped += 1,
                    Err((path, message)) => problems.push(Problem {
                        path: join(&prefix, &path),
                        message,
                    }),
                }
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            cap_problems(&mut problems, dropped);
            Err(problems)
        }
    }

    /// Checks values and references. `exists` answers for ids outside this dataset (records
    /// already in the CRM); pass `|_, _| false` to check a self-contained file.
    pub fn check(&self, exists: &dyn Fn(Kind, &str) -> bool) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut dropped = 0usize;
        // Ids only: the records are visited one at a time, never copied all at once.
        let mut ids: [HashSet<String>; 6] = Default::default();
        // Duplicate and empty ids.
        let mut idx = [0usize; 6];
        for r in self.records() {
            let k = r.kind() as usize;
            let path = format!("{}[{}].id", r.kind().plural(), idx[k]);
            idx[k] += 1;
            let problem = if r.id().trim().is_empty() {
                Some("id must not be empty".to_owned())
            } else if !ids[k].insert(r.id().to_owned()) {
                Some(format!("duplicate {} id \"{}\"", r.kind(), r.id()))
            } else {
                None
            };
            match problem {
                Some(_) if problems.len() >= MAX_PROBLEMS => dropped += 1,
                Some(message) => problems.push(Problem { path, message }),
                None => {}
            }
        }
        let mut logins: HashSet<String> = HashSet::new();
        for (i, u) in self.users.iter().enumerate() {
            if !logins.insert(u.login.trim().to_lowercase()) {
                if problems.len() >= MAX_PROBLEMS {
                    dropped += 1;
                    continue;
                }
                problems.push(Problem {
                    path: format!("users[{i}].login"),
                    message: format!("duplicate login \"{}\"", u.login),
                });
            }
        }
        let known = |kind: Kind, id: &str| ids[kind as usize].contains(id) || exists(kind, id);
        let mut idx = [0usize; 6];
        for r in self.records() {
            let k = r.kind() as usize;
            let prefix = format!("{}[{}]", r.kind().plural(), idx[k]);
            idx[k] += 1;
            check_record(&r, &prefix, &known, &mut problems);
            if problems.len() > MAX_PROBLEMS {
                dropped += problems.len() - MAX_PROBLEMS;
                problems.truncate(MAX_PROBLEMS);
            }
        }
        cap_problems(&mut problems, dropped);
        problems
    }
}

/// The longest record id, in bytes: wire ids carry the user id with a one-byte length, so a
/// longer user id would make every id minted for that user invalid. Every kind shares the
/// limit.
pub const MAX_ID_BYTES: usize = 255;

/// Checks one record's values and references; `known` tells whether a referenced id exists.
pub fn check_record(
    r: &Record,
    prefix: &str,
    known: &dyn Fn(Kind, &str) -> bool,
    out: &mut Vec<Problem>,
) {
    // (field path, referenced kind, id), checked at the end.
    let mut refs: Vec<(String, Kind, &str)> = Vec::new();
    fn many<'a, T: AsRef<str> + 'a>(
        refs: &mut Vec<(String, Kind, &'a str)>,
        field: &str,
        kind: Kind,
        ids: &'a [T],
    ) {
        for (i, id) in ids.iter().enumerate() {
            refs.push((format!("{field}[{i}]"), kind, id.as_ref()));
        }
    }
    fn one<'a, T: AsRef<str> + 'a>(
        refs: &mut Vec<(String, Kind, &'a str)>,
        field: &str,
        kind: Kind,
        id: &'a Option<T>,
    ) {
        if let Some(id) = id {
            refs.push((field.to_owned(), kind, id.as_ref()));
        }
    }
    let mut bad = |field: &str, message: String| {
        out.push(Problem {
            path: format!("{prefix}.{field}"),
            message,
        })
    };
    if r.id().len() > MAX_ID_BYTES {
        bad(
            "id",
            format!(
                "is {} bytes long; ids may have at most {MAX_ID_BYTES}",
                r.id().len()
            ),
        );
    }
    match r {
        Record::Subsystem(s) => {
            if s.name.trim().is_empty() {
                bad("name", "must not be empty".into());
            }
        }
        Record::User(u) => {
            many(&mut refs, "subsystems", Kind::Subsystem, &u.subsystems);
            if u.login.trim().is_empty() {
                bad("login", "must not be empty".into());
            }
        }
        Record::Company(c) => {
            many(&mut refs, "subsystems", Kind::Subsystem, &c.subsystems);
            many(&mut refs, "responsible", Kind::User, &c.responsible);
            if c.name.trim().is_empty() {
                bad("name", "must not be empty".into());
            }
            if let Some(Err(m)) = c.email.as_deref().map(check_email) {
                bad("email", m);
            }
            if let Some(Err(m)) = c.phone.as_deref().map(check_phone) {
                bad("phone", m);
            }
        }
        Record::Contact(c) => {
            many(&mut refs, "companies", Kind::Company, &c.companies);
            many(&mut refs, "subsystems", Kind::Subsystem, &c.subsystems);
            one(&mut refs, "owner", Kind::User, &c.owner);
            for (i, e) in c.emails.iter().enumerate() {
                if let Err(m) = check_email(&e.address) {
                    bad(&format!("emails[{i}].address"), m);
                }
            }
            for (i, p) in c.phones.iter().enumerate() {
                if let Err(m) = check_phone(&p.number) {
                    bad(&format!("phones[{i}].number"), m);
                }
            }
            if let Some(Err(m)) = c.birthday.as_deref().map(check_date) {
                bad("birthday", m);
            }
        }
        Record::Project(p) => {
            many(&mut refs, "subsystems", Kind::Subsystem, &p.subsystems);
            many(&mut refs, "team", Kind::User, &p.team);
            one(&mut refs, "responsible", Kind::User, &p.responsible);
            many(&mut refs, "contacts", Kind::Contact, &p.contacts);
            one(&mut refs, "company", Kind::Company, &p.company);
        }
        Record::Lead(l) => {
            many(&mut refs, "subsystems", Kind::Subsystem, &l.subsystems);
            one(&mut refs, "responsible", Kind::User, &l.responsible);
            many(&mut refs, "contacts", Kind::Contact, &l.contacts);
            one(&mut refs, "company", Kind::Company, &l.company);
        }
    }
    for (field, kind, id) in refs {
        if !known(kind, id) {
            out.push(Problem {
                path: format!("{prefix}.{field}"),
                message: unknown(kind, id),
            });
        }
    }
}

fn unknown(kind: Kind, id: &str) -> String {
    format!("unknown {kind} \"{id}\"")
}

/// Checks that an e-mail address has the shape local@domain with a dotted or local domain.
pub fn check_email(s: &str) -> Result<(), String> {
    let bad = || Err(format!("invalid e-mail address \"{s}\""));
    if s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad();
    }
    let Some((local, domain)) = s.rsplit_once('@') else {
        return bad();
    };
    if local.is_empty() || local.len() > 64 || domain.is_empty() || local.contains('@') {
        return bad();
    }
    if domain.starts_with('.') || domain.ends_with('.') || domain.contains("..") {
        return bad();
    }
    Ok(())
}

/// Checks that a phone number holds digits and only the characters phone numbers are written
/// with.
pub fn check_phone(s: &str) -> Result<(), String> {
    let digits = s.chars().filter(|c| c.is_ascii_digit()).count();
    let ok_chars = s
        .chars()
        .all(|c| c.is_ascii_digit() || " +-()/.xX".contains(c) || c.is_alphabetic());
    if !(3..=20).contains(&digits) || !ok_chars || s.len() > 64 {
        return Err(format!("invalid phone number \"{s}\""));
    }
    Ok(())
}

/// Checks a calendar date `YYYY-MM-DD`.
pub fn check_date(s: &str) -> Result<(), String> {
    let bad = || Err(format!("invalid date \"{s}\" (expected YYYY-MM-DD)"));
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return bad();
    }
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<u32>().ok());
    let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10)) else {
        return bad();
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return bad(),
    };
    if !(1..=days).contains(&d) || !(1000..=9999).contains(&y) {
        return bad();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_unknown_reference_with_exact_path() {
        let text = r#"{"subsystems":[{"id":"s1","name":"B"}],
            "companies":[{"id":"k1","name":"A","subsystems":["s1"]}],
            "contacts":[{"id":"c1","companies":["k1"]},{"id":"c2","companies":["k9"]}]}"#;
        let ds = Dataset::parse(text).expect("parses");
        let p = ds.check(&|_, _| false);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(
            p[0].to_string(),
            r#"contacts[1].companies[0]: unknown company "k9""#
        );
    }

    #[test]
    fn reports_malformed_values_with_path_and_all_at_once() {
        let text = r#"{"contacts":[{"id":"c1","emails":[{"address":"a@b.c","kind":"wrk"}]},
                        {"id":"c2","phones":[{"number":"1","kind":"mobile"}, {"number":"x","kind":"pager"}]}],
                       "users":[{"id":"u1"}]}"#;
        let errs = Dataset::parse(text).expect_err("must fail");
        let s: Vec<String> = errs.iter().map(|p| p.to_string()).collect();
        assert_eq!(s.len(), 3, "{s:?}");
        assert!(
            s.iter()
                .any(|m| m.starts_with("contacts[0].emails[0].kind: unknown variant `wrk`")),
            "{s:?}"
        );
        assert!(
            s.iter()
                .any(|m| m.starts_with("contacts[1].phones[1].kind: unknown variant `pager`")),
            "{s:?}"
        );
        assert!(
            s.iter()
                .any(|m| m.starts_with("users[0]: missing field `login`")),
            "{s:?}"
        );
    }

    #[test]
    fn checks_values() {
        let text = r#"{"users":[{"id":"u1","login":"a","name":"A"}],
            "contacts":[{"id":"c1","birthday":"2023-02-29","emails":[{"address":"nope"}],
                         "phones":[{"number":"12","kind":"work"}],"owner":"u7"},
                        {"id":"c1"}]}"#;
        let ds = Dataset::parse(text).expect("parses");
        let s: Vec<String> = ds
            .check(&|_, _| false)
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert!(
            s.contains(&r#"contacts[1].id: duplicate contact id "c1""#.to_string()),
            "{s:?}"
        );
        assert!(
            s.contains(&r#"contacts[0].owner: unknown user "u7""#.to_string()),
            "{s:?}"
        );
        assert!(
            s.iter()
                .any(|m| m.starts_with("contacts[0].birthday: invalid date")),
            "{s:?}"
        );
        assert!(
            s.iter()
                .any(|m| m.starts_with("contacts[0].emails[0].address: invalid e-mail")),
            "{s:?}"
        );
        assert!(
            s.iter()
                .any(|m| m.starts_with("contacts[0].phones[0].number: invalid phone")),
            "{s:?}"
        );
    }

    #[test]
    fn unmapped_fields_survive_a_round_trip() {
        let v: Value = serde_json::json!({"id":"c1","crm_score":7,"first_name":"Eva"});
        let r = Record::from_json(Kind::Contact, &v).expect("parses");
        assert_eq!(r.to_json()["crm_score"], 7);
    }

    #[test]
    fn dates() {
        assert!(check_date("2024-02-29").is_ok());
        assert!(check_date("2023-02-29").is_err());
        assert!(check_date("1980-13-01").is_err());
        assert!(check_date("1980-5-4").is_err());
    }

    #[test]
    fn caps_the_problems_it_reports() {
        // 5,000 malformed contacts: the first MAX_PROBLEMS are named, the rest counted.
        let text = format!("{{\"contacts\":[{}0]}}", "0,".repeat(4999));
        let p = Dataset::parse(&text).expect_err("malformed");
        assert_eq!(p.len(), MAX_PROBLEMS + 1, "{:?}", p.last());
        assert_eq!(p[0].path, "contacts[0]");
        assert_eq!(
            p[MAX_PROBLEMS].message,
            "… and 4000 more problems not listed"
        );
        // The same for references: 3,000 contacts, each naming an unknown company.
        let contacts: Vec<String> = (0..3000)
            .map(|i| format!(r#"{{"id":"c{i}","companies":["k{i}"]}}"#))
            .collect();
        let ds =
            Dataset::parse(&format!("{{\"contacts\":[{}]}}", contacts.join(","))).expect("parses");
        let p = ds.check(&|_, _| false);
        assert_eq!(p.len(), MAX_PROBLEMS + 1);
        assert_eq!(
            p[MAX_PROBLEMS].message,
            "… and 2000 more problems not listed"
        );
    }
}
