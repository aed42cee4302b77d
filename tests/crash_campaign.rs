//! Crash campaign: 30 times, SIGKILL a running crmgate in the middle of a stream of admin
//! writes, restart it on the same data dir, and check that it opens, becomes ready, and holds
//! every write it acknowledged, in the CRM and in the replica (folder membership).

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ADMIN: (&str, &str) = ("ben@example.test", "demo2");
const ROUNDS: usize = 30;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

fn start(dir: &std::path::Path, port: u16) -> Child {
    let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo.json");
    Command::new(env!("CARGO_BIN_EXE_crmgate"))
        .args([
            "serve",
            "--insecure-http",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--data-dir")
        .arg(dir)
        .arg("--seed")
        .arg(seed)
        .env("CRMGATE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn crmgate")
}

fn wait_ready(child: &mut Child, client: &reqwest::blocking::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(e) = child.stderr.take() {
                for l in BufReader::new(e).lines().map_while(Result::ok) {
                    err.push_str(&l);
                    err.push('\n');
                }
            }
            panic!("crmgate exited with {status} while starting:\n{err}");
        }
        if let Ok(r) = client.get(format!("{base}/readyz")).send() {
            if r.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "crmgate did not become ready");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A simple pseudo-random sequence, so a failing round can be repeated.
fn lcg(x: &mut u64) -> u64 {
    *x = x
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *x >> 33
}

type Writes = Arc<Mutex<Vec<(String, String, String)>>>;

/// Checks that every acknowledged write is in the CRM and the replica; a write that was in
/// flight at the kill may have landed instead, and then becomes the expected value.
fn verify(
    client: &reqwest::blocking::Client,
    base: &str,
    acked: &Writes,
    in_flight: &Writes,
    at: &str,
) {
    let maybe = std::mem::take(&mut *in_flight.lock().expect("lock"));
    for (id, last, company) in acked.lock().expect("lock").iter_mut() {
        let r = client
            .get(format!("{base}/admin/v1/contacts/{id}"))
            .basic_auth(ADMIN.0, Some(ADMIN.1))
            .send()
            .expect("get");
        assert_eq!(r.status(), 200, "{at}: acknowledged {id} lost");
        let v: Value = r.json().expect("json");
        if v["last_name"] != json!(last) {
            let landed = maybe
                .iter()
                .find(|(i, l, _)| i == id && v["last_name"] == json!(l));
            let Some((_, l, c)) = landed else {
                panic!(
                    "{at}: {id} is {} but {last} was acknowledged last",
                    v["last_name"]
                );
            };
            (*last, *company) = (l.clone(), c.clone());
        }
        assert_eq!(v["companies"][0], json!(company));
        let ex: Value = client
            .get(format!(
                "{base}/admin/v1/explain?user=anna@example.test&contact={id}"
            ))
            .basic_auth(ADMIN.0, Some(ADMIN.1))
            .send()
            .expect("explain")
            .json()
            .expect("json");
        let want = if company == "k1" { "my" } else { "global" };
        assert_eq!(ex["folder"], want, "{at}: replica disagrees for {id}: {ex}");
    }
}

#[test]
fn sigkill_during_writes_loses_no_acknowledged_write_redb() {
    campaign("redb");
}

#[test]
fn sigkill_during_writes_loses_no_acknowledged_write_sled() {
    campaign("sled");
}

fn campaign(engine: &str) {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("crmgate.toml"),
        format!("[store]\nengine = \"{engine}\"\n"),
    )
    .expect("config");
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    // Acknowledged writes: (contact id, last name, company).
    let acked: Writes = Arc::default();
    // The write each writer had in flight when the process died: it may or may not have
    // landed, so it is the one other value allowed for its id.
    let in_flight: Writes = Arc::default();
    let mut rng = 0x5eed_u64;
    let mut total_acked = 0;
    for round in 0..ROUNDS {
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let mut child = start(dir.path(), port);
        wait_ready(&mut child, &client, &base);

        verify(
            &client,
            &base,
            &acked,
            &in_flight,
            &format!("round {round}"),
        );

        // Stream writes from two threads; kill at a random moment.
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..2 {
            let (client, base, stop, acked) =
                (client.clone(), base.clone(), stop.clone(), acked.clone());
            let in_flight = in_flight.clone();
            writers.push(std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    // Each writer owns its ids, so ack order is apply order per id.
                    let id = format!("crash{w}-{}", (round * 7 + n) % 20);
                    let last = format!("r{round}w{w}n{n}");
                    // k1: Anna is responsible (My); k3: she is not (Global).
                    let company = if n % 2 == 0 { "k1" } else { "k3" };
                    let body = json!({"companies":[company],"first_name":"Crash","last_name":last});
                    let r = client
                        .put(format!("{base}/admin/v1/contacts/{id}"))
                        .basic_auth(ADMIN.0, Some(ADMIN.1))
                        .json(&body)
                        .send();
                    match r {
                        Ok(r) if r.status().is_success() => {
                            let mut a = acked.lock().expect("lock");
                            a.retain(|(i, _, _)| *i != id);
                            a.push((id, last, company.to_owned()));
                        }
                        _ => {
                            in_flight
                                .lock()
                                .expect("lock")
                                .push((id, last, company.to_owned()));
                            break;
                        }
                    }
                    n += 1;
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(30 + lcg(&mut rng) % 250));
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().expect("writer");
        }
        total_acked = acked.lock().expect("lock").len();
    }
    assert!(
        total_acked > 10,
        "the campaign must actually write (got {total_acked})"
    );

    // A final clean start holds everything as well.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = start(dir.path(), port);
    wait_ready(&mut child, &client, &base);
    verify(&client, &base, &acked, &in_flight, "final start");
    child.kill().expect("kill");
    let _ = child.wait();
}
