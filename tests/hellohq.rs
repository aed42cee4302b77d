//! The helloHQ backend against the in-process simulator: the replica equals helloHQ after the
//! initial load and after randomized helloHQ-side change streams (for every user's folders),
//! EWS edits land in helloHQ with unrelated fields intact, a load interrupted part-way resumes
//! where it stopped, and a fault campaign (30 % failures, throttling, an outage) loses no
//! change, applies none twice, acknowledges no write helloHQ lacks, and never fails a read.

mod support;

use crmgate::app::App;
use crmgate::crm::{Crm, CrmBackend};
use crmgate::domain::dataset::Dataset;
use crmgate::domain::rules::{compute_folders, VirtualFolder};
use crmgate::domain::{Kind, Record};
use crmgate::ews::xml::{self, Element};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::hellohq_sim::{Faults, Sim};
use support::TestServer;

type Folders = BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)>;

fn ids_of(v: &Value, list: &str, field: &str) -> Vec<String> {
    v[list]
        .as_array()
        .map(|a| a.iter().map(|x| x[field].to_string()).collect())
        .unwrap_or_default()
}

fn push(d: &mut Value, section: &str, v: Value) {
    if let Some(a) = d[section].as_array_mut() {
        a.push(v);
    }
}

fn opt_id(v: &Value, k: &str) -> Option<String> {
    v.get(k).filter(|x| x.is_number()).map(|x| x.to_string())
}

/// The folders every user should see, computed from the simulator's raw entities with the
/// reference rules. Contacts are named by their helloHQ id; `created` gives owner and
/// subsystems of contacts created through crmgate (kept by crmgate, not by helloHQ).
fn oracle(sim: &Sim, app: &App, created: &BTreeMap<String, (String, Vec<String>)>) -> Folders {
    let subs = sim.list("Subsystem");
    let by_name: BTreeMap<String, String> = subs
        .iter()
        .map(|s| {
            (
                s["Name"].as_str().unwrap_or("").to_owned(),
                s["Id"].to_string(),
            )
        })
        .collect();
    let mut d = json!({"subsystems": [], "users": [], "companies": [], "contacts": [], "projects": [], "leads": []});
    for s in &subs {
        push(
            &mut d,
            "subsystems",
            json!({"id": s["Id"].to_string(), "name": s["Name"]}),
        );
    }
    for u in sim.list("Users") {
        let groups: Vec<String> = u["UserGroups"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|g| by_name.get(g["Name"].as_str()?).cloned())
                    .collect()
            })
            .unwrap_or_default();
        push(
            &mut d,
            "users",
            json!({"id": u["Id"].to_string(),
            "login": u["EMailWork"].as_str().unwrap_or("").to_lowercase(), "name": "x", "subsystems": groups}),
        );
    }
    for k in sim.list("Companies") {
        let types: Vec<Value> = k["CompanyTypes"]
            .as_array()
            .map(|a| a.iter().map(|t| t["Name"].clone()).collect())
            .unwrap_or_default();
        push(
            &mut d,
            "companies",
            json!({"id": k["Id"].to_string(), "name": "x",
            "subsystems": ids_of(&k, "Subsystems", "Id"), "responsible": ids_of(&k, "ResponsibleUsers", "Id"), "types": types}),
        );
    }
    for c in sim.list("ContactPersons") {
        let id = c["Id"].to_string();
        let mut o =
            json!({"id": id, "companies": opt_id(&c, "CompanyId").into_iter().collect::<Vec<_>>()});
        if let Some((owner, subs)) = created.get(&id) {
            o["owner"] = json!(owner);
            o["subsystems"] = json!(subs);
        }
        push(&mut d, "contacts", o);
    }
    for p in sim.list("Projects") {
        push(
            &mut d,
            "projects",
            json!({"id": p["Id"].to_string(),
            "subsystems": ids_of(&p, "Subsystems", "Id"), "team": ids_of(&p, "Members", "UserId"),
            "contacts": ids_of(&p, "ContactPersons", "Id"), "responsible": opt_id(&p, "ResponsibleUserId")}),
        );
    }
    for l in sim.list("Leads") {
        push(
            &mut d,
            "leads",
            json!({"id": l["Id"].to_string(),
            "subsystems": ids_of(&l, "Subsystems", "Id"), "contacts": ids_of(&l, "ContactPersons", "Id"),
            "responsible": opt_id(&l, "ResponsibleUserId")}),
        );
    }
    // Dangling references (a project naming a deleted contact) are what helloHQ can hold
    // too; the reference rules ignore them, so parse without the reference checks.
    let ds: Dataset = Dataset::from_value(&d).expect("oracle dataset");
    compute_folders(&ds, &app.config.folders.rules)
        .into_iter()
        .map(|(u, f)| {
            let s = |x: BTreeSet<crmgate::domain::ContactId>| x.into_iter().map(|c| c.0).collect();
            (u.0, (s(f.my), s(f.global)))
        })
        .collect()
}

/// The replica's folders for every user, contacts named by their helloHQ id.
async fn replica(app: &App) -> Folders {
    let Crm::HelloHq(h) = &app.crm else {
        panic!("not helloHQ")
    };
    let raw: Vec<(String, Vec<String>, Vec<String>)> = {
        let e = app.replica.read().expect("read");
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
                    e.user_id(u).to_owned(),
                    ids(VirtualFolder::My),
                    ids(VirtualFolder::Global),
                )
            })
            .collect()
    };
    let mut out = Folders::new();
    for (u, my, global) in raw {
        let hq = |ids: Vec<String>| async {
            let mut s = BTreeSet::new();
            for id in ids {
                let r = h
                    .get(Kind::Contact, id.clone())
                    .await
                    .expect("mirror")
                    .expect("in mirror");
                let hq = match &r.record {
                    Record::Contact(c) => c
                        .extra
                        .get("hq_id")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    _ => None,
                };
                s.insert(hq.unwrap_or(id));
            }
            s
        };
        let my = hq(my).await;
        let global = hq(global).await;
        out.insert(u, (my, global));
    }
    out
}

fn assert_same(want: &Folders, got: &Folders, when: &str) {
    assert_eq!(want.len(), got.len(), "{when}: users");
    for (u, (my, global)) in want {
        let (gmy, gglobal) = got
            .get(u)
            .unwrap_or_else(|| panic!("{when}: user {u} missing"));
        assert_eq!(my, gmy, "{when}: My of user {u}");
        assert_eq!(global, gglobal, "{when}: Global of user {u}");
    }
}

