//! The `crmgate` command: serve, demo, check-config, import, explain, preview, gen-dataset.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use crmgate::app::{read_dataset, App, AppError};
use crmgate::config::{Config, LogFormat, Overrides};
use crmgate::domain::dataset::Dataset;
use crmgate::gen::{generate, GenParams};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// glibc's per-thread arenas keep the buffers of a large initial load long after they are
/// freed (measured: 100k-contact seed peak 687 MB with glibc, see BENCHMARKS.md); mimalloc
/// returns them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The demo CRM, compiled in so `crmgate demo` works from any directory.
const DEMO_DATASET: &str = include_str!("../fixtures/demo.json");

#[derive(Parser)]
#[command(
    name = "crmgate",
    version,
    about = "CRM contacts as live per-user address-book folders (CardDAV, EWS, Graph)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Global, so that they may also follow a nested subcommand (`token revoke TOKEN -c FILE`, as
/// the README writes it).
#[derive(Args, Clone, Default)]
struct Common {
    /// Config file (TOML); see docs/config.md.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Data directory (overrides store.data_dir).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Issue a token for a user.
    Issue {
        /// User login.
        #[arg(long)]
        user: String,
        /// Scopes, comma-separated (Contacts.Read, Contacts.ReadWrite).
        #[arg(long, default_value = "Contacts.Read")]
        scopes: String,
        /// Lifetime: 90s, 30m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
    /// Revoke a token.
    Revoke {
        /// The token.
        token: String,
    },
}

#[derive(Subcommand)]
enum MirrorCmd {
    /// Every mirrored mailbox as the data dir knows it.
    Status,
    /// Forget one mailbox's id map and position; the next start reads it back from the
    /// mailbox and brings it up to date.
    Resync {
        /// User login.
        #[arg(long)]
        user: String,
    },
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway.
    Serve {
        #[command(flatten)]
        common: Common,
        /// Listen address (overrides server.listen).
        #[arg(long)]
        listen: Option<String>,
        /// Dataset to seed an empty embedded CRM with (overrides crm.seed).
        #[arg(long)]
        seed: Option<PathBuf>,
        /// Plain HTTP instead of TLS; loopback addresses only.
        #[arg(long)]
        insecure_http: bool,
    },
    /// Run on the embedded demo CRM and print URLs and logins.
    Demo {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: String,
        /// Data directory (default: crmgate-demo in the system temp dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Plain HTTP instead of TLS.
        #[arg(long)]
        insecure_http: bool,
    },
    /// Validate a config file and report every problem.
    CheckConfig {
        #[command(flatten)]
        common: Common,
    },
    /// Upsert the records of a dataset file by id into the embedded CRM.
    Import {
        /// Dataset file (docs/dataset.md).
        file: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Explain where a contact is for a user, and why.
    Explain {
        /// User login or id.
        #[arg(long)]
        user: String,
        /// Contact id.
        #[arg(long)]
        contact: String,
        #[command(flatten)]
        common: Common,
    },
    /// Show a user's folders with counts and first entries.
    Preview {
        /// User login or id.
        #[arg(long)]
        user: String,
        /// Entries shown per folder.
        #[arg(long, default_value_t = 10)]
        limit: usize,
        #[command(flatten)]
        common: Common,
    },
    /// Issue or revoke Graph bearer tokens (the server must be stopped: tokens live in the
    /// data dir; users can also get tokens from POST /oauth2/v2.0/token).
    Token {
        #[command(subcommand)]
        action: TokenCmd,
        #[command(flatten)]
        common: Common,
    },
    /// The mailbox mirror (server stopped: the running server answers GET /admin/v1/mirror and
    /// POST /admin/v1/mirror/resync?user=LOGIN).
    Mirror {
        #[command(subcommand)]
        action: MirrorCmd,
        #[command(flatten)]
        common: Common,
    },
    /// Show the newest entries of the audit log of client writes.
    Audit {
        /// Entries shown.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        common: Common,
    },
    /// Write a deterministic generated dataset (JSON) to stdout or a file.
    GenDataset {
        /// Contacts.
        #[arg(long, default_value_t = 1000)]
        contacts: usize,
        /// Users.
        #[arg(long, default_value_t = 20)]
        users: usize,
        /// Subsystems.
        #[arg(long, default_value_t = 2)]
        subsystems: usize,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output file (default stdout).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

fn load_config(common: &Common, ov: Overrides) -> Result<Config> {
    let ov = Overrides {
        data_dir: common.data_dir.clone().or(ov.data_dir),
        ..ov
    };
    let cfg = match &common.config {
        Some(p) => Config::load(p, &ov)?,
        None => Config::parse("", Path::new("."), &ov)?,
    };
    Ok(cfg)
}

fn init_logs(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CRMGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match cfg.log.format {
        LogFormat::Json => b.json().try_init(),
        LogFormat::Text => b.try_init(),
    };
}

fn open_offline(cfg: Config) -> Result<App> {
    let dir = cfg.data_dir.clone();
    App::open(cfg).map_err(|e| match e {
        AppError::Store(s)
            if s.to_string().contains("lock") || s.to_string().contains("WouldBlock") =>
        {
            anyhow::anyhow!(
                "{}: the data dir is in use (is crmgate serve running?). Ask the running server \
                 instead: GET /admin/v1/explain or /admin/v1/preview",
                dir.display()
            )
        }
        other => other.into(),
    })
}

async fn run_server(cfg: Config) -> Result<()> {
    let listen = cfg.server.listen;
    let app = Arc::new(App::open(cfg).context("opening the data dir")?);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    // Initial load and polling run beside the listener; /readyz says when it and the
    // warm-up after it are done.
    app.warming
        .store(true, std::sync::atomic::Ordering::Release);
    let poller = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut warmed = false;
            loop {
                if let Err(e) = app.refresh().await {
                    tracing::warn!(error = %e, "catching up with the CRM failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                    continue;
                }
                if !warmed {
                    // Phone display forms for every contact, off the request path.
                    warmed = true;
                    let app = app.clone();
                    tokio::task::spawn_blocking(move || {
                        let t = std::time::Instant::now();
                        let n = app.warm_up();
                        app.warming
                            .store(false, std::sync::atomic::Ordering::Release);
                        tracing::info!(
                            numbers = n,
                            ms = t.elapsed().as_millis() as u64,
                            "phone display forms ready"
                        );
                    });
                }
                tokio::time::sleep(app.config.crm.poll_interval).await;
            }
        })
    };
    tracing::info!(%listen, tls = ?app.config.server.tls, "crmgate listening");
    let result = crmgate::server::serve(app, listener, shutdown_signal()).await;
    poller.abort();
    tracing::info!("stopped");
    result.map_err(anyhow::Error::msg)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutting down");
}

fn demo_intro(cfg: &Config, ds: &Dataset) {
    let scheme = if cfg.server.tls == crmgate::config::TlsMode::Off {
        "http"
    } else {
        "https"
    };
    let base = format!("{scheme}://{}", cfg.server.listen);
    let cert = crmgate::server::tls::self_signed_paths(&cfg.data_dir).0;
    println!(
        "crmgate demo: embedded CRM with {} contacts, {} companies, {} users",
        ds.contacts.len(),
        ds.companies.len(),
        ds.users.len()
    );
    println!();
    println!("  health     {base}/healthz   ready: {base}/readyz   metrics: {base}/metrics");
    println!("  admin API  {base}/admin/v1/contacts   (Basic auth, admin role)");
    println!("  explain    {base}/admin/v1/explain?user=anna@example.test&contact=c1");
    if scheme == "https" {
        println!("  TLS        self-signed certificate: {}", cert.display());
    }
    println!();
    println!("  connect a client (with any login below):");
    println!("    CardDAV  {base}/   iPhone, Mac, DAVx5, Thunderbird, vdirsyncer: server + login (docs/carddav.md)");
    println!("    EWS      {base}/EWS/Exchange.asmx   Outlook for Mac, DavMail, exchangelib (docs/ews.md)");
    println!("    Graph    {base}/v1.0/me/contactFolders   token: {base}/oauth2/v2.0/token (docs/graph.md)");
    println!("    Outlook on Microsoft 365 (new Outlook, web, mobile): the mailbox mirror writes both folders into");
    println!(
        "             each user's Exchange Online mailbox; add a [mirror] section (docs/mirror.md)"
    );
    println!();
    println!("  logins (login / password / role):");
    let v: serde_json::Value = serde_json::from_str(DEMO_DATASET).unwrap_or_default();
    for u in v["users"].as_array().into_iter().flatten() {
        println!(
            "    {:<24} {:<8} {}",
            u["login"].as_str().unwrap_or(""),
            u["password"].as_str().unwrap_or(""),
            u["role"].as_str().unwrap_or("user")
        );
    }
    println!();
    let admin = v["users"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|u| u["role"] == "admin");
    if let Some(a) = admin {
        let cacert = if scheme == "https" {
            format!("--cacert {} ", cert.display())
        } else {
            String::new()
        };
        println!(
            "  try: curl {cacert}-u {}:{} '{base}/admin/v1/preview?user=anna@example.test'",
            a["login"].as_str().unwrap_or(""),
            a["password"].as_str().unwrap_or("")
        );
    }
    println!("  stop with Ctrl-C");
}

fn progress_bar(done: usize, total: usize) {
    let pct = (done * 100).checked_div(total).unwrap_or(100).min(100);
    let filled = pct / 5;
    eprint!(
        "\r[{}{}] {done}/{total} ({pct}%)",
        "#".repeat(filled),
        " ".repeat(20 - filled)
    );
    if done == total {
        eprintln!();
    }
    let _ = std::io::stderr().flush();
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crmgate: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.cmd {
        Cmd::Serve {
            common,
            listen,
            seed,
            insecure_http,
        } => {
            let cfg = load_config(
                &common,
                Overrides {
                    listen,
                    seed,
                    insecure_http,
                    data_dir: None,
                },
            )?;
            init_logs(&cfg);
            rt.block_on(run_server(cfg))
        }
        Cmd::Demo {
            listen,
            data_dir,
            insecure_http,
        } => {
            let dir = data_dir.unwrap_or_else(|| std::env::temp_dir().join("crmgate-demo"));
            crmgate::store::create_private_dir(&dir)?;
            let seed = dir.join("demo-seed.json");
            std::fs::write(&seed, DEMO_DATASET)?;
            let ds = Dataset::parse(DEMO_DATASET)
                .map_err(|p| anyhow::anyhow!("demo dataset: {:?}", p))?;
            let cfg = Config::parse(
                "",
                &dir,
                &Overrides {
                    listen: Some(listen),
                    data_dir: Some(dir.clone()),
                    seed: Some(seed),
                    insecure_http,
                },
            )?;
            init_logs(&cfg);
            // The certificate is made at start; print after it exists.
            crmgate::server::tls::server_config(&cfg).map_err(anyhow::Error::msg)?;
            demo_intro(&cfg, &ds);
            rt.block_on(run_server(cfg))
        }
        Cmd::CheckConfig { common } => {
            let cfg = load_config(&common, Overrides::default())?;
            println!(
                "config ok: listen {} tls {:?}, data dir {}, backend {}, global scope {:?}",
                cfg.server.listen,
                cfg.server.tls,
                cfg.data_dir.display(),
                cfg.crm.backend.name(),
                cfg.folders.rules.global_scope
            );
            Ok(())
        }
        Cmd::Import { file, common } => {
            let cfg = load_config(&common, Overrides::default())?;
            let ds = read_dataset(&file)?;
            let app = open_offline(cfg)?;
            rt.block_on(async {
                app.catch_up().await?;
                eprintln!("importing {} records from {}", ds.len(), file.display());
                let n = crmgate::admin::records::import(&app, ds, &mut progress_bar).await?;
                println!("imported {n} records");
                Ok::<_, anyhow::Error>(())
            })
        }
        Cmd::Mirror { action, common } => {
            let cfg = load_config(&common, Overrides::default())?;
            if cfg.mirror.is_none() {
                bail!("the mailbox mirror is off: the config has no [mirror] section");
            }
            let app = open_offline(cfg)?;
            rt.block_on(app.catch_up())?;
            let Some(m) = &app.mirror else {
                bail!("the mailbox mirror is off");
            };
            match action {
                MirrorCmd::Status => {
                    let list = m.stored_status(&app).map_err(anyhow::Error::msg)?;
                    println!(
                        "{:<32} {:<32} {:<8} {:>8} {:>8} {:>10}",
                        "login", "mailbox", "filled", "my", "global", "waiting"
                    );
                    for s in &list {
                        let waiting = match s.waiting {
                            [Some(a), Some(b)] => (a + b).to_string(),
                            [Some(a), None] if s.filled => a.to_string(),
                            _ if s.stored_for.is_empty() => "not started".into(),
                            _ => "filling".into(),
                        };
                        println!(
                            "{:<32} {:<32} {:<8} {:>8} {:>8} {:>10}",
                            s.login,
                            s.mailbox,
                            if s.filled { "yes" } else { "no" },
                            s.mapped[0],
                            s.mapped[1],
                            waiting
                        );
                    }
                    println!("{} mailbox(es)", list.len());
                }
                MirrorCmd::Resync { user } => {
                    let known = m
                        .stored_status(&app)
                        .map_err(anyhow::Error::msg)?
                        .iter()
                        .any(|s| s.login.eq_ignore_ascii_case(&user));
                    if !known {
                        bail!("\"{user}\" is not a mirrored user (see crmgate mirror status)");
                    }
                    crmgate::mirror::Mirror::forget(&app, &user).map_err(anyhow::Error::msg)?;
                    println!("{user}: id map and position forgotten; the next start reads the mailbox back");
                }
            }
            Ok(())
        }
        Cmd::Explain {
            user,
            contact,
            common,
        } => {
            let cfg = load_config(&common, Overrides::default())?;
            let app = open_offline(cfg)?;
            rt.block_on(app.catch_up())?;
            let e = app.replica.read().map_err(|e| anyhow::anyhow!("{e}"))?;
            let Some(u) = e.find_user(&user) else {
                bail!("no user \"{user}\"")
            };
            let Some(c) = e.find_contact(&contact) else {
                bail!("no contact \"{contact}\"")
            };
            let ex = e.explain(u, c);
            let folder = match ex.folder {
                Some(crmgate::domain::rules::VirtualFolder::My) => {
                    app.config.folders.my_name.clone()
                }
                Some(crmgate::domain::rules::VirtualFolder::Global) => {
                    app.config.folders.global_name.clone()
                }
                None => "hidden".into(),
            };
            println!("{} → {}: {folder}", ex.user, ex.contact);
            println!("  {}", ex.reason);
            for r in &ex.rules {
                println!("  rule: {r}");
            }
            Ok(())
        }
        Cmd::Preview {
            user,
            limit,
            common,
        } => {
            let cfg = load_config(&common, Overrides::default())?;
            let app = open_offline(cfg)?;
            rt.block_on(app.catch_up())?;
            let u = {
                let e = app.replica.read().map_err(|e| anyhow::anyhow!("{e}"))?;
                e.find_user(&user)
                    .ok_or_else(|| anyhow::anyhow!("no user \"{user}\""))?
            };
            let v = crmgate::admin::preview_json(&app, u, limit);
            println!("{}", v["user"].as_str().unwrap_or(""));
            for f in v["folders"].as_array().into_iter().flatten() {
                println!("  {} ({})", f["name"].as_str().unwrap_or(""), f["count"]);
                for c in f["first"].as_array().into_iter().flatten() {
                    println!(
                        "    {:<8} {}",
                        c["id"].as_str().unwrap_or(""),
                        c["display_name"].as_str().unwrap_or("")
                    );
                }
            }
            Ok(())
        }
        Cmd::Token { action, common } => {
            let cfg = load_config(&common, Overrides::default())?;
            let app = open_offline(cfg)?;
            match action {
                TokenCmd::Issue { user, scopes, ttl } => {
                    let Some(ttl) = crmgate::auth::tokens::parse_ttl(&ttl) else {
                        bail!("--ttl takes a lifetime like 90s, 30m, 1h or 7d");
                    };
                    let scopes = crmgate::auth::tokens::parse_scopes(&scopes);
                    if scopes.is_empty() {
                        bail!("--scopes takes Contacts.Read and/or Contacts.ReadWrite");
                    }
                    rt.block_on(app.catch_up())?;
                    let (id, login) = {
                        let e = app.replica.read().map_err(|e| anyhow::anyhow!("{e}"))?;
                        let Some(u) = e.find_login(&user) else {
                            bail!("no user with login \"{user}\"")
                        };
                        let r = e.user_record(u).ok_or_else(|| anyhow::anyhow!("no user"))?;
                        (r.id.0.clone(), r.login.clone())
                    };
                    let (token, info) = app.tokens.issue(&id, &login, &scopes, ttl)?;
                    println!("{token}");
                    eprintln!(
                        "for {} with {} until unix time {}",
                        info.login,
                        info.scopes.join(" "),
                        info.exp
                    );
                }
                TokenCmd::Revoke { token } => {
                    if !app.tokens.revoke(&token)? {
                        bail!("no such token");
                    }
                    println!("revoked");
                }
            }
            Ok(())
        }
        Cmd::Audit { limit, common } => {
            let cfg = load_config(&common, Overrides::default())?;
            let app = open_offline(cfg)?;
            for e in app.audit_tail(limit)? {
                let at = e["at_us"].as_u64().unwrap_or(0) / 1_000_000;
                let fields: Vec<&str> = e["fields"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|f| f.as_str()).collect())
                    .unwrap_or_default();
                println!(
                    "{at} {:<24} {:<11} {:<7} {:<12} {:<16} {}",
                    e["user"].as_str().unwrap_or(""),
                    e["op"].as_str().unwrap_or(""),
                    e["action"].as_str().unwrap_or(""),
                    e["contact"].as_str().unwrap_or(""),
                    e["result"].as_str().unwrap_or(""),
                    fields.join(",")
                );
            }
            Ok(())
        }
        Cmd::GenDataset {
            contacts,
            users,
            subsystems,
            seed,
            out,
        } => {
            if users == 0 || subsystems == 0 {
                bail!("--users and --subsystems must be at least 1");
            }
            let ds = generate(&GenParams {
                contacts,
                users,
                subsystems,
                seed,
            });
            let text = serde_json::to_string(&ds.to_json())?;
            match out {
                Some(p) => std::fs::write(&p, text).with_context(|| format!("{}", p.display()))?,
                None => println!("{text}"),
            }
            Ok(())
        }
    }
}
