//! Issue 10: bearer tokens bound to the user's identity, capped and purged; per-account login
//! throttling that spares the owner; no login enumeration by timing; owner-only files in the
//! data dir; CLI options after nested subcommands; overlong ids refused.

mod support;

use crmgate::app::App;
use crmgate::config::{Config, Overrides};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::Path;
use support::{fixture, TestServer};

const ADMIN: (&str, &str) = ("ben@example.test", "demo2");
const FOLDERS: &str = "/v1.0/me/contactFolders";

/// An App on the demo dataset in `dir`, loaded, not served.
async fn demo_app(dir: &Path, config: &str) -> App {
    let ov = Overrides {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.to_path_buf()),
        seed: Some(fixture("demo.json")),
        insecure_http: false,
    };
    let cfg = Config::parse(config, dir, &ov).expect("config");
    let app = App::open(cfg).expect("open");
    app.catch_up().await.expect("load");
    app
}

/// Stored token rows (`tok/…`).
fn token_rows(app: &App) -> usize {
    let mut n = 0;
    app.store
        .scan_prefix(b"tok/", &mut |_, _| {
            n += 1;
            Ok(true)
        })
        .expect("scan");
    n
}

async fn put_user(s: &TestServer, id: &str, body: Value) -> StatusCode {
    s.client
        .put(s.url(&format!("/admin/v1/users/{id}")))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .json(&body)
        .send()
        .await
        .expect("put")
        .status()
}

async fn graph_status(s: &TestServer, token: &str) -> StatusCode {
    s.client
        .get(s.url(FOLDERS))
        .bearer_auth(token)
        .send()
        .await
        .expect("get")
        .status()
}

fn xavier(password: &str) -> Value {
    json!({"login": "xavier@example.test", "name": "Xavier One", "password": password,
        "subsystems": ["s1"]})
}

async fn start() -> TestServer {
    TestServer::start(&fixture("demo.json"), "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_dies_when_its_user_is_deleted_and_the_id_reused() {
    let s = start().await;
    assert_eq!(put_user(&s, "ux", xavier("one")).await, StatusCode::CREATED);
    let tok = s
        .graph_token("xavier@example.test", "one", "Contacts.Read")
        .await;
    assert_eq!(graph_status(&s, &tok).await, StatusCode::OK);
    let hash = {
        let e = s.app.replica.read().expect("replica");
        let u = e.find_login("xavier@example.test").expect("user");
        e.user_record(u)
            .and_then(|r| r.password_hash.clone())
            .expect("hash")
    };
    let r = s
        .client
        .delete(s.url("/admin/v1/users/ux"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(graph_status(&s, &tok).await, StatusCode::UNAUTHORIZED);
    // Another person gets the id, the login and (worst case) even the same password hash.
    let other = json!({"login": "xavier@example.test", "name": "Xavier Two",
        "password_hash": hash, "subsystems": ["s1"]});
    assert_eq!(put_user(&s, "ux", other).await, StatusCode::CREATED);
    assert_eq!(
        graph_status(&s, &tok).await,
        StatusCode::UNAUTHORIZED,
        "the old token must not read the new person's folders"
    );
    let fresh = s
        .graph_token("xavier@example.test", "one", "Contacts.Read")
        .await;
    assert_eq!(graph_status(&s, &fresh).await, StatusCode::OK);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_dies_when_the_password_changes() {
    let s = start().await;
    put_user(&s, "ux", xavier("one")).await;
    let tok = s
        .graph_token("xavier@example.test", "one", "Contacts.Read")
        .await;
    assert_eq!(graph_status(&s, &tok).await, StatusCode::OK);
    assert_eq!(put_user(&s, "ux", xavier("two")).await, StatusCode::OK);
    assert_eq!(graph_status(&s, &tok).await, StatusCode::UNAUTHORIZED);
    let fresh = s
        .graph_token("xavier@example.test", "two", "Contacts.Read")
        .await;
    assert_eq!(graph_status(&s, &fresh).await, StatusCode::OK);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_dies_for_good_when_the_user_is_deactivated() {
    let s = start().await;
    put_user(&s, "ux", xavier("one")).await;
    let tok = s
        .graph_token("xavier@example.test", "one", "Contacts.Read")
        .await;
    assert_eq!(graph_status(&s, &tok).await, StatusCode::OK);
    let mut off = xavier("one");
    off["active"] = json!(false);
    if let Some(o) = off.as_object_mut() {
        o.remove("password");
    }
    assert_eq!(put_user(&s, "ux", off.clone()).await, StatusCode::OK);
    assert_eq!(graph_status(&s, &tok).await, StatusCode::UNAUTHORIZED);
    off["active"] = json!(true);
    assert_eq!(put_user(&s, "ux", off).await, StatusCode::OK);
    assert_eq!(
        graph_status(&s, &tok).await,
        StatusCode::UNAUTHORIZED,
        "reactivation does not bring old tokens back"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_grants_are_capped_per_user() {
    let s = TestServer::start(&fixture("demo.json"), "[auth]\nmax_tokens_per_user = 5\n").await;
    let mut toks = Vec::new();
    for _ in 0..8 {
        toks.push(
            s.graph_token("anna@example.test", "demo", "Contacts.Read")
                .await,
        );
    }
    assert_eq!(token_rows(&s.app), 5, "only the cap is stored");
    let mut alive = Vec::new();
    for t in &toks {
        alive.push(graph_status(&s, t).await == StatusCode::OK);
    }
    assert_eq!(
        alive,
        [false, false, false, true, true, true, true, true],
        "the oldest are revoked"
    );
    s.stop().await;
}

#[tokio::test]
async fn expired_tokens_are_purged() {
    let dir = tempfile::tempdir().expect("tmp");
    let app = demo_app(dir.path(), "").await;
    for _ in 0..300 {
        app.tokens
            .issue("u1", "anna@example.test", &["Contacts.Read".into()], 0)
            .expect("issue");
    }
    // Expired in the second they were issued; each issue purges earlier expired rows.
    assert!(token_rows(&app) <= 2, "{} rows kept", token_rows(&app));
}
