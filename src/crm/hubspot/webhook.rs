//! HubSpot's app webhooks (docs/hubspot.md): a delivery is a JSON array of up to 100 events,
//! signed in `X-HubSpot-Signature-v3` = base64(HMAC-SHA256(app secret, method + URI + body +
//! `X-HubSpot-Request-Timestamp`)). A delivery is accepted only with a valid signature, a
//! timestamp within 5 minutes, and a signature not seen before (a replay within the window is
//! refused; a replay after it fails the timestamp). Events name records only: each named record
//! is read from HubSpot before anything changes in the mirror, so an event can make crmgate
//! look sooner but never tells it what to believe.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

/// How far a delivery's timestamp may be from our clock.
pub const WINDOW_MS: i64 = 5 * 60 * 1000;
/// Most events in one delivery (HubSpot sends at most 100).
pub const MAX_EVENTS: usize = 1000;
/// Signatures remembered for replay detection (deliveries within the window).
const MAX_SIGNATURES: usize = 100_000;
/// Event ids remembered for de-duplication.
const MAX_EVENT_IDS: usize = 100_000;

/// Why a delivery was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No signature or timestamp header.
    Unsigned,
    /// The timestamp is not a number or outside the window.
    Stale,
    /// The signature does not match.
    Forged,
    /// This signature was accepted before.
    Replayed,
    /// The body is no array of events, or holds too many.
    Malformed,
}

impl Refusal {
    /// Short text for the answer and the log.
    pub fn text(self) -> &'static str {
        match self {
            Refusal::Unsigned => "missing X-HubSpot-Signature-v3 or X-HubSpot-Request-Timestamp",
            Refusal::Stale => "request timestamp outside the 5-minute window",
            Refusal::Forged => "signature does not match",
            Refusal::Replayed => "delivery already received",
            Refusal::Malformed => "body is not an array of at most 1000 events",
        }
    }
}

/// A record an event names: object type (`contacts`, `companies`, `deals`), id, and whether
/// records associated with it must be read too (a record created or restored: associations
/// read while it was archived left it out).
pub type Target = (&'static str, String, bool);

/// The receiving side: the secret, and what was seen.
pub struct Receiver {
    secret: String,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    /// Signature → timestamp (ms) of accepted deliveries, oldest first in `order`.
    signatures: HashMap<String, i64>,
    order: VecDeque<(i64, String)>,
    events: HashSet<u64>,
    event_order: VecDeque<u64>,
}

/// The v3 signature of a delivery.
pub fn sign(secret: &str, method: &str, uri: &str, body: &[u8], timestamp: &str) -> String {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(method.as_bytes());
    mac.update(uri.as_bytes());
    mac.update(body);
    mac.update(timestamp.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

impl Receiver {
    /// A receiver for an app with this client secret.
    pub fn new(secret: String) -> Receiver {
        Receiver {
            secret,
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Checks one delivery and returns the records its new events name (each once).
    pub fn accept(
        &self,
        method: &str,
        uri: &str,
        body: &[u8],
        timestamp: Option<&str>,
        signature: Option<&str>,
        now_ms: i64,
    ) -> Result<Vec<Target>, Refusal> {
        let (Some(ts), Some(sig)) = (timestamp, signature) else {
            return Err(Refusal::Unsigned);
        };
        let at: i64 = ts.trim().parse().map_err(|_| Refusal::Stale)?;
        if (now_ms - at).abs() > WINDOW_MS {
            return Err(Refusal::Stale);
        }
        let want = sign(&self.secret, method, uri, body, ts);
        let got = sig.trim();
        // Compared in constant time: the comparison must not tell a forger how close it is.
        if want.len() != got.len()
            || want
                .bytes()
                .zip(got.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                != 0
        {
            return Err(Refusal::Forged);
        }
        let events: Vec<Value> = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Array(a)) if a.len() <= MAX_EVENTS => a,
            _ => return Err(Refusal::Malformed),
        };
        let mut seen = self.seen.lock().map_err(|_| Refusal::Malformed)?;
        while seen
            .order
            .front()
            .is_some_and(|(t, _)| now_ms - *t > WINDOW_MS || seen.signatures.len() > MAX_SIGNATURES)
        {
            if let Some((_, s)) = seen.order.pop_front() {
                seen.signatures.remove(&s);
            }
        }
        if seen.signatures.contains_key(got) {
            return Err(Refusal::Replayed);
        }
        seen.signatures.insert(got.to_owned(), at);
        seen.order.push_back((at, got.to_owned()));
        let mut out: Vec<Target> = Vec::new();
        for e in &events {
            if let Some(id) = e["eventId"].as_u64() {
                if !seen.events.insert(id) {
                    continue;
                }
                seen.event_order.push_back(id);
                if seen.event_order.len() > MAX_EVENT_IDS {
                    if let Some(old) = seen.event_order.pop_front() {
                        seen.events.remove(&old);
                    }
                }
            }
            out.extend(targets(e));
        }
        out.sort();
        // One entry per record, cascading if any event asked for it.
        out.dedup_by(|b, a| {
            let same = a.0 == b.0 && a.1 == b.1;
            if same {
                a.2 |= b.2;
            }
            same
        });
        Ok(out)
    }
}

fn object_of(prefix: &str) -> Option<&'static str> {
    match prefix {
        "contact" | "CONTACT" => Some("contacts"),
        "company" | "COMPANY" => Some("companies"),
        "deal" | "DEAL" => Some("deals"),
        _ => None,
    }
}

fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => n.as_u64().map(|n| n.to_string()),
        Value::String(s)
            if !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Some(s.clone())
        }
        _ => None,
    }
}

