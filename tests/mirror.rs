//! The mailbox mirror against the Graph mailbox simulator (tests/support/graph_sim.rs): every
//! mirrored mailbox equals the user's two folders as crmgate's Graph face serves them — after
//! the fill, after rounds of random CRM changes, after the id map is lost — and users' edits
//! in the mailbox go through the write path.

mod support;

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use support::graph_sim::GraphSim;
use support::mirror_oracle::{converge, crm_id};
use support::{fixture, TestServer};

const ADMIN: (&str, &str) = ("ben@example.test", "demo2");

/// The `[mirror]` section for the simulator; the secret goes into a file of `dir`.
fn mirror_config(sim: &GraphSim, dir: &std::path::Path, extra: &str) -> String {
    let secret = dir.join("mirror-secret");
    std::fs::write(&secret, GraphSim::CLIENT_SECRET).expect("secret");
    mirror_section(
        sim,
        &format!("client_secret = \"file:{}\"", secret.display()),
        extra,
    )
}

/// The `[mirror]` section with the credential lines given.
fn mirror_section(sim: &GraphSim, credential: &str, extra: &str) -> String {
    format!(
        "[mirror]\ntenant = \"{t}\"\nclient_id = \"{c}\"\n{credential}\n\
         graph_url = \"{b}/v1.0\"\ntoken_url = \"{b}/{t}/oauth2/v2.0/token\"\n\
         poll_interval_secs = 1\n{extra}\n",
        t = GraphSim::TENANT,
        c = GraphSim::CLIENT_ID,
        b = sim.base_url,
    )
}

fn logins() -> Vec<String> {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("demo.json")).expect("demo"))
            .expect("json");
    v["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| u["login"].as_str().expect("login").to_owned())
        .collect()
}

/// Waits until every mailbox equals what the face serves (60 s at most).
async fn converged(s: &TestServer, sim: &GraphSim, token: &str, users: &[String]) {
    converged_within(s, sim, token, users, 60).await
}

async fn converged_within(
    s: &TestServer,
    sim: &GraphSim,
    token: &str,
    users: &[String],
    secs: u64,
) {
    if let Err(d) = converge(&s.client, &s.base, token, sim, users, secs).await {
        let status = admin_get(s, "/admin/v1/mirror").await;
        panic!("mailboxes never matched the folders: {d}\nstatus: {status}")
    }
}

async fn admin_get(s: &TestServer, path: &str) -> Value {
    s.client
        .get(s.url(path))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

async fn admin_put(s: &TestServer, path: &str, body: &Value) {
    let r = s
        .client
        .put(s.url(path))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .json(body)
        .send()
        .await
        .expect("put");
    assert!(r.status().is_success(), "PUT {path}: {}", r.status());
}

async fn admin_delete(s: &TestServer, path: &str) {
    let r = s
        .client
        .delete(s.url(path))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .expect("delete");
    assert!(r.status().is_success(), "DELETE {path}: {}", r.status());
}

async fn start(sim: &GraphSim, extra: &str) -> (TestServer, tempfile::TempDir) {
    let secret_dir = tempfile::tempdir().expect("tmp");
    let cfg = mirror_config(sim, secret_dir.path(), extra);
    let s = TestServer::start(&fixture("demo.json"), &cfg).await;
    (s, secret_dir)
}

/// A mirror starting over the simulator's mailboxes: the simulator, the server, the dir
/// holding the secret, the admin's Graph-face token, every login of the demo.
async fn up(extra: &str) -> (GraphSim, TestServer, tempfile::TempDir, String, Vec<String>) {
    let sim = sim_with_mailboxes().await;
    let (s, secret) = start(&sim, extra).await;
    let token = admin_token(&s).await;
    (sim, s, secret, token, logins())
}

async fn admin_token(s: &TestServer) -> String {
    s.graph_token(ADMIN.0, ADMIN.1, "Contacts.Read").await
}

async fn sim_with_mailboxes() -> GraphSim {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("CRMGATE_LOG"))
        .with_test_writer()
        .try_init();
    let sim = GraphSim::start().await;
    sim.set_latency(Duration::from_millis(1), Duration::from_millis(3));
    for l in logins() {
        sim.add_mailbox(&l);
    }
    sim
}

