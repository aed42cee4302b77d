//! The CardDAV face on the wire, over HTTPS: discovery from the well-known URL to the address
//! books, sync-collection paging and increments, multiget, GET, writes through the one write
//! path, isolation between users, and the protocol's answers to bad input.

mod support;

use crmgate::xml::{self, Element};
use reqwest::Method;
use serde_json::{json, Value};
use support::{fixture, TestServer};

const PAULA: (&str, &str) = ("paula@example.test", "pw");
const ANNA: (&str, &str) = ("anna@example.test", "demo");

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Reply {
    fn xml(&self) -> Element {
        xml::parse(self.text.as_bytes()).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }

    /// (href, status of the first propstat or of the response) for each `d:response`.
    fn responses(&self) -> Vec<(String, String)> {
        self.xml()
            .children_named("response")
            .map(|r| {
                let href = r.child_text("href").unwrap_or("").to_owned();
                let status = r
                    .child_text("status")
                    .or_else(|| r.child("propstat").and_then(|p| p.child_text("status")))
                    .unwrap_or("")
                    .to_owned();
                (href, status)
            })
            .collect()
    }

    fn sync_token(&self) -> String {
        self.xml().child_text("sync-token").unwrap_or("").to_owned()
    }
}

async fn dav(
    s: &TestServer,
    who: (&str, &str),
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut req = s
        .client
        .request(
            Method::from_bytes(method.as_bytes()).expect("method"),
            s.url(path),
        )
        .basic_auth(who.0, Some(who.1))
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("send");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.expect("text");
    Reply {
        status,
        headers,
        text,
    }
}

fn propfind(props: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:" xmlns:card="urn:ietf:params:xml:ns:carddav" xmlns:cs="http://calendarserver.org/ns/"><d:prop>{props}</d:prop></d:propfind>"#
    )
}

fn sync_body(token: &str, limit: Option<usize>) -> String {
    let limit = limit
        .map(|n| format!("<d:limit><d:nresults>{n}</d:nresults></d:limit>"))
        .unwrap_or_default();
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><d:sync-collection xmlns:d="DAV:" xmlns:card="urn:ietf:params:xml:ns:carddav"><d:sync-token>{token}</d:sync-token><d:sync-level>1</d:sync-level>{limit}<d:prop><d:getetag/><card:address-data/></d:prop></d:sync-collection>"#
    )
}

const MY: &str = "/dav/addressbooks/paula@example.test/my/";

/// Pages through a sync-collection; returns (hrefs with 200, hrefs with 404, token).
async fn sync_all(
    s: &TestServer,
    token: &str,
    limit: Option<usize>,
) -> (Vec<String>, Vec<String>, String) {
    let (mut ok, mut gone) = (Vec::new(), Vec::new());
    let mut token = token.to_owned();
    for _ in 0..100 {
        let r = dav(
            s,
            PAULA,
            "REPORT",
            MY,
            &[("Depth", "1")],
            &sync_body(&token, limit),
        )
        .await;
        assert_eq!(r.status, 207, "{}", r.text);
        let mut truncated = false;
        for (href, status) in r.responses() {
            if status.contains(" 507 ") {
                assert_eq!(href, MY, "the truncation names the collection");
                truncated = true;
            } else if status.contains(" 200 ") {
                ok.push(href);
            } else if status.contains(" 404 ") {
                gone.push(href);
            } else {
                panic!("unexpected status {status} for {href}");
            }
        }
        token = r.sync_token();
        assert!(token.starts_with("urn:crmgate:sync:"), "{}", r.text);
        if !truncated {
            return (ok, gone, token);
        }
    }
    panic!("sync never finished")
}

async fn admin_put(s: &TestServer, path: &str, body: Value) {
    let r = s
        .client
        .put(s.url(path))
        .basic_auth("ben@example.test", Some("demo2"))
        .json(&body)
        .send()
        .await
        .expect("put");
    assert!(
        r.status().is_success(),
        "{}",
        r.text().await.unwrap_or_default()
    );
}

