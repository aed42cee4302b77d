//! EWS benchmark on a 100k-contact dataset (tenant separation on, so a user's Global folder
//! holds about 10,000 contacts), over loopback with plain HTTP:
//! - initial SyncFolderItems of the folder (MaxChangesReturned 512, AllProperties);
//! - no-change SyncFolderItems polls from 32 keep-alive connections, against a trivial hyper
//!   handler answering the same bytes on the same machine in the same run (the baseline);
//! - FindItem, page of 100 at offset 9,900, sorted by DisplayName.
//!
//! Run: `cargo bench --bench ews`.

mod common;

use bytes::Bytes;
use common::{between, connect, load, send, trivial, Call};
use crmgate::app::App;
use crmgate::config::{Config, Overrides};
use crmgate::gen::{generate, GenParams};
use std::sync::Arc;
use std::time::Instant;

const SOAP: &str = r#"xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types""#;

fn post(auth: &str, body: &str) -> Call {
    Call {
        method: "POST",
        path: "/EWS/Exchange.asmx".into(),
        auth: auth.to_owned(),
        body: body.to_owned(),
        content_type: "text/xml; charset=utf-8",
    }
}

fn sync_body(folder: &str, state: Option<&str>) -> String {
    let st = state
        .map(|s| format!("<m:SyncState>{s}</m:SyncState>"))
        .unwrap_or_default();
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope {SOAP}><soap:Body><m:SyncFolderItems><m:ItemShape><t:BaseShape>AllProperties</t:BaseShape></m:ItemShape><m:SyncFolderId><t:FolderId Id="{folder}"/></m:SyncFolderId>{st}<m:MaxChangesReturned>512</m:MaxChangesReturned></m:SyncFolderItems></soap:Body></soap:Envelope>"#
    )
}

fn find_body(folder: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope {SOAP}><soap:Body><m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>Default</t:BaseShape></m:ItemShape><m:IndexedPageItemView MaxEntriesReturned="100" Offset="9900" BasePoint="Beginning"/><m:SortOrder><t:FieldOrder Order="Ascending"><t:FieldURI FieldURI="contacts:DisplayName"/></t:FieldOrder></m:SortOrder><m:ParentFolderIds><t:FolderId Id="{folder}"/></m:ParentFolderIds></m:FindItem></soap:Body></soap:Envelope>"#
    )
}

type Reload =
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

static LOG: std::sync::OnceLock<Reload> = std::sync::OnceLock::new();

/// Sets the log filter of the subscriber [`install_log`] made.
fn set_log(filter: &str) {
    if let Some(h) = LOG.get() {
        let _ = h.reload(tracing_subscriber::EnvFilter::new(filter));
    }
}