/// The records one event names: its object; for an association change, both ends (the
/// association type, e.g. `CONTACT_TO_COMPANY`, names their types); for a merge, the merged
/// ids too. Events about other object types name nothing.
fn targets(e: &Value) -> Vec<Target> {
    let mut out = Vec::new();
    let Some(kind) = e["subscriptionType"].as_str() else {
        return out;
    };
    let Some((prefix, what)) = kind.split_once('.') else {
        return out;
    };
    let Some(object) = object_of(prefix) else {
        return out;
    };
    if what == "associationChange" {
        let assoc = e["associationType"].as_str().unwrap_or("");
        let (from, to) = assoc.split_once("_TO_").unwrap_or(("", ""));
        for (t, key) in [(from, "fromObjectId"), (to, "toObjectId")] {
            if let (Some(o), Some(id)) = (object_of(t), id_text(&e[key])) {
                out.push((o, id, false));
            }
        }
        return out;
    }
    let cascade = matches!(what, "creation" | "restore" | "merge");
    if let Some(id) = id_text(&e["objectId"]) {
        out.push((object, id, cascade));
    }
    if what == "merge" {
        for v in e["mergedObjectIds"]
            .as_array()
            .into_iter()
            .flatten()
            .take(100)
        {
            if let Some(id) = id_text(v) {
                out.push((object, id, false));
            }
        }
        if let Some(id) = id_text(&e["primaryObjectId"]) {
            out.push((object, id, true));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const URI: &str = "https://crmgate.example/hubspot/webhooks";

    fn deliver(
        r: &Receiver,
        body: &str,
        ts: i64,
        sig: Option<String>,
    ) -> Result<Vec<Target>, Refusal> {
        let ts = ts.to_string();
        let sig = sig.unwrap_or_else(|| sign("s3cret", "POST", URI, body.as_bytes(), &ts));
        r.accept(
            "POST",
            URI,
            body.as_bytes(),
            Some(&ts),
            Some(&sig),
            1_000_000_000,
        )
    }

    #[test]
    fn signed_fresh_deliveries_pass_once_and_forgeries_never() {
        let r = Receiver::new("s3cret".into());
        let body = r#"[{"eventId":1,"subscriptionType":"contact.propertyChange","objectId":101,"propertyName":"email"},
            {"eventId":2,"subscriptionType":"contact.associationChange","associationType":"CONTACT_TO_COMPANY","fromObjectId":101,"toObjectId":7},
            {"eventId":3,"subscriptionType":"ticket.creation","objectId":5}]"#;
        let got = deliver(&r, body, 1_000_000_000, None).expect("valid");
        assert_eq!(
            got,
            vec![
                ("companies", "7".to_owned(), false),
                ("contacts", "101".to_owned(), false)
            ]
        );
        // The same delivery again (a replay): refused.
        assert_eq!(
            deliver(&r, body, 1_000_000_000, None),
            Err(Refusal::Replayed)
        );
        // Another secret, an edited body, an old or future timestamp, no headers: refused.
        let other = sign("guess", "POST", URI, body.as_bytes(), "1000000001");
        assert_eq!(
            deliver(&r, body, 1_000_000_001, Some(other)),
            Err(Refusal::Forged)
        );
        let good = sign("s3cret", "POST", URI, body.as_bytes(), "1000000002");
        let edited = body.replace("101", "102");
        assert_eq!(
            deliver(&r, &edited, 1_000_000_002, Some(good)),
            Err(Refusal::Forged)
        );
        assert_eq!(
            deliver(&r, body, 1_000_000_000 - WINDOW_MS - 1, None),
            Err(Refusal::Stale)
        );
        assert_eq!(
            deliver(&r, body, 1_000_000_000 + WINDOW_MS + 1, None),
            Err(Refusal::Stale)
        );
        assert_eq!(
            r.accept("POST", URI, body.as_bytes(), None, None, 1_000_000_000),
            Err(Refusal::Unsigned)
        );
        // A retry of the same events (new timestamp, new signature) passes, but names
        // nothing new: its event ids were seen.
        assert_eq!(deliver(&r, body, 1_000_000_003, None), Ok(Vec::new()));
        assert_eq!(
            deliver(&r, "{}", 1_000_000_004, None),
            Err(Refusal::Malformed)
        );
    }
}
