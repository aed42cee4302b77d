//! Unmodified ews-javascript-api 0.15.3 against crmgate's EWS face over HTTPS (the generated
//! certificate trusted through NODE_EXTRA_CA_CERTS): FindFolders under Contacts, FindItems
//! with AllProperties returning real fields, Contact.Bind (GetItem), SyncFolderItems and a
//! second sync with no changes. Installed into `.cache/node` by `scripts/test.sh`.

mod support;

use crmgate::domain::dataset::Dataset;
use crmgate::domain::mapping::{card, MappingRules};
use crmgate::domain::rules::{compute_folders, FolderRules};
use crmgate::domain::*;
use serde_json::json;
use std::path::Path;
use support::{fixture, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ews_javascript_api_finds_binds_and_syncs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let modules = root.join(".cache/node/node_modules");
    assert!(
        modules.join("ews-javascript-api").exists(),
        "ews-javascript-api is not installed: run scripts/test.sh (it installs it into .cache/node)"
    );
    let server = TestServer::start(&fixture("demo.json"), "").await;
    let mut cmd = std::process::Command::new("node");
    cmd.arg(root.join("tests/clients/ewsjs_scenarios.js"))
        .args([
            &server.url("/EWS/Exchange.asmx"),
            "anna@example.test",
            "demo",
        ])
        .env("NODE_PATH", &modules)
        .env(
            "NODE_EXTRA_CA_CERTS",
            server.dir.path().join("tls/cert.pem"),
        );
    let r = support::run_client("ews-javascript-api", cmd).await;

    let ds = Dataset::parse(&std::fs::read_to_string(fixture("demo.json")).expect("read"))
        .expect("demo");
    let folders = compute_folders(&ds, &FolderRules::default());
    let anna = &folders[&UserId::from("u1")];
    assert_eq!(
        r["folders"],
        json!([
            {"name": "HQ My Contacts", "total": anna.my.len(), "cls": "IPF.Contact"},
            {"name": "HQ Global Contacts", "total": anna.global.len(), "cls": "IPF.Contact"}
        ])
    );
    assert_eq!(r["found_total"], json!(anna.my.len()));
    let found = r["found"].as_array().expect("found");
    assert_eq!(found.len(), anna.my.len().min(50));
    // Every contact FindItems returned is one of Anna's My contacts, with its real fields.
    for f in found {
        let c = ds
            .contacts
            .iter()
            .filter(|c| anna.my.contains(&c.id))
            .find(|c| json!(c.last_name) == f["surname"] && json!(c.first_name) == f["given"])
            .unwrap_or_else(|| panic!("{f} is not a My contact"));
        let ks: Vec<&Company> = c
            .companies
            .iter()
            .filter_map(|k| ds.companies.iter().find(|x| &x.id == k))
            .collect();
        let want = card(c, &ks, &MappingRules::default());
        assert_eq!(f["name"], json!(want.display_name));
        assert_eq!(f["company"], json!(want.company_name));
        assert_eq!(
            f["email1"],
            json!(want.emails.first().map(|e| e.address.clone()))
        );
        let business = want
            .phones
            .iter()
            .find(|(s, _)| s.key() == "BusinessPhone")
            .map(|(_, n)| n.clone());
        assert_eq!(f["business"], json!(business));
    }
    let first = &found[0];
    assert_eq!(r["bound"]["name"], first["name"]);
    let c = ds
        .contacts
        .iter()
        .find(|c| json!(c.last_name) == first["surname"] && json!(c.first_name) == first["given"])
        .expect("c");
    assert_eq!(r["bound"]["job"], json!(c.job_title));
    assert_eq!(
        r["sync"],
        json!({"count": anna.my.len(), "more": false, "creates": anna.my.len()})
    );
    assert_eq!(r["sync_again"], 0);
    server.stop().await;
}