/// The text log `crmgate serve` writes, into `path`, initially off.
fn install_log(path: &std::path::Path) {
    use tracing_subscriber::prelude::*;
    let (filter, handle) =
        tracing_subscriber::reload::Layer::new(tracing_subscriber::EnvFilter::new("off"));
    let file = std::fs::File::create(path).expect("log file");
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file)),
        )
        .init();
    let _ = LOG.set(handle);
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let tmp = tempfile::tempdir().expect("tmp");
        install_log(&tmp.path().join("access.log"));
        let mut ds = generate(&GenParams { contacts: 100_000, users: 1000, subsystems: 8, seed: 42 });
        ds.users[1].password_hash = None;
        ds.users[1].password = Some("bench".into());
        let login = ds.users[1].login.clone();
        let seed = tmp.path().join("seed.json");
        std::fs::write(&seed, serde_json::to_string(&ds.to_json()).expect("json")).expect("write");
        drop(ds);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let ov = Overrides { listen: Some(format!("127.0.0.1:{port}")), data_dir: Some(tmp.path().join("data")), seed: Some(seed), insecure_http: true };
        // 32 connections of one user stand in for 32 users: the per-user EWS limit is raised.
        let cfg = Config::parse("[folders]\nglobal_scope = \"subsystem\"\n[ews]\nconcurrent_requests = 64\n", tmp.path(), &ov).expect("config");
        let app = Arc::new(App::open(cfg).expect("open"));
        app.catch_up().await.expect("load");
        let t = Instant::now();
        let numbers = app.warm_up();
        println!("start-up warm-up (crmgate serve runs it in the background): {numbers} phone numbers in {:.2} s", t.elapsed().as_secs_f64());
        tokio::spawn(crmgate::server::serve(app.clone(), listener, std::future::pending()));
        let auth = format!("Basic {}", { use base64::Engine as _; base64::engine::general_purpose::STANDARD.encode(format!("{login}:bench")) });
        let mut conn = connect(port).await;
        let ff = format!(r#"<?xml version="1.0"?><soap:Envelope {SOAP}><soap:Body><m:FindFolder Traversal="Shallow"><m:FolderShape><t:BaseShape>Default</t:BaseShape></m:FolderShape><m:ParentFolderIds><t:DistinguishedFolderId Id="contacts"/></m:ParentFolderIds></m:FindFolder></soap:Body></soap:Envelope>"#);
        let (_, r) = send(&mut conn, &post(&auth, &ff)).await;
        let global = r.split("<t:ContactsFolder>").nth(2).and_then(|f| between(f, "<t:FolderId Id=\"", "\"")).expect("global folder").to_owned();
        let total: usize = r.split("<t:ContactsFolder>").nth(2).and_then(|f| between(f, "<t:TotalCount>", "<")).and_then(|n| n.parse().ok()).expect("count");
        assert!(total >= 10_000, "the Global folder must hold at least 10,000 contacts, has {total}");

        // Initial sync.
        let t = Instant::now();
        let mut state: Option<String> = None;
        let mut synced = 0usize;
        loop {
            let (status, r) = send(&mut conn, &post(&auth, &sync_body(&global, state.as_deref()))).await;
            assert_eq!(status, 200, "{r}");
            synced += r.matches("<t:Create>").count();
            state = between(&r, "<m:SyncState>", "</m:SyncState>").map(str::to_owned);
            if r.contains("<m:IncludesLastItemInRange>true") {
                break;
            }
        }
        let sync_s = t.elapsed().as_secs_f64();
        assert_eq!(synced, total, "the initial sync delivers the whole folder");
        println!("EWS benchmark: 100k contacts, 1,000 users, 8 subsystems, tenant separation on; loopback, plain HTTP, 2 cores shared with the load generator");
        println!("initial SyncFolderItems: {synced} contacts (MaxChangesReturned 512, AllProperties) in {:.3} s = {:.0} contacts/s", sync_s, synced as f64 / sync_s);

        // No-change polls against the trivial baseline.
        let poll = sync_body(&global, state.as_deref());
        let (_, poll_answer) = send(&mut conn, &post(&auth, &poll)).await;
        assert!(poll_answer.contains("<m:Changes></m:Changes>") || poll_answer.contains("<m:Changes/>"), "{poll_answer}");
        // The access log as `crmgate serve` writes it by default (level info, one line per
        // request, here into a file), switched on and off between rounds.
        let (rps, p50, p99) = load(port, &post(&auth, &poll), 5).await;
        let (rps_log, p50_log, p99_log) = {
            set_log("info");
            let r = load(port, &post(&auth, &poll), 5).await;
            set_log("off");
            r
        };
        let base_port = trivial(Bytes::from(poll_answer.clone()), "text/xml; charset=utf-8").await;
        let (base_rps, base_p50, base_p99) = load(base_port, &post(&auth, &poll), 5).await;
        println!("no-change SyncFolderItems polls, 32 connections: {rps:.0} req/s, p50 {p50:.2} ms, p99 {p99:.2} ms");
        println!("trivial hyper handler, same bytes, same load:    {base_rps:.0} req/s, p50 {base_p50:.2} ms, p99 {base_p99:.2} ms");
        println!("ratio crmgate / trivial: {:.0} %", 100.0 * rps / base_rps);
        println!("the same polls with the access log on (the default): {rps_log:.0} req/s, p50 {p50_log:.2} ms, p99 {p99_log:.2} ms; {:.0} % of the trivial handler, {:.0} % of crmgate without the log", 100.0 * rps_log / base_rps, 100.0 * rps_log / rps);

        // The connection sat idle through the load rounds, longer than the head timeout.
        let mut conn = connect(port).await;
        // FindItem page at offset 9,900 by DisplayName.
        let fb = find_body(&global);
        let mut lat = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            let (status, r) = send(&mut conn, &post(&auth, &fb)).await;
            assert_eq!(status, 200);
            assert_eq!(r.matches("<t:Contact>").count(), 100, "a full page at offset 9,900");
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
        lat.sort_by(|a, b| a.total_cmp(b));
        println!("FindItem 100 at offset 9,900 by DisplayName ({total} in folder): p50 {:.2} ms, p99 {:.2} ms", lat[lat.len() / 2], lat[lat.len() * 99 / 100]);

        // DavMail's lookup of one contact by its resource name (0x10f3), answered from the
        // index; the same restriction under Not(Not(…)) takes the scan, the same-run baseline.
        let ids: Vec<String> = {
            let fi = format!(r#"<?xml version="1.0"?><soap:Envelope {SOAP}><soap:Body><m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:AdditionalProperties><t:ExtendedFieldURI PropertyTag="0x10f3" PropertyType="String"/></t:AdditionalProperties></m:ItemShape><m:IndexedPageItemView MaxEntriesReturned="200" Offset="0" BasePoint="Beginning"/><m:ParentFolderIds><t:FolderId Id="{global}"/></m:ParentFolderIds></m:FindItem></soap:Body></soap:Envelope>"#);
            let (_, r) = send(&mut conn, &post(&auth, &fi)).await;
            r.split("<t:Value>").skip(1).filter_map(|v| v.split('<').next()).map(str::to_owned).collect()
        };
        assert_eq!(ids.len(), 200);
        let lookup = |name: &str, wrap: bool| {
            let eq = format!(r#"<t:IsEqualTo><t:ExtendedFieldURI PropertyTag="0x10f3" PropertyType="String"/><t:FieldURIOrConstant><t:Constant Value="{name}"/></t:FieldURIOrConstant></t:IsEqualTo>"#);
            let r = if wrap { format!("<t:Not><t:Not>{eq}</t:Not></t:Not>") } else { eq };
            format!(r#"<?xml version="1.0"?><soap:Envelope {SOAP}><soap:Body><m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape><m:Restriction>{r}</m:Restriction><m:ParentFolderIds><t:FolderId Id="{global}"/></m:ParentFolderIds></m:FindItem></soap:Body></soap:Envelope>"#)
        };
        let mut figures = Vec::new();
        for wrap in [false, true] {
            let mut lat = Vec::new();
            for name in ids.iter().cycle().take(if wrap { 40 } else { 400 }) {
                let body = lookup(name, wrap);
                let t = Instant::now();
                let (status, r) = send(&mut conn, &post(&auth, &body)).await;
                lat.push(t.elapsed().as_secs_f64() * 1e3);
                assert_eq!(status, 200);
                assert_eq!(r.matches("<t:ItemId ").count(), 1, "{r}");
            }
            lat.sort_by(|a, b| a.total_cmp(b));
            figures.push((lat[lat.len() / 2], lat[lat.len() * 99 / 100]));
        }
        println!("FindItem by resource name (0x10f3) in a folder of {total}: index p50 {:.3} ms, p99 {:.3} ms; scan (same restriction under Not(Not)) p50 {:.2} ms, p99 {:.2} ms; scan/index {:.0}x", figures[0].0, figures[0].1, figures[1].0, figures[1].1, figures[1].0 / figures[0].0);

        // UpdateItem round trips on the embedded CRM, each durable before it is answered.
        let my = r.split("<t:ContactsFolder>").nth(1).and_then(|f| between(f, "<t:FolderId Id=\"", "\"")).expect("my folder").to_owned();
        let fi = format!(r#"<?xml version="1.0"?><soap:Envelope {SOAP}><soap:Body><m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape><m:IndexedPageItemView MaxEntriesReturned="1" Offset="0" BasePoint="Beginning"/><m:ParentFolderIds><t:FolderId Id="{my}"/></m:ParentFolderIds></m:FindItem></soap:Body></soap:Envelope>"#);
        let (_, r) = send(&mut conn, &post(&auth, &fi)).await;
        let item = between(&r, "<t:ItemId Id=\"", "\"").expect("an item in My").to_owned();
        let mut lat = Vec::new();
        for i in 0..300 {
            let up = format!(r#"<?xml version="1.0"?><soap:Envelope {SOAP}><soap:Body><m:UpdateItem ConflictResolution="AlwaysOverwrite" MessageDisposition="SaveOnly"><m:ItemChanges><t:ItemChange><t:ItemId Id="{item}"/><t:Updates><t:SetItemField><t:FieldURI FieldURI="contacts:JobTitle"/><t:Contact><t:JobTitle>Title {i}</t:JobTitle></t:Contact></t:SetItemField></t:Updates></t:ItemChange></m:ItemChanges></m:UpdateItem></soap:Body></soap:Envelope>"#);
            let t = Instant::now();
            let (status, r) = send(&mut conn, &post(&auth, &up)).await;
            lat.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(status, 200);
            assert!(r.contains("NoError"), "{r}");
        }
        lat.sort_by(|a, b| a.total_cmp(b));
        println!("UpdateItem round trip (CRM write + replica apply, both flushed): p50 {:.2} ms, p99 {:.2} ms", lat[lat.len() / 2], lat[lat.len() * 99 / 100]);
    });
}
