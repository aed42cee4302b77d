//! Hostile but authenticated EWS input (issue "Hardening"): each test here sends what once
//! knocked the server over, and asserts the bounded answer that replaced it.

mod support;

use crmgate::ews::xml::{self, Element};
use crmgate::gen::{generate, GenParams};
use std::time::{Duration, Instant};
use support::{fixture, soap, TestServer};

const ANNA: (&str, &str) = ("anna@example.test", "demo");

struct Reply {
    status: u16,
    len: usize,
    root: Element,
}

async fn post(s: &TestServer, user: (&str, &str), body: String) -> Reply {
    let r = s
        .client
        .post(s.url("/EWS/Exchange.asmx"))
        .basic_auth(user.0, Some(user.1))
        .header("content-type", "text/xml; charset=utf-8")
        .body(body)
        .send()
        .await
        .expect("send");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    let root = xml::parse(text.as_bytes())
        .unwrap_or_else(|e| panic!("answer is not XML ({e}): {}", &text[..text.len().min(500)]));
    Reply {
        status,
        len: text.len(),
        root,
    }
}

fn codes(r: &Reply) -> Vec<String> {
    support::response_codes(&r.root)
}

/// Peak resident memory of this process (the server runs in it), in bytes.
fn peak_rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

async fn folder_id(s: &TestServer, user: (&str, &str), name: &str) -> String {
    let body = soap(
        "",
        &format!(
            r#"<m:FindFolder Traversal="Shallow"><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape><m:Restriction><t:IsEqualTo><t:FieldURI FieldURI="folder:DisplayName"/><t:FieldURIOrConstant><t:Constant Value="{name}"/></t:FieldURIOrConstant></t:IsEqualTo></m:Restriction><m:ParentFolderIds><t:DistinguishedFolderId Id="contacts"/></m:ParentFolderIds></m:FindFolder>"#
        ),
    );
    let r = post(s, user, body).await;
    support::elements(&r.root, "FolderId")
        .first()
        .and_then(|f| f.attr("Id"))
        .expect("folder id")
        .to_owned()
}

fn find_item(parents: &str, shape: &str, max: usize, restriction: &str) -> String {
    let restriction = if restriction.is_empty() {
        String::new()
    } else {
        format!("<m:Restriction>{restriction}</m:Restriction>")
    };
    soap(
        "",
        &format!(
            r#"<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>{shape}</t:BaseShape></m:ItemShape><m:IndexedPageItemView MaxEntriesReturned="{max}" Offset="0" BasePoint="Beginning"/>{restriction}<m:ParentFolderIds>{parents}</m:ParentFolderIds></m:FindItem>"#
        ),
    )
}

