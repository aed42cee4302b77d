//! Every CRM outcome of a write reaches each face as that protocol's own answer, on both
//! backends, and leaves the CRM exactly as it was:
//! - a field helloHQ cannot hold (middle name, department, notes): EWS per-item
//!   `ErrorInvalidPropertySet`, Graph 400 `ErrorInvalidProperty`, each naming the field, and
//!   refused before any request reaches helloHQ (the backend's declared capabilities);
//! - helloHQ's own 422 for an entity it rejects: the same two answers, with helloHQ's reason;
//! - a contact deleted in the CRM after the client read it and before it wrote: EWS per-item
//!   `ErrorItemNotFound`, Graph 404 `ErrorItemNotFound` (helloHQ and the embedded CRM).

mod support;

use support::user_with_my_contacts;

use crmgate::crm::{Crm, Precondition};
use crmgate::domain::rules::VirtualFolder;
use crmgate::domain::Kind;
use crmgate::ews::xml::{self, Element};
use serde_json::{json, Value};
use support::hellohq_sim::{Faults, Sim};
use support::{elements, fixture, response_codes, TestServer};

/// A signed-in user of a running server, on both faces.
struct Client<'a> {
    s: &'a TestServer,
    login: String,
    password: String,
    token: String,
}

/// One EWS item answer: (ResponseCode, MessageText).
type Answer = (String, String);

