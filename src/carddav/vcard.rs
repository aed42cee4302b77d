//! vCard in and out: 3.0 (RFC 2426) by default, 4.0 (RFC 6350) when asked, rendered from
//! the one card every face shows (`domain::mapping::Card`); parsed into the field edits every
//! face writes with (`domain::patch::Edit`). Parsing takes what real clients send: folded
//! lines, quoted-printable (with its charset) from 3.0 clients, Apple's grouped properties
//! (`item1.EMAIL` + `item1.X-ABLabel`), `PREF`, bare 2.1-style type parameters, `PHOTO`.
//! Properties crmgate cannot store are dropped and named, never refused; only malformed input
//! and input past the limits is refused.

use crate::domain::mapping::{AddressSlot, Card, PhoneSlot};
use crate::domain::patch::{AddrPart, Edit, Field};
use crate::view::Item;

/// vCard versions crmgate speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// RFC 2426.
    V3,
    /// RFC 6350.
    V4,
}

impl Version {
    /// The media type parameter value.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V3 => "3.0",
            Version::V4 => "4.0",
        }
    }
}

/// Most properties in one vCard, and most of one name (beyond: refused, nothing written).
pub const MAX_PROPERTIES: usize = 500;
/// Most values of one property name (a card with 10,000 EMAIL lines is refused).
pub const MAX_PER_NAME: usize = 50;

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ',' => out.push_str("\\,"),
            ';' => out.push_str("\\;"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// Appends one content line, folded at 75 octets without splitting a character.
fn line(out: &mut String, l: &str) {
    let mut width = 0;
    for c in l.chars() {
        let n = c.len_utf8();
        if width + n > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(c);
        width += n;
    }
    out.push_str("\r\n");
}

fn opt(s: &Option<String>) -> String {
    s.as_deref().map(escape).unwrap_or_default()
}

/// `20261201T053000Z` for unix seconds (the basic form of the one date formatter).
fn rev(secs: u64) -> String {
    crate::domain::time::system_time(secs).replace(['-', ':'], "")
}

fn phone_types(slot: PhoneSlot, v: Version) -> &'static str {
    match (slot, v) {
        (PhoneSlot::BusinessPhone | PhoneSlot::BusinessPhone2, Version::V3) => "WORK,VOICE",
        (PhoneSlot::BusinessPhone | PhoneSlot::BusinessPhone2, Version::V4) => "work,voice",
        (PhoneSlot::HomePhone | PhoneSlot::HomePhone2, Version::V3) => "HOME,VOICE",
        (PhoneSlot::HomePhone | PhoneSlot::HomePhone2, Version::V4) => "home,voice",
        (PhoneSlot::MobilePhone, Version::V3) => "CELL,VOICE",
        (PhoneSlot::MobilePhone, Version::V4) => "cell,voice",
        (PhoneSlot::BusinessFax, Version::V3) => "WORK,FAX",
        (PhoneSlot::BusinessFax, Version::V4) => "work,fax",
        (PhoneSlot::OtherTelephone, Version::V3) => "VOICE",
        (PhoneSlot::OtherTelephone, Version::V4) => "voice",
    }
}

fn address_type(slot: AddressSlot, v: Version) -> &'static str {
    match (slot, v) {
        (AddressSlot::Business, Version::V3) => "WORK",
        (AddressSlot::Business, Version::V4) => "work",
        (AddressSlot::Home, Version::V3) => "HOME",
        (AddressSlot::Home, Version::V4) => "home",
        (AddressSlot::Other, Version::V3) => "POSTAL",
        (AddressSlot::Other, Version::V4) => "postal",
    }
}

