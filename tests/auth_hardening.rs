//! Issue 10: bearer tokens bound to the user's identity, capped and purged; per-account login
//! throttling that spares the owner; no login enumeration by timing; owner-only files in the
//! data dir; CLI options after nested subcommands; overlong ids refused.

mod support;

use crmgate::app::{App, AuthFailure};
use crmgate::config::{Config, Overrides};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
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

fn basic(login: &str, password: &str) -> String {
    use base64::Engine as _;
    let b = base64::engine::general_purpose::STANDARD.encode(format!("{login}:{password}"));
    format!("Basic {b}")
}

fn ip(n: u32) -> IpAddr {
    IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n))
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

#[tokio::test]
async fn many_sources_lock_one_account_but_not_its_owner() {
    let dir = tempfile::tempdir().expect("tmp");
    let app = demo_app(
        dir.path(),
        "[auth]\nmax_failures = 5\nfailure_delay_ms = 1\naccount_max_failures = 10\n\
         account_lockout_secs = 1\n",
    )
    .await;
    let home = ip(1);
    let good = basic("anna@example.test", "demo");
    assert!(app.authenticate(Some(&good), home).is_ok());
    // 50 sources × 4 guesses: no source reaches its own limit of 5.
    let mut locked = 0;
    for n in 0..50 {
        for g in 0..4 {
            let guess = basic("Anna@Example.test", &format!("guess{n}-{g}"));
            match app.authenticate(Some(&guess), ip(100 + n)) {
                Err(AuthFailure::Locked { .. }) => locked += 1,
                Err(AuthFailure::Invalid { .. }) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(locked, 200 - 10, "only the first 10 guesses were tried");
    assert!(
        matches!(
            app.authenticate(Some(&good), ip(999)),
            Err(AuthFailure::Locked { .. })
        ),
        "a new source is locked out of the account, even with the password"
    );
    assert!(
        app.authenticate(Some(&good), home).is_ok(),
        "the owner's known source still signs in"
    );
    assert!(
        app.authenticate(Some(&basic("ben@example.test", "demo2")), ip(999))
            .is_ok(),
        "other accounts are not affected"
    );
    // Unknown logins are throttled the same way: a lock says nothing about existence.
    for n in 0..10 {
        let _ = app.authenticate(Some(&basic("nobody@example.test", "x")), ip(2000 + n));
    }
    assert!(matches!(
        app.authenticate(Some(&basic("nobody@example.test", "x")), ip(3000)),
        Err(AuthFailure::Locked { .. })
    ));
    // The lock is short: the owner is not locked out for ever.
    std::thread::sleep(Duration::from_millis(2100));
    assert!(app.authenticate(Some(&good), ip(999)).is_ok());
}

#[tokio::test]
async fn unknown_login_costs_as_much_as_a_wrong_password() {
    let dir = tempfile::tempdir().expect("tmp");
    let app = demo_app(
        dir.path(),
        "[auth]\nmax_failures = 1000\naccount_max_failures = 10000\n",
    )
    .await;
    let time = |login: &str, password: &str, n: u32| {
        let t = Instant::now();
        let r = app.authenticate(Some(&basic(login, password)), ip(n));
        assert!(matches!(r, Err(AuthFailure::Invalid { .. })), "{r:?}");
        t.elapsed()
    };
    // Warm up the dummy hash (made once, lazily).
    time("warm@example.test", "x", 0);
    let before = crmgate::auth::dummy_verifications();
    let (mut unknown, mut wrong) = (Vec::new(), Vec::new());
    for i in 0..5 {
        unknown.push(time(&format!("nobody{i}@example.test"), "pw", 10 + i));
        wrong.push(time("anna@example.test", &format!("wrong{i}"), 20 + i));
    }
    assert!(crmgate::auth::dummy_verifications() >= before + 5);
    unknown.sort();
    wrong.sort();
    let ratio = unknown[2].as_secs_f64() / wrong[2].as_secs_f64();
    assert!(
        ratio > 0.5,
        "unknown login {:?} vs wrong password {:?}: ratio {ratio:.2}",
        unknown[2],
        wrong[2]
    );
}

#[cfg(unix)]
#[tokio::test]
async fn data_dir_store_and_tls_key_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    for engine in ["redb", "sled"] {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("data");
        // A key file left behind with a loose mode is tightened when rewritten.
        let app = demo_app(&dir, &format!("[store]\nengine = \"{engine}\"\n")).await;
        std::fs::create_dir_all(dir.join("tls")).expect("mkdir");
        std::fs::write(dir.join("tls/key.pem"), "old").expect("write");
        std::fs::set_permissions(
            dir.join("tls/key.pem"),
            std::fs::Permissions::from_mode(0o644),
        )
        .expect("chmod");
        crmgate::server::tls::server_config(&app.config).expect("tls");
        assert_eq!(mode(&dir), 0o700, "{engine}: data dir");
        assert_eq!(mode(&dir.join("tls/key.pem")), 0o600, "tls key");
        let mut stack = vec![dir.clone()];
        let mut files = 0;
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("read_dir") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    if !p.ends_with("tls") {
                        assert_eq!(mode(&p), 0o700, "{}", p.display());
                        stack.push(p);
                    }
                } else if p.parent().is_some_and(|d| !d.ends_with("tls")) {
                    assert_eq!(mode(&p), 0o600, "{}", p.display());
                    files += 1;
                }
            }
        }
        assert!(files > 0, "{engine}: no store files found");
    }
}

