//! SyncEvolution (Debian package, unmodified, CardDAV backend) against the CardDAV face: it
//! finds both books (Global read-only), a slow sync fills a local file store with My, a second
//! two-way sync transfers nothing, a local edit lands in the CRM, a CRM edit reaches the file.

mod support;

use serde_json::{json, Value};
use std::path::PathBuf;
use support::{fixture, TestServer};

struct Se {
    home: PathBuf,
}

impl Se {
    fn cmd(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new("syncevolution");
        c.args(args)
            .env("XDG_CONFIG_HOME", self.home.join("config"))
            .env("XDG_DATA_HOME", self.home.join("data"))
            .env("XDG_CACHE_HOME", self.home.join("cache"))
            .env("HOME", &self.home)
            .stdin(std::process::Stdio::null());
        c
    }

    async fn run(&self, args: &[&str]) -> String {
        let mut c = self.cmd(args);
        let what = args.join(" ");
        let out = tokio::task::spawn_blocking(move || c.output())
            .await
            .expect("join")
            .expect("syncevolution runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "syncevolution {what}:\n{text}");
        text
    }

    /// The counts of the last "Changes applied" table's addressbook row: local NEW, MOD, DEL,
    /// ERR, remote NEW, MOD, DEL, ERR, conflicts.
    fn changes(out: &str) -> Vec<u32> {
        let table = out
            .rsplit("Changes applied during synchronization:")
            .next()
            .unwrap_or("");
        table
            .lines()
            .find(|l| {
                l.trim_start_matches('|')
                    .trim_start()
                    .starts_with("addressbook")
            })
            .map(|l| {
                l.split('|')
                    .skip(2)
                    .filter_map(|c| c.trim().parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.home.join("files"))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
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

fn installed() -> bool {
    std::process::Command::new("syncevolution")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncevolution_two_way_sync_of_my() {
    assert!(
        installed(),
        "SyncEvolution is not installed: run scripts/test.sh"
    );
    let s = TestServer::start(&fixture("demo.json"), "").await;
    s.add_paula().await;
    let se = Se {
        home: s.dir.path().join("syncevolution"),
    };
    std::fs::create_dir_all(se.home.join("files")).expect("dir");
    let base = format!("{}/", s.base);
    let my = format!("{}/dav/addressbooks/paula@example.test/my/", s.base);
    let files = format!("file://{}", se.home.join("files").display());
    // TLS is the test server's self-signed certificate, which neon will not take as a CA;
    // what is tested here is the protocol, over the same HTTPS.
    se.run(&[
        "--configure",
        "--template",
        "webdav",
        "keyring=no",
        "username=paula@example.test",
        "password=pw",
        &format!("syncURL={base}"),
        "SSLVerifyServer=0",
        "SSLVerifyHost=0",
        "target-config@crmgate",
    ])
    .await;
    let dbs = se
        .run(&[
            "--print-databases",
            "backend=carddav",
            "target-config@crmgate",
            "addressbook",
        ])
        .await;
    assert!(
        dbs.contains("HQ My Contacts") && dbs.contains("<default>"),
        "{dbs}"
    );
    assert!(
        dbs.lines()
            .any(|l| l.contains("HQ Global Contacts") && l.contains("read-only")),
        "{dbs}"
    );
    se.run(&[
        "--configure",
        "backend=carddav",
        &format!("database={my}"),
        "target-config@crmgate",
        "addressbook",
    ])
    .await;
    se.run(&[
        "--configure",
        "--template",
        "SyncEvolution_Client",
        "keyring=no",
        "sync=none",
        "syncURL=local://@crmgate",
        "username=",
        "password=",
        "local",
    ])
    .await;
    se.run(&[
        "--configure",
        "sync=two-way",
        "backend=file",
        &format!("database={files}"),
        "databaseFormat=text/vcard",
        "local",
        "addressbook",
    ])
    .await;

    let out = se.run(&["--sync", "slow", "local", "addressbook"]).await;
    assert_eq!(Se::changes(&out)[0], 25, "{out}");
    assert_eq!(se.files().len(), 25);

    // A second run transfers nothing.
    let out = se.run(&["--sync", "two-way", "local", "addressbook"]).await;
    assert_eq!(Se::changes(&out), vec![0; 9], "{out}");

    // A local edit lands in the CRM.
    let file = se
        .files()
        .into_iter()
        .find(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("FN:P07 Pager")))
        .expect("P07's file");
    let text = std::fs::read_to_string(&file).expect("read");
    let edited = edit_title(&text, "Edited in SyncEvolution");
    std::fs::write(&file, edited).expect("write");
    let out = se.run(&["--sync", "two-way", "local", "addressbook"]).await;
    assert_eq!(Se::changes(&out)[5], 1, "one MOD sent: {out}");
    let stored = admin_get(&s, "/admin/v1/contacts/cp07").await;
    assert_eq!(stored["job_title"], "Edited in SyncEvolution", "{stored}");
    assert_eq!(stored["first_name"], "P07");

    // A CRM edit reaches the file, and only that one.
    let r = s
        .client
        .put(s.url("/admin/v1/contacts/cp03"))
        .basic_auth("ben@example.test", Some("demo2"))
        .json(&json!({"companies": ["kp"], "first_name": "Renamed", "last_name": "Pager"}))
        .send()
        .await
        .expect("put");
    assert!(r.status().is_success());
    let out = se.run(&["--sync", "two-way", "local", "addressbook"]).await;
    let c = Se::changes(&out);
    assert_eq!((c[0], c[1], c[2]), (0, 1, 0), "one MOD received: {out}");
    assert!(se
        .files()
        .iter()
        .any(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("Renamed"))));
    s.stop().await;
}

/// The card with its TITLE line set to `title` (added when it has none).
fn edit_title(card: &str, title: &str) -> String {
    let mut out = Vec::new();
    let mut done = false;
    for line in card.split('\n') {
        let l = line.trim_end_matches('\r');
        if l.starts_with("TITLE:") {
            out.push(format!("TITLE:{title}\r"));
            done = true;
        } else if l == "END:VCARD" && !done {
            out.push(format!("TITLE:{title}\r"));
            out.push(line.to_owned());
        } else {
            out.push(line.to_owned());
        }
    }
    out.join("\n")
}
