//! GRAPH.md §8 scenario 15: one user pushed past a low per-user limit gets 429
//! `ApplicationThrottled` with `Retry-After`, and both unmodified SDKs (msgraph-sdk for Python,
//! @microsoft/microsoft-graph-client for JS) succeed anyway by retrying on their own.

mod support;

use serde_json::Value;
use std::path::Path;
use support::{fixture, TestServer};

/// Client errors (`4xx`) answered so far, from `/metrics`.
async fn client_errors(s: &TestServer) -> u64 {
    let m = s.metrics().await;
    m.lines()
        .find(|l| l.starts_with("crmgate_http_responses_total{class=\"4xx\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdks_retry_429_by_themselves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".cache/venv/bin/python");
    let modules = root.join(".cache/node/node_modules");
    assert!(
        python.exists(),
        "msgraph-sdk is not installed: run scripts/test.sh"
    );
    assert!(
        modules.join("@microsoft/microsoft-graph-client").exists(),
        "the Graph JS client is not installed: run scripts/test.sh"
    );
    let s = TestServer::start(
        &fixture("demo.json"),
        "[graph]\nrequests_per_second = 3\nconcurrent_requests = 16\n",
    )
    .await;
    let token = s
        .graph_token("ben@example.test", "demo2", "Contacts.Read")
        .await;

    // The limit is real: a plain burst gets 429 ApplicationThrottled with Retry-After.
    let mut throttled = None;
    for _ in 0..8 {
        let r = s
            .client
            .get(s.url("/v1.0/me/contactFolders"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("get");
        if r.status() == 429 {
            let after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body: Value = r.json().await.expect("json");
            throttled = Some((after, body["error"]["code"].as_str().map(str::to_owned)));
            break;
        }
    }
    let (after, code) = throttled.expect("8 requests in a burst exceed 3 per second");
    assert!(after
        .and_then(|a| a.parse::<u64>().ok())
        .is_some_and(|a| a >= 1));
    assert_eq!(code.as_deref(), Some("ApplicationThrottled"));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    let n = "8";
    let before = client_errors(&s).await;
    let mut py = std::process::Command::new(&python);
    py.arg(root.join("tests/clients/msgraph_retry.py"))
        .args([&s.base, &token, n])
        .env("SSL_CERT_FILE", s.dir.path().join("tls/cert.pem"));
    let r = support::run_client("msgraph-sdk", py).await;
    assert_eq!(r["ok"], 8, "every request of the burst succeeded: {r}");
    let mid = client_errors(&s).await;
    assert!(
        mid > before,
        "msgraph-sdk was throttled and retried ({before} → {mid} 4xx)"
    );

    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let mut js = std::process::Command::new("node");
    js.arg(root.join("tests/clients/graphjs_retry.js"))
        .args([&s.base, &token, n])
        .env("NODE_PATH", &modules)
        .env("NODE_EXTRA_CA_CERTS", s.dir.path().join("tls/cert.pem"));
    let r = support::run_client("graph client", js).await;
    assert_eq!(r["ok"], 8, "every request of the burst succeeded: {r}");
    let after = client_errors(&s).await;
    assert!(
        after > mid,
        "the JS client was throttled and retried ({mid} → {after} 4xx)"
    );
}
