//! Hostile or unusual Graph input (issue "Hardening"): delta continued under `$select`,
//! `$filter` size, and what `/me/contacts` lists (as `docs/graph.md` says).

mod support;

use serde_json::Value;
use support::{fixture, TestServer};

async fn get(s: &TestServer, tok: &str, url: &str) -> (u16, Value) {
    let url = if url.starts_with("http") {
        url.to_owned()
    } else {
        s.url(url)
    };
    let r = s
        .client
        .get(url)
        .bearer_auth(tok)
        .header("prefer", "odata.maxpagesize=7")
        .send()
        .await
        .expect("get");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn my_folder(s: &TestServer, tok: &str) -> String {
    let (st, v) = get(s, tok, "/v1.0/me/contactFolders").await;
    assert_eq!(st, 200, "{v}");
    v["value"]
        .as_array()
        .expect("value")
        .iter()
        .find(|f| f["displayName"] == "HQ My Contacts")
        .and_then(|f| f["id"].as_str())
        .expect("folder")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_started_with_select_can_be_followed_to_its_end_and_resumed() {
    let s = TestServer::start(&fixture("demo.json"), "").await;
    let tok = s
        .graph_token("anna@example.test", "demo", "Contacts.ReadWrite")
        .await;
    let my = my_folder(&s, &tok).await;
    let mut url =
        format!("/v1.0/me/contactFolders/{my}/contacts/delta?$select=displayName,emailAddresses");
    let mut items = Vec::new();
    let mut pages = 0;
    let delta_link = loop {
        let (st, v) = get(&s, &tok, &url).await;
        assert_eq!(st, 200, "page {pages} of {url}: {v}");
        pages += 1;
        for it in v["value"].as_array().expect("value") {
            let keys: Vec<&str> = it
                .as_object()
                .expect("object")
                .keys()
                .map(String::as_str)
                .filter(|k| !k.starts_with('@'))
                .collect();
            assert!(
                keys.iter()
                    .all(|k| ["id", "displayName", "emailAddresses"].contains(k)),
                "the $select of the first call holds on page {pages}: {keys:?}"
            );
            items.push(it["id"].as_str().expect("id").to_owned());
        }
        match v["@odata.nextLink"].as_str() {
            Some(n) => url = n.to_owned(),
            None => {
                break v["@odata.deltaLink"]
                    .as_str()
                    .expect("deltaLink")
                    .to_owned()
            }
        }
    };
    assert!(pages > 2, "several pages were followed ({pages})");
    let n = items.len();
    items.sort();
    items.dedup();
    assert_eq!(items.len(), n, "no contact twice");
    let (st, v) = get(&s, &tok, &delta_link).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["value"].as_array().map(Vec::len), Some(0));
    // A token presented with another $select than it was made with is still refused.
    let other = delta_link.replace("$select=displayName%2CemailAddresses", "$select=surname");
    let other = other.replace("$select=displayName,emailAddresses", "$select=surname");
    assert_ne!(other, delta_link);
    let (st, _) = get(&s, &tok, &other).await;
    assert_eq!(st, 410);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_are_bounded_and_me_contacts_is_the_default_folder() {
    let s = TestServer::start(&fixture("demo.json"), "").await;
    let tok = s
        .graph_token("anna@example.test", "demo", "Contacts.Read")
        .await;
    let my = my_folder(&s, &tok).await;
    // A filter of 300 comparisons fits in a URL but not in the budget of one request.
    let wide: Vec<String> = (0..300).map(|i| format!("givenName eq 'n{i}'")).collect();
    let (st, v) = get(
        &s,
        &tok,
        &format!(
            "/v1.0/me/contactFolders/{my}/contacts?$filter={}",
            wide.join(" or ").replace(' ', "%20")
        ),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["error"]["code"], "ErrorInvalidUrlQueryFilter");
    let (st, _) = get(
        &s,
        &tok,
        &format!(
            "/v1.0/me/contactFolders/{my}/contacts?$filter={}",
            wide[..20].join(" or ").replace(' ', "%20")
        ),
    )
    .await;
    assert_eq!(st, 200);

    // As in Exchange, /me/contacts is the default Contacts folder, which holds nothing: the
    // CRM's contacts are in the two child folders. docs/graph.md says so.
    let (st, v) = get(&s, &tok, "/v1.0/me/contacts").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["value"].as_array().map(Vec::len), Some(0));
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/graph.md"))
        .expect("docs");
    let row = docs
        .lines()
        .find(|l| l.starts_with("| `GET /v1.0/{u}/contacts[/delta]`"))
        .expect("the docs describe /contacts");
    assert!(row.contains("default Contacts folder"), "{row}");
    assert!(!row.contains("both folders"), "{row}");
}

/// A body packed with objects and arrays would grow a hundred times its size as a JSON tree;
/// it is refused before the tree is built, in Graph's error shape, on the Graph face and the
/// admin API alike, and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_packed_with_objects_are_refused_before_they_are_built() {
    let s = TestServer::start(&fixture("demo.json"), "").await;
    let tok = s
        .graph_token("anna@example.test", "demo", "Contacts.ReadWrite")
        .await;
    let my = my_folder(&s, &tok).await;
    let url = format!("/v1.0/me/contactFolders/{my}/contacts");
    let (_, before) = get(&s, &tok, &format!("{url}?$top=1000")).await;
    let dense = format!(
        "{{\"givenName\":\"Dense\",\"categories\":[{}{{}}]}}",
        "{\"a\":[{}]},".repeat(6_000)
    );
    let r = s
        .client
        .post(s.url(&url))
        .bearer_auth(&tok)
        .header("content-type", "application/json")
        .body(dense.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], "BadRequest", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("more than 10000 objects and arrays")),
        "{v}"
    );
    let (_, after) = get(&s, &tok, &format!("{url}?$top=1000")).await;
    assert_eq!(before["value"], after["value"], "nothing was written");
    // The admin API reads record bodies through the same bound.
    let r = s
        .client
        .put(s.url("/admin/v1/contacts/dense1"))
        .basic_auth("ben@example.test", Some("demo2"))
        .header("content-type", "application/json")
        .body(dense)
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("json");
    assert!(v.to_string().contains("objects and arrays"), "{v}");
    // An ordinary body still works.
    let r = s
        .client
        .post(s.url(&url))
        .bearer_auth(&tok)
        .json(&serde_json::json!({"givenName": "Plain", "surname": "Body",
            "companyName": "ACME AG"}))
        .send()
        .await
        .expect("post");
    let status = r.status().as_u16();
    assert_eq!(status, 201, "{}", r.text().await.unwrap_or_default());
}
