//! The layering of ARCHITECTURE.md §2, held by a test: the pure domain imports no I/O, no
//! protocol and no async crate; the engine layers do not reach up into the server or the
//! protocol faces.

use std::path::Path;

fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let text = std::fs::read_to_string(&p).expect("read");
            out.push((p.display().to_string(), text));
        }
    }
}

fn check(module: &str, forbidden: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join(module);
    let mut files = Vec::new();
    sources(&root, &mut files);
    let mut bad = Vec::new();
    for (path, text) in files {
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for f in forbidden {
                if code.contains(f) {
                    bad.push(format!("{path}:{}: uses {f}", n + 1));
                }
            }
        }
    }
    bad
}

#[test]
fn layers_keep_their_imports() {
    let mut bad = Vec::new();
    bad.extend(check(
        "domain",
        &[
            "hyper",
            "quick_xml",
            "reqwest",
            "sled",
            "redb",
            "tokio",
            "std::fs",
            "std::net",
            "crate::ews",
            "crate::graph",
            "crate::store",
            "crate::crm",
            "crate::replica",
            "crate::server",
            "crate::app",
            "async fn",
        ],
    ));
    bad.extend(check(
        "view",
        &[
            "hyper",
            "quick_xml",
            "reqwest",
            "sled",
            "redb",
            "crate::ews",
            "crate::graph",
        ],
    ));
    bad.extend(check(
        "replica",
        &[
            "hyper",
            "quick_xml",
            "reqwest",
            "crate::server",
            "crate::admin",
            "crate::ews",
            "crate::graph",
        ],
    ));
    bad.extend(check(
        "store",
        &["crate::crm", "crate::replica", "crate::server", "hyper"],
    ));
    bad.extend(check(
        "crm",
        &[
            "crate::replica",
            "crate::server",
            "crate::admin",
            "hyper",
            "quick_xml",
        ],
    ));
    bad.extend(check(
        "graph",
        &[
            "crate::ews",
            "crate::crm",
            "crate::replica",
            "crate::store",
            "hyper",
            "quick_xml",
        ],
    ));
    bad.extend(check(
        "ews",
        &[
            "crate::graph",
            "crate::crm",
            "crate::replica",
            "crate::store",
            "hyper",
        ],
    ));
    assert!(bad.is_empty(), "layering violations:\n{}", bad.join("\n"));
}

#[test]
fn the_check_finds_a_violation() {
    // Guard against a checker that passes because it reads nothing.
    assert!(!check("server", &["hyper"]).is_empty());
}
