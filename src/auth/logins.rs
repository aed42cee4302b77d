//! Local sign-in data for users of a remote CRM (`crm.hellohq.logins`): a JSON file
//! `{"users":[{"login","password"|"password_hash","role"}]}`. Plain passwords are hashed
//! with argon2 as the file is read; the CRM backend gets only the hashes.

use crate::domain::{Role, SignIn, User};
use crate::store::{Store, StoreError};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

/// Reads the file: sign-in data by lower-case login.
pub fn read_file(path: &Path) -> Result<HashMap<String, SignIn>, String> {
    #[derive(serde::Deserialize)]
    struct File {
        users: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Entry {
        login: String,
        #[serde(default)]
        password: Option<String>,
        #[serde(default)]
        password_hash: Option<String>,
        #[serde(default)]
        role: Role,
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("crm.hellohq.logins: {}: {e}", path.display()))?;
    let f: File = serde_json::from_str(&text)
        .map_err(|e| format!("crm.hellohq.logins: {}: {e}", path.display()))?;
    let mut out = HashMap::new();
    for (i, e) in f.users.into_iter().enumerate() {
        let hash = match (e.password, e.password_hash) {
            (Some(p), _) => Some(
                super::hash_password(&p)
                    .map_err(|m| format!("crm.hellohq.logins: users[{i}].password: {m}"))?,
            ),
            (None, h) => h,
        };
        out.insert(
            e.login.to_lowercase(),
            SignIn {
                password_hash: hash,
                role: e.role,
            },
        );
    }
    Ok(out)
}

/// Where sign-in data changed through crmgate is kept, by lower-case login. The key is the
/// one the helloHQ backend used when it kept this data itself, so data dirs carry over.
const PREFIX: &[u8] = b"hq/login/";

/// The sign-in data crmgate keeps for users of a CRM that holds none (passwords and roles
/// of helloHQ users): the logins file, with the changes made through the admin API on top.
/// Every identity read (Basic sign-in, token fingerprints, the admin role) lays it over the
/// CRM's user record with [`SignIns::overlay`]; the CRM's records carry no password or role.
pub struct SignIns {
    store: Arc<Store>,
    map: RwLock<HashMap<String, SignIn>>,
}

impl SignIns {
    /// The file's entries (`file`, from [`read_file`]) with the stored changes on top.
    pub fn open(store: Arc<Store>, file: HashMap<String, SignIn>) -> Result<SignIns, StoreError> {
        let mut map = file;
        store.scan_prefix(PREFIX, &mut |k, v| {
            let login = String::from_utf8_lossy(&k[PREFIX.len()..]).into_owned();
            let (password_hash, role): (Option<String>, Role) = serde_json::from_slice(v)
                .map_err(|e| StoreError::Engine(format!("{}: {e}", String::from_utf8_lossy(k))))?;
            map.insert(
                login,
                SignIn {
                    password_hash,
                    role,
                },
            );
            Ok(true)
        })?;
        Ok(SignIns {
            store,
            map: RwLock::new(map),
        })
    }

    /// The sign-in data of `login`, if crmgate has any.
    pub fn get(&self, login: &str) -> Option<SignIn> {
        self.map.read().ok()?.get(&login.to_lowercase()).cloned()
    }

    /// `user` as crmgate signs them in: password hash and role from the sign-in data (none
    /// and `user` when there is none), whatever the CRM's record said.
    pub fn overlay(&self, user: &mut User) {
        let s = self.get(&user.login);
        user.password_hash = s.as_ref().and_then(|s| s.password_hash.clone());
        user.role = s.map(|s| s.role).unwrap_or_default();
    }

    /// Stores the sign-in data of `login`, durable before it returns (blocking: run it on
    /// the blocking pool).
    pub fn set(&self, login: &str, s: SignIn) -> Result<(), StoreError> {
        let login = login.to_lowercase();
        let mut key = PREFIX.to_vec();
        key.extend_from_slice(login.as_bytes());
        let value = serde_json::to_vec(&(&s.password_hash, &s.role))
            .map_err(|e| StoreError::Engine(e.to_string()))?;
        self.store.put(&key, &value)?;
        self.map
            .write()
            .map_err(|_| StoreError::Engine("sign-in data lock poisoned".into()))?
            .insert(login, s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_changes_win_over_the_file_and_survive_a_reopen() {
        let store = Arc::new(Store::memory());
        let mut file = HashMap::new();
        file.insert(
            "anna@x.test".to_owned(),
            SignIn {
                password_hash: Some("$file".into()),
                role: Role::User,
            },
        );
        let s = SignIns::open(store.clone(), file.clone()).expect("opens");
        let mut u = User {
            id: "u1".into(),
            login: "Anna@X.test".into(),
            name: "Anna".into(),
            password: None,
            password_hash: Some("$from-the-crm".into()),
            subsystems: Vec::new(),
            role: Role::Admin,
            active: true,
            extra: Default::default(),
        };
        s.overlay(&mut u);
        assert_eq!(u.password_hash.as_deref(), Some("$file"));
        assert_eq!(u.role, Role::User, "the CRM's record grants nothing");
        s.set(
            "ANNA@x.test",
            SignIn {
                password_hash: Some("$new".into()),
                role: Role::Admin,
            },
        )
        .expect("stored");
        let again = SignIns::open(store, file).expect("reopens");
        again.overlay(&mut u);
        assert_eq!(u.password_hash.as_deref(), Some("$new"));
        assert_eq!(u.role, Role::Admin);
        let mut stranger = u.clone();
        stranger.login = "nobody@x.test".into();
        again.overlay(&mut stranger);
        assert_eq!(stranger.password_hash, None, "no sign-in data: no sign-in");
        assert_eq!(stranger.role, Role::User);
    }
}
