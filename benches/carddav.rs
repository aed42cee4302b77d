//! CardDAV benchmark: crmgate's CardDAV face against Radicale 3.9 (the CardDAV server a user
//! would pick instead), same contacts, same machine, same client, in the same run; and the
//! no-change polls against a trivial hyper handler serving the same bytes.
//!
//!   cargo bench --bench carddav
//!
//! Radicale is installed from PyPI into `.cache/venv-radicale` when missing. The client is the
//! benchmarks' raw hyper client for both servers, so the figures compare the servers.

mod common;

use bytes::Bytes;
use common::{connect, load, trivial, Call, Sender};
use crmgate::app::App;
use crmgate::config::{Config, Overrides};
use crmgate::gen::{generate, GenParams};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PROPS: &str = r#"<d:prop><d:getetag/><card:address-data/></d:prop>"#;

fn call(method: &'static str, path: &str, auth: &str, body: String) -> Call {
    Call {
        method,
        path: path.to_owned(),
        auth: auth.to_owned(),
        body,
        content_type: "application/xml; charset=utf-8",
    }
}

fn propfind_list() -> String {
    r#"<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:"><d:prop><d:getetag/></d:prop></d:propfind>"#.into()
}

fn getctag() -> String {
    r#"<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:" xmlns:cs="http://calendarserver.org/ns/"><d:prop><cs:getctag/></d:prop></d:propfind>"#.into()
}

fn multiget(hrefs: &[String]) -> String {
    let mut s = format!(
        r#"<?xml version="1.0" encoding="utf-8"?><card:addressbook-multiget xmlns:d="DAV:" xmlns:card="urn:ietf:params:xml:ns:carddav">{PROPS}"#
    );
    for h in hrefs {
        s.push_str(&format!("<d:href>{h}</d:href>"));
    }
    s.push_str("</card:addressbook-multiget>");
    s
}

fn sync(token: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><d:sync-collection xmlns:d="DAV:" xmlns:card="urn:ietf:params:xml:ns:carddav"><d:sync-token>{token}</d:sync-token><d:sync-level>1</d:sync-level>{PROPS}</d:sync-collection>"#
    )
}

/// The `.vcf` hrefs of a multistatus, whatever prefix the server gives the DAV namespace.
fn hrefs(answer: &str) -> Vec<String> {
    answer
        .split("href>")
        .skip(1)
        .filter_map(|s| s.split('<').next())
        .filter(|h| h.ends_with(".vcf"))
        .map(str::to_owned)
        .collect()
}

fn token_of(answer: &str) -> String {
    answer
        .split("sync-token>")
        .nth(1)
        .and_then(|s| s.split("</").next())
        .unwrap_or("")
        .to_owned()
}

fn cards(answer: &str) -> usize {
    answer.matches("BEGIN:VCARD").count()
}

/// PROPFIND Depth 1 for the list, then multiget in batches of 100; returns (cards, seconds).
async fn full_sync_multiget(conn: &mut Client, book: &str, auth: &str) -> (usize, f64) {
    let t = Instant::now();
    let mut c = call("PROPFIND", book, auth, propfind_list());
    c.path = book.to_owned();
    let (status, list) = conn.send(&c, "1").await;
    assert_eq!(status, 207, "{}", &list[..list.len().min(300)]);
    let all = hrefs(&list);
    let mut got = 0;
    for chunk in all.chunks(100) {
        let (status, r) = conn
            .send(&call("REPORT", book, auth, multiget(chunk)), "1")
            .await;
        assert_eq!(status, 207);
        got += cards(&r);
    }
    assert_eq!(got, all.len(), "every listed card came");
    (got, t.elapsed().as_secs_f64())
}

/// sync-collection from an empty token until caught up; returns (cards, seconds, token).
async fn full_sync_collection(conn: &mut Client, book: &str, auth: &str) -> (usize, f64, String) {
    let t = Instant::now();
    let mut token = String::new();
    let mut got = 0;
    loop {
        let (status, r) = conn
            .send(&call("REPORT", book, auth, sync(&token)), "1")
            .await;
        assert_eq!(status, 207, "{}", &r[..r.len().min(300)]);
        got += cards(&r);
        token = token_of(&r);
        if !r.contains(" 507 ") {
            break;
        }
    }
    (got, t.elapsed().as_secs_f64(), token)
}

/// A client of one server: one keep-alive connection, or (Radicale's built-in server closes
/// every connection after its answer) a new connection per request.
struct Client {
    port: u16,
    keep: bool,
    conn: Option<Sender>,
}

impl Client {
    fn new(port: u16, keep: bool) -> Client {
        Client {
            port,
            keep,
            conn: None,
        }
    }

    async fn send(&mut self, c: &Call, depth: &str) -> (u16, String) {
        if !self.keep || self.conn.is_none() {
            self.conn = Some(connect(self.port).await);
        }
        match self.conn.as_mut() {
            Some(s) => send_depth(s, c, depth).await,
            None => unreachable!("connected above"),
        }
    }
}

