//! Configuration: one TOML file plus command-line overrides, validated once into [`Config`].
//! Every unknown key and bad value is reported, all at once, with its dotted path.
//! `docs/config.md` documents every key.

use crate::domain::rules::{FolderRules, GlobalScope};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How the listener speaks TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Generate a self-signed certificate into the data dir (default).
    SelfSigned,
    /// Certificate chain and key from PEM files.
    Files {
        /// Certificate chain.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
    /// Plain HTTP; only allowed on a loopback address.
    Off,
}

/// Listener settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// TLS mode.
    pub tls: TlsMode,
    /// Extra host names for the self-signed certificate.
    pub hostnames: Vec<String>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Largest accepted request head (request line + headers).
    pub max_header_bytes: usize,
    /// Time allowed for one request, from head to response.
    pub request_timeout: Duration,
    /// Time allowed to send the request head.
    pub header_timeout: Duration,
    /// Most connections served at once.
    pub max_connections: usize,
    /// Time given to open requests on shutdown.
    pub shutdown_grace: Duration,
    /// Largest answer body a request may produce (EWS and Graph).
    pub max_answer_bytes: usize,
    /// Memory all requests in flight may hold for their bodies (each charged 48× its size).
    pub max_request_memory_bytes: usize,
    /// Connections one client address may hold at once.
    pub max_connections_per_ip: usize,
    /// Whether that limit also holds for loopback addresses: only when set explicitly. By
    /// default a reverse proxy on the same host (all its connections from 127.0.0.1 or ::1)
    /// may use every connection.
    pub per_ip_limits_loopback: bool,
    /// Requests whose work runs off the async workers (large bodies, restrictions, listings)
    /// that run at once; more wait their turn in arrival order.
    pub heavy_workers: usize,
}

/// `[ews]`: what one EWS request may cost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EwsConfig {
    /// Most folder ids in one FindItem, FindFolder or GetFolder.
    pub max_folder_ids: usize,
    /// Most item ids in one GetItem, ConvertId or item write.
    pub max_item_ids: usize,
    /// Most restriction-node evaluations one request may cost.
    pub max_evaluations: u64,
    /// EWS requests one user may have in flight; more get `ErrorServerBusy`.
    pub concurrent: u32,
}

pub use crate::crm::hellohq::config::{HelloHqConfig, HelloHqCredentials, TokenAuth};

/// Which CRM backend feeds the replica, with that backend's own settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The embedded CRM in crmgate's own store.
    Embedded,
    /// helloHQ over its public API (`[crm.hellohq]`).
    HelloHq(Box<HelloHqConfig>),
    /// HubSpot over its public API (`[crm.hubspot]`).
    HubSpot(Box<crate::crm::hubspot::config::HubSpotConfig>),
}

impl Backend {
    /// The name `crm.backend` takes.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::HelloHq(_) => "hellohq",
            Backend::HubSpot(_) => "hubspot",
        }
    }

    /// The file with local sign-in data of the CRM's users (`crm.<backend>.logins`), for a
    /// backend whose CRM keeps none.
    pub fn logins_file(&self) -> Option<&std::path::Path> {
        match self {
            Backend::Embedded => None,
            Backend::HelloHq(c) => c.logins.as_deref(),
            Backend::HubSpot(c) => c.logins.as_deref(),
        }
    }
}

/// CRM settings.
#[derive(Clone, Debug)]
pub struct CrmConfig {
    /// Backend.
    pub backend: Backend,
    /// Dataset to seed the embedded CRM with when the data dir is empty.
    pub seed: Option<PathBuf>,
    /// How often the replica polls the CRM's change feed.
    pub poll_interval: Duration,
}

/// Folder settings.
#[derive(Clone, Debug)]
pub struct FolderConfig {
    /// Whether clients may write into My (`folders.my_direction`).
    pub my_writable: bool,
    /// Whether clients may write into Global (`folders.global_direction`).
    pub global_writable: bool,
    /// Delete policy of My (`folders.my_delete`).
    pub my_delete: crate::domain::rules::DeletePolicy,
    /// Delete policy of Global (`folders.global_delete`).
    pub global_delete: crate::domain::rules::DeletePolicy,
    /// Contact mapping (`[mapping]`).
    pub mapping: crate::domain::mapping::MappingRules,
    /// Membership rules.
    pub rules: FolderRules,
    /// Display name of the My folder.
    pub my_name: String,
    /// Display name of the Global folder.
    pub global_name: String,
    /// Domain for placeholder e-mail addresses of contacts without one; `None` disables.
    pub placeholder_email_domain: Option<String>,
}

pub use crate::auth::throttle::AuthConfig;

/// Graph face settings (`[graph]`).
#[derive(Clone, Debug)]
pub struct GraphConfig {
    /// Requests per second per user before 429.
    pub per_second: u32,
    /// Requests in flight per user before 429.
    pub concurrent: u32,
}

/// Log output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging settings.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Format.
    pub format: LogFormat,
    /// Filter, e.g. `info` or `crmgate=debug`.
    pub level: String,
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Listener.
    pub server: ServerConfig,
    /// Data directory.
    pub data_dir: PathBuf,
    /// On-disk storage engine.
    pub store_engine: crate::store::EngineKind,
    /// CRM.
    pub crm: CrmConfig,
    /// Folders.
    pub folders: FolderConfig,
    /// Login throttling.
    pub auth: AuthConfig,
    /// Graph face.
    pub graph: GraphConfig,
    /// EWS face.
    pub ews: EwsConfig,
    /// Logging.
    pub log: LogConfig,
    /// The mailbox mirror (`None`: off).
    pub mirror: Option<crate::mirror::config::MirrorConfig>,
}

