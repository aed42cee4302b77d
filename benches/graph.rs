//! Graph benchmark on a 100k-contact dataset (tenant separation on, so the user's Global folder
//! holds about 11,000 contacts), loopback, plain HTTP:
//! - the initial delta round of the folder (Prefer: odata.maxpagesize=512);
//! - no-change delta polls from 32 keep-alive connections, against a trivial hyper handler
//!   answering the same bytes in the same run (the baseline).
//!
//! Run: `cargo bench --bench graph`.

mod common;

use bytes::Bytes;
use common::{connect, load, send, trivial, Call};
use crmgate::app::App;
use crmgate::config::{Config, Overrides};
use crmgate::gen::{generate, GenParams};
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;

fn get(auth: &str, path: &str) -> Call {
    Call {
        method: "GET",
        path: path.to_owned(),
        auth: auth.to_owned(),
        body: String::new(),
        content_type: "application/json",
    }
}

/// The path and query of an absolute link.
fn local(link: &str) -> String {
    let rest = link.split_once("://").map(|(_, r)| r).unwrap_or(link);
    rest.find('/')
        .map(|i| rest[i..].to_owned())
        .unwrap_or_default()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let tmp = tempfile::tempdir().expect("tmp");
        let ds = generate(&GenParams { contacts: 100_000, users: 1000, subsystems: 8, seed: 42 });
        let login = ds.users[1].login.clone();
        let seed = tmp.path().join("seed.json");
        std::fs::write(&seed, serde_json::to_string(&ds.to_json()).expect("json")).expect("write");
        drop(ds);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let ov = Overrides { listen: Some(format!("127.0.0.1:{port}")), data_dir: Some(tmp.path().join("data")), seed: Some(seed), insecure_http: true };
        let cfg = Config::parse("[folders]\nglobal_scope = \"subsystem\"\n[graph]\nrequests_per_second = 100000\nconcurrent_requests = 1000\n", tmp.path(), &ov).expect("config");
        let app = Arc::new(App::open(cfg).expect("open"));
        app.catch_up().await.expect("load");
        let t = Instant::now();
        let numbers = app.warm_up();
        let warm = t.elapsed().as_secs_f64();
        let user = {
            let e = app.replica.read().expect("r");
            let u = e.find_login(&login).expect("user");
            e.user_id(u).to_owned()
        };
        let (token, _) = app.tokens.issue(&user, &login, &["Contacts.Read".into()], 3600).expect("token");
        tokio::spawn(crmgate::server::serve(app.clone(), listener, std::future::pending()));
        let auth = format!("Bearer {token}");
        let mut conn = connect(port).await;
        let (_, folders) = send(&mut conn, &get(&auth, "/v1.0/me/contactFolders")).await;
        let folders: Value = serde_json::from_str(&folders).expect("json");
        let glob = folders["value"][1]["id"].as_str().expect("global").to_owned();

        println!("Graph benchmark: 100k contacts, 1,000 users, 8 subsystems, tenant separation on; loopback, plain HTTP, 2 cores shared with the load generator");
        // Two devices of the user sync in turn.
        let mut delta_link = String::new();
        println!("start-up warm-up (crmgate serve runs it in the background): {numbers} phone numbers in {warm:.2} s");
        for device in ["first device", "second device"] {
        let t = Instant::now();
        let mut url = format!("/v1.0/me/contactFolders/{glob}/contacts/delta");
        let mut n = 0usize;
        delta_link = loop {
            let mut c = get(&auth, &url);
            c.content_type = "application/json";
            let req = hyper::Request::builder().method("GET").uri(&c.path).header("host", "127.0.0.1").header("authorization", &c.auth).header("prefer", "odata.maxpagesize=512").body(http_body_util::Full::new(Bytes::new())).expect("req");
            conn.ready().await.expect("ready");
            let resp = conn.send_request(req).await.expect("send");
            use http_body_util::BodyExt;
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            // Scan, do not parse: the figure is the server's, and the client shares the cores.
            let text = std::str::from_utf8(&body).expect("utf8");
            n += text.matches("\"@odata.etag\"").count();
            if let Some(next) = common::between(text, "\"@odata.nextLink\":\"", "\"") {
                url = local(next);
            } else {
                break local(common::between(text, "\"@odata.deltaLink\":\"", "\"").expect("deltaLink"));
            }
        };
        let secs = t.elapsed().as_secs_f64();
        assert!(n >= 10_000, "the folder must hold at least 10,000 contacts, has {n}");
        println!("initial delta round, {device}: {n} contacts (maxpagesize 512, full contacts) in {secs:.3} s = {:.0} contacts/s", n as f64 / secs);
        }

        // The server's share: the same folder rendered in process, no HTTP.
        {
            let e = app.replica.read().expect("r");
            let session =
                crmgate::view::Session::open(&app.view_cache, &e, &app.codec, &app.view, &login, false)
                    .expect("login");
            let mb = session.mailbox(None).expect("own mailbox");
            let f = crmgate::domain::rules::VirtualFolder::Global;
            let cs = mb.contacts(f);
            let t = Instant::now();
            let items: Vec<_> = cs.iter().filter_map(|c| mb.item(f, *c)).collect();
            let cards = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let bytes: usize = items.iter().map(|i| crmgate::graph::json::contact_bytes(i, "x", true).len()).sum();
            let ser = t.elapsed().as_secs_f64();
            println!("in process: items (cards, ids) {:.0} ms, JSON {:.0} ms for {} contacts ({} KB)", cards * 1e3, ser * 1e3, items.len(), bytes / 1024);
        }
        let poll = get(&auth, &delta_link);
        let (_, answer) = send(&mut conn, &poll).await;
        assert!(answer.contains("\"value\":[]"), "{answer}");
        let (rps, p50, p99) = load(port, &poll, 5).await;
        let base_port = trivial(Bytes::from(answer), crmgate::graph::JSON).await;
        let (base_rps, base_p50, base_p99) = load(base_port, &poll, 5).await;
        println!("no-change delta polls, 32 connections: {rps:.0} req/s, p50 {p50:.2} ms, p99 {p99:.2} ms");
        println!("trivial hyper handler, same bytes, same load: {base_rps:.0} req/s, p50 {base_p50:.2} ms, p99 {base_p99:.2} ms");
        println!("ratio crmgate / trivial: {:.0} %", 100.0 * rps / base_rps);
    });
}