/// The vCard of an item. `UID` is the contact's id, `REV` its last change.
pub fn render(item: &Item, v: Version) -> String {
    let c: &Card = &item.card;
    let mut out = String::with_capacity(512);
    line(&mut out, "BEGIN:VCARD");
    line(&mut out, &format!("VERSION:{}", v.as_str()));
    line(&mut out, "PRODID:-//crmgate//CardDAV//EN");
    line(&mut out, &format!("UID:{}", escape(&item.contact_id)));
    line(&mut out, &format!("FN:{}", escape(&c.display_name)));
    line(
        &mut out,
        &format!(
            "N:{};{};{};{};",
            opt(&c.surname),
            opt(&c.given_name),
            opt(&c.middle_name),
            opt(&c.title)
        ),
    );
    if c.company_name.is_some() || c.department.is_some() {
        let org = match &c.department {
            Some(d) => format!("{};{}", opt(&c.company_name), escape(d)),
            None => opt(&c.company_name),
        };
        line(&mut out, &format!("ORG:{org}"));
    }
    if let Some(t) = &c.job_title {
        line(&mut out, &format!("TITLE:{}", escape(t)));
    }
    for (n, e) in c.emails.iter().filter(|e| !e.placeholder).enumerate() {
        let pref = match (n, v) {
            (0, Version::V3) => ",PREF",
            (0, Version::V4) => ";PREF=1",
            _ => "",
        };
        let kind = match v {
            Version::V3 => format!("EMAIL;TYPE=INTERNET{pref}"),
            Version::V4 => format!("EMAIL{pref}"),
        };
        line(&mut out, &format!("{kind}:{}", escape(&e.address)));
    }
    for (slot, number) in &c.phones {
        line(
            &mut out,
            &format!("TEL;TYPE={}:{}", phone_types(*slot, v), escape(number)),
        );
    }
    for (slot, a) in &c.addresses {
        line(
            &mut out,
            &format!(
                "ADR;TYPE={}:;;{};{};{};{};{}",
                address_type(*slot, v),
                opt(&a.street),
                opt(&a.city),
                opt(&a.region),
                opt(&a.postal_code),
                opt(&a.country)
            ),
        );
    }
    if let Some(u) = &c.web_page {
        line(&mut out, &format!("URL:{}", escape(u)));
    }
    if let Some(b) = &c.birthday {
        line(&mut out, &format!("BDAY:{}", escape(b)));
    }
    if let Some(n) = &c.notes {
        line(&mut out, &format!("NOTE:{}", escape(n)));
    }
    if !c.categories.is_empty() {
        let list: Vec<String> = c.categories.iter().map(|s| escape(s)).collect();
        line(&mut out, &format!("CATEGORIES:{}", list.join(",")));
    }
    line(&mut out, &format!("REV:{}", rev(item.modified)));
    line(&mut out, "END:VCARD");
    out
}

/// One content line, parsed.
#[derive(Clone, Debug, PartialEq)]
struct Prop {
    name: String,
    /// Parameters, names upper-cased; bare 2.1-style parameters are `TYPE` values.
    params: Vec<(String, String)>,
    value: String,
}

