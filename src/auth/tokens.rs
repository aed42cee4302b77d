//! Bearer tokens issued by crmgate for the Graph face: opaque random strings, stored only as
//! SHA-256 hashes with user, scopes and expiry; revocable.
//!
//! A token is bound to its user's *identity*, not only to the user id: it records a
//! fingerprint of the user's token epoch, login and password hash, and is honoured only while
//! the live user record still gives that fingerprint. The epoch is a random marker per user,
//! replaced when the user is created, deleted, deactivated or changes login or password
//! ([`Tokens::revoke_user`]); so a new person who gets a deleted user's id does not inherit
//! the old person's tokens, and a password change ends every token issued before it.
//!
//! Store layout (`{h}` = hex SHA-256 of the token, `{u}` = hex of the user id):
//!
//! | key | value |
//! |---|---|
//! | `tok/{h}` | [`TokenInfo`] as JSON |
//! | `toke/{exp:020}/{h}` | the `toku/` key (expiry index: expired rows are purged on issue) |
//! | `toku/{u}/{issued_us:020}/{h}` | empty (per-user index: the cap and revoke-all) |
//! | `tokgen/{u}` | the user's token epoch |
//!
//! The live user records come from a [`Directory`] (the replica, in the gateway).
//!
//! May import domain and the store.

use crate::domain::User;
use crate::store::{KvStore, Op, Store, StoreError};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::ops::Bound;
use std::sync::{Arc, Mutex};

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
    /// Issue time, unix microseconds (orders a user's tokens for the cap).
    #[serde(default)]
    pub issued_us: u64,
    /// The user's token epoch at issue. Tokens stored before epochs existed have none and
    /// are refused.
    #[serde(default)]
    pub epoch: String,
    /// Fingerprint of the identity the token was issued to (epoch, id, login, password hash).
    #[serde(default)]
    pub ident: String,
}

/// Looks up the live record of a user by id (the replica's, in the gateway).
pub type Directory = Arc<dyn Fn(&str) -> Option<User> + Send + Sync>;

/// Why a token could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The user does not exist, is inactive, or no longer has the login signed in with.
    #[error("no active user \"{0}\" with that login")]
    NoSuchUser(String),
}

/// The scopes crmgate knows.
pub const SCOPES: &[&str] = &["Contacts.Read", "Contacts.ReadWrite"];

/// Expired tokens removed per issue at most: bounded work per request, and more than one so
/// the store shrinks faster than issuing can grow it.
const PURGE_BATCH: usize = 64;

/// Token issuing and checking over the store.
pub struct Tokens {
    store: Arc<Store>,
    directory: Directory,
    /// Tokens one user may hold; issuing beyond it revokes the oldest.
    max_per_user: usize,
    /// Serialises the read-count-write of issuing and revoking, so the cap holds.
    write: Mutex<()>,
    /// Grants and epochs as last read from the store, so verifying a known token touches no
    /// store (see [`Tokens::verify_cached`]). Every token write clears it.
    cache: std::sync::RwLock<Cache>,
}

/// Store reads of [`Tokens::verify`], kept until the next token write.
#[derive(Default)]
struct Cache {
    /// Bumped by every token write; a read that began before a write is not cached.
    generation: u64,
    /// Token hash → grant.
    rows: std::collections::HashMap<String, TokenInfo>,
    /// User id → current epoch (`None`: the user has none).
    epochs: std::collections::HashMap<String, Option<String>>,
}

/// Cached grants beyond this many are dropped (the cache starts over).
const CACHE_MAX: usize = 100_000;

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn row_key(h: &str) -> Vec<u8> {
    format!("tok/{h}").into_bytes()
}

fn exp_key(exp: u64, h: &str) -> Vec<u8> {
    format!("toke/{exp:020}/{h}").into_bytes()
}

fn user_prefix(user: &str) -> Vec<u8> {
    format!("toku/{}/", hex(user.as_bytes())).into_bytes()
}

