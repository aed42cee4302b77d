//! Record writes of the admin API and the `import` command: whole records checked (references,
//! logins, the backend's writable kinds), passwords hashed, tokens of users whose identity
//! changes revoked, then written through the write service, acknowledged once the replica
//! has them.

use crate::app::{hash_passwords, App, AppError};
use crate::auth;
use crate::crm::{Crm, CrmBackend, Precondition, Versioned};
use crate::domain::dataset::{check_record, Dataset, Problem};
use crate::domain::{Kind, Record, User};

/// The live record of the user with id `id`.
fn user_by_id(app: &App, id: &str) -> Option<User> {
    match app.replica.read().ok()?.record(Kind::User, id)? {
        Record::User(u) => Some(u),
        _ => None,
    }
}

/// Revokes the tokens of users whose identity a write changes: created (an id may be
/// reused), deactivated, or with another login or password.
fn revoke_changed(app: &App, old: Option<&User>, new: &User) -> Result<(), AppError> {
    let changed = match old {
        None => true,
        Some(o) => {
            o.login.to_lowercase() != new.login.to_lowercase()
                || o.password_hash != new.password_hash
                || (o.active && !new.active)
        }
    };
    if changed {
        let n = app.tokens.revoke_user(new.id.as_str())?;
        if n > 0 {
            tracing::info!(user = %new.id, revoked = n, "user identity changed; tokens revoked");
        }
    }
    Ok(())
}

/// Refuses writes of record kinds the CRM does not take from crmgate (its capabilities),
/// before anything is sent.
fn check_writable(app: &App, kind: Kind) -> Result<(), AppError> {
    let caps = &app.view.capabilities;
    if caps.can_write(kind) {
        return Ok(());
    }
    let writable: Vec<&str> = caps.writable.iter().map(|k| k.plural()).collect();
    Err(AppError::Invalid(vec![Problem {
        path: kind.plural().into(),
        message: format!(
            "with crm.backend = \"{}\" {kind}s are changed in {}; crmgate writes {} only",
            app.config.crm.backend.name(),
            caps.crm,
            writable.join(" and ")
        ),
    }]))
}

fn known(app: &App, kind: Kind, id: &str) -> bool {
    app.replica
        .read()
        .map(|e| e.record(kind, id).is_some())
        .unwrap_or(false)
}

/// Creates or replaces a whole record through the CRM; acknowledged once the CRM stored
/// it and the replica applied it. Returns the stored version and whether it was created.
pub async fn put(
    app: &App,
    mut record: Record,
    pre: Precondition,
) -> Result<(Versioned, bool), AppError> {
    let kind = record.kind();
    if let (Record::User(u), Some(signins)) = (&record, &app.signins) {
        return put_sign_in(app, signins.clone(), u.clone(), pre).await;
    }
    check_writable(app, kind)?;
    let mut problems = Vec::new();
    check_record(
        &record,
        "",
        &|k, id| known(app, k, id) || (k == kind && id == record.id()),
        &mut problems,
    );
    for p in &mut problems {
        p.path = p.path.trim_start_matches('.').to_owned();
    }
    if let Record::User(u) = &record {
        let taken = app.replica.read().ok().and_then(|e| {
            e.find_login(&u.login)
                .map(|i| e.user_id(i).to_owned())
                .filter(|owner| *owner != u.id.0)
        });
        if let Some(owner) = taken {
            problems.push(Problem {
                path: "login".into(),
                message: format!("login \"{}\" is already used by user \"{owner}\"", u.login),
            });
        }
    }
    if !problems.is_empty() {
        return Err(AppError::Invalid(problems));
    }
    let existing = app.crm.get(kind, record.id().to_owned()).await?;
    if let Record::User(u) = &mut record {
        if let Some(p) = u.password.take() {
            u.password_hash = Some(auth::hash_password(&p).map_err(|e| {
                AppError::Invalid(vec![Problem {
                    path: "password".into(),
                    message: e,
                }])
            })?);
        } else if u.password_hash.is_none() {
            // The admin API never shows the hash, so a read-modify-write keeps it.
            if let Some(Versioned {
                record: Record::User(old),
                ..
            }) = &existing
            {
                u.password_hash = old.password_hash.clone();
            }
        }
    }
    if let Record::User(u) = &record {
        // Before the write, so no window lets an old token meet the new identity.
        let old = match &existing {
            Some(Versioned {
                record: Record::User(o),
                ..
            }) => Some(o),
            _ => None,
        };
        revoke_changed(app, old, u)?;
    }
    let v = app.writer.write_record(record, pre).await?;
    Ok((v, existing.is_none()))
}

fn invalid(path: &str, message: String) -> AppError {
    AppError::Invalid(vec![Problem {
        path: path.into(),
        message,
    }])
}