/// `send` with a Depth header (the shared client sends none).
async fn send_depth(s: &mut Sender, c: &Call, depth: &str) -> (u16, String) {
    use http_body_util::{BodyExt, Full};
    let req = hyper::Request::builder()
        .method(c.method)
        .uri(&c.path)
        .header("host", "127.0.0.1")
        .header("authorization", &c.auth)
        .header("content-type", c.content_type)
        .header("depth", depth)
        .body(Full::new(Bytes::from(c.body.clone())))
        .expect("request");
    s.ready().await.expect("ready");
    let resp = s.send_request(req).await.expect("send");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Radicale from PyPI in `.cache/venv-radicale`, installed when missing.
fn radicale_bin() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join(".cache/venv-radicale");
    let bin = venv.join("bin/radicale");
    let ok = |b: &Path| {
        std::process::Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "3.9.0")
    };
    if !ok(&bin) {
        let _ = std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status();
        let _ = std::process::Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "radicale==3.9.0",
            ])
            .status();
    }
    ok(&bin).then_some(bin)
}

/// Starts Radicale on `dir` (no authentication, filesystem storage) and waits for it.
async fn start_radicale(bin: &Path, dir: &Path) -> (std::process::Child, u16) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let child = std::process::Command::new(bin)
        .arg("--server-hosts")
        .arg(format!("127.0.0.1:{port}"))
        .args(["--auth-type", "none", "--rights-type", "owner_only"])
        .arg("--storage-filesystem-folder")
        .arg(dir)
        .args(["--logging-level", "error"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("radicale");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (child, port)
}

/// Requests per second of one connection sending `c` for `secs` (Radicale's slow answers).
async fn sequential(port: u16, c: &Call, depth: &str, secs: f64) -> f64 {
    let mut conn = Client::new(port, false);
    let t = Instant::now();
    let mut n = 0u32;
    while t.elapsed().as_secs_f64() < secs {
        let (status, _) = conn.send(c, depth).await;
        assert_eq!(status, 207);
        n += 1;
    }
    f64::from(n) / t.elapsed().as_secs_f64()
}

async fn start_crmgate(
    tmp: &Path,
    contacts: usize,
    scope: &str,
) -> (Arc<App>, u16, String, String) {
    let mut ds = generate(&GenParams {
        contacts,
        users: 1000,
        subsystems: 8,
        seed: 42,
    });
    ds.users[1].password_hash = None;
    ds.users[1].password = Some("bench".into());
    let login = ds.users[1].login.clone();
    let seed = tmp.join("seed.json");
    std::fs::write(&seed, serde_json::to_string(&ds.to_json()).expect("json")).expect("write");
    drop(ds);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let ov = Overrides {
        listen: Some(format!("127.0.0.1:{port}")),
        data_dir: Some(tmp.join("data")),
        seed: Some(seed),
        insecure_http: true,
    };
    let cfg = Config::parse(
        &format!("[folders]\nglobal_scope = \"{scope}\"\n[ews]\nconcurrent_requests = 64\n"),
        tmp,
        &ov,
    )
    .expect("config");
    let app = Arc::new(App::open(cfg).expect("open"));
    app.catch_up().await.expect("load");
    app.warm_up();
    tokio::spawn(crmgate::server::serve(
        app.clone(),
        listener,
        std::future::pending(),
    ));
    let auth = format!("Basic {}", {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("{login}:bench"))
    });
    let book = format!("/dav/addressbooks/{login}/global/");
    (app, port, auth, book)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let tmp = tempfile::tempdir().expect("tmp");
        let (_app, port, auth, book) = start_crmgate(tmp.path(), 100_000, "subsystem").await;
        println!("CardDAV benchmark: 100k contacts, 1,000 users, 8 subsystems, tenant separation on; one user's Global book; loopback, plain HTTP, 2 cores shared with the client");
        let mut conn = Client::new(port, true);
        // Warm-up round (first answers fill the view's caches), then the measured ones.
        let _ = full_sync_multiget(&mut conn, &book, &auth).await;
        let (n, s) = full_sync_multiget(&mut conn, &book, &auth).await;
        let crm_multiget = n as f64 / s;
        println!("crmgate   full sync, PROPFIND Depth 1 + multiget of 100: {n} contacts in {s:.3} s = {crm_multiget:.0} contacts/s");
        let (n2, s2, token) = full_sync_collection(&mut conn, &book, &auth).await;
        let crm_sync = n2 as f64 / s2;
        println!("crmgate   full sync, sync-collection from empty (pages of 1,000): {n2} contacts in {s2:.3} s = {crm_sync:.0} contacts/s");
        assert_eq!(n, n2);

        // The same cards into Radicale's storage, as crmgate serves them.
        let radicale = radicale_bin();
        let mut rad_figures = None;
        if let Some(bin) = &radicale {
            let store = tmp.path().join("radicale");
            let col = store.join("collection-root/bench/book");
            std::fs::create_dir_all(&col).expect("dir");
            std::fs::write(col.join(".Radicale.props"), r#"{"D:displayname": "bench", "tag": "VADDRESSBOOK"}"#).expect("props");
            let (_, list) = conn.send(&call("PROPFIND", &book, &auth, propfind_list()), "1").await;
            let all = hrefs(&list);
            for chunk in all.chunks(100) {
                let (_, r) = conn.send(&call("REPORT", &book, &auth, multiget(chunk)), "1").await;
                for (i, card) in r.split("BEGIN:VCARD").skip(1).enumerate() {
                    let body = card.split("END:VCARD").next().unwrap_or("");
                    let text = format!("BEGIN:VCARD{body}END:VCARD\r\n").replace("&#13;", "\r").replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'");
                    let name = chunk.get(i).and_then(|h| h.rsplit('/').next()).unwrap_or("x.vcf");
                    std::fs::write(col.join(name), text).expect("card");
                }
            }
            let (mut child, rport) = start_radicale(bin, &store).await;
            let rauth = format!("Basic {}", { use base64::Engine as _; base64::engine::general_purpose::STANDARD.encode("bench:bench") });
            let rbook = "/bench/book/";
            let mut rconn = Client::new(rport, false);
            // Radicale builds its item cache on the first full read: a warm-up round first.
            let _ = full_sync_multiget(&mut rconn, rbook, &rauth).await;
            let (rn, rs) = full_sync_multiget(&mut rconn, rbook, &rauth).await;
            let rad_multiget = rn as f64 / rs;
            println!("Radicale  full sync, PROPFIND Depth 1 + multiget of 100: {rn} contacts in {rs:.3} s = {rad_multiget:.0} contacts/s");
            let (rn2, rs2, rtoken) = full_sync_collection(&mut rconn, rbook, &rauth).await;
            let rad_sync = rn2 as f64 / rs2;
            println!("Radicale  full sync, sync-collection from empty: {rn2} contacts in {rs2:.3} s = {rad_sync:.0} contacts/s");
            let rad_ctag = sequential(rport, &call("PROPFIND", rbook, &rauth, getctag()), "0", 5.0).await;
            let rad_poll = sequential(rport, &call("REPORT", rbook, &rauth, sync(&rtoken)), "1", 5.0).await;
            println!("Radicale  no-change polls, one connection: getctag PROPFIND {rad_ctag:.1} req/s, sync-collection {rad_poll:.1} req/s");
            let _ = child.kill();
            let _ = child.wait();
            rad_figures = Some((rad_multiget, rad_sync, rad_ctag, rad_poll));
        } else {
            println!("Radicale 3.9 could not be installed into .cache/venv-radicale: no comparison");
        }

        // The connection sat idle through Radicale's rounds, longer than the head timeout.
        let mut conn = Client::new(port, true);
        // No-change polls under load, against a trivial hyper handler with the same bytes.
        let poll = call("REPORT", &book, &auth, sync(&token));
        let (_, poll_answer) = conn.send(&poll, "1").await;
        assert!(!poll_answer.contains("BEGIN:VCARD"), "a no-change poll: {poll_answer}");
        let (rps, p50, p99) = load(port, &poll, 5).await;
        let base_port = trivial(Bytes::from(poll_answer), "application/xml; charset=utf-8").await;
        let (base_rps, _, _) = load(base_port, &poll, 5).await;
        println!("crmgate   no-change sync-collection polls, 32 connections: {rps:.0} req/s, p50 {p50:.2} ms, p99 {p99:.2} ms; {:.0} % of a trivial hyper handler ({base_rps:.0} req/s)", 100.0 * rps / base_rps);
        let ctag = call("PROPFIND", &book, &auth, getctag());
        let (_, ctag_answer) = conn.send(&ctag, "0").await;
        let (crps, cp50, cp99) = load(port, &ctag, 5).await;
        let base_port = trivial(Bytes::from(ctag_answer), "application/xml; charset=utf-8").await;
        let (cbase, _, _) = load(base_port, &ctag, 5).await;
        println!("crmgate   no-change getctag PROPFIND (Depth 0), 32 connections: {crps:.0} req/s, p50 {cp50:.2} ms, p99 {cp99:.2} ms; {:.0} % of a trivial hyper handler ({cbase:.0} req/s)", 100.0 * crps / cbase);
        if let Some((m, s, c, p)) = rad_figures {
            println!("ratios crmgate / Radicale: full sync multiget {:.0}x, sync-collection {:.0}x, getctag poll {:.0}x, sync-collection poll {:.0}x", crm_multiget / m, crm_sync / s, crps / c, rps / p);
        }
    });

    // 100,000 contacts in one book: pages with flat memory.
    rt.block_on(async {
        let tmp = tempfile::tempdir().expect("tmp");
        let (_app, port, auth, book) = start_crmgate(tmp.path(), 100_000, "all").await;
        let mut conn = Client::new(port, true);
        let before = rss_kib();
        let (n, s, _) = full_sync_collection(&mut conn, &book, &auth).await;
        let after = rss_kib();
        println!("crmgate   100k book: sync-collection from empty, {n} contacts in {s:.2} s = {:.0} contacts/s; RSS {} MiB before, {} MiB after", n as f64 / s, before / 1024, after / 1024);
        assert!(n >= 90_000, "the whole book: {n}");
    });
}
