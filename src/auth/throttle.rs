//! Failed-login throttling per source address: each recent failure adds a delay before the
//! answer; after `max_failures` within the window the source is locked out for a while, even
//! with the right password. A successful login does not clear the count: otherwise one valid
//! account would let a source keep guessing the passwords of others.

use crate::config::AuthConfig;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What to do with a login attempt from a source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead.
    Allow,
    /// Refuse: locked out for this long yet.
    Locked(Duration),
}

#[derive(Default)]
struct Source {
    failures: Vec<Instant>,
    locked_until: Option<Instant>,
}

/// Per-source failure bookkeeping.
pub struct Throttle {
    cfg: AuthConfig,
    map: Mutex<HashMap<IpAddr, Source>>,
}

const MAX_SOURCES: usize = 100_000;

impl Throttle {
    /// A throttle with the configured limits.
    pub fn new(cfg: AuthConfig) -> Throttle {
        Throttle {
            cfg,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// May `ip` try to log in now?
    pub fn check(&self, ip: IpAddr) -> Verdict {
        let Ok(mut map) = self.map.lock() else {
            return Verdict::Allow;
        };
        let Some(s) = map.get_mut(&ip) else {
            return Verdict::Allow;
        };
        match s.locked_until {
            Some(t) if t > Instant::now() => Verdict::Locked(t - Instant::now()),
            Some(_) => {
                map.remove(&ip);
                Verdict::Allow
            }
            None => Verdict::Allow,
        }
    }

    /// Records a failure; returns the delay to wait before answering.
    pub fn failure(&self, ip: IpAddr) -> Duration {
        let Ok(mut map) = self.map.lock() else {
            return Duration::ZERO;
        };
        if map.len() >= MAX_SOURCES {
            let window = self.cfg.failure_window;
            map.retain(|_, s| {
                s.locked_until.is_some_and(|t| t > Instant::now())
                    || s.failures.last().is_some_and(|f| f.elapsed() < window)
            });
        }
        let now = Instant::now();
        let s = map.entry(ip).or_default();
        s.failures
            .retain(|f| now.duration_since(*f) < self.cfg.failure_window);
        s.failures.push(now);
        let n = s.failures.len() as u32;
        if n >= self.cfg.max_failures {
            s.locked_until = Some(now + self.cfg.lockout);
            s.failures.clear();
        }
        (self.cfg.failure_delay * n).min(Duration::from_secs(2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slows_down_then_locks_out() {
        let t = Throttle::new(AuthConfig {
            max_failures: 3,
            failure_window: Duration::from_secs(60),
            lockout: Duration::from_secs(60),
            failure_delay: Duration::from_millis(100),
            account_max_failures: 10,
            account_lockout: Duration::from_secs(60),
            max_tokens_per_user: 100,
        });
        let ip: IpAddr = "127.0.0.2".parse().expect("ip");
        assert_eq!(t.check(ip), Verdict::Allow);
        assert_eq!(t.failure(ip), Duration::from_millis(100));
        assert_eq!(t.failure(ip), Duration::from_millis(200));
        assert_eq!(t.check(ip), Verdict::Allow);
        t.failure(ip);
        assert!(matches!(t.check(ip), Verdict::Locked(d) if d > Duration::from_secs(50)));
        assert!(matches!(t.check(ip), Verdict::Locked(_)), "stays locked");
        let other: IpAddr = "127.0.0.3".parse().expect("ip");
        assert_eq!(t.check(other), Verdict::Allow);
    }
}
