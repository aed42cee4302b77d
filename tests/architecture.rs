//! The layering of ARCHITECTURE.md §2, held by a test: which module may use which. A module's
//! uses are every `crate::…` path in its code (grouped `use crate::{a, b::c}` imports
//! included), every `super::…` path that climbs out of the module, and every external crate
//! path. The pure domain uses std and pure crates only; no protocol face reaches the CRM
//! layer; the CRM layer reads neither the configuration module nor `auth`; the view never
//! reaches a protocol face.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, with its module path below `src` (e.g. `["crm", "hellohq"]`
/// for `src/crm/hellohq/mod.rs`, `["crm", "hellohq", "map"]` for `src/crm/hellohq/map.rs`).
fn sources(dir: &Path, out: &mut Vec<(PathBuf, Vec<String>, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let text = std::fs::read_to_string(&p).expect("read");
            let rel = p.strip_prefix(&src).expect("under src").with_extension("");
            let mut module: Vec<String> = rel
                .iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|m| m == "mod") {
                module.pop();
            }
            out.push((p, module, text));
        }
    }
}

/// Code without comments (line comments, doc comments) and without string literals, so a
/// message or a doc naming a module does not count as a use.
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut in_str = false;
        let mut prev = ' ';
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if in_str {
                if c == '"' && prev != '\\' {
                    in_str = false;
                }
                prev = if prev == '\\' && c == '\\' { ' ' } else { c };
                continue;
            }
            if c == '/' && chars.peek() == Some(&'/') {
                break;
            }
            if c == '"' {
                in_str = true;
                prev = ' ';
                continue;
            }
            out.push(c);
        }
        out.push('\n');
    }
    out
}

fn ident_at(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The top-level names of a `{a, b::c, d as e}` group starting at `s` (after the `{`).
fn group_heads(s: &str) -> Vec<String> {
    let mut depth = 0;
    let mut heads = Vec::new();
    let mut at_item_start = true;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => at_item_start = true,
            c if c.is_whitespace() => {}
            _ if at_item_start && depth == 0 => {
                heads.push(ident_at(&s[i..]));
                at_item_start = false;
            }
            _ => {}
        }
    }
    heads
}

/// The top-level crate modules `code` of module `module` uses.
fn crate_uses(module: &[String], code: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let bytes = code.as_bytes();
    for (i, _) in code.match_indices("crate::") {
        if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_') {
            continue; // `$crate::`, `mycrate::`
        }
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            used.extend(group_heads(group));
        } else {
            used.insert(ident_at(rest));
        }
    }
    // `super::x` from a file module climbs to its parent; `super::super::x` further.
    for (i, _) in code.match_indices("super::") {
        if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_') {
            continue;
        }
        if i >= 7 && &code[i - 7..i] == "super::" {
            continue; // counted from the first `super::` of the chain
        }
        let mut rest = &code[i..];
        let mut up = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            up += 1;
            rest = r;
        }
        // A path that climbs above the crate root is no module path (nothing to check).
        if up > module.len() {
            continue;
        }
        let base = &module[..module.len() - up];
        let heads = match rest.strip_prefix('{') {
            Some(group) => group_heads(group),
            None => vec![ident_at(rest)],
        };
        for h in heads {
            match base.first() {
                Some(top) => {
                    used.insert(top.clone());
                }
                None => {
                    used.insert(h);
                }
            }
        }
    }
    used.retain(|u| !u.is_empty() && Some(u) != module.first());
    used
}

/// External crates named in `code` (a path starting with the crate's name).
fn crate_paths(code: &str, crates: &[&str]) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let bytes = code.as_bytes();
    for c in crates {
        let pat = format!("{c}::");
        for (i, _) in code.match_indices(&pat) {
            let before = if i > 0 { bytes[i - 1] } else { b' ' };
            if before.is_ascii_alphanumeric() || before == b'_' || before == b':' {
                continue;
            }
            found.insert((*c).to_owned());
        }
    }
    found
}

/// Every dependency of the crate (`[dependencies]` of Cargo.toml), as a path name.
fn dependencies() -> Vec<String> {
    let toml = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .expect("Cargo.toml");
    let mut in_deps = false;
    let mut out = Vec::new();
    for line in toml.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_deps = t == "[dependencies]";
            continue;
        }
        if in_deps {
            if let Some((name, _)) = t.split_once('=') {
                out.push(name.trim().replace('-', "_"));
            }
        }
    }
    out
}

/// Violations: files of `module` using a crate module of `forbidden`.
fn check(module: &str, forbidden: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join(module);
    let mut files = Vec::new();
    if root.is_dir() {
        sources(&root, &mut files);
    } else {
        let file = root.with_extension("rs");
        let text = std::fs::read_to_string(&file).expect("module file");
        files.push((file, vec![module.to_owned()], text));
    }
    assert!(!files.is_empty(), "no sources for module {module}");
    let mut bad = Vec::new();
    for (path, m, text) in files {
        let uses = crate_uses(&m, &code_of(&text));
        for f in forbidden {
            if uses.contains(*f) {
                bad.push(format!("{}: {module} uses crate::{f}", path.display()));
            }
        }
    }
    bad
}

/// Violations: files of `module` using external crates other than `allowed`.
fn check_crates(module: &str, allowed: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join(module);
    let mut files = Vec::new();
    sources(&root, &mut files);
    let deps = dependencies();
    let others: Vec<&str> = deps
        .iter()
        .map(String::as_str)
        .filter(|d| !allowed.contains(d))
        .collect();
    let mut bad = Vec::new();
    for (path, _, text) in files {
        for c in crate_paths(&code_of(&text), &others) {
            bad.push(format!("{}: {module} uses the crate {c}", path.display()));
        }
    }
    bad
}

