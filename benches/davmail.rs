//! DavMail → crmgate: a full CardDAV sync of one folder as a CardDAV client does it (PROPFIND
//! Depth 1 for the hrefs and etags, then addressbook-multiget in batches of 100), through an
//! unmodified DavMail 6 in EWS mode in front of crmgate. DavMail answers a multiget by looking
//! each contact up with a FindItem restricted to its resource name (`0x10f3`): the lookup the
//! replica's indexes serve.
//!
//! Run: `cargo bench --bench davmail` (needs `/usr/share/davmail/davmail.jar`: `apt-get install
//! davmail`). `BENCH_DAVMAIL_SIZES=2000,10000` (the default) sets the folder sizes.

use crmgate::app::App;
use crmgate::config::{Config, Overrides};
use crmgate::gen::{generate, GenParams};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
             davmail.logFilePath={}\nlog4j.rootLogger=WARN\nlog4j.logger.davmail=WARN\n",
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
    let deadline = Instant::now() + Duration::from_secs(90);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "DavMail did not open its port");
        std::thread::sleep(Duration::from_millis(100));
    }
    DavMail(child)
}

async fn propfind(c: &reqwest::Client, url: &str, login: &str) -> Vec<String> {
    let body = r#"<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:prop><d:getetag/></d:prop></d:propfind>"#;
    let r = c
        .request(reqwest::Method::from_bytes(b"PROPFIND").expect("m"), url)
        .basic_auth(login, Some("demo"))
        .header("Depth", "1")
        .header("Content-Type", "text/xml")
        .body(body)
        .send()
        .await
        .expect("propfind");
    assert_eq!(r.status(), 207);
    let text = r.text().await.expect("text");
    text.split("<D:href>")
        .chain(text.split("<d:href>"))
        .skip(1)
        .filter_map(|h| h.split('<').next())
        .filter(|h| h.ends_with(".vcf"))
        .map(str::to_owned)
        .collect()
}

async fn multiget(c: &reqwest::Client, url: &str, login: &str, hrefs: &[String]) -> usize {
    let body = format!(
        r#"<?xml version="1.0"?><E:addressbook-multiget xmlns:d="DAV:" xmlns:E="urn:ietf:params:xml:ns:carddav"><d:prop><d:getetag/><E:address-data/></d:prop>{}</E:addressbook-multiget>"#,
        hrefs
            .iter()
            .map(|h| format!("<d:href>{h}</d:href>"))
            .collect::<String>()
    );
    let r = c
        .request(reqwest::Method::from_bytes(b"REPORT").expect("m"), url)
        .basic_auth(login, Some("demo"))
        .header("Depth", "1")
        .header("Content-Type", "text/xml")
        .body(body)
        .send()
        .await
        .expect("report");
    assert_eq!(r.status(), 207);
    r.text().await.expect("text").matches("BEGIN:VCARD").count()
}

fn main() {
    assert!(
        Path::new(JAR).exists(),
        "DavMail is not installed (apt-get install davmail)"
    );
    let sizes: Vec<usize> = std::env::var("BENCH_DAVMAIL_SIZES")
        .unwrap_or_else(|_| "2000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    println!("DavMail 6 (EWS mode) → crmgate: full CardDAV sync of a Global folder; loopback, plain HTTP, 2 cores shared by crmgate, DavMail and the client");
    rt.block_on(async {
        for n in sizes {
            let tmp = tempfile::tempdir().expect("tmp");
            // Many users, one subsystem, Global = all: one user's Global folder holds nearly
            // all contacts.
            let ds = generate(&GenParams {
                contacts: n,
                users: 40,
                subsystems: 1,
                seed: 7,
            });
            let login = ds.users[1].login.clone();
            let seed = tmp.path().join("seed.json");
            std::fs::write(&seed, serde_json::to_string(&ds.to_json()).expect("json"))
                .expect("write");
            drop(ds);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let port = listener.local_addr().expect("addr").port();
            let ov = Overrides {
                listen: Some(format!("127.0.0.1:{port}")),
                data_dir: Some(tmp.path().join("data")),
                seed: Some(seed),
                insecure_http: true,
            };
            let cfg = Config::parse("", tmp.path(), &ov).expect("config");
            let app = Arc::new(App::open(cfg).expect("open"));
            app.catch_up().await.expect("load");
            app.warm_up();
            tokio::spawn(crmgate::server::serve(
                app.clone(),
                listener,
                std::future::pending(),
            ));
            let dav_port = free_port();
            let _dav = start_davmail(
                tmp.path(),
                &format!("http://127.0.0.1:{port}/EWS/Exchange.asmx"),
                dav_port,
            );
            let c = reqwest::Client::builder()
                .timeout(Duration::from_secs(600))
                .build()
                .expect("client");
            let url = format!(
                "http://127.0.0.1:{dav_port}/users/{login}/contacts/HQ%20Global%20Contacts/"
            );
            // DavMail's own start (login, folder discovery) is not part of the figure.
            let _ = propfind(&c, &url, &login).await;
            let t = Instant::now();
            let hrefs = propfind(&c, &url, &login).await;
            let listed = t.elapsed().as_secs_f64();
            let mut fetched = 0;
            for batch in hrefs.chunks(100) {
                fetched += multiget(&c, &url, &login, batch).await;
            }
            let total = t.elapsed().as_secs_f64();
            assert_eq!(fetched, hrefs.len(), "every listed contact is fetched");
            println!(
                "{n} contacts in the dataset, {} in the folder: PROPFIND {listed:.2} s, full sync (PROPFIND + multiget ×100) {total:.2} s = {:.0} contacts/s",
                hrefs.len(),
                hrefs.len() as f64 / total
            );
        }
    });
}