impl Prop {
    fn types(&self) -> Vec<String> {
        self.params
            .iter()
            .filter(|(k, _)| k == "TYPE")
            .flat_map(|(_, v)| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .collect()
    }

    fn pref(&self) -> u32 {
        let in_type = self.types().iter().any(|t| t == "pref");
        let param = self
            .params
            .iter()
            .find(|(k, _)| k == "PREF")
            .and_then(|(_, v)| v.parse::<u32>().ok());
        match (param, in_type) {
            (Some(n), _) => n,
            (None, true) => 1,
            (None, false) => 101,
        }
    }
}

/// Why a vCard was refused (safe to show to the client).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadCard(pub String);

fn bad(m: impl Into<String>) -> BadCard {
    BadCard(m.into())
}

/// Unfolds and splits into logical lines (quoted-printable soft breaks joined too).
fn logical_lines(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut qp_open = false;
    for raw in text.split('\n') {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if let Some(rest) = raw.strip_prefix([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.push_str(rest);
                continue;
            }
        }
        if qp_open {
            if let Some(last) = out.last_mut() {
                last.pop(); // the soft break's '='
                last.push_str(raw);
                qp_open = last.ends_with('=');
                continue;
            }
        }
        if raw.is_empty() {
            continue;
        }
        let head = raw.split(':').next().unwrap_or("").to_ascii_uppercase();
        qp_open = head.contains("QUOTED-PRINTABLE") && raw.ends_with('=');
        out.push(raw.to_owned());
    }
    out
}

/// Most parameters of one property (real cards have a handful).
pub const MAX_PARAMS: usize = 32;

fn split_params(head: &str) -> Result<(String, Vec<(String, String)>), BadCard> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in head.chars() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => {
                parts.push(std::mem::take(&mut cur));
                if parts.len() > MAX_PARAMS {
                    return Err(bad(format!(
                        "more than {MAX_PARAMS} parameters on one property"
                    )));
                }
            }
            c => cur.push(c),
        }
    }
    parts.push(cur);
    let mut it = parts.into_iter();
    let name = it.next().unwrap_or_default();
    // Apple's grouping (`item1.EMAIL`): the group carries no meaning crmgate keeps.
    let name = name
        .rsplit('.')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_uppercase();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(bad(format!("\"{head}\" is no property name")));
    }
    let mut params = Vec::new();
    for p in it {
        match p.split_once('=') {
            Some((k, v)) => params.push((k.trim().to_ascii_uppercase(), v.trim().to_owned())),
            None if !p.trim().is_empty() => {
                let v = p.trim().to_owned();
                let k = match v.to_ascii_uppercase().as_str() {
                    "QUOTED-PRINTABLE" | "BASE64" | "B" => "ENCODING",
                    _ => "TYPE",
                };
                params.push((k.to_owned(), v));
            }
            None => {}
        }
    }
    Ok((name, params))
}

fn quoted_printable(v: &str, charset: &str) -> Result<String, BadCard> {
    let b = v.as_bytes();
    let mut bytes = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(x) => {
                    bytes.push(x);
                    i += 3;
                }
                None => {
                    // A soft break left at the very end.
                    i += 1;
                }
            }
        } else {
            bytes.push(b[i]);
            i += 1;
        }
    }
    let cs = charset.to_ascii_lowercase();
    if cs.is_empty() || cs == "utf-8" || cs == "utf8" || cs == "us-ascii" {
        String::from_utf8(bytes).map_err(|_| bad("quoted-printable value is not UTF-8"))
    } else if cs == "iso-8859-1" || cs == "latin1" || cs == "windows-1252" {
        Ok(bytes.into_iter().map(char::from).collect())
    } else {
        Err(bad(format!("charset {charset} is not supported")))
    }
}

/// Splits a value on unescaped `sep` and unescapes each part.
fn components(v: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut it = v.chars();
    while let Some(c) = it.next() {
        match c {
            '\\' => match it.next() {
                Some('n' | 'N') => cur.push('\n'),
                Some(x) => cur.push(x),
                None => {}
            },
            c if c == sep => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut it = v.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some('n' | 'N') => out.push('\n'),
                Some(x) => out.push(x),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn parse_props(text: &str) -> Result<Vec<Prop>, BadCard> {
    let lines = logical_lines(text);
    let mut props = Vec::new();
    let mut began = false;
    let mut ended = false;
    for l in lines {
        let Some((head, value)) = split_head(&l) else {
            return Err(bad(format!("line without ':': {}", clip(&l))));
        };
        let (name, params) = split_params(head)?;
        match name.as_str() {
            "BEGIN" if value.eq_ignore_ascii_case("VCARD") => {
                if began {
                    return Err(bad("one vCard per resource"));
                }
                began = true;
                continue;
            }
            "END" if value.eq_ignore_ascii_case("VCARD") => {
                ended = true;
                continue;
            }
            _ => {}
        }
        if !began || ended {
            return Err(bad("properties outside BEGIN:VCARD … END:VCARD"));
        }
        let qp = params
            .iter()
            .any(|(k, v)| k == "ENCODING" && v.eq_ignore_ascii_case("QUOTED-PRINTABLE"));
        let value = if qp {
            let cs = params
                .iter()
                .find(|(k, _)| k == "CHARSET")
                .map(|(_, v)| v.as_str())
                .unwrap_or("");
            quoted_printable(value, cs)?
        } else {
            value.to_owned()
        };
        props.push(Prop {
            name,
            params,
            value,
        });
        if props.len() > MAX_PROPERTIES {
            return Err(bad(format!("more than {MAX_PROPERTIES} properties")));
        }
    }
    if !began || !ended {
        return Err(bad("no BEGIN:VCARD … END:VCARD"));
    }
    Ok(props)
}

/// Splits `name;params:value` at the first ':' outside a quoted parameter value.
fn split_head(l: &str) -> Option<(&str, &str)> {
    let mut quoted = false;
    for (i, c) in l.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ':' if !quoted => return Some((&l[..i], &l[i + 1..])),
            _ => {}
        }
    }
    None
}

fn clip(s: &str) -> String {
    s.chars().take(60).collect()
}

/// A vCard read for a write: the edits that make a contact hold what it says (every field
/// it leaves out is cleared), its UID, and the properties crmgate keeps no place for.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    /// Edits, one per field.
    pub edits: Vec<Edit>,
    /// The card's UID.
    pub uid: Option<String>,
    /// Properties (or values) dropped, by name: crmgate has no place for them.
    pub dropped: Vec<String>,
}