const FACES: [&str; 4] = ["ews", "graph", "carddav", "server"];

#[test]
fn layers_keep_their_imports() {
    let mut bad = Vec::new();
    // The pure domain: std and pure crates only, no other module of crmgate.
    bad.extend(check_crates(
        "domain",
        &[
            "serde",
            "serde_json",
            "serde_path_to_error",
            "phonenumber",
            "thiserror",
            "sha2",
            "base64",
        ],
    ));
    bad.extend(check(
        "domain",
        &[
            "admin", "app", "auth", "config", "crm", "ews", "gen", "graph", "http", "replica",
            "server", "store", "view",
        ],
    ));
    // The view serves every face and knows none.
    bad.extend(check("view", &FACES));
    bad.extend(check("view", &["admin", "app", "config", "http"]));
    // The faces reach the CRM only through the view's write service.
    bad.extend(check("server", &["crm"]));
    bad.extend(check(
        "ews",
        &[
            "graph", "carddav", "server", "crm", "replica", "store", "app",
        ],
    ));
    bad.extend(check(
        "graph",
        &["ews", "carddav", "server", "crm", "replica", "store", "app"],
    ));
    bad.extend(check(
        "carddav",
        &["ews", "graph", "server", "crm", "replica", "store", "app"],
    ));
    // The bounded XML reader stands on its own.
    bad.extend(check(
        "xml",
        &[
            "admin", "app", "auth", "carddav", "config", "crm", "domain", "ews", "graph", "http",
            "replica", "server", "store", "view",
        ],
    ));
    // So does the bounded JSON reader.
    bad.extend(check(
        "json_guard",
        &[
            "admin", "app", "auth", "carddav", "config", "crm", "domain", "ews", "graph", "http",
            "replica", "server", "store", "view", "xml",
        ],
    ));
    bad.extend(check("admin", &["server"]));
    // The CRM layer: backends own their configuration; sign-in data lives in `auth`.
    bad.extend(check(
        "crm",
        &[
            "config", "auth", "replica", "view", "server", "admin", "app", "ews", "graph",
        ],
    ));
    bad.extend(check("config", &["view", "server", "app"]));
    bad.extend(check(
        "auth",
        &["config", "server", "app", "replica", "view"],
    ));
    bad.extend(check(
        "replica",
        &["server", "admin", "ews", "graph", "view"],
    ));
    bad.extend(check("store", &["crm", "replica", "server", "view"]));
    // The mailbox mirror is a client of the view and the write path, like a face: it reaches
    // the CRM and the replica only through them, and no lower layer knows it.
    bad.extend(check(
        "mirror",
        &["crm", "replica", "server", "admin", "ews", "carddav"],
    ));
    for lower in [
        "domain", "store", "crm", "replica", "view", "auth", "ews", "graph", "carddav",
    ] {
        bad.extend(check(lower, &["mirror"]));
    }
    assert!(bad.is_empty(), "layering violations:\n{}", bad.join("\n"));
}

#[test]
fn the_check_finds_violations_of_each_form() {
    // Guards against a checker that passes because it reads nothing or misses a form.
    let m = |s: &str| vec![s.to_owned()];
    let uses = crate_uses(&m("server"), &code_of("use crate::crm::CrmError;\n"));
    assert!(uses.contains("crm"), "{uses:?}");
    let uses = crate_uses(
        &m("server"),
        &code_of("use crate::{\n    app::App,\n    crm::{Crm, CrmError},\n};\n"),
    );
    assert!(uses.contains("crm") && uses.contains("app"), "{uses:?}");
    let uses = crate_uses(
        &m("server"),
        &code_of("let x = crate::crm::CrmError::NotFound;"),
    );
    assert!(uses.contains("crm"), "{uses:?}");
    // `super::x` in `src/view/mod.rs` is the crate root's `x`.
    let uses = crate_uses(&m("view"), &code_of("use super::ews::Thing;"));
    assert!(uses.contains("ews"), "{uses:?}");
    // `super::super::x` in `src/crm/hellohq/map.rs` is `crate::crm::x`: inside crm.
    let deep = vec!["crm".to_owned(), "hellohq".to_owned(), "map".to_owned()];
    assert!(crate_uses(&deep, &code_of("use super::super::Precondition;")).is_empty());
    // Comments and strings are no uses.
    let uses = crate_uses(
        &m("server"),
        &code_of("// crate::crm\nlet s = \"crate::crm::x\"; /// crate::crm\n"),
    );
    assert!(uses.is_empty(), "{uses:?}");
    assert_eq!(
        crate_paths(&code_of("let t = tokio::spawn(f);"), &["tokio"]).len(),
        1
    );
    assert!(
        !check("server", &["view"]).is_empty(),
        "server uses the view"
    );
}

/// The view is protocol-neutral: the Exchange folder tree (root, message folder root,
/// distinguished names, IPF classes) belongs to the EWS face, which hands it to the view
/// as a table. Doc comments may mention them; code and string literals may not.
#[test]
fn the_view_names_no_exchange_folder() {
    let mut files = Vec::new();
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/view"),
        &mut files,
    );
    assert!(!files.is_empty());
    let mut bad = Vec::new();
    for (path, _, text) in files {
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in [
                "msgfolderroot",
                "\"root\"",
                "IPF.",
                "Top of Information Store",
                "MsgFolderRoot",
            ] {
                if code.contains(word) {
                    bad.push(format!("{}:{}: {word}", path.display(), n + 1));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "Exchange folders named in the view:\n{}",
        bad.join("\n")
    );
}
