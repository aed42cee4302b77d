//! Property test: random streams of CRM changes applied incrementally give exactly the
//! folders the from-scratch definition gives, for every user after every step; the My log
//! replays to the same sets; `changes_since` from any earlier cursor turns the old folder
//! into the current one; and a restart (log replay + record load) changes nothing.

use crmgate::crm::{Change, Versioned};
use crmgate::domain::dataset::Dataset;
use crmgate::domain::rules::{compute_folders, FolderRules, GlobalScope, VirtualFolder};
use crmgate::domain::*;
use crmgate::replica::{Engine, ItemChange, LogRecord};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const USERS: u64 = 4;
const SUBS: u64 = 3;
const COMPANIES: u64 = 4;
const CONTACTS: u64 = 8;
const PROJECTS: u64 = 3;
const LEADS: u64 = 3;

/// Picks a subset of `0..n` from bits.
fn subset(bits: u64, n: u64) -> Vec<u64> {
    (0..n).filter(|i| bits >> i & 1 == 1).collect()
}

fn ids<T: From<String>>(p: &str, v: &[u64]) -> Vec<T> {
    v.iter().map(|i| T::from(format!("{p}{i}"))).collect()
}

fn opt<T: From<String>>(p: &str, bits: u64, n: u64) -> Option<T> {
    let v = bits % (n + 1);
    (v < n).then(|| T::from(format!("{p}{v}")))
}

/// Builds a record of `kind` number `id` from random bits.
fn make(kind: u8, id: u64, b: u64) -> Record {
    match kind % 6 {
        0 => Record::Subsystem(Subsystem {
            id: format!("s{id}").into(),
            name: format!("S{b}"),
            extra: Default::default(),
        }),
        1 => Record::User(User {
            id: format!("u{id}").into(),
            login: format!("user{id}@example.test"),
            name: format!("User {id}"),
            password: None,
            password_hash: None,
            subsystems: ids("s", &subset(b, SUBS)),
            role: Role::User,
            active: true,
            extra: Default::default(),
        }),
        2 => Record::Company(Company {
            id: format!("k{id}").into(),
            name: format!("Company {}", b >> 20 & 3),
            subsystems: ids("s", &subset(b, SUBS)),
            responsible: ids("u", &subset(b >> 4, USERS)),
            types: if b >> 9 & 3 == 0 {
                vec!["interessent".into()]
            } else {
                vec!["Kunde".into()]
            },
            phone: None,
            email: None,
            website: None,
            address: None,
            extra: Default::default(),
        }),
        3 => Record::Contact(Contact {
            id: format!("c{id}").into(),
            companies: ids("k", &subset(b, COMPANIES))
                .into_iter()
                .take(2)
                .collect(),
            subsystems: ids("s", &subset(b >> 5, SUBS)),
            owner: opt("u", b >> 9, USERS),
            types: if b >> 13 & 7 == 0 {
                vec!["Interessent".into()]
            } else {
                vec![]
            },
            categories: if b >> 16 & 1 == 0 {
                vec!["sync".into()]
            } else {
                vec![]
            },
            last_name: Some(format!("N{}", b >> 20 & 7)),
            ..Default::default()
        }),
        4 => Record::Project(Project {
            id: format!("p{id}").into(),
            name: "P".into(),
            subsystems: vec![],
            team: ids("u", &subset(b, USERS)),
            responsible: opt("u", b >> 5, USERS),
            contacts: ids("c", &subset(b >> 8, CONTACTS)),
            company: None,
            extra: Default::default(),
        }),
        _ => Record::Lead(Lead {
            id: format!("l{id}").into(),
            name: "L".into(),
            subsystems: vec![],
            responsible: opt("u", b, USERS),
            contacts: ids("c", &subset(b >> 4, CONTACTS)),
            company: None,
            status: None,
            extra: Default::default(),
        }),
    }
}

fn limit(kind: u8) -> u64 {
    [SUBS, USERS, COMPANIES, CONTACTS, PROJECTS, LEADS][(kind % 6) as usize]
}

fn kind_of(kind: u8) -> Kind {
    Kind::ALL[(kind % 6) as usize]
}

/// The engine's folders for every user, by ids.
fn engine_folders(e: &Engine) -> BTreeMap<UserId, (BTreeSet<String>, BTreeSet<String>)> {
    e.user_ids()
        .into_iter()
        .map(|u| {
            let ids = |f| {
                e.list(u, f)
                    .into_iter()
                    .map(|c| e.contact_id(c).to_owned())
                    .collect()
            };
            (
                UserId::from(e.user_id(u)),
                (ids(VirtualFolder::My), ids(VirtualFolder::Global)),
            )
        })
        .collect()
}

