//! Failed-login throttling, per source address and per account.
//!
//! *Per source*: each recent failure adds a delay before the answer; after `max_failures`
//! within the window the source is locked out for a while, even with the right password. A
//! successful login does not clear the count: otherwise one valid account would let a source
//! keep guessing the passwords of others.
//!
//! *Per account* (the lowercased login, whether or not it exists, so a lock says nothing about
//! which logins are real): failures against one login from many sources add growing delays,
//! and after `account_max_failures` the login is locked for `account_lockout`, doubled for
//! each further lock (up to 16 times). So that an attacker cannot lock the owner out, the
//! lock and the delays do not apply to a source the account signed in from successfully
//! before (recent good (account, source) pairs are remembered), and failures from such a
//! source do not count against the account.
//!
//! Every map is bounded; when one is full, stale entries go first.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Login throttling.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// Failures from one source before it is locked out.
    pub max_failures: u32,
    /// Window in which failures are counted.
    pub failure_window: Duration,
    /// How long a lockout lasts.
    pub lockout: Duration,
    /// Delay added per recent failure before answering (capped at 2 s).
    pub failure_delay: Duration,
    /// Failures against one login (from sources it never signed in from) before the login
    /// is locked for those sources.
    pub account_max_failures: u32,
    /// How long the first lock of a login lasts; each further lock within the failure
    /// window doubles it, up to 16 times.
    pub account_lockout: Duration,
    /// Bearer tokens one user may hold; issuing one more revokes the oldest.
    pub max_tokens_per_user: usize,
}

/// What to do with a login attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead.
    Allow,
    /// Refuse: locked out for this long yet.
    Locked(Duration),
}

struct Source {
    failures: u32,
    since: Instant,
    locked_until: Option<Instant>,
}

struct Account {
    failures: u32,
    since: Instant,
    last: Instant,
    locked_until: Option<Instant>,
    /// Locks in a row; each doubles the next lock.
    strikes: u32,
}

/// Accounts are keyed by a digest of the lowercased login: fixed size whatever a client sends.
type AccountKey = [u8; 16];

/// Per-source and per-account failure bookkeeping.
pub struct Throttle {
    cfg: AuthConfig,
    sources: Mutex<HashMap<IpAddr, Source>>,
    accounts: Mutex<HashMap<AccountKey, Account>>,
    /// (account, source) pairs that signed in successfully, with when.
    good: Mutex<HashMap<(AccountKey, IpAddr), Instant>>,
}

const MAX_SOURCES: usize = 100_000;
const MAX_ACCOUNTS: usize = 100_000;
const MAX_GOOD: usize = 100_000;
/// How long a successful sign-in vouches for its source.
const GOOD_TTL: Duration = Duration::from_secs(30 * 86_400);
/// Ceiling of the delay before answering a failed login.
const MAX_DELAY: Duration = Duration::from_secs(2);
/// Most doublings of the account lock.
const MAX_STRIKE_SHIFT: u32 = 4;

fn account_key(login: &str) -> AccountKey {
    let d = Sha256::digest(login.to_lowercase().as_bytes());
    let mut k = [0u8; 16];
    k.copy_from_slice(&d[..16]);
    k
}

impl Throttle {
    /// A throttle with the configured limits.
    pub fn new(cfg: AuthConfig) -> Throttle {
        Throttle {
            cfg,
            sources: Mutex::new(HashMap::new()),
            accounts: Mutex::new(HashMap::new()),
            good: Mutex::new(HashMap::new()),
        }
    }

    /// The longest an account entry matters: its window plus the longest lock.
    fn account_memory(&self) -> Duration {
        self.cfg.failure_window + self.cfg.account_lockout * (1 << MAX_STRIKE_SHIFT)
    }

    /// May `ip` try to log in now?
    pub fn check(&self, ip: IpAddr) -> Verdict {
        let Ok(mut map) = self.sources.lock() else {
            return Verdict::Allow;
        };
        let Some(s) = map.get_mut(&ip) else {
            return Verdict::Allow;
        };
        let now = Instant::now();
        match s.locked_until {
            Some(t) if t > now => Verdict::Locked(t - now),
            Some(_) => {
                map.remove(&ip);
                Verdict::Allow
            }
            None => Verdict::Allow,
        }
    }

