//! The embedded CRM: records in crmgate's own store, seeded once from a dataset file when the
//! data dir is empty. Its change feed is a log keyed by a write sequence that holds each live
//! record inline (one entry per record, the newest) and one tombstone per deletion, so the feed
//! from the start is the initial load and reads sequentially.
//!
//! Keys: `crm/seq` (last sequence), `crm/log/{seq:020}` (kind letter, `+` and the record JSON,
//! or `-` and the id of a deleted record),
//! `crm/r/{kind}/{id}` (the sequence of the record's log entry; its version).

use super::{Change, ChangePage, CrmBackend, CrmError, Precondition, Versioned};
use crate::domain::dataset::Dataset;
use crate::domain::{Contact, ContactField, Kind, Record};
use crate::store::{KvStore, Op, Store, StoreError};
use std::ops::Bound;
use std::sync::{Arc, Mutex};

const SEQ_KEY: &[u8] = b"crm/seq";
/// Records per store transaction while seeding (bounds the engine's dirty memory).
const SEED_CHUNK: usize = 20_000;

fn idx_key(kind: Kind, id: &str) -> Vec<u8> {
    format!("crm/r/{}/{}", kind.plural(), id).into_bytes()
}

fn log_key(seq: u64) -> Vec<u8> {
    format!("crm/log/{seq:020}").into_bytes()
}

fn corrupt(key: &[u8], e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        msg: e.to_string(),
    }
}

fn kind_byte(k: Kind) -> u8 {
    match k {
        Kind::Subsystem => b's',
        Kind::User => b'u',
        Kind::Company => b'k',
        Kind::Contact => b'c',
        Kind::Project => b'p',
        Kind::Lead => b'l',
    }
}

fn byte_kind(b: u8) -> Option<Kind> {
    Kind::ALL.into_iter().find(|k| kind_byte(*k) == b)
}

/// A log value: the kind's letter, then `+` and the record's JSON, or `-` and the id of a
/// deleted record. One byte of framing keeps the feed a single typed parse per record.
fn entry_bytes(kind: Kind, id: &str, record: Option<&Record>) -> Vec<u8> {
    match record {
        Some(r) => {
            let mut v = vec![kind_byte(kind), b'+'];
            v.extend_from_slice(r.to_json_string().as_bytes());
            v
        }
        None => {
            let mut v = vec![kind_byte(kind), b'-'];
            v.extend_from_slice(id.as_bytes());
            v
        }
    }
}

fn parse_entry(key: &[u8], bytes: &[u8]) -> Result<(Kind, String, Option<Record>), StoreError> {
    let (Some(&k), Some(&op)) = (bytes.first(), bytes.get(1)) else {
        return Err(corrupt(key, "short log entry"));
    };
    let kind = byte_kind(k).ok_or_else(|| corrupt(key, "unknown kind"))?;
    let body = std::str::from_utf8(&bytes[2..]).map_err(|e| corrupt(key, e))?;
    match op {
        b'+' => {
            let r = Record::from_json_str(kind, body).map_err(|m| corrupt(key, m))?;
            Ok((kind, r.id().to_owned(), Some(r)))
        }
        b'-' => Ok((kind, body.to_owned(), None)),
        _ => Err(corrupt(key, "bad log entry")),
    }
}

/// The embedded CRM backend. Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedCrm {
    inner: Arc<Inner>,
}

struct Inner {
    /// Test switch: answer every call as "unavailable" (a CRM outage).
    down: std::sync::atomic::AtomicBool,
    store: Arc<Store>,
    /// Serialises writers; holds the last sequence number.
    seq: Mutex<u64>,
}

impl EmbeddedCrm {
    /// Opens the embedded CRM in `store`.
    pub fn open(store: Arc<Store>) -> Result<EmbeddedCrm, StoreError> {
        let seq = match store.get(SEQ_KEY)? {
            Some(v) => String::from_utf8_lossy(&v)
                .parse::<u64>()
                .map_err(|e| corrupt(SEQ_KEY, e))?,
            None => 0,
        };
        Ok(EmbeddedCrm {
            inner: Arc::new(Inner {
                down: std::sync::atomic::AtomicBool::new(false),
                store,
                seq: Mutex::new(seq),
            }),
        })
    }

