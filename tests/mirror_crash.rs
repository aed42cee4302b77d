//! Mailbox mirror crash campaign: crmgate (the real binary) is SIGKILLed at random moments
//! while it fills mailboxes and while it follows CRM changes, 32 times, and restarted on the
//! same data dir. After every kill no mailbox holds a contact twice; at the end every mailbox
//! equals the user's folders — nothing the CRM acknowledged is missing, nothing is left over.

mod support;

use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::graph_sim::GraphSim;
use support::mirror_oracle::{converge, mailbox};

const ADMIN: (&str, &str) = ("ben@example.test", "demo2");
const KILLS: usize = 32;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

fn logins() -> Vec<String> {
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(support::fixture("demo.json")).expect("demo"),
    )
    .expect("json");
    v["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| u["login"].as_str().expect("login").to_owned())
        .collect()
}

/// A crmgate process that is killed when dropped, so a failing assertion leaves none behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &std::path::Path, port: u16) -> Running {
    Command::new(env!("CARGO_BIN_EXE_crmgate"))
        .args([
            "serve",
            "--insecure-http",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("-c")
        .arg(dir.join("crmgate.toml"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--seed")
        .arg(support::fixture("demo.json"))
        .env("CRMGATE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Running)
        .expect("spawn crmgate")
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "crmgate did not become ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn lcg(x: &mut u64) -> u64 {
    *x = x
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *x >> 33
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_fill_and_incremental_work_leaves_no_duplicate_and_nothing_missing() {
    let sim = GraphSim::start().await;
    // Slow enough during the first half that the fill takes many rounds, so those kills land
    // in the middle of it; faster afterwards, for kills in incremental work.
    sim.set_latency(Duration::from_millis(80), Duration::from_millis(160));
    let users = logins();
    for l in &users {
        sim.add_mailbox(l);
    }
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("mirror-secret"), GraphSim::CLIENT_SECRET).expect("secret");
    // The first half places the folders under a holding folder, the second at the top level:
    // kills land in making the holding folder and in the change of placement as well.
    let config = |extra: &str| {
        std::fs::write(
            dir.path().join("crmgate.toml"),
            format!(
                "[mirror]\ntenant = \"{t}\"\nclient_id = \"{c}\"\nclient_secret = \"file:mirror-secret\"\n\
                 graph_url = \"{b}/v1.0\"\ntoken_url = \"{b}/{t}/oauth2/v2.0/token\"\npoll_interval_secs = 1\n\
                 batch_size = 5\n{extra}",
                t = GraphSim::TENANT,
                c = GraphSim::CLIENT_ID,
                b = sim.base_url,
            ),
        )
        .expect("config")
    };
    config("parent_folder_name = \"HQ\"\n");
    let client = reqwest::Client::new();
    let mut x = 0x6d69_7272_6f72u64;
    let mut kills_during_fill = 0;
    let mut n = 0u32;
    for round in 0..KILLS {
        if round == KILLS / 2 {
            config("");
        }
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let mut child = start(dir.path(), port);
        wait_ready(&client, &base).await;
        // Later rounds change the CRM while the mirror works: edits, creates, deletes and
        // a company changing hands, so kills also land in incremental work.
        if round == KILLS / 2 {
            sim.set_latency(Duration::from_millis(5), Duration::from_millis(20));
        }
        if round >= KILLS / 2 {
            for _ in 0..4 {
                n += 1;
                let (method, path, body) = match lcg(&mut x) % 4 {
                    0 => (
                        "PUT",
                        format!("/admin/v1/contacts/crash{n}"),
                        json!({"companies": ["k1"], "first_name": "Crash", "last_name": format!("Test{n}")}),
                    ),
                    1 => (
                        "PUT",
                        format!("/admin/v1/contacts/c{}", 1 + lcg(&mut x) % 50),
                        json!({"companies": ["k1"], "first_name": "Edited", "last_name": format!("Round{n}")}),
                    ),
                    2 => (
                        "DELETE",
                        format!("/admin/v1/contacts/c{}", 100 + lcg(&mut x) % 100),
                        Value::Null,
                    ),
                    _ => {
                        let who = ["u1", "u2", "u3", "u4"][(lcg(&mut x) % 4) as usize];
                        (
                            "PUT",
                            format!("/admin/v1/companies/k{}", 2 + lcg(&mut x) % 6),
                            json!({"name": format!("Moved {n}"), "responsible": [who]}),
                        )
                    }
                };
                let req = match method {
                    "PUT" => client.put(format!("{base}{path}")).json(&body),
                    _ => client.delete(format!("{base}{path}")),
                };
                let r = req
                    .basic_auth(ADMIN.0, Some(ADMIN.1))
                    .send()
                    .await
                    .expect("admin write");
                assert!(
                    r.status().is_success() || r.status() == 404,
                    "{method} {path}: {}",
                    r.status()
                );
            }
        }
        let wait = if round < KILLS / 2 {
            100 + lcg(&mut x) % 600
        } else {
            150 + lcg(&mut x) % 1500
        };
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let status: Value = client
            .get(format!("{base}/admin/v1/mirror"))
            .basic_auth(ADMIN.0, Some(ADMIN.1))
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("json");
        if status["progress"]["mailboxes_filled"].as_u64() < Some(users.len() as u64) {
            kills_during_fill += 1;
        }
        child.0.kill().expect("SIGKILL");
        let _ = child.0.wait();
        // Never two copies of a contact, whatever moment the kill hit.
        for u in &users {
            if let Err(e) = mailbox(&sim, u) {
                panic!("after kill {round} (at {wait} ms): {e}");
            }
        }
    }
    assert!(
        kills_during_fill >= 10,
        "kills during the fill: {kills_during_fill}"
    );
    // A last start runs to the end: every mailbox equals its user's folders.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let child = start(dir.path(), port);
    wait_ready(&client, &base).await;
    let token = support::password_token(&client, &base, ADMIN.0, ADMIN.1, "Contacts.Read").await;
    let result = converge(&client, &base, &token, &sim, &users, 120).await;
    drop(child);
    if let Err(d) = result {
        panic!("after {KILLS} kills ({kills_during_fill} during the fill): {d}");
    }
    // The holding folder of the first half is gone; the folders are at the top level.
    let marker = crmgate::mirror::body::folder_prop();
    for u in &users {
        let def = sim.default_folder_id(u);
        for f in sim.folders(u) {
            if let Some(tag) = f.ext.get(&marker) {
                assert!(
                    tag != "parent" && f.parent_id == def,
                    "{u}: {} ({tag}) left at the old place",
                    f.display_name
                );
            }
        }
    }
    eprintln!("{KILLS} kills, {kills_during_fill} during the fill; mailboxes equal the folders");
}