    /// May `ip` try to log in as `login` now? Always yes from a source that signed in as
    /// `login` before.
    pub fn check_account(&self, ip: IpAddr, login: &str) -> Verdict {
        let key = account_key(login);
        if self.is_good(key, ip) {
            return Verdict::Allow;
        }
        let Ok(map) = self.accounts.lock() else {
            return Verdict::Allow;
        };
        let now = Instant::now();
        match map.get(&key).and_then(|a| a.locked_until) {
            Some(t) if t > now => Verdict::Locked(t - now),
            _ => Verdict::Allow,
        }
    }

    fn is_good(&self, key: AccountKey, ip: IpAddr) -> bool {
        self.good
            .lock()
            .ok()
            .and_then(|g| g.get(&(key, ip)).map(|at| at.elapsed() < GOOD_TTL))
            .unwrap_or(false)
    }

    /// Records a successful sign-in: `ip` is now a known source of `login`, and the
    /// account's failure count starts over.
    pub fn success(&self, ip: IpAddr, login: &str) {
        let key = account_key(login);
        if let Ok(mut g) = self.good.lock() {
            if g.len() >= MAX_GOOD && !g.contains_key(&(key, ip)) {
                g.retain(|_, at| at.elapsed() < GOOD_TTL);
                if g.len() >= MAX_GOOD {
                    // Keep the newer half.
                    let mut ages: Vec<Instant> = g.values().copied().collect();
                    let mid = ages.len() / 2;
                    let (_, cut, _) = ages.select_nth_unstable(mid);
                    let cut = *cut;
                    g.retain(|_, at| *at > cut);
                }
            }
            g.insert((key, ip), Instant::now());
        }
        if let Ok(mut a) = self.accounts.lock() {
            a.remove(&key);
        }
    }

    /// Records a failure of `ip` signing in as `login`; returns the delay to wait before
    /// answering.
    pub fn failure(&self, ip: IpAddr, login: &str) -> Duration {
        let source = self.source_failure(ip);
        let key = account_key(login);
        if self.is_good(key, ip) {
            return source;
        }
        source.max(self.account_failure(key))
    }

    fn source_failure(&self, ip: IpAddr) -> Duration {
        let Ok(mut map) = self.sources.lock() else {
            return Duration::ZERO;
        };
        let now = Instant::now();
        let window = self.cfg.failure_window;
        if map.len() >= MAX_SOURCES && !map.contains_key(&ip) {
            map.retain(|_, s| {
                s.locked_until.is_some_and(|t| t > now) || now.duration_since(s.since) < window
            });
            if map.len() >= MAX_SOURCES {
                map.retain(|_, s| s.locked_until.is_some_and(|t| t > now));
            }
        }
        let s = map.entry(ip).or_insert(Source {
            failures: 0,
            since: now,
            locked_until: None,
        });
        if now.duration_since(s.since) >= window {
            s.failures = 0;
            s.since = now;
        }
        s.failures += 1;
        let n = s.failures;
        if n >= self.cfg.max_failures {
            s.locked_until = Some(now + self.cfg.lockout);
            s.failures = 0;
        }
        (self.cfg.failure_delay * n).min(MAX_DELAY)
    }

    fn account_failure(&self, key: AccountKey) -> Duration {
        let Ok(mut map) = self.accounts.lock() else {
            return Duration::ZERO;
        };
        let now = Instant::now();
        let memory = self.account_memory();
        if map.len() >= MAX_ACCOUNTS && !map.contains_key(&key) {
            map.retain(|_, a| {
                a.locked_until.is_some_and(|t| t > now) || now.duration_since(a.last) < memory
            });
            if map.len() >= MAX_ACCOUNTS {
                map.retain(|_, a| a.locked_until.is_some_and(|t| t > now));
            }
            if map.len() >= MAX_ACCOUNTS {
                // Every tracked login is locked: leave those locks alone.
                return Duration::ZERO;
            }
        }
        let a = map.entry(key).or_insert(Account {
            failures: 0,
            since: now,
            last: now,
            locked_until: None,
            strikes: 0,
        });
        if now.duration_since(a.last) >= memory {
            a.strikes = 0;
        }
        if now.duration_since(a.since) >= self.cfg.failure_window {
            a.failures = 0;
            a.since = now;
        }
        a.last = now;
        a.failures += 1;
        let n = a.failures;
        if n >= self.cfg.account_max_failures {
            let lock = self.cfg.account_lockout * (1 << a.strikes.min(MAX_STRIKE_SHIFT));
            a.locked_until = Some(now + lock);
            a.strikes += 1;
            a.failures = 0;
            a.since = now;
        }
        // Doubles with each failure: 1, 2, 4 … times the base delay.
        (self.cfg.failure_delay * (1u32 << (n - 1).min(16))).min(MAX_DELAY)
    }

