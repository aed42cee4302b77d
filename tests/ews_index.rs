//! FindItem equality restrictions on identifying properties (resource name `0x10f3`, stable
//! number `0xe23`, e-mail addresses) are answered from the replica's indexes (issue
//! "Hardening", 11). The index must answer exactly what a scan answers: each lookup is
//! compared with the same restriction wrapped in `Not(Not(…))`, which no index serves.

mod support;

use serde_json::json;
use std::collections::BTreeSet;
use support::{fixture, soap, TestServer};

const ANNA: (&str, &str) = ("anna@example.test", "demo");
const ADMIN: (&str, &str) = ("ben@example.test", "demo2");

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
    let text = r.text().await.expect("text");
    crmgate::ews::xml::parse(text.as_bytes()).expect("xml")
}

async fn folders(s: &TestServer) -> Vec<String> {
    let r = ews(
        s,
        soap(
            "",
            r#"<m:FindFolder Traversal="Shallow"><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape><m:ParentFolderIds><t:DistinguishedFolderId Id="contacts"/></m:ParentFolderIds></m:FindFolder>"#,
        ),
    )
    .await;
    support::elements(&r, "FolderId")
        .iter()
        .filter_map(|f| f.attr("Id").map(str::to_owned))
        .collect()
}

/// Item ids a FindItem with `restriction` answers in `folder`.
async fn find(s: &TestServer, folder: &str, restriction: &str) -> BTreeSet<String> {
    let r = ews(
        s,
        soap(
            "",
            &format!(
                r#"<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape><m:Restriction>{restriction}</m:Restriction><m:ParentFolderIds><t:FolderId Id="{folder}"/></m:ParentFolderIds></m:FindItem>"#
            ),
        ),
    )
    .await;
    assert_eq!(support::response_codes(&r), ["NoError"]);
    support::elements(&r, "ItemId")
        .iter()
        .filter_map(|i| i.attr("Id").map(str::to_owned))
        .collect()
}

fn eq(path: &str, value: &str) -> String {
    let value = value
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;");
    format!(
        r#"<t:IsEqualTo>{path}<t:FieldURIOrConstant><t:Constant Value="{value}"/></t:FieldURIOrConstant></t:IsEqualTo>"#
    )
}

const NAME: &str = r#"<t:ExtendedFieldURI PropertyTag="0x10f3" PropertyType="String"/>"#;
const UID: &str = r#"<t:ExtendedFieldURI PropertyTag="0xe23" PropertyType="Integer"/>"#;
const EMAIL1: &str =
    r#"<t:IndexedFieldURI FieldURI="contacts:EmailAddress" FieldIndex="EmailAddress1"/>"#;
const EMAILS: &str = r#"<t:FieldURI FieldURI="contacts:EmailAddresses"/>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexed_lookups_answer_exactly_what_a_scan_answers() {
    let s = TestServer::start(&fixture("demo.json"), "").await;
    // Ids whose resource names are ambiguous or differ only in case, and shared addresses.
    for (id, email) in [
        ("Odd.One", "shared@example.test"),
        ("odd_one", "Shared@Example.test"),
        ("ODD-ONE", ""),
        ("oddone", "odd@one.example"),
        ("OddOne", ""),
    ] {
        let emails = if email.is_empty() {
            json!([])
        } else {
            json!([{"address": email, "kind": "work"}])
        };
        let r = s
            .client
            .put(s.url(&format!("/admin/v1/contacts/{id}")))
            .basic_auth(ADMIN.0, Some(ADMIN.1))
            .json(&json!({"companies": ["k1"], "first_name": "Odd", "last_name": id, "emails": emails}))
            .send()
            .await
            .expect("put");
        let st = r.status();
        assert!(
            st.is_success(),
            "{id}: {st} {}",
            r.text().await.unwrap_or_default()
        );
    }
    // Every value the folders show for the three properties, plus variants.
    let mut values: Vec<(&str, String)> = Vec::new();
    for folder in folders(&s).await {
        let r = ews(
            &s,
            soap(
                "",
                &format!(
                    r#"<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:AdditionalProperties>{NAME}{UID}{EMAIL1}</t:AdditionalProperties></m:ItemShape><m:ParentFolderIds><t:FolderId Id="{folder}"/></m:ParentFolderIds></m:FindItem>"#
                ),
            ),
        )
        .await;
        for v in support::elements(&r, "ExtendedProperty") {
            let tag = support::elements(v, "ExtendedFieldURI")[0]
                .attr("PropertyTag")
                .unwrap_or("");
            let value = v.child_text("Value").unwrap_or("").to_owned();
            match tag {
                "0x10f3" => values.push((NAME, value)),
                "0xe23" => values.push((UID, value)),
                _ => {}
            }
        }
        for e in support::elements(&r, "Entry") {
            values.push((EMAIL1, e.text.clone()));
            values.push((EMAILS, e.text.to_uppercase()));
        }
    }
    assert!(values.len() > 300, "{} values", values.len());
    let extra: Vec<(&str, String)> = vec![
        (NAME, "ODD.ONE.eml".into()),
        (NAME, "odd_one.EML".into()),
        (NAME, "oddone.eml".into()),
        (NAME, "c1.EML".into()),
        (NAME, "nobody.EML".into()),
        (NAME, "c1".into()),
        (UID, "0001".into()),
        (UID, "-3".into()),
        (UID, "x".into()),
        (EMAIL1, "shared@example.test".into()),
        (EMAILS, "SHARED@EXAMPLE.TEST".into()),
        (EMAIL1, "7".into()),
        (EMAIL1, "crm-oddone@nomail.invalid".into()),
        (EMAIL1, "crm-odd-one@nomail.invalid".into()),
    ];
    values.extend(extra);
    let folders = folders(&s).await;
    let mut checked = 0;
    let mut hits = 0;
    for (path, value) in values.iter().step_by(3).chain(values.iter().rev().take(14)) {
        for folder in &folders {
            let r = eq(path, value);
            let indexed = find(&s, folder, &r).await;
            let scanned = find(&s, folder, &format!("<t:Not><t:Not>{r}</t:Not></t:Not>")).await;
            assert_eq!(indexed, scanned, "{path} = {value:?}");
            // Inside And and Or too.
            let both = find(
                &s,
                folder,
                &format!("<t:Or>{r}{}</t:Or>", eq(NAME, "c2.EML")),
            )
            .await;
            let both_scan = find(
                &s,
                folder,
                &format!(
                    "<t:Not><t:Not><t:Or>{r}{}</t:Or></t:Not></t:Not>",
                    eq(NAME, "c2.EML")
                ),
            )
            .await;
            assert_eq!(both, both_scan, "Or with {path} = {value:?}");
            checked += 1;
            hits += indexed.len();
        }
    }
    assert!(checked > 100 && hits > 50, "{checked} lookups, {hits} hits");
}
