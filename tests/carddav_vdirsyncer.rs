//! vdirsyncer 0.21 and khard 0.22 (unmodified, from PyPI into `.cache/venv-dav`) against the
//! CardDAV face over HTTPS: discovery from the server root, a two-way sync into a local vdir,
//! CRM-side changes arriving as exactly those changes, local edits landing in the CRM with
//! unmapped CRM fields intact, a refused edit in the read-only Global book, a local delete
//! following the folder's policy; khard reading the vdir.

mod support;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use support::{fixture, TestServer};

fn venv() -> PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/venv-dav/bin");
    assert!(
        bin.join("vdirsyncer").exists() && bin.join("khard").exists(),
        "vdirsyncer and khard are not installed: run scripts/test.sh"
    );
    bin
}

/// Runs a client command; returns (success, stdout + stderr).
async fn run(mut cmd: std::process::Command) -> (bool, String) {
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("start");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

struct Sync {
    dir: PathBuf,
    config: PathBuf,
}

impl Sync {
    fn new(s: &TestServer) -> Sync {
        let dir = s.dir.path().join("vdirsyncer");
        // The local collections exist, so `discover` asks nothing.
        for book in ["my", "global"] {
            std::fs::create_dir_all(dir.join("vdir").join(book)).expect("dir");
        }
        let config = dir.join("config");
        let cert = s.dir.path().join("tls/cert.pem");
        std::fs::write(
            &config,
            format!(
                r#"[general]
status_path = "{status}"

[pair paula]
a = "paula_local"
b = "paula_remote"
collections = ["from b"]

[storage paula_local]
type = "filesystem"
path = "{vdir}"
fileext = ".vcf"

[storage paula_remote]
type = "carddav"
url = "{base}/"
username = "paula@example.test"
password = "pw"
verify = "{cert}"
"#,
                status = dir.join("status").display(),
                vdir = dir.join("vdir").display(),
                base = s.base,
                cert = cert.display(),
            ),
        )
        .expect("config");
        Sync { dir, config }
    }

    fn cmd(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(venv().join("vdirsyncer"));
        c.arg("-c").arg(&self.config).args(args);
        c.stdin(std::process::Stdio::null());
        c
    }

    async fn sync(&self) -> (bool, String) {
        run(self.cmd(&["sync"])).await
    }

    /// Every file of a local book: name → content.
    fn book(&self, name: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Ok(rd) = std::fs::read_dir(self.dir.join("vdir").join(name)) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "vcf") {
                    out.insert(
                        p.file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                        std::fs::read_to_string(&p).expect("read"),
                    );
                }
            }
        }
        out
    }
}

async fn admin(s: &TestServer, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut r = s
        .client
        .request(method, s.url(path))
        .basic_auth("ben@example.test", Some("demo2"));
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.expect("send");
    let status = r.status();
    let v = r.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {v}");
    v
}

