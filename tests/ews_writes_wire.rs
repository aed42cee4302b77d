//! Write rules on the wire: delete policies (crm, deny), NeverOverwrite with a stale change
//! key, a CRM outage (ErrorServerBusy with a back-off, nothing half-applied, reads unaffected),
//! the default Contacts folder, and bad input (over-long values, invalid e-mail, phone and
//! date, unknown paths, two fields in one update, read-only fields): clear per-message errors
//! and nothing written.

mod support;

use crmgate::crm::Crm;
use crmgate::ews::xml::{self, Element};
use serde_json::Value;
use support::{fixture, TestServer};

const ANNA: (&str, &str) = ("anna@example.test", "demo");

fn envelope(body: &str) -> String {
    support::soap("", body)
}

async fn post(s: &TestServer, body: String) -> (u16, Element, String) {
    let r = s
        .client
        .post(s.url("/EWS/Exchange.asmx"))
        .basic_auth(ANNA.0, Some(ANNA.1))
        .body(body)
        .send()
        .await
        .expect("send");
    let status = r.status().as_u16();
    let text = r.text().await.expect("text");
    (
        status,
        xml::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{e}: {text}")),
        text,
    )
}

use support::{elements as all, response_codes as codes};

async fn admin_contact(s: &TestServer, id: &str) -> (u16, Value) {
    let r = s
        .client
        .get(s.url(&format!("/admin/v1/contacts/{id}")))
        .basic_auth("ben@example.test", Some("demo2"))
        .send()
        .await
        .expect("get");
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or_default())
}

