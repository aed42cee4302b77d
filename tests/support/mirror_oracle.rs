//! The mailbox mirror's oracle: what a mirrored mailbox in the Graph simulator holds, and
//! what crmgate's Graph face serves for the same user, in one comparable form (the mirrored
//! properties, empty ones left out).

use super::graph_sim::GraphSim;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

const PROPS: [&str; 20] = crmgate::mirror::body::PROPS;

/// A contact as a comparable value: the mirrored properties, empty ones left out.
pub fn project(c: &Value) -> String {
    let mut m = serde_json::Map::new();
    for p in PROPS {
        let v = c.get(p).cloned().unwrap_or(Value::Null);
        let empty = match &v {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.values().all(|x| x.is_null() || x == ""),
            _ => false,
        };
        if !empty {
            m.insert(p.to_owned(), v);
        }
    }
    Value::Object(m).to_string()
}

/// What crmgate's Graph face serves for `login`: folder name → sorted projections.
pub async fn face(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    login: &str,
) -> BTreeMap<String, Vec<String>> {
    let url = |p: &str| format!("{base}{p}");
    let get = |u: String| {
        let req = client.get(u).bearer_auth(token);
        async move {
            let r = req.send().await.expect("get");
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.expect("json")
        }
    };
    let folders = get(url(&format!("/v1.0/users/{login}/contactFolders"))).await;
    let mut out = BTreeMap::new();
    for f in folders["value"].as_array().expect("folders") {
        let name = f["displayName"].as_str().expect("name").to_owned();
        let mut items = Vec::new();
        let mut next = url(&format!(
            "/v1.0/users/{login}/contactFolders/{}/contacts?$top=1000",
            f["id"].as_str().expect("id")
        ));
        loop {
            let page = get(next).await;
            items.extend(page["value"].as_array().expect("value").iter().map(project));
            match page["@odata.nextLink"].as_str() {
                Some(n) => next = n.to_owned(),
                None => break,
            }
        }
        items.sort();
        out.insert(name, items);
    }
    out
}

/// The crmgate folders of a mailbox in the simulator: name → sorted projections; fails on a
/// contact without crmgate's id property or two contacts with one id.
pub fn mailbox(sim: &GraphSim, upn: &str) -> Result<BTreeMap<String, Vec<String>>, String> {
    let folderp = crmgate::mirror::body::folder_prop();
    let mut out = BTreeMap::new();
    for f in sim.folders(upn) {
        match f.ext.get(&folderp).map(String::as_str) {
            Some("my" | "global") => {}
            // The user's own folder, or the one holding crmgate's (`parent_folder_name`).
            _ => continue,
        }
        if out.contains_key(&f.display_name) {
            return Err(format!("{upn}: two folders named {}", f.display_name));
        }
        let mut seen = BTreeSet::new();
        let mut items = Vec::new();
        for c in sim.contacts(upn, &f.id) {
            let id = crm_id(&c).ok_or_else(|| {
                format!(
                    "{upn}/{}: a contact without crmgate's id: {c}",
                    f.display_name
                )
            })?;
            if !seen.insert(id.clone()) {
                return Err(format!("{upn}/{}: contact {id} twice", f.display_name));
            }
            items.push(project(&c));
        }
        items.sort();
        out.insert(f.display_name.clone(), items);
    }
    Ok(out)
}

/// Waits until every mailbox of `users` equals what the face at `base` serves (`secs` at
/// most); the first difference when it never does. Fails at once on a duplicate.
pub async fn converge(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    sim: &GraphSim,
    users: &[String],
    secs: u64,
) -> Result<(), String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let mut diff = None;
        for u in users {
            let want = face(client, base, token, u).await;
            let got = mailbox(sim, u)?;
            if got == want {
                continue;
            }
            let mut first = String::new();
            for (name, w) in &want {
                let g = got.get(name).cloned().unwrap_or_default();
                let only_g: Vec<_> = g.iter().filter(|x| !w.contains(x)).take(2).collect();
                let only_w: Vec<_> = w.iter().filter(|x| !g.contains(x)).take(2).collect();
                if !only_g.is_empty() || !only_w.is_empty() {
                    first = format!("{name}: mailbox has {only_g:#?}\nfolder has {only_w:#?}");
                    break;
                }
            }
            diff = Some(format!(
                "{u}: mailbox {:?} vs folders {:?}\n{first}",
                got.iter().map(|(k, v)| (k, v.len())).collect::<Vec<_>>(),
                want.iter().map(|(k, v)| (k, v.len())).collect::<Vec<_>>()
            ));
            break;
        }
        match diff {
            None => return Ok(()),
            Some(d) if std::time::Instant::now() > deadline => return Err(d),
            Some(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
}

/// crmgate's id of a mailbox contact (its `crmgate.id` property), if it has one.
pub fn crm_id(c: &Value) -> Option<String> {
    let idp = crmgate::mirror::body::id_prop();
    c["singleValueExtendedProperties"]
        .as_array()?
        .iter()
        .find(|p| p["id"] == idp.as_str())
        .and_then(|p| p["value"].as_str())
        .map(str::to_owned)
}
