//! exchangelib 5.6 writing through crmgate to the embedded CRM: create with every kind of
//! value and refresh; exchangelib's per-index e-mail update against a contact with 4 e-mails,
//! 3 work phones and 2 websites (checked in the CRM through the admin API: nothing without a
//! slot is lost); clearing a field; a stale change key on the same field (conflict, nothing
//! written) and on another field (AutoResolve keeps both); a write into Global (denied); a
//! delete under the default policy (hidden for the user, kept in the CRM).

mod support;

use serde_json::{json, Value};
use std::path::Path;
use support::{fixture, TestServer};

/// exchangelib's delete under the `crm` and `deny` policies (`hide` is in the test below).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchangelib_delete_under_each_policy() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".cache/venv/bin/python");
    assert!(
        python.exists(),
        "exchangelib is not installed: run scripts/test.sh"
    );
    let ds: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("demo.json")).expect("r"))
            .expect("json");
    let c1_surname = ds["contacts"][0]["last_name"]
        .as_str()
        .expect("c1 surname")
        .to_owned();
    for (policy, want, visible, in_crm) in [
        ("crm", "ok", false, 404),
        ("deny", "ErrorAccessDenied", true, 200),
    ] {
        let s = TestServer::start(
            &fixture("demo.json"),
            &format!("[folders]\nmy_delete = \"{policy}\"\n"),
        )
        .await;
        let mut cmd = std::process::Command::new(&python);
        cmd.arg(root.join("tests/clients/exchangelib_delete.py"))
            .args([
                &s.url("/EWS/Exchange.asmx"),
                "anna@example.test",
                "demo",
                c1_surname.as_str(),
            ])
            .env("REQUESTS_CA_BUNDLE", s.dir.path().join("tls/cert.pem"));
        let r = support::run_client("exchangelib", cmd).await;
        assert_eq!(r, json!({"delete": want, "visible": visible}), "{policy}");
        let st = s
            .client
            .get(s.url("/admin/v1/contacts/c1"))
            .basic_auth("ben@example.test", Some("demo2"))
            .send()
            .await
            .expect("get")
            .status();
        assert_eq!(st.as_u16(), in_crm, "{policy}");
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchangelib_writes_keep_every_crm_value() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".cache/venv/bin/python");
    assert!(
        python.exists(),
        "exchangelib is not installed: run scripts/test.sh"
    );
    let s = TestServer::start(&fixture("demo.json"), "").await;
    // The rich contact, in Anna's My folder (company k1).
    let rich = json!({"companies":["k1"],"first_name":"Ricarda","last_name":"Rich",
        "emails":[{"address":"e1@rich.example","kind":"work"},{"address":"e2@rich.example","kind":"work"},
                  {"address":"e3@rich.example","kind":"home"},{"address":"e4@rich.example","kind":"other"}],
        "phones":[{"number":"030 1111111","kind":"work"},{"number":"030 2222222","kind":"work"},{"number":"030 3333333","kind":"work"}],
        "websites":["https://one.rich.example","https://two.rich.example"],"crm_score":42});
    let r = s
        .client
        .put(s.url("/admin/v1/contacts/crich"))
        .basic_auth("ben@example.test", Some("demo2"))
        .json(&rich)
        .send()
        .await
        .expect("put");
    assert!(r.status().is_success());
    let args: Vec<String> = vec![
        root.join("tests/clients/exchangelib_writes.py")
            .display()
            .to_string(),
        s.url("/EWS/Exchange.asmx"),
        s.url("/admin/v1"),
        "anna@example.test".into(),
        "demo".into(),
        "ben@example.test".into(),
        "demo2".into(),
        "crich".into(),
    ];
    let mut cmd = std::process::Command::new(python);
    cmd.args(&args)
        .env("REQUESTS_CA_BUNDLE", s.dir.path().join("tls/cert.pem"));
    let r = support::run_client("exchangelib", cmd).await;

    // 1. Create and refresh round-trip; the CRM holds it with the writer as owner.
    let c = &r["created"];
    assert_eq!(c["display_name"], "Nina Neu");
    assert_eq!(c["emails"], json!(["nina@neu.example"]));
    assert_eq!(
        c["phones"],
        json!({"MobilePhone": "+49 171 5551234", "BusinessPhone": "+49 30 5550000"})
    );
    assert_eq!(c["home_city"], "Berlin");
    assert_eq!(c["birthday"], "1985-07-01");
    assert_eq!(c["categories"], json!(["VIP"]));
    assert_eq!(
        c["company"], "No Such Company Ltd",
        "no company matched: kept as text; {}",
        r["created_crm"]
    );
    let crm = &r["created_crm"];
    assert_eq!(crm["owner"], "u1");
    assert_eq!(crm["birthday"], "1985-07-01");
    assert_eq!(
        crm["emails"],
        json!([{"address": "nina@neu.example", "kind": "work"}])
    );

    // 2. Per-index e-mail update: slots 1 and 3 deleted, 2 replaced; the 4th e-mail, the third
    //    work phone, the second website and the unmapped field survive.
    let a = &r["rich_after"];
    let emails: Vec<&str> = a["emails"]
        .as_array()
        .expect("emails")
        .iter()
        .filter_map(|e| e["address"].as_str())
        .collect();
    assert_eq!(
        emails,
        ["second-new@rich.example", "e4@rich.example"],
        "{a}"
    );
    assert_eq!(a["phones"].as_array().map(|p| p.len()), Some(3), "{a}");
    assert_eq!(a["phones"][2]["number"], "030 3333333", "CRM text kept");
    assert_eq!(
        a["phones"][0]["number"], "030 1111111",
        "unchanged number keeps CRM text"
    );
    assert_eq!(
        a["websites"],
        json!(["https://one.rich.example", "https://two.rich.example"])
    );
    assert_eq!(a["crm_score"], 42);
    assert_eq!(a["job_title"], "Chief Data Keeper");

    // 3. Clearing a field clears it in the CRM and nothing else.
    assert_eq!(r["rich_cleared"]["first_name"], Value::Null);
    assert_eq!(r["rich_cleared"]["last_name"], "Rich");

    // 4. Conflicts.
    assert_eq!(r["stale_same_field"], "ErrorIrresolvableConflict");
    assert_eq!(
        r["after_conflict"], "Changed In CRM",
        "nothing written on conflict"
    );
    assert_eq!(
        r["auto_resolve"],
        json!({"department": "Changed In CRM", "last_name": "Richer"})
    );

    // 5, 6.
    assert_eq!(r["global_write"], "ErrorAccessDenied");
    assert_eq!(r["deleted_visible"], false);
    assert_eq!(
        r["deleted_in_crm"], 200,
        "policy hide: the CRM keeps the contact"
    );

    // The audit log has the writes.
    let audit: Value = s
        .client
        .get(s.url("/admin/v1/audit?limit=100"))
        .basic_auth("ben@example.test", Some("demo2"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let items = audit["items"].as_array().expect("items");
    assert!(items.iter().any(|e| e["action"] == "create"
        && e["user"] == "anna@example.test"
        && e["result"] == "ok"));
    assert!(items
        .iter()
        .any(|e| e["action"] == "update" && e["contact"] == "crich"));
    assert!(items.iter().any(|e| e["action"] == "hide"));
    assert!(
        items
            .iter()
            .any(|e| e["result"] == "ErrorIrresolvableConflict" || e["result"] == "conflict"),
        "{audit}"
    );
    s.stop().await;
}
