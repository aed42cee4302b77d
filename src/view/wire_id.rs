//! Opaque wire ids: folder ids, item ids and sync states. Each is versioned, bound to the user
//! it was issued to, and authenticated with an HMAC under the server key, so an id from another
//! user or a tampered one is rejected without revealing anything. EWS ids are standard base64
//! of at least 105 bytes, as clients expect of real EwsIds.
//!
//! Layout: `[version=1][kind][folder][user len u8][user][contact len u16][contact][seq u64]
//! [key len u16][key][zero padding][hmac-sha256]`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const VERSION: u8 = 1;
const MAC_LEN: usize = 32;
/// Encoded ids are at least this many bytes before base64 (DavMail relies on long ids).
const MIN_LEN: usize = 105;

/// What an id names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdKind {
    /// A folder.
    Folder,
    /// An item in a folder.
    Item,
    /// A sync state of a folder.
    Sync,
}

impl IdKind {
    fn byte(self) -> u8 {
        match self {
            IdKind::Folder => b'F',
            IdKind::Item => b'I',
            IdKind::Sync => b'S',
        }
    }
}

/// A decoded id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireId {
    /// Kind.
    pub kind: IdKind,
    /// Folder code.
    pub folder: u8,
    /// Contact id (items; resume key of sync states).
    pub contact: String,
    /// Sequence (sync states: watermark).
    pub seq: u64,
    /// Second sequence (sync states: resume sequence).
    pub seq2: u64,
    /// What else the id is bound to (Graph delta tokens: the `$select`); 0 otherwise.
    pub tag: u64,
}

/// Why an id was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdError {
    /// Not an id crmgate makes.
    Malformed,
    /// Well-formed but not valid for this user (tampered, foreign, or of another kind).
    NotFound,
}

/// Makes and checks ids with the server key.
#[derive(Clone)]
pub struct IdCodec {
    key: [u8; 32],
}

impl IdCodec {
    /// A codec with this server key.
    pub fn new(key: [u8; 32]) -> IdCodec {
        IdCodec { key }
    }

    fn mac(&self, data: &[u8]) -> [u8; MAC_LEN] {
        // HMAC takes keys of any length; this cannot fail.
        let mut m = <HmacSha256 as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        m.update(data);
        m.finalize().into_bytes().into()
    }

    /// Encodes an id for `user`.
    pub fn encode(&self, user: &str, id: &WireId) -> String {
        let mut b = Vec::with_capacity(MIN_LEN + 64);
        b.push(VERSION);
        b.push(id.kind.byte());
        b.push(id.folder);
        let u = &user.as_bytes()[..user.len().min(255)];
        b.push(u.len() as u8);
        b.extend_from_slice(u);
        let c = &id.contact.as_bytes()[..id.contact.len().min(65535)];
        b.extend_from_slice(&(c.len() as u16).to_be_bytes());
        b.extend_from_slice(c);
        b.extend_from_slice(&id.seq.to_be_bytes());
        b.extend_from_slice(&id.seq2.to_be_bytes());
        b.extend_from_slice(&id.tag.to_be_bytes());
        while b.len() + MAC_LEN < MIN_LEN {
            b.push(0);
        }
        let mac = self.mac(&b);
        b.extend_from_slice(&mac);
        STANDARD.encode(b)
    }

    /// Decodes an id of `kind` issued to `user`.
    pub fn decode(&self, user: &str, kind: IdKind, s: &str) -> Result<WireId, IdError> {
        if s.len() > 4096 {
            return Err(IdError::Malformed);
        }
        let b = STANDARD.decode(s.trim()).map_err(|_| IdError::Malformed)?;
        if b.len() < MIN_LEN || b[0] != VERSION {
            return Err(IdError::Malformed);
        }
        let (body, mac) = b.split_at(b.len() - MAC_LEN);
        let want = self.mac(body);
        // Constant-time comparison of the tag.
        let diff = want.iter().zip(mac).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(IdError::NotFound);
        }
        let mut r = Reader { b: body, at: 1 };
        let k = r.u8()?;
        let folder = r.u8()?;
        let ulen = r.u8()? as usize;
        let u = r.bytes(ulen)?;
        let clen = u16::from_be_bytes([r.u8()?, r.u8()?]) as usize;
        let contact = String::from_utf8(r.bytes(clen)?.to_vec()).map_err(|_| IdError::Malformed)?;
        let seq = r.u64()?;
        let seq2 = r.u64()?;
        let tag = r.u64()?;
        if u != user.as_bytes() || k != kind.byte() {
            return Err(IdError::NotFound);
        }
        Ok(WireId {
            kind,
            folder,
            contact,
            seq,
            seq2,
            tag,
        })
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, IdError> {
        let v = *self.b.get(self.at).ok_or(IdError::Malformed)?;
        self.at += 1;
        Ok(v)
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], IdError> {
        let v = self.b.get(self.at..self.at + n).ok_or(IdError::Malformed)?;
        self.at += n;
        Ok(v)
    }
    fn u64(&mut self) -> Result<u64, IdError> {
        let v = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(v);
        Ok(u64::from_be_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_binding_and_tamper() {
        let codec = IdCodec::new([7; 32]);
        let id = WireId {
            kind: IdKind::Item,
            folder: 3,
            contact: "c1".into(),
            seq: 0,
            seq2: 0,
            tag: 0,
        };
        let s = codec.encode("u1", &id);
        assert!(STANDARD.decode(&s).expect("b64").len() >= MIN_LEN);
        assert_eq!(codec.decode("u1", IdKind::Item, &s), Ok(id.clone()));
        assert_eq!(
            codec.decode("u2", IdKind::Item, &s),
            Err(IdError::NotFound),
            "foreign user"
        );
        assert_eq!(
            codec.decode("u1", IdKind::Folder, &s),
            Err(IdError::NotFound),
            "wrong kind"
        );
        let other = IdCodec::new([8; 32]);
        assert_eq!(
            other.decode("u1", IdKind::Item, &s),
            Err(IdError::NotFound),
            "other key"
        );
        let mut raw = STANDARD.decode(&s).expect("b64");
        raw[5] ^= 1;
        assert_eq!(
            codec.decode("u1", IdKind::Item, &STANDARD.encode(&raw)),
            Err(IdError::NotFound)
        );
        assert_eq!(
            codec.decode("u1", IdKind::Item, "DUMMY"),
            Err(IdError::Malformed)
        );
        assert_eq!(
            codec.decode("u1", IdKind::Item, "AAAA"),
            Err(IdError::Malformed)
        );
    }
}
