//! helloHQ backend benchmark against the in-process simulator (100,000 contacts):
//!
//! 1. the initial load under helloHQ's v2 budget (1,000 requests/min, enforced by the
//!    simulator too): time, requests, the busiest 60 s window, 429s;
//! 2. the same load without a budget, against a baseline in the same run: a bare client
//!    fetching the same pages with no mapping or mirroring (ratio);
//! 3. steady-state poll cycles with no change and with 100 changes (requests, time);
//! 4. the time from a helloHQ change to its appearance in the replica (what a client's next
//!    sync reads) with the poller at the default 30 s interval, sampled at random moments.
//!
//! Run: `cargo bench --bench hellohq`. `BENCH_CONTACTS` (default 100000) and
//! `BENCH_LATENCY_SAMPLES` (default 4; each takes up to one interval) change the size.

#[allow(dead_code, unreachable_pub, clippy::all)]
#[path = "../tests/support/mod.rs"]
mod support;

use crmgate::app::App;
use rand::Rng;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::hellohq_sim::{self as sim, Sim};

fn open(dir: &std::path::Path, base: &str, keys: &str) -> Arc<App> {
    support::hellohq_app(dir, base, keys)
}

async fn load(app: &App) -> f64 {
    let t = Instant::now();
    while !app.replica.is_ready() {
        if let Err(e) = app.refresh().await {
            if app.replica.is_ready() {
                break;
            }
            eprintln!("  (cycle failed, continuing: {e})");
        }
    }
    t.elapsed().as_secs_f64()
}

/// The baseline: the same list pages the load reads, fetched by a bare client.
async fn bare_fetch(base: &str, refresh: String, contacts: usize) -> (f64, u64) {
    let http = reqwest::Client::new();
    let token: serde_json::Value = http
        .post(format!("{base}/Token"))
        .header("authorization", Sim::basic_auth())
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let token = token["access_token"].as_str().expect("token").to_owned();
    let sets = [
        ("Subsystem", ""),
        ("Users", "UserGroups"),
        (
            "Companies",
            "ResponsibleUsers,Subsystems,CompanyTypes,DefaultAddress",
        ),
        ("ContactPersons", "DefaultAddress"),
        ("Projects", "Members,ContactPersons,Subsystems"),
        ("Leads", "ContactPersons,Subsystems,Status"),
    ];
    let t = Instant::now();
    let mut requests = 0;
    let mut rows = 0;
    for (set, expand) in sets {
        let mut skip = 0;
        loop {
            let mut url = format!("{base}/v1/{set}?$orderby=Id&$top=1000&$skip={skip}");
            if !expand.is_empty() {
                url.push_str(&format!("&$expand={expand}"));
            }
            let v: serde_json::Value = http
                .get(url)
                .bearer_auth(&token)
                .send()
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            requests += 1;
            let n = v["value"].as_array().map(Vec::len).unwrap_or(0);
            rows += n;
            skip += n;
            if n < 1000 {
                break;
            }
        }
    }
    assert!(rows >= contacts, "baseline read everything");
    (t.elapsed().as_secs_f64(), requests)
}