async fn admin_get(s: &TestServer, path: &str) -> Value {
    s.client
        .get(s.url(path))
        .basic_auth("ben@example.test", Some("demo2"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_from_the_well_known_url_to_the_address_books() {
    let s = TestServer::start(&fixture("demo.json"), "").await;
    s.add_paula().await;
    let r = s
        .client
        .get(s.url("/.well-known/carddav"))
        .send()
        .await
        .expect("get");
    // reqwest follows redirects: the well-known URL ends at the DAV root, which asks for
    // credentials.
    assert_eq!(r.url().path(), "/dav/");
    assert_eq!(r.status().as_u16(), 401);

    let o = dav(&s, PAULA, "OPTIONS", "/dav/", &[], "").await;
    assert_eq!(o.status, 200);
    let dav_header = o
        .headers
        .get("dav")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(dav_header.contains("addressbook"), "{dav_header}");

    let root = dav(
        &s,
        PAULA,
        "PROPFIND",
        "/dav/",
        &[("Depth", "0")],
        &propfind("<d:current-user-principal/>"),
    )
    .await;
    assert_eq!(root.status, 207, "{}", root.text);
    let principal = root
        .xml()
        .path(&[
            "response",
            "propstat",
            "prop",
            "current-user-principal",
            "href",
        ])
        .map(|e| e.text.clone())
        .expect("principal");
    assert_eq!(principal, "/dav/principals/paula@example.test/");

    let p = dav(
        &s,
        PAULA,
        "PROPFIND",
        &principal,
        &[("Depth", "0")],
        &propfind("<card:addressbook-home-set/><d:displayname/>"),
    )
    .await;
    let home = p
        .xml()
        .path(&[
            "response",
            "propstat",
            "prop",
            "addressbook-home-set",
            "href",
        ])
        .map(|e| e.text.clone())
        .expect("home");
    assert_eq!(home, "/dav/addressbooks/paula@example.test/");

    let books = dav(
        &s,
        PAULA,
        "PROPFIND",
        &home,
        &[("Depth", "1")],
        &propfind("<d:resourcetype/><d:displayname/><d:current-user-privilege-set/><d:sync-token/><cs:getctag/><card:supported-address-data/><card:max-resource-size/><d:supported-report-set/>"),
    )
    .await;
    assert_eq!(books.status, 207, "{}", books.text);
    let doc = books.xml();
    let mut seen = Vec::new();
    for r in doc.children_named("response") {
        let href = r.child_text("href").unwrap_or("").to_owned();
        let prop = r.path(&["propstat", "prop"]).expect("prop");
        let is_book = prop
            .path(&["resourcetype", "addressbook"])
            .is_some_and(|e| e.is("urn:ietf:params:xml:ns:carddav", "addressbook"));
        let name = prop.child_text("displayname").unwrap_or("").to_owned();
        let privs: Vec<String> = prop
            .child("current-user-privilege-set")
            .map(|s| {
                s.children_named("privilege")
                    .filter_map(|p| p.children.first().map(|c| c.name.clone()))
                    .collect()
            })
            .unwrap_or_default();
        seen.push((href, is_book, name, privs.contains(&"write".to_owned())));
    }
    assert_eq!(
        seen,
        vec![
            (home.clone(), false, "Address books".into(), false),
            (format!("{home}my/"), true, "HQ My Contacts".into(), true),
            (
                format!("{home}global/"),
                true,
                "HQ Global Contacts".into(),
                false
            ),
        ]
    );
    assert!(books.text.contains("version=\"4.0\""), "{}", books.text);
    assert!(books.text.contains("sync-collection"), "{}", books.text);

    // Depth infinity is refused with the precondition; PROPFIND with no body is allprop.
    let inf = dav(&s, PAULA, "PROPFIND", &home, &[("Depth", "infinity")], "").await;
    assert_eq!(inf.status, 403);
    assert!(inf.text.contains("propfind-finite-depth"), "{}", inf.text);
    let all = dav(&s, PAULA, "PROPFIND", MY, &[("Depth", "0")], "").await;
    assert_eq!(all.status, 207);
    assert!(all.text.contains("getctag") && all.text.contains("HQ My Contacts"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_collection_pages_then_delivers_exactly_each_change() {
    let s = TestServer::start(&fixture("demo.json"), "").await;
    s.add_paula().await;
    let (ok, gone, token) = sync_all(&s, "", Some(10)).await;
    assert_eq!(ok.len(), 25, "paged 10/10/5: {ok:?}");
    assert!(gone.is_empty());
    let mut unique = ok.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 25, "no contact twice");
    // The collection's sync-token is the one the finished sync handed over.
    let p = dav(
        &s,
        PAULA,
        "PROPFIND",
        MY,
        &[("Depth", "0")],
        &propfind("<d:sync-token/>"),
    )
    .await;
    assert!(p.text.contains(&token), "{} vs {token}", p.text);

    // Nothing changed: nothing comes.
    let (ok2, gone2, token) = sync_all(&s, &token, None).await;
    assert!(ok2.is_empty() && gone2.is_empty(), "{ok2:?} {gone2:?}");

    // One contact edited in the CRM: exactly it.
    admin_put(
        &s,
        "/admin/v1/contacts/cp03",
        json!({"companies": ["kp"], "first_name": "Renamed", "last_name": "Pager"}),
    )
    .await;
    let (ok3, gone3, token) = sync_all(&s, &token, None).await;
    assert_eq!(ok3, vec![format!("{MY}cp03.vcf")]);
    assert!(gone3.is_empty());
    let r = dav(&s, PAULA, "GET", &ok3[0], &[], "").await;
    assert!(r.text.contains("FN:Renamed Pager"), "{}", r.text);

    // The company changes hands: its contacts leave Paula's My folder, as 404 members.
    admin_put(
        &s,
        "/admin/v1/companies/kp",
        json!({"name": "Paging GmbH", "subsystems": ["s1"], "responsible": ["u1"]}),
    )
    .await;
    let (ok4, gone4, token) = sync_all(&s, &token, None).await;
    assert!(ok4.is_empty(), "{ok4:?}");
    assert_eq!(gone4.len(), 25, "{gone4:?}");
    // And back.
    admin_put(
        &s,
        "/admin/v1/companies/kp",
        json!({"name": "Paging GmbH", "subsystems": ["s1"], "responsible": ["up"]}),
    )
    .await;
    let (ok5, _, _) = sync_all(&s, &token, None).await;
    assert_eq!(ok5.len(), 25);

    // Another user's token, a made-up token: the precondition, nothing else.
    let bad = dav(
        &s,
        PAULA,
        "REPORT",
        MY,
        &[],
        &sync_body("urn:crmgate:sync:AAAA", None),
    )
    .await;
    assert_eq!(bad.status, 403);
    assert!(bad.text.contains("valid-sync-token"), "{}", bad.text);
    let foreign = dav(
        &s,
        PAULA,
        "REPORT",
        MY,
        &[],
        &sync_body("http://example.com/1", None),
    )
    .await;
    assert_eq!(foreign.status, 403);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiget_get_and_the_other_users_404() {
    let s = TestServer::start(&fixture("demo.json"), "").await;
    s.add_paula().await;
    let hrefs = [
        format!("{MY}cp01.vcf"),
        format!("{MY}cp02.vcf"),
        format!("{MY}nope.vcf"),
    ];
    let body = format!(
        r#"<card:addressbook-multiget xmlns:d="DAV:" xmlns:card="urn:ietf:params:xml:ns:carddav"><d:prop><d:getetag/><card:address-data/></d:prop>{}</card:addressbook-multiget>"#,
        hrefs
            .iter()
            .map(|h| format!("<d:href>{h}</d:href>"))
            .collect::<String>()
    );
    let r = dav(&s, PAULA, "REPORT", MY, &[("Depth", "1")], &body).await;
    assert_eq!(r.status, 207, "{}", r.text);
    let statuses: Vec<String> = r.responses().into_iter().map(|(_, st)| st).collect();
    assert_eq!(
        statuses,
        vec![
            "HTTP/1.1 200 OK",
            "HTTP/1.1 200 OK",
            "HTTP/1.1 404 Not Found"
        ]
    );
    assert!(
        r.text.contains("FN:P01 Pager") && r.text.contains("UID:cp02"),
        "{}",
        r.text
    );

    let g = dav(&s, PAULA, "GET", &hrefs[0], &[], "").await;
    assert_eq!(g.status, 200);
    let etag = g
        .headers
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(etag.starts_with('"'), "{etag}");
    assert!(g.text.contains("VERSION:3.0"));
    let g4 = dav(
        &s,
        PAULA,
        "GET",
        &hrefs[0],
        &[("Accept", "text/vcard; version=4.0")],
        "",
    )
    .await;
    assert!(g4.text.contains("VERSION:4.0"), "{}", g4.text);

    // Anna: Paula's principal, home, book and card are not found, nor is Paula's card under
    // Anna's own book; Paula's token is no token for Anna.
    for path in [
        "/dav/principals/paula@example.test/",
        "/dav/addressbooks/paula@example.test/",
        MY,
        hrefs[0].as_str(),
        "/dav/addressbooks/anna@example.test/my/cp01.vcf",
    ] {
        let r = dav(&s, ANNA, "PROPFIND", path, &[("Depth", "0")], "").await;
        assert_eq!(r.status, 404, "{path}: {}", r.text);
        let r = dav(&s, ANNA, "GET", path, &[], "").await;
        assert_eq!(r.status, 404, "{path}");
    }
    let (_, _, paula_token) = sync_all(&s, "", None).await;
    let r = dav(
        &s,
        ANNA,
        "REPORT",
        "/dav/addressbooks/anna@example.test/my/",
        &[],
        &sync_body(&paula_token, None),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_land_in_the_crm_and_bad_input_gets_the_protocols_answer() {
    let s = TestServer::start(&fixture("demo.json"), "").await;
    s.add_paula().await;
    let href = format!("{MY}cp05.vcf");
    let g = dav(&s, PAULA, "GET", &href, &[], "").await;
    let etag = g
        .headers
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let edited = g.text.replace(
        "END:VCARD",
        "TITLE:Head of Paging\r\nX-CUSTOM:kept nowhere\r\nEND:VCARD",
    );
    let put = |body: String, headers: Vec<(&'static str, String)>| {
        let s = &s;
        let href = href.clone();
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            dav(s, PAULA, "PUT", &href, &h, &body).await
        }
    };
    let vcard = ("Content-Type", "text/vcard; charset=utf-8".to_owned());
    let r = put(
        edited.clone(),
        vec![vcard.clone(), ("If-Match", etag.clone())],
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let stored = admin_get(&s, "/admin/v1/contacts/cp05").await;
    assert_eq!(stored["job_title"], "Head of Paging", "{stored}");
    assert_eq!(stored["first_name"], "P05", "untouched fields kept");
    // The same PUT again with the old ETag: 412, nothing written.
    let r = put(
        edited.clone(),
        vec![vcard.clone(), ("If-Match", etag.clone())],
    )
    .await;
    assert_eq!(r.status, 412, "{}", r.text);

    // Bad input: wrong type, no vCard, too many e-mails; nothing written.
    let before = admin_get(&s, "/admin/v1/contacts/cp05").await;
    let r = put(
        edited.clone(),
        vec![("Content-Type", "application/json".into())],
    )
    .await;
    assert_eq!(r.status, 415);
    let r = put("BEGIN:VCARD\r\nFN x\r\n".into(), vec![vcard.clone()]).await;
    assert_eq!(r.status, 400);
    assert!(r.text.contains("valid-address-data"), "{}", r.text);
    let mut many = String::from("BEGIN:VCARD\r\nVERSION:3.0\r\nFN:x\r\n");
    for i in 0..10_000 {
        many.push_str(&format!("EMAIL:a{i}@x.test\r\n"));
    }
    many.push_str("END:VCARD\r\n");
    let r = put(many, vec![vcard.clone()]).await;
    assert!(
        r.status == 400 || r.status == 413,
        "{} {}",
        r.status,
        r.text
    );
    assert_eq!(admin_get(&s, "/admin/v1/contacts/cp05").await, before);

    // A new card in My: created in the CRM, owned by Paula, found at its URL.
    let new_href = format!("{MY}new-card-1.vcf");
    let card = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:new-card-1\r\nFN:Neu Kontakt\r\nN:Kontakt;Neu;;;\r\nEMAIL;TYPE=INTERNET:neu@example.test\r\nEND:VCARD\r\n";
    let r = dav(
        &s,
        PAULA,
        "PUT",
        &new_href,
        &[("Content-Type", "text/vcard"), ("If-None-Match", "*")],
        card,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let created = admin_get(&s, "/admin/v1/contacts/new-card-1").await;
    assert_eq!(created["last_name"], "Kontakt", "{created}");
    assert_eq!(created["owner"], "up");
    let r = dav(&s, PAULA, "GET", &new_href, &[], "").await;
    assert_eq!(r.status, 200);
    // If-None-Match: * on an existing card.
    let r = dav(
        &s,
        PAULA,
        "PUT",
        &new_href,
        &[("Content-Type", "text/vcard"), ("If-None-Match", "*")],
        card,
    )
    .await;
    assert_eq!(r.status, 412);

    // A name crmgate cannot use as an id: created under a clean one, which Location names.
    let r = dav(
        &s,
        PAULA,
        "PUT",
        &format!("{MY}odd%20name%21.vcf"),
        &[("Content-Type", "text/vcard"), ("If-None-Match", "*")],
        &card.replace("new-card-1", "odd"),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let location = r
        .headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert_eq!(location, format!("{MY}oddname.vcf"));
    assert_eq!(dav(&s, PAULA, "GET", &location, &[], "").await.status, 200);

    // Global is read-only: a PUT there is refused with the privilege precondition.
    let r = dav(
        &s,
        PAULA,
        "PUT",
        "/dav/addressbooks/paula@example.test/global/x.vcf",
        &[("Content-Type", "text/vcard")],
        card,
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text);

    // Delete follows the folder's policy (My: hide by default): gone for Paula, kept in the CRM.
    let r = dav(&s, PAULA, "DELETE", &new_href, &[], "").await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(dav(&s, PAULA, "GET", &new_href, &[], "").await.status, 404);
    assert_eq!(
        admin_get(&s, "/admin/v1/contacts/new-card-1").await["last_name"],
        "Kontakt"
    );

    // Methods crmgate does not offer get the protocol's refusal.
    let r = dav(
        &s,
        PAULA,
        "MKCOL",
        "/dav/addressbooks/paula@example.test/new/",
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 403);
    let r = dav(
        &s,
        PAULA,
        "PROPPATCH",
        MY,
        &[],
        r#"<d:propertyupdate xmlns:d="DAV:"><d:set><d:prop><d:displayname>x</d:displayname></d:prop></d:set></d:propertyupdate>"#,
    )
    .await;
    assert_eq!(r.status, 207);
    assert!(
        r.text.contains("cannot-modify-protected-property"),
        "{}",
        r.text
    );
    let r = dav(&s, PAULA, "LOCK", MY, &[], "").await;
    assert_eq!(r.status, 405);
    let r = dav(&s, PAULA, "PROPFIND", MY, &[("Depth", "0")], "<d:propfind").await;
    assert_eq!(r.status, 400);
    let audit = s.app.audit_tail(20).expect("audit");
    assert!(
        audit.iter().any(|a| a["action"] == "dropped"
            && a["fields"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == "X-CUSTOM"))),
        "{audit:?}"
    );
    s.stop().await;
}

/// The contact ids of a book, from PROPFIND Depth 1.
async fn book_ids(s: &TestServer, who: (&str, &str), book: &str) -> Vec<String> {
    let path = format!("/dav/addressbooks/{}/{book}/", who.0);
    let r = dav(
        s,
        who,
        "PROPFIND",
        &path,
        &[("Depth", "1")],
        &propfind("<d:getetag/>"),
    )
    .await;
    assert_eq!(r.status, 207, "{}", r.text);
    r.responses()
        .into_iter()
        .filter_map(|(h, _)| {
            h.strip_prefix(&path)
                .and_then(|n| n.strip_suffix(".vcf"))
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_stay_apart_and_a_change_reaches_the_affected_users_only() {
    let s = TestServer::start(
        &fixture("demo.json"),
        "[folders]\nglobal_scope = \"subsystem\"\n",
    )
    .await;
    const CLARA: (&str, &str) = ("clara@example.test", "demo3");
    const OLIVER: (&str, &str) = ("oliver@example.test", "demo4");
    let anna: Vec<String> = [
        book_ids(&s, ANNA, "my").await,
        book_ids(&s, ANNA, "global").await,
    ]
    .concat();
    let clara_my = book_ids(&s, CLARA, "my").await;
    let clara: Vec<String> = [clara_my.clone(), book_ids(&s, CLARA, "global").await].concat();
    assert!(!anna.is_empty() && !clara.is_empty());
    // A contact Clara (München) sees and Anna (Berlin) does not: not found for Anna, by GET,
    // by multiget, in either of her books.
    let other = clara
        .iter()
        .find(|id| !anna.contains(id))
        .expect("a München-only contact")
        .clone();
    for book in ["my", "global"] {
        let path = format!("/dav/addressbooks/anna@example.test/{book}/{other}.vcf");
        assert_eq!(dav(&s, ANNA, "GET", &path, &[], "").await.status, 404);
        let body = format!(
            r#"<card:addressbook-multiget xmlns:d="DAV:" xmlns:card="urn:ietf:params:xml:ns:carddav"><d:prop><d:getetag/></d:prop><d:href>{path}</d:href></card:addressbook-multiget>"#
        );
        let r = dav(
            &s,
            ANNA,
            "REPORT",
            &format!("/dav/addressbooks/anna@example.test/{book}/"),
            &[],
            &body,
        )
        .await;
        assert_eq!(
            r.responses(),
            vec![(path, "HTTP/1.1 404 Not Found".to_owned())]
        );
    }

    // Every user's token; then one change to a München contact: Clara's sync brings exactly
    // it, Anna's and Oliver's bring nothing.
    let token = |who: (&'static str, &'static str), book: &'static str| {
        let s = &s;
        async move {
            let path = format!("/dav/addressbooks/{}/{book}/", who.0);
            let mut token = String::new();
            let mut hrefs = Vec::new();
            loop {
                let r = dav(s, who, "REPORT", &path, &[], &sync_body(&token, None)).await;
                assert_eq!(r.status, 207, "{}", r.text);
                hrefs.extend(
                    r.responses()
                        .into_iter()
                        .filter(|(h, _)| h.ends_with(".vcf"))
                        .map(|(h, _)| h),
                );
                token = r.sync_token();
                if !r.text.contains(" 507 ") {
                    return (token, hrefs);
                }
            }
        }
    };
    let mut tokens = Vec::new();
    for who in [ANNA, CLARA, OLIVER] {
        for book in ["my", "global"] {
            tokens.push((who, book, token(who, book).await.0));
        }
    }
    let rec = admin_get(&s, &format!("/admin/v1/contacts/{other}")).await;
    let mut changed = rec.clone();
    changed["job_title"] = json!("Changed for München");
    admin_put(&s, &format!("/admin/v1/contacts/{other}"), changed).await;
    for (who, book, tok) in tokens {
        let path = format!("/dav/addressbooks/{}/{book}/", who.0);
        let r = dav(&s, who, "REPORT", &path, &[], &sync_body(&tok, None)).await;
        let hrefs: Vec<String> = r
            .responses()
            .into_iter()
            .filter(|(h, _)| h.ends_with(".vcf"))
            .map(|(h, _)| h)
            .collect();
        let holds = if book == "my" {
            clara_my.contains(&other)
        } else {
            !clara_my.contains(&other)
        };
        let expected = if who == CLARA && holds {
            vec![format!("{path}{other}.vcf")]
        } else {
            Vec::new()
        };
        assert_eq!(hrefs, expected, "{} {book}", who.0);
    }
    let in_clara = [
        book_ids(&s, CLARA, "my").await,
        book_ids(&s, CLARA, "global").await,
    ]
    .concat();
    assert!(in_clara.contains(&other));

    // A vCard over the size limit: 413 with the precondition, nothing written.
    let big = format!(
        "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:x\r\nNOTE:{}\r\nEND:VCARD\r\n",
        "x".repeat(5 << 20)
    );
    let r = dav(
        &s,
        ANNA,
        "PUT",
        "/dav/addressbooks/anna@example.test/my/big.vcf",
        &[("Content-Type", "text/vcard")],
        &big,
    )
    .await;
    assert_eq!(r.status, 413, "{}", &r.text[..r.text.len().min(200)]);
    s.stop().await;
}

fn query(filter: &str, limit: Option<usize>) -> String {
    let limit = limit
        .map(|n| format!("<card:limit><card:nresults>{n}</card:nresults></card:limit>"))
        .unwrap_or_default();
    format!(
        r#"<card:addressbook-query xmlns:d="DAV:" xmlns:card="urn:ietf:params:xml:ns:carddav"><d:prop><d:getetag/><card:address-data/></d:prop><card:filter{filter}</card:filter>{limit}</card:addressbook-query>"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_heads_stale_deletes_and_delete_policies() {
    for policy in ["crm", "deny"] {
        let s = TestServer::start(
            &fixture("demo.json"),
            &format!("[folders]\nmy_delete = \"{policy}\"\n"),
        )
        .await;
        s.add_paula().await;
        admin_put(
            &s,
            "/admin/v1/contacts/cp09",
            json!({"companies": ["kp"], "first_name": "Quinn", "last_name": "Pager",
                "emails": [{"address": "quinn@paging.test", "kind": "work"}]}),
        )
        .await;
        if policy == "crm" {
            // addressbook-query: text-match on FN, EMAIL (an indexed equality), UID;
            // anyof/allof, negate-condition, limit.
            let names = |r: &Reply| -> Vec<String> {
                let mut v: Vec<String> = r
                    .responses()
                    .into_iter()
                    .filter(|(h, _)| h.ends_with(".vcf"))
                    .map(|(h, _)| h.trim_start_matches(MY).trim_end_matches(".vcf").to_owned())
                    .collect();
                v.sort();
                v
            };
            let q = |filter: String, limit| {
                let s = &s;
                async move {
                    dav(
                        s,
                        PAULA,
                        "REPORT",
                        MY,
                        &[("Depth", "1")],
                        &query(&filter, limit),
                    )
                    .await
                }
            };
            let r = q(r#"><card:prop-filter name="FN"><card:text-match match-type="starts-with">quinn</card:text-match></card:prop-filter>"#.into(), None).await;
            assert_eq!(r.status, 207, "{}", r.text);
            assert_eq!(names(&r), vec!["cp09"], "{}", r.text);
            assert!(r.text.contains("BEGIN:VCARD"));
            let r = q(r#"><card:prop-filter name="EMAIL"><card:text-match match-type="equals">QUINN@paging.test</card:text-match></card:prop-filter>"#.into(), None).await;
            assert_eq!(names(&r), vec!["cp09"]);
            let r = q(r#" test="anyof"><card:prop-filter name="UID"><card:text-match match-type="equals" collation="i;octet">cp01</card:text-match></card:prop-filter><card:prop-filter name="UID"><card:text-match match-type="equals" collation="i;octet">cp02</card:text-match></card:prop-filter>"#.into(), None).await;
            assert_eq!(names(&r), vec!["cp01", "cp02"]);
            let r = q(r#" test="allof"><card:prop-filter name="N"><card:text-match>Pager</card:text-match></card:prop-filter><card:prop-filter name="FN"><card:text-match negate-condition="yes">P0</card:text-match></card:prop-filter>"#.into(), None).await;
            let expected: Vec<String> = (9..25).map(|i| format!("cp{i:02}")).collect();
            assert_eq!(
                names(&r),
                expected,
                "Pager, and FN without \"P0\" (Quinn, P10…P24)"
            );
            let r = q(r#"><card:prop-filter name="N"><card:text-match>pager</card:text-match></card:prop-filter>"#.into(), Some(5)).await;
            assert_eq!(names(&r).len(), 5);
            assert!(
                r.text.contains(" 507 ") && r.text.contains("number-of-matches-within-limits"),
                "{}",
                r.text
            );
            let r = q(r#"><card:prop-filter name="FN"><card:param-filter name="TYPE"/></card:prop-filter>"#.into(), None).await;
            assert_eq!(r.status, 403);
            assert!(r.text.contains("supported-filter"));
            let r = q(r#"><card:prop-filter name="FN"><card:text-match collation="i;klingon">x</card:text-match></card:prop-filter>"#.into(), None).await;
            assert_eq!(r.status, 403);
            assert!(r.text.contains("supported-collation"));

            // HEAD: the ETag, no body. MOVE and COPY: refused.
            let h = dav(&s, PAULA, "HEAD", &format!("{MY}cp09.vcf"), &[], "").await;
            assert_eq!(h.status, 200);
            assert!(h.headers.get("etag").is_some() && h.text.is_empty());
            for m in ["MOVE", "COPY"] {
                let r = dav(
                    &s,
                    PAULA,
                    m,
                    &format!("{MY}cp09.vcf"),
                    &[("Destination", "/dav/x")],
                    "",
                )
                .await;
                assert_eq!(r.status, 403, "{m}");
                assert!(r.text.contains("need-privileges"), "{m}: {}", r.text);
            }
        }
        // DELETE with a stale If-Match: 412, nothing deleted.
        let r = dav(
            &s,
            PAULA,
            "DELETE",
            &format!("{MY}cp09.vcf"),
            &[("If-Match", "\"stale\"")],
            "",
        )
        .await;
        assert_eq!(r.status, 412, "{policy}");
        assert_eq!(
            admin_get(&s, "/admin/v1/contacts/cp09").await["first_name"],
            "Quinn"
        );
        let g = dav(&s, PAULA, "GET", &format!("{MY}cp09.vcf"), &[], "").await;
        let etag = g
            .headers
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let r = dav(
            &s,
            PAULA,
            "DELETE",
            &format!("{MY}cp09.vcf"),
            &[("If-Match", &etag)],
            "",
        )
        .await;
        let gone = s
            .client
            .get(s.url("/admin/v1/contacts/cp09"))
            .basic_auth("ben@example.test", Some("demo2"))
            .send()
            .await
            .expect("get")
            .status()
            .as_u16();
        match policy {
            // `crm`: deleted in the CRM.
            "crm" => {
                assert_eq!(r.status, 204, "{}", r.text);
                assert_eq!(gone, 404);
            }
            // `deny`: refused with the privilege precondition, the CRM keeps it.
            _ => {
                assert_eq!(r.status, 403, "{}", r.text);
                assert!(r.text.contains("need-privileges"));
                assert_eq!(gone, 200);
            }
        }
        s.stop().await;
    }
}