/// Properties a card always carries that hold nothing to store.
const STRUCTURAL: [&str; 5] = ["VERSION", "PRODID", "REV", "UID", "FN"];

/// Reads a vCard 3.0 or 4.0 (2.1-style parameters accepted).
pub fn parse(text: &str) -> Result<Parsed, BadCard> {
    let props = parse_props(text)?;
    let mut count: std::collections::HashMap<&str, usize> = Default::default();
    for p in &props {
        let n = count.entry(p.name.as_str()).or_default();
        *n += 1;
        if *n > MAX_PER_NAME {
            return Err(bad(format!(
                "more than {MAX_PER_NAME} {} properties",
                p.name
            )));
        }
    }
    let mut edits = Vec::new();
    let mut dropped: Vec<String> = Vec::new();
    let mut drop = |what: &str| {
        if !dropped.iter().any(|d| d == what) {
            dropped.push(what.to_owned());
        }
    };
    let first = |name: &str| props.iter().find(|p| p.name == name);
    let set_or_clear = |edits: &mut Vec<Edit>, f: Field, v: Option<String>| match v
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
    {
        Some(s) => edits.push(Edit::Set(f, s)),
        None => edits.push(Edit::Delete(f)),
    };
    // Names: N when present, else FN split at its last space.
    let (mut surname, mut given, mut middle, mut prefix) = (None, None, None, None);
    if let Some(n) = first("N") {
        let c = components(&n.value, ';');
        surname = c.first().cloned();
        given = c.get(1).cloned();
        middle = c.get(2).cloned();
        prefix = c.get(3).cloned();
        if c.get(4).is_some_and(|s| !s.trim().is_empty()) {
            drop("N (suffix)");
        }
    } else if let Some(f) = first("FN") {
        let full = unescape(&f.value);
        match full.trim().rsplit_once(' ') {
            Some((g, s)) => {
                given = Some(g.to_owned());
                surname = Some(s.to_owned());
            }
            None => surname = Some(full),
        }
    }
    set_or_clear(&mut edits, Field::Surname, surname);
    set_or_clear(&mut edits, Field::GivenName, given);
    set_or_clear(&mut edits, Field::MiddleName, middle);
    set_or_clear(&mut edits, Field::Title, prefix);
    let org = first("ORG").map(|o| components(&o.value, ';'));
    set_or_clear(
        &mut edits,
        Field::CompanyName,
        org.as_ref().and_then(|c| c.first().cloned()),
    );
    set_or_clear(
        &mut edits,
        Field::Department,
        org.as_ref().and_then(|c| c.get(1).cloned()),
    );
    set_or_clear(
        &mut edits,
        Field::JobTitle,
        first("TITLE").map(|t| unescape(&t.value)),
    );
    // E-mails: up to three slots, preferred first.
    let mut emails: Vec<&Prop> = props.iter().filter(|p| p.name == "EMAIL").collect();
    emails.sort_by_key(|p| p.pref());
    for n in 1..=3u8 {
        set_or_clear(
            &mut edits,
            Field::Email(n),
            emails.get(n as usize - 1).map(|p| unescape(&p.value)),
        );
    }
    if emails.len() > 3 {
        drop("EMAIL (beyond three)");
    }
    // Phones into their slots by type.
    let mut slots: Vec<(PhoneSlot, String)> = Vec::new();
    let mut tels: Vec<&Prop> = props.iter().filter(|p| p.name == "TEL").collect();
    tels.sort_by_key(|p| p.pref());
    for t in tels {
        let ty = t.types();
        let has = |x: &str| ty.iter().any(|t| t == x);
        let candidates: &[PhoneSlot] = if has("fax") {
            &[PhoneSlot::BusinessFax]
        } else if has("cell") || has("mobile") || has("iphone") {
            &[PhoneSlot::MobilePhone]
        } else if has("home") {
            &[PhoneSlot::HomePhone, PhoneSlot::HomePhone2]
        } else if has("work") {
            &[PhoneSlot::BusinessPhone, PhoneSlot::BusinessPhone2]
        } else if ty.iter().all(|t| t == "voice" || t == "pref") {
            &[
                PhoneSlot::BusinessPhone,
                PhoneSlot::BusinessPhone2,
                PhoneSlot::OtherTelephone,
            ]
        } else {
            &[PhoneSlot::OtherTelephone]
        };
        let value = unescape(t.value.trim_start_matches("tel:"));
        match candidates
            .iter()
            .find(|s| !slots.iter().any(|(x, _)| x == *s))
        {
            Some(s) => slots.push((*s, value)),
            None => drop("TEL (no free slot)"),
        }
    }
    for s in [
        PhoneSlot::BusinessPhone,
        PhoneSlot::BusinessPhone2,
        PhoneSlot::HomePhone,
        PhoneSlot::HomePhone2,
        PhoneSlot::MobilePhone,
        PhoneSlot::BusinessFax,
        PhoneSlot::OtherTelephone,
    ] {
        let v = slots.iter().find(|(x, _)| *x == s).map(|(_, n)| n.clone());
        set_or_clear(&mut edits, Field::Phone(s), v);
    }
    // Addresses by type.
    let mut addrs: Vec<(AddressSlot, Vec<String>)> = Vec::new();
    for a in props.iter().filter(|p| p.name == "ADR") {
        let ty = a.types();
        let slot = if ty.iter().any(|t| t == "work") {
            AddressSlot::Business
        } else if ty.iter().any(|t| t == "home") {
            AddressSlot::Home
        } else {
            AddressSlot::Other
        };
        if addrs.iter().any(|(s, _)| *s == slot) {
            drop("ADR (second of a kind)");
            continue;
        }
        addrs.push((slot, components(&a.value, ';')));
    }
    for slot in [AddressSlot::Business, AddressSlot::Home, AddressSlot::Other] {
        let parts = addrs.iter().find(|(s, _)| *s == slot).map(|(_, p)| p);
        let get = |i: usize| parts.and_then(|p| p.get(i).cloned());
        // PO box and extended address join the street.
        let street = parts.map(|p| {
            [p.first(), p.get(1), p.get(2)]
                .into_iter()
                .flatten()
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        });
        for (part, v) in [
            (AddrPart::Street, street),
            (AddrPart::City, get(3)),
            (AddrPart::State, get(4)),
            (AddrPart::PostalCode, get(5)),
            (AddrPart::Country, get(6)),
        ] {
            set_or_clear(&mut edits, Field::Address(slot, part), v);
        }
    }
    let urls: Vec<&Prop> = props.iter().filter(|p| p.name == "URL").collect();
    set_or_clear(
        &mut edits,
        Field::WebPage,
        urls.first().map(|u| unescape(&u.value)),
    );
    if urls.len() > 1 {
        drop("URL (beyond one)");
    }
    let bday = match first("BDAY") {
        Some(b) => match birthday(&b.value) {
            Some(d) => Some(d),
            None => {
                drop("BDAY (no full date)");
                None
            }
        },
        None => None,
    };
    set_or_clear(&mut edits, Field::Birthday, bday);
    set_or_clear(
        &mut edits,
        Field::Notes,
        first("NOTE").map(|n| unescape(&n.value)),
    );
    let cats: Vec<String> = props
        .iter()
        .filter(|p| p.name == "CATEGORIES")
        .flat_map(|p| components(&p.value, ','))
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    edits.push(Edit::SetList(Field::Categories, cats));
    let known = [
        "N",
        "ORG",
        "TITLE",
        "EMAIL",
        "TEL",
        "ADR",
        "URL",
        "BDAY",
        "NOTE",
        "CATEGORIES",
    ];
    for p in &props {
        if !known.contains(&p.name.as_str()) && !STRUCTURAL.contains(&p.name.as_str()) {
            drop(&p.name);
        }
    }
    Ok(Parsed {
        edits,
        uid: first("UID").map(|u| unescape(&u.value)),
        dropped,
    })
}

