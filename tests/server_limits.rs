//! Transport bounds (issue "Hardening", 8 and 10): the request head limit as configured,
//! a memory budget for request bodies in flight, connections per address, and idle or
//! silent sockets that give their slots up when slots run short.

mod support;

use std::sync::Arc;
use std::time::Duration;
use support::{fixture, soap, TestServer};
use tokio::io::AsyncReadExt;

fn addr(s: &TestServer) -> std::net::SocketAddr {
    s.base
        .trim_start_matches("https://")
        .parse()
        .expect("address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_over_max_header_bytes_is_refused() {
    let s = TestServer::start(&fixture("demo.json"), "").await;
    let mut req = s.client.get(s.url("/healthz"));
    // 40 × 2.5 KB = 100 KB of headers against the default 64 KiB.
    for i in 0..40 {
        req = req.header(format!("x-filler-{i}"), "f".repeat(2500));
    }
    let r = req.send().await.expect("send");
    assert_eq!(r.status(), 431);
    // Under the limit is fine.
    let mut req = s.client.get(s.url("/healthz"));
    for i in 0..20 {
        req = req.header(format!("x-filler-{i}"), "f".repeat(2500));
    }
    assert_eq!(req.send().await.expect("send").status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_in_flight_share_a_memory_budget() {
    let s = Arc::new(
        TestServer::start(
            &fixture("demo.json"),
            "[server]\nmax_body_bytes = 2000000\nmax_request_memory_bytes = 96000000\n",
        )
        .await,
    );
    // 1.2 MB each, valid EWS: a GetFolder with a large header element the server ignores.
    let body = soap(
        &format!("<t:Filler>{}</t:Filler>", "a".repeat(1_200_000)),
        r#"<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape><m:FolderIds><t:DistinguishedFolderId Id="contacts"/></m:FolderIds></m:GetFolder>"#,
    );
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (s, body) = (s.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let r = s
                .client
                .post(s.url("/EWS/Exchange.asmx"))
                .basic_auth("anna@example.test", Some("demo"))
                .header("content-type", "text/xml; charset=utf-8")
                .body(body)
                .send()
                .await;
            match r {
                Ok(r) => {
                    let text = r.text().await.unwrap_or_default();
                    let root = crmgate::ews::xml::parse(text.as_bytes()).expect("xml");
                    support::response_codes(&root)
                        .first()
                        .cloned()
                        .unwrap_or_default()
                }
                // The server closes the connection after a refusal it could not read to
                // the end; the client may see that instead of the answer.
                Err(_) => "closed".to_owned(),
            }
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.expect("task"));
    }
    let ok = codes.iter().filter(|c| *c == "NoError").count();
    let busy = codes
        .iter()
        .filter(|c| *c == "ErrorServerBusy" || *c == "closed")
        .count();
    assert!(ok >= 1, "{codes:?}");
    assert!(busy >= 1, "past the budget requests are refused: {codes:?}");
    assert_eq!(ok + busy, codes.len(), "{codes:?}");
    // Budget given back: one request alone is served.
    let r = s
        .client
        .post(s.url("/EWS/Exchange.asmx"))
        .basic_auth("anna@example.test", Some("demo"))
        .header("content-type", "text/xml; charset=utf-8")
        .body(body)
        .send()
        .await
        .expect("send");
    let root = crmgate::ews::xml::parse(r.text().await.expect("text").as_bytes()).expect("xml");
    assert_eq!(support::response_codes(&root), ["NoError"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_every_connection() {
    let s = TestServer::start(
        &fixture("demo.json"),
        "[server]\nmax_connections_per_ip = 4\n",
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(
            tokio::net::TcpStream::connect(addr(&s))
                .await
                .expect("connect"),
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fifth = tokio::net::TcpStream::connect(addr(&s))
        .await
        .expect("connect");
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(2), fifth.read(&mut buf))
        .await
        .expect("the fifth connection is closed at once, not left open");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = s.client.get(s.url("/healthz")).send().await.expect("send");
    assert_eq!(r.status(), 200);
}

/// Unset, the per-address limit spares loopback: a reverse proxy on the same host brings every
/// client from 127.0.0.1. Here `max_connections = 64` makes the default per-address limit 16;
/// 20 connections from loopback are all kept, and one more is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_per_address_limit_spares_a_proxy_on_loopback() {
    let s = TestServer::start(&fixture("demo.json"), "[server]\nmax_connections = 64\n").await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(
            tokio::net::TcpStream::connect(addr(&s))
                .await
                .expect("connect"),
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (i, c) in held.iter_mut().enumerate() {
        let mut buf = [0u8; 16];
        let r = tokio::time::timeout(Duration::from_millis(50), c.read(&mut buf)).await;
        assert!(r.is_err(), "connection {i} was closed: {r:?}");
    }
    let r = s.client.get(s.url("/healthz")).send().await.expect("send");
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_give_their_slots_up_when_slots_run_short() {
    let s = TestServer::start(
        &fixture("demo.json"),
        "[server]\nmax_connections = 8\nmax_connections_per_ip = 100\n",
    )
    .await;
    // Eight sockets that never start their TLS handshake hold all eight slots...
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(
            tokio::net::TcpStream::connect(addr(&s))
                .await
                .expect("connect"),
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ...for less than the 15 s head timeout: a real client gets in at once.
    let t = std::time::Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(3),
        s.client.get(s.url("/healthz")).send(),
    )
    .await
    .expect("answered in time")
    .expect("send");
    assert_eq!(r.status(), 200);
    assert!(t.elapsed() < Duration::from_secs(3));
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_for_the_start_up_warm_up() {
    let s = TestServer::start(&fixture("demo.json"), "").await;
    s.app
        .warming
        .store(true, std::sync::atomic::Ordering::Release);
    let r = s.client.get(s.url("/readyz")).send().await.expect("send");
    assert_eq!(r.status(), 503);
    assert_eq!(r.text().await.expect("text"), "warming up\n");
    s.app
        .warming
        .store(false, std::sync::atomic::Ordering::Release);
    let r = s.client.get(s.url("/readyz")).send().await.expect("send");
    assert_eq!(r.status(), 200);
}

/// An upload over `server.max_body_bytes` gets its answer every time (EWS: a SOAP fault with
/// ErrorSchemaValidation; Graph and the admin API: 413): the server reads (and drops) the rest of a moderately oversized body
/// before it answers and closes, so the client, still sending, reads the answer instead of
/// a reset connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_uploads_get_their_413_not_a_reset() {
    let s = TestServer::start(&fixture("demo.json"), "[server]\nmax_body_bytes = 1048576").await;
    let big = vec![b' '; 5 << 20];
    let tok = s
        .graph_token("anna@example.test", "demo", "Contacts.ReadWrite")
        .await;
    for round in 0..8 {
        let sends = [
            s.client
                .post(s.url("/EWS/Exchange.asmx"))
                .basic_auth("anna@example.test", Some("demo"))
                .header("content-type", "text/xml")
                .body(big.clone()),
            s.client
                .post(s.url("/v1.0/me/contacts"))
                .bearer_auth(&tok)
                .header("content-type", "application/json")
                .body(big.clone()),
            s.client
                .put(s.url("/admin/v1/contacts/cx"))
                .basic_auth("ben@example.test", Some("demo2"))
                .header("content-type", "application/json")
                .body(big.clone()),
        ];
        // EWS answers in SOAP's terms: a fault (HTTP 500) with ErrorSchemaValidation.
        let expected = [
            (500, "ErrorSchemaValidation"),
            (413, ""),
            (413, "payload_too_large"),
        ];
        for (n, req) in sends.into_iter().enumerate() {
            let r = req
                .send()
                .await
                .unwrap_or_else(|e| panic!("round {round}, endpoint {n}: no answer: {e:?}"));
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            assert_eq!(status, expected[n].0, "round {round}, endpoint {n}: {text}");
            assert!(
                text.contains(expected[n].1),
                "round {round}, endpoint {n}: {text}"
            );
        }
    }
}
