//! crmgate on a HubSpot portal that keeps changing (issue 14): after the load, after each
//! round of random HubSpot-side changes (owner changes, association changes both ways,
//! lifecycle changes, archive and restore, team moves, new records), and after a restart,
//! every owner's My and Global in crmgate equal the folder rules computed straight from the
//! simulator's raw data. Polling alone (no webhooks): changes are found by the incremental
//! search, archived records by the archived listing, association edits (which leave
//! modification times alone) by the scheduled association re-read, restores by the
//! reconciliation.

mod support;

use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::BTreeMap;
use std::time::Duration;
use support::hubspot_oracle::{assert_same, build, change};
use support::hubspot_sim::HubSpotSim;
use support::TestServer;

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

    // crmgate's budgets kept HubSpot's limits: not one request was refused for rate (the
    // rounds need more than HubSpot's 100 requests per 10 s, so the budget did wait).
    assert_eq!(
        s.hubspot()
            .stats()
            .throttled
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );

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
