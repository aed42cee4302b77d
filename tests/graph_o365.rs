//! The O365 package (python-o365, unmodified) against crmgate's Graph face over HTTPS, with the
//! documented workarounds for its folder defects: folder list and folder by name, paging 25
//! contacts in batches of 10, create into "HQ My Contacts", its update-by-resending PATCHes,
//! a refused create in the read-only Global folder, delete twice, and a delta round by hand.

mod support;

use serde_json::json;
use std::path::Path;
use support::{fixture, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o365_scenarios() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".cache/venv/bin/python");
    assert!(
        python.exists(),
        "O365 is not installed: run scripts/test.sh"
    );
    let s = TestServer::start(&fixture("demo.json"), "").await;
    s.add_paula().await;
    let tok = s
        .graph_token("paula@example.test", "pw", "Contacts.ReadWrite")
        .await;
    let mut cmd = std::process::Command::new(python);
    cmd.arg(root.join("tests/clients/o365_scenarios.py"))
        .args([&s.base, &tok])
        .env("SSL_CERT_FILE", s.dir.path().join("tls/cert.pem"));
    let r = support::run_client("O365", cmd).await;
    assert_eq!(
        r["folders"],
        json!(["HQ My Contacts", "HQ Global Contacts"])
    );
    assert_eq!(
        r["by_name"],
        json!(["HQ Global Contacts", "HQ My Contacts", true])
    );
    assert_eq!(
        r["paged"],
        json!([25, 25]),
        "all 25 contacts, no duplicates"
    );
    assert_eq!(
        r["paging_wire"].as_array().map(Vec::len),
        Some(3),
        "three pages of 10/10/5: {}",
        r["paging_wire"]
    );
    assert_eq!(r["tops"], json!(["%24top=10"]), "{}", r["paging_wire"]);
    assert_eq!(r["created"], true);
    assert_eq!(
        r["created_in"],
        json!(["Mary Jackson", true, ["mj@example.com"]])
    );
    assert_eq!(r["updated"], true);
    assert_eq!(r["updated_again"], true);
    assert_eq!(r["after_update"], json!(["Engineer", "Mary", "Jackson"]));
    assert_eq!(r["post_global"], "403 ErrorAccessDenied");
    assert_eq!(r["delta_initial"], 26, "25 contacts and Mary");
    assert_eq!(r["deleted"], true);
    assert_eq!(r["delete_again"], "404 ErrorItemNotFound");
    assert_eq!(r["delta_after_delete"], json!([[true, true]]));
}
