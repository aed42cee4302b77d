//! The resource test (issue "Hardening"): every hostile input that once crashed, stalled or
//! amplified the gateway, sent at once and repeatedly by authenticated attackers, while a
//! monitor checks that the process keeps answering `/healthz` within 100 ms, another user's
//! small requests within 200 ms, and that memory stays under a fixed ceiling.

mod support;

use crmgate::gen::{generate, GenParams};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{soap, TestServer};

/// Resident memory of this process (the server runs in it), in bytes.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn find_item(parents: &str, restriction: &str) -> String {
    soap(
        "",
        &format!(
            r#"<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>AllProperties</t:BaseShape></m:ItemShape><m:IndexedPageItemView MaxEntriesReturned="1000" Offset="0" BasePoint="Beginning"/>{restriction}<m:ParentFolderIds>{parents}</m:ParentFolderIds></m:FindItem>"#
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attack_at_once_leaves_the_gateway_responsive_and_bounded() {
    let mut ds = generate(&GenParams {
        contacts: 6000,
        users: 6,
        subsystems: 1,
        seed: 23,
    });
    for u in &mut ds.users {
        u.password_hash = None;
        u.password = Some("pw".into());
    }
    let logins: Vec<String> = ds.users.iter().map(|u| u.login.clone()).collect();
    let dir = tempfile::tempdir().expect("tmp");
    let seed = dir.path().join("seed.json");
    std::fs::write(&seed, serde_json::to_string(&ds.to_json()).expect("json")).expect("write");
    let s = Arc::new(
        TestServer::start(
            &seed,
            "[server]\nmax_body_bytes = 2000000\nmax_request_memory_bytes = 192000000\n",
        )
        .await,
    );
    let post = |s: Arc<TestServer>, login: String, body: String| async move {
        let r = s
            .client
            .post(s.url("/EWS/Exchange.asmx"))
            .basic_auth(login, Some("pw"))
            .header("content-type", "text/xml; charset=utf-8")
            .body(body)
            .send()
            .await;
        match r {
            Ok(r) => {
                let status = r.status().as_u16();
                let _ = r.bytes().await;
                status
            }
            Err(_) => 0,
        }
    };
    // The attackers' requests.
    let global = {
        let body = soap(
            "",
            r#"<m:FindFolder Traversal="Shallow"><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape><m:ParentFolderIds><t:DistinguishedFolderId Id="contacts"/></m:ParentFolderIds></m:FindFolder>"#,
        );
        let r = s
            .client
            .post(s.url("/EWS/Exchange.asmx"))
            .basic_auth(&logins[0], Some("pw"))
            .body(body)
            .send()
            .await
            .expect("send")
            .text()
            .await
            .expect("text");
        let root = crmgate::ews::xml::parse(r.as_bytes()).expect("xml");
        support::elements(&root, "FolderId")[1]
            .attr("Id")
            .expect("id")
            .to_owned()
    };
    let parent = format!(r#"<t:FolderId Id="{global}"/>"#);
    let wide: String = (0..900)
        .map(|i| format!(r#"<t:IsEqualTo><t:FieldURI FieldURI="contacts:Surname"/><t:FieldURIOrConstant><t:Constant Value="x{i}"/></t:FieldURIOrConstant></t:IsEqualTo>"#))
        .collect();
    let uri = format!("urn:{}", "n".repeat(100_000));
    let attacks: Vec<String> = vec![
        // Namespace bomb.
        format!(
            r#"<?xml version="1.0"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:z="{uri}"><soap:Body>{}</soap:Body></soap:Envelope>"#,
            "<z:a/>".repeat(40_000)
        ),
        // Amplification: one parent 1,000 times, then 60 times (under the id cap).
        find_item(&parent.repeat(1000), ""),
        find_item(&parent.repeat(60), ""),
        // Heavy restriction over the whole folder.
        find_item(
            &parent,
            &format!("<m:Restriction><t:Or>{wide}</t:Or></m:Restriction>"),
        ),
        // A large body.
        soap(
            &format!("<t:Filler>{}</t:Filler>", "a".repeat(1_500_000)),
            r#"<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape><m:FolderIds><t:DistinguishedFolderId Id="contacts"/></m:FolderIds></m:GetFolder>"#,
        ),
        // Deep nesting and many elements.
        soap(
            "",
            &format!("{}{}", "<t:a>".repeat(60), "</t:a>".repeat(60)).repeat(2000),
        ),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let server_errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    // Each attack from two attackers (users 0-2), continuously.
    for (n, body) in attacks.iter().enumerate() {
        for k in 0..2 {
            let (s, body, stop, sent, errs) = (
                s.clone(),
                body.clone(),
                stop.clone(),
                sent.clone(),
                server_errors.clone(),
            );
            let login = logins[(n + k) % 3].clone();
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let status = post(s.clone(), login.clone(), body.clone()).await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    // EWS answers faults with 500; a connection closed on a refused large
                    // body is 0. Anything else from the transport (502-504) is a failure.
                    if ![200, 500, 0].contains(&status) {
                        errs.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    // Graph: a wide $filter from a token of user 1.
    let tok = s.graph_token(&logins[1], "pw", "Contacts.Read").await;
    {
        let (s, stop, sent) = (s.clone(), stop.clone(), sent.clone());
        let filter: Vec<String> = (0..300)
            .map(|i| format!("surname%20eq%20%27x{i}%27"))
            .collect();
        let url = s.url(&format!(
            "/v1.0/me/contacts?$filter={}",
            filter.join("%20or%20")
        ));
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let _ = s.client.get(&url).bearer_auth(&tok).send().await;
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Idle sockets.
    let addr: std::net::SocketAddr = s.base.trim_start_matches("https://").parse().expect("addr");
    let mut idle = Vec::new();
    for _ in 0..200 {
        if let Ok(c) = tokio::net::TcpStream::connect(addr).await {
            idle.push(c);
        }
    }
    // The monitor: the victim is user 5, who attacks nothing.
    let victim = logins[5].clone();
    let small = soap(
        "",
        r#"<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape><m:FolderIds><t:DistinguishedFolderId Id="contacts"/></m:FolderIds></m:GetFolder>"#,
    );
    let ceiling: u64 = 1 << 30;
    let (mut worst_health, mut worst_small, mut worst_rss) = (Duration::ZERO, Duration::ZERO, 0);
    let end = Instant::now() + Duration::from_secs(8);
    tokio::time::sleep(Duration::from_millis(300)).await;
    while Instant::now() < end {
        let t = Instant::now();
        let h = s
            .client
            .get(s.url("/healthz"))
            .send()
            .await
            .expect("healthz");
        assert_eq!(h.status(), 200);
        worst_health = worst_health.max(t.elapsed());
        let t = Instant::now();
        let status = post(s.clone(), victim.clone(), small.clone()).await;
        assert_eq!(status, 200);
        worst_small = worst_small.max(t.elapsed());
        worst_rss = worst_rss.max(rss());
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("attacker");
    }
    drop(idle);
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent > 50, "the attackers got answers ({sent})");
    assert_eq!(server_errors.load(Ordering::Relaxed), 0);
    assert!(
        worst_health < Duration::from_millis(100),
        "/healthz took {worst_health:?} ({sent} attack requests)"
    );
    assert!(
        worst_small < Duration::from_millis(200),
        "another user's GetFolder took {worst_small:?}"
    );
    assert!(worst_rss < ceiling, "RSS reached {worst_rss} bytes");
    eprintln!(
        "resource test: {sent} attack requests in 8 s; worst /healthz {worst_health:?}, worst other-user request {worst_small:?}, peak RSS {} MB",
        worst_rss >> 20
    );
}
