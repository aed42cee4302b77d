//! Many clients at once against the real `crmgate serve` process in its default configuration
//! (access log on, default limits; plain HTTP on loopback): 1,000 concurrent clients, each on
//! its own connection and signed in as its own user (half EWS SyncFolderItems, half Graph
//! delta), each doing its initial sync and then polling on from where its last poll ended (as real clients do); plus 20 writers changing contacts
//! through EWS UpdateItem. Measured: requests/s, latency percentiles, errors, and the
//! gateway's memory (its own process's RSS, not the load generator's). Before and after the
//! load, the time of one initial sync right after a (re)start and warm.
//!
//! Run: `cargo bench --bench load` (`BENCH_SECS`, default 180: the measured window;
//! `BENCH_CLIENTS`, default 1000; `BENCH_POLL_MS`, default 1000: each client's poll interval).

mod common;

use common::{between, connect, send, Call, Sender};
use crmgate::gen::{generate, GenParams};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SOAP: &str = r#"xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types""#;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn start(dir: &Path, port: u16) -> (Server, f64) {
    let t = Instant::now();
    let log = std::fs::File::create(dir.join(format!("crmgate-{}.log", t.elapsed().as_nanos())))
        .expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_crmgate"))
        .args(["serve", "-c"])
        .arg(dir.join("crmgate.toml"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("crmgate serve");
    let server = Server(child);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            let mut s = connect(port).await;
            let (status, _) = send(&mut s, &get("", "/readyz")).await;
            if status == 200 {
                break;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "crmgate did not get ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (server, t.elapsed().as_secs_f64())
}

fn get(auth: &str, path: &str) -> Call {
    Call {
        method: "GET",
        path: path.to_owned(),
        auth: auth.to_owned(),
        body: String::new(),
        content_type: "application/json",
    }
}

fn post(auth: &str, body: String) -> Call {
    Call {
        method: "POST",
        path: "/EWS/Exchange.asmx".into(),
        auth: auth.to_owned(),
        body,
        content_type: "text/xml; charset=utf-8",
    }
}

fn basic(login: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{login}:demo"))
    )
}

fn sync_body(folder: &str, state: Option<&str>) -> String {
    let st = state
        .map(|s| format!("<m:SyncState>{s}</m:SyncState>"))
        .unwrap_or_default();
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope {SOAP}><soap:Body><m:SyncFolderItems><m:ItemShape><t:BaseShape>AllProperties</t:BaseShape></m:ItemShape><m:SyncFolderId><t:FolderId Id="{folder}"/></m:SyncFolderId>{st}<m:MaxChangesReturned>512</m:MaxChangesReturned></m:SyncFolderItems></soap:Body></soap:Envelope>"#
    )
}

/// The user's two folder ids (My, Global) over EWS.
async fn ews_folders(s: &mut Sender, auth: &str) -> (String, String) {
    let ff = format!(
        r#"<?xml version="1.0"?><soap:Envelope {SOAP}><soap:Body><m:FindFolder Traversal="Shallow"><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape><m:ParentFolderIds><t:DistinguishedFolderId Id="contacts"/></m:ParentFolderIds></m:FindFolder></soap:Body></soap:Envelope>"#
    );
    let (status, r) = send(s, &post(auth, ff)).await;
    assert_eq!(status, 200, "{r}");
    let ids: Vec<&str> = r
        .split("<t:FolderId Id=\"")
        .skip(1)
        .filter_map(|x| x.split('"').next())
        .collect();
    (ids[0].to_owned(), ids[1].to_owned())
}

/// An EWS initial sync of `folder`; returns (state, contacts).
async fn ews_initial(s: &mut Sender, auth: &str, folder: &str) -> (String, usize) {
    let mut state: Option<String> = None;
    let mut n = 0;
    loop {
        let (status, r) = send(s, &post(auth, sync_body(folder, state.as_deref()))).await;
        assert_eq!(status, 200, "{r}");
        n += r.matches("<t:Create>").count();
        state = between(&r, "<m:SyncState>", "</m:SyncState>").map(str::to_owned);
        if r.contains("<m:IncludesLastItemInRange>true") {
            return (state.unwrap_or_default(), n);
        }
    }
}

fn local(url: &str) -> String {
    let url = url.replace("\\/", "/");
    match url.find("/v1.0/") {
        Some(i) => url[i..].to_owned(),
        None => url,
    }
}

/// A Graph initial delta round of the Global folder; returns the deltaLink.
async fn graph_initial(s: &mut Sender, auth: &str) -> String {
    let (status, folders) = send(s, &get(auth, "/v1.0/me/contactFolders")).await;
    assert_eq!(status, 200, "{folders}");
    let v: serde_json::Value = serde_json::from_str(&folders).expect("json");
    let glob = v["value"][1]["id"].as_str().expect("global").to_owned();
    let mut url = format!("/v1.0/me/contactFolders/{glob}/contacts/delta");
    loop {
        let (status, text) = send(s, &get(auth, &url)).await;
        assert_eq!(status, 200, "{text}");
        if let Some(next) = between(&text, "\"@odata.nextLink\":\"", "\"") {
            url = local(next);
        } else {
            return local(between(&text, "\"@odata.deltaLink\":\"", "\"").expect("deltaLink"));
        }
    }
}