/// An `Or` of `n` leaves that match nothing, so every item is tested against all of them.
fn wide_restriction(n: usize) -> String {
    let leaves: String = (0..n)
        .map(|i| format!(r#"<t:IsEqualTo><t:FieldURI FieldURI="contacts:GivenName"/><t:FieldURIOrConstant><t:Constant Value="nobody-{i}"/></t:FieldURIOrConstant></t:IsEqualTo>"#))
        .collect();
    format!("<t:Or>{leaves}</t:Or>")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_bomb_is_a_schema_fault_not_an_allocation() {
    let s = TestServer::start(&fixture("demo.json"), "").await;
    let before = peak_rss();
    // 280 KB: one 100,000-character namespace URI carried by ~30,000 elements.
    let uri = format!("urn:{}", "n".repeat(100_000));
    let body = format!(
        r#"<?xml version="1.0"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:z="{uri}"><soap:Body>{}</soap:Body></soap:Envelope>"#,
        "<z:a/>".repeat(30_000)
    );
    assert!(body.len() > 280_000);
    let r = post(&s, ANNA, body).await;
    assert_eq!(r.status, 500);
    assert_eq!(codes(&r), ["ErrorSchemaValidation"]);
    let grew = peak_rss().saturating_sub(before);
    assert!(grew < 64 << 20, "peak RSS grew by {grew} bytes");
    let h = s
        .client
        .get(s.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(h.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_ids_are_answered_once_and_answers_are_bounded() {
    let s = TestServer::start(&fixture("demo.json"), "").await;
    let global = folder_id(&s, ANNA, "HQ Global Contacts").await;
    let parent = format!(r#"<t:FolderId Id="{global}"/>"#);

    // The same parent three times: one listing, two refusals, in order.
    let r = post(&s, ANNA, find_item(&parent.repeat(3), "IdOnly", 10, "")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        codes(&r),
        ["NoError", "ErrorInvalidRequest", "ErrorInvalidRequest"]
    );
    assert_eq!(support::elements(&r.root, "RootFolder").len(), 1);

    // The amplification request: 1,000 parents. Refused whole, with a small answer.
    let r = post(
        &s,
        ANNA,
        find_item(&parent.repeat(1000), "AllProperties", 1000, ""),
    )
    .await;
    assert_eq!(r.status, 500);
    assert_eq!(codes(&r), ["ErrorInvalidRequest"]);
    assert!(r.len < 4096, "{} bytes", r.len);

    // GetItem naming one item 1,000 times: one item, 999 short refusals.
    let ids = post(&s, ANNA, find_item(&parent, "IdOnly", 1, "")).await;
    let id = support::elements(&ids.root, "ItemId")[0]
        .attr("Id")
        .expect("id")
        .to_owned();
    let one = format!(r#"<t:ItemId Id="{id}"/>"#);
    let body = soap(
        "",
        &format!(
            r#"<m:GetItem><m:ItemShape><t:BaseShape>AllProperties</t:BaseShape></m:ItemShape><m:ItemIds>{}</m:ItemIds></m:GetItem>"#,
            one.repeat(1000)
        ),
    );
    let r = post(&s, ANNA, body).await;
    let c = codes(&r);
    assert_eq!(c.len(), 1000);
    assert_eq!(c[0], "NoError");
    assert!(c[1..].iter().all(|c| c == "ErrorInvalidRequest"));
    assert_eq!(support::elements(&r.root, "Contact").len(), 1);

    // A legal request whose answer is over the configured bound gets the protocol's error,
    // and a smaller page of the same listing is served.
    let full = post(&s, ANNA, find_item(&parent, "AllProperties", 1000, "")).await;
    assert_eq!(codes(&full), ["NoError"]);
    assert!(full.len > 65536, "the listing is {} bytes", full.len);
    let s = s.restart("[server]\nmax_answer_bytes = 65536\n").await;
    let r = post(&s, ANNA, find_item(&parent, "AllProperties", 1000, "")).await;
    assert_eq!(r.status, 500);
    assert_eq!(codes(&r), ["ErrorInsufficientResources"]);
    let r = post(&s, ANNA, find_item(&parent, "AllProperties", 20, "")).await;
    assert_eq!(codes(&r), ["NoError"]);
    assert_eq!(support::elements(&r.root, "Contact").len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restriction_work_is_budgeted_per_request() {
    let s = TestServer::start(&fixture("demo.json"), "[ews]\nmax_evaluations = 20000\n").await;
    let global = folder_id(&s, ANNA, "HQ Global Contacts").await;
    let parent = format!(r#"<t:FolderId Id="{global}"/>"#);
    let r = post(
        &s,
        ANNA,
        find_item(&parent, "IdOnly", 10, &wide_restriction(500)),
    )
    .await;
    assert_eq!(r.status, 500);
    assert_eq!(codes(&r), ["ErrorQueryFilterTooLong"]);
    // The same folder with a small restriction is within the budget.
    let r = post(
        &s,
        ANNA,
        find_item(&parent, "IdOnly", 10, &wide_restriction(3)),
    )
    .await;
    assert_eq!(codes(&r), ["NoError"]);
}

/// The resource test: heavy legal requests from one user, while the process is watched.
/// `/healthz` stays fast, another user's small request is answered promptly, memory stays
/// bounded, and the attacker's excess requests are told to back off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_requests_neither_block_the_runtime_nor_other_users() {
    let mut ds = generate(&GenParams {
        contacts: 6000,
        users: 4,
        subsystems: 1,
        seed: 11,
    });
    for u in &mut ds.users {
        u.password_hash = None;
        u.password = Some("pw".into());
    }
    let logins: Vec<String> = ds.users.iter().map(|u| u.login.clone()).collect();
    let dir = tempfile::tempdir().expect("tmp");
    let seed = dir.path().join("seed.json");
    std::fs::write(&seed, serde_json::to_string(&ds.to_json()).expect("json")).expect("write");
    let s = std::sync::Arc::new(TestServer::start(&seed, "[ews]\nconcurrent_requests = 2\n").await);
    let attacker = (logins[0].as_str(), "pw");
    let victim = (logins[1].as_str(), "pw");
    let global = folder_id(&s, attacker, "HQ Global Contacts").await;
    let heavy = find_item(
        &format!(r#"<t:FolderId Id="{global}"/>"#),
        "IdOnly",
        10,
        &wide_restriction(600),
    );
    let rss_before = peak_rss();
    let stop = Instant::now() + Duration::from_secs(6);
    let mut attackers = Vec::new();
    for _ in 0..6 {
        let (s, body, login) = (s.clone(), heavy.clone(), logins[0].clone());
        attackers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while Instant::now() < stop {
                let r = post(&s, (login.as_str(), "pw"), body.clone()).await;
                let c = codes(&r);
                if c.iter().any(|c| c == "ErrorServerBusy") {
                    // Told how long to back off, where Exchange says it.
                    let v = support::elements(&r.root, "Value");
                    assert!(
                        v.iter()
                            .any(|v| v.attr("Name") == Some("BackOffMilliseconds")
                                && v.text.parse::<u64>().is_ok_and(|ms| ms > 0)),
                        "a busy fault carries BackOffMilliseconds"
                    );
                }
                seen.extend(c);
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let small = soap(
        "",
        r#"<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape><m:FolderIds><t:DistinguishedFolderId Id="contacts"/></m:FolderIds></m:GetFolder>"#,
    );
    let (mut worst_health, mut worst_small) = (Duration::ZERO, Duration::ZERO);
    while Instant::now() + Duration::from_millis(500) < stop {
        let t = Instant::now();
        let h = s
            .client
            .get(s.url("/healthz"))
            .send()
            .await
            .expect("healthz");
        assert_eq!(h.status(), 200);
        worst_health = worst_health.max(t.elapsed());
        let t = Instant::now();
        let r = post(&s, victim, small.clone()).await;
        assert_eq!(codes(&r), ["NoError"]);
        worst_small = worst_small.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut seen = Vec::new();
    for a in attackers {
        seen.extend(a.await.expect("attacker"));
    }
    let ok = seen.iter().filter(|c| *c == "NoError").count();
    let busy = seen.iter().filter(|c| *c == "ErrorServerBusy").count();
    assert!(
        ok > 0,
        "the heavy requests are legal and answered: {seen:?}"
    );
    assert!(
        busy > 0,
        "past 2 in flight the attacker is told to back off"
    );
    assert_eq!(ok + busy, seen.len(), "{seen:?}");
    assert!(
        worst_health < Duration::from_millis(100),
        "/healthz took {worst_health:?}"
    );
    assert!(
        worst_small < Duration::from_millis(200),
        "another user's GetFolder took {worst_small:?}"
    );
    let grew = peak_rss().saturating_sub(rss_before);
    assert!(grew < 256 << 20, "peak RSS grew by {grew} bytes");
}
