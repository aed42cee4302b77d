//! Recorded client sequences (fixtures/carddav/*.json: iOS/macOS Contacts, DAVx⁵,
//! Thunderbird, Outlook CalDav Synchronizer) replayed as raw HTTP against crmgate; every
//! answer is checked the way that client reads it (see fixtures/carddav/README.md).

mod support;

use crmgate::xml::{self, Element};
use serde_json::Value;
use std::collections::HashMap;
use support::{fixture, TestServer};

/// Every element named `name` (any namespace), depth first.
fn find_all<'a>(e: &'a Element, name: &str, out: &mut Vec<&'a Element>) {
    if e.name == name {
        out.push(e);
    }
    for c in &e.children {
        find_all(c, name, out);
    }
}

/// The names of the properties reported with 200 in any response.
fn found_props(doc: &Element) -> Vec<String> {
    let mut stats = Vec::new();
    find_all(doc, "propstat", &mut stats);
    stats
        .into_iter()
        .filter(|p| p.child_text("status").is_some_and(|s| s.contains(" 200 ")))
        .filter_map(|p| p.child("prop"))
        .flat_map(|p| p.children.iter().map(|c| c.name.clone()))
        .collect()
}

fn responses(doc: &Element) -> Vec<&Element> {
    doc.children_named("response").collect()
}