impl<'a> Client<'a> {
    async fn new(s: &'a TestServer, login: &str, password: &str) -> Client<'a> {
        let token = s.graph_token(login, password, "Contacts.ReadWrite").await;
        Client {
            s,
            login: login.to_owned(),
            password: password.to_owned(),
            token,
        }
    }

    async fn ews(&self, body: &str) -> (Element, String) {
        let r = self
            .s
            .client
            .post(self.s.url("/EWS/Exchange.asmx"))
            .basic_auth(&self.login, Some(&self.password))
            .body(support::soap("", body))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), 200, "EWS answered HTTP {}", r.status());
        let text = r.text().await.expect("text");
        let e = xml::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{e}: {text}"));
        (e, text)
    }

    /// EWS item id and change key of crmgate contact `id`, found in the user's My folder.
    async fn item(&self, id: &str) -> (String, String) {
        let (r, text) = self.ews(r#"<m:FindFolder Traversal="Shallow"><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape><m:ParentFolderIds><t:DistinguishedFolderId Id="contacts"/></m:ParentFolderIds></m:FindFolder>"#).await;
        let folders = elements(&r, "FolderId");
        let my = folders
            .first()
            .and_then(|f| f.attr("Id"))
            .unwrap_or_else(|| panic!("no folder: {text}"))
            .to_owned();
        let (r, text) = self.ews(&format!(r#"<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape><m:Restriction><t:IsEqualTo><t:ExtendedFieldURI PropertyTag="0x10f3" PropertyType="String"/><t:FieldURIOrConstant><t:Constant Value="{id}.EML"/></t:FieldURIOrConstant></t:IsEqualTo></m:Restriction><m:ParentFolderIds><t:FolderId Id="{my}"/></m:ParentFolderIds></m:FindItem>"#)).await;
        let ids = elements(&r, "ItemId");
        assert_eq!(ids.len(), 1, "contact {id} in My: {text}");
        (
            ids[0].attr("Id").expect("id").to_owned(),
            ids[0].attr("ChangeKey").expect("ck").to_owned(),
        )
    }

    /// An EWS UpdateItem setting `uri` to the `<t:Contact>` content `value`.
    async fn ews_set(&self, id: &str, uri: &str, value: &str) -> Answer {
        let (item, ck) = self.item(id).await;
        self.ews_set_item(&item, &ck, uri, value).await
    }

    async fn ews_set_item(&self, item: &str, ck: &str, uri: &str, value: &str) -> Answer {
        let (r, text) = self.ews(&format!(r#"<m:UpdateItem ConflictResolution="NeverOverwrite" MessageDisposition="SaveOnly"><m:ItemChanges><t:ItemChange><t:ItemId Id="{item}" ChangeKey="{ck}"/><t:Updates><t:SetItemField><t:FieldURI FieldURI="{uri}"/><t:Contact>{value}</t:Contact></t:SetItemField></t:Updates></t:ItemChange></m:ItemChanges></m:UpdateItem>"#)).await;
        let codes = response_codes(&r);
        assert_eq!(codes.len(), 1, "one item answer: {text}");
        let message = elements(&r, "MessageText")
            .first()
            .map(|m| m.text.clone())
            .unwrap_or_default();
        (codes[0].clone(), message)
    }

    /// A Graph PATCH of contact `id` (addressed by the id Graph lists it under).
    async fn graph_patch(&self, id: &str, body: Value) -> (u16, Value) {
        let (item, _) = self.item(id).await;
        self.graph_patch_item(&item, body).await
    }

    async fn graph_patch_item(&self, item: &str, body: Value) -> (u16, Value) {
        let gid = crmgate::graph::json::to_graph_id(item);
        let r = self
            .s
            .client
            .patch(self.s.url(&format!("/v1.0/me/contacts/{gid}")))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("patch");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

/// Lower-cased without separators, so "MiddleName", "middleName" and "middle_name" match.
fn squash(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

fn assert_ews_refused(a: &Answer, field: &str) {
    assert_eq!(a.0, "ErrorInvalidPropertySet", "{a:?}");
    assert!(
        squash(&a.1).contains(&squash(field)),
        "the answer names {field}: {a:?}"
    );
}

fn assert_graph_refused(a: &(u16, Value), field: &str) {
    assert_eq!(a.0, 400, "{}", a.1);
    assert_eq!(a.1["error"]["code"], "ErrorInvalidProperty", "{}", a.1);
    let message = a.1["error"]["message"].as_str().unwrap_or_default();
    assert!(
        squash(message).contains(&squash(field)),
        "the answer names {field}: {}",
        a.1
    );
}

fn assert_ews_not_found(a: &Answer) {
    assert_eq!(a.0, "ErrorItemNotFound", "{a:?}");
}

fn assert_graph_not_found(a: &(u16, Value)) {
    assert_eq!(a.0, 404, "{}", a.1);
    assert_eq!(a.1["error"]["code"], "ErrorItemNotFound", "{}", a.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hellohq_refusals_and_deletes_reach_ews_and_graph_as_their_own_answers() {
    let sim = Sim::start().await;
    sim.populate(300, 5);
    // No deleted-entity events (and the test server does not poll): crmgate learns of a
    // helloHQ-side delete only when it writes.
    sim.set_deleted_events(false);
    let s = TestServer::start_on_sim(
        &sim,
        "reconcile_interval_secs = 3600\nmembership_interval_secs = 3600",
        "",
    )
    .await;
    let (login, ids) = user_with_my_contacts(&s, 4);
    let c = Client::new(&s, &login, "pw").await;

    // Fields helloHQ contact persons cannot hold, on both faces.
    let before = sim.snapshot();
    // The item ids first: the refusals below must cost helloHQ no request at all.
    let (item0, ck0) = c.item(&ids[0]).await;
    let requests = sim.stats().requests;
    let cases: [(&str, &str, Value, &str); 3] = [
        (
            "contacts:MiddleName",
            "<t:MiddleName>Quentin</t:MiddleName>",
            json!({"middleName": "Quentin"}),
            "middle_name",
        ),
        (
            "contacts:Department",
            "<t:Department>Research</t:Department>",
            json!({"department": "Research"}),
            "department",
        ),
        (
            "item:Body",
            r#"<t:Body BodyType="Text">met at the fair</t:Body>"#,
            json!({"personalNotes": "met at the fair"}),
            "notes",
        ),
    ];
    for (uri, xml_value, graph_body, field) in cases {
        assert_ews_refused(&c.ews_set_item(&item0, &ck0, uri, xml_value).await, field);
        assert_graph_refused(&c.graph_patch_item(&item0, graph_body).await, field);
    }
    assert_eq!(sim.snapshot(), before, "helloHQ unchanged");
    assert_eq!(
        sim.stats().requests,
        requests,
        "refused before anything was sent to helloHQ (its capabilities)"
    );

    // helloHQ's own 422.
    sim.set_faults(Faults {
        refuse_writes: true,
        ..Faults::default()
    });
    let a = c
        .ews_set(
            &ids[1],
            "contacts:JobTitle",
            "<t:JobTitle>Chief</t:JobTitle>",
        )
        .await;
    assert_eq!(a.0, "ErrorInvalidPropertySet", "{a:?}");
    assert!(a.1.contains("Position exceeds the allowed length"), "{a:?}");
    let g = c.graph_patch(&ids[1], json!({"jobTitle": "Chief"})).await;
    assert_eq!(g.0, 400, "{}", g.1);
    assert_eq!(g.1["error"]["code"], "ErrorInvalidProperty", "{}", g.1);
    let message = g.1["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("Position exceeds the allowed length"),
        "{g:?}"
    );
    sim.set_faults(Faults::default());
    assert_eq!(sim.snapshot(), before, "helloHQ unchanged after its 422");

    // Deleted in helloHQ after the client read it, before it wrote.
    let (item2, ck2) = c.item(&ids[2]).await;
    let (item3, _) = c.item(&ids[3]).await;
    for id in &ids[2..4] {
        assert!(sim.delete("ContactPersons", id.parse().expect("helloHQ id")));
    }
    let after_delete = sim.snapshot();
    let a = c
        .ews_set_item(
            &item2,
            &ck2,
            "contacts:JobTitle",
            "<t:JobTitle>Late</t:JobTitle>",
        )
        .await;
    assert_ews_not_found(&a);
    let g = c
        .graph_patch_item(&item3, json!({"jobTitle": "Late"}))
        .await;
    assert_graph_not_found(&g);
    assert_eq!(
        sim.snapshot(),
        after_delete,
        "helloHQ unchanged by the late writes"
    );
    s.stop().await;
}

/// The embedded CRM's change log, whole: equal before and after means nothing was written.
fn crm_log(s: &TestServer) -> String {
    let Crm::Embedded(crm) = &s.app.crm else {
        panic!("embedded CRM expected")
    };
    format!("{:?}", crm.changes_blocking(None, 1 << 20).expect("log"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_crm_delete_between_read_and_write_is_item_not_found_on_both_faces() {
    // The test server does not poll: the replica learns of the delete only when crmgate writes.
    let s = TestServer::start(&fixture("demo.json"), "").await;
    let Crm::Embedded(crm) = &s.app.crm else {
        panic!("embedded CRM expected")
    };
    let c = Client::new(&s, "anna@example.test", "demo").await;
    let ids: Vec<String> = {
        let e = s.app.replica.read().expect("replica");
        let anna = e.find_login("anna@example.test").expect("anna");
        let my = e.list(anna, VirtualFolder::My);
        my.iter()
            .take(2)
            .map(|c| e.contact_id(*c).to_owned())
            .collect()
    };
    assert_eq!(ids.len(), 2, "anna has My contacts in the demo");

    let (item, ck) = c.item(&ids[0]).await;
    crm.delete_blocking(Kind::Contact, &ids[0], Precondition::None)
        .expect("delete");
    let before = crm_log(&s);
    let a = c
        .ews_set_item(
            &item,
            &ck,
            "contacts:JobTitle",
            "<t:JobTitle>Late</t:JobTitle>",
        )
        .await;
    assert_ews_not_found(&a);
    assert_eq!(crm_log(&s), before, "the CRM unchanged by the late write");

    let (item, _) = c.item(&ids[1]).await;
    crm.delete_blocking(Kind::Contact, &ids[1], Precondition::None)
        .expect("delete");
    let before = crm_log(&s);
    let g = c.graph_patch_item(&item, json!({"jobTitle": "Late"})).await;
    assert_graph_not_found(&g);
    assert_eq!(crm_log(&s), before, "the CRM unchanged by the late write");
    s.stop().await;
}
