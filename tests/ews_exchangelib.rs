//! Unmodified exchangelib 5.6 against crmgate's EWS face: cold connect (auth and version
//! probe), DELEGATE and default self-impersonation, the folder tree, counts, order, slices,
//! `__contains`, `only()`, full fields; `sync_items()` over more than 250 contacts, then
//! exactly the CRM-side changes made through the admin API (create, update, delete, and a
//! move between My and Global); a bogus state. Expectations come from the from-scratch rules.
//!
//! exchangelib is installed into `.cache/venv` by `scripts/test.sh`.

mod support;

use crmgate::domain::dataset::Dataset;
use crmgate::domain::mapping::{card, MappingRules};
use crmgate::domain::rules::{compute_folders, FolderRules};
use crmgate::domain::*;
use crmgate::gen::{generate, GenParams};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use support::TestServer;

fn python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/venv/bin/python");
    assert!(
        p.exists(),
        "exchangelib is not installed: run scripts/test.sh (it installs it into .cache/venv)"
    );
    p
}

async fn run(server: &TestServer, args: &[&str]) -> Value {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/exchangelib_scenarios.py");
    let ca = server.dir.path().join("tls/cert.pem");
    let mut cmd = std::process::Command::new(python());
    cmd.arg(script).args(args).env("REQUESTS_CA_BUNDLE", ca);
    support::run_client("exchangelib", cmd).await
}

