//! Mailbox mirror benchmark (issue 13): crmgate (the release binary, in its own process so its
//! memory is its own) fills and follows `BENCH_MAILBOXES` mailboxes (default 100) of a Graph
//! simulator in this process, each user seeing `BENCH_CONTACTS` contacts (default 2,000; My
//! and Global together), with the simulator's latency (default 80–150 ms per request and per
//! batch item) and Microsoft's limits per app and mailbox (10,000 requests per 10 minutes, 4
//! concurrent) enforced by the simulator.
//!
//! 1. the fill: time until every mailbox holds its folders, next to the bound the limits
//!    allow (contacts × mean latency ÷ 4 concurrent, the same for every mailbox, all in
//!    parallel), as a ratio; requests and 429s;
//! 2. a CRM change (an edit of a contact every user sees) → visible in every mailbox:
//!    p50 and max over `BENCH_SAMPLES` (default 10) changes;
//! 3. requests per changed contact and mailbox; requests per hour with no changes (measured
//!    over `BENCH_IDLE_SECS`, default 60, at crmgate's default 30-s read-back interval);
//! 4. crmgate's memory (RSS) with the mailboxes mirrored, against the same process before
//!    the mirror started.
//!
//! Run: `cargo bench --bench mirror`.

#[allow(dead_code, unreachable_pub, clippy::all)]
#[path = "../tests/support/mod.rs"]
mod support;

use crmgate::gen::{generate, GenParams};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::graph_sim::GraphSim;
use support::mirror_oracle::crm_id;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds (user + system) a process used so far.
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<u64>() as f64 / 100.0 // USER_HZ
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

struct Crmgate {
    child: Child,
    base: String,
    client: reqwest::Client,
}