/// Asserts that every user's folders in the replica are what the simulator's data gives.
async fn converged(sim: &Sim, app: &App, when: &str) {
    assert_same(
        &oracle(sim, app, &BTreeMap::new()),
        &replica(app).await,
        when,
    );
}

fn user_ref(sim: &Sim, id: i32) -> Value {
    let u = sim.get("Users", id).expect("user");
    json!({"Id": id, "FirstName": u["FirstName"], "LastName": u["LastName"], "EMailWork": u["EMailWork"]})
}

/// One random helloHQ-side change. `silent`: membership edits do not stamp `UpdatedOn`.
fn random_change(sim: &Sim, rng: &mut StdRng, silent: bool) -> String {
    let pick = |rng: &mut StdRng, set: &str| -> Option<i32> {
        let all = sim.list(set);
        (!all.is_empty())
            .then(|| all[rng.gen_range(0..all.len())]["Id"].as_i64().unwrap_or(0) as i32)
    };
    let users = sim.list("Users");
    let user = |rng: &mut StdRng| {
        users[rng.gen_range(0..users.len())]["Id"]
            .as_i64()
            .unwrap_or(0) as i32
    };
    let upd = |set: &str, id: i32, f: &dyn Fn(&mut Value)| {
        if silent {
            sim.update_silent(set, id, |v| f(v))
        } else {
            sim.update(set, id, |v| f(v))
        }
    };
    match rng.gen_range(0..9) {
        0 => {
            let company = pick(rng, "Companies");
            let n = rng.gen_range(0..1_000_000);
            let id = sim.insert("ContactPersons", json!({"FirstName": format!("New{n}"), "LastName": "Stream",
                "CompanyId": company, "DefaultAddress": {"Id": 900_000 + n, "Email": format!("new{n}@stream.test")}}));
            format!("create contact {id}")
        }
        1 => {
            let Some(id) = pick(rng, "ContactPersons") else {
                return "none".into();
            };
            sim.update("ContactPersons", id, |v| v["Position"] = json!("Changed"));
            format!("update contact {id}")
        }
        2 => {
            let Some(id) = pick(rng, "ContactPersons") else {
                return "none".into();
            };
            sim.delete("ContactPersons", id);
            format!("delete contact {id}")
        }
        3 => {
            let Some(id) = pick(rng, "Companies") else {
                return "none".into();
            };
            let r = user_ref(sim, user(rng));
            upd("Companies", id, &|v| {
                v["ResponsibleUsers"] = json!([r.clone()])
            });
            format!("reassign company {id}")
        }
        4 => {
            let Some(id) = pick(rng, "Projects") else {
                return "none".into();
            };
            let (a, b) = (user(rng), user(rng));
            upd("Projects", id, &|v| {
                v["Members"] = json!([{"Id": a * 1000 + b, "UserId": a, "ProjectId": id, "ProjectRoleId": 1},
                    {"Id": b * 1000 + a + 1, "UserId": b, "ProjectId": id, "ProjectRoleId": 1}])
            });
            format!("project {id} team")
        }
        5 => {
            let (Some(id), Some(c)) = (pick(rng, "Leads"), pick(rng, "ContactPersons")) else {
                return "none".into();
            };
            let resp = user(rng);
            upd("Leads", id, &|v| {
                v["ResponsibleUserId"] = json!(resp);
                v["ContactPersons"] = json!([{"Id": c}]);
            });
            format!("lead {id} to {resp}")
        }
        6 => {
            let Some(id) = pick(rng, "Projects") else {
                return "none".into();
            };
            sim.delete("Projects", id);
            format!("delete project {id}")
        }
        7 => {
            let Some(id) = pick(rng, "Companies") else {
                return "none".into();
            };
            let interessent = sim
                .list("CompanyTypes")
                .into_iter()
                .find(|t| t["Name"] == "Interessent")
                .expect("type");
            upd("Companies", id, &|v| {
                v["CompanyTypes"] = json!([{"Id": interessent["Id"], "Name": "Interessent"}])
            });
            format!("company {id} becomes Interessent")
        }
        _ => {
            let Some(id) = pick(rng, "Users") else {
                return "none".into();
            };
            let subs = sim.list("Subsystem");
            let s = &subs[rng.gen_range(0..subs.len())];
            let g = json!([{"Id": s["Id"], "Name": s["Name"]}]);
            sim.update("Users", id, |v| v["UserGroups"] = g);
            format!("user {id} moves subsystem")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_equals_hellohq_after_load_and_random_change_streams() {
    let sim = Sim::start().await;
    sim.populate(1500, 11);
    let keys = "page_size = 200\nreconcile_interval_secs = 3600\nmembership_interval_secs = 3600";
    let extra = "[folders]\nglobal_scope = \"subsystem\"\nexcluded_types = [\"Interessent\"]";
    let s = TestServer::start_hellohq(&sim.base_url, &[], keys, extra).await;
    converged(&sim, &s.app, "after the initial load").await;
    let mine: usize = replica(&s.app).await.values().map(|(m, _)| m.len()).sum();
    assert!(mine > 100, "the data gives users My contacts ({mine})");

    // Phase A: every change stamps UpdatedOn and hard deletes leave events: one poll cycle
    // each round must be enough.
    let mut rng = StdRng::seed_from_u64(5);
    for round in 0..12 {
        let mut done = Vec::new();
        for _ in 0..rng.gen_range(1..8) {
            done.push(random_change(&sim, &mut rng, false));
        }
        s.app.refresh().await.expect("refresh");
        converged(&sim, &s.app, &format!("round {round}: {done:?}")).await;
    }
    let contacts = sim.list("ContactPersons");
    let c = &contacts[contacts.len() / 2];
    let Crm::HelloHq(h) = &s.app.crm else {
        panic!()
    };
    let got = h
        .get(Kind::Contact, c["Id"].to_string())
        .await
        .expect("get")
        .expect("there");
    let Record::Contact(got) = got.record else {
        panic!()
    };
    assert_eq!(got.first_name.as_deref(), c["FirstName"].as_str());
    assert_eq!(got.last_name.as_deref(), c["LastName"].as_str());
    assert_eq!(
        got.emails.first().map(|e| e.address.as_str()),
        c["DefaultAddress"]["Email"].as_str()
    );

    // Phase B: membership edits that do not stamp UpdatedOn and deletes without events are
    // caught by the slower schedules (1 s here).
    let keys_b = "page_size = 200\nreconcile_interval_secs = 1\nmembership_interval_secs = 1";
    let cfg = support::hellohq_config(&sim.base_url, keys_b, extra);
    let s = s.restart(&cfg).await;
    sim.set_deleted_events(false);
    for round in 0..4 {
        let mut done = Vec::new();
        for _ in 0..6 {
            done.push(random_change(&sim, &mut rng, true));
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
        s.app.refresh().await.expect("refresh");
        converged(&sim, &s.app, &format!("silent round {round}: {done:?}")).await;
    }
    s.stop().await;
}

// ---- EWS over the helloHQ backend ---------------------------------------------------------

fn envelope(body: &str) -> String {
    support::soap("", body)
}

async fn ews(s: &TestServer, who: &str, body: String) -> (Element, String) {
    let r = s
        .client
        .post(s.url("/EWS/Exchange.asmx"))
        .basic_auth(who, Some("pw"))
        .body(envelope(&body))
        .send()
        .await
        .expect("send");
    assert_eq!(
        r.status().as_u16(),
        200,
        "EWS answered with HTTP {}",
        r.status()
    );
    let text = r.text().await.expect("text");
    (
        xml::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{e}: {text}")),
        text,
    )
}

use support::{elements as all, response_codes as codes};

async fn my_folder(s: &TestServer, who: &str) -> String {
    let (r, _) = ews(s, who, r#"<m:FindFolder Traversal="Shallow"><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape><m:ParentFolderIds><t:DistinguishedFolderId Id="contacts"/></m:ParentFolderIds></m:FindFolder>"#.into()).await;
    all(&r, "FolderId")[0].attr("Id").expect("id").to_owned()
}

/// Item id and change key of crmgate contact `id` in `who`'s My folder.
async fn item(s: &TestServer, who: &str, my: &str, id: &str) -> (String, String) {
    let (r, text) = ews(s, who, format!(r#"<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape><m:Restriction><t:IsEqualTo><t:ExtendedFieldURI PropertyTag="0x10f3" PropertyType="String"/><t:FieldURIOrConstant><t:Constant Value="{id}.EML"/></t:FieldURIOrConstant></t:IsEqualTo></m:Restriction><m:ParentFolderIds><t:FolderId Id="{my}"/></m:ParentFolderIds></m:FindItem>"#)).await;
    let ids = all(&r, "ItemId");
    assert_eq!(ids.len(), 1, "{text}");
    (
        ids[0].attr("Id").expect("id").to_owned(),
        ids[0].attr("ChangeKey").expect("ck").to_owned(),
    )
}

fn update_body(item: &str, ck: &str, uri: &str, value: &str) -> String {
    format!(
        r#"<m:UpdateItem ConflictResolution="NeverOverwrite" MessageDisposition="SaveOnly"><m:ItemChanges><t:ItemChange><t:ItemId Id="{item}" ChangeKey="{ck}"/><t:Updates><t:SetItemField><t:FieldURI FieldURI="{uri}"/><t:Contact>{value}</t:Contact></t:SetItemField></t:Updates></t:ItemChange></m:ItemChanges></m:UpdateItem>"#
    )
}

/// Finds contact `cid` in `login`'s My folder `my`, sets `uri` to the `<t:Contact>` content
/// `value` with UpdateItem, and asserts it succeeded.
async fn edit_ok(s: &TestServer, login: &str, my: &str, cid: &str, uri: &str, value: &str) {
    let (item_id, ck) = item(s, login, my, cid).await;
    let (r, text) = ews(s, login, update_body(&item_id, &ck, uri, value)).await;
    assert_eq!(codes(&r), vec!["NoError"], "{text}");
}

/// A CreateItem; `company` names the contact's company (one in the user's scope links it).
fn create_body(my: &str, first: &str, last: &str, email: &str, company: Option<&str>) -> String {
    let company = company
        .map(|c| format!("<t:CompanyName>{c}</t:CompanyName>"))
        .unwrap_or_default();
    format!(
        r#"<m:CreateItem MessageDisposition="SaveOnly"><m:SavedItemFolderId><t:FolderId Id="{my}"/></m:SavedItemFolderId><m:Items><t:Contact><t:GivenName>{first}</t:GivenName>{company}<t:Surname>{last}</t:Surname><t:EmailAddresses><t:Entry Key="EmailAddress1">{email}</t:Entry></t:EmailAddresses></t:Contact></m:Items></m:CreateItem>"#
    )
}

/// The helloHQ company of contact person `hq`: (id, name).
fn company_of(sim: &Sim, hq: i32) -> (i64, String) {
    let cid = sim.get("ContactPersons", hq).expect("contact")["CompanyId"]
        .as_i64()
        .expect("populated contacts have a company");
    let name = sim.get("Companies", cid as i32).expect("company")["Name"]
        .as_str()
        .expect("name")
        .to_owned();
    (cid, name)
}

/// A user with My contacts, and one of them.
async fn someone_with_contacts(s: &TestServer) -> (String, String, String) {
    let e = s.app.replica.read().expect("read");
    for u in e.user_ids() {
        let my = e.list(u, VirtualFolder::My);
        if my.len() >= 3 {
            let login = match e.user_record(u) {
                Some(user) => user.login.clone(),
                None => continue,
            };
            return (
                e.user_id(u).to_owned(),
                login,
                e.contact_id(my[1]).to_owned(),
            );
        }
    }
    panic!("no user with My contacts")
}

async fn start_with_logins(sim: &Sim, keys: &str, extra: &str) -> TestServer {
    TestServer::start_on_sim(sim, keys, extra).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ews_edits_land_in_hellohq_with_unrelated_fields_intact() {
    let sim = Sim::start().await;
    sim.populate(300, 3);
    let s = start_with_logins(
        &sim,
        "reconcile_interval_secs = 3600",
        "[folders]\nmy_delete = \"crm\"",
    )
    .await;
    let (_, login, cid) = someone_with_contacts(&s).await;
    let hq: i32 = cid.parse().expect("populated contacts keep helloHQ ids");
    let my = my_folder(&s, &login).await;
    let before = sim.get("ContactPersons", hq).expect("in sim");

    // Update: only Position changes in helloHQ; everything else, unmapped fields included,
    // stays exactly as it was.
    edit_ok(
        &s,
        &login,
        &my,
        &cid,
        "contacts:JobTitle",
        "<t:JobTitle>Chief Tester</t:JobTitle>",
    )
    .await;
    let after = sim.get("ContactPersons", hq).expect("still there");
    assert_eq!(after["Position"], "Chief Tester");
    for (k, v) in before.as_object().expect("object") {
        if k != "Position" && k != "UpdatedOn" && k != "UpdatedBy" {
            assert_eq!(&after[k], v, "field {k} must be untouched");
        }
    }
    // The PUT sent the whole entity, as v1 requires.
    let bodies = sim.stats().write_bodies;
    let (route, body) = bodies.last().expect("a write");
    assert!(route.starts_with("PUT"), "{route}");
    assert_eq!(
        body["LastName"], before["LastName"],
        "full object sent back"
    );

    // A change made in helloHQ after crmgate's copy: a stale change key is refused and
    // helloHQ keeps its value.
    let (item_id, ck) = item(&s, &login, &my, &cid).await;
    sim.update("ContactPersons", hq, |v| {
        v["FirstName"] = json!("Elsewhere")
    });
    let (r, text) = ews(
        &s,
        &login,
        update_body(
            &item_id,
            &ck,
            "contacts:GivenName",
            "<t:GivenName>Mine</t:GivenName>",
        ),
    )
    .await;
    assert_ne!(codes(&r), vec!["NoError"], "{text}");
    assert_eq!(
        sim.get("ContactPersons", hq).expect("there")["FirstName"],
        "Elsewhere"
    );
    s.app.refresh().await.expect("refresh");

    // A field helloHQ cannot hold is refused, not dropped.
    let (item_id, ck) = item(&s, &login, &my, &cid).await;
    let (r, text) = ews(
        &s,
        &login,
        update_body(
            &item_id,
            &ck,
            "contacts:Department",
            "<t:Department>R&amp;D</t:Department>",
        ),
    )
    .await;
    assert_ne!(
        codes(&r),
        vec!["NoError"],
        "{text}\n{:?}\n{:?}",
        sim.get("ContactPersons", hq),
        s.app.audit_tail(3)
    );

    // Create without a company: helloHQ makes contact persons only for a company, so the
    // create is refused per item, naming the field, and nothing is sent.
    let n_before = sim.list("ContactPersons").len();
    let writes_before = sim.stats().write_bodies.len();
    let (r, text) = ews(
        &s,
        &login,
        create_body(&my, "Lonely", "NoCompany", "lonely@ews.test", None),
    )
    .await;
    assert_eq!(codes(&r), vec!["ErrorInvalidPropertySet"], "{text}");
    assert!(
        text.contains("companies: helloHQ creates contact persons only for a company"),
        "{text}"
    );
    assert_eq!(sim.list("ContactPersons").len(), n_before);
    assert_eq!(
        sim.stats().write_bodies.len(),
        writes_before,
        "nothing sent"
    );

    // Create: lands once in helloHQ and stays in the creator's My under the id the client got.
    // The e-mail goes on an address made through the company's Addresses, linked by
    // DefaultAddressId; the contact person's POST carries no related entity inline.
    let (company_id, company) = company_of(&sim, hq);
    let (r, text) = ews(
        &s,
        &login,
        create_body(&my, "Created", "ViaEws", "created@ews.test", Some(&company)),
    )
    .await;
    assert_eq!(codes(&r), vec!["NoError"], "{text}");
    let bodies = sim.stats().write_bodies;
    let (route, body) = &bodies[bodies.len() - 2];
    assert_eq!(
        route,
        &format!("POST /v1/Companies({company_id})/Addresses")
    );
    assert_eq!(body["Email"], "created@ews.test");
    let (route, body) = &bodies[bodies.len() - 1];
    assert_eq!(route, "POST /v1/ContactPersons");
    assert!(body.get("DefaultAddress").is_none(), "{body}");
    assert_eq!(body["CompanyId"], company_id);
    let created: Vec<Value> = sim
        .list("ContactPersons")
        .into_iter()
        .filter(|c| c["LastName"] == "ViaEws")
        .collect();
    assert_eq!(created.len(), 1);
    assert_eq!(sim.list("ContactPersons").len(), n_before + 1);
    assert_eq!(created[0]["DefaultAddress"]["Email"], "created@ews.test");
    let new_item = all(&r, "ItemId")[0].attr("Id").expect("id").to_owned();
    s.app.refresh().await.expect("refresh");
    let (r, text) = ews(&s, &login, format!(r#"<m:GetItem><m:ItemShape><t:BaseShape>AllProperties</t:BaseShape></m:ItemShape><m:ItemIds><t:ItemId Id="{new_item}"/></m:ItemIds></m:GetItem>"#)).await;
    assert_eq!(
        codes(&r),
        vec!["NoError"],
        "the created item keeps its id after a poll: {text}"
    );

    // An expired access token is refreshed on the 401, and the sync goes on.
    sim.expire_tokens();
    let late = sim.insert(
        "ContactPersons",
        json!({"FirstName": "After", "LastName": "Expiry"}),
    );
    s.app.refresh().await.expect("refresh after token expiry");
    let Crm::HelloHq(h) = &s.app.crm else {
        panic!()
    };
    assert!(h
        .get(Kind::Contact, late.to_string())
        .await
        .expect("get")
        .is_some());
    let m = s.metrics().await;
    let gauge = |name: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{m}"))
    };
    assert!(gauge("crmgate_hellohq_token_refreshes_total") >= 2.0, "{m}");
    assert_eq!(gauge("crmgate_hellohq_state{state=\"ok\"}"), 1.0);
    let age = gauge("crmgate_hellohq_newest_change_age_seconds");
    assert!((0.0..30.0).contains(&age), "a change just applied: {age}");
    assert!((0.0..30.0).contains(&gauge("crmgate_hellohq_sync_lag_seconds")));

    // Delete (policy crm): gone from helloHQ.
    let hq_new = created[0]["Id"].as_i64().expect("id") as i32;
    let (r, text) = ews(&s, &login, format!(r#"<m:DeleteItem DeleteType="HardDelete"><m:ItemIds><t:ItemId Id="{new_item}"/></m:ItemIds></m:DeleteItem>"#)).await;
    assert_eq!(codes(&r), vec!["NoError"], "{text}");
    assert!(sim.get("ContactPersons", hq_new).is_none());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_initial_load_resumes_and_is_never_served_half_done() {
    let sim = Arc::new(Sim::start().await);
    sim.populate(2000, 21);
    let dir = tempfile::tempdir().expect("dir");
    let keys = "page_size = 100\nbreaker_cooldown_secs = 1";
    let open = || support::hellohq_app(dir.path(), &sim.base_url, keys);
    let app = open();
    // Let the load run until a few contact pages are in, then take helloHQ down.
    let watcher = {
        let stats = sim.clone();
        tokio::spawn(async move {
            loop {
                if stats
                    .stats()
                    .by_route
                    .get("GET ContactPersons")
                    .copied()
                    .unwrap_or(0)
                    >= 5
                {
                    stats.set_faults(Faults {
                        down: true,
                        ..Faults::default()
                    });
                    return;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    while app.refresh().await.is_ok() && !app.replica.is_ready() {}
    watcher.await.expect("watcher");
    assert!(
        !app.replica.is_ready(),
        "a half-loaded replica must not be ready"
    );
    assert!(
        app.catch_up().await.is_err(),
        "the feed refuses until the load is complete"
    );
    drop(app);

    // Restart: it continues; the sets already loaded are not read again.
    sim.set_faults(Faults::default());
    sim.reset_stats();
    let app = open();
    assert!(!app.replica.is_ready());
    let mut cycles = 0;
    while !app.replica.is_ready() {
        cycles += 1;
        assert!(cycles < 200, "load never completed");
        let _ = app.refresh().await;
    }
    let paths = sim.stats().paths;
    let first_contacts = paths
        .iter()
        .find(|p| p.contains("/v1/ContactPersons?"))
        .expect("contacts read");
    assert!(
        !first_contacts.contains("$skip=0"),
        "resumed mid-set: {first_contacts}"
    );
    for set in ["Subsystem", "Users", "Companies"] {
        assert!(
            !paths
                .iter()
                .any(|p| p.contains(&format!("/v1/{set}?")) && p.contains("$count=true")),
            "{set} was loaded again: {paths:?}"
        );
    }
    assert_same(
        &oracle(&sim, &app, &BTreeMap::new()),
        &replica(&app).await,
        "after the resumed load",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fault_campaign_loses_nothing_and_never_fails_a_read() {
    let sim = Arc::new(Sim::start().await);
    sim.populate(400, 8);
    let keys = "page_size = 100\nbreaker_failures = 4\nbreaker_cooldown_secs = 1\ntimeout_secs = 2\n\
                reconcile_interval_secs = 5\nmembership_interval_secs = 5\nrequests_per_minute = 20000";
    let s = Arc::new(start_with_logins(&sim, keys, "").await);
    let (_, login, cid) = someone_with_contacts(&s).await;
    let (_, company) = company_of(&sim, cid.parse().expect("helloHQ id"));
    let my = my_folder(&s, &login).await;
    let created_by: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    let stop = Arc::new(AtomicBool::new(false));

    // The server's own polling loop.
    let poller = {
        let (s, stop) = (s.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let _ = s.app.refresh().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    // Reads all along: every one must succeed.
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (s, stop, login, my, reads) = (
            s.clone(),
            stop.clone(),
            login.clone(),
            my.clone(),
            reads.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (r, text) = ews(&s, &login, format!(r#"<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>Default</t:BaseShape></m:ItemShape><m:ParentFolderIds><t:FolderId Id="{my}"/></m:ParentFolderIds></m:FindItem>"#)).await;
                assert_eq!(codes(&r), vec!["NoError"], "a read failed: {text}");
                let ready = s
                    .client
                    .get(s.url("/readyz"))
                    .send()
                    .await
                    .expect("readyz")
                    .status();
                assert_eq!(ready.as_u16(), 200, "/readyz must stay ready");
                reads.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        })
    };

    sim.set_faults(Faults {
        fail_rate: 0.3,
        throttle_rate: 0.05,
        retry_after: Some(1),
        drop_rate: 0.05,
        timeout_rate: 0.02,
        hang: Duration::from_secs(3),
        ..Faults::default()
    });
    let mut rng = StdRng::seed_from_u64(99);
    let mut acked_creates = Vec::new();
    let mut tried_creates = Vec::new();
    let mut acked_updates: Vec<(i32, String)> = Vec::new();
    // Every update sent, in order, acknowledged or not: one refused as retryable may still
    // have landed (its outcome was unknown), after an earlier acknowledged one.
    let mut sent_updates: Vec<(i32, String)> = Vec::new();
    let mut saw_down = false;
    let mut fast_refusals = 0;
    let mut retried = 0;
    let mut update_refusals: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..36 {
        if i == 12 {
            // A full outage.
            let f = sim.faults();
            sim.set_faults(Faults { down: true, ..f });
        }
        if i == 20 {
            sim.set_faults(Faults {
                fail_rate: 0.3,
                throttle_rate: 0.1,
                retry_after: None,
                drop_rate: 0.05,
                ..Faults::default()
            });
        }
        random_change(&sim, &mut rng, false);
        // A create and an update through EWS.
        let name = format!("Fault{i:02}");
        tried_creates.push(name.clone());
        // Like a real client, retry a create that failed as retryable (same content).
        for _attempt in 0..3 {
            let t = std::time::Instant::now();
            let (r, _) = ews(
                &s,
                &login,
                create_body(
                    &my,
                    &name,
                    "Campaign",
                    &format!("{}@campaign.test", name.to_lowercase()),
                    Some(&company),
                ),
            )
            .await;
            let c = codes(&r);
            if c == ["NoError"] {
                acked_creates.push(name.clone());
                break;
            }
            assert!(c.iter().all(|x| x == "ErrorServerBusy"), "{c:?}");
            retried += 1;
            if (12..20).contains(&i) && t.elapsed() < Duration::from_secs(3) {
                fast_refusals += 1;
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        let (_, _, cid) = someone_with_contacts(&s).await;
        if let Ok(hq) = cid.parse::<i32>() {
            let (item_id, ck) = item(&s, &login, &my, &cid).await;
            let title = format!("Title{i:02}");
            let (r, _) = ews(
                &s,
                &login,
                update_body(
                    &item_id,
                    &ck,
                    "contacts:JobTitle",
                    &format!("<t:JobTitle>{title}</t:JobTitle>"),
                ),
            )
            .await;
            let c = codes(&r);
            sent_updates.push((hq, title.clone()));
            if c == ["NoError"] {
                acked_updates.push((hq, title));
            } else {
                *update_refusals.entry(c.join(",")).or_insert(0) += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        if (12..20).contains(&i) {
            let m = s.metrics().await;
            saw_down |= m.contains("crmgate_hellohq_state{state=\"down\"} 1");
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    }
    sim.set_faults(Faults::default());
    stop.store(true, Ordering::Relaxed);
    poller.await.expect("poller");
    reader.await.expect("reads never failed");
    let st = sim.stats();
    eprintln!(
        "campaign: {} reads, creates {}/{} acknowledged after {retried} retryable refusals, {} updates acknowledged, {fast_refusals} fast refusals in the outage; helloHQ saw {} requests",
        reads.load(Ordering::Relaxed),
        acked_creates.len(),
        tried_creates.len(),
        acked_updates.len(),
        st.requests
    );
    eprintln!(
        "update refusals: {update_refusals:?}; helloHQ routes: {:?}",
        st.by_route
    );
    assert!(reads.load(Ordering::Relaxed) > 20, "reads ran throughout");
    assert!(saw_down, "/metrics showed the outage");
    assert!(fast_refusals > 0, "writes failed fast during the outage");

    // Converge, then check.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let _ = s.app.refresh().await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    s.app.refresh().await.expect("refresh after recovery");
    let in_sim = sim.list("ContactPersons");
    for name in &tried_creates {
        let n = in_sim
            .iter()
            .filter(|c| c["FirstName"] == name.as_str())
            .count();
        assert!(n <= 1, "{name} created {n} times");
        if acked_creates.contains(name) {
            assert_eq!(n, 1, "acknowledged create {name} is missing from helloHQ");
        }
    }
    for (hq, title) in &acked_updates {
        if let Some(c) = sim.get("ContactPersons", *hq) {
            // A later acknowledged update of the same contact may have replaced it.
            let last = acked_updates
                .iter()
                .rev()
                .find(|(h, _)| h == hq)
                .map(|(_, t)| t);
            if Some(title) == last {
                // The last acknowledged title, or one sent after it whose outcome was unknown.
                let later: Vec<&str> = sent_updates
                    .iter()
                    .skip_while(|(h, t)| !(h == hq && t == title))
                    .filter(|(h, _)| h == hq)
                    .map(|(_, t)| t.as_str())
                    .collect();
                let now = c["Position"].as_str().unwrap_or("");
                assert!(
                    later.contains(&now),
                    "acknowledged update {title} lost: helloHQ has {now:?}, sent since {later:?}"
                );
            }
        }
    }
    assert!(
        !acked_creates.is_empty() && !acked_updates.is_empty(),
        "some writes got through"
    );
    // Owners of contacts created through crmgate come from crmgate's own records.
    let Crm::HelloHq(h) = &s.app.crm else {
        panic!()
    };
    let mut created = created_by;
    let e_ids: Vec<String> = {
        let e = s.app.replica.read().expect("read");
        e.user_ids()
            .into_iter()
            .flat_map(|u| {
                e.list(u, VirtualFolder::My)
                    .into_iter()
                    .map(|c| e.contact_id(c).to_owned())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    for id in e_ids {
        let r = h.get(Kind::Contact, id).await.expect("get").expect("there");
        let Record::Contact(c) = r.record else {
            continue;
        };
        if let (Some(hq), Some(owner)) = (c.extra.get("hq_id").and_then(Value::as_str), &c.owner) {
            created.insert(
                hq.to_owned(),
                (
                    owner.0.clone(),
                    c.subsystems.iter().map(|x| x.0.clone()).collect(),
                ),
            );
        }
    }
    let want = oracle(&sim, &s.app, &created);
    let got = replica(&s.app).await;
    if want != got {
        // Say where every differing contact is, so a failure explains itself.
        let mut differing = BTreeSet::new();
        for (u, (my, global)) in &want {
            if let Some((gmy, gglobal)) = got.get(u) {
                differing.extend(my.symmetric_difference(gmy).cloned());
                differing.extend(global.symmetric_difference(gglobal).cloned());
            }
        }
        let e = s.app.replica.read().expect("read");
        for hq in differing {
            let in_sim = hq
                .parse::<i32>()
                .ok()
                .and_then(|n| sim.get("ContactPersons", n));
            let local = e.find_contact(&hq);
            let aliased = e.ids(Kind::Contact).into_iter().find(|id| {
                e.contact_record_by_id(id)
                    .and_then(|c| {
                        c.extra
                            .get("hq_id")
                            .and_then(Value::as_str)
                            .map(|h| h == hq)
                    })
                    .unwrap_or(false)
            });
            let folders: Vec<String> = e
                .user_ids()
                .into_iter()
                .filter_map(|u| {
                    let c = local.or_else(|| aliased.as_deref().and_then(|a| e.find_contact(a)))?;
                    e.folder_of(u, c).map(|f| format!("{}:{f:?}", e.user_id(u)))
                })
                .collect();
            eprintln!(
                "differs: helloHQ {hq}: in helloHQ {in_sim:?}; replica by id {local:?}, by alias {aliased:?} ({:?}), folders {folders:?}",
                aliased.as_deref().and_then(|a| e.contact_record_by_id(a)).map(|c| (&c.owner, &c.companies, &c.subsystems))
            );
        }
    }
    assert_same(&want, &got, "after the campaign");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subsystems_and_companies_read_through_v2_give_the_same_folders() {
    let sim = Sim::start().await;
    let p = sim.populate(600, 17);
    let keys = "v2 = [\"subsystems\", \"companies\"]\npage_size = 100\n\
                reconcile_interval_secs = 3600\nmembership_interval_secs = 3600";
    let extra = "[folders]\nglobal_scope = \"subsystem\"\nexcluded_types = [\"Interessent\"]";
    let s = TestServer::start_hellohq(&sim.base_url, &[], keys, extra).await;
    converged(&sim, &s.app, "after a load through v2").await;
    let paths = sim.stats().paths;
    assert!(
        paths.iter().any(|p| p.starts_with("/v2/Companies?")),
        "{paths:?}"
    );
    assert!(
        paths.iter().any(|p| p.starts_with("/v2/Subsystems?")),
        "{paths:?}"
    );
    assert!(
        !paths
            .iter()
            .any(|p| p.starts_with("/v1/Companies?") || p.starts_with("/v1/Subsystem?")),
        "{paths:?}"
    );
    let mut rng = StdRng::seed_from_u64(8);
    for round in 0..6 {
        let mut done = Vec::new();
        for _ in 0..5 {
            done.push(random_change(&sim, &mut rng, false));
        }
        let k = p.companies[rng.gen_range(0..p.companies.len())];
        if sim.delete("Companies", k) {
            done.push(format!("delete company {k}"));
        }
        s.app.refresh().await.expect("refresh");
        converged(&sim, &s.app, &format!("v2 round {round}: {done:?}")).await;
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_sets_passwords_and_roles_of_hellohq_users_only() {
    let sim = Sim::start().await;
    let p = sim.populate(200, 4);
    let users: Vec<Value> = p
        .users
        .iter()
        .map(|u| sim.get("Users", *u).expect("user"))
        .collect();
    let login = |u: &Value| u["EMailWork"].as_str().unwrap_or("").to_lowercase();
    let (admin, other) = (login(&users[0]), login(&users[1]));
    let l = [
        (admin.as_str(), "pw", "admin"),
        (other.as_str(), "pw", "user"),
    ];
    let keys = "reconcile_interval_secs = 3600";
    let s = TestServer::start_hellohq(&sim.base_url, &l, keys, "").await;
    let id = p.users[1];
    let url = s.url(&format!("/admin/v1/users/{id}"));
    let signs_in = |who: String, pw: &'static str| {
        let req = s
            .client
            .post(s.url("/EWS/Exchange.asmx"))
            .basic_auth(who, Some(pw))
            .body(envelope(r#"<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape><m:FolderIds><t:DistinguishedFolderId Id="contacts"/></m:FolderIds></m:GetFolder>"#));
        async move { req.send().await.expect("send").status().as_u16() }
    };
    assert_eq!(signs_in(other.clone(), "pw").await, 200);
    let rec: Value = s
        .client
        .get(&url)
        .basic_auth(&admin, Some("pw"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(rec["login"], other.as_str());

    // Only password and role: a name change is refused with the reason, nothing changes.
    let mut renamed = rec.clone();
    renamed["name"] = json!("Someone Else");
    let r = s
        .client
        .put(&url)
        .basic_auth(&admin, Some("pw"))
        .json(&renamed)
        .send()
        .await
        .expect("put");
    assert_eq!(r.status().as_u16(), 422);
    let text = r.text().await.expect("text");
    assert!(text.contains("change name in helloHQ"), "{text}");

    let mut new_pw = rec.clone();
    new_pw["password"] = json!("n3w-secret");
    let r = s
        .client
        .put(&url)
        .basic_auth(&admin, Some("pw"))
        .json(&new_pw)
        .send()
        .await
        .expect("put");
    assert!(
        r.status().is_success(),
        "{}",
        r.text().await.unwrap_or_default()
    );
    assert_eq!(signs_in(other.clone(), "n3w-secret").await, 200);
    assert_eq!(signs_in(other.clone(), "pw").await, 401);
    // The role crmgate keeps is the one sign-in grants; helloHQ heard of none of it.
    let admin_list = |who: String| {
        let req = s
            .client
            .get(s.url("/admin/v1/users"))
            .basic_auth(who, Some("n3w-secret"));
        async move { req.send().await.expect("send").status().as_u16() }
    };
    assert_eq!(admin_list(other.clone()).await, 403);
    let writes_before = sim.stats().write_bodies.len();
    let mut promoted = rec.clone();
    promoted["role"] = json!("admin");
    let r = s
        .client
        .put(&url)
        .basic_auth(&admin, Some("pw"))
        .json(&promoted)
        .send()
        .await
        .expect("put");
    assert!(r.status().is_success());
    let shown: Value = r.json().await.expect("json");
    assert_eq!(shown["role"], "admin");
    assert!(shown.get("password_hash").is_none());
    assert_eq!(
        admin_list(other.clone()).await,
        200,
        "password kept, role granted"
    );
    assert_eq!(
        sim.stats().write_bodies.len(),
        writes_before,
        "helloHQ was sent no write"
    );

    // A helloHQ-side change of that user and a restart keep the password.
    sim.update("Users", id, |v| v["LastName"] = json!("Renamed"));
    s.app.refresh().await.expect("refresh");
    let cfg = support::hellohq_config(&sim.base_url, keys, "");
    let s = s.restart(&cfg).await;
    sim.update("Users", id, |v| v["LastName"] = json!("Renamed again"));
    s.app.refresh().await.expect("refresh");
    let status = s
        .client
        .post(s.url("/EWS/Exchange.asmx"))
        .basic_auth(&other, Some("n3w-secret"))
        .body(envelope(r#"<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape><m:FolderIds><t:DistinguishedFolderId Id="contacts"/></m:FolderIds></m:GetFolder>"#))
        .send()
        .await
        .expect("send")
        .status();
    assert_eq!(status.as_u16(), 200);
    // A user who leaves in helloHQ can no longer sign in.
    sim.update("Users", id, |v| {
        v["LeavingDate"] = json!("2026-01-31T00:00:00Z")
    });
    s.app.refresh().await.expect("refresh");
    let status = s
        .client
        .post(s.url("/EWS/Exchange.asmx"))
        .basic_auth(&other, Some("n3w-secret"))
        .body(envelope(r#"<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape><m:FolderIds><t:DistinguishedFolderId Id="contacts"/></m:FolderIds></m:GetFolder>"#))
        .send()
        .await
        .expect("send")
        .status();
    assert_eq!(status.as_u16(), 401, "a departed user is refused");
    // Users are not created through crmgate.
    let r = s
        .client
        .put(s.url("/admin/v1/users/new-one"))
        .basic_auth(&admin, Some("pw"))
        .json(&json!({"login": "new@hq.test", "name": "New", "password": "x"}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status().as_u16(), 422);
    s.stop().await;
}

// ---- Where the published API promises less than a lenient simulator gave ------------------

fn email_update(item: &str, ck: &str, email: &str) -> String {
    format!(
        r#"<m:UpdateItem ConflictResolution="NeverOverwrite" MessageDisposition="SaveOnly"><m:ItemChanges><t:ItemChange><t:ItemId Id="{item}" ChangeKey="{ck}"/><t:Updates><t:SetItemField><t:IndexedFieldURI FieldURI="contacts:EmailAddress" FieldIndex="EmailAddress1"/><t:Contact><t:EmailAddresses><t:Entry Key="EmailAddress1">{email}</t:Entry></t:EmailAddresses></t:Contact></t:SetItemField></t:Updates></t:ItemChange></m:ItemChanges></m:UpdateItem>"#
    )
}

/// The e-mail address EWS shows for an item.
async fn shown_email(s: &TestServer, who: &str, item: &str) -> String {
    let (r, text) = ews(s, who, format!(r#"<m:GetItem><m:ItemShape><t:BaseShape>AllProperties</t:BaseShape></m:ItemShape><m:ItemIds><t:ItemId Id="{item}"/></m:ItemIds></m:GetItem>"#)).await;
    assert_eq!(codes(&r), vec!["NoError"], "{text}");
    all(&r, "Entry")
        .iter()
        .find(|e| e.attr("Key") == Some("EmailAddress1"))
        .map(|e| e.text.clone())
        .unwrap_or_default()
}

/// helloHQ answers a write without navigation properties (OData v4: only what `$expand` asks
/// for), and ignores related entities sent inline. An update followed at once by a GetItem
/// and a second update: both land, the GetItem shows the real e-mail, no conflict; an e-mail
/// edit goes to an address of the company, linked by `DefaultAddressId`, and is confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_land_whole_and_confirmed_through_a_strict_hellohq() {
    let sim = Sim::start().await;
    sim.populate(300, 3);
    let s = start_with_logins(&sim, "reconcile_interval_secs = 3600", "").await;
    let (_, login, cid) = someone_with_contacts(&s).await;
    let hq: i32 = cid.parse().expect("helloHQ id");
    let my = my_folder(&s, &login).await;
    let real = sim.get("ContactPersons", hq).expect("there")["DefaultAddress"]["Email"]
        .as_str()
        .expect("populated contacts have an e-mail")
        .to_owned();

    edit_ok(
        &s,
        &login,
        &my,
        &cid,
        "contacts:JobTitle",
        "<t:JobTitle>First</t:JobTitle>",
    )
    .await;
    let (item_id, ck) = item(&s, &login, &my, &cid).await;
    assert_eq!(shown_email(&s, &login, &item_id).await, real);
    let (r, text) = ews(
        &s,
        &login,
        update_body(
            &item_id,
            &ck,
            "contacts:JobTitle",
            "<t:JobTitle>Second</t:JobTitle>",
        ),
    )
    .await;
    assert_eq!(
        codes(&r),
        vec!["NoError"],
        "the second edit is no conflict: {text}"
    );
    assert_eq!(
        sim.get("ContactPersons", hq).expect("there")["Position"],
        "Second"
    );

    // The e-mail: an address of the contact person's company, linked, and confirmed.
    let (company_id, _) = company_of(&sim, hq);
    let (item_id, ck) = item(&s, &login, &my, &cid).await;
    let (r, text) = ews(&s, &login, email_update(&item_id, &ck, "moved@strict.test")).await;
    assert_eq!(codes(&r), vec!["NoError"], "{text}");
    let now = sim.get("ContactPersons", hq).expect("there");
    assert_eq!(now["DefaultAddress"]["Email"], "moved@strict.test", "{now}");
    let first_aid = now["DefaultAddressId"].as_i64().expect("linked");
    let bodies = sim.stats().write_bodies;
    assert!(bodies.iter().any(|(k, b)| *k
        == format!("POST /v1/Companies({company_id})/Addresses")
        && b["Email"] == "moved@strict.test"));
    let (put, body) = bodies.last().expect("a write");
    assert_eq!(put, &format!("PUT /v1/ContactPersons({hq})"));
    assert!(
        body.get("DefaultAddress").is_none(),
        "no related entity inline: {body}"
    );
    let (item_id, ck) = item(&s, &login, &my, &cid).await;
    assert_eq!(shown_email(&s, &login, &item_id).await, "moved@strict.test");
    // A second e-mail edit moves to a new address and removes the one crmgate made before
    // (only addresses crmgate made for this contact are ever removed).
    let (r, text) = ews(&s, &login, email_update(&item_id, &ck, "again@strict.test")).await;
    assert_eq!(codes(&r), vec!["NoError"], "{text}");
    let now = sim.get("ContactPersons", hq).expect("there");
    assert_eq!(now["DefaultAddress"]["Email"], "again@strict.test");
    let deleted = |aid: i64| {
        sim.stats()
            .write_bodies
            .iter()
            .any(|(k, _)| *k == format!("DELETE /v1/Companies({company_id})/Addresses({aid})"))
    };
    assert!(
        deleted(first_aid),
        "the address crmgate made first is removed"
    );
    s.stop().await;
}

/// helloHQ may serve fewer entities per page than `$top` asks for (with `@odata.nextLink`),
/// and rotates the refresh token on every use (the old one is then invalid): every entity is
/// still read, and a restart signs in with the rotated token kept in the data dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_follow_next_links_and_a_restart_uses_the_rotated_refresh_token() {
    let sim = Sim::start().await;
    sim.populate(400, 13);
    sim.set_page_cap(37);
    let keys = "page_size = 200\nreconcile_interval_secs = 3600\nmembership_interval_secs = 3600";
    let extra = "[folders]\nglobal_scope = \"subsystem\"";
    let s = TestServer::start_hellohq(&sim.base_url, &[], keys, extra).await;
    converged(&sim, &s.app, "after a load in pages of 37").await;
    assert_ne!(
        sim.refresh_token(),
        Sim::REFRESH_TOKEN,
        "the token was rotated"
    );

    // Restart on the same data dir: the first request needs a new access token, which only
    // the rotated refresh token can get.
    let cfg = support::hellohq_config(&sim.base_url, keys, extra);
    let rotated = sim.refresh_token();
    let s = s.restart(&cfg).await;
    let late = sim.insert(
        "ContactPersons",
        json!({"FirstName": "After", "LastName": "Restart", "CompanyId": 1}),
    );
    s.app.refresh().await.expect("refresh after the restart");
    assert_ne!(
        sim.refresh_token(),
        rotated,
        "the restarted gateway signed in with the rotated token (and got the next one)"
    );
    let Crm::HelloHq(h) = &s.app.crm else {
        panic!()
    };
    assert!(h
        .get(Kind::Contact, late.to_string())
        .await
        .expect("get")
        .is_some());
    converged(&sim, &s.app, "after the restart").await;
    s.stop().await;
}

/// A helloHQ whose next links repeat a page (a broken server, or a hostile one) makes the
/// read fail with a retryable error at once; it never loops, and reads of the replica go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_links_that_repeat_a_page_stop_the_read_instead_of_looping() {
    let sim = Sim::start().await;
    sim.populate(60, 9);
    let s = start_with_logins(&sim, "reconcile_interval_secs = 3600", "").await;
    let Crm::HelloHq(hq) = &s.app.crm else {
        panic!("helloHQ backend expected")
    };
    // A change for the next poll to read, so its first page is not empty.
    let hq_id = sim.list("ContactPersons")[0]["Id"].as_i64().expect("id") as i32;
    assert!(sim.update("ContactPersons", hq_id, |c| c["Position"] =
        json!("Looping")));
    sim.set_faults(Faults {
        next_link_loop: true,
        ..Faults::default()
    });
    sim.reset_stats();
    let r = tokio::time::timeout(Duration::from_secs(30), hq.sync_once())
        .await
        .expect("the read stops by itself");
    match r {
        Err(crmgate::crm::CrmError::Unavailable { reason, .. }) => {
            assert!(reason.contains("repeat a page"), "{reason}")
        }
        other => panic!("expected a retryable refusal, got {other:?}"),
    }
    assert!(
        sim.stats().requests < 20,
        "a handful of requests, not a loop: {}",
        sim.stats().requests
    );
    assert!(!replica(&s.app).await.is_empty(), "reads go on");
    sim.set_faults(Faults::default());
    hq.sync_once().await.expect("a healthy helloHQ syncs again");
    s.stop().await;
}
