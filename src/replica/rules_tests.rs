//! One test per membership rule and exclusion, on a small hand-made CRM, checking the engine,
//! the from-scratch definition, and `explain` against explicit expectations.

use super::engine::Engine;
use crate::crm::{Change, Versioned};
use crate::domain::dataset::Dataset;
use crate::domain::rules::{compute_folders, FolderRules, GlobalScope, VirtualFolder};
use crate::domain::*;
use std::collections::BTreeSet;

fn ds() -> Dataset {
    let text = r#"{
      "subsystems":[{"id":"s1","name":"Berlin"},{"id":"s2","name":"London"}],
      "users":[{"id":"u1","login":"anna@x.test","name":"Anna","subsystems":["s1"]},
               {"id":"u2","login":"ben@x.test","name":"Ben","subsystems":["s1","s2"]},
               {"id":"u3","login":"olga@x.test","name":"Olga","subsystems":["s2"]}],
      "companies":[{"id":"k1","name":"ACME","subsystems":["s1"],"responsible":["u1"],"types":["Kunde"]},
                   {"id":"k2","name":"Prospect Ltd","subsystems":["s1"],"responsible":["u1"],"types":["interessent"]},
                   {"id":"k3","name":"London plc","subsystems":["s2"],"responsible":["u3","u1"],"types":[]}],
      "contacts":[{"id":"c1","companies":["k1"],"last_name":"OfAcme"},
                  {"id":"c2","companies":["k2"],"last_name":"OfProspect"},
                  {"id":"c3","companies":["k1"],"types":["Interessent"],"last_name":"TypedProspect"},
                  {"id":"c4","subsystems":["s1"],"owner":"u2","last_name":"Owned"},
                  {"id":"c5","subsystems":["s1"],"last_name":"ProjectOnly"},
                  {"id":"c6","subsystems":["s2"],"last_name":"LeadOnly"},
                  {"id":"c7","companies":["k3"],"last_name":"InLondon","categories":["sync"]},
                  {"id":"c8","subsystems":["s1"],"last_name":"Nobody"}],
      "projects":[{"id":"p1","name":"Relaunch","team":["u2"],"contacts":["c5"]}],
      "leads":[{"id":"l1","name":"Upsell","responsible":"u3","contacts":["c6"]}]}"#;
    Dataset::parse(text).expect("test dataset parses")
}

fn engine(rules: &FolderRules, d: &Dataset) -> Engine {
    load(Engine::new(rules.clone()), d)
}

/// `e` with every record of `d` applied.
fn load(mut e: Engine, d: &Dataset) -> Engine {
    let changes = d
        .records()
        .map(|r| {
            Change::Upsert(Versioned {
                record: r,
                version: "1".into(),
            })
        })
        .collect();
    e.apply(changes);
    e
}

