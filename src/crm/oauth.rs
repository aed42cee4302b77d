//! The OAuth2 refresh-token grant of remote-CRM backends (helloHQ, HubSpot): the access token
//! in use, and the refresh token, which a CRM may rotate. A rotated refresh token is kept in
//! memory at once (this process goes on working whatever the disk says) and durably in the
//! store, tied to the configured token it descends from, so that after a restart the rotated
//! one is used — unless an admin configured a new one since (authorized crmgate again), which
//! then wins.

use crate::store::{KvStore, Store};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// OAuth2 client credentials and refresh token.
#[derive(Clone, serde::Deserialize)]
pub struct Credentials {
    /// App (client) id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: String,
    /// Refresh token.
    pub refresh_token: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// From `{PREFIX}_CLIENT_ID`, `{PREFIX}_CLIENT_SECRET`, `{PREFIX}_REFRESH_TOKEN`; `key`
    /// names the setting in errors.
    pub fn from_env(prefix: &str, key: &str) -> Result<Credentials, String> {
        let var = |k: &str| {
            let name = format!("{prefix}_{k}");
            std::env::var(&name)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("{key}: environment variable {name} is not set"))
        };
        Ok(Credentials {
            client_id: var("CLIENT_ID")?,
            client_secret: var("CLIENT_SECRET")?,
            refresh_token: var("REFRESH_TOKEN")?,
        })
    }

    /// From a JSON file `{"client_id", "client_secret", "refresh_token"}`.
    pub fn from_file(path: &std::path::Path, key: &str) -> Result<Credentials, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("{key}: {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| {
            format!(
                "{key}: {}: expected {{\"client_id\", \"client_secret\", \"refresh_token\"}}: {e}",
                path.display()
            )
        })
    }
}

/// How the client id and secret travel in a token request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// `Authorization: Basic base64(client_id:client_secret)` (RFC 6749 `client_secret_basic`).
    Basic,
    /// `client_id` and `client_secret` as form fields (`client_secret_post`).
    Body,
}

/// Why no access token was had.
#[derive(Debug)]
pub enum TokenFailure {
    /// The token endpoint could not be reached.
    Unreachable(String),
    /// It answered something else than a token.
    Refused {
        /// HTTP status.
        status: u16,
        /// What it said, or what was wrong with the answer.
        message: String,
    },
}

/// A rotated refresh token, with the configured token it descends from.
#[derive(serde::Serialize, serde::Deserialize)]
struct Rotated {
    configured: String,
    token: String,
}

struct Tokens {
    access: Option<String>,
    refresh: String,
}

fn fingerprint(token: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(token.as_bytes());
    d.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// One CRM's tokens.
pub struct Refresher {
    crm: &'static str,
    token_url: String,
    creds: Credentials,
    auth: ClientAuth,
    tokens: tokio::sync::Mutex<Tokens>,
    store: Option<Arc<Store>>,
    key: Vec<u8>,
}

impl Refresher {
    /// Tokens for `crm` (its name in messages) from `creds`; with a `store`, a rotated refresh
    /// token is kept under `key` and used after a restart.
    pub fn new(
        crm: &'static str,
        token_url: &str,
        creds: Credentials,
        auth: ClientAuth,
        store: Option<Arc<Store>>,
        key: &[u8],
    ) -> Result<Refresher, String> {
        let mut refresh = creds.refresh_token.clone();
        if let Some(st) = &store {
            if let Some(b) = st.get(key).map_err(|e| e.to_string())? {
                match serde_json::from_slice::<Rotated>(&b) {
                    Ok(r) if r.configured == fingerprint(&creds.refresh_token) => refresh = r.token,
                    Ok(_) => tracing::info!(
                        crm,
                        "the configured refresh token changed; using it instead of the rotated \
                         one kept in the data dir"
                    ),
                    Err(e) => return Err(format!("{}: {e}", String::from_utf8_lossy(key))),
                }
            }
        }
        Ok(Refresher {
            crm,
            token_url: token_url.to_owned(),
            creds,
            auth,
            tokens: tokio::sync::Mutex::new(Tokens {
                access: None,
                refresh,
            }),
            store,
            key: key.to_vec(),
        })
    }

    /// The access token: the one in use, or (with `refresh`, or none yet) a new one from the
    /// token endpoint, counted in `refreshes`.
    pub async fn access_token(
        &self,
        http: &reqwest::Client,
        refresh: bool,
        refreshes: &AtomicU64,
    ) -> Result<String, TokenFailure> {
        let mut tok = self.tokens.lock().await;
        if !refresh {
            if let Some(t) = tok.access.as_ref() {
                return Ok(t.clone());
            }
        }
        refreshes.fetch_add(1, Ordering::Relaxed);
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", tok.refresh.as_str()),
        ];
        let mut req = http.post(&self.token_url);
        match self.auth {
            ClientAuth::Basic => {
                req = req.basic_auth(&self.creds.client_id, Some(&self.creds.client_secret))
            }
            ClientAuth::Body => {
                form.push(("client_id", self.creds.client_id.as_str()));
                form.push(("client_secret", self.creds.client_secret.as_str()));
            }
        }
        let crm = self.crm;
        let resp = req.form(&form).send().await.map_err(|e| {
            TokenFailure::Unreachable(format!("{crm} token endpoint: {}", e.without_url()))
        })?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status != 200 {
            let why = body
                .get("error")
                .or_else(|| body.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("no reason given");
            tracing::error!(crm, status, why, "the token refresh was refused");
            return Err(TokenFailure::Refused {
                status,
                message: format!("{crm} token endpoint answered {status} ({why})"),
            });
        }
        let t = body
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| TokenFailure::Refused {
                status,
                message: format!("{crm} token answer without access_token"),
            })?
            .to_owned();
        // A new refresh token replaces the one just used, which may no longer work: keep it
        // (in memory first, so this process goes on working whatever the disk says) and
        // durably, or a restart would be locked out.
        if let Some(rotated) = body
            .get("refresh_token")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty() && *r != tok.refresh)
        {
            tok.refresh = rotated.to_owned();
            let kept = match &self.store {
                Some(store) => {
                    let record = Rotated {
                        configured: fingerprint(&self.creds.refresh_token),
                        token: rotated.to_owned(),
                    };
                    let (store, key) = (store.clone(), self.key.clone());
                    tokio::task::spawn_blocking(move || {
                        let bytes = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
                        store.put(&key, &bytes).map_err(|e| e.to_string())
                    })
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r)
                }
                None => Ok(()),
            };
            match kept {
                Ok(()) => tracing::info!(crm, "the refresh token was rotated; the new one is kept"),
                Err(e) => tracing::error!(
                    crm,
                    error = %e,
                    "the refresh token was rotated and could not be saved: after a restart \
                     crmgate must be authorized again"
                ),
            }
        }
        tok.access = Some(t.clone());
        Ok(t)
    }
}