/// `YYYY-MM-DD` from the date forms clients send (`1990-01-31`, `19900131`, with a time);
/// `None` for a date without a year (`--0131`) or no date.
fn birthday(v: &str) -> Option<String> {
    let d = v.trim().split('T').next()?.replace('-', "");
    if d.len() != 8 || !d.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::mapping::CardEmail;
    use crate::domain::PostalAddress;

    fn item() -> Item {
        Item {
            folder: crate::domain::rules::VirtualFolder::My,
            contact_id: "c1".into(),
            id: "x".into(),
            change_key: "k".into(),
            uid: 1,
            modified: 1_796_103_000,
            card: Card {
                display_name: "Eva Klein".into(),
                file_as: "Klein, Eva".into(),
                given_name: Some("Eva".into()),
                surname: Some("Klein".into()),
                company_name: Some("ACME; Inc".into()),
                department: Some("R&D".into()),
                job_title: Some("CTO".into()),
                emails: vec![CardEmail {
                    index: 1,
                    address: "eva@acme.test".into(),
                    placeholder: false,
                }],
                phones: vec![
                    (PhoneSlot::BusinessPhone, "+49 30 1234567".into()),
                    (PhoneSlot::MobilePhone, "+49 171 1".into()),
                ],
                addresses: vec![(
                    AddressSlot::Business,
                    PostalAddress {
                        street: Some("Hauptstr. 5".into()),
                        city: Some("Berlin".into()),
                        postal_code: Some("10115".into()),
                        country: Some("DE".into()),
                        ..Default::default()
                    },
                )],
                notes: Some("line one\nline, two".into()),
                categories: vec!["VIP".into(), "a,b".into()],
                ..Default::default()
            },
        }
    }

    fn set(p: &Parsed, f: Field) -> Option<&str> {
        p.edits.iter().find_map(|e| match e {
            Edit::Set(x, v) if *x == f => Some(v.as_str()),
            _ => None,
        })
    }

    #[test]
    fn renders_and_reads_back_the_same_fields() {
        for v in [Version::V3, Version::V4] {
            let text = render(&item(), v);
            assert!(text.starts_with("BEGIN:VCARD\r\nVERSION:"), "{text}");
            assert!(text.contains("ORG:ACME\\; Inc;R&D\r\n"), "{text}");
            assert!(text.contains("REV:20261201T"), "{text}");
            assert!(text.lines().all(|l| l.len() <= 76), "folded: {text}");
            let p = parse(&text).expect("parses");
            assert_eq!(p.uid.as_deref(), Some("c1"));
            assert_eq!(set(&p, Field::Surname), Some("Klein"));
            assert_eq!(set(&p, Field::CompanyName), Some("ACME; Inc"));
            assert_eq!(set(&p, Field::Department), Some("R&D"));
            assert_eq!(set(&p, Field::Email(1)), Some("eva@acme.test"));
            assert!(p.edits.contains(&Edit::Delete(Field::Email(2))));
            assert_eq!(
                set(&p, Field::Phone(PhoneSlot::MobilePhone)),
                Some("+49 171 1")
            );
            assert_eq!(
                set(&p, Field::Phone(PhoneSlot::BusinessPhone)),
                Some("+49 30 1234567")
            );
            assert_eq!(
                set(&p, Field::Address(AddressSlot::Business, AddrPart::City)),
                Some("Berlin")
            );
            assert_eq!(set(&p, Field::Notes), Some("line one\nline, two"));
            assert!(p.edits.contains(&Edit::SetList(
                Field::Categories,
                vec!["VIP".into(), "a,b".into()]
            )));
            assert!(p.dropped.is_empty(), "{:?}", p.dropped);
        }
    }

    #[test]
    fn reads_what_real_clients_send() {
        // Apple: grouped properties, labels, a photo, folded lines; a 3.0 client with
        // quoted-printable Latin-1 and bare type parameters.
        let apple = "BEGIN:VCARD\r\nVERSION:3.0\r\nPRODID:-//Apple Inc.//iPhone OS 17.0//EN\r\n\
N:M\u{fc}ller;J\u{fc}rgen;;;\r\nFN:J\u{fc}rgen M\u{fc}ller\r\nitem1.EMAIL;type=INTERNET;type=pref:j@x.test\r\n\
item1.X-ABLabel:_$!<Other>!$_\r\nEMAIL;type=INTERNET;type=WORK:\r\n jm@work.test\r\nTEL;type=CELL;type=VOICE;type=pref:+49 171 2\r\n\
PHOTO;ENCODING=b;TYPE=JPEG:AAAA\r\nBDAY:--0131\r\nEND:VCARD\r\n";
        let p = parse(apple).expect("apple");
        assert_eq!(set(&p, Field::GivenName), Some("J\u{fc}rgen"));
        assert_eq!(set(&p, Field::Email(1)), Some("j@x.test"), "pref first");
        assert_eq!(set(&p, Field::Email(2)), Some("jm@work.test"), "unfolded");
        assert_eq!(
            set(&p, Field::Phone(PhoneSlot::MobilePhone)),
            Some("+49 171 2")
        );
        assert!(p.edits.contains(&Edit::Delete(Field::Birthday)));
        assert_eq!(p.dropped, ["BDAY (no full date)", "X-ABLABEL", "PHOTO"]);
        let qp = "BEGIN:VCARD\nVERSION:2.1\nN;CHARSET=ISO-8859-1;ENCODING=QUOTED-PRINTABLE:M=FC=\nller;Hans\nTEL;WORK;VOICE:030 1\nTEL;HOME:030 2\nEND:VCARD\n";
        let p = parse(qp).expect("qp");
        assert_eq!(set(&p, Field::Surname), Some("M\u{fc}ller"));
        assert_eq!(
            set(&p, Field::Phone(PhoneSlot::BusinessPhone)),
            Some("030 1")
        );
        assert_eq!(set(&p, Field::Phone(PhoneSlot::HomePhone)), Some("030 2"));
    }

    #[test]
    fn refuses_what_is_no_vcard_or_too_much() {
        assert!(parse("hello").is_err());
        assert!(parse("BEGIN:VCARD\r\nFN:x\r\n").is_err(), "no END");
        assert!(parse("BEGIN:VCARD\r\nBEGIN:VCARD\r\nEND:VCARD\r\n").is_err());
        assert!(parse(
            "BEGIN:VCARD\r\nN;CHARSET=KOI8-R;ENCODING=QUOTED-PRINTABLE:=C1\r\nEND:VCARD\r\n"
        )
        .is_err());
        let mut many = String::from("BEGIN:VCARD\r\nVERSION:3.0\r\n");
        for i in 0..10_000 {
            many.push_str(&format!("EMAIL:a{i}@x.test\r\n"));
        }
        many.push_str("END:VCARD\r\n");
        let e = parse(&many).expect_err("refused");
        assert!(e.0.contains("more than"), "{e:?}");
    }
}
