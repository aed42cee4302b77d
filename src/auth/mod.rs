//! Credentials → [`Principal`]: Basic auth against the user directory (argon2 hashes), a
//! short-lived cache of verified credentials so a keep-alive client does not pay for argon2
//! on every request, and failure throttling per source address and per account.
//!
//! A failed login costs one argon2 verification whether or not the login exists (an unknown,
//! inactive or password-less login is checked against a dummy hash), so the answer time does
//! not tell which logins are real.
//!
//! May import domain and store; the user directory is passed in (it lives in the replica).

pub mod basic;
pub mod limit;
pub mod logins;
pub mod throttle;
pub mod tokens;

use crate::domain::{Role, User, UserId};
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use basic::{AuthFailure, Authenticator};
pub use throttle::{Throttle, Verdict};

/// A signed-in user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// User id.
    pub user: UserId,
    /// Login.
    pub login: String,
    /// Role.
    pub role: Role,
}

impl Principal {
    /// True for admins.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// Hashes a password with argon2id and a random salt (PHC string).
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Checks a password against a PHC string.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash of a password nobody knows, made once with the same parameters as real hashes.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let secret: [u8; 16] = rand::random();
        let password: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        hash_password(&password).unwrap_or_default()
    })
}

static DUMMY_VERIFICATIONS: AtomicU64 = AtomicU64::new(0);

/// Verifications done against the dummy hash since start (process-wide; for tests).
pub fn dummy_verifications() -> u64 {
    DUMMY_VERIFICATIONS.load(Ordering::Relaxed)
}

/// Splits an `Authorization: Basic …` header value into login and password.
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (login, password) = text.split_once(':')?;
    Some((login.to_owned(), password.to_owned()))
}

const CACHE_TTL: Duration = Duration::from_secs(300);
const CACHE_MAX: usize = 100_000;

/// Verified-credential cache: sha256(salt ‖ login ‖ password) → the PHC string it matched.
/// An entry is honoured only while the user's stored hash is still that PHC string, so a
/// password change or a deleted user invalidates it at once.
pub struct CredentialCache {
    salt: [u8; 32],
    map: Mutex<HashMap<[u8; 32], (String, Instant)>>,
}

impl Default for CredentialCache {
    fn default() -> Self {
        CredentialCache {
            salt: rand::random(),
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl CredentialCache {
    fn key(&self, login: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update((login.len() as u64).to_le_bytes());
        h.update(login.as_bytes());
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// Verifies `password` for the user a login names (`None`: no such user), using the
    /// cache when it can. An unknown, inactive or password-less user is verified against a
    /// dummy hash and fails, so a failure costs the same argon2 time either way.
    pub fn verify_login(&self, user: Option<&User>, login: &str, password: &str) -> bool {
        match user.filter(|u| u.active && u.password_hash.is_some()) {
            Some(u) => self.verify(u, login, password),
            None => {
                let _ = verify_password(password, dummy_hash());
                DUMMY_VERIFICATIONS.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// True when `password` for `user` was verified recently and the user's hash is still
    /// the one it matched (no argon2).
    pub fn cached(&self, user: &User, login: &str, password: &str) -> bool {
        let Some(phc) = user.password_hash.as_deref() else {
            return false;
        };
        let key = self.key(login, password);
        self.map.lock().ok().is_some_and(|map| {
            map.get(&key)
                .is_some_and(|(cached, at)| cached == phc && at.elapsed() < CACHE_TTL)
        })
    }

    /// Verifies `password` for `user`, using the cache when it can.
    pub fn verify(&self, user: &User, login: &str, password: &str) -> bool {
        let Some(phc) = user.password_hash.as_deref() else {
            return false;
        };
        if self.cached(user, login, password) {
            return true;
        }
        let key = self.key(login, password);
        if !verify_password(password, phc) {
            return false;
        }
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= CACHE_MAX {
                map.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
                if map.len() >= CACHE_MAX {
                    map.clear();
                }
            }
            map.insert(key, (phc.to_owned(), Instant::now()));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash_password("s3cret").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("s3cret", &h));
        assert!(!verify_password("s3cret!", &h));
        assert!(!verify_password("s3cret", "garbage"));
    }

    #[test]
    fn basic_header() {
        assert_eq!(
            parse_basic("Basic YW5uYTpkZTptbw=="),
            Some(("anna".into(), "de:mo".into()))
        );
        assert_eq!(parse_basic("Bearer abc"), None);
        assert_eq!(parse_basic("Basic !!!"), None);
    }

    #[test]
    fn cache_follows_password_changes() {
        let cache = CredentialCache::default();
        let mut u = User {
            id: "u1".into(),
            login: "a".into(),
            name: "A".into(),
            password: None,
            password_hash: Some(hash_password("one").expect("hash")),
            subsystems: vec![],
            role: Role::User,
            active: true,
            extra: Default::default(),
        };
        assert!(cache.verify(&u, "a", "one"));
        assert!(cache.verify(&u, "a", "one"), "cached");
        assert!(!cache.verify(&u, "a", "two"));
        u.password_hash = Some(hash_password("two").expect("hash"));
        assert!(
            !cache.verify(&u, "a", "one"),
            "old password must stop working"
        );
        assert!(cache.verify(&u, "a", "two"));
    }

    #[test]
    fn unknown_and_inactive_logins_pay_for_a_verification() {
        let cache = CredentialCache::default();
        let mut u = User {
            id: "u1".into(),
            login: "a".into(),
            name: "A".into(),
            password: None,
            password_hash: Some(hash_password("one").expect("hash")),
            subsystems: vec![],
            role: Role::User,
            active: true,
            extra: Default::default(),
        };
        assert!(dummy_hash().starts_with("$argon2id$"));
        let before = dummy_verifications();
        assert!(!cache.verify_login(None, "nobody", "one"));
        assert!(cache.verify_login(Some(&u), "a", "one"));
        u.active = false;
        assert!(!cache.verify_login(Some(&u), "a", "one"), "inactive");
        u.active = true;
        u.password_hash = None;
        assert!(!cache.verify_login(Some(&u), "a", "one"), "no hash");
        // Other tests may verify in parallel: at least these three.
        assert!(dummy_verifications() >= before + 3);
    }
}
