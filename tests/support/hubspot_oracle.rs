//! The folder rules computed straight from a HubSpot simulator's raw data, and crmgate's
//! folders compared with them (tests/hubspot_rounds.rs, tests/hubspot_webhooks.rs).

use super::hubspot_sim::{HubSpotSim, Raw};
use super::TestServer;
use crmgate::domain::rules::VirtualFolder;
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

/// Login → (My, Global) as sets of contact ids.
pub type Folders = BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)>;

/// The rules from the raw data: for every person owner, My = contacts of companies the owner
/// is responsible for, of deals the owner owns, and the owner's own contacts; Global = every
/// other live contact.
pub fn oracle(raw: &Raw) -> Folders {
    let contacts = &raw.objects["contacts"];
    let owner_of = |props: &serde_json::Map<String, serde_json::Value>| {
        props
            .get("hubspot_owner_id")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let mut out = Folders::new();
    for o in &raw.owners {
        if o["type"] != "PERSON" || o["archived"] == true {
            continue;
        }
        let id = o["id"].as_str().unwrap_or_default().to_owned();
        let login = o["email"].as_str().unwrap_or_default().to_lowercase();
        let mut my = BTreeSet::new();
        for (c, props) in contacts {
            let via_company = raw
                .linked("contacts", *c, "companies")
                .iter()
                .any(|k| raw.objects["companies"].get(k).and_then(owner_of) == Some(id.clone()));
            if via_company || owner_of(props) == Some(id.clone()) {
                my.insert(c.to_string());
            }
        }
        for (d, props) in &raw.objects["deals"] {
            if owner_of(props) == Some(id.clone()) {
                my.extend(
                    raw.linked("deals", *d, "contacts")
                        .iter()
                        .map(u64::to_string),
                );
            }
        }
        let global = contacts
            .keys()
            .map(u64::to_string)
            .filter(|c| !my.contains(c))
            .collect();
        out.insert(login, (my, global));
    }
    out
}

/// What crmgate serves every owner of the oracle.
pub fn served(s: &TestServer, logins: &[String]) -> Folders {
    let e = s.app.replica.read().expect("replica");
    logins
        .iter()
        .map(|login| {
            let u = e
                .find_login(login)
                .unwrap_or_else(|| panic!("{login} is a user"));
            let list = |f| -> BTreeSet<String> {
                e.list(u, f)
                    .into_iter()
                    .map(|c| e.contact_id(c).to_owned())
                    .collect()
            };
            (
                login.clone(),
                (list(VirtualFolder::My), list(VirtualFolder::Global)),
            )
        })
        .collect()
}

pub fn assert_same(s: &TestServer, sim: &HubSpotSim, when: &str) {
    if let Err(e) = differences(s, sim) {
        panic!("{when}: {e}");
    }
}

/// `Ok` when crmgate serves every owner the folders the rules give; else what differs.
pub fn differences(s: &TestServer, sim: &HubSpotSim) -> Result<(), String> {
    let want = oracle(&sim.raw());
    let logins: Vec<String> = want.keys().cloned().collect();
    let got = served(s, &logins);
    let mut out = String::new();
    for login in &logins {
        let (wm, wg) = &want[login];
        let (gm, gg) = &got[login];
        for (name, w, g) in [("My", wm, gm), ("Global", wg, gg)] {
            if w != g {
                out.push_str(&format!(
                    "{name} of {login}: missing {:?}, extra {:?}; ",
                    w.difference(g).collect::<Vec<_>>(),
                    g.difference(w).collect::<Vec<_>>()
                ));
            }
        }
    }
    if out.is_empty() {
        Ok(())
    } else {
        Err(out)
    }
}

/// The ids of a generated portal.
pub struct Portal {
    pub owners: Vec<String>,
    pub companies: Vec<u64>,
    pub contacts: Vec<u64>,
    pub deals: Vec<u64>,
    pub archived: Vec<(&'static str, u64)>,
}

/// Six owners in two teams, a queue, 15 companies, 150 contacts, 20 deals.
pub fn build(sim: &HubSpotSim, rng: &mut StdRng) -> Portal {
    let teams = [("t1", "Berlin"), ("t2", "London")];
    let owners: Vec<String> = (0..6)
        .map(|i| {
            sim.add_owner(
                &format!("owner{i}@portal.test"),
                "Owner",
                &format!("{i}"),
                &[teams[i % 2]],
                false,
            )
        })
        .collect();
    sim.add_owner("queue@portal.test", "Support", "Queue", &[], true);
    let mut p = Portal {
        owners,
        companies: Vec::new(),
        contacts: Vec::new(),
        deals: Vec::new(),
        archived: Vec::new(),
    };
    for i in 0..15 {
        let o = p.owners[rng.gen_range(0..p.owners.len())].clone();
        p.companies.push(sim.add(
            "companies",
            json!({"name": format!("Company {i}"), "hubspot_owner_id": o}),
        ));
    }
    for _ in 0..150 {
        new_contact(sim, rng, &mut p);
    }
    for i in 0..20 {
        let o = p.owners[rng.gen_range(0..p.owners.len())].clone();
        let d = sim.add(
            "deals",
            json!({"dealname": format!("Deal {i}"), "dealstage": "appointmentscheduled", "hubspot_owner_id": o}),
        );
        for _ in 0..rng.gen_range(1..4) {
            let c = p.contacts[rng.gen_range(0..p.contacts.len())];
            sim.associate("deals", d, "contacts", c);
        }
        p.deals.push(d);
    }
    p
}

/// A new contact, owned or not, usually with a company.
pub fn new_contact(sim: &HubSpotSim, rng: &mut StdRng, p: &mut Portal) {
    let n = p.contacts.len();
    let mut props = json!({"firstname": format!("F{n}"), "lastname": "Contact",
        "email": format!("c{n}@portal.test"), "lifecyclestage": "customer"});
    if rng.gen_bool(0.2) {
        props["hubspot_owner_id"] = json!(p.owners[rng.gen_range(0..p.owners.len())]);
    }
    let id = sim.add("contacts", props);
    if rng.gen_bool(0.8) {
        let k = p.companies[rng.gen_range(0..p.companies.len())];
        sim.associate("contacts", id, "companies", k);
    }
    p.contacts.push(id);
}

/// One random HubSpot-side change; returns its kind.
pub fn change(sim: &HubSpotSim, rng: &mut StdRng, p: &mut Portal, restores: bool) -> &'static str {
    let pick = |rng: &mut StdRng, v: &[u64]| v[rng.gen_range(0..v.len())];
    let owner = |rng: &mut StdRng, p: &Portal| p.owners[rng.gen_range(0..p.owners.len())].clone();
    match rng.gen_range(0..11) {
        0 => {
            let k = pick(rng, &p.companies);
            sim.update("companies", k, json!({"hubspot_owner_id": owner(rng, p)}));
            "company owner"
        }
        1 => {
            let c = pick(rng, &p.contacts);
            let o = if rng.gen_bool(0.5) {
                json!(owner(rng, p))
            } else {
                json!("")
            };
            sim.update("contacts", c, json!({"hubspot_owner_id": o}));
            "contact owner"
        }
        2 => {
            let d = pick(rng, &p.deals);
            sim.update("deals", d, json!({"hubspot_owner_id": owner(rng, p)}));
            "deal owner"
        }
        3 => {
            let (c, k) = (pick(rng, &p.contacts), pick(rng, &p.companies));
            sim.associate("contacts", c, "companies", k);
            "association added"
        }
        4 => {
            let c = pick(rng, &p.contacts);
            let raw = sim.raw();
            if let Some(k) = raw.linked("contacts", c, "companies").first() {
                sim.unassociate("contacts", c, "companies", *k);
            }
            "association removed"
        }
        5 => {
            let (d, c) = (pick(rng, &p.deals), pick(rng, &p.contacts));
            if rng.gen_bool(0.5) {
                sim.associate("deals", d, "contacts", c);
            } else if let Some(x) = sim.raw().linked("deals", d, "contacts").first() {
                sim.unassociate("deals", d, "contacts", *x);
            }
            "deal contacts"
        }
        6 => {
            let c = pick(rng, &p.contacts);
            let stage = ["lead", "customer", "evangelist"][rng.gen_range(0..3)];
            sim.update(
                "contacts",
                c,
                json!({"lifecyclestage": stage, "jobtitle": stage}),
            );
            "lifecycle"
        }
        7 => {
            let (t, pool) = match rng.gen_range(0..4) {
                0 => ("companies", &p.companies),
                1 => ("deals", &p.deals),
                _ => ("contacts", &p.contacts),
            };
            let id = pick(rng, pool);
            sim.archive(t, id);
            p.archived.push((t, id));
            "archive"
        }
        8 if restores && !p.archived.is_empty() => {
            let (t, id) = p.archived.swap_remove(rng.gen_range(0..p.archived.len()));
            sim.restore(t, id);
            "restore"
        }
        9 => {
            let o = owner(rng, p);
            let team = [("t1", "Berlin"), ("t2", "London"), ("t3", "Paris")][rng.gen_range(0..3)];
            sim.set_teams(&o, &[team]);
            "team move"
        }
        _ => {
            new_contact(sim, rng, p);
            "new contact"
        }
    }
}
