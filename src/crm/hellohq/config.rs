//! `[crm.hellohq]`: the helloHQ backend's own settings (parsed and checked with the rest of
//! the configuration in `crate::config`).

use std::path::PathBuf;
use std::time::Duration;

/// Where the helloHQ OAuth2 credentials come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HelloHqCredentials {
    /// `CRMGATE_HELLOHQ_CLIENT_ID`, `CRMGATE_HELLOHQ_CLIENT_SECRET`,
    /// `CRMGATE_HELLOHQ_REFRESH_TOKEN` (read at start-up).
    Env,
    /// A JSON file `{"client_id", "client_secret", "refresh_token"}`.
    File(PathBuf),
}

/// How client credentials travel in a token request (`crm.hellohq.token_auth`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenAuth {
    /// `Authorization: Basic base64(client_id:client_secret)` (the default).
    Basic,
    /// `client_id` and `client_secret` as form fields of the body.
    Body,
}

/// `[crm.hellohq]`: the helloHQ backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelloHqConfig {
    /// API root, e.g. `https://api.hellohq.io` (the `/v1/…` paths are appended).
    pub base_url: String,
    /// OAuth2 token endpoint (default `{base_url}/Token`).
    pub token_url: String,
    /// Where the credentials are read from.
    pub credentials: HelloHqCredentials,
    /// How the token request carries the client id and secret: HTTP Basic (RFC 6749
    /// `client_secret_basic`, what helloHQ's developer guide requires) or form fields
    /// (`client_secret_post`).
    pub token_auth: TokenAuth,
    /// Client-side request budget per credential and minute.
    pub requests_per_minute: u32,
    /// Time allowed for one HTTP request.
    pub timeout: Duration,
    /// Entities per list request (`$top`).
    pub page_size: u32,
    /// How far each `UpdatedOn` poll reaches back behind its cursor.
    pub overlap: Duration,
    /// How often all ids are listed to find hard deletes.
    pub reconcile_interval: Duration,
    /// How often membership collections are re-read in full.
    pub membership_interval: Duration,
    /// Consecutive failures that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long the open breaker fails calls fast before one probe.
    pub breaker_cooldown: Duration,
    /// v2 REST resources read instead of v1 (`"subsystems"`, `"companies"`: the ones where v2
    /// carries every field crmgate maps).
    pub v2: Vec<String>,
    /// Local sign-in data for helloHQ users (passwords, roles), a JSON file
    /// `{"users":[{"login","password"|"password_hash","role"}]}`.
    pub logins: Option<PathBuf>,
}
