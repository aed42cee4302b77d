//! Basic sign-in: credentials from an `Authorization` header checked against the user
//! directory, with the verified-credential cache and per-source and per-account throttling.

use super::{parse_basic, CredentialCache, Principal, Throttle, Verdict};
use crate::domain::User;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Why a request's credentials were not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No usable `Authorization` header.
    Missing,
    /// Wrong login or password; answer after `delay`.
    Invalid {
        /// Slow-down before answering.
        delay: Duration,
    },
    /// The source, or the login from this source, is locked out.
    Locked {
        /// Time left.
        retry_after: Duration,
    },
}

/// Checks Basic credentials; counts failures and lockouts for `/metrics`.
pub struct Authenticator {
    /// Login throttle.
    pub throttle: Throttle,
    /// Verified credentials.
    pub creds: CredentialCache,
    failures: AtomicU64,
    lockouts: AtomicU64,
}

impl Authenticator {
    /// An authenticator with this throttle.
    pub fn new(throttle: Throttle) -> Authenticator {
        Authenticator {
            throttle,
            creds: CredentialCache::default(),
            failures: AtomicU64::new(0),
            lockouts: AtomicU64::new(0),
        }
    }

    /// Failed logins since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Lockouts answered since start.
    pub fn lockouts(&self) -> u64 {
        self.lockouts.load(Ordering::Relaxed)
    }

    /// Checks Basic credentials from `authorization` for a request from `ip`; `lookup` finds
    /// the live user record of a login. A failure costs one argon2 verification whether or
    /// not the login exists; on a multi-thread runtime the verification runs in
    /// `block_in_place`, so the worker's other tasks move on.
    pub fn check_basic(
        &self,
        authorization: Option<&str>,
        ip: IpAddr,
        lookup: impl FnOnce(&str) -> Option<Arc<User>>,
    ) -> Result<Principal, AuthFailure> {
        if let Verdict::Locked(retry_after) = self.throttle.check(ip) {
            self.lockouts.fetch_add(1, Ordering::Relaxed);
            return Err(AuthFailure::Locked { retry_after });
        }
        let Some((login, password)) = authorization.and_then(parse_basic) else {
            return Err(AuthFailure::Missing);
        };
        if let Verdict::Locked(retry_after) = self.throttle.check_account(ip, &login) {
            self.lockouts.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%ip, login = %login, "login locked after failures from other sources");
            return Err(AuthFailure::Locked { retry_after });
        }
        let user = lookup(&login);
        let user = user.as_deref();
        let ok = user
            .filter(|u| u.active)
            .is_some_and(|u| self.creds.cached(u, &login, &password))
            || off_runtime(|| self.creds.verify_login(user, &login, &password));
        match user.filter(|_| ok) {
            Some(u) => {
                self.throttle.success(ip, &login);
                Ok(Principal {
                    user: u.id.clone(),
                    login: u.login.clone(),
                    role: u.role,
                })
            }
            None => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                let delay = self.throttle.failure(ip, &login);
                tracing::info!(%ip, login = %login, "login failed");
                Err(AuthFailure::Invalid { delay })
            }
        }
    }
}

/// Runs CPU-heavy `f` (argon2) without stalling the async worker it is called on: through
/// `block_in_place` on a multi-thread runtime, inline elsewhere (a current-thread runtime,
/// where `block_in_place` panics, or no runtime at all).
pub fn off_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
