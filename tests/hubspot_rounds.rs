//! crmgate on a HubSpot portal that keeps changing (issue 14): after the load, after each
//! round of random HubSpot-side changes (owner changes, association changes both ways,
//! lifecycle changes, archive and restore, team moves, new records), and after a restart,
//! every owner's My and Global in crmgate equal the folder rules computed straight from the
//! simulator's raw data. Polling alone (no webhooks): changes are found by the incremental
//! search, archived records by the archived listing, association edits (which leave
//! modification times alone) by the scheduled association re-read, restores by the
//! reconciliation.

mod support;

use crmgate::domain::rules::VirtualFolder;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use support::hubspot_sim::{HubSpotSim, Raw};
use support::TestServer;

type Folders = BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)>;

/// The rules from the raw data: for every person owner, My = contacts of companies the owner
/// is responsible for, of deals the owner owns, and the owner's own contacts; Global = every
/// other live contact.
fn oracle(raw: &Raw) -> Folders {
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
fn served(s: &TestServer, logins: &[String]) -> Folders {
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

fn assert_same(s: &TestServer, sim: &HubSpotSim, when: &str) {
    let want = oracle(&sim.raw());
    let logins: Vec<String> = want.keys().cloned().collect();
    let got = served(s, &logins);
    for login in &logins {
        let (wm, wg) = &want[login];
        let (gm, gg) = &got[login];
        assert_eq!(
            gm,
            wm,
            "{when}: My of {login}: missing {:?}, extra {:?}",
            wm.difference(gm).collect::<Vec<_>>(),
            gm.difference(wm).collect::<Vec<_>>()
        );
        assert_eq!(
            gg,
            wg,
            "{when}: Global of {login}: missing {:?}, extra {:?}",
            wg.difference(gg).collect::<Vec<_>>(),
            gg.difference(wg).collect::<Vec<_>>()
        );
    }
}

struct Portal {
    owners: Vec<String>,
    companies: Vec<u64>,
    contacts: Vec<u64>,
    deals: Vec<u64>,
    archived: Vec<(&'static str, u64)>,
}

fn build(sim: &HubSpotSim, rng: &mut StdRng) -> Portal {
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

fn new_contact(sim: &HubSpotSim, rng: &mut StdRng, p: &mut Portal) {
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
fn change(sim: &HubSpotSim, rng: &mut StdRng, p: &mut Portal, restores: bool) -> &'static str {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folders_follow_a_changing_portal_by_polling_alone() {
    let sim = HubSpotSim::start().await;
    let mut rng = StdRng::seed_from_u64(1414);
    let mut p = build(&sim, &mut rng);
    let extra = "associations_interval_secs = 1\nreconcile_interval_secs = 86400\noverlap_secs = 0";
    let s = TestServer::start_hubspot_with(&sim.base_url, &[], extra).await;
    assert_same(&s, &sim, "after the load");
    let full = s.hubspot().report().full_reads;
    assert_eq!(full, 1);

    for round in 0..6 {
        let mut kinds = BTreeMap::<&str, usize>::new();
        for _ in 0..12 {
            *kinds
                .entry(change(&sim, &mut rng, &mut p, false))
                .or_default() += 1;
        }
        // Association edits are found by the scheduled re-read (interval 1 s here).
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (before, _) = sim.requests();
        s.app.refresh().await.expect("poll");
        let (after, routes) = sim.requests();
        assert_same(&s, &sim, &format!("after round {round} {kinds:?}"));
        assert_eq!(
            s.hubspot().report().full_reads,
            full,
            "round {round} was found by a poll, not a whole read"
        );
        // A poll reads what changed, not the portal: owners (1), searches (≤ 3 per type
        // here), archived lists (3), and the association re-read in batches of 100.
        assert!(
            after - before < 40,
            "round {round}: {} requests {routes:?}",
            after - before
        );
    }

    // A restore moves no modification time: the reconciliation brings the record back.
    let restored = p.archived.clone();
    for (t, id) in &restored {
        sim.restore(t, *id);
    }
    p.archived.clear();
    assert!(!restored.is_empty());
    let s = s
        .restart(&support::hubspot_config(
            &sim.base_url,
            "associations_interval_secs = 1\nreconcile_interval_secs = 1\noverlap_secs = 0",
        ))
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    s.app.refresh().await.expect("reconcile");
    assert_same(&s, &sim, "after the restores and a restart");

    // After a restart the position is kept: the next poll searches from where it was.
    let s = s
        .restart(&support::hubspot_config(&sim.base_url, extra))
        .await;
    assert_eq!(
        s.hubspot().report().full_reads,
        0,
        "no whole read after a restart"
    );
    for _ in 0..10 {
        change(&sim, &mut rng, &mut p, false);
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    s.app.refresh().await.expect("poll");
    assert_same(&s, &sim, "after a restart and a round");
    assert_eq!(s.hubspot().report().full_reads, 0);
    s.stop().await;
}
