//! HubSpot webhooks (issue 14): with deliveries on, HubSpot-side changes reach every owner's
//! folders within seconds without any poll (each event confirmed by a read); forged, stale
//! and replayed deliveries are refused and change nothing.

mod support;

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;
use std::time::{Duration, Instant};
use support::hubspot_oracle::{build, change, differences};
use support::hubspot_sim::{v3_signature, HubSpotSim};
use support::TestServer;

const SECRET: &str = "app-secret-0001";

/// Waits until crmgate's folders equal the rules (no poll runs); returns how long it took.
async fn settle(s: &TestServer, sim: &HubSpotSim, when: &str) -> Duration {
    let t = Instant::now();
    loop {
        match differences(s, sim) {
            Ok(()) => return t.elapsed(),
            Err(e) if t.elapsed() > Duration::from_secs(10) => {
                panic!("{when}: not there after 10 s: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_bring_changes_in_seconds_and_forgeries_change_nothing() {
    let sim = HubSpotSim::start().await;
    let mut rng = StdRng::seed_from_u64(4242);
    let mut p = build(&sim, &mut rng);
    let dir_secret = "webhook_secret = \"file:app-secret\"";
    // Long intervals: nothing but webhooks can bring a change here.
    let extra = format!(
        "{dir_secret}\nassociations_interval_secs = 86400\nreconcile_interval_secs = 86400"
    );
    let s = {
        // The secret file must exist before the server opens: write it into a fresh dir
        // through the same helper by starting once without webhooks, then restarting.
        let s = TestServer::start_hubspot(&sim.base_url, &[]).await;
        std::fs::write(s.dir.path().join("app-secret"), SECRET).expect("secret");
        s.restart(&support::hubspot_config(&sim.base_url, &extra))
            .await
    };
    let target = s.url("/hubspot/webhooks");
    sim.deliver_webhooks(&target, SECRET);
    let polls = s.hubspot().report().polls;

    // Rounds of random changes, restores included (a restore event names the record).
    let mut slowest = Duration::ZERO;
    for round in 0..5 {
        for _ in 0..8 {
            change(&sim, &mut rng, &mut p, true);
        }
        slowest = slowest.max(settle(&s, &sim, &format!("round {round}")).await);
    }
    eprintln!("webhook rounds: slowest change → visible {slowest:?}");
    assert!(slowest < Duration::from_secs(5), "{slowest:?}");
    assert_eq!(s.hubspot().report().polls, polls, "no poll ran");

    // Forgeries. Deliveries off; a HubSpot-side change crmgate was not told about.
    sim.stop_webhooks();
    let contact = p.contacts[3];
    sim.update(
        "contacts",
        contact,
        json!({"hubspot_owner_id": p.owners[0], "firstname": "Forged"}),
    );
    assert!(differences(&s, &sim).is_err(), "crmgate cannot know yet");
    let body = serde_json::to_vec(
        &json!([{"eventId": 990001, "subscriptionType": "contact.propertyChange",
        "objectId": contact, "propertyName": "firstname", "propertyValue": "Forged",
        "portalId": 62515, "appId": 1160452, "occurredAt": 1, "attemptNumber": 0}]),
    )
    .expect("json");
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    };
    let send = |ts: String, sig: String, body: Vec<u8>| {
        let req = s
            .client
            .post(&target)
            .header("X-HubSpot-Request-Timestamp", ts)
            .header("X-HubSpot-Signature-v3", sig)
            .body(body);
        async move { req.send().await.expect("send").status().as_u16() }
    };
    // Signed with a guessed secret.
    let ts = now_ms().to_string();
    let forged = v3_signature("guess", "POST", &target, &body, &ts);
    assert_eq!(send(ts, forged, body.clone()).await, 401);
    // Signed right but 6 minutes old.
    let old = (now_ms() - 6 * 60 * 1000).to_string();
    let stale = v3_signature(SECRET, "POST", &target, &body, &old);
    assert_eq!(send(old, stale, body.clone()).await, 401);
    // A real earlier delivery sent again verbatim.
    let (ts, sig, earlier) = sim.deliveries().last().cloned().expect("a delivery");
    assert_eq!(send(ts, sig, earlier).await, 401);
    // No signature at all.
    let r = s
        .client
        .post(&target)
        .body(body.clone())
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 401);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        differences(&s, &sim).is_err(),
        "a refused delivery made crmgate read nothing"
    );
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("crmgate_webhooks_total{outcome=\"refused\"} 4"),
        "{metrics}"
    );
    // The same event signed with the app's secret is believed only as far as HubSpot's own
    // answer: crmgate reads the contact and shows what HubSpot has.
    let ts = now_ms().to_string();
    let good = v3_signature(SECRET, "POST", &target, &body, &ts);
    assert_eq!(send(ts, good, body).await, 204);
    settle(&s, &sim, "after a genuine delivery").await;
    s.stop().await;
}
