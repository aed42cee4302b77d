//! Local sign-in data for users of a remote CRM (`crm.hellohq.logins`): a JSON file
//! `{"users":[{"login","password"|"password_hash","role"}]}`. Plain passwords are hashed
//! with argon2 as the file is read; the CRM backend gets only the hashes.

use crate::domain::{Role, SignIn};
use std::collections::HashMap;
use std::path::Path;

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