    /// Entries held (sources, accounts, good pairs), for tests of the bounds.
    pub fn sizes(&self) -> (usize, usize, usize) {
        (
            self.sources.lock().map(|m| m.len()).unwrap_or(0),
            self.accounts.lock().map(|m| m.len()).unwrap_or(0),
            self.good.lock().map(|m| m.len()).unwrap_or(0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AuthConfig {
        AuthConfig {
            max_failures: 3,
            failure_window: Duration::from_secs(60),
            lockout: Duration::from_secs(60),
            failure_delay: Duration::from_millis(100),
            account_max_failures: 5,
            account_lockout: Duration::from_secs(30),
            max_tokens_per_user: 100,
        }
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn slows_down_then_locks_out() {
        let t = Throttle::new(AuthConfig {
            account_max_failures: 1000,
            ..cfg()
        });
        let ip: IpAddr = "127.0.0.2".parse().expect("ip");
        assert_eq!(t.check(ip), Verdict::Allow);
        assert_eq!(t.failure(ip, "a"), Duration::from_millis(100));
        assert_eq!(t.failure(ip, "b"), Duration::from_millis(200));
        assert_eq!(t.check(ip), Verdict::Allow);
        t.failure(ip, "c");
        assert!(matches!(t.check(ip), Verdict::Locked(d) if d > Duration::from_secs(50)));
        assert!(matches!(t.check(ip), Verdict::Locked(_)), "stays locked");
        let other: IpAddr = "127.0.0.3".parse().expect("ip");
        assert_eq!(t.check(other), Verdict::Allow);
    }

    #[test]
    fn many_sources_lock_one_account_but_not_its_owner() {
        let t = Throttle::new(cfg());
        let home = ip(1);
        t.success(home, "Anna@X");
        let mut delays = Vec::new();
        for n in 0..4 {
            // Four sources, one guess each: no source comes near its own limit.
            assert_eq!(t.check(ip(100 + n)), Verdict::Allow);
            assert_eq!(t.check_account(ip(100 + n), "anna@x"), Verdict::Allow);
            delays.push(t.failure(ip(100 + n), "anna@x"));
        }
        assert!(delays.windows(2).all(|w| w[1] > w[0]), "{delays:?}");
        t.failure(ip(200), "ANNA@x");
        assert!(
            matches!(t.check_account(ip(300), "anna@x"), Verdict::Locked(d) if d > Duration::from_secs(20)),
            "a fresh source meets the lock"
        );
        assert_eq!(
            t.check_account(home, "anna@x"),
            Verdict::Allow,
            "the owner's known source is not locked out"
        );
        assert_eq!(t.check_account(ip(300), "ben@x"), Verdict::Allow);
        // Unknown logins lock the same way: a lock does not reveal which logins exist.
        for n in 0..5 {
            t.failure(ip(400 + n), "nobody@x");
        }
        assert!(matches!(
            t.check_account(ip(500), "nobody@x"),
            Verdict::Locked(_)
        ));
    }

    #[test]
    fn repeated_locks_grow() {
        let t = Throttle::new(AuthConfig {
            account_lockout: Duration::from_millis(20),
            ..cfg()
        });
        let mut locks = Vec::new();
        for round in 0..3 {
            for n in 0..5 {
                t.failure(ip(1000 + round * 10 + n), "x");
            }
            match t.check_account(ip(9), "x") {
                Verdict::Locked(d) => locks.push(d),
                Verdict::Allow => panic!("round {round} not locked"),
            }
            std::thread::sleep(locks[locks.len() - 1] + Duration::from_millis(5));
            assert_eq!(
                t.check_account(ip(9), "x"),
                Verdict::Allow,
                "short lock ends"
            );
        }
        assert!(locks[1] > locks[0] && locks[2] > locks[1], "{locks:?}");
    }

    #[test]
    fn maps_are_bounded() {
        let t = Throttle::new(cfg());
        for n in 0..(MAX_GOOD as u32 + 10) {
            t.success(ip(n), "a");
        }
        for n in 0..(MAX_SOURCES as u32 + 10) {
            t.failure(ip(n), &format!("user{n}"));
        }
        let (s, a, g) = t.sizes();
        assert!(
            s <= MAX_SOURCES && a <= MAX_ACCOUNTS && g <= MAX_GOOD,
            "{s} {a} {g}"
        );
    }
}
