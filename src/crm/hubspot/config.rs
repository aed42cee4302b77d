//! `[crm.hubspot]`: the HubSpot backend's own settings (parsed and checked with the rest of the
//! configuration in `crate::config`).

use super::map::Mapping;
use std::path::PathBuf;
use std::time::Duration;

/// Where the private app's token comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HubSpotToken {
    /// `CRMGATE_HUBSPOT_TOKEN` (read at start-up).
    Env,
    /// A file holding the token (and nothing else but whitespace).
    File(PathBuf),
}

/// `[crm.hubspot]`: the HubSpot backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubSpotConfig {
    /// API root (`https://api.hubapi.com`; http only on loopback, for tests).
    pub base_url: String,
    /// The private app's token (unless `oauth` is set).
    pub token: HubSpotToken,
    /// An OAuth app's client id, secret and refresh token instead of a private app's token:
    /// `Env` reads `CRMGATE_HUBSPOT_CLIENT_ID`, `…_CLIENT_SECRET`, `…_REFRESH_TOKEN`; a file
    /// holds `{"client_id", "client_secret", "refresh_token"}`.
    pub oauth: Option<HubSpotToken>,
    /// The OAuth token endpoint (default `{base_url}/oauth/v1/token`).
    pub token_url: String,
    /// Client-side budget: requests in any 10 seconds (HubSpot's Free/Starter burst is 100).
    pub requests_per_10s: u32,
    /// Client-side budget of the search endpoint, which HubSpot limits on its own: searches
    /// in any second (default 4).
    pub searches_per_second: u32,
    /// Records per list page and inputs per batch call (1–100, default 100).
    pub page_size: u32,
    /// Records per search page (1–200, default 200).
    pub search_page_size: u32,
    /// Portal-specific meanings (owner properties, closing stages).
    pub mapping: Mapping,
    /// How far back each change search reaches before the newest modification seen, so
    /// records that reach HubSpot's search late are still found (default 60 s).
    pub overlap: Duration,
    /// How often the associations of every contact and deal are read again (association
    /// edits need not move a record's modification time; default 1,800 s).
    pub associations_interval: Duration,
    /// How often the whole portal is read again (catches restores and records deleted for
    /// good; default 21,600 s = 6 h).
    pub reconcile_interval: Duration,
    /// Where the app's client secret comes from, for verifying webhook deliveries; `None`:
    /// webhooks are off and crmgate only polls.
    pub webhook_secret: Option<HubSpotToken>,
    /// The public URL HubSpot delivers webhooks to, as configured in the app (the signature
    /// covers it); `None`: taken from the request (scheme of the listener, `Host`, path).
    pub webhook_url: Option<String>,
    /// Failed calls in a row after which calls pause (default 5).
    pub breaker_failures: u32,
    /// How long they pause (default 15 s).
    pub breaker_cooldown: Duration,
    /// Create only contacts with a valid e-mail address (HubSpot refuses some without one,
    /// depending on the portal's settings); default off.
    pub require_email: bool,
    /// Local sign-in data for HubSpot users (passwords, roles), the same file format as
    /// `crm.hellohq.logins`.
    pub logins: Option<PathBuf>,
}

impl HubSpotConfig {
    /// The token, read from where the configuration says.
    pub fn read_token(&self) -> Result<String, String> {
        read_secret(&self.token, "crm.hubspot.token", "CRMGATE_HUBSPOT_TOKEN")
    }

    /// The OAuth credentials, when HubSpot is used as an OAuth app.
    pub fn read_oauth(&self) -> Result<Option<crate::crm::oauth::Credentials>, String> {
        use crate::crm::oauth::Credentials;
        self.oauth
            .as_ref()
            .map(|src| match src {
                HubSpotToken::Env => Credentials::from_env("CRMGATE_HUBSPOT", "crm.hubspot.oauth"),
                HubSpotToken::File(p) => Credentials::from_file(p, "crm.hubspot.oauth"),
            })
            .transpose()
    }

    /// The app's client secret for webhooks, if they are on.
    pub fn read_webhook_secret(&self) -> Result<Option<String>, String> {
        self.webhook_secret
            .as_ref()
            .map(|s| {
                read_secret(
                    s,
                    "crm.hubspot.webhook_secret",
                    "CRMGATE_HUBSPOT_APP_SECRET",
                )
            })
            .transpose()
    }
}

fn read_secret(from: &HubSpotToken, key: &str, env: &str) -> Result<String, String> {
    let t = match from {
        HubSpotToken::Env => std::env::var(env).map_err(|_| format!("{key}: {env} is not set"))?,
        HubSpotToken::File(p) => {
            std::fs::read_to_string(p).map_err(|e| format!("{key}: {}: {e}", p.display()))?
        }
    };
    let t = t.trim().to_owned();
    if t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{key}: not a secret"));
    }
    Ok(t)
}
