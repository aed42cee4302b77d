//! msgraph-sdk (Python, unmodified) against crmgate's Graph face over HTTPS: GRAPH.md §8
//! scenarios 1 and 3–9, 12–14 — folders, paging 25 contacts 10/10/5 and with maxpagesize,
//! counts, get in both forms with 404/400, create (with @odata.type; 4 e-mails and 3 business
//! phones refused; Global read-only), update with stale and `*` If-Match and null clearing,
//! delete, a delta round trip (create, update, delete between rounds), a tampered deltaLink,
//! another user's path, and a read-only token.

mod support;

use serde_json::{json, Value};
use std::path::Path;
use support::{fixture, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msgraph_sdk_scenarios() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".cache/venv/bin/python");
    assert!(
        python.exists(),
        "msgraph-sdk is not installed: run scripts/test.sh"
    );
    let s = TestServer::start(&fixture("demo.json"), "").await;
    // Paula: responsible for one company with exactly 25 contacts.
    s.add_paula().await;
    let tok = s
        .graph_token("paula@example.test", "pw", "Contacts.ReadWrite")
        .await;
    let ro = s
        .graph_token("paula@example.test", "pw", "Contacts.Read")
        .await;
    let mut cmd = std::process::Command::new(python);
    cmd.arg(root.join("tests/clients/msgraph_scenarios.py"))
        .args([
            &s.base,
            &tok,
            &ro,
            &s.url("/admin/v1"),
            "ben@example.test",
            "demo2",
            "paula@example.test",
        ])
        .env("SSL_CERT_FILE", s.dir.path().join("tls/cert.pem"));
    let r = support::run_client("msgraph-sdk", cmd).await;
    assert_eq!(
        r["folders"],
        json!(["HQ My Contacts", "HQ Global Contacts"])
    );
    assert_eq!(r["parents_ok"], true);
    assert_eq!(r["pages"], json!([10, 10, 5]));
    assert_eq!(r["unique"], 25);
    assert_eq!(
        r["select_given_name"],
        Value::Null,
        "$select returns only what was asked"
    );
    assert_eq!(r["pages_max7"], json!([7, 7, 7, 4]));
    assert_eq!(r["count"], 25);
    assert_eq!(r["count_text"], json!([200, "25", "text/plain"]));
    assert_eq!(r["get_same"], true);
    assert_eq!(r["etag"], true);
    assert_eq!(r["get_unknown"], "404 ErrorItemNotFound");
    assert_eq!(r["get_garbage"], "400 ErrorInvalidIdMalformed");
    assert_eq!(r["created"], json!(["Ada Lovelace", true, true]));
    assert!(
        r["four_emails"].as_str().unwrap_or("").starts_with("400"),
        "{}",
        r["four_emails"]
    );
    assert!(
        r["three_phones"].as_str().unwrap_or("").starts_with("400"),
        "{}",
        r["three_phones"]
    );
    assert_eq!(r["post_global"], "403 ErrorAccessDenied");
    assert_eq!(
        r["updated"],
        json!(["Mathematician", true, "+49 171 2345678"])
    );
    assert_eq!(r["stale"], "412 ErrorIrresolvableConflict");
    assert_eq!(r["star"], "R&D");
    assert_eq!(r["cleared"], Value::Null);
    assert_eq!(
        r["delta_initial"],
        json!([26, 7]),
        "26 contacts (25 + Ada) in pages of 4"
    );
    assert_eq!(
        r["delta_changes"],
        json!(["Ada Lovelace", "Grace Hopper", "removed"])
    );
    assert_eq!(r["delta_only_those"], true);
    assert_eq!(r["delta_again"], json!([0, true]));
    assert_eq!(
        r["delete"],
        json!(["ok", "404 ErrorItemNotFound", "404 ErrorItemNotFound"])
    );
    assert_eq!(r["tampered"], "410 syncStateNotFound");
    assert_eq!(r["fresh_delta"], true);
    assert_eq!(r["upn_same"], true);
    assert_eq!(r["other_user"], "403 ErrorAccessDenied");
    assert_eq!(r["ro_read"], 2);
    assert_eq!(r["ro_write"], "403 ErrorAccessDenied");
    s.stop().await;
}
