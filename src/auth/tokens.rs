//! Bearer tokens issued by crmgate for the Graph face: opaque random strings, stored only as
//! SHA-256 hashes (`tok/{hex}` in the store) with user, scopes and expiry; revocable.

use crate::store::{KvStore, Op, Store, StoreError};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// What a token grants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// User id.
    pub user: String,
    /// Login.
    pub login: String,
    /// Scopes (`Contacts.Read`, `Contacts.ReadWrite`).
    pub scopes: Vec<String>,
    /// Expiry, unix seconds.
    pub exp: u64,
}

/// The scopes crmgate knows.
pub const SCOPES: &[&str] = &["Contacts.Read", "Contacts.ReadWrite"];

/// Token issuing and checking over the store.
pub struct Tokens {
    store: Arc<Store>,
}

fn key(token: &str) -> Vec<u8> {
    let d = Sha256::digest(token.as_bytes());
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!("tok/{hex}").into_bytes()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Reads the scope names out of an OAuth `scope` parameter (`api://x/Contacts.Read offline_access`).
pub fn parse_scopes(s: &str) -> Vec<String> {
    let mut out: Vec<String> = s
        .split([' ', ','])
        .filter_map(|x| x.rsplit('/').next())
        .filter(|x| SCOPES.contains(x))
        .map(str::to_owned)
        .collect();
    out.sort();
    out.dedup();
    out
}

impl Tokens {
    /// Tokens kept in `store`.
    pub fn new(store: Arc<Store>) -> Tokens {
        Tokens { store }
    }

    /// Issues a token; returns it (shown once, never stored) and its grant.
    pub fn issue(
        &self,
        user: &str,
        login: &str,
        scopes: &[String],
        ttl_secs: u64,
    ) -> Result<(String, TokenInfo), StoreError> {
        let raw: [u8; 32] = rand::random();
        let token = format!(
            "cgt_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        );
        let info = TokenInfo {
            user: user.into(),
            login: login.into(),
            scopes: scopes.to_vec(),
            exp: now() + ttl_secs,
        };
        let body = serde_json::to_vec(&info).map_err(|e| StoreError::Engine(e.to_string()))?;
        self.store.apply(vec![Op::Put(key(&token), body)])?;
        Ok((token, info))
    }

    /// The grant of a valid, unexpired token.
    pub fn verify(&self, token: &str) -> Option<TokenInfo> {
        if token.len() > 200 {
            return None;
        }
        let v = self.store.get(&key(token)).ok()??;
        let info: TokenInfo = serde_json::from_slice(&v).ok()?;
        (info.exp > now()).then_some(info)
    }

    /// Revokes a token; false if it was unknown.
    pub fn revoke(&self, token: &str) -> Result<bool, StoreError> {
        let k = key(token);
        if self.store.get(&k)?.is_none() {
            return Ok(false);
        }
        self.store.apply(vec![Op::Delete(k)])?;
        Ok(true)
    }
}

/// Parses a lifetime like `90s`, `30m`, `1h`, `7d`.
pub fn parse_ttl(s: &str) -> Option<u64> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = n.parse().ok()?;
    Some(
        n * match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_verify_revoke() {
        let t = Tokens::new(Arc::new(Store::memory()));
        let (tok, info) = t
            .issue("u1", "a@x", &["Contacts.Read".into()], 3600)
            .expect("issue");
        assert_eq!(t.verify(&tok), Some(info));
        assert_eq!(t.verify("cgt_nope"), None);
        assert!(t.revoke(&tok).expect("revoke"));
        assert_eq!(t.verify(&tok), None);
        let (old, _) = t.issue("u1", "a@x", &[], 0).expect("issue");
        assert_eq!(t.verify(&old), None, "expired");
        assert_eq!(
            parse_scopes("api://hq/Contacts.ReadWrite offline_access Contacts.Read"),
            vec!["Contacts.Read", "Contacts.ReadWrite"]
        );
        assert_eq!(parse_ttl("1h"), Some(3600));
        assert_eq!(parse_ttl("x"), None);
    }
}