#[derive(Default)]
struct Stats {
    polls: AtomicU64,
    writes: AtomicU64,
    errors: AtomicU64,
    poll_lat: Mutex<Vec<f64>>,
    write_lat: Mutex<Vec<f64>>,
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0)
}

fn main() {
    let secs = env("BENCH_SECS", 180);
    let clients = env("BENCH_CLIENTS", 1000) as usize;
    let poll_ms = env("BENCH_POLL_MS", 1000);
    let writers = 20usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async move {
        let tmp = tempfile::tempdir().expect("tmp");
        let users = clients + writers;
        let ds = generate(&GenParams {
            contacts: 20_000,
            users,
            subsystems: 40,
            seed: 5,
        });
        let logins: Vec<String> = ds.users.iter().map(|u| u.login.clone()).collect();
        std::fs::write(
            tmp.path().join("seed.json"),
            serde_json::to_string(&ds.to_json()).expect("json"),
        )
        .expect("seed");
        drop(ds);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        std::fs::write(
            tmp.path().join("crmgate.toml"),
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\ntls = \"off\"\n[store]\ndata_dir = \"data\"\n\
                 [crm]\nseed = \"seed.json\"\n[folders]\nglobal_scope = \"subsystem\"\n"
            ),
        )
        .expect("config");
        let (server, first_start) = start(tmp.path(), port).await;
        println!("load benchmark: crmgate serve in its default configuration (access log on, default limits) on 20,000 contacts, {users} users, 40 subsystems, tenant separation on; loopback, plain HTTP, 2 cores shared with the load generator");
        println!("seed and start to /readyz (warm-up included): {first_start:.2} s");
        // One initial sync right after the start, then the same again warm.
        let probe = logins[0].clone();
        let mut timed = Vec::new();
        for _ in 0..2 {
            let mut s = connect(port).await;
            let auth = basic(&probe);
            let (_, global) = ews_folders(&mut s, &auth).await;
            let t = Instant::now();
            let (_, n) = ews_initial(&mut s, &auth, &global).await;
            timed.push((n, t.elapsed().as_secs_f64()));
        }
        println!(
            "initial EWS sync of one Global folder ({} contacts): right after the start {:.0} contacts/s, warm {:.0} contacts/s",
            timed[0].0,
            timed[0].0 as f64 / timed[0].1,
            timed[1].0 as f64 / timed[1].1
        );

        let pid = server.0.id();
        let stats = Arc::new(Stats::default());
        let measuring = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let ready = Arc::new(tokio::sync::Barrier::new(clients + writers + 1));
        let mut tasks = Vec::new();
        let t_setup = Instant::now();
        for (i, login) in logins.iter().take(clients).enumerate() {
            let (stats, measuring, stop, ready, login) = (
                stats.clone(),
                measuring.clone(),
                stop.clone(),
                ready.clone(),
                login.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut s = connect(port).await;
                // Spread the clients' polls over the interval.
                let offset = Duration::from_millis(poll_ms * i as u64 / clients as u64);
                // (the poll, the EWS folder it syncs; None for Graph)
                let (mut poll, folder): (Call, Option<String>) = if i % 2 == 0 {
                    let auth = basic(&login);
                    let (_, global) = ews_folders(&mut s, &auth).await;
                    let (state, _) = ews_initial(&mut s, &auth, &global).await;
                    (post(&auth, sync_body(&global, Some(&state))), Some(global))
                } else {
                    let mut t = connect(port).await;
                    let form = format!(
                        "grant_type=password&username={}&password=demo&scope=Contacts.Read",
                        login.replace('@', "%40")
                    );
                    let mut c = Call {
                        method: "POST",
                        path: "/oauth2/v2.0/token".into(),
                        auth: String::new(),
                        body: form,
                        content_type: "application/x-www-form-urlencoded",
                    };
                    let (status, r) = send(&mut t, &c).await;
                    assert_eq!(status, 200, "{r}");
                    let tok = between(&r, "\"access_token\":\"", "\"").expect("token").to_owned();
                    c = get(&format!("Bearer {tok}"), "");
                    let link = graph_initial(&mut s, &c.auth).await;
                    (get(&c.auth, &link), None)
                };
                ready.wait().await;
                tokio::time::sleep(offset).await;
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let (status, r) = send(&mut s, &poll).await;
                    let ok = status == 200 && (poll.method == "GET" || r.contains("NoError"));
                    if !ok {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    // Like a real client, the next poll starts where this one ended.
                    if ok {
                        match &folder {
                            Some(f) => {
                                if let Some(st) = between(&r, "<m:SyncState>", "</m:SyncState>") {
                                    poll.body = sync_body(f, Some(st));
                                }
                            }
                            None => {
                                let link = between(&r, "\"@odata.nextLink\":\"", "\"")
                                    .or_else(|| between(&r, "\"@odata.deltaLink\":\"", "\""));
                                if let Some(l) = link {
                                    poll.path = local(l);
                                }
                            }
                        }
                    }
                    if measuring.load(Ordering::Relaxed) {
                        stats.polls.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut l) = stats.poll_lat.lock() {
                            l.push(t.elapsed().as_secs_f64() * 1e3);
                        }
                    }
                    next += Duration::from_millis(poll_ms);
                    tokio::time::sleep_until(next.into()).await;
                }
            }));
        }
        for login in logins.iter().skip(clients).take(writers) {
            let (stats, measuring, stop, ready, login) = (
                stats.clone(),
                measuring.clone(),
                stop.clone(),
                ready.clone(),
                login.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut s = connect(port).await;
                let auth = basic(&login);
                let (my, _) = ews_folders(&mut s, &auth).await;
                let fi = format!(r#"<?xml version="1.0"?><soap:Envelope {SOAP}><soap:Body><m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape><m:IndexedPageItemView MaxEntriesReturned="20" Offset="0" BasePoint="Beginning"/><m:ParentFolderIds><t:FolderId Id="{my}"/></m:ParentFolderIds></m:FindItem></soap:Body></soap:Envelope>"#);
                let (_, r) = send(&mut s, &post(&auth, fi)).await;
                let items: Vec<String> = r
                    .split("<t:ItemId Id=\"")
                    .skip(1)
                    .filter_map(|x| x.split('"').next())
                    .map(str::to_owned)
                    .collect();
                ready.wait().await;
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    if items.is_empty() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    let item = &items[n % items.len()];
                    n += 1;
                    let up = format!(r#"<?xml version="1.0"?><soap:Envelope {SOAP}><soap:Body><m:UpdateItem ConflictResolution="AlwaysOverwrite" MessageDisposition="SaveOnly"><m:ItemChanges><t:ItemChange><t:ItemId Id="{item}"/><t:Updates><t:SetItemField><t:FieldURI FieldURI="contacts:JobTitle"/><t:Contact><t:JobTitle>Load {n}</t:JobTitle></t:Contact></t:SetItemField></t:Updates></t:ItemChange></m:ItemChanges></m:UpdateItem></soap:Body></soap:Envelope>"#);
                    let t = Instant::now();
                    let (status, r) = send(&mut s, &post(&auth, up)).await;
                    if status != 200 || !r.contains("NoError") {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    if measuring.load(Ordering::Relaxed) {
                        stats.writes.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut l) = stats.write_lat.lock() {
                            l.push(t.elapsed().as_secs_f64() * 1e3);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }));
        }
        ready.wait().await;
        println!(
            "{clients} clients signed in and did their initial syncs, {writers} writers ready: {:.1} s",
            t_setup.elapsed().as_secs_f64()
        );
        let setup_errors = stats.errors.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_start = kb(pid, "VmRSS:");
        measuring.store(true, Ordering::Relaxed);
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        measuring.store(false, Ordering::Relaxed);
        let elapsed = t0.elapsed().as_secs_f64();
        let rss_end = kb(pid, "VmRSS:");
        let hwm = kb(pid, "VmHWM:");
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.expect("client");
        }
        let polls = stats.polls.load(Ordering::Relaxed);
        let writes = stats.writes.load(Ordering::Relaxed);
        let errors = stats.errors.load(Ordering::Relaxed);
        let mut pl = stats.poll_lat.lock().map(|v| v.clone()).unwrap_or_default();
        let mut wl = stats.write_lat.lock().map(|v| v.clone()).unwrap_or_default();
        println!(
            "{secs} s measured: {:.0} requests/s ({polls} polls, {writes} writes); polls p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms; writes p50 {:.2} ms, p99 {:.2} ms; errors {errors} ({setup_errors} during set-up)",
            (polls + writes) as f64 / elapsed,
            pct(&mut pl, 0.5),
            pct(&mut pl, 0.99),
            pct(&mut pl, 1.0),
            pct(&mut wl, 0.5),
            pct(&mut wl, 0.99),
        );
        println!(
            "gateway RSS: {} MB at the start of the window, {} MB at its end, peak {} MB",
            rss_start / 1024,
            rss_end / 1024,
            hwm / 1024
        );
        // A restart: SIGTERM, start again on the same data dir.
        let _ = Command::new("kill").arg(pid.to_string()).status();
        drop(server);
        let (server, restart) = start(tmp.path(), port).await;
        let mut s = connect(port).await;
        let auth = basic(&probe);
        let (_, global) = ews_folders(&mut s, &auth).await;
        let t = Instant::now();
        let (_, n) = ews_initial(&mut s, &auth, &global).await;
        let after = n as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        let (_, n) = ews_initial(&mut s, &auth, &global).await;
        let warm = n as f64 / t.elapsed().as_secs_f64();
        println!("restart to /readyz: {restart:.2} s; initial EWS sync right after it {after:.0} contacts/s, warm {warm:.0} contacts/s");
        drop(server);
    });
}