fn main() {
    let contacts: usize = std::env::var("BENCH_CONTACTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let samples: usize = std::env::var("BENCH_LATENCY_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let sim = Sim::start().await;
        let t = Instant::now();
        let p = sim.populate(contacts, 42);
        // Pages of helloHQ's documented v2 size (1000); the tests cover smaller server caps.
        sim.set_page_cap(1000);
        println!(
            "simulator: {} contacts, {} companies, {} users, {} projects, {} leads (built in {:.1} s)",
            p.contacts.len(),
            p.companies.len(),
            p.users.len(),
            p.projects.len(),
            p.leads.len(),
            t.elapsed().as_secs_f64()
        );
        let quiet = "reconcile_interval_secs = 86400\nmembership_interval_secs = 86400";

        // 1. Under the v2 budget, enforced on both sides.
        sim.set_faults(sim::Faults {
            rate_limit_per_min: Some(1000),
            ..sim::Faults::default()
        });
        sim.reset_stats();
        let dir = tempfile::tempdir().expect("dir");
        let app = open(dir.path(), &sim.base_url, "requests_per_minute = 1000");
        let secs = load(&app).await;
        let st = sim.stats();
        let t429 = app_counter(&app, "crmgate_hellohq_throttled_total");
        println!(
            "initial load at 1000 req/min: {secs:.1} s, {} requests (incl. the id reconciliation that follows the load), busiest 60 s window {} requests, {t429} answers 429",
            st.requests, st.max_per_minute
        );
        drop(app);

        // 2. Unbudgeted, against the bare baseline.
        sim.set_faults(sim::Faults::default());
        let (base_secs, base_requests) = bare_fetch(&sim.base_url, sim.refresh_token(), contacts).await;
        sim.reset_stats();
        let dir2 = tempfile::tempdir().expect("dir");
        let app = open(
            dir2.path(),
            &sim.base_url,
            &format!("requests_per_minute = 100000\n{quiet}"),
        );
        let t = Instant::now();
        let _ = load(&app).await;
        let secs = t.elapsed().as_secs_f64();
        let st = sim.stats();
        println!(
            "initial load, no budget: {secs:.2} s, {} requests ({:.0} contacts/s); bare fetch of the same pages: {base_secs:.2} s, {base_requests} requests; crmgate/bare = {:.2}",
            st.requests,
            contacts as f64 / secs,
            secs / base_secs
        );

        // 3. Poll cycles.
        let mut idle = Vec::new();
        for _ in 0..5 {
            sim.reset_stats();
            let t = Instant::now();
            app.refresh().await.expect("poll");
            idle.push((t.elapsed().as_secs_f64() * 1000.0, sim.stats().requests));
        }
        let ms = idle.iter().map(|x| x.0).sum::<f64>() / idle.len() as f64;
        println!(
            "poll cycle, no change: {ms:.1} ms, {} requests",
            idle[idle.len() - 1].1
        );
        let mut rng = rand::thread_rng();
        let mut busy = Vec::new();
        for round in 0..3 {
            for i in 0..100 {
                let id = p.contacts[rng.gen_range(0..p.contacts.len())];
                sim.update("ContactPersons", id, |v| {
                    v["Position"] = json!(format!("Round {round} change {i}"))
                });
            }
            let seq = app.replica.read().expect("read").seq();
            sim.reset_stats();
            let t = Instant::now();
            app.refresh().await.expect("poll");
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            let applied = app.replica.read().expect("read").seq() - seq;
            busy.push((ms, sim.stats().requests, applied));
        }
        let ms = busy.iter().map(|x| x.0).sum::<f64>() / busy.len() as f64;
        println!(
            "poll cycle, 100 changed contacts: {ms:.1} ms, {} requests, replica entries {:?} (the 100, plus re-reads of the overlap window are no-ops)",
            busy[0].1,
            busy.iter().map(|x| x.2).collect::<Vec<_>>()
        );

        // 4. Change → replica at the default interval (30 s), with the server's loop.
        let interval = app.config.crm.poll_interval;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let poller = {
            let (app, stop) = (app.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = app.refresh().await;
                    tokio::time::sleep(interval).await;
                }
            })
        };
        let mut lat = Vec::new();
        for s in 0..samples {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..interval.as_millis() as u64))).await;
            let id = p.contacts[rng.gen_range(0..p.contacts.len())];
            let marker = format!("Latency sample {s}");
            sim.update("ContactPersons", id, |v| v["Position"] = json!(marker.clone()));
            let t = Instant::now();
            loop {
                let seen = {
                    let e = app.replica.read().expect("read");
                    e.contact_record_by_id(&id.to_string())
                        .is_some_and(|c| c.job_title.as_deref() == Some(marker.as_str()))
                };
                if seen {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            lat.push(t.elapsed().as_secs_f64());
            println!("  latency sample {s}: {:.1} s", lat[lat.len() - 1]);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        poller.abort();
        if !lat.is_empty() {
            let mean = lat.iter().sum::<f64>() / lat.len() as f64;
            let max = lat.iter().cloned().fold(0.0, f64::max);
            println!(
                "change → replica at the {} s default interval: mean {mean:.1} s, max {max:.1} s over {} samples (bound: interval + one cycle)",
                interval.as_secs(),
                lat.len()
            );
        }
    });
}

fn app_counter(app: &App, name: &str) -> u64 {
    match &app.crm {
        crmgate::crm::Crm::HelloHq(h) => h
            .metrics_text()
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}
