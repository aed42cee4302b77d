//! The admin API and authentication through HTTPS, against an in-process server seeded with
//! the demo dataset.

mod support;

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{fixture, TestServer};

const ADMIN: (&str, &str) = ("ben@example.test", "demo2");
const USER: (&str, &str) = ("anna@example.test", "demo");

async fn start() -> TestServer {
    TestServer::start(
        &fixture("demo.json"),
        "[auth]\nmax_failures = 4\nfailure_delay_ms = 10\n",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metrics() {
    let s = start().await;
    let r = s.client.get(s.url("/healthz")).send().await.expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    let r = s.client.get(s.url("/readyz")).send().await.expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    let m = s.metrics().await;
    assert!(m.contains("crmgate_replica_ready 1"), "{m}");
    assert!(m.contains("crmgate_records{kind=\"contacts\"} 320"), "{m}");
    let r = s.client.get(s.url("/nope")).send().await.expect("send");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["error"]["code"], "not_found");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_round_trips() {
    let s = start().await;
    let c = &s.client;
    // List.
    let v: Value = c
        .get(s.url("/admin/v1/contacts?limit=5&offset=2"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(v["total"], 320);
    assert_eq!(v["items"].as_array().map(|a| a.len()), Some(5));
    // Users never show password material.
    let v: Value = c
        .get(s.url("/admin/v1/users/u1"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(v["login"], "anna@example.test");
    assert!(
        v.get("password_hash").is_none() && v.get("password").is_none(),
        "{v}"
    );

    // Create with If-None-Match, read back with ETag; unmapped fields survive.
    let body = json!({"companies":["k1"],"first_name":"Zoe","last_name":"Neu","crm_rating":"A",
                      "emails":[{"address":"zoe@spreewerk.example","kind":"work"}]});
    let r = c
        .put(s.url("/admin/v1/contacts/cnew"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .header("If-None-Match", "*")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::CREATED);
    let etag = r.headers()["etag"].to_str().expect("etag").to_owned();
    let r = c
        .put(s.url("/admin/v1/contacts/cnew"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .header("If-None-Match", "*")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED, "create twice");
    let r = c
        .get(s.url("/admin/v1/contacts/cnew"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .expect("send");
    assert_eq!(r.headers()["etag"].to_str().expect("etag"), etag);
    let got: Value = r.json().await.expect("json");
    assert_eq!(got["crm_rating"], "A");
    assert_eq!(got["last_name"], "Neu");

    // It is in the replica at once: Anna is responsible for k1, so it is in her My folder.
    let ex: Value = c
        .get(s.url("/admin/v1/explain?user=anna%40example.test&contact=cnew"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(ex["folder"], "my", "{ex}");
    assert!(
        ex["rules"][0]
            .as_str()
            .unwrap_or("")
            .contains("(k1) → responsible: you"),
        "{ex}"
    );

    // Stale If-Match → 412; current If-Match → 200 with a new ETag.
    let mut upd = body.clone();
    upd["job_title"] = json!("CEO");
    let r = c
        .put(s.url("/admin/v1/contacts/cnew"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .header("If-Match", "\"1\"")
        .json(&upd)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let r = c
        .put(s.url("/admin/v1/contacts/cnew"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .header("If-Match", etag.as_str())
        .json(&upd)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    assert_ne!(r.headers()["etag"].to_str().expect("etag"), etag);

    // Reassigning k1's responsible user moves its contacts out of Anna's My folder.
    let mut k1: Value = c
        .get(s.url("/admin/v1/companies/k1"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    k1["responsible"] = json!(["u6"]);
    let r = c
        .put(s.url("/admin/v1/companies/k1"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .json(&k1)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    let ex: Value = c
        .get(s.url("/admin/v1/explain?user=anna@example.test&contact=cnew"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(ex["folder"], "global", "{ex}");
    let ex: Value = c
        .get(s.url("/admin/v1/explain?user=lena@example.test&contact=cnew"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(ex["folder"], "my", "{ex}");

    // Delete, then it is gone from the CRM and the replica.
    let r = c
        .delete(s.url("/admin/v1/contacts/cnew"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = c
        .get(s.url("/admin/v1/contacts/cnew"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = c
        .delete(s.url("/admin/v1/contacts/cnew"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let ex: Value = c
        .get(s.url("/admin/v1/explain?user=anna@example.test&contact=cnew"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(ex["folder"], Value::Null, "{ex}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_are_refused_with_paths_and_nothing_is_written() {
    let s = start().await;
    let c = &s.client;
    let put = |path: &str, body: Vec<u8>| {
        c.put(s.url(path))
            .basic_auth(ADMIN.0, Some(ADMIN.1))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = put(
        "/admin/v1/contacts/cx",
        br#"{"companies":["k1","k999"]}"#.to_vec(),
    )
    .await
    .expect("send");
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["error"]["code"], "invalid");
    assert_eq!(e["error"]["details"][0]["path"], "companies[1]");
    assert_eq!(
        e["error"]["details"][0]["message"],
        "unknown company \"k999\""
    );

    let r = put(
        "/admin/v1/contacts/cx",
        br#"{"emails":[{"address":"x@y.z","kind":"office"}]}"#.to_vec(),
    )
    .await
    .expect("send");
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["error"]["details"][0]["path"], "emails[0].kind", "{e}");

    let r = put("/admin/v1/contacts/cx", br#"{"id":"other"}"#.to_vec())
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = put("/admin/v1/contacts/cx", b"{not json".to_vec())
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = put("/admin/v1/planets/x", b"{}".to_vec())
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let big = vec![b' '; 5 << 20];
    let r = put("/admin/v1/contacts/cx", big).await.expect("send");
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let r = c
        .get(s.url("/admin/v1/contacts/cx"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "nothing was written");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_failures_and_lockout() {
    let s = start().await;
    let c = &s.client;
    let r = c.get(s.url("/admin/v1/users")).send().await.expect("send");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .expect("hdr")
        .starts_with("Basic"));
    let r = c
        .get(s.url("/admin/v1/users"))
        .basic_auth(USER.0, Some(USER.1))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "non-admin");
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["error"]["code"], "forbidden");

    // New password through the API works at once; the old one stops working.
    let mut u: Value = c
        .get(s.url("/admin/v1/users/u3"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    u["password"] = json!("n3w-secret");
    u["role"] = json!("admin");
    let r = c
        .put(s.url("/admin/v1/users/u3"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .json(&u)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .get(s.url("/admin/v1/subsystems"))
        .basic_auth("clara@example.test", Some("n3w-secret"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    // A read-modify-write without password keeps it.
    let mut u: Value = c
        .get(s.url("/admin/v1/users/u3"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    u["name"] = json!("Clara V.");
    c.put(s.url("/admin/v1/users/u3"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .json(&u)
        .send()
        .await
        .expect("send");
    let r = c
        .get(s.url("/admin/v1/subsystems"))
        .basic_auth("clara@example.test", Some("n3w-secret"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .get(s.url("/admin/v1/subsystems"))
        .basic_auth("clara@example.test", Some("demo3"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // A login taken by another user is refused; the user id is no login.
    let r = c
        .put(s.url("/admin/v1/users/u9"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .json(&json!({"login":"ANNA@example.test","name":"Copy","password":"x"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["error"]["details"][0]["path"], "login", "{e}");
    let r = c
        .get(s.url("/admin/v1/subsystems"))
        .basic_auth("u2", Some(ADMIN.1))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Wrong passwords from this address: 401 until the limit, then 429 even for the right one.
    for _ in 0..2 {
        let r = c
            .get(s.url("/admin/v1/users"))
            .basic_auth(ADMIN.0, Some("wrong"))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = c
        .get(s.url("/admin/v1/users"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        r.headers()["retry-after"]
            .to_str()
            .expect("hdr")
            .parse::<u64>()
            .expect("secs")
            > 0
    );
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["error"]["code"], "locked_out");
    s.stop().await;
}
