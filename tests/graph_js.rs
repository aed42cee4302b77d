//! @microsoft/microsoft-graph-client 3.0.7 (unmodified, HTTPS with the generated certificate
//! trusted through NODE_EXTRA_CA_CERTS): folders, PageIterator over 25 contacts, get with
//! etag, create, update with If-Match, stale If-Match (412), Global read-only (403), delta in
//! pages of 4 and a delete arriving as @removed.

mod support;

use serde_json::{json, Value};
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
    let admin = |r: reqwest::RequestBuilder| r.basic_auth("ben@example.test", Some("demo2"));
    let put = |path: String, body: Value| {
        let req = admin(s.client.put(s.url(&path))).json(&body);
        async move { assert!(req.send().await.expect("put").status().is_success()) }
    };
    put("/admin/v1/users/up".into(), json!({"login": "paula@example.test", "name": "Paula Page", "password": "pw", "subsystems": ["s1"]})).await;
    put(
        "/admin/v1/companies/kp".into(),
        json!({"name": "Paging GmbH", "subsystems": ["s1"], "responsible": ["up"]}),
    )
    .await;
    for i in 0..25 {
        put(
            format!("/admin/v1/contacts/cp{i:02}"),
            json!({"companies": ["kp"], "first_name": format!("P{i:02}"), "last_name": "Pager"}),
        )
        .await;
    }
    let t: Value = s
        .client
        .post(s.url("/oauth2/v2.0/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", "paula@example.test"),
            ("password", "pw"),
            ("scope", "Contacts.ReadWrite"),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let token = t["access_token"].as_str().expect("token").to_owned();
    let mut cmd = std::process::Command::new("node");
    cmd.arg(root.join("tests/clients/graphjs_scenarios.js"))
        .args([&s.base, &token])
        .env("NODE_PATH", &modules)
        .env("NODE_EXTRA_CA_CERTS", s.dir.path().join("tls/cert.pem"));
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "graph client failed:\n{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("json");
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
