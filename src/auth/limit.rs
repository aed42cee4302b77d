//! Per-user request limiting for the Graph face: a sliding one-second window and a cap on
//! requests in flight. The defaults sit far above Graph's own budget (about 17 requests/s and
//! 4 concurrent per mailbox), so a well-behaved client never meets them; beyond them a client
//! gets 429 `ApplicationThrottled` with `Retry-After`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Requests per second per user.
    pub per_second: u32,
    /// Requests in flight per user.
    pub concurrent: u32,
}

#[derive(Default)]
struct State {
    window: Option<Instant>,
    count: u32,
    in_flight: u32,
}

/// The limiter.
pub struct Limiter {
    limits: Limits,
    map: Arc<Mutex<HashMap<String, State>>>,
}

/// Releases a request's slot when dropped.
pub struct Slot {
    map: Arc<Mutex<HashMap<String, State>>>,
    key: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.map.lock() {
            if let Some(s) = m.get_mut(&self.key) {
                s.in_flight = s.in_flight.saturating_sub(1);
            }
        }
    }
}

impl Limiter {
    /// A limiter with these limits.
    pub fn new(limits: Limits) -> Limiter {
        Limiter {
            limits,
            map: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// `Some(seconds to wait)` when `user` is over a limit now; counts the request otherwise.
    pub fn check(&self, user: &str) -> Option<u64> {
        let Ok(mut m) = self.map.lock() else {
            return None;
        };
        if m.len() > 100_000 {
            m.retain(|_, s| s.in_flight > 0);
        }
        let s = m.entry(user.to_lowercase()).or_default();
        let now = Instant::now();
        match s.window {
            Some(w) if now.duration_since(w) < Duration::from_secs(1) => {}
            _ => {
                s.window = Some(now);
                s.count = 0;
            }
        }
        if s.in_flight >= self.limits.concurrent || s.count >= self.limits.per_second {
            return Some(1);
        }
        s.count += 1;
        None
    }

    /// Takes a slot for a request in flight.
    pub fn enter(&self, user: &str) -> Slot {
        let key = user.to_lowercase();
        if let Ok(mut m) = self.map.lock() {
            m.entry(key.clone()).or_default().in_flight += 1;
        }
        Slot {
            map: self.map.clone(),
            key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_rate_and_concurrency() {
        let l = Limiter::new(Limits {
            per_second: 3,
            concurrent: 2,
        });
        assert_eq!(l.check("a"), None);
        let _s1 = l.enter("a");
        assert_eq!(l.check("a"), None);
        let s2 = l.enter("a");
        assert_eq!(l.check("a"), Some(1), "two in flight");
        drop(s2);
        assert_eq!(l.check("a"), None);
        assert_eq!(l.check("a"), Some(1), "four in one second");
        assert_eq!(l.check("b"), None, "per user");
    }
}