/// Random CRM-side changes through the admin API: edits, creates, deletes, a company changing
/// hands (contacts move between My and Global), a contact's tenant moving.
async fn random_round(s: &TestServer, rng: &mut rand::rngs::StdRng, round: usize) {
    let contacts = admin_get(s, "/admin/v1/contacts?limit=1000").await;
    let contacts = contacts["items"].as_array().expect("items").clone();
    let companies = admin_get(s, "/admin/v1/companies?limit=1000").await;
    let companies = companies["items"].as_array().expect("items").clone();
    let users = admin_get(s, "/admin/v1/users?limit=1000").await;
    let users: Vec<String> = users["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|u| u["id"].as_str().expect("id").to_owned())
        .collect();
    for k in 0..8 {
        match rng.gen_range(0..5) {
            0 | 1 => {
                let mut c = contacts[rng.gen_range(0..contacts.len())].clone();
                c["job_title"] = json!(format!("Role {round}.{k}"));
                if rng.gen_bool(0.5) {
                    c["phones"] = json!([{"number": format!("+49 30 {:07}", rng.gen_range(0..9_999_999)), "kind": "mobile"}]);
                }
                let id = c["id"].as_str().expect("id").to_owned();
                admin_put(s, &format!("/admin/v1/contacts/{id}"), &c).await;
            }
            2 => {
                let k1 = &companies[rng.gen_range(0..companies.len())];
                let id = format!("new{round}x{k}");
                admin_put(
                    s,
                    &format!("/admin/v1/contacts/{id}"),
                    &json!({"companies": [k1["id"]], "first_name": format!("New{round}"), "last_name": format!("Person{k}"),
                        "subsystems": k1["subsystems"], "emails": [{"address": format!("{id}@x.example"), "kind": "work"}]}),
                )
                .await;
            }
            3 => {
                let c = &contacts[rng.gen_range(0..contacts.len())];
                let id = c["id"].as_str().expect("id");
                let r = s
                    .client
                    .delete(s.url(&format!("/admin/v1/contacts/{id}")))
                    .basic_auth(ADMIN.0, Some(ADMIN.1))
                    .send()
                    .await
                    .expect("delete");
                // Deleted in an earlier round: fine.
                assert!(r.status().is_success() || r.status() == 404);
            }
            _ => {
                let mut k1 = companies[rng.gen_range(0..companies.len())].clone();
                let who = users[rng.gen_range(0..users.len())].clone();
                k1["responsible"] = json!([who]);
                let id = k1["id"].as_str().expect("id").to_owned();
                admin_put(s, &format!("/admin/v1/companies/{id}"), &k1).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_mailbox_equals_the_folders_after_the_fill_and_random_changes() {
    let (sim, s, _secret, token, users) = up("").await;
    converged(&s, &sim, &token, &users).await;
    // Folder names are the view's.
    for u in &users {
        let names: BTreeSet<String> = sim
            .folders(u)
            .into_iter()
            .filter(|f| f.ext.contains_key(&crmgate::mirror::body::folder_prop()))
            .map(|f| f.display_name)
            .collect();
        assert!(names.contains("HQ My Contacts"), "{u}: {names:?}");
    }
    let status = admin_get(&s, "/admin/v1/mirror").await;
    assert_eq!(
        status["mailboxes"].as_array().expect("list").len(),
        users.len()
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6d69_7272);
    for round in 0..4 {
        random_round(&s, &mut rng, round).await;
        converged(&s, &sim, &token, &users).await;
    }
    // Nothing but crmgate's folders' contacts went anywhere: no mailbox holds a contact
    // outside that user's folders (the equality above), and no write went to an unknown
    // mailbox.
    assert_eq!(sim.violations(), 0, "requests sent while told to wait");
    let m = s.metrics().await;
    assert!(
        m.contains("crmgate_mirror_mailboxes{state=\"incremental\"}"),
        "{m}"
    );
}

/// Deletes every mirror key (id map, positions, folders) from a stopped server's store; how
/// many there were.
fn forget_mirror_keys(dir: &std::path::Path) -> usize {
    use crmgate::store::KvStore;
    let store = crmgate::store::Store::open(dir, crmgate::store::EngineKind::Redb).expect("store");
    let mut keys = Vec::new();
    store
        .scan_prefix(b"mirror/", &mut |k, _| {
            keys.push(k.to_vec());
            Ok(true)
        })
        .expect("scan");
    let n = keys.len();
    store
        .apply(keys.into_iter().map(crmgate::store::Op::Delete).collect())
        .expect("delete");
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_id_map_is_rebuilt_from_the_mailboxes_without_a_duplicate() {
    let (sim, s, secret, token, users) = up("").await;
    converged(&s, &sim, &token, &users).await;
    let posts_before = sim
        .writes()
        .iter()
        .filter(|(w, _)| w.starts_with("POST") && w.ends_with("/contacts"))
        .count();
    // Stop, delete every mirror key (id map and positions), start again.
    let cfg = mirror_config(&sim, secret.path(), "");
    let s = s
        .restart_after(&cfg, |dir| {
            let n = forget_mirror_keys(dir);
            assert!(n > 100, "the id map was stored: {n}");
        })
        .await;
    let token = admin_token(&s).await;
    // Meanwhile a CRM change, so the restart has something to write too.
    admin_put(
        &s,
        "/admin/v1/contacts/c1",
        &json!({"companies": ["k1"], "first_name": "Tobias", "last_name": "Schwarz-Neu"}),
    )
    .await;
    converged(&s, &sim, &token, &users).await;
    let posts_after = sim
        .writes()
        .iter()
        .filter(|(w, _)| w.starts_with("POST") && w.ends_with("/contacts"))
        .count();
    assert_eq!(posts_after, posts_before, "no contact was created again");
    let _ = admin_delete;
}

/// The id of crmgate's folder `tag` ("my", "global") in a mailbox.
fn folder_of(sim: &GraphSim, upn: &str, tag: &str) -> Option<String> {
    let p = crmgate::mirror::body::folder_prop();
    sim.folders(upn)
        .into_iter()
        .find(|f| f.ext.get(&p).map(String::as_str) == Some(tag))
        .map(|f| f.id)
}

/// The mailbox items of a folder: crmgate id → contact.
fn items(sim: &GraphSim, upn: &str, folder: &str) -> BTreeMap<String, Value> {
    sim.contacts(upn, folder)
        .into_iter()
        .filter_map(|c| Some((crm_id(&c)?, c)))
        .collect()
}

async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn crm_record(s: &TestServer, id: &str) -> Option<Value> {
    let r = s
        .client
        .get(s.url(&format!("/admin/v1/contacts/{id}")))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .expect("get");
    if r.status() == 404 {
        return None;
    }
    Some(r.json().await.expect("json"))
}

/// Waits until `check` holds for the CRM record of `id` (`None`: deleted).
async fn crm_until(
    s: &TestServer,
    id: &str,
    what: &str,
    check: impl Fn(&Option<Value>) -> bool,
) -> Option<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = crm_record(s, id).await;
        if check(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting: {what}; record: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outlook_edits_go_through_the_write_path_and_read_only_global_is_set_back() {
    let (sim, s, _secret, token, users) = up("").await;
    converged(&s, &sim, &token, &users).await;
    let anna = "anna@example.test";
    let my = folder_of(&sim, anna, "my").expect("my folder");
    let global = folder_of(&sim, anna, "global").expect("global folder");

    // An edit in My lands in the CRM; what the mailbox does not show stays.
    let (cid, item) = items(&sim, anna, &my)
        .into_iter()
        .next()
        .expect("a My contact");
    let before = crm_record(&s, &cid).await.expect("record");
    let item_id = item["id"].as_str().expect("id").to_owned();
    sim.user_update(anna, &item_id, json!({"jobTitle": "Chief Tester"}));
    let after = crm_until(&s, &cid, "the My edit in the CRM", |r| {
        r.as_ref().is_some_and(|r| r["job_title"] == "Chief Tester")
    })
    .await
    .expect("record");
    for kept in [
        "salutation",
        "websites",
        "types",
        "companies",
        "subsystems",
        "owner",
    ] {
        assert_eq!(after[kept], before[kept], "{kept} kept");
    }
    // The audit log names the mirror as the writer (written once the replica caught up).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let audit = admin_get(&s, "/admin/v1/audit?limit=50").await;
        let found = audit["items"].as_array().expect("items").iter().any(|a| {
            a["op"] == "mirror update" && a["contact"] == cid.as_str() && a["user"] == anna
        });
        if found {
            break;
        }
        assert!(Instant::now() < deadline, "no audit record: {audit}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // An edit in read-only Global is set back to the CRM's value; the CRM is untouched.
    let (gid, gitem) = items(&sim, anna, &global)
        .into_iter()
        .next()
        .expect("a Global contact");
    let g_before = crm_record(&s, &gid).await.expect("record");
    let g_item = gitem["id"].as_str().expect("id").to_owned();
    let shown = gitem["jobTitle"].clone();
    sim.user_update(anna, &g_item, json!({"jobTitle": "Hacked"}));
    eventually("the Global edit set back", || {
        let c = sim.contact(anna, &g_item)?;
        (c["jobTitle"] == shown).then_some(())
    })
    .await;
    assert_eq!(crm_record(&s, &gid).await.expect("record"), g_before);

    // A contact made in My by the user is created in the CRM, and its item adopted: one item.
    let new_item = sim.user_create(
        anna,
        &my,
        json!({"givenName": "Olga", "surname": "Outlook", "emailAddresses": [{"address": "olga@outlook-made.example", "name": "Olga"}]}),
    );
    let new_id = eventually("the new contact adopted", || {
        crm_id(&sim.contact(anna, &new_item)?)
    })
    .await;
    let rec = crm_record(&s, &new_id).await.expect("created in the CRM");
    assert_eq!(rec["last_name"], "Outlook");
    let same: Vec<_> = sim
        .contacts(anna, &my)
        .into_iter()
        .filter(|c| c["surname"] == "Outlook")
        .collect();
    assert_eq!(same.len(), 1, "one item: {same:?}");

    // The id map still knows the edited contact's item.
    let map = crmgate::mirror::state::Keys::new(anna)
        .entries(&s.app.store, crmgate::domain::rules::VirtualFolder::My)
        .expect("id map");
    let e = map.iter().find(|(c, _)| *c == cid).map(|(_, e)| e.clone());
    assert_eq!(
        e.as_ref().map(|e| e.item.as_str()),
        Some(item_id.as_str()),
        "{e:?}; {} entries",
        map.len()
    );
    // Delete under `hide`: gone for anna only, the CRM keeps it, and a later CRM change does
    // not bring it back.
    sim.user_delete(anna, &item_id);
    eventually("the delete hidden", || {
        let e = s.app.replica.read().ok()?;
        let u = e.find_login(anna)?;
        let c = e.find_contact(&cid)?;
        (e.folder_of(u, c).is_none()).then_some(())
    })
    .await;
    let mut rec = crm_record(&s, &cid).await.expect("kept in the CRM");
    rec["department"] = json!("Moved On");
    admin_put(&s, &format!("/admin/v1/contacts/{cid}"), &rec).await;
    converged(&s, &sim, &token, &users).await;
    assert!(
        !items(&sim, anna, &my).contains_key(&cid),
        "a hidden contact never comes back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deletes_in_the_mailbox_follow_the_crm_and_deny_policies() {
    for (policy, crm_deletes) in [("crm", true), ("deny", false)] {
        let (sim, s, _secret, token, users) =
            up(&format!("[folders]\nmy_delete = \"{policy}\"\n")).await;
        converged(&s, &sim, &token, &users).await;
        let anna = "anna@example.test";
        let my = folder_of(&sim, anna, "my").expect("my folder");
        let (cid, item) = items(&sim, anna, &my)
            .into_iter()
            .next()
            .expect("a My contact");
        sim.user_delete(anna, item["id"].as_str().expect("id"));
        if crm_deletes {
            crm_until(&s, &cid, "deleted in the CRM", Option::is_none).await;
        } else {
            // Made again in the mailbox; the CRM keeps it.
            eventually("made again", || {
                items(&sim, anna, &my).contains_key(&cid).then_some(())
            })
            .await;
            assert!(crm_record(&s, &cid).await.is_some());
        }
        converged(&s, &sim, &token, &users).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_mailbox_receives_a_contact_outside_its_users_folders_under_every_global_scope() {
    for scope in ["all", "subsystem", "off"] {
        let (sim, s, _secret, token, users) =
            up(&format!("[folders]\nglobal_scope = \"{scope}\"\n")).await;
        converged(&s, &sim, &token, &users).await;
        // Every write that ever went to a mailbox names a contact of that user's folders.
        let allowed: BTreeMap<String, BTreeSet<String>> = {
            let e = s.app.replica.read().expect("replica");
            users
                .iter()
                .map(|l| {
                    let u = e.find_login(l).expect("user");
                    let mut ids = BTreeSet::new();
                    for f in [
                        crmgate::domain::rules::VirtualFolder::My,
                        crmgate::domain::rules::VirtualFolder::Global,
                    ] {
                        ids.extend(e.list(u, f).into_iter().map(|c| e.contact_id(c).to_owned()));
                    }
                    (l.to_lowercase(), ids)
                })
                .collect()
        };
        let idp = crmgate::mirror::body::id_prop();
        let mut posts = 0;
        for (w, body) in sim.writes() {
            let Some(rest) = w.strip_prefix("POST /users/") else {
                continue;
            };
            if !rest.ends_with("/contacts") {
                continue;
            }
            let who = rest
                .split('/')
                .next()
                .expect("user")
                .replace("%40", "@")
                .to_lowercase();
            let id = body["singleValueExtendedProperties"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["id"] == idp.as_str())
                .and_then(|p| p["value"].as_str())
                .expect("crmgate id on every create")
                .to_owned();
            assert!(allowed[&who].contains(&id), "{scope}: {who} got {id}");
            posts += 1;
        }
        assert!(posts > 100, "{scope}: {posts} creates");
        for u in &users {
            assert_eq!(
                folder_of(&sim, u, "global").is_some(),
                scope != "off",
                "{scope}: {u}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_fill_completes_under_throttling_5xx_and_dropped_connections_without_a_duplicate() {
    let sim = sim_with_mailboxes().await;
    sim.set_limits(support::graph_sim::Limits {
        requests_per_window: 150,
        window: Duration::from_secs(5),
        concurrent: 4,
        upload_bytes_per_5min: 150_000_000,
    });
    sim.set_faults(support::graph_sim::Faults {
        fail_5xx: 0.3,
        drop_after_write: 0.3,
    });
    // crmgate's own budget set above the simulator's, so the simulator's 429s are met and
    // must be honoured.
    let users: Vec<String> = logins().into_iter().take(3).collect();
    let (s, _secret) = start(
        &sim,
        &format!(
            "requests_per_window = 400\nwindow_secs = 5\nmailboxes = {:?}\n",
            users
        ),
    )
    .await;
    let token = admin_token(&s).await;
    let t = Instant::now();
    converged_within(&s, &sim, &token, &users, 240).await;
    eprintln!("filled under faults in {:?}", t.elapsed());
    assert!(
        sim.faults_injected() > 20,
        "faults: {}",
        sim.faults_injected()
    );
    assert!(sim.throttled() > 0, "the simulator's limits were reached");
    assert_eq!(sim.violations(), 0, "nothing sent while told to wait");
    for u in &users {
        assert!(sim.max_in_flight(u) <= 4, "{u}: {}", sim.max_in_flight(u));
    }
    // Mailboxes the settings do not name are left alone.
    for u in logins().iter().skip(3) {
        assert!(
            folder_of(&sim, u, "my").is_none(),
            "{u} was not to be mirrored"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operations_status_skips_repairs_and_resyncs() {
    let sim = GraphSim::start().await;
    sim.set_latency(Duration::from_millis(1), Duration::from_millis(3));
    sim.set_access_ttl(Duration::from_secs(2));
    let started = Instant::now();
    let users = logins();
    // lena has no mailbox at all; david's mailbox refuses the app (no consent).
    for l in &users {
        if l != "lena@example.test" {
            sim.add_mailbox(l);
        }
    }
    sim.set_mailbox_state(
        "david@example.test",
        support::graph_sim::MailboxState::AccessDenied,
    );
    let (s, _secret) = start(&sim, "failure_backoff_secs = 3600\n").await;
    let token = admin_token(&s).await;
    let good: Vec<String> = users
        .iter()
        .filter(|u| !u.starts_with("lena") && !u.starts_with("david"))
        .cloned()
        .collect();
    converged(&s, &sim, &token, &good).await;

    // Status: every mailbox listed; the two that cannot be worked on are skipped with the
    // reason, and not tried again in a loop.
    let status = admin_get(&s, "/admin/v1/mirror").await;
    let by: BTreeMap<String, Value> = status["mailboxes"]
        .as_array()
        .expect("list")
        .iter()
        .map(|m| (m["login"].as_str().expect("login").to_owned(), m.clone()))
        .collect();
    assert_eq!(by.len(), users.len(), "{status}");
    for u in &good {
        assert_eq!(by[u]["state"], "incremental", "{u}: {}", by[u]);
        assert_eq!(by[u]["backlog"], 0);
        assert!(by[u]["contacts"].as_u64() > Some(0));
    }
    for (u, why) in [
        ("lena@example.test", "ErrorInvalidUser"),
        ("david@example.test", "403"),
    ] {
        assert_eq!(by[u]["state"], "skipped", "{u}: {}", by[u]);
        assert!(
            by[u]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains(why)),
            "{}",
            by[u]
        );
    }
    assert_eq!(status["progress"]["mailboxes_filled"], good.len());
    let (before, _) = sim.requests();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (after, routes) = sim.requests();
    // Polls of the good mailboxes' folders go on (2 delta reads a second each, at most);
    // the skipped ones cost nothing.
    assert!(
        after - before < 40,
        "{} requests in 3 s: {routes:?}",
        after - before
    );
    // A 2-s token is renewed at half its life: about one grant a second, not one a request.
    let secs = started.elapsed().as_secs() + 2;
    assert!(
        sim.token_grants() <= secs,
        "token grants: {} in {secs} s",
        sim.token_grants()
    );
    let m = s.metrics().await;
    for line in [
        "crmgate_mirror_mailboxes{state=\"skipped\"} 2",
        &format!(
            "crmgate_mirror_mailboxes{{state=\"incremental\"}} {}",
            good.len()
        ),
        "crmgate_mirror_backlog 0",
    ] {
        assert!(m.contains(line), "{line} in\n{m}");
    }
    // Access tokens expired meanwhile (2 s): renewed, nothing failed.
    assert!(sim.token_grants() >= 2, "grants: {}", sim.token_grants());

    // Resync of one mailbox: read back, nothing created again.
    let anna = "anna@example.test";
    let posts = |sim: &GraphSim| {
        sim.writes()
            .iter()
            .filter(|(w, _)| w.starts_with("POST") && w.ends_with("/contacts"))
            .count()
    };
    let n = posts(&sim);
    let r = s
        .client
        .post(s.url(&format!("/admin/v1/mirror/resync?user={anna}")))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .expect("resync");
    assert_eq!(r.status(), 202);
    let r = s
        .client
        .post(s.url("/admin/v1/mirror/resync?user=nobody@example.test"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .expect("resync");
    assert_eq!(r.status(), 404);
    tokio::time::sleep(Duration::from_secs(2)).await;
    converged(&s, &sim, &token, &good).await;
    assert_eq!(posts(&sim), n, "a resync creates nothing that is there");
    // A non-admin does not see the mirror's state.
    let r = s
        .client
        .get(s.url("/admin/v1/mirror"))
        .basic_auth("anna@example.test", Some("demo"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drift_repair_restores_folders_and_an_expired_delta_state_loses_no_edit() {
    let (sim, s, _secret, token, good) = up("repair_interval_secs = 2\n").await;
    converged(&s, &sim, &token, &good).await;
    // A user renames crmgate's folder and deletes the Global one: the repair names the one
    // back, makes the other again and fills it.
    let anna = "anna@example.test";
    let my = folder_of(&sim, anna, "my").expect("my");
    let global = folder_of(&sim, anna, "global").expect("global");
    sim.user_rename_folder(anna, &my, "Renamed by Anna");
    sim.user_delete_folder(anna, &global);
    converged(&s, &sim, &token, &good).await;
    assert_eq!(
        folder_of(&sim, anna, "my").as_deref(),
        Some(my.as_str()),
        "same folder"
    );
    assert_ne!(
        folder_of(&sim, anna, "global").as_deref(),
        Some(global.as_str())
    );

    // The delta state expires: a new round starts, nothing is lost or doubled, and a user's
    // edit made meanwhile is still taken.
    sim.expire_delta_tokens(anna);
    let (cid, item) = items(&sim, anna, &my)
        .into_iter()
        .next()
        .expect("a My contact");
    sim.user_update(
        anna,
        item["id"].as_str().expect("id"),
        json!({"department": "After Expiry"}),
    );
    crm_until(&s, &cid, "the edit after the delta state expired", |r| {
        r.as_ref()
            .is_some_and(|r| r["department"] == "After Expiry")
    })
    .await;
    converged(&s, &sim, &token, &good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_shows_and_resyncs_mailboxes_with_the_server_stopped() {
    let (sim, s, secret, token, users) = up("").await;
    converged(&s, &sim, &token, &users).await;
    let posts = |sim: &GraphSim| {
        sim.writes()
            .iter()
            .filter(|(w, _)| w.starts_with("POST") && w.ends_with("/contacts"))
            .count()
    };
    let n = posts(&sim);
    let cfg = mirror_config(&sim, secret.path(), "");
    let cfg_file = secret.path().join("crmgate.toml");
    std::fs::write(&cfg_file, &cfg).expect("config");
    let cli = |dir: &std::path::Path, args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_crmgate"))
            .args(args)
            .arg("-c")
            .arg(&cfg_file)
            .arg("--data-dir")
            .arg(dir)
            .env("CRMGATE_LOG", "error")
            .output()
            .expect("run crmgate");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let s = s
        .restart_after(&cfg, |dir| {
            let (ok, out, err) = cli(dir, &["mirror", "status"]);
            assert!(ok, "{out}{err}");
            let anna = out
                .lines()
                .find(|l| l.starts_with("anna@example.test"))
                .unwrap_or_else(|| panic!("{out}"));
            assert!(anna.contains(" yes "), "filled: {anna}");
            assert!(out.contains("6 mailbox(es)"), "{out}");
            let (ok, out, err) = cli(dir, &["mirror", "resync", "--user", "anna@example.test"]);
            assert!(ok, "{out}{err}");
            let (ok, _, err) = cli(dir, &["mirror", "resync", "--user", "nobody@example.test"]);
            assert!(!ok && err.contains("not a mirrored user"), "{err}");
            let (_, out, _) = cli(dir, &["mirror", "status"]);
            let anna = out
                .lines()
                .find(|l| l.starts_with("anna@example.test"))
                .unwrap_or_else(|| panic!("{out}"));
            assert!(anna.contains("not started"), "forgotten: {anna}");
        })
        .await;
    // Read back from the mailbox after the restart: nothing created again.
    let token = admin_token(&s).await;
    converged(&s, &sim, &token, &users).await;
    assert_eq!(posts(&sim), n, "the resync created nothing that was there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_users_edit_just_before_crmgates_own_write_is_not_lost() {
    let (sim, s, _secret, token, users) = up("").await;
    converged(&s, &sim, &token, &users).await;
    let anna = "anna@example.test";
    let my = folder_of(&sim, anna, "my").expect("my");
    for round in 0..3 {
        let (cid, item) = items(&sim, anna, &my)
            .into_iter()
            .nth(round)
            .expect("a My contact");
        // The CRM changes one property and, while crmgate's PATCH of it is on its way, the user
        // changes another in Outlook: the item ends with crmgate's change key.
        let dept = format!("Edited in Outlook {round}");
        let mut rec = crm_record(&s, &cid).await.expect("record");
        rec["job_title"] = json!(format!("Changed in the CRM {round}"));
        admin_put(&s, &format!("/admin/v1/contacts/{cid}"), &rec).await;
        sim.user_update(
            anna,
            item["id"].as_str().expect("id"),
            json!({"department": dept}),
        );
        crm_until(&s, &cid, "the user's edit in the CRM", |r| {
            r.as_ref().is_some_and(|r| r["department"] == dept.as_str())
        })
        .await;
        converged(&s, &sim, &token, &users).await;
    }
}

/// The certificate lines of `[mirror]` for a fixture pair (`app` or `other`).
fn certificate_lines(name: &str) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("certs");
    format!(
        "client_certificate = \"{}\"\nclient_key = \"file:{}\"",
        dir.join(format!("mirror-{name}.pem")).display(),
        dir.join(format!("mirror-{name}.key")).display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificate_credentials_fill_the_mailboxes_and_an_unregistered_one_is_reported() {
    let sim = sim_with_mailboxes().await;
    let graph = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("certs");
    // The admin uploaded certs/mirror-app.pem to the app; the secret no longer works.
    sim.add_certificate(
        &std::fs::read_to_string(graph.join("mirror-app.thumbprint")).expect("thumbprint"),
        std::fs::read(graph.join("mirror-app.pubkey.der")).expect("public key"),
    );
    sim.set_secret("rotated-away-secret");
    sim.set_access_ttl(Duration::from_secs(2));
    let cfg = mirror_section(&sim, &certificate_lines("app"), "");
    let s = TestServer::start(&fixture("demo.json"), &cfg).await;
    let token = admin_token(&s).await;
    converged(&s, &sim, &token, &logins()).await;
    // 2-s tokens: renewed with a fresh assertion each time (the simulator refuses a replayed
    // jti), so the mirror keeps working past the first token's life.
    let grants = sim.token_grants();
    assert!(grants >= 1);
    let mut c = admin_get(&s, "/admin/v1/contacts?limit=1").await["items"][0].clone();
    let id = c["id"].as_str().expect("id").to_owned();
    tokio::time::sleep(Duration::from_secs(3)).await;
    c["job_title"] = json!("Signed by certificate");
    admin_put(&s, &format!("/admin/v1/contacts/{id}"), &c).await;
    converged(&s, &sim, &token, &logins()).await;
    assert!(sim.token_grants() > grants, "the token was renewed");
    drop(s);

    // A valid certificate and key that the app does not know: every mailbox reports the
    // token endpoint's refusal, and nothing is written.
    let sim2 = sim_with_mailboxes().await;
    sim2.add_certificate(
        &std::fs::read_to_string(graph.join("mirror-app.thumbprint")).expect("thumbprint"),
        std::fs::read(graph.join("mirror-app.pubkey.der")).expect("public key"),
    );
    let cfg = mirror_section(&sim2, &certificate_lines("other"), "");
    let s = TestServer::start(&fixture("demo.json"), &cfg).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = admin_get(&s, "/admin/v1/mirror").await;
        let all = st["mailboxes"].as_array().expect("list");
        if !all.is_empty()
            && all.iter().all(|m| {
                m["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("AADSTS700027"))
            })
        {
            break;
        }
        assert!(Instant::now() < deadline, "no refusal reported: {st}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(sim2.token_grants(), 0);
    assert!(sim2.writes().is_empty(), "nothing written without a token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn placeholder_emails_stay_out_of_the_crm_and_a_field_changed_on_both_sides_keeps_the_crms() {
    let (sim, s, _secret, token, users) = up("failure_backoff_secs = 1\n").await;
    converged(&s, &sim, &token, &users).await;
    let anna = "anna@example.test";
    let my = folder_of(&sim, anna, "my").expect("my folder");
    let mine = items(&sim, anna, &my);
    let (cid, _) = mine.iter().next().expect("a My contact");
    let template = crm_record(&s, cid).await.expect("record");

    // A contact without an e-mail in one of anna's companies: the mailbox shows a placeholder.
    admin_put(
        &s,
        "/admin/v1/contacts/nomail1",
        &json!({"companies": template["companies"], "subsystems": template["subsystems"],
            "first_name": "Nora", "last_name": "Nomail"}),
    )
    .await;
    converged(&s, &sim, &token, &users).await;
    let item = items(&sim, anna, &my)
        .remove("nomail1")
        .expect("mirrored into My");
    let shown = item["emailAddresses"][0]["address"]
        .as_str()
        .expect("an address")
        .to_owned();
    assert!(shown.ends_with("@nomail.invalid"), "{item}");
    let item_id = item["id"].as_str().expect("id").to_owned();
    // An Outlook edit keeps the placeholder and adds a real address: only the real one and the
    // edited field reach the CRM.
    sim.user_update(
        anna,
        &item_id,
        json!({"jobTitle": "Edited in Outlook", "emailAddresses": [
            {"address": shown, "name": "Nora Nomail"},
            {"address": "nora@real.example", "name": "Nora Nomail"}]}),
    );
    let rec = crm_until(&s, "nomail1", "the Outlook edit in the CRM", |r| {
        r.as_ref()
            .is_some_and(|r| r["job_title"] == "Edited in Outlook")
    })
    .await
    .expect("record");
    let emails: Vec<&str> = rec["emails"]
        .as_array()
        .expect("emails")
        .iter()
        .filter_map(|e| e["address"].as_str())
        .collect();
    assert_eq!(emails, ["nora@real.example"], "{rec}");
    // The next part takes the mailbox out of reach at once, maybe before the write-back of
    // this edit landed: the write-back must not be given up for that.

    // The same field changed in the CRM and in Outlook while the mailbox was out of reach:
    // the CRM's value stays (the mailbox's version is the base), the user's other field lands,
    // and the mailbox ends up showing both.
    let (cid2, item2) = mine
        .iter()
        .find(|(c, _)| c.as_str() != cid)
        .map(|(c, i)| (c.clone(), i.clone()))
        .expect("a second My contact");
    let item2_id = item2["id"].as_str().expect("id").to_owned();
    sim.set_mailbox_state(anna, support::graph_sim::MailboxState::AccessDenied);
    // Wait until the mirror has seen the refusal (its next step is at least a second away).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = admin_get(&s, "/admin/v1/mirror").await;
        let refused = st["mailboxes"].as_array().expect("list").iter().any(|m| {
            m["login"] == anna && m["last_error"].as_str().is_some_and(|e| e.contains("403"))
        });
        if refused {
            break;
        }
        assert!(Instant::now() < deadline, "anna never refused: {st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut rec2 = crm_record(&s, &cid2).await.expect("record");
    rec2["job_title"] = json!("Title from the CRM");
    admin_put(&s, &format!("/admin/v1/contacts/{cid2}"), &rec2).await;
    sim.user_update(
        anna,
        &item2_id,
        json!({"jobTitle": "Title from Outlook", "department": "Dept from Outlook"}),
    );
    sim.set_mailbox_state(anna, support::graph_sim::MailboxState::Ok);
    let rec2 = crm_until(&s, &cid2, "the user's other field in the CRM", |r| {
        r.as_ref()
            .is_some_and(|r| r["department"] == "Dept from Outlook")
    })
    .await
    .expect("record");
    assert_eq!(rec2["job_title"], "Title from the CRM", "{rec2}");
    eventually("the mailbox shows the merged contact", || {
        let c = sim.contact(anna, &item2_id)?;
        (c["jobTitle"] == "Title from the CRM" && c["department"] == "Dept from Outlook")
            .then_some(())
    })
    .await;
    converged(&s, &sim, &token, &users).await;
}

/// Where crmgate's folders are in one mailbox: (holding folder's name if any, the parent id of
/// My and Global). Fails unless both have one parent and any holding folder is one.
fn placement(sim: &GraphSim, upn: &str) -> (Option<String>, String) {
    let p = crmgate::mirror::body::folder_prop();
    let all = sim.folders(upn);
    let tag = |f: &support::graph_sim::SimFolder| f.ext.get(&p).cloned().unwrap_or_default();
    let holders: Vec<_> = all.iter().filter(|f| tag(f) == "parent").collect();
    assert!(holders.len() <= 1, "{upn}: {holders:?}");
    let parents: BTreeSet<String> = all
        .iter()
        .filter(|f| tag(f) == "my" || tag(f) == "global")
        .map(|f| f.parent_id.clone())
        .collect();
    assert_eq!(parents.len(), 1, "{upn}: {all:?}");
    let parent = parents.into_iter().next().unwrap_or_default();
    match holders.first() {
        Some(h) => {
            assert_eq!(h.id, parent, "{upn}: the folders are in the holding folder");
            assert_eq!(h.parent_id, sim.default_folder_id(upn), "{upn}");
            (Some(h.display_name.clone()), parent)
        }
        None => (None, parent),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn folders_go_under_a_holding_folder_that_is_kept_and_a_placement_change_moves_them() {
    let sim = sim_with_mailboxes().await;
    let users = logins();
    let anna = "anna@example.test";
    let secret_dir = tempfile::tempdir().expect("tmp");
    let cfg = |extra: &str| mirror_config(&sim, secret_dir.path(), extra);
    let holding = "parent_folder_name = \"HQ\"\nrepair_interval_secs = 2\n";
    let s = TestServer::start(&fixture("demo.json"), &cfg(holding)).await;
    let token = admin_token(&s).await;
    converged(&s, &sim, &token, &users).await;
    for u in &users {
        assert_eq!(placement(&sim, u).0.as_deref(), Some("HQ"), "{u}");
    }
    let first = placement(&sim, anna).1;

    // The user renames the holding folder: named back. Then deletes it (and with it both
    // folders): made again and filled.
    sim.user_rename_folder(anna, &first, "Mine now");
    eventually("the holding folder named back", || {
        (placement(&sim, anna).0.as_deref() == Some("HQ")).then_some(())
    })
    .await;
    sim.user_delete_folder(anna, &first);
    converged(&s, &sim, &token, &users).await;
    let (name, second) = placement(&sim, anna);
    assert_eq!(name.as_deref(), Some("HQ"));
    assert_ne!(second, first, "made again");

    // Placement changed to the top level: the holding folder goes, the folders are made
    // directly under Contacts, no contact twice.
    let s = s.restart(&cfg("")).await;
    let token = admin_token(&s).await;
    converged(&s, &sim, &token, &users).await;
    for u in &users {
        assert_eq!(placement(&sim, u), (None, sim.default_folder_id(u)), "{u}");
    }

    // And back under a holding folder of another name, with the store's mirror keys lost as
    // well: the top-level folders are found by their markers and removed, not left beside.
    let s = s
        .restart_after(&cfg("parent_folder_name = \"Kontakte HQ\"\n"), |dir| {
            forget_mirror_keys(dir);
        })
        .await;
    let token = admin_token(&s).await;
    converged(&s, &sim, &token, &users).await;
    for u in &users {
        assert_eq!(placement(&sim, u).0.as_deref(), Some("Kontakte HQ"), "{u}");
    }
    assert_eq!(sim.violations(), 0);
}
