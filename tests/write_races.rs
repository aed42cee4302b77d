//! Concurrent writers of one contact (issue "Hardening", 9): a write that asked for no
//! precondition (EWS `AlwaysOverwrite`, Graph PATCH without `If-Match`) is applied however
//! many others write the same contact at once; one that carried a stale change key or ETag
//! still gets its conflict. crmgate's writers of one contact take turns, so none loses more
//! than one race.

mod support;

use serde_json::{json, Value};
use std::sync::Arc;
use support::{fixture, soap, TestServer};

const ANNA: (&str, &str) = ("anna@example.test", "demo");
const WRITERS: usize = 4;
const EACH: usize = 15;

async fn ews(s: &TestServer, body: String) -> crmgate::ews::xml::Element {
    let r = s
        .client
        .post(s.url("/EWS/Exchange.asmx"))
        .basic_auth(ANNA.0, Some(ANNA.1))
        .header("content-type", "text/xml; charset=utf-8")
        .body(body)
        .send()
        .await
        .expect("send");
    let text = r.text().await.expect("body");
    crmgate::ews::xml::parse(text.as_bytes()).expect("xml")
}

fn update(item: &str, ck: &str, mode: &str, title: &str) -> String {
    soap(
        "",
        &format!(
            r#"<m:UpdateItem ConflictResolution="{mode}" MessageDisposition="SaveOnly"><m:ItemChanges><t:ItemChange><t:ItemId Id="{item}" ChangeKey="{ck}"/><t:Updates><t:SetItemField><t:FieldURI FieldURI="contacts:JobTitle"/><t:Contact><t:JobTitle>{title}</t:JobTitle></t:Contact></t:SetItemField></t:Updates></t:ItemChange></m:ItemChanges></m:UpdateItem>"#
        ),
    )
}

/// The first item of Anna's My folder: (id, change key).
async fn first_item(s: &TestServer) -> (String, String) {
    let ff = soap(
        "",
        r#"<m:FindFolder Traversal="Shallow"><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape><m:ParentFolderIds><t:DistinguishedFolderId Id="contacts"/></m:ParentFolderIds></m:FindFolder>"#,
    );
    let r = ews(s, ff).await;
    let my = support::elements(&r, "FolderId")[0]
        .attr("Id")
        .expect("id")
        .to_owned();
    let fi = soap(
        "",
        &format!(
            r#"<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape><m:IndexedPageItemView MaxEntriesReturned="1" Offset="0" BasePoint="Beginning"/><m:ParentFolderIds><t:FolderId Id="{my}"/></m:ParentFolderIds></m:FindItem>"#
        ),
    );
    let r = ews(s, fi).await;
    let id = &support::elements(&r, "ItemId")[0];
    (
        id.attr("Id").expect("id").to_owned(),
        id.attr("ChangeKey").expect("ck").to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ews_always_overwrite_is_never_refused_under_concurrency() {
    let s = Arc::new(TestServer::start(&fixture("demo.json"), "").await);
    let (item, ck) = first_item(&s).await;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (s, item, ck) = (s.clone(), item.clone(), ck.clone());
        tasks.push(tokio::spawn(async move {
            let mut codes = Vec::new();
            for n in 0..EACH {
                // The change key of the start: stale after the first write, and ignored under
                // AlwaysOverwrite, as EWS defines it.
                let r = ews(
                    &s,
                    update(&item, &ck, "AlwaysOverwrite", &format!("W{w}-{n}")),
                )
                .await;
                codes.extend(support::response_codes(&r));
            }
            codes
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.extend(t.await.expect("writer"));
    }
    assert_eq!(codes.len(), WRITERS * EACH);
    let refused: Vec<&String> = codes.iter().filter(|c| *c != "NoError").collect();
    assert!(refused.is_empty(), "{} refused: {refused:?}", refused.len());
    // crmgate's writers of one contact take turns: none lost more than one race.
    assert!(
        s.app.writer.longest_replan_streak() <= 1,
        "a write re-planned {} times in a row",
        s.app.writer.longest_replan_streak()
    );
    // A stale change key under NeverOverwrite still conflicts.
    let r = ews(&s, update(&item, &ck, "NeverOverwrite", "stale")).await;
    assert_ne!(support::response_codes(&r), ["NoError"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_patch_without_if_match_is_never_412_under_concurrency() {
    let s = Arc::new(TestServer::start(&fixture("demo.json"), "").await);
    let tok = s.graph_token(ANNA.0, ANNA.1, "Contacts.ReadWrite").await;
    let folders: Value = s
        .client
        .get(s.url("/v1.0/me/contactFolders"))
        .bearer_auth(&tok)
        .send()
        .await
        .expect("folders")
        .json()
        .await
        .expect("json");
    let my = folders["value"]
        .as_array()
        .expect("value")
        .iter()
        .find(|f| f["displayName"] == "HQ My Contacts")
        .and_then(|f| f["id"].as_str())
        .expect("my")
        .to_owned();
    let list: Value = s
        .client
        .get(s.url(&format!("/v1.0/me/contactFolders/{my}/contacts?$top=1")))
        .bearer_auth(&tok)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let id = list["value"][0]["id"].as_str().expect("id").to_owned();
    let etag = list["value"][0]["@odata.etag"]
        .as_str()
        .expect("etag")
        .to_owned();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (s, tok, id) = (s.clone(), tok.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for n in 0..EACH {
                let r = s
                    .client
                    .patch(s.url(&format!("/v1.0/me/contacts/{id}")))
                    .bearer_auth(&tok)
                    .json(&json!({"jobTitle": format!("G{w}-{n}")}))
                    .send()
                    .await
                    .expect("patch");
                statuses.push(r.status().as_u16());
            }
            statuses
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.extend(t.await.expect("writer"));
    }
    assert_eq!(statuses.len(), WRITERS * EACH);
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(
        s.app.writer.longest_replan_streak() <= 1,
        "a write re-planned {} times in a row",
        s.app.writer.longest_replan_streak()
    );
    // The ETag from before the writes is stale now: If-Match with it is 412.
    let r = s
        .client
        .patch(s.url(&format!("/v1.0/me/contacts/{id}")))
        .bearer_auth(&tok)
        .header("if-match", etag)
        .json(&json!({"jobTitle": "stale"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), 412);
}
