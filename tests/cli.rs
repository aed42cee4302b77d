//! The `crmgate` binary: dataset import with exact error paths and nothing imported from a
//! file with errors, config checking, explain/preview, and deterministic gen-dataset.

mod support;

use std::process::{Command, Output};
use support::fixture;

fn crmgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crmgate"))
        .args(args)
        .env("CRMGATE_LOG", "warn")
        .output()
        .expect("run crmgate")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn import_reports_exact_paths_and_imports_nothing_from_a_bad_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path().to_str().expect("utf8");
    let seed = fixture("demo.json");
    // Seed an empty data dir through import of the demo first.
    let o = crmgate(&["import", seed.to_str().expect("p"), "--data-dir", d]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("imported 434 records"), "{}", text(&o));

    let bad = fixture("bad/unknown_ref.json");
    let o = crmgate(&["import", bad.to_str().expect("p"), "--data-dir", d]);
    assert_eq!(o.status.code(), Some(2));
    let t = text(&o);
    assert!(
        t.contains(r#"contacts[1].companies[0]: unknown company "k999""#),
        "{t}"
    );
    assert!(t.contains("contacts[2].birthday: invalid date"), "{t}");
    assert!(
        t.contains("contacts[2].emails[0].address: invalid e-mail"),
        "{t}"
    );
    // The bad file redefines k1 without a responsible user; had anything been imported, c1
    // would have left Anna's My folder.
    let o = crmgate(&[
        "explain",
        "--user",
        "anna@example.test",
        "--contact",
        "c1",
        "--data-dir",
        d,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("HQ My Contacts"), "{}", text(&o));

    let bad = fixture("bad/malformed.json");
    let o = crmgate(&["import", bad.to_str().expect("p"), "--data-dir", d]);
    assert_eq!(o.status.code(), Some(2));
    let t = text(&o);
    for want in [
        "contacts[0].phones[0].kind: unknown variant `pager`",
        "contacts[1].emails: invalid type: string",
        "users[0]: missing field `login`",
        "planets: unknown section",
    ] {
        assert!(t.contains(want), "missing {want:?} in {t}");
    }
    let o = crmgate(&["import", "/no/such/file.json", "--data-dir", d]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("cannot read"), "{}", text(&o));
}

#[test]
fn check_config_reports_everything() {
    let o = crmgate(&[
        "check-config",
        "-c",
        fixture("bad/bad-config.toml").to_str().expect("p"),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let t = text(&o);
    for want in [
        "plain HTTP is only allowed on a loopback address",
        "folders.global_scope: \"galaxy\"",
        "folders.excluded_types: expected an array of strings",
        "store.dta_dir: unknown key",
    ] {
        assert!(t.contains(want), "missing {want:?} in {t}");
    }
    let good = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(good.path(), "[folders]\nglobal_scope = \"subsystem\"\n").expect("write");
    let o = crmgate(&["check-config", "-c", good.path().to_str().expect("p")]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("global scope Subsystem"), "{}", text(&o));
}

#[test]
fn preview_and_explain_offline() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path().to_str().expect("utf8");
    let o = crmgate(&[
        "import",
        fixture("demo.json").to_str().expect("p"),
        "--data-dir",
        d,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = crmgate(&[
        "preview",
        "--user",
        "anna@example.test",
        "--limit",
        "3",
        "--data-dir",
        d,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("HQ My Contacts (47)") && t.contains("HQ Global Contacts (233)"),
        "{t}"
    );
    // A contact of an "Interessent" company is hidden, and explain says why.
    let ds: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("demo.json")).expect("read"))
            .expect("json");
    let k = ds["companies"]
        .as_array()
        .expect("arr")
        .iter()
        .find(|k| {
            k["types"]
                .as_array()
                .is_some_and(|t| t.iter().any(|x| x == "Interessent"))
        })
        .expect("an Interessent company")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let c = ds["contacts"]
        .as_array()
        .expect("arr")
        .iter()
        .find(|c| {
            c["companies"]
                .as_array()
                .is_some_and(|a| a.len() == 1 && a[0] == k.as_str())
        })
        .expect("a contact of it")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let o = crmgate(&[
        "explain",
        "--user",
        "anna@example.test",
        "--contact",
        &c,
        "--data-dir",
        d,
    ]);
    let t = text(&o);
    assert!(
        t.contains("hidden") && t.contains("excluded type Interessent"),
        "{t}"
    );
    let o = crmgate(&[
        "explain",
        "--user",
        "nobody",
        "--contact",
        "c1",
        "--data-dir",
        d,
    ]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn gen_dataset_is_deterministic_and_importable() {
    let a = crmgate(&[
        "gen-dataset",
        "--contacts",
        "500",
        "--users",
        "10",
        "--subsystems",
        "2",
        "--seed",
        "3",
    ]);
    let b = crmgate(&[
        "gen-dataset",
        "--contacts",
        "500",
        "--users",
        "10",
        "--subsystems",
        "2",
        "--seed",
        "3",
    ]);
    assert!(a.status.success());
    assert_eq!(a.stdout, b.stdout);
    let f = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(f.path(), &a.stdout).expect("write");
    let dir = tempfile::tempdir().expect("tmp");
    let o = crmgate(&[
        "import",
        f.path().to_str().expect("p"),
        "--data-dir",
        dir.path().to_str().expect("p"),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = crmgate(&["gen-dataset", "--users", "0"]);
    assert_eq!(o.status.code(), Some(2));
}
