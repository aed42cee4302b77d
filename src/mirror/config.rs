//! The `[mirror]` section: which mailboxes are filled, where, with which credentials and within
//! which budgets. Parsed and checked by `config`; plain data here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Where a secret (client secret, private key) comes from (never from the config file itself, never logged).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// `CRMGATE_MIRROR_CLIENT_SECRET`.
    Env,
    /// A file holding only the secret (trailing whitespace ignored).
    File(PathBuf),
}

impl SecretSource {
    /// The secret (trimmed), or why it cannot be read; messages name `setting` and `env`.
    pub fn read(&self, setting: &str, env: &str) -> Result<String, String> {
        let s = match self {
            SecretSource::Env => std::env::var(env)
                .map_err(|_| format!("{setting} = \"env\" but {env} is not set"))?,
            SecretSource::File(p) => std::fs::read_to_string(p)
                .map_err(|e| format!("{setting}: {}: cannot read: {e}", p.display()))?,
        };
        let s = s.trim().to_owned();
        if s.is_empty() {
            return Err(format!("{setting}: it is empty"));
        }
        Ok(s)
    }
}

/// How the app proves its identity at the token endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// A client secret.
    Secret(SecretSource),
    /// A certificate registered on the app (PEM file) and its RSA private key (PEM, from a
    /// file or `CRMGATE_MIRROR_CLIENT_KEY`): every token request carries a signed assertion.
    Certificate {
        /// The certificate's PEM file.
        cert: PathBuf,
        /// The private key.
        key: SecretSource,
    },
}

/// Which users get a mirrored mailbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mailboxes {
    /// Every active crmgate user.
    All,
    /// These logins (lower-cased).
    Only(Vec<String>),
}

/// The mailbox mirror's settings (`[mirror]`, docs/mirror.md).
#[derive(Clone, Debug)]
pub struct MirrorConfig {
    /// Graph's base URL including the version (`https://graph.microsoft.com/v1.0`).
    pub graph_url: String,
    /// The token endpoint (default: Microsoft's for the tenant).
    pub token_url: String,
    /// Tenant id or domain (the client-credentials flow cannot use `common`).
    pub tenant: String,
    /// The application (client) id.
    pub client_id: String,
    /// The app's credential.
    pub credential: Credential,
    /// Which users.
    pub mailboxes: Mailboxes,
    /// Mailbox (UPN) per login where it is not the login (keys lower-cased).
    pub mailbox_of: BTreeMap<String, String>,
    /// Folder names in the mailbox (default: the view's names).
    pub my_name: String,
    /// Folder name of Global.
    pub global_name: String,
    /// Where the folders go: `None` directly under the mailbox's default Contacts folder (the
    /// top level of its contact folders); a name: under one folder of that name crmgate makes
    /// there.
    pub parent_name: Option<String>,
    /// Requests per mailbox per window (Microsoft: 10,000 per 10 minutes).
    pub requests_per_window: u32,
    /// The window.
    pub window: Duration,
    /// Requests in flight per mailbox (Microsoft: 4).
    pub concurrent_per_mailbox: u32,
    /// Requests in flight across all mailboxes.
    pub concurrent_total: u32,
    /// Requests per 10 seconds across all mailboxes (Microsoft: 130,000 per app).
    pub requests_per_10s: u32,
    /// Items per `$batch` (at most 20).
    pub batch_size: usize,
    /// Mailboxes worked on at once.
    pub parallel_mailboxes: usize,
    /// How often the mirrored folders are read back (delta) for users' edits.
    pub poll_interval: Duration,
    /// How often each mailbox is compared in full with what it must hold.
    pub repair_interval: Duration,
    /// A mailbox that failed (missing, no consent, repeated errors) is tried again after this.
    pub failure_backoff: Duration,
    /// Timeout of one HTTP request to Graph.
    pub timeout: Duration,
}

impl MirrorConfig {
    /// Defaults for a tenant and app (tests and the config parser start from these).
    pub fn new(tenant: &str, client_id: &str, credential: Credential) -> MirrorConfig {
        MirrorConfig {
            graph_url: "https://graph.microsoft.com/v1.0".into(),
            token_url: format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"),
            tenant: tenant.into(),
            client_id: client_id.into(),
            credential,
            mailboxes: Mailboxes::All,
            mailbox_of: BTreeMap::new(),
            my_name: "HQ My Contacts".into(),
            global_name: "HQ Global Contacts".into(),
            parent_name: None,
            requests_per_window: 10_000,
            window: Duration::from_secs(600),
            concurrent_per_mailbox: 4,
            concurrent_total: 256,
            requests_per_10s: 130_000,
            batch_size: 20,
            parallel_mailboxes: 64,
            poll_interval: Duration::from_secs(30),
            repair_interval: Duration::from_secs(6 * 3600),
            failure_backoff: Duration::from_secs(300),
            timeout: Duration::from_secs(60),
        }
    }

    /// The mailbox of a login, if it is mirrored.
    pub fn mailbox(&self, login: &str) -> Option<String> {
        let lower = login.to_lowercase();
        if let Mailboxes::Only(list) = &self.mailboxes {
            if !list.contains(&lower) {
                return None;
            }
        }
        Some(
            self.mailbox_of
                .get(&lower)
                .cloned()
                .unwrap_or_else(|| login.to_owned()),
        )
    }
}
