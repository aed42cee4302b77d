//! The Graph face on the wire: a CRM-side membership move in delta (removal in one folder, the
//! same id added in the other), folder delta, token life (missing, revoked, expired, CLI-issued),
//! throttling (429 ApplicationThrottled + Retry-After), isolation across users and tenants
//! (ids, delta tokens, nextLinks, /users/{x}), and bad input answered with Graph errors.

mod support;

use serde_json::{json, Value};
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
        .send()
        .await
        .expect("get");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn folder_id(v: &Value, name: &str) -> String {
    v["value"]
        .as_array()
        .expect("value")
        .iter()
        .find(|f| f["displayName"] == name)
        .expect("folder")["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

/// Follows a delta round to its deltaLink; returns (items, deltaLink).
async fn drain(s: &TestServer, tok: &str, first: &str) -> (Vec<Value>, String) {
    let mut url = first.to_owned();
    let mut items = Vec::new();
    loop {
        let (st, v) = get(s, tok, &url).await;
        assert_eq!(st, 200, "{v}");
        items.extend(v["value"].as_array().cloned().unwrap_or_default());
        if let Some(n) = v["@odata.nextLink"].as_str() {
            url = n.to_owned();
        } else {
            return (
                items,
                v["@odata.deltaLink"]
                    .as_str()
                    .expect("deltaLink")
                    .to_owned(),
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_tokens_throttle_and_bad_input() {
    let s = TestServer::start(
        &fixture("demo.json"),
        "[graph]\nrequests_per_second = 1000\n",
    )
    .await;
    let tok = s
        .graph_token("anna@example.test", "demo", "Contacts.ReadWrite")
        .await;
    // A contact Anna has through one company only.
    let admin = |r: reqwest::RequestBuilder| r.basic_auth("ben@example.test", Some("demo2"));
    let k = json!({"name": "Move GmbH", "subsystems": ["s1"], "responsible": ["u1"]});
    assert!(admin(s.client.put(s.url("/admin/v1/companies/kmove")))
        .json(&k)
        .send()
        .await
        .expect("put")
        .status()
        .is_success());
    let c = json!({"companies": ["kmove"], "first_name": "Moving", "last_name": "Person"});
    assert!(admin(s.client.put(s.url("/admin/v1/contacts/cmove")))
        .json(&c)
        .send()
        .await
        .expect("put")
        .status()
        .is_success());
    let (_, folders) = get(&s, &tok, "/v1.0/me/contactFolders").await;
    let (my, glob) = (
        folder_id(&folders, "HQ My Contacts"),
        folder_id(&folders, "HQ Global Contacts"),
    );
    let (my_items, my_link) = drain(
        &s,
        &tok,
        &format!("/v1.0/me/contactFolders('{my}')/contacts/delta()"),
    )
    .await;
    let (_, glob_link) = drain(
        &s,
        &tok,
        &format!("/v1.0/me/contactFolders/{glob}/contacts/microsoft.graph.delta()"),
    )
    .await;
    assert_eq!(my_items.len(), 48);
    // CRM-side move: the company gets another responsible user; the contact leaves Anna's My
    // and enters her Global.
    let mut k = k.clone();
    k["responsible"] = json!(["u6"]);
    assert!(admin(s.client.put(s.url("/admin/v1/companies/kmove")))
        .json(&k)
        .send()
        .await
        .expect("put")
        .status()
        .is_success());
    let (removed, _) = drain(&s, &tok, &my_link).await;
    let (added, _) = drain(&s, &tok, &glob_link).await;
    let removed_ids: Vec<&str> = removed
        .iter()
        .filter(|v| v["@removed"]["reason"] == "deleted")
        .filter_map(|v| v["id"].as_str())
        .collect();
    let added_ids: Vec<&str> = added
        .iter()
        .filter(|v| v.get("@removed").is_none())
        .filter_map(|v| v["id"].as_str())
        .collect();
    assert_eq!(removed_ids.len(), 1, "removed: {removed:?}");
    assert_eq!(removed.len(), 1, "only the removal in My");
    assert_eq!(added_ids.len(), 1, "added: {added:?}");
    assert_eq!(added[0]["displayName"], "Moving Person");
    // Folder delta lists both folders.
    let (st, fd) = get(&s, &tok, "/v1.0/me/contactFolders/delta()").await;
    assert_eq!(st, 200);
    assert_eq!(fd["value"].as_array().map(|a| a.len()), Some(2));
    let (_, again) = get(&s, &tok, fd["@odata.deltaLink"].as_str().expect("link")).await;
    assert_eq!(again["value"], json!([]));

    // Tokens.
    let (st, e) = get(&s, "cgt_nope", "/v1.0/me/contactFolders").await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (401, Some("InvalidAuthenticationToken"))
    );
    assert!(
        e["error"]["innerError"]["request-id"].is_string()
            && e["error"]["innerError"]["date"].is_string()
    );
    let r = s
        .client
        .get(s.url("/v1.0/me/contactFolders"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .expect("h")
        .starts_with("Bearer"));
    assert!(s.app.tokens.revoke(&tok).expect("revoke"));
    assert_eq!(
        get(&s, &tok, "/v1.0/me/contactFolders").await.0,
        401,
        "revoked"
    );
    let (short, _) = s
        .app
        .tokens
        .issue("u1", "anna@example.test", &["Contacts.Read".into()], 0)
        .expect("issue");
    assert_eq!(
        get(&s, &short, "/v1.0/me/contactFolders").await.0,
        401,
        "expired"
    );
    let tok = s
        .graph_token("anna@example.test", "demo", "Contacts.ReadWrite")
        .await;

    // Bad input.
    let post = |body: Vec<u8>| {
        s.client
            .post(s.url(&format!("/v1.0/me/contactFolders/{my}/contacts")))
            .bearer_auth(&tok)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for (name, body) in [
        ("malformed JSON", b"{nope".to_vec()),
        ("wrong type", br#"{"givenName": 5}"#.to_vec()),
        ("unknown property", br#"{"givenName": "A", "shoeSize": 44}"#.to_vec()),
        ("1 MB string", serde_json::to_vec(&json!({"givenName": "x".repeat(1 << 20)})).expect("j")),
        ("10,000 categories", serde_json::to_vec(&json!({"categories": vec!["c"; 10_000]})).expect("j")),
        ("4 e-mails", serde_json::to_vec(&json!({"emailAddresses": [{"address":"a@x.test"},{"address":"b@x.test"},{"address":"c@x.test"},{"address":"d@x.test"}]})).expect("j")),
    ] {
        let r = post(body).await.expect("send");
        assert_eq!(r.status(), 400, "{name}");
        let e: Value = r.json().await.expect("json");
        assert!(e["error"]["code"].is_string() && e["error"]["message"].is_string(), "{name}: {e}");
    }
    for (q, code) in [
        (
            "$filter=displayName%20gt%20'a'",
            "ErrorInvalidUrlQueryFilter",
        ),
        ("$filter=startswith(", "ErrorInvalidUrlQueryFilter"),
        (
            "$filter=emailAddresses/any(a:startswith(a/address,'x'))",
            "ErrorInvalidUrlQueryFilter",
        ),
        ("$orderby=jobTitle", "ErrorInvalidProperty"),
    ] {
        let (st, e) = get(
            &s,
            &tok,
            &format!("/v1.0/me/contactFolders/{my}/contacts?{q}"),
        )
        .await;
        assert_eq!((st, e["error"]["code"].as_str()), (400, Some(code)), "{q}");
    }
    let (st, _) = get(&s, &tok, "/v1.0/me/contacts/%FF%FE").await;
    assert_eq!(st, 400, "bad UTF-8 in the path");
    let (st, e) = get(&s, &tok, "/v1.0/me/messages").await;
    assert_eq!((st, e["error"]["code"].as_str()), (400, Some("BadRequest")));
    // Filters that work: the email form O365 and SDKs use.
    let (st, v) = get(&s, &tok, &format!("/v1.0/me/contactFolders/{my}/contacts?$filter=emailAddresses/any(a:a/address%20eq%20'crm-c5@nomail.invalid')")).await;
    assert_eq!(st, 200);
    assert_eq!(v["value"].as_array().map(|a| a.len()), Some(1), "{v}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_answers_429_with_retry_after() {
    let s = TestServer::start(&fixture("demo.json"), "[graph]\nrequests_per_second = 5\n").await;
    let tok = s
        .graph_token("anna@example.test", "demo", "Contacts.Read")
        .await;
    let mut codes = Vec::new();
    for _ in 0..8 {
        let r = s
            .client
            .get(s.url("/v1.0/me/contactFolders"))
            .bearer_auth(&tok)
            .send()
            .await
            .expect("get");
        let retry = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or("").to_owned());
        let st = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or_default();
        if st == 429 {
            assert_eq!(v["error"]["code"], "ApplicationThrottled");
            assert!(retry.is_some());
        }
        codes.push(st);
    }
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 5, "{codes:?}");
    assert!(codes.contains(&429));
    // Another user is not affected.
    let ben = s
        .graph_token("ben@example.test", "demo2", "Contacts.Read")
        .await;
    assert_eq!(get(&s, &ben, "/v1.0/me/contactFolders").await.0, 200);
    s.stop().await;
}

/// Under tenant separation nothing of Anna's reaches Oliver (London): ids, delta tokens,
/// nextLinks, /users/{x}.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_tenants_stay_apart() {
    let s = TestServer::start(
        &fixture("demo.json"),
        "[folders]\nglobal_scope = \"subsystem\"\n",
    )
    .await;
    let anna = s
        .graph_token("anna@example.test", "demo", "Contacts.ReadWrite")
        .await;
    let oliver = s
        .graph_token("oliver@example.test", "demo4", "Contacts.ReadWrite")
        .await;
    let (_, f) = get(&s, &anna, "/v1.0/me/contactFolders").await;
    let my = folder_id(&f, "HQ My Contacts");
    let (st, page) = get(
        &s,
        &anna,
        &format!("/v1.0/me/contactFolders/{my}/contacts?$top=5"),
    )
    .await;
    assert_eq!(st, 200);
    let next = page["@odata.nextLink"].as_str().expect("next").to_owned();
    let one = page["value"][0]["id"].as_str().expect("id").to_owned();
    let (_, dl) = drain(
        &s,
        &anna,
        &format!("/v1.0/me/contactFolders/{my}/contacts/delta"),
    )
    .await;
    for (what, url) in [
        ("folder id", format!("/v1.0/me/contactFolders/{my}")),
        (
            "folder contacts",
            format!("/v1.0/me/contactFolders/{my}/contacts"),
        ),
        ("item id", format!("/v1.0/me/contacts/{one}")),
        ("nextLink", next.clone()),
    ] {
        let (st, e) = get(&s, &oliver, &url).await;
        assert_eq!(st, 404, "{what}: {e}");
        assert_eq!(e["error"]["code"], "ErrorItemNotFound", "{what}");
    }
    let (st, e) = get(&s, &oliver, &dl).await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (410, Some("syncStateNotFound")),
        "delta token"
    );
    let (st, _) = get(
        &s,
        &oliver,
        "/v1.0/users/anna%40example.test/contactFolders",
    )
    .await;
    assert_eq!(st, 403, "another user's path");
    // An admin may; an unknown user is 404 ErrorInvalidUser for an admin.
    let ben = s
        .graph_token("ben@example.test", "demo2", "Contacts.Read")
        .await;
    assert_eq!(
        get(&s, &ben, "/v1.0/users/anna%40example.test/contactFolders")
            .await
            .0,
        200
    );
    let (st, e) = get(&s, &ben, "/v1.0/users/nobody%40example.test/contactFolders").await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (404, Some("ErrorInvalidUser"))
    );
    s.stop().await;
}

/// GRAPH.md §8 scenario 16: the query and header forms real clients mix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parses_mixed_encodings_and_prefer_forms() {
    let s = TestServer::start(&fixture("demo.json"), "").await;
    let anna = s
        .graph_token("anna@example.test", "demo", "Contacts.Read")
        .await;
    let (_, f) = get(&s, &anna, "/v1.0/me/contactFolders").await;
    let glob = folder_id(&f, "HQ Global Contacts");

    // `$select` plain, `$top`/`$skip` percent-encoded, in one query.
    let base = format!("/v1.0/me/contactFolders/{glob}/contacts");
    let (st, all) = get(&s, &anna, &format!("{base}?$orderby=displayName&$top=4")).await;
    assert_eq!(st, 200, "{all}");
    let (st, page) = get(
        &s,
        &anna,
        &format!("{base}?$select=displayName&$orderby=displayName&%24top=2&%24skip=2"),
    )
    .await;
    assert_eq!(st, 200, "{page}");
    let items = page["value"].as_array().expect("value");
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["displayName"], all["value"][2]["displayName"]);
    assert_eq!(items[1]["displayName"], all["value"][3]["displayName"]);
    assert!(
        items[0].get("givenName").is_none(),
        "$select applied: {}",
        items[0]
    );
    assert!(page["@odata.nextLink"]
        .as_str()
        .is_some_and(|l| l.contains("skip")));

    // `+` as space and an encoded quote in a `$filter`.
    let (st, one) = get(
        &s,
        &anna,
        "/v1.0/me/contactFolders?%24filter=displayName+eq+%27HQ+Global+Contacts%27&%24top=1",
    )
    .await;
    assert_eq!(st, 200, "{one}");
    assert_eq!(one["value"].as_array().map(Vec::len), Some(1));
    assert_eq!(one["value"][0]["displayName"], "HQ Global Contacts");

    // Percent-encoded UPN in the path is the same mailbox as /me.
    let (st, same) = get(&s, &anna, "/v1.0/users/anna%40example.test/contactFolders").await;
    assert_eq!(st, 200);
    assert_eq!(folder_id(&same, "HQ Global Contacts"), glob);

    // Prefer: repeated headers and comma-joined preferences both carry the page size.
    let url = s.url(&format!("{base}/delta"));
    let repeated = s
        .client
        .get(&url)
        .bearer_auth(&anna)
        .header("Prefer", "outlook.timezone=\"UTC\"")
        .header("Prefer", "odata.maxpagesize=3")
        .send()
        .await
        .expect("get");
    let joined = s
        .client
        .get(&url)
        .bearer_auth(&anna)
        .header("Prefer", "return=minimal, odata.maxpagesize=3")
        .send()
        .await
        .expect("get");
    for r in [repeated, joined] {
        assert_eq!(r.status(), 200);
        let applied = r
            .headers()
            .get("preference-applied")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        assert_eq!(applied.as_deref(), Some("odata.maxpagesize=3"));
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["value"].as_array().map(Vec::len), Some(3), "{v}");
        assert!(v["@odata.nextLink"].is_string());
    }
}

/// GRAPH.md §8 scenario 11: folder delta lists both folders; after a folder rename (the names
/// come from the config, so: a restart with another name) the deltaLink returns the renamed
/// folder only, with the same id, and then nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folder_delta_reports_a_rename_only() {
    let s = TestServer::start(&fixture("demo.json"), "").await;
    let anna = s
        .graph_token("anna@example.test", "demo", "Contacts.Read")
        .await;
    let (st, first) = get(&s, &anna, "/v1.0/me/contactFolders/delta()").await;
    assert_eq!(st, 200, "{first}");
    let names: Vec<&str> = first["value"]
        .as_array()
        .expect("value")
        .iter()
        .filter_map(|f| f["displayName"].as_str())
        .collect();
    assert_eq!(names, ["HQ My Contacts", "HQ Global Contacts"]);
    let my = folder_id(&first, "HQ My Contacts");
    let link = first["@odata.deltaLink"].as_str().expect("deltaLink");
    let path = &link[link.find("/v1.0").expect("path")..];
    let (_, none) = get(&s, &anna, path).await;
    assert_eq!(
        none["value"],
        serde_json::json!([]),
        "no change, nothing: {none}"
    );

    let s = s
        .restart("[folders]\nmy_name = \"CRM – Meine Kontakte\"\n")
        .await;
    let (st, renamed) = get(&s, &anna, path).await;
    assert_eq!(st, 200, "{renamed}");
    let v = renamed["value"].as_array().expect("value");
    assert_eq!(v.len(), 1, "only the renamed folder: {renamed}");
    assert_eq!(v[0]["displayName"], "CRM – Meine Kontakte");
    assert_eq!(v[0]["id"].as_str(), Some(my.as_str()), "same folder id");
    let next = renamed["@odata.deltaLink"].as_str().expect("deltaLink");
    let (_, again) = get(&s, &anna, &next[next.find("/v1.0").expect("path")..]).await;
    assert_eq!(again["value"], serde_json::json!([]), "{again}");
}

/// GRAPH.md §8 scenario 17, compressed: a client at Graph's own budget (17 requests/s, 4 in
/// flight) for 10 s under the default limits is never throttled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_within_graphs_budget_is_never_throttled() {
    let s = TestServer::start(&fixture("demo.json"), "").await;
    let anna = s
        .graph_token("anna@example.test", "demo", "Contacts.Read")
        .await;
    let (_, f) = get(&s, &anna, "/v1.0/me/contactFolders").await;
    let glob = folder_id(&f, "HQ Global Contacts");
    let urls = [
        "/v1.0/me/contactFolders".to_owned(),
        format!("/v1.0/me/contactFolders/{glob}/contacts?$top=10"),
        format!("/v1.0/me/contactFolders/{glob}/contacts/$count"),
        "/v1.0/me/contacts?$top=5&$select=displayName".to_owned(),
    ];
    let start = tokio::time::Instant::now();
    let workers: Vec<_> = (0..4u32)
        .map(|w| {
            let (client, base, anna, urls) =
                (s.client.clone(), s.base.clone(), anna.clone(), urls.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                // 4 workers × one request every 235 ms ≈ 17 requests/s.
                let mut tick = tokio::time::interval_at(
                    start + std::time::Duration::from_millis(59 * u64::from(w)),
                    std::time::Duration::from_millis(235),
                );
                for i in 0..42 {
                    tick.tick().await;
                    let r = client
                        .get(format!("{base}{}", urls[i % urls.len()]))
                        .bearer_auth(&anna)
                        .send()
                        .await
                        .expect("get");
                    statuses.push(r.status().as_u16());
                }
                statuses
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    assert_eq!(all.len(), 168);
    let bad: Vec<u16> = all.iter().copied().filter(|s| *s != 200).collect();
    assert!(bad.is_empty(), "statuses other than 200: {bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_outage_turns_writes_into_503_with_retry_after_and_reads_go_on() {
    let s = TestServer::start(&fixture("demo.json"), "").await;
    let tok = s
        .graph_token("anna@example.test", "demo", "Contacts.ReadWrite")
        .await;
    let crmgate::crm::Crm::Embedded(crm) = &s.app.crm else {
        panic!("embedded CRM expected")
    };
    crm.set_down(true);
    let r = s
        .client
        .post(s.url("/v1.0/me/contacts"))
        .bearer_auth(&tok)
        .json(&json!({"givenName": "Outage", "surname": "Test"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("5")
    );
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "ServiceNotAvailable");
    let (status, list) = get(&s, &tok, "/v1.0/me/contacts?$top=5").await;
    assert_eq!(status, 200, "reads go on: {list}");
    crm.set_down(false);
    let (_, after) = get(&s, &tok, "/v1.0/me/contacts?$filter=surname eq 'Test'").await;
    assert_eq!(
        after["value"].as_array().map(Vec::len),
        Some(0),
        "nothing half-applied"
    );
    s.stop().await;
}