fn display_names(ds: &Dataset, ids: &std::collections::BTreeSet<ContactId>) -> Vec<String> {
    let companies: BTreeMap<&CompanyId, &Company> =
        ds.companies.iter().map(|k| (&k.id, k)).collect();
    let mut v: Vec<String> = ds
        .contacts
        .iter()
        .filter(|c| ids.contains(&c.id))
        .map(|c| {
            let ks: Vec<&Company> = c
                .companies
                .iter()
                .filter_map(|k| companies.get(k).copied())
                .collect();
            card(c, &ks, &MappingRules::default()).display_name
        })
        .collect();
    v.sort();
    v
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchangelib_reads_syncs_and_sees_crm_changes() {
    let mut ds = generate(&GenParams {
        contacts: 400,
        users: 5,
        subsystems: 2,
        seed: 3,
    });
    ds.users[0].password_hash = None;
    ds.users[0].password = Some("admin-pw".into());
    let dir = tempfile::tempdir().expect("tmp");
    let seed = dir.path().join("seed.json");
    std::fs::write(&seed, serde_json::to_string(&ds.to_json()).expect("json")).expect("write");
    let server = TestServer::start(&seed, "").await;
    let url = server.url("/EWS/Exchange.asmx");
    let rules = FolderRules::default();
    let folders = compute_folders(&ds, &rules);
    // The user with the largest Global folder, and not the admin.
    let user = ds.users[1..]
        .iter()
        .max_by_key(|u| folders[&u.id].global.len())
        .expect("user")
        .clone();
    let expect = &folders[&user.id];
    assert!(
        expect.global.len() > 250,
        "the sync must cross several 100-item pages"
    );
    let (login, pw) = (user.login.as_str(), "demo");

    // ---- read
    let r = run(&server, &["read", &url, login, pw]).await;
    assert!(
        r["version"].as_str().unwrap_or("").starts_with("15.1"),
        "{r}"
    );
    assert_eq!(r["tree_has_folders"], true);
    assert_eq!(r["my_class"], "Contacts");
    let want_my = display_names(&ds, &expect.my);
    let want_global = display_names(&ds, &expect.global);
    assert_eq!(strings(&r["my"]), want_my);
    assert_eq!(strings(&r["global"]), want_global);
    assert_eq!(r["my_count"], json!(want_my.len()));
    assert_eq!(r["global_count"], json!(want_global.len()));
    assert_eq!(r["impersonated_my_count"], json!(want_my.len()));
    let ordered = strings(&r["ordered"]);
    let mut by_name = want_global.clone();
    by_name.sort_by_key(|n| n.to_lowercase());
    let lower = |v: &[String]| v.iter().map(|s| s.to_lowercase()).collect::<Vec<_>>();
    assert_eq!(lower(&ordered), lower(&by_name), "order_by display_name");
    assert_eq!(strings(&r["slice"]), ordered[5..8].to_vec());
    let needle = r["needle"].as_str().expect("needle");
    let mut want_contains: Vec<String> = want_global
        .iter()
        .filter(|n| n.contains(needle))
        .cloned()
        .collect();
    want_contains.sort();
    assert!(!want_contains.is_empty());
    assert_eq!(strings(&r["contains"]), want_contains);
    // Full fields of the first My contacts match the CRM through the mapping.
    for got in r["full"].as_array().expect("full") {
        let c = ds
            .contacts
            .iter()
            .find(|c| {
                expect.my.contains(&c.id)
                    && got["surname"] == json!(c.last_name)
                    && got["given_name"] == json!(c.first_name)
            })
            .expect("a My contact with these names");
        // In the record's order: the first company gives CompanyName.
        let ks: Vec<&Company> = c
            .companies
            .iter()
            .filter_map(|k| ds.companies.iter().find(|x| &x.id == k))
            .collect();
        let want = card(c, &ks, &MappingRules::default());
        let emails: Vec<String> = want.emails.iter().map(|e| e.address.clone()).collect();
        assert_eq!(strings(&got["emails"]), emails, "{got}");
        assert_eq!(got["company_name"], json!(want.company_name), "{got}");
        if let Some(p) = c.phones.iter().find(|p| p.kind == PhoneKind::Work) {
            let shown = crmgate::domain::mapping::display_phone(&p.number, "DE");
            assert_eq!(got["phones"]["BusinessPhone"], json!(shown), "{got}");
        }
    }
    assert_eq!(r["write"], "ErrorAccessDenied");

    // Every user sees exactly the rules' contacts in each folder.
    for u in &ds.users {
        let pw = if u.id == ds.users[0].id {
            "admin-pw"
        } else {
            "demo"
        };
        let r = run(&server, &["names", &url, &u.login, pw]).await;
        let f = &folders[&u.id];
        assert_eq!(
            strings(&r["my"]),
            display_names(&ds, &f.my),
            "{} My",
            u.login
        );
        assert_eq!(
            strings(&r["global"]),
            display_names(&ds, &f.global),
            "{} Global",
            u.login
        );
    }

    // ---- first sync: every Global contact arrives once, over pages of 100
    let s1 = run(&server, &["sync1", &url, login, pw]).await;
    assert_eq!(strings(&s1["changes"]["create"]), want_global);
    assert!(
        s1["changes"].get("update").is_none() && s1["changes"].get("delete").is_none(),
        "{}",
        s1["changes"]
    );
    let state_file = dir.path().join("state.json");
    std::fs::write(&state_file, s1.to_string()).expect("state");

    // ---- CRM-side changes through the admin API
    let admin = (ds.users[0].login.clone(), "admin-pw");
    let put = |kind: &str, id: &str, body: Value| {
        let req = server
            .client
            .put(server.url(&format!("/admin/v1/{kind}/{id}")))
            .basic_auth(&admin.0, Some(admin.1))
            .json(&body);
        async move {
            let r = req.send().await.expect("send");
            assert!(
                r.status().is_success(),
                "{} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
    };
    let in_global_only = |c: &Contact| expect.global.contains(&c.id);
    // Move: a company the user is not responsible for, all of whose contacts are in Global.
    let mover = ds
        .companies
        .iter()
        .find(|k| {
            !k.responsible.contains(&user.id)
                && !k.types.iter().any(|t| t == "Interessent")
                && ds
                    .contacts
                    .iter()
                    .filter(|c| c.companies.contains(&k.id))
                    .count()
                    >= 2
                && ds
                    .contacts
                    .iter()
                    .filter(|c| c.companies.contains(&k.id))
                    .all(in_global_only)
        })
        .expect("a company to move")
        .clone();
    let moved: Vec<&Contact> = ds
        .contacts
        .iter()
        .filter(|c| c.companies.contains(&mover.id))
        .collect();
    let others: Vec<&Contact> = ds
        .contacts
        .iter()
        .filter(|c| in_global_only(c) && !c.companies.contains(&mover.id) && c.companies.len() == 1)
        .take(2)
        .collect();
    let (updated, deleted) = (others[0].clone(), others[1].clone());
    let mut k = serde_json::to_value(&mover).expect("json");
    k["responsible"] = json!([user.id.0]);
    put("companies", &mover.id.0, k).await;
    let mut u = serde_json::to_value(&updated).expect("json");
    u["last_name"] = json!("Renamed");
    put("contacts", &updated.id.0, u).await;
    let r = server
        .client
        .delete(server.url(&format!("/admin/v1/contacts/{}", deleted.id.0)))
        .basic_auth(&admin.0, Some(admin.1))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 204);
    put("contacts", "cnew", json!({"companies": [updated.companies[0].0], "first_name": "Zed", "last_name": "Newcomer"})).await;

    // ---- second sync: exactly those changes
    let s2 = run(
        &server,
        &["sync2", &url, login, pw, state_file.to_str().expect("p")],
    )
    .await;
    let g = &s2["changes"]["global"];
    let m = &s2["changes"]["my"];
    let mut moved_names = display_names(&ds, &moved.iter().map(|c| c.id.clone()).collect());
    moved_names.sort();
    let renamed = {
        let mut c = updated.clone();
        c.last_name = Some("Renamed".into());
        card(&c, &[], &MappingRules::default()).display_name
    };
    assert_eq!(
        strings(&g["create"]),
        vec!["Zed Newcomer".to_string()],
        "{s2}"
    );
    assert_eq!(strings(&g["update"]), vec![renamed], "{s2}");
    assert_eq!(g["delete"], json!(1 + moved.len()), "{s2}");
    assert_eq!(strings(&m["create"]), moved_names, "{s2}");
    assert_eq!(strings(&m["update"]), Vec::<String>::new(), "{s2}");
    assert_eq!(m["delete"], json!(0), "{s2}");
    assert_eq!(s2["bogus"], "ErrorInvalidSyncStateData");
    server.stop().await;
}
