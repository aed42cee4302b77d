//! The CardDAV face on the helloHQ backend (its simulator): what helloHQ cannot hold is
//! dropped from a PUT and named in the audit log, not refused; helloHQ down turns a PUT into
//! 503 with Retry-After and nothing written, while reads go on from the replica.

mod support;

use reqwest::Method;
use support::hellohq_sim::{Faults, Sim};
use support::{user_with_my_contacts, TestServer};

async fn dav(
    s: &TestServer,
    login: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = s
        .client
        .request(
            Method::from_bytes(method.as_bytes()).expect("m"),
            s.url(path),
        )
        .basic_auth(login, Some("pw"))
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("send");
    let status = r.status().as_u16();
    let h = r.headers().clone();
    (status, h, r.text().await.expect("text"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hellohq_fields_are_dropped_not_refused_and_an_outage_writes_nothing() {
    let sim = Sim::start().await;
    sim.populate(300, 5);
    let s = TestServer::start_on_sim(
        &sim,
        "reconcile_interval_secs = 3600\nmembership_interval_secs = 3600",
        "",
    )
    .await;
    let (login, ids) = user_with_my_contacts(&s, 2);
    let href = |id: &str| format!("/dav/addressbooks/{login}/my/{id}.vcf");
    let (status, headers, card) = dav(&s, &login, "GET", &href(&ids[0]), &[], "").await;
    assert_eq!(status, 200, "{card}");
    let etag = headers
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();

    // A new job title (helloHQ's Position) with a note helloHQ has no place for: the title
    // lands, the note is dropped and named in the audit log.
    let edited = card
        .lines()
        .filter(|l| !l.starts_with("TITLE:"))
        .collect::<Vec<_>>()
        .join("\r\n")
        .replace(
            "END:VCARD",
            "TITLE:Chief Pager\r\nNOTE:met at the fair\r\nEND:VCARD",
        );
    let (status, _, text) = dav(
        &s,
        &login,
        "PUT",
        &href(&ids[0]),
        &[("Content-Type", "text/vcard"), ("If-Match", &etag)],
        &edited,
    )
    .await;
    assert_eq!(status, 204, "{text}");
    let (_, _, after) = dav(&s, &login, "GET", &href(&ids[0]), &[], "").await;
    assert!(after.contains("TITLE:Chief Pager"), "{after}");
    assert!(!after.contains("NOTE:"), "{after}");
    let audit = s.app.audit_tail(10).expect("audit");
    assert!(
        audit.iter().any(|a| a["action"] == "dropped"
            && a["fields"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == "notes"))),
        "{audit:?}"
    );

    // helloHQ down: a PUT is 503 with Retry-After and writes nothing; reads go on.
    let before = sim.snapshot();
    sim.set_faults(Faults {
        down: true,
        ..Faults::default()
    });
    let (_, headers, card) = dav(&s, &login, "GET", &href(&ids[1]), &[], "").await;
    let etag = headers
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let edited = card
        .lines()
        .filter(|l| !l.starts_with("TITLE:"))
        .collect::<Vec<_>>()
        .join("\r\n")
        .replace("END:VCARD", "TITLE:Offline Edit\r\nEND:VCARD");
    let (status, headers, text) = dav(
        &s,
        &login,
        "PUT",
        &href(&ids[1]),
        &[("Content-Type", "text/vcard"), ("If-Match", &etag)],
        &edited,
    )
    .await;
    assert_eq!(status, 503, "{text}");
    assert!(headers.get("retry-after").is_some());
    assert_eq!(sim.snapshot(), before, "nothing written");
    let (status, _, again) = dav(&s, &login, "GET", &href(&ids[1]), &[], "").await;
    assert_eq!(status, 200);
    assert!(!again.contains("Offline Edit"));
    let (status, _, _) = dav(
        &s,
        &login,
        "PROPFIND",
        &format!("/dav/addressbooks/{login}/my/"),
        &[("Depth", "1")],
        "",
    )
    .await;
    assert_eq!(status, 207, "reads keep working");
    sim.set_faults(Faults::default());
    s.stop().await;
}
