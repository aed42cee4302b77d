//! The HubSpot snapshot (crm::hubspot::client + map) against the simulator: a portal with
//! owners in teams, companies, contacts, deals and their associations, read under the
//! simulator's strict limits (its 100-per-10-s budget included), gives every owner the My and
//! Global folders the rules give when computed straight from the simulator's raw data.

mod support;

use crmgate::crm::hubspot::client::Client;
use crmgate::crm::hubspot::map::Mapping;
use crmgate::crm::{Change, Versioned};
use crmgate::domain::rules::{FolderRules, VirtualFolder};
use crmgate::replica::Engine;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use support::hubspot_sim::HubSpotSim;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_snapshot_gives_every_owner_the_folders_of_the_rules() {
    let sim = HubSpotSim::start().await;
    let mut rng = StdRng::seed_from_u64(14);
    let teams = [("t1", "Berlin"), ("t2", "London")];
    let mut owners = Vec::new();
    for i in 0..6 {
        let team = teams[i % 2];
        owners.push(sim.add_owner(
            &format!("owner{i}@portal.test"),
            "Owner",
            &format!("{i}"),
            &[team],
            false,
        ));
    }
    sim.add_owner("queue@portal.test", "Support", "Queue", &[], true);
    // Raw facts, kept for the oracle.
    let mut company_owner: BTreeMap<u64, String> = BTreeMap::new();
    let mut contact_owner: BTreeMap<u64, Option<String>> = BTreeMap::new();
    let mut contact_companies: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut deals: Vec<(String, Vec<u64>)> = Vec::new();
    let companies: Vec<u64> = (0..12)
        .map(|i| {
            let o = owners[rng.gen_range(0..owners.len())].clone();
            let id = sim.add(
                "companies",
                json!({"name": format!("Company {i}"), "hubspot_owner_id": o}),
            );
            company_owner.insert(id, o);
            id
        })
        .collect();
    for i in 0..240 {
        let owner = rng
            .gen_bool(0.2)
            .then(|| owners[rng.gen_range(0..owners.len())].clone());
        let mut props = json!({"firstname": format!("F{i}"), "lastname": "Contact",
            "email": format!("c{i}@portal.test"), "lifecyclestage": "customer"});
        if let Some(o) = &owner {
            props["hubspot_owner_id"] = json!(o);
        }
        let id = sim.add("contacts", props);
        contact_owner.insert(id, owner);
        let mut linked = Vec::new();
        if rng.gen_bool(0.8) {
            let k = companies[rng.gen_range(0..companies.len())];
            sim.associate("contacts", id, "companies", k);
            linked.push(k);
        }
        contact_companies.insert(id, linked);
    }
    let all_contacts: Vec<u64> = contact_owner.keys().copied().collect();
    for i in 0..20 {
        let o = owners[rng.gen_range(0..owners.len())].clone();
        let stage = ["appointmentscheduled", "closedwon", "closedlost"][i % 3];
        let d = sim.add(
            "deals",
            json!({"dealname": format!("Deal {i}"), "dealstage": stage, "hubspot_owner_id": o}),
        );
        let mut cs = Vec::new();
        for _ in 0..rng.gen_range(1..4) {
            let c = all_contacts[rng.gen_range(0..all_contacts.len())];
            sim.associate("deals", d, "contacts", c);
            cs.push(c);
        }
        sim.associate("deals", d, "companies", companies[i % companies.len()]);
        deals.push((o, cs));
    }

    // Budget below the simulator's 100 per 10 s: no request is refused for rate.
    let client = Client::new(&sim.base_url, HubSpotSim::TOKEN, 90).expect("client");
    let (records, _) = client
        .snapshot(&Mapping::default())
        .await
        .expect("snapshot");
    let (_, routes) = sim.requests();
    assert!(
        routes.keys().all(|r| !r.contains("search")),
        "the load lists, it does not search: {routes:?}"
    );

    let mut e = Engine::new(FolderRules::default());
    e.apply(
        records
            .into_iter()
            .map(|r| {
                Change::Upsert(Versioned {
                    record: r,
                    version: "1".into(),
                })
            })
            .collect(),
    );
    let mut checked = 0;
    for owner in &owners {
        // The rules, from the raw data: contacts of companies the owner is responsible for,
        // of deals the owner owns, and the owner's own contacts; Global is everyone else.
        let mut my: BTreeSet<String> = BTreeSet::new();
        for (c, ks) in &contact_companies {
            if ks.iter().any(|k| company_owner.get(k) == Some(owner)) {
                my.insert(c.to_string());
            }
        }
        for (o, cs) in &deals {
            if o == owner {
                my.extend(cs.iter().map(u64::to_string));
            }
        }
        for (c, o) in &contact_owner {
            if o.as_ref() == Some(owner) {
                my.insert(c.to_string());
            }
        }
        let global: BTreeSet<String> = all_contacts
            .iter()
            .map(u64::to_string)
            .filter(|c| !my.contains(c))
            .collect();
        let login = format!(
            "owner{}@portal.test",
            owners.iter().position(|o| o == owner).unwrap_or(0)
        );
        let u = e.find_login(&login).expect("every person owner is a user");
        let got = |f| -> BTreeSet<String> {
            e.list(u, f)
                .into_iter()
                .map(|c| e.contact_id(c).to_owned())
                .collect()
        };
        assert_eq!(got(VirtualFolder::My), my, "My of {login}");
        assert_eq!(got(VirtualFolder::Global), global, "Global of {login}");
        assert!(!my.is_empty());
        checked += 1;
    }
    assert_eq!(checked, 6);
    assert!(
        e.find_login("queue@portal.test").is_none(),
        "queues are no users"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_found_by_search_on_the_modification_time() {
    let sim = HubSpotSim::start().await;
    let mut ids = Vec::new();
    for i in 0..450 {
        ids.push(sim.add(
            "contacts",
            json!({"firstname": format!("S{i}"), "email": format!("s{i}@portal.test")}),
        ));
    }
    let client = Client::new(&sim.base_url, HubSpotSim::TOKEN, 90).expect("client");
    // Everything since the beginning: 450, in pages of 200 within the search budget (5/s),
    // oldest first.
    let (all, newest) = client
        .modified_since("contacts", 0, &["firstname"])
        .await
        .expect("search");
    let got: BTreeSet<String> = all
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(got.len(), 450);
    assert!(newest > 0);
    // Three edits after that: a search from the newest time seen finds them (and at most the
    // records sharing the boundary timestamp).
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    for id in &ids[10..13] {
        sim.update("contacts", *id, json!({"jobtitle": "Changed"}));
    }
    let (changed, newer) = client
        .modified_since("contacts", newest + 1, &["firstname", "jobtitle"])
        .await
        .expect("search");
    let got: BTreeSet<String> = changed
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect();
    let want: BTreeSet<String> = ids[10..13].iter().map(u64::to_string).collect();
    assert_eq!(got, want);
    assert!(newer > newest);
    assert!(changed
        .iter()
        .all(|r| r["properties"]["jobtitle"] == "Changed"));
    // A change not yet indexed (HubSpot's search lags by seconds) is found by the next
    // search, not lost.
    sim.set_search_lag(std::time::Duration::from_secs(3600));
    sim.update("contacts", ids[20], json!({"jobtitle": "Later"}));
    let (none, same) = client
        .modified_since("contacts", newer + 1, &["jobtitle"])
        .await
        .expect("search");
    assert!(none.is_empty());
    assert_eq!(
        same,
        newer + 1,
        "the position does not move past what search has not shown"
    );
    sim.set_search_lag(std::time::Duration::ZERO);
    let (later, _) = client
        .modified_since("contacts", same, &["jobtitle"])
        .await
        .expect("search");
    assert_eq!(later.len(), 1);
    assert_eq!(later[0]["id"], ids[20].to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crmgate_on_hubspot_serves_the_folders_and_patches_only_what_changed() {
    let sim = HubSpotSim::start().await;
    let ana = sim.add_owner(
        "ana@portal.test",
        "Ana",
        "Alves",
        &[("t1", "Berlin")],
        false,
    );
    let bo = sim.add_owner("bo@portal.test", "Bo", "Berg", &[("t1", "Berlin")], false);
    let acme = sim.add(
        "companies",
        json!({"name": "Acme", "hubspot_owner_id": ana}),
    );
    let other = sim.add(
        "companies",
        json!({"name": "Other", "hubspot_owner_id": bo}),
    );
    let mut anas = Vec::new();
    for i in 0..5 {
        let c = sim.add(
            "contacts",
            json!({"firstname": format!("A{i}"), "lastname": "Acme",
            "email": format!("a{i}@acme.test"), "phone": "+49 30 1", "lifecyclestage": "customer",
            "favourite_colour": "green"}),
        );
        sim.associate("contacts", c, "companies", acme);
        anas.push(c);
    }
    for i in 0..3 {
        let c = sim.add(
            "contacts",
            json!({"firstname": format!("O{i}"), "lastname": "Other"}),
        );
        sim.associate("contacts", c, "companies", other);
    }
    let s = support::TestServer::start_hubspot(
        &sim.base_url,
        &[
            ("ana@portal.test", "pw", "user"),
            ("bo@portal.test", "pw", "user"),
        ],
    )
    .await;
    let token = s
        .graph_token("ana@portal.test", "pw", "Contacts.ReadWrite")
        .await;
    let get = |path: String| {
        let req = s.client.get(s.url(&path)).bearer_auth(&token);
        async move {
            let r = req.send().await.expect("get");
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().await.expect("json"))
        }
    };
    let my = s.my_folder(&token).await;
    let (_, list) = get(format!("/v1.0/me/contactFolders/{my}/contacts?$top=50")).await;
    let names: BTreeSet<String> = list["value"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["givenName"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        names,
        (0..5).map(|i| format!("A{i}")).collect::<BTreeSet<_>>(),
        "Ana's My: the contacts of the company she owns"
    );

    // A Graph edit of one field is a PATCH of exactly that property.
    let item = list["value"][0]["id"].as_str().expect("id").to_owned();
    let before = sim.writes().len();
    let r = s
        .client
        .patch(s.url(&format!("/v1.0/me/contacts/{item}")))
        .bearer_auth(&token)
        .json(&json!({"jobTitle": "Head of Paging"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(
        r.status().as_u16(),
        200,
        "{}",
        r.text().await.unwrap_or_default()
    );
    let writes = sim.writes();
    assert_eq!(writes.len(), before + 1, "{writes:?}");
    let (what, body) = &writes[before];
    assert!(what.starts_with("PATCH contacts/"), "{what}");
    assert_eq!(body, &json!({"properties": {"jobtitle": "Head of Paging"}}));

    // A field HubSpot cannot hold is refused before anything is sent.
    let r = s
        .client
        .patch(s.url(&format!("/v1.0/me/contacts/{item}")))
        .bearer_auth(&token)
        .json(&json!({"personalNotes": "met at the fair"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(sim.writes().len(), before + 1, "nothing sent");

    // A create in My lands once in HubSpot and stays in Ana's My (she is its creator).
    let r = s
        .client
        .post(s.url(&format!("/v1.0/me/contactFolders/{my}/contacts")))
        .bearer_auth(&token)
        .json(&json!({"givenName": "Neu", "surname": "Kontakt",
            "emailAddresses": [{"address": "neu@acme.test"}]}))
        .send()
        .await
        .expect("post");
    assert_eq!(
        r.status().as_u16(),
        201,
        "{}",
        r.text().await.unwrap_or_default()
    );
    let posts: Vec<_> = sim
        .writes()
        .into_iter()
        .filter(|(w, _)| w == "POST contacts")
        .collect();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].1["properties"]["email"], "neu@acme.test");
    s.app.refresh().await.expect("a sync after the create");
    let (_, list) = get(format!("/v1.0/me/contactFolders/{my}/contacts?$top=50")).await;
    assert_eq!(list["value"].as_array().map(Vec::len), Some(6), "{list}");
    // Without a webhook secret the webhook endpoint does not exist.
    let r = s
        .client
        .post(s.url("/hubspot/webhooks"))
        .body("[]")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 404);
    s.stop().await;
}

/// exchangelib and msgraph-sdk (unmodified) edit contacts through crmgate on HubSpot; each
/// edit reaches HubSpot as a PATCH of exactly the changed property, and unmapped HubSpot
/// properties stay as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchangelib_and_msgraph_edits_are_patches_of_exactly_the_changed_property() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".cache/venv/bin/python");
    assert!(
        python.exists(),
        "exchangelib and msgraph-sdk are not installed: run scripts/test.sh"
    );
    let sim = HubSpotSim::start().await;
    let ana = sim.add_owner(
        "ana@portal.test",
        "Ana",
        "Alves",
        &[("t1", "Berlin")],
        false,
    );
    let acme = sim.add(
        "companies",
        json!({"name": "Acme", "hubspot_owner_id": ana}),
    );
    let mut ids = Vec::new();
    for i in 0..3 {
        let c = sim.add(
            "contacts",
            json!({"firstname": format!("A{i}"), "lastname": "Acme", "email": format!("a{i}@acme.test"),
                "phone": "+49 30 1", "lifecyclestage": "customer", "favourite_colour": "green"}),
        );
        sim.associate("contacts", c, "companies", acme);
        ids.push(c);
    }
    let s = support::TestServer::start_hubspot(&sim.base_url, &[("ana@portal.test", "pw", "user")])
        .await;
    let token = s
        .graph_token("ana@portal.test", "pw", "Contacts.ReadWrite")
        .await;
    let before = sim.writes().len();
    let mut cmd = std::process::Command::new(&python);
    cmd.arg(root.join("tests/clients/hubspot_edits.py"))
        .args([&s.base, "ana@portal.test", "pw", &token])
        .env("REQUESTS_CA_BUNDLE", s.dir.path().join("tls/cert.pem"))
        .env("SSL_CERT_FILE", s.dir.path().join("tls/cert.pem"));
    let r = support::run_client("exchangelib+msgraph", cmd).await;
    assert_eq!(
        r,
        json!({"exchangelib": "Set by exchangelib", "msgraph": "+49 171 5550101"})
    );
    let writes: Vec<_> = sim.writes().into_iter().skip(before).collect();
    assert_eq!(
        writes,
        vec![
            (
                format!("PATCH contacts/{}", ids[0]),
                json!({"properties": {"jobtitle": "Set by exchangelib"}})
            ),
            (
                format!("PATCH contacts/{}", ids[1]),
                json!({"properties": {"mobilephone": "+49 171 5550101"}})
            ),
        ]
    );
    let raw = sim.raw();
    for id in &ids {
        let p = &raw.objects["contacts"][id];
        assert_eq!(p["favourite_colour"], "green", "unmapped property kept");
        assert_eq!(p["phone"], "+49 30 1", "work phone kept");
    }
    s.stop().await;
}

/// The first load writes page by page and keeps its position: interrupted after a few pages
/// of contacts (a crash), it resumes at the next page instead of starting again, and ends with
/// the whole portal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_first_load_resumes_at_its_page() {
    use crmgate::crm::hubspot::config::{HubSpotConfig, HubSpotToken};
    use crmgate::crm::hubspot::HubSpot;
    use crmgate::crm::CrmBackend;
    use crmgate::domain::Kind;
    let sim = HubSpotSim::start().await;
    let ana = sim.add_owner(
        "ana@portal.test",
        "Ana",
        "Alves",
        &[("t1", "Berlin")],
        false,
    );
    let acme = sim.add(
        "companies",
        json!({"name": "Acme", "hubspot_owner_id": ana}),
    );
    let mut ids = Vec::new();
    for i in 0..1200 {
        let c = sim.add(
            "contacts",
            json!({"firstname": format!("L{i}"), "lastname": "Load"}),
        );
        if i % 3 == 0 {
            sim.associate("contacts", c, "companies", acme);
        }
        ids.push(c);
    }
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("token"), HubSpotSim::TOKEN).expect("token");
    let cfg = HubSpotConfig {
        base_url: sim.base_url.clone(),
        token: HubSpotToken::File(dir.path().join("token")),
        oauth: None,
        token_url: format!("{}/oauth/v1/token", sim.base_url),
        requests_per_10s: 90,
        searches_per_second: 4,
        page_size: 100,
        search_page_size: 200,
        mapping: Mapping::default(),
        overlap: std::time::Duration::from_secs(60),
        associations_interval: std::time::Duration::from_secs(600),
        reconcile_interval: std::time::Duration::from_secs(3600),
        webhook_secret: None,
        webhook_url: None,
        require_email: false,
        breaker_failures: 5,
        breaker_cooldown: std::time::Duration::from_secs(15),
        logins: None,
    };
    let store = std::sync::Arc::new(crmgate::store::Store::memory());
    let first = HubSpot::open(cfg.clone(), store.clone()).expect("open");
    let contact_pages = |sim: &HubSpotSim| {
        sim.requests()
            .1
            .get("GET crm/v3/objects/contacts")
            .copied()
            .unwrap_or(0)
    };
    let task = tokio::spawn({
        let h = first.clone();
        async move { h.sync_once().await }
    });
    while contact_pages(&sim) < 5 {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    task.abort();
    let _ = task.await;
    let read_before = contact_pages(&sim);
    assert!(
        read_before < 12,
        "interrupted mid-load ({read_before} pages)"
    );
    assert!(
        first.changes(None, 10).await.is_err(),
        "not ready before the load completes"
    );
    drop(first);

    let again = HubSpot::open(cfg, store).expect("reopen");
    again.sync_once().await.expect("resumed load");
    let read_after = contact_pages(&sim) - read_before;
    // 12 pages of contacts in all: the resumed load reads the rest (and at most the page that
    // was in flight when the first run stopped), not all 12 again.
    assert!(
        read_after + read_before <= 13 && read_after < 12,
        "{read_before} pages before the interruption, {read_after} after"
    );
    for id in &ids {
        assert!(
            again
                .get(Kind::Contact, id.to_string())
                .await
                .expect("get")
                .is_some(),
            "contact {id} loaded"
        );
    }
    assert!(again.changes(None, 10).await.is_ok(), "ready");
    assert_eq!(again.report().loading, None);
}

/// HubSpot as an OAuth app: access tokens come from the refresh token, an expired one is
/// replaced on its 401 and the request sent again, and the refresh token HubSpot rotates is
/// kept, so a restart works although the configured one no longer does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_tokens_are_refreshed_and_a_rotated_refresh_token_survives_a_restart() {
    let sim = HubSpotSim::start().await;
    sim.set_access_ttl(std::time::Duration::from_secs(1));
    let ana = sim.add_owner(
        "ana@portal.test",
        "Ana",
        "Alves",
        &[("t1", "Berlin")],
        false,
    );
    let acme = sim.add(
        "companies",
        json!({"name": "Acme", "hubspot_owner_id": ana}),
    );
    let c = sim.add("contacts", json!({"firstname": "Otto", "lastname": "Auth"}));
    sim.associate("contacts", c, "companies", acme);
    let creds = tempfile::tempdir().expect("dir");
    let file = creds.path().join("oauth.json");
    std::fs::write(
        &file,
        json!({"client_id": HubSpotSim::CLIENT_ID, "client_secret": HubSpotSim::CLIENT_SECRET,
            "refresh_token": HubSpotSim::REFRESH_TOKEN})
        .to_string(),
    )
    .expect("creds");
    let extra = format!("oauth = \"file:{}\"", file.display());
    let s = support::TestServer::start_hubspot_with(&sim.base_url, &[], &extra).await;
    assert_eq!(sim.token_grants(), 1, "one token for the load");
    // The access token expires; the next poll gets a 401, a new token, and goes on.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    sim.update("contacts", c, json!({"jobtitle": "Refreshed"}));
    s.app.refresh().await.expect("poll after expiry");
    let after_expiry = sim.token_grants();
    assert!(after_expiry >= 2, "a new access token after the 401");
    let seen = |s: &support::TestServer| {
        let e = s.app.replica.read().expect("replica");
        e.contact_record_by_id(&c.to_string())
            .map(|r| r.job_title.clone())
    };
    assert_eq!(seen(&s), Some(Some("Refreshed".into())));
    // The configured refresh token was rotated away at the first grant; after a restart the
    // kept one works.
    let s = s
        .restart(&support::hubspot_config(&sim.base_url, &extra))
        .await;
    sim.update("contacts", c, json!({"jobtitle": "After restart"}));
    s.app.refresh().await.expect("poll after the restart");
    assert!(
        sim.token_grants() > after_expiry,
        "tokens from the kept refresh token"
    );
    assert_eq!(seen(&s), Some(Some("After restart".into())));
    s.stop().await;
}

/// Fields HubSpot has no standard property for can be mapped to custom properties: then they
/// are read, shown and written like the others (a PATCH of that property alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_properties_hold_what_standard_ones_cannot() {
    let sim = HubSpotSim::start().await;
    let ana = sim.add_owner(
        "ana@portal.test",
        "Ana",
        "Alves",
        &[("t1", "Berlin")],
        false,
    );
    let acme = sim.add(
        "companies",
        json!({"name": "Acme", "hubspot_owner_id": ana}),
    );
    let c = sim.add(
        "contacts",
        json!({"firstname": "Cora", "lastname": "Custom", "abteilung": "Einkauf"}),
    );
    sim.associate("contacts", c, "companies", acme);
    let s = support::TestServer::start_hubspot_with(
        &sim.base_url,
        &[("ana@portal.test", "pw", "user")],
        "[crm.hubspot.custom_properties]\ndepartment = \"abteilung\"\nnotes = \"crm_notes\"",
    )
    .await;
    let token = s
        .graph_token("ana@portal.test", "pw", "Contacts.ReadWrite")
        .await;
    let my = s.my_folder(&token).await;
    let list: serde_json::Value = s
        .client
        .get(s.url(&format!("/v1.0/me/contactFolders/{my}/contacts")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let cora = &list["value"][0];
    assert_eq!(cora["department"], "Einkauf", "{cora}");
    let id = cora["id"].as_str().expect("id");
    let before = sim.writes().len();
    let r = s
        .client
        .patch(s.url(&format!("/v1.0/me/contacts/{id}")))
        .bearer_auth(&token)
        .json(&json!({"personalNotes": "met at the fair"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status().as_u16(), 200);
    let writes: Vec<_> = sim.writes().into_iter().skip(before).collect();
    assert_eq!(
        writes,
        vec![(
            format!("PATCH contacts/{c}"),
            json!({"properties": {"crm_notes": "met at the fair"}})
        )]
    );
    s.stop().await;
}

/// Page and batch sizes follow the configuration (portals or proxies that want smaller pages).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_sizes_follow_the_configuration() {
    let sim = HubSpotSim::start().await;
    let ana = sim.add_owner(
        "ana@portal.test",
        "Ana",
        "Alves",
        &[("t1", "Berlin")],
        false,
    );
    let acme = sim.add(
        "companies",
        json!({"name": "Acme", "hubspot_owner_id": ana}),
    );
    for i in 0..20 {
        let c = sim.add(
            "contacts",
            json!({"firstname": format!("P{i}"), "lastname": "Page"}),
        );
        sim.associate("contacts", c, "companies", acme);
    }
    let s = support::TestServer::start_hubspot_with(&sim.base_url, &[], "page_size = 7").await;
    let (_, routes) = sim.requests();
    assert_eq!(
        routes.get("GET crm/v3/objects/contacts"),
        Some(&3),
        "20 in pages of 7"
    );
    assert_eq!(
        routes.get("POST crm/v4/associations/contacts/companies/batch/read"),
        Some(&3),
        "associations in batches of 7"
    );
    let my = {
        let e = s.app.replica.read().expect("replica");
        let u = e.find_login("ana@portal.test").expect("ana");
        e.list(u, VirtualFolder::My).len()
    };
    assert_eq!(my, 20);
    s.stop().await;
}
