//! The mailbox mirror on the HubSpot backend: a change made in HubSpot reaches every affected
//! mailbox through the webhook, the replica and the mirror, and the mailboxes keep equal to
//! the folders crmgate serves.

mod support;

use rand::rngs::StdRng;
use rand::SeedableRng;
use std::time::{Duration, Instant};
use support::graph_sim::GraphSim;
use support::hubspot_oracle::{build, change};
use support::hubspot_sim::HubSpotSim;
use support::mirror_oracle::converge;
use support::TestServer;

const SECRET: &str = "hubspot-app-secret-for-mirror";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hubspot_changes_reach_every_mailbox_within_seconds() {
    let hs = HubSpotSim::start().await;
    let mut rng = StdRng::seed_from_u64(1313);
    let mut p = build(&hs, &mut rng);
    let graph = GraphSim::start().await;
    graph.set_latency(Duration::from_millis(1), Duration::from_millis(3));
    let owners: Vec<String> = (0..6).map(|i| format!("owner{i}@portal.test")).collect();
    for o in &owners {
        graph.add_mailbox(o);
    }
    let list: Vec<String> = owners.iter().map(|o| format!("{o:?}")).collect();
    // Webhooks only (long poll intervals), so the latency measured is the push path's.
    let extra = format!(
        "webhook_secret = \"file:app-secret\"\nassociations_interval_secs = 86400\n\
         reconcile_interval_secs = 86400\n\
         [mirror]\ntenant = \"{t}\"\nclient_id = \"{c}\"\nclient_secret = \"file:mirror-secret\"\n\
         graph_url = \"{b}/v1.0\"\ntoken_url = \"{b}/{t}/oauth2/v2.0/token\"\n\
         poll_interval_secs = 1\nmailboxes = [{list}]\n",
        t = GraphSim::TENANT,
        c = GraphSim::CLIENT_ID,
        b = graph.base_url,
        list = list.join(", "),
    );
    let admin = [("owner0@portal.test", "pw", "admin")];
    let s = {
        // The secret files must exist before the server opens with them.
        let s = TestServer::start_hubspot(&hs.base_url, &admin).await;
        std::fs::write(s.dir.path().join("app-secret"), SECRET).expect("secret");
        std::fs::write(s.dir.path().join("mirror-secret"), GraphSim::CLIENT_SECRET)
            .expect("secret");
        s.restart(&support::hubspot_config(&hs.base_url, &extra))
            .await
    };
    hs.deliver_webhooks(&s.url("/hubspot/webhooks"), SECRET);
    let token = s
        .graph_token("owner0@portal.test", "pw", "Contacts.Read")
        .await;
    if let Err(d) = converge(&s.client, &s.base, &token, &graph, &owners, 60).await {
        panic!("the fill never matched the folders: {d}");
    }
    // Rounds of HubSpot-side changes; each round is timed from the change to every mailbox
    // equal to what the folders hold.
    let mut took = Vec::new();
    for round in 0..6 {
        let mut what = Vec::new();
        for _ in 0..4 {
            what.push(change(&hs, &mut rng, &mut p, false));
        }
        let t = Instant::now();
        if let Err(d) = converge(&s.client, &s.base, &token, &graph, &owners, 30).await {
            panic!("round {round} ({what:?}) never reached the mailboxes: {d}");
        }
        took.push(t.elapsed());
    }
    took.sort();
    eprintln!(
        "HubSpot change -> every mailbox: p50 {:?}, max {:?}",
        took[took.len() / 2],
        took[took.len() - 1]
    );
    assert!(
        took[took.len() - 1] < Duration::from_secs(10),
        "slowest round {:?}",
        took[took.len() - 1]
    );
    assert_eq!(graph.violations(), 0);
}