fn oracle(
    ds: &BTreeMap<(Kind, String), (Record, String)>,
    rules: &FolderRules,
) -> BTreeMap<UserId, (BTreeSet<String>, BTreeSet<String>)> {
    let mut d = Dataset::default();
    for (r, _) in ds.values() {
        d.push(r.clone());
    }
    compute_folders(&d, rules)
        .into_iter()
        .map(|(u, f)| {
            let s = |x: BTreeSet<ContactId>| x.into_iter().map(|c| c.0).collect();
            (u, (s(f.my), s(f.global)))
        })
        .collect()
}

fn rules_from(bits: u8) -> FolderRules {
    FolderRules {
        global_scope: [GlobalScope::All, GlobalScope::Subsystem, GlobalScope::Off]
            [(bits % 3) as usize],
        excluded_types: vec!["Interessent".into()],
        owner_rule: bits >> 2 & 1 == 0,
        sync_tag: (bits >> 3 & 3 == 0).then(|| "sync".to_string()),
    }
}

type Snapshot = BTreeMap<UserId, (BTreeSet<String>, BTreeSet<String>)>;

/// Contact id → CRM version, to know which contacts were edited since a cursor.
fn versions(truth: &BTreeMap<(Kind, String), (Record, String)>) -> BTreeMap<String, String> {
    truth
        .iter()
        .filter(|((k, _), _)| *k == Kind::Contact)
        .map(|((_, id), (_, v))| (id.clone(), v.clone()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn incremental_equals_from_scratch(
        rule_bits in any::<u8>(),
        initial in prop::collection::vec((any::<u8>(), any::<u64>(), any::<u64>()), 0..30),
        steps in prop::collection::vec((any::<u8>(), any::<u64>(), any::<u64>(), any::<u8>()), 1..25),
    ) {
        let rules = rules_from(rule_bits);
        let mut engine = Engine::new(rules.clone());
        let mut truth: BTreeMap<(Kind, String), (Record, String)> = BTreeMap::new();
        let mut log: Vec<LogRecord> = Vec::new();
        let mut history: Vec<(u64, Snapshot, BTreeMap<String, String>)> = Vec::new();
        let version = |n: usize| n.to_string();

        // Initial load in one batch, like the replica's first catch-up.
        let mut batch = Vec::new();
        for (k, id, b) in &initial {
            let r = make(*k, id % limit(*k), *b);
            truth.insert((r.kind(), r.id().to_owned()), (r.clone(), version(0)));
            batch.push(Change::Upsert(Versioned { record: r, version: version(0) }));
        }
        log.extend(engine.apply(batch).log);
        let expect = oracle(&truth, &rules);
        prop_assert_eq!(&engine_folders(&engine), &expect);
        history.push((engine.seq(), expect, versions(&truth)));

        for (n, (k, id, b, op)) in steps.iter().enumerate() {
            let id = id % limit(*k);
            let change = if op % 4 == 0 {
                truth.remove(&(kind_of(*k), format!("{}{}", ["s","u","k","c","p","l"][(*k % 6) as usize], id)));
                Change::Deleted(kind_of(*k), format!("{}{}", ["s","u","k","c","p","l"][(*k % 6) as usize], id))
            } else {
                let r = make(*k, id, *b);
                truth.insert((r.kind(), r.id().to_owned()), (r.clone(), version(n + 1)));
                Change::Upsert(Versioned { record: r, version: version(n + 1) })
            };
            log.extend(engine.apply(vec![change]).log);
            let expect = oracle(&truth, &rules);
            prop_assert_eq!(&engine_folders(&engine), &expect, "after step {}", n);

            // The My log replays to the current My set.
            for u in engine.user_ids() {
                let mut set = BTreeSet::new();
                for ev in engine.my_log(u) {
                    if ev.added { prop_assert!(set.insert(ev.contact)); } else { prop_assert!(set.remove(&ev.contact)); }
                }
                let now: BTreeSet<u32> = engine.list(u, VirtualFolder::My).into_iter().collect();
                prop_assert_eq!(set, now);
            }

            // changes_since from every earlier cursor turns that folder into today's.
            let vers_now = versions(&truth);
            for (cursor, then, vers_then) in &history {
                for u in engine.user_ids() {
                    let uid = UserId::from(engine.user_id(u));
                    let Some((then_my, then_global)) = then.get(&uid) else { continue };
                    for (f, old) in [(VirtualFolder::My, then_my), (VirtualFolder::Global, then_global)] {
                        let mut set = old.clone();
                        let changes = engine.changes_since(u, f, *cursor).expect("cursor valid");
                        // A contact edited since the cursor and in the folder then and now
                        // must come as an update.
                        let want = if f == VirtualFolder::My { &expect[&uid].0 } else { &expect[&uid].1 };
                        for id in old.intersection(want) {
                            if vers_then.get(id) != vers_now.get(id) {
                                let reported = changes.iter().any(|(c, ch)| engine.contact_id(*c) == id && *ch == ItemChange::Update);
                                prop_assert!(reported, "edit of {} since {} not reported in {:?}", id, cursor, f);
                            }
                        }
                        for (c, ch) in changes {
                            let id = engine.contact_id(c).to_owned();
                            match ch {
                                ItemChange::Create => prop_assert!(set.insert(id.clone()), "create of present {} in {:?}", id, f),
                                ItemChange::Update => prop_assert!(set.contains(&id), "update of absent {} in {:?}", id, f),
                                ItemChange::Delete => prop_assert!(set.remove(&id), "delete of absent {} in {:?}", id, f),
                            }
                        }
                        let now = &expect[&uid];
                        let want = if f == VirtualFolder::My { &now.0 } else { &now.1 };
                        prop_assert_eq!(&set, want, "user {} folder {:?} since {}", uid, f, cursor);
                    }
                }
            }
            history.push((engine.seq(), expect, versions(&truth)));
        }

        // Restart: replay the log, load the records; nothing changes and nothing is logged.
        let mut again = Engine::new(rules.clone());
        for r in &log {
            again.replay(r);
        }
        let records: Vec<Change> = truth
            .values()
            .map(|(r, v)| Change::Upsert(Versioned { record: r.clone(), version: v.clone() }))
            .collect();
        let applied = again.load(records);
        prop_assert!(applied.log.is_empty(), "restart wrote {:?}", applied.log);
        prop_assert_eq!(engine_folders(&again), engine_folders(&engine));
        prop_assert_eq!(again.seq(), engine.seq());

        // Changes made while crmgate was down: replay the log only up to an earlier cursor,
        // then load today's CRM. Folders must be today's, and a client holding that cursor
        // must get exactly the changes that turn its folders into today's.
        let (cursor, then, vers_then) = &history[steps.len() / 2];
        let vers_now = versions(&truth);
        let mut late = Engine::new(rules.clone());
        for r in log.iter().filter(|r| r.seq() <= *cursor) {
            late.replay(r);
        }
        let records: Vec<Change> = truth
            .values()
            .map(|(r, v)| Change::Upsert(Versioned { record: r.clone(), version: v.clone() }))
            .collect();
        late.load(records);
        let now = engine_folders(&late);
        prop_assert_eq!(&now, &oracle(&truth, &rules));
        for u in late.user_ids() {
            let uid = UserId::from(late.user_id(u));
            let Some((then_my, then_global)) = then.get(&uid) else { continue };
            for (f, old) in [(VirtualFolder::My, then_my), (VirtualFolder::Global, then_global)] {
                let mut set = old.clone();
                let changes = late.changes_since(u, f, *cursor).expect("cursor valid");
                let want = if f == VirtualFolder::My { &now[&uid].0 } else { &now[&uid].1 };
                for id in old.intersection(want) {
                    if vers_then.get(id) != vers_now.get(id) {
                        let reported = changes.iter().any(|(c, ch)| late.contact_id(*c) == id && *ch == ItemChange::Update);
                        prop_assert!(reported, "offline edit of {} not reported", id);
                    }
                }
                for (c, ch) in changes {
                    let id = late.contact_id(c).to_owned();
                    match ch {
                        ItemChange::Create => prop_assert!(set.insert(id), "offline create of present"),
                        ItemChange::Update => prop_assert!(set.contains(&id), "offline update of absent"),
                        ItemChange::Delete => prop_assert!(set.remove(&id), "offline delete of absent"),
                    }
                }
                let want = if f == VirtualFolder::My { &now[&uid].0 } else { &now[&uid].1 };
                prop_assert_eq!(&set, want);
            }
        }
    }
}