fn user_key(user: &str, issued_us: u64, h: &str) -> Vec<u8> {
    let mut k = user_prefix(user);
    k.extend_from_slice(format!("{issued_us:020}/{h}").as_bytes());
    k
}

fn epoch_key(user: &str) -> Vec<u8> {
    format!("tokgen/{}", hex(user.as_bytes())).into_bytes()
}

/// The token hash at the end of an index key (`…/{h}`).
fn hash_of(key: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(key).ok()?;
    Some(s.rsplit('/').next()?.to_owned())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn corrupt(e: serde_json::Error) -> StoreError {
    StoreError::Engine(e.to_string())
}

/// The identity fingerprint of `user` under `epoch`: changes when the user's login or password
/// hash changes, or when the epoch is replaced.
fn fingerprint(epoch: &str, user: &User) -> String {
    let mut h = Sha256::new();
    h.update(b"crmgate token identity v1\0");
    for part in [
        epoch,
        user.id.as_str(),
        &user.login.to_lowercase(),
        user.password_hash.as_deref().unwrap_or(""),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    hex(&h.finalize())
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
    /// Tokens kept in `store` for the users of `directory`, at most `max_per_user` per user.
    pub fn new(store: Arc<Store>, directory: Directory, max_per_user: usize) -> Tokens {
        Tokens {
            store,
            directory,
            max_per_user: max_per_user.max(1),
            write: Mutex::new(()),
            cache: std::sync::RwLock::new(Cache::default()),
        }
    }

    /// Applies token writes, then forgets every cached read (after the store write: a
    /// verification that read the store before it cannot cache what it read).
    fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let r = self.store.apply(ops);
        self.forget();
        r
    }

    fn forget(&self) {
        let mut c = self.cache.write().unwrap_or_else(|p| p.into_inner());
        c.generation += 1;
        c.rows.clear();
        c.epochs.clear();
    }

    fn generation(&self) -> u64 {
        self.cache.read().map(|c| c.generation).unwrap_or(u64::MAX)
    }

    /// Caches what [`Tokens::verify`] read, unless a token write happened since `generation`.
    fn remember(&self, generation: u64, h: String, info: &TokenInfo, epoch: &Option<String>) {
        let Ok(mut c) = self.cache.write() else {
            return;
        };
        if c.generation != generation {
            return;
        }
        if c.rows.len() >= CACHE_MAX {
            c.rows.clear();
            c.epochs.clear();
        }
        c.rows.insert(h, info.clone());
        c.epochs.insert(info.user.to_string(), epoch.clone());
    }

    /// [`Tokens::verify`] from memory, for a token verified before: `Some(answer)`, or `None`
    /// when the store must be read (an unknown token, or the user is now inactive, which
    /// revokes). Touches no store, so it runs on an async worker.
    pub fn verify_cached(&self, token: &str) -> Option<Option<TokenInfo>> {
        if token.len() > 200 {
            return Some(None);
        }
        let h = token_hash(token);
        let (info, epoch) = {
            let c = self.cache.read().ok()?;
            let info = c.rows.get(&h)?.clone();
            let epoch = c.epochs.get(info.user.as_str())?.clone();
            (info, epoch)
        };
        if info.exp <= now() || info.epoch.is_empty() || epoch.as_deref() != Some(&info.epoch) {
            return Some(None);
        }
        let user = match (self.directory)(&info.user) {
            Some(u) => u,
            None => return Some(None),
        };
        if !user.active {
            return None;
        }
        Some(
            (user.id.as_str() == info.user && fingerprint(&info.epoch, &user) == info.ident)
                .then_some(info),
        )
    }

    fn current_epoch(&self, user: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .store
            .get(&epoch_key(user))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Issues a token to the user with id `user_id`, who signed in as `login` (the user must
    /// exist, be active and still have that login); returns it (shown once, never stored) and
    /// its grant, bound to the user's identity now. Purges some expired tokens first, and
    /// revokes the user's oldest tokens beyond the cap.
    pub fn issue(
        &self,
        user_id: &str,
        login: &str,
        scopes: &[String],
        ttl_secs: u64,
    ) -> Result<(String, TokenInfo), TokenError> {
        let user = (self.directory)(user_id)
            .filter(|u| u.active && u.login.to_lowercase() == login.to_lowercase())
            .ok_or_else(|| TokenError::NoSuchUser(user_id.to_owned()))?;
        let _guard = self.write.lock().map_err(|_| poisoned())?;
        self.purge_expired_locked(PURGE_BATCH)?;
        let id = user.id.as_str();
        let mut ops = Vec::new();
        let epoch = match self.current_epoch(id)? {
            Some(e) => e,
            None => {
                let e = hex(&rand::random::<[u8; 16]>());
                ops.push(Op::Put(epoch_key(id), e.clone().into_bytes()));
                e
            }
        };
        // The user's live tokens, oldest first; expired ones go whatever the cap.
        let mut live = Vec::new();
        for (k, h) in self.user_index(id)? {
            match self.row(&h)? {
                Some(info) if info.exp > now() => live.push((k, h, info)),
                Some(info) => ops.extend(delete_ops(&h, &info, k)),
                None => ops.push(Op::Delete(k)),
            }
        }
        let excess = (live.len() + 1).saturating_sub(self.max_per_user);
        for (k, h, info) in live.into_iter().take(excess) {
            ops.extend(delete_ops(&h, &info, k));
        }
        if excess > 0 {
            tracing::info!(
                user = id,
                revoked = excess,
                "token cap reached; oldest tokens revoked"
            );
        }

        let raw: [u8; 32] = rand::random();
        let token = format!(
            "cgt_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        );
        let h = token_hash(&token);
        let info = TokenInfo {
            user: id.into(),
            login: user.login.clone(),
            scopes: scopes.to_vec(),
            exp: now().saturating_add(ttl_secs),
            issued_us: now_us(),
            ident: fingerprint(&epoch, &user),
            epoch,
        };
        let body = serde_json::to_vec(&info).map_err(corrupt)?;
        let uk = user_key(id, info.issued_us, &h);
        ops.push(Op::Put(exp_key(info.exp, &h), uk.clone()));
        ops.push(Op::Put(uk, Vec::new()));
        ops.push(Op::Put(row_key(&h), body));
        self.apply(ops)?;
        Ok((token, info))
    }

    fn row(&self, h: &str) -> Result<Option<TokenInfo>, StoreError> {
        match self.store.get(&row_key(h))? {
            Some(v) => Ok(serde_json::from_slice(&v).ok()),
            None => Ok(None),
        }
    }

    /// `(index key, token hash)` of every token of `user`, oldest first.
    fn user_index(&self, user: &str) -> Result<Vec<(Vec<u8>, String)>, StoreError> {
        let mut out = Vec::new();
        self.store.scan_prefix(&user_prefix(user), &mut |k, _| {
            if let Some(h) = hash_of(k) {
                out.push((k.to_vec(), h));
            }
            Ok(true)
        })?;
        Ok(out)
    }

    /// The grant of a valid token: unexpired, and its user exists, is active and is still
    /// the identity it was issued to (same epoch, login and password hash). Seeing the user
    /// deactivated revokes all their tokens for good.
    pub fn verify(&self, token: &str) -> Option<TokenInfo> {
        if token.len() > 200 {
            return None;
        }
        let generation = self.generation();
        let h = token_hash(token);
        let info = self.row(&h).ok()??;
        if info.exp <= now() || info.epoch.is_empty() {
            return None;
        }
        let epoch = self.current_epoch(&info.user).ok()?;
        self.remember(generation, h, &info, &epoch);
        if epoch? != info.epoch {
            return None;
        }
        let user = (self.directory)(&info.user)?;
        if !user.active {
            if let Err(e) = self.revoke_user(&info.user) {
                tracing::error!(error = %e, "revoking the tokens of a deactivated user failed");
            }
            return None;
        }
        (user.id.as_str() == info.user && fingerprint(&info.epoch, &user) == info.ident)
            .then_some(info)
    }

    /// Revokes a token; false if it was unknown.
    pub fn revoke(&self, token: &str) -> Result<bool, StoreError> {
        let _guard = self.write.lock().map_err(|_| poisoned())?;
        let h = token_hash(token);
        let Some(v) = self.store.get(&row_key(&h))? else {
            return Ok(false);
        };
        let ops = match serde_json::from_slice::<TokenInfo>(&v) {
            Ok(info) => {
                let uk = user_key(&info.user, info.issued_us, &h);
                delete_ops(&h, &info, uk).to_vec()
            }
            Err(_) => vec![Op::Delete(row_key(&h))],
        };
        self.apply(ops)?;
        Ok(true)
    }

    /// Revokes every token of `user` and replaces their epoch, so no token issued before
    /// now is honoured again. Returns how many stored tokens were removed.
    pub fn revoke_user(&self, user: &str) -> Result<usize, StoreError> {
        let _guard = self.write.lock().map_err(|_| poisoned())?;
        let index = self.user_index(user)?;
        if index.is_empty() && self.current_epoch(user)?.is_none() {
            // Nothing to revoke: no write (an import revokes for every new user).
            return Ok(0);
        }
        let mut ops = vec![Op::Delete(epoch_key(user))];
        let mut n = 0;
        for (k, h) in index {
            match self.row(&h)? {
                Some(info) => {
                    ops.extend(delete_ops(&h, &info, k));
                    n += 1;
                }
                None => ops.push(Op::Delete(k)),
            }
        }
        self.apply(ops)?;
        Ok(n)
    }

    /// Removes up to `limit` expired tokens; returns how many.
    pub fn purge_expired(&self, limit: usize) -> Result<usize, StoreError> {
        let _guard = self.write.lock().map_err(|_| poisoned())?;
        self.purge_expired_locked(limit)
    }

    fn purge_expired_locked(&self, limit: usize) -> Result<usize, StoreError> {
        let end = format!("toke/{:020}/", now() + 1).into_bytes();
        let mut ops = Vec::new();
        let mut n = 0;
        self.store
            .scan(b"toke/", Bound::Excluded(&end), &mut |k, v| {
                if n >= limit {
                    return Ok(false);
                }
                if let Some(h) = hash_of(k) {
                    ops.push(Op::Delete(row_key(&h)));
                }
                ops.push(Op::Delete(k.to_vec()));
                if !v.is_empty() {
                    ops.push(Op::Delete(v.to_vec()));
                }
                n += 1;
                Ok(true)
            })?;
        if !ops.is_empty() {
            self.apply(ops)?;
        }
        Ok(n)
    }

    /// Removes token rows written before tokens had epochs and indexes (they can never be
    /// honoured, and nothing else would ever delete them). Runs once per data dir.
    pub fn sweep_legacy(&self) -> Result<usize, StoreError> {
        const DONE: &[u8] = b"meta/tokens_indexed";
        if self.store.get(DONE)?.is_some() {
            return Ok(0);
        }
        let _guard = self.write.lock().map_err(|_| poisoned())?;
        let mut doomed = Vec::new();
        self.store.scan_prefix(b"tok/", &mut |k, v| {
            let legacy = serde_json::from_slice::<TokenInfo>(v)
                .map(|i| i.epoch.is_empty())
                .unwrap_or(true);
            if legacy {
                doomed.push(Op::Delete(k.to_vec()));
            }
            Ok(true)
        })?;
        let n = doomed.len();
        for chunk in doomed.chunks(1000) {
            self.apply(chunk.to_vec())?;
        }
        self.store.put(DONE, b"1")?;
        Ok(n)
    }

    /// Stored token rows (for tests and operators).
    pub fn stored(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        self.store.scan_prefix(b"tok/", &mut |_, _| {
            n += 1;
            Ok(true)
        })?;
        Ok(n)
    }
}

fn delete_ops(h: &str, info: &TokenInfo, user_key: Vec<u8>) -> [Op; 3] {
    [
        Op::Delete(row_key(h)),
        Op::Delete(exp_key(info.exp, h)),
        Op::Delete(user_key),
    ]
}

fn poisoned() -> StoreError {
    StoreError::Engine("token lock poisoned".into())
}

/// Parses a lifetime like `90s`, `30m`, `1h`, `7d`.
pub fn parse_ttl(s: &str) -> Option<u64> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = n.parse().ok()?;
    n.checked_mul(match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;
    use std::collections::HashMap;

    type Users = Arc<Mutex<HashMap<String, User>>>;

    fn user(id: &str, login: &str, hash: &str) -> User {
        User {
            id: id.into(),
            login: login.into(),
            name: "A".into(),
            password: None,
            password_hash: Some(hash.into()),
            subsystems: vec![],
            role: Role::User,
            active: true,
            extra: Default::default(),
        }
    }

    fn tokens(max: usize, users: &[User]) -> (Tokens, Users) {
        let map: Users = Arc::new(Mutex::new(
            users.iter().map(|u| (u.id.0.clone(), u.clone())).collect(),
        ));
        let m = map.clone();
        let dir: Directory = Arc::new(move |id| m.lock().ok()?.get(id).cloned());
        (Tokens::new(Arc::new(Store::memory()), dir, max), map)
    }

    fn set(users: &Users, u: User) {
        users.lock().expect("lock").insert(u.id.0.clone(), u);
    }

    /// A token verified once is answered from memory, and every revocation, identity change
    /// or deactivation is seen at once: the memory never outlives a token write.
    #[test]
    fn verified_tokens_are_answered_from_memory_until_any_token_write() {
        let u = user("u1", "a@x", "$h1");
        let (t, users) = tokens(100, std::slice::from_ref(&u));
        let (tok, info) = t.issue("u1", "a@x", &[], 3600).expect("issue");
        assert_eq!(
            t.verify_cached(&tok),
            None,
            "not read yet: the store decides"
        );
        assert_eq!(t.verify(&tok), Some(info.clone()));
        assert_eq!(t.verify_cached(&tok), Some(Some(info.clone())));
        // A password change (identity) is seen from memory too.
        set(&users, user("u1", "a@x", "$h2"));
        assert_eq!(t.verify_cached(&tok), Some(None));
        set(&users, u.clone());
        assert_eq!(t.verify_cached(&tok), Some(Some(info.clone())));
        // Deactivation goes to the store, which revokes.
        let mut off = u.clone();
        off.active = false;
        set(&users, off);
        assert_eq!(t.verify_cached(&tok), None);
        set(&users, u.clone());
        // Revocations clear the memory.
        let (tok2, info2) = t.issue("u1", "a@x", &[], 3600).expect("issue");
        assert_eq!(t.verify(&tok2), Some(info2));
        assert!(t.revoke(&tok2).expect("revoke"));
        assert_eq!(t.verify_cached(&tok2), None);
        assert_eq!(t.verify(&tok2), None);
        let (tok3, info3) = t.issue("u1", "a@x", &[], 3600).expect("issue");
        assert_eq!(t.verify(&tok3), Some(info3));
        t.revoke_user("u1").expect("revoke user");
        assert_eq!(t.verify_cached(&tok3), None);
        assert_eq!(t.verify(&tok3), None);
        assert_eq!(t.verify(&tok), None);
    }

    #[test]
    fn issue_verify_revoke() {
        let u = user("u1", "a@x", "$h1");
        let (t, _) = tokens(100, std::slice::from_ref(&u));
        let (tok, info) = t
            .issue("u1", "A@x", &["Contacts.Read".into()], 3600)
            .expect("issue");
        assert_eq!(info.login, "a@x");
        assert_eq!(t.verify(&tok), Some(info));
        assert_eq!(t.verify("cgt_nope"), None);
        assert!(t.revoke(&tok).expect("revoke"));
        assert_eq!(t.verify(&tok), None);
        assert_eq!(t.stored().expect("n"), 0, "revoke removes the row");
        let (old, _) = t.issue("u1", "a@x", &[], 0).expect("issue");
        assert_eq!(t.verify(&old), None, "expired");
        assert!(matches!(
            t.issue("u2", "a@x", &[], 60),
            Err(TokenError::NoSuchUser(_))
        ));
        assert!(
            t.issue("u1", "b@x", &[], 60).is_err(),
            "login changed since sign-in"
        );
        assert_eq!(
            parse_scopes("api://hq/Contacts.ReadWrite offline_access Contacts.Read"),
            vec!["Contacts.Read", "Contacts.ReadWrite"]
        );
        assert_eq!(parse_ttl("1h"), Some(3600));
        assert_eq!(parse_ttl("x"), None);
        assert_eq!(parse_ttl("99999999999999999999d"), None);
    }

    #[test]
    fn bound_to_identity() {
        let u = user("u1", "a@x", "$h1");
        let (t, users) = tokens(100, std::slice::from_ref(&u));
        let (tok, _) = t.issue("u1", "a@x", &[], 3600).expect("issue");
        for (what, changed) in [
            (
                "password",
                User {
                    password_hash: Some("$h2".into()),
                    ..u.clone()
                },
            ),
            (
                "login",
                User {
                    login: "b@x".into(),
                    ..u.clone()
                },
            ),
        ] {
            set(&users, changed);
            assert!(t.verify(&tok).is_none(), "{what}");
            set(&users, u.clone());
            assert!(t.verify(&tok).is_some(), "{what} back");
        }
        users.lock().expect("lock").remove("u1");
        assert!(t.verify(&tok).is_none(), "gone");
        // A new person with the same id, login and even hash: revoking starts a new epoch.
        set(&users, u.clone());
        assert_eq!(t.revoke_user("u1").expect("revoke"), 1);
        let (tok2, _) = t.issue("u1", "a@x", &[], 3600).expect("issue");
        assert!(t.verify(&tok).is_none());
        assert!(t.verify(&tok2).is_some());
        // Deactivation revokes for good.
        set(
            &users,
            User {
                active: false,
                ..u.clone()
            },
        );
        assert!(t.verify(&tok2).is_none(), "inactive");
        set(&users, u);
        assert!(
            t.verify(&tok2).is_none(),
            "stays revoked after reactivation"
        );
        assert_eq!(t.stored().expect("n"), 0);
    }

    #[test]
    fn cap_evicts_oldest_and_issue_purges_expired() {
        let (t, _) = tokens(3, &[user("u/1", "a@x", "$h1")]);
        let toks: Vec<String> = (0..5)
            .map(|_| t.issue("u/1", "a@x", &[], 3600).expect("issue").0)
            .collect();
        let alive: Vec<bool> = toks.iter().map(|x| t.verify(x).is_some()).collect();
        assert_eq!(alive, [false, false, true, true, true]);
        assert_eq!(t.stored().expect("n"), 3);

        let users: Vec<User> = (0..200)
            .map(|i| user(&format!("u{i}"), "x", "$h"))
            .collect();
        let (t, _) = tokens(100_000, &users);
        for i in 0..200 {
            t.issue(&format!("u{i}"), "x", &[], 0).expect("issue");
        }
        // Each issue purges up to PURGE_BATCH expired rows: only the newest may be left.
        assert!(t.stored().expect("n") <= 2, "{}", t.stored().expect("n"));
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let left = t.stored().expect("n");
        assert_eq!(t.purge_expired(1000).expect("purge"), left);
        assert_eq!(t.stored().expect("n"), 0);
    }
}