    /// Simulates an outage: while set, every call fails as `Unavailable` (tests and drills).
    pub fn set_down(&self, down: bool) {
        self.inner
            .down
            .store(down, std::sync::atomic::Ordering::SeqCst);
    }

    fn check_up(&self) -> Result<(), CrmError> {
        if self.inner.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(CrmError::Unavailable {
                retry_after: Some(std::time::Duration::from_secs(5)),
                reason: "embedded CRM switched down".into(),
            });
        }
        Ok(())
    }

    /// True when the CRM holds no record and never did.
    pub fn is_empty(&self) -> bool {
        self.inner.seq.lock().map(|s| *s == 0).unwrap_or(false)
    }

    /// Writes a whole (already checked) dataset into an empty CRM: the seed. It is written
    /// in chunks and the sequence key last, so a crash part-way leaves a CRM that still counts
    /// as empty and is seeded again, over the same keys. Returns the records as the change
    /// feed from the start would, and the cursor after them, so the replica can be primed
    /// without reading them back.
    pub fn seed(&self, ds: Dataset) -> Result<(Vec<Change>, String), CrmError> {
        let mut seq = self.lock_seq()?;
        let mut next = *seq;
        let mut ops = Vec::with_capacity(SEED_CHUNK * 2);
        let mut changes = Vec::with_capacity(ds.len());
        let Dataset {
            subsystems,
            users,
            companies,
            contacts,
            projects,
            leads,
        } = ds;
        let records = subsystems
            .into_iter()
            .map(Record::Subsystem)
            .chain(users.into_iter().map(Record::User))
            .chain(companies.into_iter().map(Record::Company))
            .chain(contacts.into_iter().map(Record::Contact))
            .chain(projects.into_iter().map(Record::Project))
            .chain(leads.into_iter().map(Record::Lead));
        for r in records {
            next += 1;
            ops.extend(self.write_ops(&r, next, None)?);
            changes.push(Change::Upsert(Versioned {
                record: r,
                version: next.to_string(),
            }));
            if ops.len() >= SEED_CHUNK * 2 {
                self.inner.store.apply(std::mem::take(&mut ops))?;
            }
        }
        ops.push(Op::Put(SEQ_KEY.to_vec(), next.to_string().into_bytes()));
        self.inner.store.apply(ops)?;
        *seq = next;
        Ok((changes, next.to_string()))
    }

    fn lock_seq(&self) -> Result<std::sync::MutexGuard<'_, u64>, CrmError> {
        self.inner
            .seq
            .lock()
            .map_err(|_| CrmError::Store(StoreError::Engine("embedded CRM lock poisoned".into())))
    }

    fn write_ops(&self, r: &Record, seq: u64, old: Option<u64>) -> Result<Vec<Op>, CrmError> {
        let mut ops = vec![
            Op::Put(log_key(seq), entry_bytes(r.kind(), r.id(), Some(r))),
            Op::Put(idx_key(r.kind(), r.id()), seq.to_string().into_bytes()),
        ];
        if let Some(old) = old {
            ops.push(Op::Delete(log_key(old)));
        }
        Ok(ops)
    }

    fn version(&self, kind: Kind, id: &str) -> Result<Option<u64>, CrmError> {
        let key = idx_key(kind, id);
        match self.inner.store.get(&key)? {
            None => Ok(None),
            Some(v) => Ok(Some(
                std::str::from_utf8(&v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| corrupt(&key, "bad version"))?,
            )),
        }
    }

    fn read(&self, kind: Kind, id: &str) -> Result<Option<(u64, Record)>, CrmError> {
        let Some(seq) = self.version(kind, id)? else {
            return Ok(None);
        };
        let key = log_key(seq);
        let bytes = self
            .inner
            .store
            .get(&key)?
            .ok_or_else(|| corrupt(&key, "index points at a missing log entry"))?;
        match parse_entry(&key, &bytes)? {
            (_, _, Some(r)) => Ok(Some((seq, r))),
            _ => Err(corrupt(&key, "index points at a tombstone").into()),
        }
    }

    fn check_pre(pre: &Precondition, cur: Option<u64>) -> Result<(), CrmError> {
        match (pre, cur) {
            (Precondition::None, _) => Ok(()),
            (Precondition::MustNotExist, None) => Ok(()),
            (Precondition::MustNotExist, Some(_)) => Err(CrmError::AlreadyExists),
            (Precondition::MustExist | Precondition::Version(_), None) => Err(CrmError::NotFound),
            (Precondition::MustExist, Some(_)) => Ok(()),
            (Precondition::Version(v), Some(c)) if *v == c.to_string() => Ok(()),
            (Precondition::Version(_), Some(c)) => Err(CrmError::PreconditionFailed {
                current: Some(c.to_string()),
            }),
        }
    }

    /// Synchronous form of [`CrmBackend::changes`].
    pub fn changes_blocking(
        &self,
        cursor: Option<&str>,
        max: usize,
    ) -> Result<ChangePage, CrmError> {
        self.check_up()?;
        let from: u64 = match cursor {
            None => 0,
            Some(c) => c.parse().map_err(|_| {
                CrmError::Invalid(vec![crate::domain::dataset::Problem {
                    path: "cursor".into(),
                    message: format!("not a cursor of this CRM: {c:?}"),
                }])
            })?,
        };
        let start = log_key(from + 1);
        let end = b"crm/log0".to_vec(); // '0' follows '/'
        let mut changes = Vec::new();
        let mut next = from;
        let mut more = false;
        self.inner
            .store
            .scan(&start, Bound::Excluded(&end), &mut |k, v| {
                if changes.len() >= max {
                    more = true;
                    return Ok(false);
                }
                next = std::str::from_utf8(&k[8..])
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| corrupt(k, "bad log key"))?;
                changes.push(match parse_entry(k, v)? {
                    (_, _, Some(record)) => Change::Upsert(Versioned {
                        record,
                        version: next.to_string(),
                    }),
                    (kind, id, None) => Change::Deleted(kind, id),
                });
                Ok(true)
            })?;
        Ok(ChangePage {
            changes,
            next: next.to_string(),
            more,
        })
    }

    /// Synchronous form of [`CrmBackend::put`].
    pub fn put_blocking(&self, record: Record, pre: Precondition) -> Result<Versioned, CrmError> {
        self.check_up()?;
        let mut seq = self.lock_seq()?;
        let cur = self.version(record.kind(), record.id())?;
        Self::check_pre(&pre, cur)?;
        let next = *seq + 1;
        let mut ops = self.write_ops(&record, next, cur)?;
        ops.push(Op::Put(SEQ_KEY.to_vec(), next.to_string().into_bytes()));
        self.inner.store.apply(ops)?;
        *seq = next;
        Ok(Versioned {
            record,
            version: next.to_string(),
        })
    }

    /// Synchronous form of [`CrmBackend::update_contact`]: the changed fields are applied
    /// onto the stored copy, read and written under the one write lock.
    pub fn update_contact_blocking(
        &self,
        contact: Contact,
        changed: &[ContactField],
        pre: Precondition,
    ) -> Result<Versioned, CrmError> {
        self.check_up()?;
        let mut seq = self.lock_seq()?;
        let Some((cur, Record::Contact(stored))) = self.read(Kind::Contact, contact.id.as_str())?
        else {
            return Err(CrmError::NotFound);
        };
        Self::check_pre(&pre, Some(cur))?;
        let record = Record::Contact(stored.with_fields_from(&contact, changed));
        let next = *seq + 1;
        let mut ops = self.write_ops(&record, next, Some(cur))?;
        ops.push(Op::Put(SEQ_KEY.to_vec(), next.to_string().into_bytes()));
        self.inner.store.apply(ops)?;
        *seq = next;
        Ok(Versioned {
            record,
            version: next.to_string(),
        })
    }

    /// Upserts many records in one durable batch (imports).
    pub fn put_many_blocking(&self, records: &[Record]) -> Result<usize, CrmError> {
        let mut seq = self.lock_seq()?;
        let mut next = *seq;
        let mut ops = Vec::with_capacity(records.len() * 3 + 1);
        let mut written: std::collections::HashMap<(Kind, &str), u64> = Default::default();
        for r in records {
            let old = match written.get(&(r.kind(), r.id())) {
                Some(v) => Some(*v),
                None => self.version(r.kind(), r.id())?,
            };
            next += 1;
            ops.extend(self.write_ops(r, next, old)?);
            written.insert((r.kind(), r.id()), next);
        }
        ops.push(Op::Put(SEQ_KEY.to_vec(), next.to_string().into_bytes()));
        self.inner.store.apply(ops)?;
        *seq = next;
        Ok(records.len())
    }

    /// Synchronous form of [`CrmBackend::delete`].
    pub fn delete_blocking(&self, kind: Kind, id: &str, pre: Precondition) -> Result<(), CrmError> {
        self.check_up()?;
        let mut seq = self.lock_seq()?;
        let cur = self.version(kind, id)?;
        let Some(old) = cur else {
            return Err(CrmError::NotFound);
        };
        Self::check_pre(&pre, cur)?;
        let next = *seq + 1;
        self.inner.store.apply(vec![
            Op::Delete(idx_key(kind, id)),
            Op::Delete(log_key(old)),
            Op::Put(log_key(next), entry_bytes(kind, id, None)),
            Op::Put(SEQ_KEY.to_vec(), next.to_string().into_bytes()),
        ])?;
        *seq = next;
        Ok(())
    }

    /// Mirrors a batch of records fetched from an external CRM: writes only the records
    /// that differ from what is stored (a re-read of an unchanged record writes nothing) and
    /// deletes the listed ones that exist, in one durable batch. Returns how many records
    /// were written or deleted.
    pub fn mirror_blocking(
        &self,
        upserts: Vec<Record>,
        deletes: &[(Kind, String)],
    ) -> Result<usize, CrmError> {
        let mut seq = self.lock_seq()?;
        let mut next = *seq;
        let mut ops = Vec::new();
        let mut written: std::collections::HashMap<(Kind, String), u64> = Default::default();
        for r in upserts {
            let key = (r.kind(), r.id().to_owned());
            let old = match written.get(&key) {
                Some(v) => Some(*v),
                None => match self.read(r.kind(), r.id())? {
                    Some((_, cur)) if cur == r => continue,
                    Some((v, _)) => Some(v),
                    None => None,
                },
            };
            next += 1;
            ops.extend(self.write_ops(&r, next, old)?);
            written.insert(key, next);
        }
        let mut changed = written.len();
        for (kind, id) in deletes {
            let cur = match written.remove(&(*kind, id.clone())) {
                Some(v) => Some(v),
                None => self.version(*kind, id)?,
            };
            let Some(old) = cur else { continue };
            next += 1;
            changed += 1;
            ops.push(Op::Delete(idx_key(*kind, id)));
            ops.push(Op::Delete(log_key(old)));
            ops.push(Op::Put(log_key(next), entry_bytes(*kind, id, None)));
        }
        if ops.is_empty() {
            return Ok(0);
        }
        ops.push(Op::Put(SEQ_KEY.to_vec(), next.to_string().into_bytes()));
        self.inner.store.apply(ops)?;
        *seq = next;
        Ok(changed)
    }

    /// The ids of every stored record of `kind`.
    pub fn ids_blocking(&self, kind: Kind) -> Result<Vec<String>, CrmError> {
        let prefix = format!("crm/r/{}/", kind.plural());
        let mut out = Vec::new();
        self.inner
            .store
            .scan_prefix(prefix.as_bytes(), &mut |k, _| {
                out.push(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
                Ok(true)
            })?;
        Ok(out)
    }

    /// A stored record and its version, without the outage switch (mirror reads).
    pub fn read_blocking(&self, kind: Kind, id: &str) -> Result<Option<Versioned>, CrmError> {
        Ok(self.read(kind, id)?.map(|(v, record)| Versioned {
            record,
            version: v.to_string(),
        }))
    }

    /// Synchronous form of [`CrmBackend::get`].
    pub fn get_blocking(&self, kind: Kind, id: &str) -> Result<Option<Versioned>, CrmError> {
        self.check_up()?;
        Ok(self.read(kind, id)?.map(|(v, record)| Versioned {
            record,
            version: v.to_string(),
        }))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CrmError> + Send + 'static,
) -> Result<T, CrmError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CrmError::Store(StoreError::Engine(format!("worker failed: {e}"))))?
}