/// The item id and change key of contact `id` in Anna's My folder.
async fn item_of(s: &TestServer, id: &str) -> (String, String) {
    let body = envelope(&format!(
        r#"<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape><m:Restriction><t:IsEqualTo><t:ExtendedFieldURI PropertyTag="0x10f3" PropertyType="String"/><t:FieldURIOrConstant><t:Constant Value="{id}.EML"/></t:FieldURIOrConstant></t:IsEqualTo></m:Restriction><m:ParentFolderIds><t:DistinguishedFolderId Id="contacts"/></m:ParentFolderIds></m:FindItem>"#
    ));
    // The virtual folder: find it first.
    let ff = envelope(
        r#"<m:FindFolder Traversal="Shallow"><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape><m:ParentFolderIds><t:DistinguishedFolderId Id="contacts"/></m:ParentFolderIds></m:FindFolder>"#,
    );
    let (_, r, _) = post(s, ff).await;
    let my = all(&r, "FolderId")[0].attr("Id").expect("id").to_owned();
    let body = body.replace(
        r#"<t:DistinguishedFolderId Id="contacts"/>"#,
        &format!(r#"<t:FolderId Id="{my}"/>"#),
    );
    let (_, r, text) = post(s, body).await;
    let ids = all(&r, "ItemId");
    assert_eq!(ids.len(), 1, "{text}");
    (
        ids[0].attr("Id").expect("id").to_owned(),
        ids[0].attr("ChangeKey").expect("ck").to_owned(),
    )
}

fn set_field(item: &str, ck: &str, mode: &str, updates: &str) -> String {
    envelope(&format!(
        r#"<m:UpdateItem ConflictResolution="{mode}" MessageDisposition="SaveOnly"><m:ItemChanges><t:ItemChange><t:ItemId Id="{item}" ChangeKey="{ck}"/><t:Updates>{updates}</t:Updates></t:ItemChange></m:ItemChanges></m:UpdateItem>"#
    ))
}

fn set(uri: &str, value: &str) -> String {
    format!(
        r#"<t:SetItemField><t:FieldURI FieldURI="{uri}"/><t:Contact>{value}</t:Contact></t:SetItemField>"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_conflicts_and_outages() {
    let s = TestServer::start(
        &fixture("demo.json"),
        "[mapping]\nbirthday = \"read-only\"\n",
    )
    .await;
    let (item, ck) = item_of(&s, "c1").await;
    let (_, before) = admin_contact(&s, "c1").await;
    let bad: Vec<(&str, String, &str)> = vec![
        ("over-long", set("contacts:Surname", &format!("<t:Surname>{}</t:Surname>", "x".repeat(300))), "ErrorInvalidValueForProperty"),
        ("invalid e-mail", r#"<t:SetItemField><t:IndexedFieldURI FieldURI="contacts:EmailAddress" FieldIndex="EmailAddress1"/><t:Contact><t:EmailAddresses><t:Entry Key="EmailAddress1">not-an-address</t:Entry></t:EmailAddresses></t:Contact></t:SetItemField>"#.into(), "ErrorInvalidValueForProperty"),
        ("invalid phone", r#"<t:SetItemField><t:IndexedFieldURI FieldURI="contacts:PhoneNumber" FieldIndex="MobilePhone"/><t:Contact><t:PhoneNumbers><t:Entry Key="MobilePhone">call me maybe</t:Entry></t:PhoneNumbers></t:Contact></t:SetItemField>"#.into(), "ErrorInvalidValueForProperty"),
        ("read-only birthday", set("contacts:Birthday", "<t:Birthday>1980-02-20T11:59:00Z</t:Birthday>"), "ErrorInvalidPropertySet"),
        ("unknown path", set("contacts:Mileage", "<t:Mileage>3</t:Mileage>"), "ErrorInvalidPropertyRequest"),
        ("two fields", set("contacts:Surname", "<t:Surname>A</t:Surname><t:GivenName>B</t:GivenName>"), "ErrorIncorrectUpdatePropertyCount"),
        ("mismatched field", set("contacts:Surname", "<t:GivenName>B</t:GivenName>"), "ErrorIncorrectUpdatePropertyCount"),
    ];
    for (name, update, code) in bad {
        // Each bad update rides along with a good one: nothing of the item may be written.
        let updates = format!(
            "{}{update}",
            set(
                "contacts:JobTitle",
                "<t:JobTitle>Should Not Stick</t:JobTitle>"
            )
        );
        let (status, r, text) = post(&s, set_field(&item, &ck, "AutoResolve", &updates)).await;
        assert_eq!(status, 200, "{name}: {text}");
        assert_eq!(codes(&r), vec![code], "{name}: {text}");
        assert_eq!(
            admin_contact(&s, "c1").await.1,
            before,
            "{name}: nothing written"
        );
    }
    // Invalid date, in a create.
    let create = envelope(
        r#"<m:CreateItem MessageDisposition="SaveOnly"><m:SavedItemFolderId><t:DistinguishedFolderId Id="contacts"/></m:SavedItemFolderId><m:Items><t:Contact><t:GivenName>Ok</t:GivenName><t:EmailAddresses><t:Entry Key="EmailAddress1">nope</t:Entry></t:EmailAddresses></t:Contact><t:Contact><t:GivenName>Fine</t:GivenName><t:Surname>Person</t:Surname></t:Contact></m:Items></m:CreateItem>"#,
    );
    let (_, r, text) = post(&s, create).await;
    assert_eq!(
        codes(&r),
        vec!["ErrorInvalidValueForProperty", "NoError"],
        "{text}"
    );
    // The valid one landed in Anna's My folder through the default Contacts folder.
    let created_id = all(&r, "ItemId")[0].attr("Id").expect("id").to_owned();
    let get = envelope(&format!(
        r#"<m:GetItem><m:ItemShape><t:BaseShape>Default</t:BaseShape></m:ItemShape><m:ItemIds><t:ItemId Id="{created_id}"/></m:ItemIds></m:GetItem>"#
    ));
    let (_, r, _) = post(&s, get).await;
    assert_eq!(all(&r, "DisplayName")[0].text, "Fine Person");

    // NeverOverwrite with a stale change key: conflict, nothing written.
    let (_, r, _) = post(
        &s,
        set_field(
            &item,
            &ck,
            "NeverOverwrite",
            &set("contacts:JobTitle", "<t:JobTitle>First</t:JobTitle>"),
        ),
    )
    .await;
    assert_eq!(codes(&r), vec!["NoError"]);
    let new_ck = all(&r, "ItemId")[0]
        .attr("ChangeKey")
        .expect("ck")
        .to_owned();
    assert_ne!(new_ck, ck, "the answer carries the new change key");
    let (_, r, _) = post(
        &s,
        set_field(
            &item,
            &ck,
            "NeverOverwrite",
            &set("contacts:JobTitle", "<t:JobTitle>Second</t:JobTitle>"),
        ),
    )
    .await;
    assert_eq!(codes(&r), vec!["ErrorIrresolvableConflict"]);
    assert_eq!(admin_contact(&s, "c1").await.1["job_title"], "First");

    // A CRM outage: writes get ErrorServerBusy with a back-off, nothing changes, reads work.
    let Crm::Embedded(crm) = &s.app.crm else {
        panic!("embedded CRM expected")
    };
    crm.set_down(true);
    let (_, r, text) = post(
        &s,
        set_field(
            &item,
            &new_ck,
            "AutoResolve",
            &set("contacts:JobTitle", "<t:JobTitle>Third</t:JobTitle>"),
        ),
    )
    .await;
    assert_eq!(codes(&r), vec!["ErrorServerBusy"], "{text}");
    assert!(text.contains("BackOffMilliseconds"), "{text}");
    let (_, r, _) = post(&s, envelope(&format!(r#"<m:GetItem><m:ItemShape><t:BaseShape>Default</t:BaseShape></m:ItemShape><m:ItemIds><t:ItemId Id="{item}"/></m:ItemIds></m:GetItem>"#))).await;
    assert_eq!(codes(&r), vec!["NoError"], "reads keep working");
    assert_eq!(all(&r, "JobTitle")[0].text, "First");
    let ready = s.client.get(s.url("/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status(), 200);
    crm.set_down(false);
    assert_eq!(
        admin_contact(&s, "c1").await.1["job_title"],
        "First",
        "nothing half-applied"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_policies() {
    for (policy, visible_after, in_crm_after, code) in [
        ("crm", false, false, "NoError"),
        ("deny", true, true, "ErrorAccessDenied"),
        ("hide", false, true, "NoError"),
    ] {
        let s = TestServer::start(
            &fixture("demo.json"),
            &format!("[folders]\nmy_delete = \"{policy}\"\n"),
        )
        .await;
        let (item, ck) = item_of(&s, "c2").await;
        let del = envelope(&format!(
            r#"<m:DeleteItem DeleteType="HardDelete"><m:ItemIds><t:ItemId Id="{item}" ChangeKey="{ck}"/></m:ItemIds></m:DeleteItem>"#
        ));
        let (_, r, text) = post(&s, del).await;
        assert_eq!(codes(&r), vec![code], "{policy}: {text}");
        let get = envelope(&format!(
            r#"<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape><m:ItemIds><t:ItemId Id="{item}"/></m:ItemIds></m:GetItem>"#
        ));
        let (_, r, _) = post(&s, get).await;
        assert_eq!(codes(&r) == vec!["NoError"], visible_after, "{policy}");
        assert_eq!(
            admin_contact(&s, "c2").await.0 == 200,
            in_crm_after,
            "{policy}"
        );
        if policy == "hide" {
            // Other users still see it: Ben is on no rule for c2, so it is in his Global.
            let ex: Value = s
                .client
                .get(s.url("/admin/v1/explain?user=ben@example.test&contact=c2"))
                .basic_auth("ben@example.test", Some("demo2"))
                .send()
                .await
                .expect("x")
                .json()
                .await
                .expect("j");
            assert!(ex["folder"].is_string(), "{ex}");
        }
        s.stop().await;
    }
}

async fn post_as(s: &TestServer, who: (&str, &str), body: String) -> Element {
    let r = s
        .client
        .post(s.url("/EWS/Exchange.asmx"))
        .basic_auth(who.0, Some(who.1))
        .body(body)
        .send()
        .await
        .expect("send");
    let text = r.text().await.expect("text");
    xml::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// (folder id, sync state after a full first sync) of a user's folder named `name`.
async fn synced(s: &TestServer, who: (&str, &str), name: &str) -> (String, String) {
    let ff = envelope(
        r#"<m:FindFolder Traversal="Shallow"><m:FolderShape><t:BaseShape>Default</t:BaseShape></m:FolderShape><m:ParentFolderIds><t:DistinguishedFolderId Id="contacts"/></m:ParentFolderIds></m:FindFolder>"#,
    );
    let r = post_as(s, who, ff).await;
    let folder = all(&r, "ContactsFolder")
        .into_iter()
        .find(|f| f.child_text("DisplayName") == Some(name))
        .and_then(|f| f.child("FolderId").and_then(|i| i.attr("Id")))
        .expect("folder")
        .to_owned();
    let mut state = String::new();
    loop {
        let st = if state.is_empty() {
            String::new()
        } else {
            format!("<m:SyncState>{state}</m:SyncState>")
        };
        let r = post_as(s, who, sync_body(&folder, &st)).await;
        state = all(&r, "SyncState")[0].text.clone();
        if all(&r, "IncludesLastItemInRange")[0].text == "true" {
            return (folder, state);
        }
    }
}

fn sync_body(folder: &str, state: &str) -> String {
    envelope(&format!(
        r#"<m:SyncFolderItems><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:AdditionalProperties><t:ExtendedFieldURI PropertyTag="0x10f3" PropertyType="String"/></t:AdditionalProperties></m:ItemShape><m:SyncFolderId><t:FolderId Id="{folder}"/></m:SyncFolderId>{state}<m:MaxChangesReturned>512</m:MaxChangesReturned></m:SyncFolderItems>"#
    ))
}

/// The changes since `state`: (kind, resource name or "-" for deletes).
async fn changes(
    s: &TestServer,
    who: (&str, &str),
    folder: &str,
    state: &str,
) -> Vec<(String, String)> {
    let r = post_as(
        s,
        who,
        sync_body(folder, &format!("<m:SyncState>{state}</m:SyncState>")),
    )
    .await;
    let ch = all(&r, "Changes");
    ch[0]
        .children
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                all(c, "Value")
                    .first()
                    .map(|v| v.text.clone())
                    .unwrap_or_else(|| "-".into()),
            )
        })
        .collect()
}

/// A write shows up in the next sync of every user it affects: the writer's new contact as a
/// Create in their My folder, an edit as an Update for everyone who sees the contact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reach_every_affected_users_next_sync() {
    let s = TestServer::start(&fixture("demo.json"), "").await;
    const BEN: (&str, &str) = ("ben@example.test", "demo2");
    // Where Ben sees c1 (Anna has it in My through company k1).
    let ex: Value = s
        .client
        .get(s.url("/admin/v1/explain?user=ben@example.test&contact=c1"))
        .basic_auth(BEN.0, Some(BEN.1))
        .send()
        .await
        .expect("x")
        .json()
        .await
        .expect("j");
    let ben_folder = ex["folder_name"].as_str().expect("Ben sees c1").to_owned();
    let (anna_my, anna_state) = synced(&s, ANNA, "HQ My Contacts").await;
    let (ben_f, ben_state) = synced(&s, BEN, &ben_folder).await;
    // Anna edits c1 and creates a contact.
    let (item, ck) = item_of(&s, "c1").await;
    let r = post_as(
        &s,
        ANNA,
        set_field(
            &item,
            &ck,
            "AutoResolve",
            &set("contacts:JobTitle", "<t:JobTitle>Edited</t:JobTitle>"),
        ),
    )
    .await;
    assert_eq!(codes(&r), vec!["NoError"]);
    let create = envelope(&format!(
        r#"<m:CreateItem MessageDisposition="SaveOnly"><m:SavedItemFolderId><t:FolderId Id="{anna_my}"/></m:SavedItemFolderId><m:Items><t:Contact><t:ExtendedProperty><t:ExtendedFieldURI PropertyTag="0x10f3" PropertyType="String"/><t:Value>new-by-anna.EML</t:Value></t:ExtendedProperty><t:GivenName>New</t:GivenName><t:Surname>ByAnna</t:Surname></t:Contact></m:Items></m:CreateItem>"#
    ));
    let r = post_as(&s, ANNA, create).await;
    assert_eq!(codes(&r), vec!["NoError"]);
    let mut anna = changes(&s, ANNA, &anna_my, &anna_state).await;
    anna.sort();
    assert_eq!(
        anna,
        vec![
            ("Create".into(), "new-by-anna.EML".into()),
            ("Update".into(), "c1.EML".into())
        ]
    );
    let ben = changes(&s, BEN, &ben_f, &ben_state).await;
    assert!(ben.contains(&("Update".into(), "c1.EML".into())), "{ben:?}");
    assert!(
        !ben.iter()
            .any(|(_, n)| n == "new-by-anna.EML" && ben_folder == "HQ My Contacts"),
        "Anna's new contact is hers"
    );
    s.stop().await;
}
