//! DavMail 6.0.1 (Debian package, headless, EWS mode) in front of crmgate, driven over
//! CardDAV on 127.0.0.1: PROPFIND Depth 1 lists every contact of both virtual folders with
//! etags and a getctag; GET and addressbook-multiget return vCards whose FN/N/EMAIL/TEL match
//! the CRM; after a CRM change the getctag and that contact's etag change, and only that one.
//! DavMail is installed by `scripts/test.sh` (apt-get).

mod support;

use crmgate::domain::dataset::Dataset;
use crmgate::domain::mapping::{card, MappingRules};
use crmgate::domain::rules::{compute_folders, FolderRules};
use crmgate::domain::*;
use crmgate::ews::xml;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use support::{fixture, TestServer};

const JAR: &str = "/usr/share/davmail/davmail.jar";

struct DavMail(Child);

impl Drop for DavMail {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

fn start_davmail(dir: &Path, ews_url: &str, port: u16) -> DavMail {
    let props = dir.join("davmail.properties");
    std::fs::write(
        &props,
        format!(
            "davmail.server=true\ndavmail.mode=EWS\ndavmail.url={ews_url}\ndavmail.caldavPort={port}\n\
             davmail.imapPort=\ndavmail.smtpPort=\ndavmail.popPort=\ndavmail.ldapPort=\n\
             davmail.allowRemote=false\ndavmail.bindAddress=127.0.0.1\ndavmail.ssl.nosecurecaldav=true\n\
             davmail.disableUpdateCheck=true\ndavmail.folderFetchPageSize=500\n\
             davmail.logFilePath={}\nlog4j.rootLogger=WARN\nlog4j.logger.davmail=INFO\n",
            dir.join("davmail.log").display()
        ),
    )
    .expect("props");
    let child = Command::new("java")
        .args(["-jar", JAR, "-notray"])
        .arg(&props)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start davmail (java)");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "DavMail did not open its CardDAV port"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    DavMail(child)
}

struct Listing {
    ctag: String,
    etags: BTreeMap<String, String>,
}

async fn propfind(c: &reqwest::Client, url: &str) -> Listing {
    let body = r#"<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:cs="http://calendarserver.org/ns/"><d:prop><d:getetag/><cs:getctag/><d:resourcetype/></d:prop></d:propfind>"#;
    let r = c
        .request(reqwest::Method::from_bytes(b"PROPFIND").expect("m"), url)
        .basic_auth("anna@example.test", Some("demo"))
        .header("Depth", "1")
        .header("Content-Type", "text/xml")
        .body(body)
        .send()
        .await
        .expect("propfind");
    assert_eq!(r.status(), 207);
    let text = r.text().await.expect("text");
    let root = xml::parse(text.as_bytes()).expect("multistatus");
    let mut etags = BTreeMap::new();
    let mut ctag = String::new();
    for resp in root.children_named("response") {
        let href = resp.child_text("href").unwrap_or("").to_owned();
        let prop = resp.path(&["propstat", "prop"]).expect("prop");
        if let Some(name) = href.rsplit('/').next().filter(|n| n.ends_with(".vcf")) {
            let etag = prop
                .child_text("getetag")
                .expect("every contact has an etag");
            etags.insert(name.trim_end_matches(".vcf").to_owned(), etag.to_owned());
        } else if let Some(t) = prop.child_text("getctag") {
            ctag = t.to_owned();
        }
    }
    assert!(!ctag.is_empty(), "the collection has a getctag:\n{text}");
    Listing { ctag, etags }
}

fn vcard_field<'a>(card: &'a str, name: &str) -> Vec<&'a str> {
    card.lines()
        .filter(|l| l.split([':', ';']).next() == Some(name))
        .filter_map(|l| l.split_once(':').map(|(_, v)| v))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn davmail_lists_reads_and_sees_changes() {
    assert!(
        Path::new(JAR).exists(),
        "DavMail is not installed: run scripts/test.sh (apt-get install davmail)"
    );
    let s = TestServer::start(&fixture("demo.json"), "[server]\ntls = \"off\"\n").await;
    let port = free_port();
    let _dav = start_davmail(s.dir.path(), &s.url("/EWS/Exchange.asmx"), port);
    let dav = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}/users/anna@example.test/contacts");
    let ds =
        Dataset::parse(&std::fs::read_to_string(fixture("demo.json")).expect("r")).expect("ds");
    let folders = compute_folders(&ds, &FolderRules::default());
    let anna = &folders[&UserId::from("u1")];

    let my_url = format!("{base}/HQ%20My%20Contacts/");
    let my = propfind(&dav, &my_url).await;
    let ids = |set: &BTreeSet<ContactId>| set.iter().map(|c| c.0.clone()).collect::<BTreeSet<_>>();
    assert_eq!(
        my.etags.keys().cloned().collect::<BTreeSet<_>>(),
        ids(&anna.my)
    );
    let global = propfind(&dav, &format!("{base}/HQ%20Global%20Contacts/")).await;
    assert_eq!(
        global.etags.keys().cloned().collect::<BTreeSet<_>>(),
        ids(&anna.global)
    );

    // GET: FN, N, EMAIL and TEL as the CRM has them (through the mapping).
    let target = ds
        .contacts
        .iter()
        .find(|c| anna.my.contains(&c.id) && !c.phones.is_empty() && !c.emails.is_empty())
        .expect("contact");
    let ks: Vec<&Company> = target
        .companies
        .iter()
        .filter_map(|k| ds.companies.iter().find(|x| &x.id == k))
        .collect();
    let want = card(target, &ks, &MappingRules::default());
    let r = dav
        .get(format!("{my_url}{}.vcf", target.id))
        .basic_auth("anna@example.test", Some("demo"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    let vcard = r.text().await.expect("vcard");
    assert_eq!(
        vcard_field(&vcard, "FN"),
        vec![want.display_name.as_str()],
        "{vcard}"
    );
    let n = vcard_field(&vcard, "N");
    assert!(
        n[0].starts_with(&format!(
            "{};{}",
            target.last_name.as_deref().unwrap_or(""),
            target.first_name.as_deref().unwrap_or("")
        )),
        "{vcard}"
    );
    let emails: BTreeSet<&str> = vcard_field(&vcard, "EMAIL").into_iter().collect();
    assert_eq!(
        emails,
        want.emails.iter().map(|e| e.address.as_str()).collect()
    );
    let tels: BTreeSet<&str> = vcard_field(&vcard, "TEL").into_iter().collect();
    assert_eq!(tels, want.phones.iter().map(|(_, n)| n.as_str()).collect());

    // addressbook-multiget.
    let hrefs: Vec<String> = my
        .etags
        .keys()
        .take(3)
        .map(|id| {
            format!(
                "<d:href>/users/anna@example.test/contacts/HQ%20My%20Contacts/{id}.vcf</d:href>"
            )
        })
        .collect();
    let body = format!(
        r#"<?xml version="1.0"?><E:addressbook-multiget xmlns:d="DAV:" xmlns:E="urn:ietf:params:xml:ns:carddav"><d:prop><d:getetag/><E:address-data/></d:prop>{}</E:addressbook-multiget>"#,
        hrefs.join("")
    );
    let r = dav
        .request(reqwest::Method::from_bytes(b"REPORT").expect("m"), &my_url)
        .basic_auth("anna@example.test", Some("demo"))
        .header("Depth", "1")
        .header("Content-Type", "text/xml")
        .body(body)
        .send()
        .await
        .expect("report");
    assert_eq!(r.status(), 207);
    let text = r.text().await.expect("t");
    assert_eq!(text.matches("BEGIN:VCARD").count(), 3, "{text}");

    // A CRM change: the getctag and that contact's etag change, no other etag does.
    let mut changed = serde_json::to_value(target).expect("json");
    changed["job_title"] = json!("Chief Everything Officer");
    let r = s
        .client
        .put(s.url(&format!("/admin/v1/contacts/{}", target.id)))
        .basic_auth("ben@example.test", Some("demo2"))
        .json(&changed)
        .send()
        .await
        .expect("put");
    assert!(r.status().is_success());
    let after = propfind(&dav, &my_url).await;
    assert_ne!(after.ctag, my.ctag, "getctag moves");
    for (id, etag) in &after.etags {
        if id == target.id.as_str() {
            assert_ne!(etag, &my.etags[id], "the changed contact's etag moves");
        } else {
            assert_eq!(etag, &my.etags[id], "{id}'s etag must not move");
        }
    }
    let vcard = dav
        .get(format!("{my_url}{}.vcf", target.id))
        .basic_auth("anna@example.test", Some("demo"))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("t");
    assert_eq!(
        vcard_field(&vcard, "TITLE"),
        vec!["Chief Everything Officer"],
        "{vcard}"
    );
    s.stop().await;
}

/// DavMail's writes: PUT of a new vCard (If-None-Match: *) creates the contact in the CRM
/// under DavMail's name; a changed PUT moves the etag and getctag and updates the CRM while a
/// CRM value without a slot survives; PUT into the read-only Global folder is 403; DELETE
/// follows the default policy (gone for the user, kept in the CRM).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn davmail_writes_through_to_the_crm() {
    assert!(
        Path::new(JAR).exists(),
        "DavMail is not installed: run scripts/test.sh (apt-get install davmail)"
    );
    let s = TestServer::start(&fixture("demo.json"), "[server]\ntls = \"off\"\n").await;
    let port = free_port();
    let _dav = start_davmail(s.dir.path(), &s.url("/EWS/Exchange.asmx"), port);
    let dav = reqwest::Client::new();
    let my_url =
        format!("http://127.0.0.1:{port}/users/anna@example.test/contacts/HQ%20My%20Contacts/");
    let admin_get = |id: &str| {
        let req = s
            .client
            .get(s.url(&format!("/admin/v1/contacts/{id}")))
            .basic_auth("ben@example.test", Some("demo2"));
        async move {
            let r = req.send().await.expect("get");
            let status = r.status().as_u16();
            (
                status,
                r.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    let put = |url: String, body: String, create: bool| {
        let mut req = dav
            .put(url)
            .basic_auth("anna@example.test", Some("demo"))
            .header("Content-Type", "text/vcard")
            .body(body);
        if create {
            req = req.header("If-None-Match", "*");
        }
        async move { req.send().await.expect("put").status().as_u16() }
    };
    let vcard = |fn_: &str, n: &str, extra: &str| {
        format!("BEGIN:VCARD\r\nVERSION:3.0\r\nUID:dav-new-1\r\nFN:{fn_}\r\nN:{n};;;\r\nEMAIL;TYPE=work:carla@dav.example\r\nTEL;TYPE=work:030 4441234\r\n{extra}END:VCARD\r\n")
    };
    let before = propfind(&dav, &my_url).await;
    assert_eq!(
        put(
            format!("{my_url}dav-new-1.vcf"),
            vcard("Carla Dav", "Dav;Carla", ""),
            true
        )
        .await,
        201
    );
    let (status, rec) = admin_get("dav-new-1").await;
    assert_eq!(
        status, 200,
        "the contact is in the CRM under DavMail's name"
    );
    assert_eq!(rec["last_name"], "Dav");
    assert_eq!(rec["owner"], "u1");
    assert_eq!(rec["emails"][0]["address"], "carla@dav.example");
    let created = propfind(&dav, &my_url).await;
    assert!(created.etags.contains_key("dav-new-1"));
    assert_ne!(created.ctag, before.ctag);
    // A value without a slot, added in the CRM, must survive the client's next PUT.
    let mut rich = rec.clone();
    rich["emails"] = serde_json::json!([{"address":"carla@dav.example"},{"address":"2@dav.example"},{"address":"3@dav.example"},{"address":"fourth@dav.example"}]);
    let r = s
        .client
        .put(s.url("/admin/v1/contacts/dav-new-1"))
        .basic_auth("ben@example.test", Some("demo2"))
        .json(&rich)
        .send()
        .await
        .expect("put");
    assert!(r.status().is_success());
    let mid = propfind(&dav, &my_url).await;
    let changed = vcard(
        "Carla Davidson",
        "Davidson;Carla",
        "TITLE:Boss\r\nEMAIL;TYPE=home:2@dav.example\r\nEMAIL;TYPE=other:3@dav.example\r\n",
    );
    let status = put(format!("{my_url}dav-new-1.vcf"), changed, false).await;
    assert!(
        status == 200 || status == 201 || status == 204,
        "changed PUT: {status}"
    );
    let after = propfind(&dav, &my_url).await;
    assert_ne!(after.ctag, mid.ctag, "getctag moves");
    assert_ne!(
        after.etags["dav-new-1"], mid.etags["dav-new-1"],
        "etag moves"
    );
    let (_, rec) = admin_get("dav-new-1").await;
    assert_eq!(rec["last_name"], "Davidson");
    assert_eq!(rec["job_title"], "Boss");
    let emails: Vec<&str> = rec["emails"]
        .as_array()
        .expect("e")
        .iter()
        .filter_map(|e| e["address"].as_str())
        .collect();
    assert!(
        emails.contains(&"fourth@dav.example"),
        "the 4th e-mail survives: {emails:?}"
    );
    assert_eq!(rec["phones"][0]["number"], "+49 30 4441234");
    // Global is read-only.
    let global = format!(
        "http://127.0.0.1:{port}/users/anna@example.test/contacts/HQ%20Global%20Contacts/dav-x.vcf"
    );
    assert_eq!(put(global, vcard("X Y", "Y;X", ""), true).await, 403);
    // DELETE: hidden for Anna, kept in the CRM.
    let r = dav
        .delete(format!("{my_url}dav-new-1.vcf"))
        .basic_auth("anna@example.test", Some("demo"))
        .send()
        .await
        .expect("delete");
    assert!(r.status().is_success(), "{}", r.status());
    let gone = propfind(&dav, &my_url).await;
    assert!(!gone.etags.contains_key("dav-new-1"));
    assert_eq!(admin_get("dav-new-1").await.0, 200);
    s.stop().await;
}
