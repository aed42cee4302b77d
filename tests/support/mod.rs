//! Shared helpers for integration tests: an in-process crmgate over HTTPS on 127.0.0.1 with a
//! temporary data dir, and a client that trusts its generated certificate.
#![allow(dead_code, unreachable_pub)]

pub mod graph_sim;
pub mod hellohq_sim;
pub mod hubspot_oracle;
pub mod hubspot_sim;
pub mod mirror_oracle;

use crmgate::app::App;
use crmgate::config::{Config, Overrides};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A running test server.
pub struct TestServer {
    pub base: String,
    pub app: Arc<App>,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), String>>>,
}

/// A SOAP 1.1 envelope with the EWS `m:` and `t:` prefixes, and a header when one is given.
pub fn soap(header: &str, body: &str) -> String {
    let m = "http://schemas.microsoft.com/exchange/services/2006/messages";
    let t = "http://schemas.microsoft.com/exchange/services/2006/types";
    let header = if header.is_empty() {
        String::new()
    } else {
        format!("<soap:Header>{header}</soap:Header>")
    };
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:m="{m}" xmlns:t="{t}">{header}<soap:Body>{body}</soap:Body></soap:Envelope>"#
    )
}

/// Every element named `name` at or below `e`, in document order.
pub fn elements<'a>(
    e: &'a crmgate::ews::xml::Element,
    name: &str,
) -> Vec<&'a crmgate::ews::xml::Element> {
    fn walk<'a>(
        e: &'a crmgate::ews::xml::Element,
        name: &str,
        out: &mut Vec<&'a crmgate::ews::xml::Element>,
    ) {
        if e.name == name {
            out.push(e);
        }
        for c in &e.children {
            walk(c, name, out);
        }
    }
    let mut out = Vec::new();
    walk(e, name, &mut out);
    out
}

/// The `ResponseCode`s of an EWS answer, in order.
pub fn response_codes(e: &crmgate::ews::xml::Element) -> Vec<String> {
    elements(e, "ResponseCode")
        .iter()
        .map(|c| c.text.clone())
        .collect()
}

/// Runs an unmodified client (Python or Node script) and returns the JSON object it prints
/// last; the test fails with the client's output if the client fails.
pub async fn run_client(what: &str, mut cmd: std::process::Command) -> serde_json::Value {
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed:\n{stderr}\n{stdout}");
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{what}: {e}: {stdout}\n{stderr}"))
}

/// Opens crmgate on the helloHQ backend at `sim_base` in `dir` without serving it (the
/// initial load is left to the caller's `refresh` calls).
pub fn hellohq_app(dir: &Path, sim_base: &str, hq_keys: &str) -> Arc<App> {
    TestServer::write_hellohq_files(dir, &[]);
    let ov = Overrides {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.to_path_buf()),
        seed: None,
        insecure_http: false,
    };
    let cfg = Config::parse(&hellohq_config(sim_base, hq_keys, ""), dir, &ov).expect("config");
    Arc::new(App::open(cfg).expect("open"))
}

/// crmgate on a HubSpot simulator, not loaded yet (token and logins files written into `dir`).
pub fn hubspot_app(dir: &Path, sim_base: &str, hubspot_extra: &str) -> Arc<App> {
    TestServer::write_hellohq_files(dir, &[]);
    std::fs::write(dir.join("hubspot-token"), hubspot_sim::HubSpotSim::TOKEN).expect("token");
    let ov = Overrides {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.to_path_buf()),
        seed: None,
        insecure_http: false,
    };
    let cfg = Config::parse(&hubspot_config(sim_base, hubspot_extra), dir, &ov).expect("config");
    Arc::new(App::open(cfg).expect("open"))
}

/// Config text for the helloHQ backend (files from [`TestServer::write_hellohq_files`]).
pub fn hellohq_config(sim_base: &str, hq_keys: &str, extra_config: &str) -> String {
    format!(
        "{extra_config}\n[crm]\nbackend = \"hellohq\"\n[crm.hellohq]\nbase_url = \"{sim_base}\"\n\
         credentials = \"creds.json\"\nlogins = \"logins.json\"\n{hq_keys}\n"
    )
}