/// Command-line values that override the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--seed`.
    pub seed: Option<PathBuf>,
    /// `--insecure-http`.
    pub insecure_http: bool,
}

/// All problems found in a configuration.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  {}", .0.join("\n  "))]
pub struct ConfigErrors(pub Vec<String>);

struct Reader<'a> {
    root: &'a toml::Table,
    seen: BTreeSet<String>,
    errors: Vec<String>,
}

impl<'a> Reader<'a> {
    fn get(&mut self, path: &str) -> Option<&'a toml::Value> {
        self.seen.insert(path.to_owned());
        let mut parts = path.split('.');
        let first = parts.next()?;
        let mut cur = self.root.get(first)?;
        for p in parts {
            cur = cur.as_table()?.get(p)?;
        }
        Some(cur)
    }

    fn bad(&mut self, path: &str, msg: impl std::fmt::Display) {
        self.errors.push(format!("{path}: {msg}"));
    }

    fn string(&mut self, path: &str) -> Option<String> {
        match self.get(path)? {
            toml::Value::String(s) => Some(s.clone()),
            other => {
                self.bad(
                    path,
                    format!("expected a string, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn boolean(&mut self, path: &str) -> Option<bool> {
        match self.get(path)? {
            toml::Value::Boolean(b) => Some(*b),
            other => {
                self.bad(
                    path,
                    format!("expected true or false, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn int(&mut self, path: &str, min: i64, max: i64) -> Option<i64> {
        match self.get(path)? {
            toml::Value::Integer(i) if (min..=max).contains(i) => Some(*i),
            toml::Value::Integer(i) => {
                self.bad(path, format!("{i} is out of range {min}..={max}"));
                None
            }
            other => {
                self.bad(
                    path,
                    format!("expected an integer, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn strings(&mut self, path: &str) -> Option<Vec<String>> {
        match self.get(path)? {
            toml::Value::Array(a) => {
                let mut out = Vec::new();
                for (i, v) in a.iter().enumerate() {
                    match v.as_str() {
                        Some(s) => out.push(s.to_owned()),
                        None => self.bad(&format!("{path}[{i}]"), "expected a string"),
                    }
                }
                Some(out)
            }
            other => {
                self.bad(
                    path,
                    format!("expected an array of strings, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn unknown_keys(&mut self) {
        let mut unknown = Vec::new();
        walk(self.root, "", &self.seen, &mut unknown);
        for k in unknown {
            self.errors.push(format!("{k}: unknown key"));
        }
    }
}

fn walk(t: &toml::Table, prefix: &str, seen: &BTreeSet<String>, out: &mut Vec<String>) {
    for (k, v) in t {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if seen.contains(&path) {
            continue;
        }
        match v {
            toml::Value::Table(inner) if SECTIONS.contains(&path.as_str()) => {
                walk(inner, &path, seen, out)
            }
            _ => out.push(path),
        }
    }
}

const SECTIONS: &[&str] = &[
    "server",
    "store",
    "crm",
    "crm.hellohq",
    "crm.hubspot",
    "folders",
    "mapping",
    "auth",
    "graph",
    "ews",
    "log",
    "mirror",
];

fn secs(r: &mut Reader<'_>, path: &str, default: u64, max: i64) -> Duration {
    Duration::from_secs(r.int(path, 1, max).map(|v| v as u64).unwrap_or(default))
}

impl Config {
    /// Reads and validates a config file, applying overrides.
    pub fn load(path: &Path, ov: &Overrides) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors(vec![format!("{}: cannot read: {e}", path.display())]))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base, ov)
    }

    /// Validates config text; relative paths are taken relative to `base`.
    pub fn parse(text: &str, base: &Path, ov: &Overrides) -> Result<Config, ConfigErrors> {
        let root: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigErrors(vec![format!("not valid TOML: {e}")]))?;
        let mut r = Reader {
            root: &root,
            seen: BTreeSet::new(),
            errors: Vec::new(),
        };
        for s in SECTIONS {
            if let Some(v) = root.get(*s) {
                if !v.is_table() {
                    r.bad(s, "expected a table");
                }
            }
        }
        let resolve = |p: &str| {
            let p = PathBuf::from(p);
            if p.is_absolute() {
                p
            } else {
                base.join(p)
            }
        };

        // [server]
        let listen_s = ov
            .listen
            .clone()
            .or_else(|| r.string("server.listen"))
            .unwrap_or_else(|| "127.0.0.1:8443".into());
        let listen = match listen_s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                r.bad(
                    "server.listen",
                    format!("\"{listen_s}\" is not an address like 127.0.0.1:8443"),
                );
                None
            }
        };
        let tls = match r.get("server.tls") {
            None => TlsMode::SelfSigned,
            Some(toml::Value::String(s)) if s == "self-signed" => TlsMode::SelfSigned,
            Some(toml::Value::String(s)) if s == "off" => TlsMode::Off,
            Some(toml::Value::Table(t)) => {
                let cert = t.get("cert").and_then(|v| v.as_str());
                let key = t.get("key").and_then(|v| v.as_str());
                for k in t.keys().filter(|k| *k != "cert" && *k != "key") {
                    r.bad(&format!("server.tls.{k}"), "unknown key");
                }
                match (cert, key) {
                    (Some(c), Some(k)) => TlsMode::Files {
                        cert: resolve(c),
                        key: resolve(k),
                    },
                    _ => {
                        r.bad("server.tls", "a table needs both cert and key paths");
                        TlsMode::SelfSigned
                    }
                }
            }
            Some(_) => {
                r.bad(
                    "server.tls",
                    "expected \"self-signed\", \"off\" or {cert = \"…\", key = \"…\"}",
                );
                TlsMode::SelfSigned
            }
        };
        let tls = if ov.insecure_http { TlsMode::Off } else { tls };
        if let (TlsMode::Off, Some(a)) = (&tls, listen) {
            if !a.ip().is_loopback() {
                r.errors.push(format!(
                    "server.tls: plain HTTP is only allowed on a loopback address, not {a}"
                ));
            }
        }
        let hostnames = r.strings("server.hostnames").unwrap_or_default();
        let max_body_bytes = r
            .int("server.max_body_bytes", 1024, 1 << 30)
            .unwrap_or(4 << 20) as usize;
        let max_header_bytes = r
            .int("server.max_header_bytes", 8192, 1 << 20)
            .unwrap_or(64 << 10) as usize;
        let request_timeout = secs(&mut r, "server.request_timeout_secs", 60, 3600);
        let header_timeout = secs(&mut r, "server.header_timeout_secs", 15, 600);
        let max_connections = r.int("server.max_connections", 1, 1 << 20).unwrap_or(4096) as usize;
        let shutdown_grace = secs(&mut r, "server.shutdown_grace_secs", 10, 600);
        let max_answer_bytes = r
            .int("server.max_answer_bytes", 65536, 1 << 31)
            .unwrap_or(32 << 20) as usize;
        let per_byte = crate::http::BUDGET_PER_BODY_BYTE;
        let least = max_body_bytes.saturating_mul(per_byte);
        let max_request_memory_bytes = r
            .int("server.max_request_memory_bytes", 1 << 20, 1 << 40)
            .map(|v| v as usize)
            // Default: 256 MiB, or two largest requests if the body limit was raised.
            .unwrap_or_else(|| (256usize << 20).max(least.saturating_mul(2)));
        if max_request_memory_bytes < least {
            r.bad(
                "server.max_request_memory_bytes",
                format!(
                    "{max_request_memory_bytes} is less than {per_byte} × server.max_body_bytes \
                     ({least}): a request of the largest allowed size could never be served"
                ),
            );
        }
        let per_ip = r
            .int("server.max_connections_per_ip", 1, 1 << 20)
            .map(|v| v as usize);
        let per_ip_limits_loopback = per_ip.is_some();
        let max_connections_per_ip = per_ip.unwrap_or((max_connections / 4).max(1));
        let heavy_workers = r
            .int("server.heavy_workers", 1, 1024)
            .map(|v| v as usize)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));

        // [store]
        let data_dir = ov
            .data_dir
            .clone()
            .or_else(|| r.string("store.data_dir").map(|p| resolve(&p)))
            .unwrap_or_else(|| base.join("data"));

        let store_engine = match r.string("store.engine").as_deref() {
            None | Some("redb") => crate::store::EngineKind::Redb,
            Some("sled") => crate::store::EngineKind::Sled,
            Some(other) => {
                r.bad(
                    "store.engine",
                    format!("\"{other}\" is not \"redb\" or \"sled\""),
                );
                crate::store::EngineKind::Redb
            }
        };

        // [crm]
        let chosen = r.string("crm.backend");
        let is_hellohq = chosen.as_deref() == Some("hellohq");
        let is_hubspot = chosen.as_deref() == Some("hubspot");
        if let Some(other) = chosen
            .as_deref()
            .filter(|b| !["embedded", "hellohq", "hubspot"].contains(b))
        {
            r.bad(
                "crm.backend",
                format!("unknown backend \"{other}\" (known: embedded, hellohq, hubspot)"),
            );
        }
        let hubspot = if is_hubspot || root.get("crm").and_then(|c| c.get("hubspot")).is_some() {
            let base_url = r
                .string("crm.hubspot.base_url")
                .unwrap_or_else(|| "https://api.hubapi.com".into());
            let loopback = base_url.starts_with("http://127.0.0.1")
                || base_url.starts_with("http://localhost");
            if !base_url.starts_with("https://") && !loopback {
                r.bad(
                    "crm.hubspot.base_url",
                    format!("{base_url}: https, or http on loopback (tests)"),
                );
            }
            let token = match r.string("crm.hubspot.token").as_deref() {
                None | Some("env") => crate::crm::hubspot::config::HubSpotToken::Env,
                Some(p) => crate::crm::hubspot::config::HubSpotToken::File(resolve(
                    p.strip_prefix("file:").unwrap_or(p),
                )),
            };
            let oauth = match r.string("crm.hubspot.oauth").as_deref() {
                None => None,
                Some("env") => Some(crate::crm::hubspot::config::HubSpotToken::Env),
                Some(p) => Some(crate::crm::hubspot::config::HubSpotToken::File(resolve(
                    p.strip_prefix("file:").unwrap_or(p),
                ))),
            };
            let token_url = r
                .string("crm.hubspot.token_url")
                .unwrap_or_else(|| format!("{}/oauth/v1/token", base_url.trim_end_matches('/')));
            let webhook_secret = match r.string("crm.hubspot.webhook_secret").as_deref() {
                None => None,
                Some("env") => Some(crate::crm::hubspot::config::HubSpotToken::Env),
                Some(p) => Some(crate::crm::hubspot::config::HubSpotToken::File(resolve(
                    p.strip_prefix("file:").unwrap_or(p),
                ))),
            };
            let webhook_url = r.string("crm.hubspot.webhook_url");
            if let Some(u) = &webhook_url {
                if !u.starts_with("https://") && !u.starts_with("http://") {
                    r.bad(
                        "crm.hubspot.webhook_url",
                        format!("{u}: an absolute http(s) URL"),
                    );
                }
            }
            let requests_per_10s = r
                .int("crm.hubspot.requests_per_10s", 1, 1000)
                .unwrap_or(100) as u32;
            let searches_per_second = r
                .int("crm.hubspot.searches_per_second", 1, 100)
                .unwrap_or(4) as u32;
            let page_size = r.int("crm.hubspot.page_size", 1, 100).unwrap_or(100) as u32;
            let search_page_size =
                r.int("crm.hubspot.search_page_size", 1, 200).unwrap_or(200) as u32;
            let mut mapping = crate::crm::hubspot::map::Mapping::default();
            if let Some(v) = r.strings("crm.hubspot.company_owner_properties") {
                mapping.extra_company_owners = v;
            }
            if let Some(v) = r.strings("crm.hubspot.won_stages") {
                mapping.won_stages = v;
            }
            if let Some(v) = r.strings("crm.hubspot.lost_stages") {
                mapping.lost_stages = v;
            }
            mapping.default_lifecycle_stage = r.string("crm.hubspot.default_lifecycle_stage");
            if let Some(b) = r.boolean("crm.hubspot.count_closed_deals") {
                mapping.count_closed_deals = b;
            }
            match r.get("crm.hubspot.custom_properties") {
                None => {}
                Some(toml::Value::Table(t)) => {
                    for (field, prop) in t {
                        let known = crate::crm::hubspot::map::CUSTOM_FIELDS
                            .iter()
                            .any(|(name, _)| name == field);
                        match prop.as_str() {
                            Some(p) if known && !p.is_empty() => {
                                mapping.custom.insert(field.clone(), p.to_owned());
                            }
                            _ if !known => r.bad(
                                &format!("crm.hubspot.custom_properties.{field}"),
                                "unknown field (known: title, middle_name, department, notes)",
                            ),
                            _ => r.bad(
                                &format!("crm.hubspot.custom_properties.{field}"),
                                "expected a HubSpot property name",
                            ),
                        }
                    }
                }
                Some(_) => r.bad(
                    "crm.hubspot.custom_properties",
                    "expected a table of field = \"property\"",
                ),
            }
            let logins = r.string("crm.hubspot.logins").map(|p| resolve(&p));
            let overlap = Duration::from_secs(
                r.int("crm.hubspot.overlap_secs", 0, 86400).unwrap_or(60) as u64,
            );
            let associations_interval = secs(
                &mut r,
                "crm.hubspot.associations_interval_secs",
                600,
                86400 * 7,
            );
            let reconcile_interval = secs(
                &mut r,
                "crm.hubspot.reconcile_interval_secs",
                3600,
                86400 * 7,
            );
            Some(crate::crm::hubspot::config::HubSpotConfig {
                base_url,
                token,
                oauth,
                token_url,
                requests_per_10s,
                searches_per_second,
                page_size,
                search_page_size,
                mapping,
                overlap,
                associations_interval,
                reconcile_interval,
                webhook_secret,
                webhook_url,
                require_email: r.boolean("crm.hubspot.require_email").unwrap_or(false),
                breaker_failures: r.int("crm.hubspot.breaker_failures", 1, 1000).unwrap_or(5)
                    as u32,
                breaker_cooldown: secs(&mut r, "crm.hubspot.breaker_cooldown_secs", 15, 3600),
                logins,
            })
        } else {
            None
        };
        let hellohq = if is_hellohq || root.get("crm").and_then(|c| c.get("hellohq")).is_some() {
            let base_url = r.string("crm.hellohq.base_url");
            let base_url = match base_url {
                None => {
                    r.bad(
                        "crm.hellohq.base_url",
                        "required for crm.backend = \"hellohq\"",
                    );
                    String::new()
                }
                Some(u) => {
                    let u = u.trim_end_matches('/').to_owned();
                    let loopback_http = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
                        .iter()
                        .any(|p| u.starts_with(p));
                    if !u.starts_with("https://") && !loopback_http {
                        r.bad(
                            "crm.hellohq.base_url",
                            format!(
                                "\"{u}\" must be an https:// URL (plain http only on loopback)"
                            ),
                        );
                    }
                    u
                }
            };
            let token_url = r
                .string("crm.hellohq.token_url")
                .unwrap_or_else(|| format!("{base_url}/Token"));
            let credentials = match r.string("crm.hellohq.credentials").as_deref() {
                None | Some("env") => HelloHqCredentials::Env,
                Some(p) => HelloHqCredentials::File(resolve(p.strip_prefix("file:").unwrap_or(p))),
            };
            let token_auth = match r.string("crm.hellohq.token_auth").as_deref() {
                None | Some("basic") => TokenAuth::Basic,
                Some("body") => TokenAuth::Body,
                Some(other) => {
                    r.bad(
                        "crm.hellohq.token_auth",
                        format!("\"{other}\": expected \"basic\" or \"body\""),
                    );
                    TokenAuth::Basic
                }
            };
            let requests_per_minute = r
                .int("crm.hellohq.requests_per_minute", 1, 100_000)
                .unwrap_or(1000) as u32;
            let timeout = secs(&mut r, "crm.hellohq.timeout_secs", 30, 600);
            let page_size = r.int("crm.hellohq.page_size", 1, 1000).unwrap_or(1000) as u32;
            let overlap = secs(&mut r, "crm.hellohq.overlap_secs", 120, 86400);
            let reconcile_interval =
                secs(&mut r, "crm.hellohq.reconcile_interval_secs", 900, 86400);
            let membership_interval =
                secs(&mut r, "crm.hellohq.membership_interval_secs", 300, 86400);
            let breaker_failures =
                r.int("crm.hellohq.breaker_failures", 1, 1000).unwrap_or(5) as u32;
            let breaker_cooldown = secs(&mut r, "crm.hellohq.breaker_cooldown_secs", 15, 3600);
            let logins = r.string("crm.hellohq.logins").map(|p| resolve(&p));
            let mut v2 = Vec::new();
            for (i, name) in r
                .strings("crm.hellohq.v2")
                .unwrap_or_default()
                .into_iter()
                .enumerate()
            {
                let why = match name.to_lowercase().as_str() {
                    "subsystems" => None,
                    "companies" => None,
                    "leads" => Some("helloHQ v2 has no leads endpoint"),
                    "contacts" | "contactpersons" => Some(
                        "helloHQ v2 contact persons carry no companyId, so company membership would be lost",
                    ),
                    "users" => Some("helloHQ v2 users carry no groups, so their subsystems would be lost"),
                    "projects" => Some("helloHQ v2 projects carry no members or contact persons"),
                    _ => Some("not a helloHQ entity set crmgate reads"),
                };
                match why {
                    None => {
                        let canonical = if name.eq_ignore_ascii_case("subsystems") {
                            "Subsystems"
                        } else {
                            "Companies"
                        };
                        v2.push(canonical.to_owned());
                    }
                    Some(w) => r.bad(
                        &format!("crm.hellohq.v2[{i}]"),
                        format!("\"{name}\": {w}; it is read through v1"),
                    ),
                }
            }
            Some(HelloHqConfig {
                base_url,
                token_url,
                credentials,
                token_auth,
                requests_per_minute,
                timeout,
                page_size,
                overlap,
                reconcile_interval,
                membership_interval,
                breaker_failures,
                breaker_cooldown,
                v2,
                logins,
            })
        } else {
            None
        };
        let seed = ov
            .seed
            .clone()
            .or_else(|| r.string("crm.seed").map(|p| resolve(&p)));
        let poll_interval = secs(&mut r, "crm.poll_interval_secs", 30, 86400);
        // A [crm.hellohq] section is checked even when another backend is chosen.
        let backend = match (hellohq, hubspot) {
            (Some(h), _) if is_hellohq => Backend::HelloHq(Box::new(h)),
            (_, Some(h)) if is_hubspot => Backend::HubSpot(Box::new(h)),
            _ => Backend::Embedded,
        };

        // [folders]
        let global_scope = match r.string("folders.global_scope").as_deref() {
            None | Some("all") => GlobalScope::All,
            Some("subsystem") => GlobalScope::Subsystem,
            Some("off") => GlobalScope::Off,
            Some(other) => {
                r.bad(
                    "folders.global_scope",
                    format!("\"{other}\" is not one of \"all\", \"subsystem\", \"off\""),
                );
                GlobalScope::All
            }
        };
        let defaults = FolderRules::default();
        let rules = FolderRules {
            global_scope,
            excluded_types: r
                .strings("folders.excluded_types")
                .unwrap_or(defaults.excluded_types),
            owner_rule: r
                .boolean("folders.owner_rule")
                .unwrap_or(defaults.owner_rule),
            sync_tag: r.string("folders.sync_tag").filter(|s| !s.is_empty()),
        };
        let name = |r: &mut Reader<'_>, key: &str, default: &str| {
            let v = r.string(key).unwrap_or_else(|| default.into());
            if v.trim().is_empty() || v.len() > 255 {
                r.bad(key, "must be 1 to 255 characters");
            }
            v
        };
        let my_name = name(&mut r, "folders.my_name", "HQ My Contacts");
        let global_name = name(&mut r, "folders.global_name", "HQ Global Contacts");
        if my_name == global_name {
            r.bad("folders.global_name", "must differ from folders.my_name");
        }
        let placeholder = r
            .string("folders.placeholder_email_domain")
            .unwrap_or_else(|| "nomail.invalid".into());
        if !placeholder.is_empty()
            && crate::domain::dataset::check_email(&format!("x@{placeholder}")).is_err()
        {
            r.bad(
                "folders.placeholder_email_domain",
                format!("\"{placeholder}\" is not a domain"),
            );
        }

        let direction =
            |r: &mut Reader<'_>, key: &str, default: bool| match r.string(key).as_deref() {
                None => default,
                Some("read-write") => true,
                Some("read-only") => false,
                Some(other) => {
                    r.bad(
                        key,
                        format!("\"{other}\" is not \"read-write\" or \"read-only\""),
                    );
                    default
                }
            };
        let delete = |r: &mut Reader<'_>, key: &str| {
            use crate::domain::rules::DeletePolicy;
            match r.string(key).as_deref() {
                None | Some("hide") => DeletePolicy::Hide,
                Some("crm") => DeletePolicy::Crm,
                Some("deny") => DeletePolicy::Deny,
                Some(other) => {
                    r.bad(
                        key,
                        format!("\"{other}\" is not \"hide\", \"crm\" or \"deny\""),
                    );
                    DeletePolicy::Hide
                }
            }
        };
        let my_delete = delete(&mut r, "folders.my_delete");
        let global_delete = delete(&mut r, "folders.global_delete");
        let my_writable = direction(&mut r, "folders.my_direction", true);
        let global_writable = direction(&mut r, "folders.global_direction", false);

        // [mapping]
        let default_region = r
            .string("mapping.default_region")
            .unwrap_or_else(|| "DE".into());
        if default_region.parse::<phonenumber::country::Id>().is_err() {
            r.bad(
                "mapping.default_region",
                format!("\"{default_region}\" is not an ISO 3166 region code"),
            );
        }
        let policy = |r: &mut Reader<'_>, key: &str| {
            use crate::domain::mapping::FieldPolicy;
            match r.string(key).as_deref() {
                None | Some("shown") => FieldPolicy::Shown,
                Some("read-only") => FieldPolicy::ReadOnly,
                Some("hidden") => FieldPolicy::Hidden,
                Some(other) => {
                    r.bad(
                        key,
                        format!("\"{other}\" is not \"shown\", \"read-only\" or \"hidden\""),
                    );
                    FieldPolicy::Shown
                }
            }
        };
        let notes = policy(&mut r, "mapping.notes");
        let birthday = policy(&mut r, "mapping.birthday");

        // [auth]
        let auth = AuthConfig {
            max_failures: r.int("auth.max_failures", 1, 1000).unwrap_or(5) as u32,
            failure_window: secs(&mut r, "auth.failure_window_secs", 300, 86400),
            lockout: secs(&mut r, "auth.lockout_secs", 300, 86400),
            failure_delay: Duration::from_millis(
                r.int("auth.failure_delay_ms", 0, 2000).unwrap_or(250) as u64,
            ),
            account_max_failures: r.int("auth.account_max_failures", 1, 10_000).unwrap_or(10)
                as u32,
            account_lockout: secs(&mut r, "auth.account_lockout_secs", 60, 3600),
            max_tokens_per_user: r.int("auth.max_tokens_per_user", 1, 100_000).unwrap_or(100)
                as usize,
        };

        // [graph]
        let graph = GraphConfig {
            per_second: r
                .int("graph.requests_per_second", 1, 100_000)
                .unwrap_or(100) as u32,
            concurrent: r.int("graph.concurrent_requests", 1, 10_000).unwrap_or(16) as u32,
        };

        // [ews]
        let ews = EwsConfig {
            max_folder_ids: r.int("ews.max_folder_ids", 1, 1000).unwrap_or(64) as usize,
            max_item_ids: r.int("ews.max_item_ids", 1, 10_000).unwrap_or(1000) as usize,
            max_evaluations: r
                .int("ews.max_evaluations", 1000, 1 << 40)
                .unwrap_or(4_000_000) as u64,
            concurrent: r.int("ews.concurrent_requests", 1, 10_000).unwrap_or(8) as u32,
        };

        // [log]
        let format = match r.string("log.format").as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                r.bad(
                    "log.format",
                    format!("\"{other}\" is not \"text\" or \"json\""),
                );
                LogFormat::Text
            }
        };
        let level = r.string("log.level").unwrap_or_else(|| "info".into());
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            r.bad("log.level", format!("\"{level}\" is not a log filter"));
        }

        // [mirror]
        let mirror = if root.get("mirror").is_some() && r.boolean("mirror.enabled").unwrap_or(true)
        {
            let tenant = r.string("mirror.tenant").unwrap_or_default();
            if tenant.is_empty() {
                r.bad(
                    "mirror.tenant",
                    "required: the tenant id or domain of the mailboxes",
                );
            } else if ["common", "organizations", "consumers"].contains(&tenant.as_str()) {
                r.bad(
                    "mirror.tenant",
                    format!(
                        "\"{tenant}\": the client-credentials flow needs the tenant id or domain"
                    ),
                );
            }
            let client_id = r.string("mirror.client_id").unwrap_or_default();
            if client_id.is_empty() {
                r.bad("mirror.client_id", "required: the application (client) id");
            }
            use crate::mirror::config::{Credential, SecretSource};
            let source = |v: Option<String>| match v.as_deref() {
                None | Some("env") => SecretSource::Env,
                Some(p) => SecretSource::File(resolve(p.strip_prefix("file:").unwrap_or(p))),
            };
            let credential = match r.string("mirror.client_certificate") {
                Some(cert) => {
                    if r.get("mirror.client_secret").is_some() {
                        r.bad(
                            "mirror.client_secret",
                            "give client_secret or client_certificate, not both",
                        );
                    }
                    Credential::Certificate {
                        cert: resolve(cert.strip_prefix("file:").unwrap_or(&cert)),
                        key: source(r.string("mirror.client_key")),
                    }
                }
                None => {
                    if r.get("mirror.client_key").is_some() {
                        r.bad(
                            "mirror.client_key",
                            "a private key needs client_certificate (the certificate it belongs to)",
                        );
                    }
                    Credential::Secret(source(r.string("mirror.client_secret")))
                }
            };
            let mut m = crate::mirror::config::MirrorConfig::new(&tenant, &client_id, credential);
            m.my_name = my_name.clone();
            m.global_name = global_name.clone();
            let http_ok = |u: &str| {
                u.starts_with("https://")
                    || ["http://127.0.0.1", "http://localhost", "http://[::1]"]
                        .iter()
                        .any(|p| u.starts_with(p))
            };
            if let Some(u) = r.string("mirror.graph_url") {
                let u = u.trim_end_matches('/').to_owned();
                if !http_ok(&u) {
                    r.bad(
                        "mirror.graph_url",
                        format!("\"{u}\": https, or http on loopback (tests)"),
                    );
                }
                m.graph_url = u;
            }
            if let Some(u) = r.string("mirror.token_url") {
                if !http_ok(&u) {
                    r.bad(
                        "mirror.token_url",
                        format!("\"{u}\": https, or http on loopback (tests)"),
                    );
                }
                m.token_url = u;
            }
            match r.get("mirror.mailboxes") {
                None => {}
                Some(toml::Value::String(s)) if s == "all" => {}
                Some(toml::Value::Array(_)) => {
                    let list = r.strings("mirror.mailboxes").unwrap_or_default();
                    m.mailboxes = crate::mirror::config::Mailboxes::Only(
                        list.iter().map(|l| l.to_lowercase()).collect(),
                    );
                }
                Some(_) => r.bad("mirror.mailboxes", "expected \"all\" or a list of logins"),
            }
            match r.get("mirror.mailbox_of") {
                None => {}
                Some(toml::Value::Table(t)) => {
                    for (login, upn) in t {
                        match upn.as_str() {
                            Some(u) if u.contains('@') => {
                                m.mailbox_of.insert(login.to_lowercase(), u.to_owned());
                            }
                            _ => r.bad(
                                &format!("mirror.mailbox_of.{login}"),
                                "expected the mailbox's user principal name (name@domain)",
                            ),
                        }
                    }
                }
                Some(_) => r.bad("mirror.mailbox_of", "expected a table of login = \"upn\""),
            }
            if let Some(n) = r.string("mirror.my_folder_name") {
                m.my_name = n;
            }
            if let Some(n) = r.string("mirror.global_folder_name") {
                m.global_name = n;
            }
            for (key, name) in [
                ("mirror.my_folder_name", &m.my_name),
                ("mirror.global_folder_name", &m.global_name),
            ] {
                if name.trim().is_empty() || name.len() > 255 {
                    r.errors.push(format!("{key}: 1 to 255 characters"));
                }
            }
            if m.my_name.eq_ignore_ascii_case(&m.global_name) {
                r.bad(
                    "mirror.global_folder_name",
                    "must differ from the My folder's name",
                );
            }
            if let Some(n) = r.string("mirror.parent_folder_name") {
                if n.trim().is_empty() || n.len() > 255 {
                    r.errors
                        .push("mirror.parent_folder_name: 1 to 255 characters".into());
                } else if n.eq_ignore_ascii_case(&m.my_name)
                    || n.eq_ignore_ascii_case(&m.global_name)
                {
                    r.bad(
                        "mirror.parent_folder_name",
                        "must differ from the names of the folders it holds",
                    );
                }
                m.parent_name = Some(n);
            }
            m.requests_per_window = r
                .int("mirror.requests_per_window", 1, 1_000_000)
                .unwrap_or(10_000) as u32;
            m.window = secs(&mut r, "mirror.window_secs", 600, 86400);
            m.concurrent_per_mailbox =
                r.int("mirror.concurrent_per_mailbox", 1, 64).unwrap_or(4) as u32;
            m.concurrent_total = r.int("mirror.concurrent_total", 1, 100_000).unwrap_or(256) as u32;
            m.requests_per_10s = r
                .int("mirror.requests_per_10s", 1, 10_000_000)
                .unwrap_or(130_000) as u32;
            m.batch_size = r.int("mirror.batch_size", 1, 20).unwrap_or(20) as usize;
            m.parallel_mailboxes =
                r.int("mirror.parallel_mailboxes", 1, 100_000).unwrap_or(64) as usize;
            m.poll_interval = secs(&mut r, "mirror.poll_interval_secs", 30, 86400);
            m.repair_interval = secs(&mut r, "mirror.repair_interval_secs", 6 * 3600, 86400 * 30);
            m.failure_backoff = secs(&mut r, "mirror.failure_backoff_secs", 300, 86400);
            m.timeout = secs(&mut r, "mirror.timeout_secs", 60, 600);
            Some(m)
        } else {
            r.get("mirror");
            None
        };

        r.unknown_keys();
        if !r.errors.is_empty() {
            return Err(ConfigErrors(r.errors));
        }
        let listen = listen.ok_or_else(|| ConfigErrors(vec!["server.listen: missing".into()]))?;
        Ok(Config {
            server: ServerConfig {
                listen,
                tls,
                hostnames,
                max_body_bytes,
                max_header_bytes,
                request_timeout,
                header_timeout,
                max_connections,
                shutdown_grace,
                max_answer_bytes,
                max_request_memory_bytes,
                max_connections_per_ip,
                per_ip_limits_loopback,
                heavy_workers,
            },
            data_dir,
            store_engine,
            crm: CrmConfig {
                backend,
                seed,
                poll_interval,
            },
            folders: FolderConfig {
                my_delete,
                global_delete,
                my_writable,
                global_writable,
                mapping: crate::domain::mapping::MappingRules {
                    default_region: default_region.clone(),
                    placeholder_domain: (!placeholder.is_empty()).then(|| placeholder.clone()),
                    notes,
                    birthday,
                },
                rules,
                my_name,
                global_name,
                placeholder_email_domain: (!placeholder.is_empty()).then_some(placeholder),
            },
            auth,
            graph,
            ews,
            log: LogConfig { format, level },
            mirror,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigErrors> {
        Config::parse(s, Path::new("/etc/crmgate"), &Overrides::default())
    }

    #[test]
    fn mirror_credentials_are_a_secret_or_a_certificate_and_key() {
        use crate::mirror::config::{Credential, SecretSource};
        let head = "[mirror]\ntenant = \"t.example\"\nclient_id = \"c\"\n";
        let c = parse(head).expect("secret from env by default");
        assert_eq!(
            c.mirror.expect("mirror").credential,
            Credential::Secret(SecretSource::Env)
        );
        let c = parse(&format!(
            "{head}client_certificate = \"certs/app.pem\"\nclient_key = \"file:keys/app.pem\"\n"
        ))
        .expect("certificate");
        assert_eq!(
            c.mirror.expect("mirror").credential,
            Credential::Certificate {
                cert: Path::new("/etc/crmgate/certs/app.pem").into(),
                key: SecretSource::File(Path::new("/etc/crmgate/keys/app.pem").into()),
            }
        );
        let errs = parse(&format!(
            "{head}client_certificate = \"a.pem\"\nclient_secret = \"env\"\n"
        ))
        .expect_err("both");
        assert!(
            errs.0
                .join("\n")
                .contains("mirror.client_secret: give client_secret or client_certificate"),
            "{errs:?}"
        );
        let errs = parse(&format!("{head}client_key = \"env\"\n")).expect_err("key alone");
        assert!(
            errs.0
                .join("\n")
                .contains("mirror.client_key: a private key needs"),
            "{errs:?}"
        );
    }

    #[test]
    fn mirror_folders_go_to_the_top_level_or_under_a_named_folder() {
        let head = "[mirror]\ntenant = \"t.example\"\nclient_id = \"c\"\n";
        let m = parse(head).expect("default").mirror.expect("mirror");
        assert_eq!(m.parent_name, None);
        let m = parse(&format!("{head}parent_folder_name = \"HQ\"\n"))
            .expect("named")
            .mirror
            .expect("mirror");
        assert_eq!(m.parent_name.as_deref(), Some("HQ"));
        for (value, says) in [
            (
                "\"hq my contacts\"",
                "must differ from the names of the folders it holds",
            ),
            ("\" \"", "1 to 255 characters"),
            ("3", "mirror.parent_folder_name"),
        ] {
            let errs = parse(&format!("{head}parent_folder_name = {value}\n")).expect_err(value);
            assert!(errs.0.join("\n").contains(says), "{value}: {errs:?}");
        }
    }

    #[test]
    fn hellohq_backend_settings_are_checked_together() {
        let errs = parse(
            "[crm]\nbackend = \"hellohq\"\n[crm.hellohq]\nv2 = [\"companies\", \"leads\"]\npage_size = 5000\nbogus = 1\ntoken_auth = \"query\"\n",
        )
        .expect_err("invalid");
        let text = errs.0.join("\n");
        assert!(text.contains("crm.hellohq.base_url: required"), "{text}");
        assert!(
            text.contains("crm.hellohq.v2[1]: \"leads\": helloHQ v2 has no leads endpoint"),
            "{text}"
        );
        assert!(
            text.contains("crm.hellohq.page_size: 5000 is out of range"),
            "{text}"
        );
        assert!(text.contains("crm.hellohq.bogus: unknown key"), "{text}");
        assert!(
            text.contains("crm.hellohq.token_auth: \"query\": expected \"basic\" or \"body\""),
            "{text}"
        );
        let errs = parse(
            "[crm]\nbackend = \"hellohq\"\n[crm.hellohq]\nbase_url = \"http://hq.example\"\n",
        )
        .expect_err("plain http off loopback");
        assert!(
            errs.0.join("\n").contains("must be an https:// URL"),
            "{errs:?}"
        );
        let c = parse(
            "[crm]\nbackend = \"hellohq\"\n[crm.hellohq]\nbase_url = \"https://api.hellohq.io/\"\nv2 = [\"Companies\"]\n",
        )
        .expect("valid");
        let Backend::HelloHq(h) = c.crm.backend else {
            panic!("hellohq settings")
        };
        assert_eq!(
            h.token_auth,
            TokenAuth::Basic,
            "the developer guide's way by default"
        );
        assert_eq!(h.base_url, "https://api.hellohq.io");
        assert_eq!(h.token_url, "https://api.hellohq.io/Token");
        assert_eq!(h.requests_per_minute, 1000);
        assert_eq!(h.v2, vec!["Companies".to_owned()]);
    }

    #[test]
    fn defaults_follow_hellohq() {
        let c = parse("").expect("empty config is valid");
        assert_eq!(c.folders.rules, FolderRules::default());
        assert_eq!(c.folders.my_name, "HQ My Contacts");
        assert_eq!(c.folders.global_name, "HQ Global Contacts");
        assert_eq!(
            c.folders.placeholder_email_domain.as_deref(),
            Some("nomail.invalid")
        );
        assert_eq!(c.server.tls, TlsMode::SelfSigned);
        assert_eq!(c.data_dir, PathBuf::from("/etc/crmgate/data"));
    }

    #[test]
    fn reports_every_error_at_once() {
        let e = parse(
            r#"
            [server]
            listen = "nowhere"
            lisen = 1
            [folders]
            global_scope = "planet"
            owner_rule = "yes"
            [crm]
            backend = "sap"
            [extra]
            x = 1
            "#,
        )
        .expect_err("invalid");
        let all = e.0.join("\n");
        for want in [
            "server.listen: \"nowhere\" is not an address",
            "server.lisen: unknown key",
            "folders.global_scope: \"planet\"",
            "folders.owner_rule: expected true or false",
            "crm.backend: unknown backend \"sap\"",
            "extra: unknown key",
        ] {
            assert!(all.contains(want), "missing {want:?} in\n{all}");
        }
        assert_eq!(e.0.len(), 6, "{all}");
    }

    #[test]
    fn plain_http_only_on_loopback() {
        let e = parse("[server]\nlisten = \"0.0.0.0:8080\"\ntls = \"off\"").expect_err("refused");
        assert!(e.0[0].contains("loopback"), "{:?}", e.0);
        let ov = Overrides {
            insecure_http: true,
            listen: Some("127.0.0.1:8080".into()),
            ..Default::default()
        };
        let c = Config::parse("", Path::new("."), &ov).expect("loopback ok");
        assert_eq!(c.server.tls, TlsMode::Off);
    }

    #[test]
    fn empty_placeholder_domain_disables() {
        let c = parse("[folders]\nplaceholder_email_domain = \"\"").expect("valid");
        assert_eq!(c.folders.placeholder_email_domain, None);
    }
}