impl CrmBackend for EmbeddedCrm {
    fn capabilities(&self) -> super::Capabilities {
        super::Capabilities::everything("the embedded CRM")
    }

    async fn changes(&self, cursor: Option<String>, max: usize) -> Result<ChangePage, CrmError> {
        let me = self.clone();
        blocking(move || me.changes_blocking(cursor.as_deref(), max)).await
    }
    async fn get(&self, kind: Kind, id: String) -> Result<Option<Versioned>, CrmError> {
        let me = self.clone();
        blocking(move || me.get_blocking(kind, &id)).await
    }
    async fn put(&self, record: Record, pre: Precondition) -> Result<Versioned, CrmError> {
        let me = self.clone();
        blocking(move || me.put_blocking(record, pre)).await
    }
    async fn update_contact(
        &self,
        contact: Contact,
        changed: Vec<ContactField>,
        pre: Precondition,
    ) -> Result<Versioned, CrmError> {
        let me = self.clone();
        blocking(move || me.update_contact_blocking(contact, &changed, pre)).await
    }
    async fn delete(&self, kind: Kind, id: String, pre: Precondition) -> Result<(), CrmError> {
        let me = self.clone();
        blocking(move || me.delete_blocking(kind, &id, pre)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Subsystem, SubsystemId};

    fn sub(id: &str, name: &str) -> Record {
        Record::Subsystem(Subsystem {
            id: SubsystemId::from(id),
            name: name.into(),
            extra: Default::default(),
        })
    }

    #[test]
    fn feed_keeps_one_entry_per_record_and_tombstones() {
        let crm = EmbeddedCrm::open(Arc::new(Store::memory())).expect("open");
        assert!(crm.is_empty());
        crm.put_blocking(sub("s1", "A"), Precondition::MustNotExist)
            .expect("create");
        let v = crm
            .put_blocking(sub("s1", "B"), Precondition::MustExist)
            .expect("update");
        crm.put_blocking(sub("s2", "C"), Precondition::None)
            .expect("upsert");
        let page = crm.changes_blocking(None, 100).expect("feed");
        assert_eq!(page.changes.len(), 2, "one entry per live record");
        assert!(
            matches!(crm.put_blocking(sub("s1", "X"), Precondition::Version("1".into())),
            Err(CrmError::PreconditionFailed { current: Some(c) }) if c == v.version)
        );
        assert!(matches!(
            crm.put_blocking(sub("s2", "X"), Precondition::MustNotExist),
            Err(CrmError::AlreadyExists)
        ));
        crm.delete_blocking(Kind::Subsystem, "s1", Precondition::None)
            .expect("delete");
        let later = crm.changes_blocking(Some(&page.next), 100).expect("feed");
        assert_eq!(
            later.changes,
            vec![Change::Deleted(Kind::Subsystem, "s1".into())]
        );
        let all = crm.changes_blocking(None, 1).expect("feed");
        assert!(all.more);
        assert_eq!(all.changes.len(), 1);
    }

    #[test]
    fn a_field_update_keeps_what_others_changed() {
        let crm = EmbeddedCrm::open(Arc::new(Store::memory())).expect("opens");
        let c = Contact {
            id: crate::domain::ContactId::from("c1"),
            first_name: Some("Anna".into()),
            job_title: Some("CTO".into()),
            ..Default::default()
        };
        crm.put_blocking(Record::Contact(c.clone()), Precondition::MustNotExist)
            .expect("create");
        // Another writer renames her; this client, still holding the old copy, changes the job.
        let mut renamed = c.clone();
        renamed.first_name = Some("Anne".into());
        crm.put_blocking(Record::Contact(renamed), Precondition::MustExist)
            .expect("rename");
        let mut mine = c.clone();
        mine.job_title = Some("CEO".into());
        let v = crm
            .update_contact_blocking(
                mine.clone(),
                &c.changed_fields(&mine),
                Precondition::MustExist,
            )
            .expect("update");
        let Record::Contact(stored) = v.record else {
            panic!("a contact")
        };
        assert_eq!(stored.first_name.as_deref(), Some("Anne"), "rename kept");
        assert_eq!(stored.job_title.as_deref(), Some("CEO"));
        assert!(matches!(
            crm.update_contact_blocking(
                mine,
                &[ContactField::JobTitle],
                Precondition::Version("1".into())
            ),
            Err(CrmError::PreconditionFailed { .. })
        ));
    }
}