fn substitute(s: &str, vars: &HashMap<String, String>) -> String {
    let mut out = s.to_owned();
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

async fn replay(s: &TestServer, client: &reqwest::Client, file: &str) {
    let text = std::fs::read_to_string(fixture(&format!("carddav/{file}"))).expect("fixture");
    let script: Value = serde_json::from_str(&text).expect("json");
    let name = script["client"].as_str().unwrap_or(file).to_owned();
    let mut vars: HashMap<String, String> = HashMap::new();
    vars.insert("login".into(), "paula@example.test".into());
    for (n, step) in script["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .enumerate()
    {
        let method = step["method"].as_str().expect("method");
        let mut path = substitute(step["path"].as_str().expect("path"), &vars);
        let body = substitute(step["body"].as_str().unwrap_or(""), &vars);
        let what = format!("{name}, step {n} ({method} {path})");
        // Redirects are followed as these clients do: same method, same body.
        let mut hops = 0;
        let (status, headers, answer) = loop {
            let mut req = client
                .request(
                    reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
                    s.url(&path),
                )
                .basic_auth("paula@example.test", Some("pw"))
                .body(body.clone());
            for (k, v) in step["headers"].as_object().into_iter().flatten() {
                req = req.header(k.as_str(), substitute(v.as_str().unwrap_or(""), &vars));
            }
            let r = req.send().await.expect("send");
            let status = r.status().as_u16();
            if (300..400).contains(&status) && hops < 3 {
                hops += 1;
                path = r
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .expect("location")
                    .to_owned();
                continue;
            }
            let headers = r.headers().clone();
            break (status, headers, r.text().await.expect("text"));
        };
        let expect = &step["expect"];
        match expect["status_any"].as_array() {
            Some(any) => assert!(
                any.iter().any(|v| v.as_u64() == Some(u64::from(status))),
                "{what}: status {status}: {answer}"
            ),
            None => assert_eq!(
                Some(u64::from(status)),
                expect["status"].as_u64(),
                "{what}: {answer}"
            ),
        }
        for c in expect["contains"].as_array().into_iter().flatten() {
            let c = c.as_str().unwrap_or("");
            assert!(answer.contains(c), "{what}: no {c:?} in {answer}");
        }
        if let Some(h) = expect["header"].as_str() {
            assert!(headers.get(h).is_some(), "{what}: no {h} header");
        }
        if status != 207 {
            if let Some(h) = headers.get("etag").and_then(|v| v.to_str().ok()) {
                vars.insert("etag".into(), h.to_owned());
            }
            continue;
        }
        let doc = xml::parse(answer.as_bytes()).unwrap_or_else(|e| panic!("{what}: {e}: {answer}"));
        assert!(doc.is("DAV:", "multistatus"), "{what}: {answer}");
        let found = found_props(&doc);
        for p in expect["found"].as_array().into_iter().flatten() {
            let p = p.as_str().unwrap_or("");
            assert!(
                found.iter().any(|f| f == p)
                    || doc.child_text("sync-token").is_some() && p == "sync-token",
                "{what}: {p} not reported: {answer}"
            );
        }
        // Properties the server does not have are reported 404, one by one, never failing
        // the request.
        for p in expect["missing_ok"].as_array().into_iter().flatten() {
            let p = p.as_str().unwrap_or("");
            assert!(
                answer.contains(p),
                "{what}: {p} not answered at all: {answer}"
            );
        }
        let rs = responses(&doc);
        let hrefs: Vec<String> = rs
            .iter()
            .filter_map(|r| r.child_text("href"))
            .map(str::to_owned)
            .collect();
        let vcf: Vec<&String> = hrefs.iter().filter(|h| h.ends_with(".vcf")).collect();
        if let Some(n) = expect["vcards_listed"].as_u64() {
            assert_eq!(vcf.len() as u64, n, "{what}: {answer}");
        }
        if let Some(n) = expect["vcards"].as_u64() {
            assert_eq!(answer.matches("BEGIN:VCARD").count() as u64, n, "{what}");
            assert_eq!(answer.matches("END:VCARD").count() as u64, n, "{what}");
        }
        if let Some(t) = expect["truncated"].as_bool() {
            assert_eq!(answer.contains(" 507 "), t, "{what}: {answer}");
        }
        if let Some(n) = expect["books"].as_u64() {
            let mut books = Vec::new();
            find_all(&doc, "addressbook", &mut books);
            assert_eq!(books.len() as u64, n, "{what}: {answer}");
        }
        for c in step["capture"].as_array().into_iter().flatten() {
            let key = c.as_str().unwrap_or("");
            let first = |el: &str| -> Option<String> {
                let mut v = Vec::new();
                find_all(&doc, el, &mut v);
                v.into_iter()
                    .find_map(|e| e.child_text("href").map(str::to_owned))
            };
            let value = match key {
                "principal" => first("current-user-principal"),
                "home" => first("addressbook-home-set"),
                "book" => rs
                    .iter()
                    .find(|r| {
                        let mut b = Vec::new();
                        find_all(r, "addressbook", &mut b);
                        !b.is_empty() && r.child_text("href").is_some_and(|h| h.ends_with("/my/"))
                    })
                    .and_then(|r| r.child_text("href"))
                    .map(str::to_owned),
                "book_self" => {
                    vars.insert("book".into(), path.clone());
                    Some(path.clone())
                }
                "token" => doc.child_text("sync-token").map(str::to_owned),
                "href" => vcf.first().map(|h| (*h).clone()),
                "href2" => vcf.get(1).map(|h| (*h).clone()),
                "etag" => {
                    let mut e = Vec::new();
                    find_all(&doc, "getetag", &mut e);
                    e.first().map(|e| e.text.clone())
                }
                other => panic!("{what}: unknown capture {other}"),
            };
            let value =
                value.unwrap_or_else(|| panic!("{what}: nothing to capture as {key}: {answer}"));
            vars.insert(key.to_owned(), value);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_client_sequences_get_answers_their_clients_parse() {
    let s = TestServer::start(&fixture("demo.json"), "").await;
    s.add_paula().await;
    let pem = std::fs::read(s.dir.path().join("tls/cert.pem")).expect("cert");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    for file in [
        "ios.json",
        "davx5.json",
        "thunderbird.json",
        "caldavsynchronizer.json",
    ] {
        replay(&s, &client, file).await;
    }
    s.stop().await;
}