fn crmgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crmgate"))
        .args(args)
        .env("CRMGATE_LOG", "warn")
        .output()
        .expect("run crmgate")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn token_commands_take_options_after_the_subcommand() {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path().join("data");
    let ds = d.to_str().expect("utf8");
    let seed = fixture("demo.json");
    let o = crmgate(&["import", seed.to_str().expect("p"), "--data-dir", ds]);
    assert!(o.status.success(), "{}", text(&o));
    let config = tmp.path().join("crmgate.toml");
    std::fs::write(&config, format!("[store]\ndata_dir = {ds:?}\n")).expect("config");
    let cs = config.to_str().expect("utf8");
    // As the README writes them: options after the nested subcommand.
    let o = crmgate(&["token", "issue", "--user", "anna@example.test", "-c", cs]);
    assert!(o.status.success(), "{}", text(&o));
    let token = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    assert!(token.starts_with("cgt_"), "{}", text(&o));
    let o = crmgate(&["token", "revoke", &token, "-c", cs]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("revoked"), "{}", text(&o));
    let o = crmgate(&["token", "revoke", &token, "--data-dir", ds]);
    assert!(text(&o).contains("no such token"), "{}", text(&o));
    // The old order still works.
    let o = crmgate(&["token", "--data-dir", ds, "revoke", &token]);
    assert!(text(&o).contains("no such token"), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlong_ids_are_refused_naming_the_field() {
    let s = start().await;
    let long = "u".repeat(256);
    let r = s
        .client
        .put(s.url(&format!("/admin/v1/users/{long}")))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .json(&xavier("one"))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["error"]["details"][0]["path"], "id", "{e}");
    let r = s
        .client
        .put(s.url(&format!("/admin/v1/subsystems/{}", "s".repeat(300))))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .json(&json!({"name": "Long"}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // 255 bytes is still fine.
    let ok = "u".repeat(255);
    assert_eq!(put_user(&s, &ok, xavier("one")).await, StatusCode::CREATED);
    s.stop().await;

    let ds = crmgate::domain::dataset::Dataset::parse(
        &json!({"users": [{"id": long, "login": "l@example.test", "name": "L"}]}).to_string(),
    )
    .expect("parse");
    let problems = ds.check(&|_, _| false);
    assert!(
        problems.iter().any(|p| p.path == "users[0].id"),
        "{problems:?}"
    );
}
