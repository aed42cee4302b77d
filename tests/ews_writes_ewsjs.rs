//! ews-javascript-api 0.15.3 writing through crmgate: Save, Update (JobTitle, EmailAddress2),
//! Bind shows the values, Delete; and an update of one field of a contact with 4 e-mails,
//! 3 work phones and 2 websites leaves all of them in the CRM.

mod support;

use serde_json::{json, Value};
use std::path::Path;
use support::{fixture, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ews_javascript_api_saves_updates_and_deletes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let modules = root.join(".cache/node/node_modules");
    assert!(
        modules.join("ews-javascript-api").exists(),
        "ews-javascript-api is not installed: run scripts/test.sh"
    );
    let s = TestServer::start(&fixture("demo.json"), "").await;
    let rich = json!({"companies":["k1"],"first_name":"Ricarda","last_name":"Rich",
        "emails":[{"address":"e1@rich.example"},{"address":"e2@rich.example"},{"address":"e3@rich.example"},{"address":"e4@rich.example"}],
        "phones":[{"number":"030 1111111","kind":"work"},{"number":"030 2222222","kind":"work"},{"number":"030 3333333","kind":"work"}],
        "websites":["https://one.rich.example","https://two.rich.example"]});
    let admin = |r: reqwest::RequestBuilder| r.basic_auth("ben@example.test", Some("demo2"));
    let r = admin(s.client.put(s.url("/admin/v1/contacts/crich")))
        .json(&rich)
        .send()
        .await
        .expect("put");
    assert!(r.status().is_success());
    let before: Value = admin(s.client.get(s.url("/admin/v1/contacts/crich")))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let mut cmd = std::process::Command::new("node");
    cmd.arg(root.join("tests/clients/ewsjs_writes.js"))
        .args([&s.url("/EWS/Exchange.asmx"), "anna@example.test", "demo"])
        .env("NODE_PATH", &modules)
        .env("NODE_EXTRA_CA_CERTS", s.dir.path().join("tls/cert.pem"));
    let r = support::run_client("ews-javascript-api", cmd).await;
    assert_eq!(r["saved_id"], true);
    assert_eq!(
        r["bound"],
        json!({"name": "Jens Script", "job": "Integrator", "company": "Spreewerk Maschinenbau GmbH",
               "email1": "jens@script.example", "email2": "jens2@script.example", "business": "+49 30 7771234"})
    );
    assert_eq!(r["after_delete"], "ErrorItemNotFound");
    // The company name matched exactly one company in Anna's scope: linked in the CRM.
    let all: Value = admin(s.client.get(s.url("/admin/v1/contacts?limit=10000")))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let jens = all["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|c| c["last_name"] == "Script")
        .expect("still in the CRM (hide)");
    assert_eq!(jens["companies"], json!(["k1"]));
    // The rich contact: only the job title changed.
    let after: Value = admin(s.client.get(s.url("/admin/v1/contacts/crich")))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let mut expected = before.clone();
    expected["job_title"] = json!("Edited By EwsJs");
    assert_eq!(after, expected);
    s.stop().await;
}
