//! A bound on JSON a client sends before it becomes a `serde_json::Value`.
//!
//! A `Value` object costs a B-tree node (hundreds of bytes) however small it is written, so
//! `{"a":{"a":{…` or `[[[{}]]]` grows in memory a hundred times its length. The body limit
//! alone therefore does not bound memory. [`parse`] counts the objects and arrays first —
//! one pass, no allocation — and refuses a document with more than it may have, before
//! anything is built.
//!
//! Imports nothing of crmgate: shared by the admin API, the Graph face and the dataset
//! reader.

use serde_json::Value;

/// Most objects and arrays in one request body (a contact written by any client has dozens).
pub const MAX_CONTAINERS: usize = 10_000;

/// Objects and arrays in `bytes` (outside strings), counting stops past `stop`.
pub fn containers(bytes: &[u8], stop: usize) -> usize {
    let (mut n, mut in_str, mut esc) = (0usize, false, false);
    for &b in bytes {
        if in_str {
            if esc {
                esc = false;
            } else if b == b'\\' {
                esc = true;
            } else if b == b'"' {
                in_str = false;
            }
        } else if b == b'"' {
            in_str = true;
        } else if b == b'{' || b == b'[' {
            n += 1;
            if n > stop {
                break;
            }
        }
    }
    n
}

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonError {
    /// More objects and arrays than allowed.
    TooComplex(usize),
    /// Not JSON.
    Syntax(String),
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JsonError::TooComplex(max) => {
                write!(f, "the JSON has more than {max} objects and arrays")
            }
            JsonError::Syntax(e) => write!(f, "{e}"),
        }
    }
}

/// Parses a body of at most `max` objects and arrays.
pub fn parse_within(bytes: &[u8], max: usize) -> Result<Value, JsonError> {
    if containers(bytes, max) > max {
        return Err(JsonError::TooComplex(max));
    }
    serde_json::from_slice(bytes).map_err(|e| JsonError::Syntax(e.to_string()))
}

/// Parses a request body within [`MAX_CONTAINERS`].
pub fn parse(bytes: &[u8]) -> Result<Value, JsonError> {
    parse_within(bytes, MAX_CONTAINERS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_outside_strings_are_counted_and_counting_stops_early() {
        assert_eq!(containers(br#"{"a":[1,{"b":"{[\"{"}]}"#, 100), 3);
        assert_eq!(containers(b"[[[[[[[[[[", 3), 4);
        assert_eq!(containers(br#""\\" [ ""#, 10), 1);
    }

    #[test]
    fn dense_bodies_are_refused_before_they_are_built_and_ordinary_ones_parse() {
        let dense = "[".repeat(20) + &"{},".repeat(20_000) + "{}" + &"]".repeat(20);
        assert_eq!(parse(dense.as_bytes()), Err(JsonError::TooComplex(10_000)));
        let v =
            parse(br#"{"givenName":"Ana","emailAddresses":[{"address":"a@x"}]}"#).expect("parses");
        assert_eq!(v["givenName"], "Ana");
        assert!(matches!(parse(b"{"), Err(JsonError::Syntax(_))));
    }
}