impl Drop for Crmgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Crmgate {
    async fn admin(&self, path: &str) -> Value {
        self.client
            .get(format!("{}{path}", self.base))
            .basic_auth("bench-admin@example.test", Some("demo"))
            .send()
            .await
            .expect("admin")
            .json()
            .await
            .expect("json")
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mailboxes = env("BENCH_MAILBOXES", 100);
    let contacts = env("BENCH_CONTACTS", 2000);
    let samples = env("BENCH_SAMPLES", 10);
    let idle_secs = env("BENCH_IDLE_SECS", 60) as u64;
    let lat_min = env("BENCH_LATENCY_MIN_MS", 80) as u64;
    let lat_max = env("BENCH_LATENCY_MAX_MS", 150) as u64;

    // One subsystem, Global on: every user's two folders hold every contact.
    let mut ds = generate(&GenParams {
        contacts,
        users: mailboxes,
        subsystems: 1,
        seed: 13,
    })
    .to_json();
    ds["users"].as_array_mut().expect("users").push(
        json!({"id": "uadmin", "login": "bench-admin@example.test", "name": "Bench Admin",
            "password": "demo", "role": "admin", "subsystems": []}),
    );
    let logins: Vec<String> = ds["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| u["login"].as_str().expect("login").to_owned())
        .filter(|l| l != "bench-admin@example.test")
        .collect();

    let sim = GraphSim::start().await;
    sim.set_latency(
        Duration::from_millis(lat_min),
        Duration::from_millis(lat_max),
    );
    for l in &logins {
        sim.add_mailbox(l);
    }
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("seed.json"), ds.to_string()).expect("seed");
    std::fs::write(dir.path().join("secret"), GraphSim::CLIENT_SECRET).expect("secret");
    let list: Vec<String> = logins.iter().map(|l| format!("{l:?}")).collect();
    std::fs::write(
        dir.path().join("crmgate.toml"),
        format!(
            "[mirror]\ntenant = \"{t}\"\nclient_id = \"{c}\"\nclient_secret = \"file:secret\"\n\
             graph_url = \"{b}/v1.0\"\ntoken_url = \"{b}/{t}/oauth2/v2.0/token\"\n\
             mailboxes = [{list}]\nparallel_mailboxes = {mailboxes}\nconcurrent_total = {total}\n",
            t = GraphSim::TENANT,
            c = GraphSim::CLIENT_ID,
            b = sim.base_url,
            list = list.join(", "),
            total = env("BENCH_CONCURRENT_TOTAL", 4 * mailboxes),
        ),
    )
    .expect("config");
    // The mirror is held back until the replica is loaded and measured: the config goes in
    // on a second start.
    let port = free_port();
    let spawn = |with_mirror: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_crmgate"));
        cmd.args([
            "serve",
            "--insecure-http",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--seed")
        .arg(dir.path().join("seed.json"))
        .env("CRMGATE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
        if with_mirror {
            cmd.arg("-c").arg(dir.path().join("crmgate.toml"));
        }
        Crmgate {
            child: cmd.spawn().expect("spawn crmgate"),
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
        }
    };
    let wait_ready = |g: &Crmgate| {
        let (client, base) = (g.client.clone(), g.base.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(300);
            while Instant::now() < deadline {
                if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
                    if r.status().is_success() {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("crmgate did not become ready");
        }
    };
    // RSS without the mirror (same data, replica loaded, warm), and after every user's two
    // folders were synced once through the Graph face (delta to the end): what serving the
    // users costs whatever the protocol, so the mirror's own share can be told apart.
    let (rss_without, rss_synced) = {
        let g = spawn(false);
        wait_ready(&g).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = rss_kib(g.child.id());
        let token = support::password_token(
            &g.client,
            &g.base,
            "bench-admin@example.test",
            "demo",
            "Contacts.Read",
        )
        .await;
        // crmgate's own per-token limits answer 429 with Retry-After: waited out.
        let get = |u: String| {
            let (client, token) = (g.client.clone(), token.clone());
            async move {
                loop {
                    let r = client
                        .get(&u)
                        .bearer_auth(&token)
                        .send()
                        .await
                        .expect("get");
                    if r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
                        let secs = r
                            .headers()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(1);
                        tokio::time::sleep(Duration::from_secs(secs)).await;
                        continue;
                    }
                    assert!(r.status().is_success(), "{}", r.status());
                    return r.json::<Value>().await.expect("json");
                }
            }
        };
        for l in &logins {
            let folders = get(format!("{}/v1.0/users/{l}/contactFolders", g.base)).await;
            for f in folders["value"].as_array().expect("folders") {
                let mut next = format!(
                    "{}/v1.0/users/{l}/contactFolders/{}/contacts/delta",
                    g.base,
                    f["id"].as_str().expect("id")
                );
                loop {
                    let page = get(next).await;
                    match page["@odata.nextLink"].as_str() {
                        Some(n) => next = n.to_owned(),
                        None => break,
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        (before, rss_kib(g.child.id()))
    };

    println!(
        "mirror bench: {mailboxes} mailboxes × {contacts} contacts, latency {lat_min}–{lat_max} ms, \
         limits 10,000 requests / 10 min and 4 concurrent per mailbox"
    );
    let g = spawn(true);
    wait_ready(&g).await;
    sim.reset_counters();
    let t0 = Instant::now();
    let gate_pid = g.child.id().to_string();
    let (cpu_gate0, cpu_sim0) = (cpu_secs(&gate_pid), cpu_secs("self"));
    loop {
        let st = g.admin("/admin/v1/mirror").await;
        let filled = st["progress"]["mailboxes_filled"].as_u64().unwrap_or(0) as usize;
        let pending: u64 = st["mailboxes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| m["backlog"].as_u64().unwrap_or(0))
            .sum();
        if filled == mailboxes && pending == 0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(3600),
            "the fill did not finish: {st}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let fill = t0.elapsed().as_secs_f64();
    let cpu_gate = cpu_secs(&gate_pid) - cpu_gate0;
    let cpu_sim = cpu_secs("self") - cpu_sim0;
    let (fill_requests, routes) = sim.requests();
    let fill_429 = sim.throttled();
    // Check: every mailbox holds every contact of its user's folders exactly once.
    let st = g.admin("/admin/v1/mirror").await;
    let want: std::collections::BTreeMap<String, usize> = st["mailboxes"]
        .as_array()
        .expect("mailboxes")
        .iter()
        .map(|m| {
            (
                m["login"].as_str().expect("login").to_owned(),
                m["contacts"].as_u64().unwrap_or(0) as usize,
            )
        })
        .collect();
    let total: usize = want.values().sum();
    let per_mailbox = total as f64 / mailboxes as f64;
    for l in &logins {
        let mut n = 0;
        for f in sim.folders(l) {
            let ids: std::collections::BTreeSet<String> =
                sim.contacts(l, &f.id).iter().filter_map(crm_id).collect();
            n += ids.len();
        }
        assert_eq!(n, want[l], "{l}: {n} contacts mirrored");
    }
    let mean_latency = (lat_min + lat_max) as f64 / 2.0 / 1000.0;
    let bound = per_mailbox * mean_latency / 4.0;
    let rss_with = rss_kib(g.child.id());
    println!(
        "fill: {fill:.1} s for {mailboxes} mailboxes ({total} contacts written, {per_mailbox:.0} \
         per mailbox); bound {bound:.1} s (contacts × mean latency ÷ 4 concurrent) → {:.0} % of \
         the bound",
        bound / fill * 100.0
    );
    println!(
        "      CPU during the fill: crmgate {cpu_gate:.1} s ({:.0} µs per contact written), \
         simulator and bench {cpu_sim:.1} s; wall {fill:.1} s on {} cores",
        cpu_gate * 1e6 / total as f64,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "      {fill_requests} Graph requests (batch items counted) incl. {} $batch envelopes, \
         {fill_429} answered 429, {} violations",
        routes.get("POST /$batch").copied().unwrap_or(0),
        sim.violations()
    );

    // Change → visible in every mailbox.
    sim.reset_counters();
    let target = ds["contacts"][0]["id"].as_str().expect("id").to_owned();
    let mut rec: Value = g.admin(&format!("/admin/v1/contacts/{target}")).await;
    // The target's item in every mailbox (an edit keeps it where it is).
    let items: Vec<(String, String)> = logins
        .iter()
        .map(|l| {
            let item = sim
                .folders(l)
                .iter()
                .flat_map(|f| sim.contacts(l, &f.id))
                .find(|c| crm_id(c).as_deref() == Some(target.as_str()))
                .and_then(|c| c["id"].as_str().map(str::to_owned))
                .unwrap_or_else(|| panic!("{l}: {target} not mirrored"));
            (l.clone(), item)
        })
        .collect();
    let mut lat = Vec::new();
    for i in 0..samples {
        let title = format!("Bench title {i}");
        rec["job_title"] = json!(title);
        let t = Instant::now();
        let r = g
            .client
            .put(format!("{}/admin/v1/contacts/{target}", g.base))
            .basic_auth("bench-admin@example.test", Some("demo"))
            .json(&rec)
            .send()
            .await
            .expect("put");
        assert!(r.status().is_success());
        // Wait until every mailbox shows it.
        loop {
            let done = items.iter().all(|(l, item)| {
                sim.contact(l, item)
                    .is_some_and(|c| c["jobTitle"] == title.as_str())
            });
            if done {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "change {i} never arrived"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        lat.push(t.elapsed().as_secs_f64());
        rec = g.admin(&format!("/admin/v1/contacts/{target}")).await;
    }
    let (change_requests, _) = sim.requests();
    let p50 = percentile(&mut lat.clone(), 0.5);
    let max = lat.iter().cloned().fold(0.0, f64::max);
    println!(
        "change → every mailbox: p50 {p50:.2} s, max {max:.2} s over {samples} changes, each \
         to all {mailboxes} mailboxes"
    );
    println!(
        "      {:.2} requests per changed contact and mailbox (read-back polls included)",
        change_requests as f64 / (samples * mailboxes) as f64
    );

    // Idle: nothing changes; only the read-back polls run.
    sim.reset_counters();
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let (idle, idle_routes) = sim.requests();
    let per_hour = idle as f64 * 3600.0 / idle_secs as f64;
    println!(
        "idle: {idle} requests in {idle_secs} s → {per_hour:.0} per hour ({:.0} per mailbox and \
         hour): {idle_routes:?}",
        per_hour / mailboxes as f64
    );
    let rss_end = rss_kib(g.child.id());
    println!(
        "memory at the end (after the changes and {idle_secs} s idle): {} MiB",
        rss_end / 1024
    );
    println!(
        "memory: crmgate RSS {} MiB with {mailboxes} mailboxes mirrored, {} MiB before the \
         mirror ran → {:.1} KiB per mailbox; without the mirror but every user's folders \
         synced once through the Graph face: {} MiB",
        rss_with / 1024,
        rss_without / 1024,
        (rss_with.saturating_sub(rss_without)) as f64 / mailboxes as f64,
        rss_synced / 1024
    );
}
