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
    /// The token.
    pub token: HubSpotToken,
    /// Client-side budget: requests in any 10 seconds (HubSpot's Free/Starter burst is 100).
    pub requests_per_10s: u32,
    /// Portal-specific meanings (owner properties, closing stages).
    pub mapping: Mapping,
    /// How far back each change search reaches before the newest modification seen, so
    /// records that reach HubSpot's search late are still found (default 60 s).
    pub overlap: Duration,
    /// How often the associations of every contact and deal are read again (association
    /// edits need not move a record's modification time; default 600 s).
    pub associations_interval: Duration,
    /// How often the whole portal is read again (catches restores and records deleted for
    /// good; default 3,600 s).
    pub reconcile_interval: Duration,
    /// Local sign-in data for HubSpot users (passwords, roles), the same file format as
    /// `crm.hellohq.logins`.
    pub logins: Option<PathBuf>,
}

impl HubSpotConfig {
    /// The token, read from where the configuration says.
    pub fn read_token(&self) -> Result<String, String> {
        let t = match &self.token {
            HubSpotToken::Env => std::env::var("CRMGATE_HUBSPOT_TOKEN")
                .map_err(|_| "crm.hubspot.token: CRMGATE_HUBSPOT_TOKEN is not set".to_owned())?,
            HubSpotToken::File(p) => std::fs::read_to_string(p)
                .map_err(|e| format!("crm.hubspot.token: {}: {e}", p.display()))?,
        };
        let t = t.trim().to_owned();
        if t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("crm.hubspot.token: not a token".into());
        }
        Ok(t)
    }
}
