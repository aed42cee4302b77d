//! Foundation benchmark: seed load + membership build, restart to ready, incremental
//! reassignment, and peak RSS, on generated datasets. Each figure is also given as a ratio to
//! a baseline measured in the same run, since machines are noisy.
//!
//! Run: `cargo bench --bench foundation` (10k and 100k contacts);
//! `BENCH_SIZES=10000,100000,1000000 cargo bench --bench foundation` for the growth table;
//! `BENCH_ENGINE=sled` to measure the sled store instead of redb (the default).

use crmgate::crm::{Change, Versioned};
use crmgate::domain::rules::FolderRules;
use crmgate::domain::Record;
use crmgate::gen::{generate, GenParams};
use crmgate::replica::Engine;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

fn ready(port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    use std::io::Write;
    let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200")
}

/// Starts the release binary and returns (child, seconds until /readyz said 200).
fn start(dir: &std::path::Path, seed: &std::path::Path) -> (Child, u16, f64) {
    let port = free_port();
    let engine = std::env::var("BENCH_ENGINE").unwrap_or_else(|_| "redb".into());
    let config = dir.with_extension("toml");
    std::fs::write(&config, format!("[store]\nengine = \"{engine}\"\n")).expect("config");
    let t = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_crmgate"))
        .args([
            "serve",
            "--insecure-http",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir)
        .arg("--seed")
        .arg(seed)
        .env("CRMGATE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    while !ready(port) {
        assert!(t.elapsed() < Duration::from_secs(600), "not ready");
        std::thread::sleep(Duration::from_millis(5));
    }
    (child, port, t.elapsed().as_secs_f64())
}

fn engine_name() -> String {
    std::env::var("BENCH_ENGINE").unwrap_or_else(|_| "redb".into())
}

fn peak_rss_mb(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

struct Row {
    contacts: usize,
    seed_s: f64,
    restart_s: f64,
    rss_mb: f64,
    parse_s: f64,
    reassign_us: f64,
    rebuild_ms: f64,
}

fn run(contacts: usize, users: usize, subsystems: usize) -> Row {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut ds = generate(&GenParams {
        contacts,
        users,
        subsystems,
        seed: 42,
    });
    // One company with 50 contacts, for the reassignment figure.
    let big = ds.companies[0].id.clone();
    for c in ds.contacts.iter_mut().take(50) {
        c.companies = vec![big.clone()];
    }
    let seed = tmp.path().join("seed.json");
    let text = serde_json::to_string(&ds.to_json()).expect("json");
    std::fs::write(&seed, &text).expect("write");

    // Baseline: parsing the seed file's JSON, the least any load must do.
    let t = Instant::now();
    let v: serde_json::Value = serde_json::from_str(&text).expect("parse");
    let parse_s = t.elapsed().as_secs_f64();
    drop(v);

    let data = tmp.path().join("data");
    let (child, _, seed_s) = start(&data, &seed);
    let seed_rss = peak_rss_mb(child.id());
    stop(child);
    let (child, _, restart_s) = start(&data, &seed);
    let rss_mb = peak_rss_mb(child.id()).max(seed_rss);
    stop(child);
    let file = if engine_name() == "redb" {
        "crmgate.redb"
    } else {
        "db"
    };
    assert!(
        data.join(file).exists(),
        "the {} engine was used",
        engine_name()
    );

    // Engine time of a reassignment, against a full rebuild of the same data (baseline).
    let changes: Vec<Change> = ds
        .records()
        .map(|r| {
            Change::Upsert(Versioned {
                record: r,
                version: "1".into(),
            })
        })
        .collect();
    let t = Instant::now();
    let mut engine = Engine::new(FolderRules::default());
    engine.apply(changes.clone());
    let rebuild_ms = t.elapsed().as_secs_f64() * 1e3;
    let mut company = ds.companies[0].clone();
    let pool: Vec<_> = ds.users.iter().map(|u| u.id.clone()).collect();
    let n = 200;
    let t = Instant::now();
    for i in 0..n {
        company.responsible = vec![pool[i % pool.len()].clone()];
        let applied = engine.apply(vec![Change::Upsert(Versioned {
            record: Record::Company(company.clone()),
            version: format!("v{i}"),
        })]);
        assert!(
            i == 0 || applied.contacts_touched == 50,
            "all 50 contacts move"
        );
    }
    let reassign_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    Row {
        contacts,
        seed_s,
        restart_s,
        rss_mb,
        parse_s,
        reassign_us,
        rebuild_ms,
    }
}

fn main() {
    let sizes: Vec<usize> = std::env::var("BENCH_SIZES")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let engine = std::env::var("BENCH_ENGINE").unwrap_or_else(|_| "redb".into());
    println!(
        "foundation benchmark (users = contacts/100, 10 subsystems; store {engine}; release build)"
    );
    println!(
        "{:>9} | {:>8} {:>8} | {:>10} {:>8} | {:>8} | {:>12} {:>9} | {:>8}",
        "contacts",
        "seed s",
        "×parse",
        "restart s",
        "×parse",
        "RSS MB",
        "reassign µs",
        "rebuild",
        "×"
    );
    for n in sizes {
        let r = run(n, (n / 100).max(10), 10);
        println!(
            "{:>9} | {:>8.2} {:>8.1} | {:>10.2} {:>8.1} | {:>8.0} | {:>12.1} {:>7.0}ms | {:>8.0}",
            r.contacts,
            r.seed_s,
            r.seed_s / r.parse_s,
            r.restart_s,
            r.restart_s / r.parse_s,
            r.rss_mb,
            r.reassign_us,
            r.rebuild_ms,
            r.rebuild_ms * 1e3 / r.reassign_us,
        );
    }
    println!("seed s / restart s: process start until /readyz answers 200 (seed: empty data dir).");
    println!(
        "RSS MB: peak resident set (VmHWM) of the server, the larger of the seed and restart runs."
    );
    println!("×parse: ratio to parsing the same seed JSON in this process (baseline).");
    println!("reassign µs: engine time to move a 50-contact company to another responsible user;");
    println!(
        "rebuild: full membership build of the same data; ×: how many reassignments fit in one."
    );
}