/// The changed, added and removed files between two snapshots of a book.
fn diff(
    a: &BTreeMap<String, String>,
    b: &BTreeMap<String, String>,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let changed = a
        .iter()
        .filter(|(k, v)| b.get(*k).is_some_and(|w| w != *v))
        .map(|(k, _)| k.clone())
        .collect();
    let added = b.keys().filter(|k| !a.contains_key(*k)).cloned().collect();
    let removed = a.keys().filter(|k| !b.contains_key(*k)).cloned().collect();
    (changed, added, removed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vdirsyncer_and_khard_keep_a_local_copy_exact() {
    let bin = venv();
    let s = TestServer::start(&fixture("demo.json"), "").await;
    s.add_paula().await;
    // An unmapped CRM field on one contact, which a local edit must not lose.
    admin(
        &s,
        reqwest::Method::PUT,
        "/admin/v1/contacts/cp07",
        Some(
            json!({"companies": ["kp"], "first_name": "P07", "last_name": "Pager",
            "emails": [{"address": "p07@paging.test", "kind": "work"}],
            "phones": [{"number": "+49 30 7777", "kind": "work"}],
            "crm_source": "trade fair 2026"}),
        ),
    )
    .await;
    let v = Sync::new(&s);
    let (ok, out) = run(v.cmd(&["discover", "paula"])).await;
    assert!(ok, "discover: {out}");
    let (ok, out) = v.sync().await;
    assert!(ok, "sync: {out}");

    // Every file equals the folder rules: My = Paula's 25, Global = the preview's count.
    let preview = admin(
        &s,
        reqwest::Method::GET,
        "/admin/v1/preview?user=paula@example.test&limit=1",
        None,
    )
    .await;
    let my = v.book("my");
    let global = v.book("global");
    assert_eq!(my.len(), 25, "{:?}", my.keys().collect::<Vec<_>>());
    assert_eq!(
        Some(global.len() as u64),
        preview["folders"][1]["count"].as_u64(),
        "{preview}"
    );
    assert!(my.contains_key("cp07.vcf"));
    assert!(my["cp07.vcf"].contains("p07@paging.test"));

    // khard reads the vdir: names, e-mails and phones as the CRM holds them.
    let khard_cfg = v.dir.join("khard.conf");
    std::fs::write(
        &khard_cfg,
        format!(
            "[addressbooks]\n[[my]]\npath = {}\n[general]\ndefault_action = list\n",
            v.dir.join("vdir/my").display()
        ),
    )
    .expect("khard config");
    let mut k = std::process::Command::new(bin.join("khard"));
    k.arg("-c")
        .arg(&khard_cfg)
        .args(["email", "--parsable", "p07"]);
    let (ok, out) = run(k).await;
    assert!(ok && out.contains("p07@paging.test"), "khard email: {out}");
    let mut k = std::process::Command::new(bin.join("khard"));
    k.arg("-c")
        .arg(&khard_cfg)
        .args(["phone", "--parsable", "p07"]);
    let (ok, out) = run(k).await;
    assert!(ok && out.contains("+49 30 7777"), "khard phone: {out}");

    // CRM-side: an edit, a create, a delete; then exactly those files change.
    let before = v.book("my");
    admin(
        &s,
        reqwest::Method::PUT,
        "/admin/v1/contacts/cp03",
        Some(json!({"companies": ["kp"], "first_name": "Renamed", "last_name": "Pager"})),
    )
    .await;
    admin(
        &s,
        reqwest::Method::PUT,
        "/admin/v1/contacts/cpnew",
        Some(json!({"companies": ["kp"], "first_name": "New", "last_name": "Pager"})),
    )
    .await;
    admin(&s, reqwest::Method::DELETE, "/admin/v1/contacts/cp04", None).await;
    let (ok, out) = v.sync().await;
    assert!(ok, "sync: {out}");
    let after = v.book("my");
    assert_eq!(
        diff(&before, &after),
        (
            vec!["cp03.vcf".into()],
            vec!["cpnew.vcf".into()],
            vec!["cp04.vcf".into()]
        )
    );
    assert!(after["cp03.vcf"].contains("FN:Renamed Pager"));

    // The company changes hands: its contacts leave My and enter Global (Paula's scope is
    // everyone), and nothing else is rewritten; then back. (A second company keeps My from
    // being emptied, which vdirsyncer refuses to mirror without --force-delete.)
    admin(
        &s,
        reqwest::Method::PUT,
        "/admin/v1/companies/kq",
        Some(json!({"name": "Second GmbH", "subsystems": ["s1"], "responsible": ["up"]})),
    )
    .await;
    admin(
        &s,
        reqwest::Method::PUT,
        "/admin/v1/contacts/cq1",
        Some(json!({"companies": ["kq"], "first_name": "Stays", "last_name": "Mine"})),
    )
    .await;
    let (ok, out) = v.sync().await;
    assert!(ok, "sync: {out}");
    let (my_before, global_before) = (v.book("my"), v.book("global"));
    let company = |responsible: &str| json!({"name": "Paging GmbH", "subsystems": ["s1"], "responsible": [responsible]});
    admin(
        &s,
        reqwest::Method::PUT,
        "/admin/v1/companies/kp",
        Some(company("u1")),
    )
    .await;
    let (ok, out) = v.sync().await;
    assert!(ok, "sync: {out}");
    let (my_after, global_after) = (v.book("my"), v.book("global"));
    let moved: Vec<String> = my_before
        .keys()
        .filter(|k| *k != "cq1.vcf")
        .cloned()
        .collect();
    assert_eq!(my_after.keys().collect::<Vec<_>>(), vec!["cq1.vcf"]);
    assert_eq!(
        diff(&global_before, &global_after),
        (vec![], moved.clone(), vec![])
    );
    admin(
        &s,
        reqwest::Method::PUT,
        "/admin/v1/companies/kp",
        Some(company("up")),
    )
    .await;
    let (ok, out) = v.sync().await;
    assert!(ok, "sync: {out}");
    assert_eq!(
        diff(&my_after, &v.book("my")),
        (vec![], moved.clone(), vec![])
    );
    assert_eq!(v.book("global"), global_before);

    // A local edit in My lands in the CRM; the unmapped CRM field survives.
    let edited = after["cp07.vcf"].replace("END:VCARD", "TITLE:Head of Paging\r\nEND:VCARD");
    std::fs::write(v.dir.join("vdir/my/cp07.vcf"), edited).expect("edit");
    let (ok, out) = v.sync().await;
    assert!(ok, "sync: {out}");
    let stored = admin(&s, reqwest::Method::GET, "/admin/v1/contacts/cp07", None).await;
    assert_eq!(stored["job_title"], "Head of Paging", "{stored}");
    assert_eq!(stored["crm_source"], "trade fair 2026", "{stored}");
    assert_eq!(stored["emails"][0]["address"], "p07@paging.test");

    // A local edit in Global is refused (read-only) and vdirsyncer says so; the CRM keeps it.
    if let Some((name, text)) = global.iter().next() {
        let id = name.trim_end_matches(".vcf");
        let crm_before = admin(
            &s,
            reqwest::Method::GET,
            &format!("/admin/v1/contacts/{id}"),
            None,
        )
        .await;
        let edited = text.replace("END:VCARD", "TITLE:Not Allowed\r\nEND:VCARD");
        std::fs::write(v.dir.join("vdir/global").join(name), edited).expect("edit");
        let (ok, out) = v.sync().await;
        assert!(!ok, "vdirsyncer must report the refused upload: {out}");
        assert!(
            out.contains("403") || out.to_lowercase().contains("forbidden"),
            "{out}"
        );
        let crm_after = admin(
            &s,
            reqwest::Method::GET,
            &format!("/admin/v1/contacts/{id}"),
            None,
        )
        .await;
        assert_eq!(crm_before, crm_after);
        // Put the file back so later syncs are clean.
        std::fs::write(v.dir.join("vdir/global").join(name), text).expect("restore");
    }

    // A local delete in My follows the policy (hide): gone for Paula, kept in the CRM.
    std::fs::remove_file(v.dir.join("vdir/my/cp05.vcf")).expect("rm");
    let (ok, out) = v.sync().await;
    assert!(ok, "sync: {out}");
    let kept = admin(&s, reqwest::Method::GET, "/admin/v1/contacts/cp05", None).await;
    assert_eq!(kept["first_name"], "P05");
    let (ok, out) = v.sync().await;
    assert!(ok, "sync: {out}");
    assert!(!v.book("my").contains_key("cp05.vcf"));
    s.stop().await;
}