/// A user write on a CRM that keeps no sign-in data: only the password and the role may
/// change, and crmgate keeps them itself (durable before the answer); the CRM is sent
/// nothing. The user record must otherwise be the one GET returns.
async fn put_sign_in(
    app: &App,
    signins: std::sync::Arc<auth::logins::SignIns>,
    mut u: User,
    pre: Precondition,
) -> Result<(Versioned, bool), AppError> {
    let crm = app.view.capabilities.crm;
    let Some(Versioned {
        record: Record::User(cur),
        version,
    }) = app.crm.get(Kind::User, u.id.as_str().to_owned()).await?
    else {
        return Err(match pre {
            Precondition::MustNotExist | Precondition::None => invalid(
                "users",
                format!(
                    "with crm.backend = \"{}\" users are created in {crm}",
                    app.config.crm.backend.name()
                ),
            ),
            _ => crate::crm::CrmError::NotFound.into(),
        });
    };
    match &pre {
        Precondition::MustNotExist => return Err(crate::crm::CrmError::AlreadyExists.into()),
        Precondition::Version(v) if *v != version => {
            return Err(crate::crm::CrmError::PreconditionFailed {
                current: Some(version),
            }
            .into())
        }
        _ => {}
    }
    let mut differ = Vec::new();
    if u.login != cur.login {
        differ.push("login");
    }
    if u.name != cur.name {
        differ.push("name");
    }
    if u.subsystems != cur.subsystems {
        differ.push("subsystems");
    }
    if u.active != cur.active {
        differ.push("active");
    }
    if u.extra != cur.extra {
        differ.push("other fields");
    }
    if let Some(first) = differ.first() {
        return Err(invalid(
            first,
            format!(
                "crmgate keeps only password and role of {crm} users; change {} in {crm} \
                 (send the record as GET returns it, with the new password or role)",
                differ.join(", ")
            ),
        ));
    }
    let old = app.signed_in_as(cur);
    let password_hash = match u.password.take() {
        Some(p) => Some(auth::hash_password(&p).map_err(|e| invalid("password", e))?),
        // The admin API never shows the hash, so a read-modify-write keeps it.
        None => u.password_hash.take().or_else(|| old.password_hash.clone()),
    };
    let mut new = old.clone();
    new.password_hash = password_hash.clone();
    new.role = u.role;
    revoke_changed(app, Some(&old), &new)?;
    let login = new.login.clone();
    let s = crate::domain::SignIn {
        password_hash,
        role: u.role,
    };
    tokio::task::spawn_blocking(move || signins.set(&login, s))
        .await
        .map_err(|e| AppError::Io(format!("sign-in data worker failed: {e}")))??;
    Ok((
        Versioned {
            record: Record::User(new),
            version,
        },
        false,
    ))
}

/// Deletes a record through the CRM; acknowledged once the replica applied it.
pub async fn delete(app: &App, kind: Kind, id: &str, pre: Precondition) -> Result<(), AppError> {
    check_writable(app, kind)?;
    app.writer.delete_record(kind, id, pre).await?;
    if kind == Kind::User {
        // A failure here leaves no live token: the user is gone, and a user created
        // later under this id starts a new token epoch.
        if let Err(e) = app.tokens.revoke_user(id) {
            tracing::error!(error = %e, user = id, "revoking a deleted user's tokens failed");
        }
    }
    Ok(())
}

/// Upserts a whole dataset by id (the `import` command), in chunks, reporting progress.
pub async fn import(
    app: &App,
    mut ds: Dataset,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<usize, AppError> {
    let problems = ds.check(&|k, id| known(app, k, id));
    if !problems.is_empty() {
        return Err(AppError::Invalid(problems));
    }
    hash_passwords(&mut ds)?;
    for u in &ds.users {
        revoke_changed(app, user_by_id(app, u.id.as_str()).as_ref(), u)?;
    }
    let total = ds.len();
    let mut done = 0;
    let records: Vec<Record> = ds.records().collect();
    for chunk in records.chunks(5000) {
        match &app.crm {
            Crm::HelloHq(_) | Crm::HubSpot(_) => {
                return Err(AppError::Io(format!(
                    "import writes the embedded CRM; with crm.backend = \"{}\" the data comes \
                     from that CRM",
                    app.config.crm.backend.name()
                )))
            }
            Crm::Embedded(e) => {
                let (e, chunk) = (e.clone(), chunk.to_vec());
                tokio::task::spawn_blocking(move || e.put_many_blocking(&chunk))
                    .await
                    .map_err(|e| AppError::Io(format!("import worker failed: {e}")))??;
            }
        }
        done += chunk.len();
        progress(done, total);
    }
    app.catch_up().await?;
    Ok(done)
}