fn ids(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The folder of `user` in the engine, checked against the from-scratch definition.
fn folder(rules: &FolderRules, d: &Dataset, user: &str, f: VirtualFolder) -> BTreeSet<String> {
    let e = engine(rules, d);
    let u = e.find_user(user).expect("user");
    let got: BTreeSet<String> = e
        .list(u, f)
        .into_iter()
        .map(|c| e.contact_id(c).to_owned())
        .collect();
    let scratch = compute_folders(d, rules);
    let want = &scratch[&UserId::from(e.user_id(u))];
    let want: BTreeSet<String> = match f {
        VirtualFolder::My => want.my.iter().map(|c| c.0.clone()).collect(),
        VirtualFolder::Global => want.global.iter().map(|c| c.0.clone()).collect(),
    };
    assert_eq!(got, want, "engine and definition disagree");
    got
}

fn explain(rules: &FolderRules, d: &Dataset, user: &str, contact: &str) -> super::Explanation {
    let e = engine(rules, d);
    let (u, c) = (
        e.find_user(user).expect("user"),
        e.find_contact(contact).expect("contact"),
    );
    let ex = e.explain(u, c);
    assert_eq!(
        ex.folder,
        e.folder_of(u, c),
        "explain agrees with membership"
    );
    ex
}

#[test]
fn company_responsible_puts_contacts_in_my() {
    let r = FolderRules::default();
    assert!(folder(&r, &ds(), "anna@x.test", VirtualFolder::My).contains("c1"));
    let ex = explain(&r, &ds(), "anna@x.test", "c1");
    assert_eq!(
        ex.rules,
        vec!["company ACME (k1) → responsible: you".to_string()]
    );
}

#[test]
fn project_team_member_gets_project_contacts() {
    let r = FolderRules::default();
    assert_eq!(
        folder(&r, &ds(), "ben@x.test", VirtualFolder::My),
        ids(&["c4", "c5"])
    );
    let ex = explain(&r, &ds(), "ben@x.test", "c5");
    assert_eq!(
        ex.rules,
        vec!["project Relaunch (p1) → team member: you".to_string()]
    );
}

#[test]
fn lead_responsible_gets_lead_contacts() {
    let r = FolderRules::default();
    assert!(folder(&r, &ds(), "olga@x.test", VirtualFolder::My).contains("c6"));
    let ex = explain(&r, &ds(), "olga@x.test", "c6");
    assert_eq!(
        ex.rules,
        vec!["lead Upsell (l1) → responsible: you".to_string()]
    );
}

#[test]
fn owner_rule_on_and_off() {
    let on = FolderRules::default();
    assert!(folder(&on, &ds(), "ben@x.test", VirtualFolder::My).contains("c4"));
    let off = FolderRules {
        owner_rule: false,
        ..FolderRules::default()
    };
    assert!(!folder(&off, &ds(), "ben@x.test", VirtualFolder::My).contains("c4"));
    assert!(folder(&off, &ds(), "ben@x.test", VirtualFolder::Global).contains("c4"));
    let ex = explain(&off, &ds(), "ben@x.test", "c4");
    assert_eq!(ex.rules, vec!["owner: you (owner rule is off)".to_string()]);
}

#[test]
fn excluded_company_type_hides_contacts_case_insensitively() {
    let r = FolderRules::default();
    for u in ["anna@x.test", "ben@x.test", "olga@x.test"] {
        for f in [VirtualFolder::My, VirtualFolder::Global] {
            assert!(!folder(&r, &ds(), u, f).contains("c2"), "{u} {f:?}");
        }
    }
    let ex = explain(&r, &ds(), "anna@x.test", "c2");
    assert_eq!(ex.folder, None);
    assert!(
        ex.reason
            .contains("company Prospect Ltd (k2) has excluded type interessent"),
        "{}",
        ex.reason
    );
    assert_eq!(
        ex.rules.len(),
        1,
        "the rule that would apply is still shown"
    );
}

#[test]
fn excluded_contact_type_hides_the_contact() {
    let r = FolderRules::default();
    assert!(!folder(&r, &ds(), "anna@x.test", VirtualFolder::My).contains("c3"));
    let ex = explain(&r, &ds(), "anna@x.test", "c3");
    assert!(
        ex.reason.contains("contact type Interessent is excluded"),
        "{}",
        ex.reason
    );
    let none = FolderRules {
        excluded_types: vec![],
        ..FolderRules::default()
    };
    assert!(folder(&none, &ds(), "anna@x.test", VirtualFolder::My).contains("c3"));
}

#[test]
fn sync_tag_filter() {
    let r = FolderRules {
        sync_tag: Some("SYNC".into()),
        ..FolderRules::default()
    };
    assert_eq!(
        folder(&r, &ds(), "anna@x.test", VirtualFolder::My),
        ids(&["c7"])
    );
    assert!(folder(&r, &ds(), "anna@x.test", VirtualFolder::Global).is_empty());
    let ex = explain(&r, &ds(), "anna@x.test", "c1");
    assert!(ex.reason.contains("not tagged SYNC"), "{}", ex.reason);
}

#[test]
fn global_scope_all_is_everything_visible_but_my() {
    let r = FolderRules::default();
    let my = folder(&r, &ds(), "anna@x.test", VirtualFolder::My);
    let global = folder(&r, &ds(), "anna@x.test", VirtualFolder::Global);
    assert_eq!(my, ids(&["c1", "c7"]));
    assert_eq!(global, ids(&["c4", "c5", "c6", "c8"]));
    assert!(my.is_disjoint(&global));
}

#[test]
fn global_scope_subsystem_separates_tenants_in_both_folders() {
    let r = FolderRules {
        global_scope: GlobalScope::Subsystem,
        ..FolderRules::default()
    };
    // Anna is responsible for k3 (London) but is in Berlin only: not even My shows c7.
    assert_eq!(
        folder(&r, &ds(), "anna@x.test", VirtualFolder::My),
        ids(&["c1"])
    );
    assert_eq!(
        folder(&r, &ds(), "anna@x.test", VirtualFolder::Global),
        ids(&["c4", "c5", "c8"])
    );
    assert_eq!(
        folder(&r, &ds(), "olga@x.test", VirtualFolder::Global),
        BTreeSet::new()
    );
    assert_eq!(
        folder(&r, &ds(), "olga@x.test", VirtualFolder::My),
        ids(&["c6", "c7"])
    );
    let ex = explain(&r, &ds(), "anna@x.test", "c7");
    assert!(ex.reason.contains("tenant separation"), "{}", ex.reason);
    assert_eq!(ex.folder, None);
}

#[test]
fn global_scope_off_offers_no_global_folder() {
    let r = FolderRules {
        global_scope: GlobalScope::Off,
        ..FolderRules::default()
    };
    assert!(folder(&r, &ds(), "anna@x.test", VirtualFolder::Global).is_empty());
    assert_eq!(
        folder(&r, &ds(), "anna@x.test", VirtualFolder::My),
        ids(&["c1", "c7"])
    );
    let ex = explain(&r, &ds(), "anna@x.test", "c8");
    assert!(ex.reason.contains("Global folder is off"), "{}", ex.reason);
}

#[test]
fn dangling_references_and_deleted_companies_are_ignored() {
    let mut d = ds();
    d.contacts[0].companies.push("k404".into());
    d.projects[0].team.push("u404".into());
    let r = FolderRules::default();
    assert!(folder(&r, &d, "anna@x.test", VirtualFolder::My).contains("c1"));
    // Deleting k1 moves its contacts out of Anna's My folder.
    let mut e = engine(&r, &d);
    e.apply(vec![Change::Deleted(Kind::Company, "k1".into())]);
    let u = e.find_user("anna@x.test").expect("user");
    let c1 = e.find_contact("c1").expect("c1");
    assert_eq!(e.folder_of(u, c1), Some(VirtualFolder::Global));
}

#[test]
fn a_reassignment_touches_only_the_company_contacts_and_moves_them() {
    let r = FolderRules::default();
    let d = ds();
    let mut e = engine(&r, &d);
    let mut k1 = d.companies[0].clone();
    k1.responsible = vec!["u2".into()];
    let applied = e.apply(vec![Change::Upsert(Versioned {
        record: Record::Company(k1),
        version: "2".into(),
    })]);
    assert_eq!(
        applied.contacts_touched, 1,
        "only c1 (c3 is hidden and stays hidden)"
    );
    let (anna, ben) = (
        e.find_user("anna@x.test").expect("a"),
        e.find_user("ben@x.test").expect("b"),
    );
    let c1 = e.find_contact("c1").expect("c1");
    assert_eq!(e.folder_of(anna, c1), Some(VirtualFolder::Global));
    assert_eq!(e.folder_of(ben, c1), Some(VirtualFolder::My));
}

#[test]
fn unknown_users_have_no_folders() {
    let e = engine(&FolderRules::default(), &ds());
    assert_eq!(e.find_user("nobody@x.test"), None);
    // A referenced but missing user id does not resolve to a mailbox either.
    assert_eq!(e.find_user("u404"), None);
}

#[test]
fn modification_times_come_from_the_injected_clock() {
    let mut e = Engine::new(FolderRules::default());
    e.set_clock(|| 1_800_000_000);
    let e = load(e, &ds());
    let c = e.find_contact("c1").expect("c1");
    assert_eq!(e.contact_modified(c), 1_800_000_000);
}
