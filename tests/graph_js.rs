//! @microsoft/microsoft-graph-client 3.0.7 (unmodified, HTTPS with the generated certificate
//! trusted through NODE_EXTRA_CA_CERTS): folders, PageIterator over 25 contacts, get with
//! etag, create, update with If-Match, stale If-Match (412), Global read-only (403), delta in
//! pages of 4 and a delete arriving as @removed.

mod support;

use serde_json::json;
use std::path::Path;
use support::{fixture, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_js_client_scenarios() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let modules = root.join(".cache/node/node_modules");
    assert!(
        modules.join("@microsoft/microsoft-graph-client").exists(),
        "the Graph JS client is not installed: run scripts/test.sh"
    );
    let s = TestServer::start(&fixture("demo.json"), "").await;
    s.add_paula().await;
    let token = s
        .graph_token("paula@example.test", "pw", "Contacts.ReadWrite")
        .await;
    let mut cmd = std::process::Command::new("node");
    cmd.arg(root.join("tests/clients/graphjs_scenarios.js"))
        .args([&s.base, &token])
        .env("NODE_PATH", &modules)
        .env("NODE_EXTRA_CA_CERTS", s.dir.path().join("tls/cert.pem"));
    let r = support::run_client("graph client", cmd).await;
    assert_eq!(
        r["folders"],
        json!(["HQ My Contacts", "HQ Global Contacts"])
    );
    assert_eq!(r["unique"], 25);
    assert_eq!(r["etag_ok"], true);
    assert_eq!(r["created"], json!(["Katherine Johnson", true]));
    assert_eq!(r["updated"], "Supervisor");
    assert_eq!(r["stale"], "412 ErrorIrresolvableConflict");
    assert_eq!(r["global"], "403 ErrorAccessDenied");
    assert_eq!(r["delta"], json!([26, 7]));
    assert_eq!(r["removed"], json!(["removed"]));
    assert_eq!(r["after_delete"], "404 ErrorItemNotFound");
    s.stop().await;
}