/// A user (login) of the replica with at least `n` My contacts, and `n` of them.
pub fn user_with_my_contacts(s: &TestServer, n: usize) -> (String, Vec<String>) {
    let e = s.app.replica.read().expect("replica");
    for u in e.user_ids() {
        let my = e.list(u, crmgate::domain::rules::VirtualFolder::My);
        if my.len() < n {
            continue;
        }
        if let Some(user) = e.user_record(u) {
            let ids = my.iter().take(n).map(|c| e.contact_id(*c).to_owned());
            return (user.login.clone(), ids.collect());
        }
    }
    panic!("no user with {n} My contacts")
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

impl TestServer {
    /// Starts crmgate seeded with `seed`, with extra config TOML.
    pub async fn start(seed: &Path, extra_config: &str) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, Some(seed), extra_config).await
    }

    /// Starts crmgate on the helloHQ backend at `sim_base` (the simulator's credentials), with
    /// local logins `(login, password, role)`, `[crm.hellohq]` keys `hq_keys` and further
    /// config `extra_config`. Returns once the initial load is done.
    pub async fn start_hellohq(
        sim_base: &str,
        logins: &[(&str, &str, &str)],
        hq_keys: &str,
        extra_config: &str,
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::write_hellohq_files(dir.path(), logins);
        let cfg = hellohq_config(sim_base, hq_keys, extra_config);
        Self::start_in(dir, None, &cfg).await
    }

    /// Starts crmgate on the helloHQ simulator `sim`, every helloHQ user signing in with
    /// password "pw" ([`hellohq_sim::Sim::logins`]).
    pub async fn start_on_sim(
        sim: &hellohq_sim::Sim,
        hq_keys: &str,
        extra_config: &str,
    ) -> TestServer {
        let logins = sim.logins();
        let l: Vec<(&str, &str, &str)> = logins
            .iter()
            .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
            .collect();
        Self::start_hellohq(&sim.base_url, &l, hq_keys, extra_config).await
    }

    /// Starts crmgate on the HubSpot simulator at `sim_base` with local logins `(login,
    /// password, role)`. Returns once the initial load is done.
    pub async fn start_hubspot(sim_base: &str, logins: &[(&str, &str, &str)]) -> TestServer {
        Self::start_hubspot_with(sim_base, logins, "").await
    }

    /// crmgate on a HubSpot simulator with further `[crm.hubspot]` lines.
    pub async fn start_hubspot_with(
        sim_base: &str,
        logins: &[(&str, &str, &str)],
        hubspot_extra: &str,
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::write_hellohq_files(dir.path(), logins);
        std::fs::write(
            dir.path().join("hubspot-token"),
            hubspot_sim::HubSpotSim::TOKEN,
        )
        .expect("token");
        Self::start_in(dir, None, &hubspot_config(sim_base, hubspot_extra)).await
    }

    /// The Graph id of the token's user's "HQ My Contacts" (panics when it is not listed).
    pub async fn my_folder(&self, token: &str) -> String {
        let r = self
            .client
            .get(self.url("/v1.0/me/contactFolders"))
            .bearer_auth(token)
            .send()
            .await
            .expect("folders");
        assert_eq!(r.status().as_u16(), 200, "contactFolders");
        let folders: serde_json::Value = r.json().await.expect("json");
        folders["value"]
            .as_array()
            .and_then(|a| a.iter().find(|f| f["displayName"] == "HQ My Contacts"))
            .and_then(|f| f["id"].as_str())
            .expect("My")
            .to_owned()
    }

    /// The backend on HubSpot, if it is.
    pub fn hubspot(&self) -> &crmgate::crm::hubspot::HubSpot {
        match &self.app.crm {
            crmgate::crm::Crm::HubSpot(h) => h,
            _ => panic!("not on HubSpot"),
        }
    }

    /// Writes `creds.json` (the simulator's credentials) and `logins.json` into `dir`.
    pub fn write_hellohq_files(dir: &Path, logins: &[(&str, &str, &str)]) {
        std::fs::write(
            dir.join("creds.json"),
            serde_json::json!({"client_id": "1234-crmgate", "client_secret": "sim-secret",
                "refresh_token": "sim-refresh"})
            .to_string(),
        )
        .expect("creds");
        let users: Vec<_> = logins
            .iter()
            .map(|(l, p, r)| serde_json::json!({"login": l, "password": p, "role": r}))
            .collect();
        std::fs::write(
            dir.join("logins.json"),
            serde_json::json!({ "users": users }).to_string(),
        )
        .expect("logins");
    }

    /// Stops the server and starts it again on the same data dir with another config.
    pub async fn restart(mut self, extra_config: &str) -> TestServer {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("join").expect("serve");
        }
        let TestServer { app, dir, .. } = self;
        drop(app);
        Self::start_in(dir, None, extra_config).await
    }

    /// Stops the server, runs `between` on its data dir (nothing holds the store then), and
    /// starts it again there with `extra_config`.
    pub async fn restart_after(
        mut self,
        extra_config: &str,
        between: impl FnOnce(&Path),
    ) -> TestServer {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("join").expect("serve");
        }
        let TestServer { app, dir, .. } = self;
        // Background work of the stopped server (its last blocking store calls) lets go of
        // the app before the store is opened by anyone else.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while Arc::strong_count(&app) > 1 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        drop(app);
        between(dir.path());
        Self::start_in(dir, None, extra_config).await
    }

    async fn start_in(
        dir: tempfile::TempDir,
        seed: Option<&Path>,
        extra_config: &str,
    ) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let ov = Overrides {
            listen: Some(addr.to_string()),
            data_dir: Some(dir.path().to_path_buf()),
            seed: seed.map(Path::to_path_buf),
            insecure_http: false,
        };
        let cfg = Config::parse(extra_config, dir.path(), &ov).expect("config");
        // Background work of a server just stopped may hold the store a moment longer.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let app = loop {
            match App::open(cfg.clone()) {
                Ok(a) => break Arc::new(a),
                Err(e) if std::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => panic!("open: {e}"),
            }
        };
        if !matches!(app.config.crm.backend, crmgate::config::Backend::Embedded) {
            // The initial load runs in sync cycles; wait until the replica is ready.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            while !app.replica.is_ready() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the remote CRM's initial load timed out"
                );
                if app.refresh().await.is_err() {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        } else {
            app.catch_up().await.expect("initial load");
        }
        // The certificate is generated by the server config; build it before the client.
        crmgate::server::tls::server_config(&app.config).expect("tls");
        let cert_path = match &app.config.server.tls {
            crmgate::config::TlsMode::Files { cert, .. } => Some(cert.clone()),
            crmgate::config::TlsMode::SelfSigned => Some(dir.path().join("tls/cert.pem")),
            crmgate::config::TlsMode::Off => None,
        };
        let mut builder = reqwest::Client::builder();
        if let Some(p) = &cert_path {
            let pem = std::fs::read(p).expect("cert");
            builder =
                builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"));
        }
        let client = builder.build().expect("client");
        let scheme = if cert_path.is_some() { "https" } else { "http" };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(crmgate::server::serve(app.clone(), listener, async {
            let _ = rx.await;
        }));
        TestServer {
            base: format!("{scheme}://127.0.0.1:{}", addr.port()),
            app,
            client,
            dir,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// A Graph bearer token from crmgate's password grant (`POST /oauth2/v2.0/token`).
    pub async fn graph_token(&self, user: &str, password: &str, scope: &str) -> String {
        password_token(&self.client, &self.base, user, password, scope).await
    }

    /// Adds paula@example.test (password `pw`, subsystem s1), responsible for one company with
    /// exactly 25 contacts (P00..P24 Pager): the paging scenarios' mailbox.
    pub async fn add_paula(&self) {
        let put = |path: String, body: serde_json::Value| {
            let req = self
                .client
                .put(self.url(&path))
                .basic_auth("ben@example.test", Some("demo2"))
                .json(&body);
            async move { assert!(req.send().await.expect("put").status().is_success()) }
        };
        put("/admin/v1/users/up".into(), serde_json::json!({"login": "paula@example.test", "name": "Paula Page", "password": "pw", "subsystems": ["s1"]})).await;
        put(
            "/admin/v1/companies/kp".into(),
            serde_json::json!({"name": "Paging GmbH", "subsystems": ["s1"], "responsible": ["up"]}),
        )
        .await;
        for i in 0..25 {
            put(
                format!("/admin/v1/contacts/cp{i:02}"),
                serde_json::json!({"companies": ["kp"], "first_name": format!("P{i:02}"), "last_name": "Pager"}),
            )
            .await;
        }
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("join").expect("serve");
        }
    }
}

/// The configuration of crmgate on a HubSpot simulator (token and logins files as
/// [`TestServer::start_hubspot_with`] writes them), with further `[crm.hubspot]` lines.
pub fn hubspot_config(sim_base: &str, hubspot_extra: &str) -> String {
    format!(
        "[crm]\nbackend = \"hubspot\"\n[crm.hubspot]\nbase_url = \"{sim_base}\"\n\
         token = \"file:hubspot-token\"\nlogins = \"logins.json\"\n{hubspot_extra}\n"
    )
}

/// A Graph-face token from crmgate at `base` by the password grant (panics when refused).
pub async fn password_token(
    client: &reqwest::Client,
    base: &str,
    user: &str,
    password: &str,
    scope: &str,
) -> String {
    let r: serde_json::Value = client
        .post(format!("{base}/oauth2/v2.0/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", user),
            ("password", password),
            ("scope", scope),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    r["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token: {r}"))
        .to_owned()
}
