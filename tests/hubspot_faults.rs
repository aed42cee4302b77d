//! Creates and edits through crmgate land in HubSpot exactly once through a fault campaign
//! (issue 14): the simulator answers 20 % of requests `502` without doing anything and drops
//! the connection after 30 % of the writes it applied. Clients retry what crmgate answers
//! `503`; afterwards every contact exists once in HubSpot with its last edit, and once in
//! its creator's My.

mod support;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use support::hubspot_sim::{Faults, HubSpotSim};
use support::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_and_edits_land_once_through_lost_answers() {
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
    for i in 0..3 {
        let c = sim.add(
            "contacts",
            json!({"firstname": format!("Old{i}"), "lastname": "Acme"}),
        );
        sim.associate("contacts", c, "companies", acme);
    }
    let s = TestServer::start_hubspot_with(
        &sim.base_url,
        &[("ana@portal.test", "pw", "user")],
        "overlap_secs = 1",
    )
    .await;
    let token = s
        .graph_token("ana@portal.test", "pw", "Contacts.ReadWrite")
        .await;
    let my = s.my_folder(&token).await;

    sim.set_faults(Faults {
        fail_before: 0.2,
        drop_after_write: 0.3,
    });
    // Sends until crmgate answers success; a 503 is retried as a client would.
    let until_ok = |req: reqwest::RequestBuilder| async move {
        for _ in 0..60 {
            let r = req.try_clone().expect("clone").send().await.expect("send");
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            match status {
                200 | 201 => return body,
                503 => tokio::time::sleep(Duration::from_millis(150)).await,
                s => panic!(
                    "unexpected {s} for {:?}: {body}",
                    req.try_clone()
                        .and_then(|r| r.build().ok())
                        .map(|r| (r.method().clone(), r.url().path().to_owned()))
                ),
            }
        }
        panic!("no success after 60 attempts");
    };
    let mut ids = BTreeMap::new();
    for i in 0..16 {
        let mut body = json!({"givenName": format!("New{i}"), "surname": "Faulty"});
        if i % 2 == 0 {
            body["emailAddresses"] = json!([{"address": format!("new{i}@acme.test")}]);
        }
        let req = s
            .client
            .post(s.url(&format!("/v1.0/me/contactFolders/{my}/contacts")))
            .bearer_auth(&token)
            .json(&body);
        let created = until_ok(req).await;
        ids.insert(i, created["id"].as_str().expect("id").to_owned());
    }
    for (i, id) in &ids {
        let req = s
            .client
            .patch(s.url(&format!("/v1.0/me/contacts/{id}")))
            .bearer_auth(&token)
            .json(&json!({"jobTitle": format!("Title {i}")}));
        until_ok(req).await;
    }
    assert!(sim.faults_injected() > 10, "the campaign injected faults");
    sim.set_faults(Faults::default());

    // HubSpot: each contact exactly once, with its edit.
    let raw = sim.raw();
    for i in 0..16 {
        let name = format!("New{i}");
        let found: Vec<_> = raw.objects["contacts"]
            .values()
            .filter(|p| p.get("firstname").and_then(Value::as_str) == Some(name.as_str()))
            .collect();
        assert_eq!(found.len(), 1, "{name} is in HubSpot once: {found:?}");
        assert_eq!(found[0]["jobtitle"], json!(format!("Title {i}")), "{name}");
    }
    // crmgate: each once in Ana's My, under the id the client was given.
    s.app.refresh().await.expect("sync");
    let list: Value = s
        .client
        .get(s.url(&format!("/v1.0/me/contactFolders/{my}/contacts?$top=100")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let items = list["value"].as_array().cloned().unwrap_or_default();
    for (i, id) in &ids {
        let name = format!("New{i}");
        let same: Vec<_> = items
            .iter()
            .filter(|c| c["givenName"] == name.as_str())
            .collect();
        assert_eq!(same.len(), 1, "{name} once in My");
        assert_eq!(
            same[0]["id"].as_str(),
            Some(id.as_str()),
            "{name} keeps its id"
        );
    }
    assert_eq!(items.len(), 16 + 3);
    s.stop().await;
}

/// HubSpot down: writes are answered with a retryable error and nothing is half-written,
/// reads go on from the mirror, the breaker stops further calls for its cooldown and
/// `/metrics` says so; once HubSpot is back, the same write goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_makes_writes_retryable_and_reads_go_on() {
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
        json!({"firstname": "Ona", "lastname": "Outage"}),
    );
    sim.associate("contacts", c, "companies", acme);
    let s = TestServer::start_hubspot_with(
        &sim.base_url,
        &[("ana@portal.test", "pw", "user")],
        "breaker_failures = 1\nbreaker_cooldown_secs = 2",
    )
    .await;
    let token = s
        .graph_token("ana@portal.test", "pw", "Contacts.ReadWrite")
        .await;
    let my = s.my_folder(&token).await;
    let list = |token: String| {
        let req = s
            .client
            .get(s.url(&format!("/v1.0/me/contactFolders/{my}/contacts?$top=10")))
            .bearer_auth(token);
        async move {
            let r = req.send().await.expect("list");
            (r.status().as_u16(), r.json::<Value>().await.expect("json"))
        }
    };
    let (status, body) = list(token.clone()).await;
    assert_eq!(status, 200, "{body}");
    let id = body["value"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["givenName"] == "Ona"))
        .and_then(|x| x["id"].as_str())
        .expect("Ona")
        .to_owned();

    sim.set_faults(Faults {
        fail_before: 1.0,
        drop_after_write: 0.0,
    });
    let writes = sim.writes().len();
    let patch = || {
        s.client
            .patch(s.url(&format!("/v1.0/me/contacts/{id}")))
            .bearer_auth(&token)
            .json(&json!({"jobTitle": "After the outage"}))
            .send()
    };
    for _ in 0..2 {
        let r = patch().await.expect("patch");
        assert_eq!(r.status().as_u16(), 503, "a retryable error");
        assert!(r.headers().contains_key("retry-after"));
    }
    assert_eq!(sim.writes().len(), writes, "nothing reached HubSpot");
    let (status, body) = list(token.clone()).await;
    assert_eq!(status, 200, "reads go on: {body}");
    assert!(
        s.app.refresh().await.is_ok(),
        "a failed poll only logs once ready"
    );
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("crmgate_hubspot_breaker_open 1"),
        "{metrics}"
    );
    let ready = s.client.get(s.url("/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status().as_u16(), 200, "still ready");

    sim.set_faults(Faults::default());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = patch().await.expect("patch");
    assert_eq!(r.status().as_u16(), 200);
    let raw = sim.raw();
    assert_eq!(raw.objects["contacts"][&c]["jobtitle"], "After the outage");
    s.stop().await;
}

/// The daily limit used up: reported in `/metrics`, `/readyz` stays ready, reads go on, writes
/// answer a retryable error, and the breaker stays closed (HubSpot is not failing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_up_daily_limit_is_reported_and_reads_go_on() {
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
        json!({"firstname": "Dana", "lastname": "Daily"}),
    );
    sim.associate("contacts", c, "companies", acme);
    let s = TestServer::start_hubspot_with(
        &sim.base_url,
        &[("ana@portal.test", "pw", "user")],
        "breaker_failures = 1",
    )
    .await;
    let token = s
        .graph_token("ana@portal.test", "pw", "Contacts.ReadWrite")
        .await;
    let my = s.my_folder(&token).await;
    sim.set_daily_exhausted(true);
    assert!(s.app.refresh().await.is_ok(), "the poll fails quietly");
    let list = s
        .client
        .get(s.url(&format!("/v1.0/me/contactFolders/{my}/contacts")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("list");
    assert_eq!(list.status().as_u16(), 200);
    let body: Value = list.json().await.expect("json");
    let id = body["value"][0]["id"].as_str().expect("id").to_owned();
    let r = s
        .client
        .patch(s.url(&format!("/v1.0/me/contacts/{id}")))
        .bearer_auth(&token)
        .json(&json!({"jobTitle": "Tomorrow"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("crmgate_hubspot_daily_limit_exhausted 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("crmgate_hubspot_breaker_open 0"),
        "{metrics}"
    );
    let ready = s.client.get(s.url("/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status().as_u16(), 200);
    sim.set_daily_exhausted(false);
    s.stop().await;
}
