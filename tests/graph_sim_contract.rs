//! Contract test of the Microsoft Graph simulator (tests/support/graph_sim.rs) against the
//! OpenAPI description in `fixtures/graph/contacts-v1.0-openapi.json` and the facts in
//! `../shared/specs/graph/README.md`: every route is exercised, every answer (successes and
//! errors, delta pages, batch envelopes and their items, token answers) is validated against
//! the schema the file declares for it, and the documented behaviours (status codes, caps,
//! delta and batch semantics, limits) are pinned. The mailbox mirror's tests may rely on the
//! simulator only as far as this test pins it.
//!
//! The validator below reads OpenAPI 3.0: `$ref`, `allOf`, `anyOf`, `oneOf`, `nullable`,
//! `type`/`format`, `enum`, `required`, `items` and `additionalProperties`. Beyond that it
//! reports every property an object schema does not declare, so a simulator that invents or
//! misspells a field fails. Instance annotations (names with `@`, such as `@odata.etag`) are
//! exempt unless the schema declares them (`@odata.nextLink`, `@odata.deltaLink`, `@removed`,
//! `@odata.type`, `@odata.count`), in which case they are checked like properties. An object
//! schema that declares no properties at all (the service-specific `InnerError`, a batch
//! item's free-form `body`) accepts any members. In an `anyOf`, the converter's nullable marker
//! `{"type": "object", "nullable": true}` stands for null only (the published documents use
//! `anyOf [$ref, marker]` to say "nullable $ref"), so it cannot let an invented field through.

mod support;

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use support::graph_sim::{Faults, GraphSim, Limits, MailboxState};

// ---------------------------------------------------------------------------------------------
// OpenAPI 3.0 validator

struct Spec {
    root: Value,
}

fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let p =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/graph/contacts-v1.0-openapi.json");
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let root: Value = serde_json::from_str(&text).expect("openapi json");
        assert_eq!(root["openapi"], "3.0.3", "spec version changed");
        Spec { root }
    })
}

/// An object schema with its `allOf` parts merged.
#[derive(Default)]
struct Obj<'a> {
    props: BTreeMap<String, &'a Value>,
    required: BTreeSet<String>,
    /// Some part declares `properties`.
    declared: bool,
    /// `additionalProperties` given as a schema.
    extra: Option<&'a Value>,
}

impl Spec {
    fn schema(&self, name: &str) -> &Value {
        let d = &self.root["components"]["schemas"][name];
        assert!(d.is_object(), "no schema {name}");
        d
    }

    /// Follows `$ref` chains (to schemas and to responses); siblings of a `$ref` are ignored,
    /// as OpenAPI 3.0 says.
    fn resolve<'a>(&'a self, mut s: &'a Value) -> &'a Value {
        for _ in 0..16 {
            let Some(r) = s["$ref"].as_str() else {
                return s;
            };
            s = if let Some(n) = r.strip_prefix("#/components/schemas/") {
                self.schema(n)
            } else if let Some(n) = r.strip_prefix("#/components/responses/") {
                &self.root["components"]["responses"][n]
            } else {
                panic!("odd $ref {r}")
            };
        }
        panic!("$ref chain too long")
    }

    /// The schema of the `application/json` answer `path`/`method` declares for `status`
    /// (falling back to `4XX`/`5XX`); `None` when that answer has no content (204).
    fn response(&self, path: &str, method: &str, status: u16) -> Option<&Value> {
        let responses = &self.root["paths"][path][method.to_ascii_lowercase()]["responses"];
        assert!(responses.is_object(), "the spec has no {method} {path}");
        let exact = &responses[status.to_string()];
        let range = &responses[format!("{}XX", status / 100)];
        let r = if exact.is_object() { exact } else { range };
        assert!(r.is_object(), "{method} {path} declares no {status} answer");
        let r = self.resolve(r);
        let s = &r["content"]["application/json"]["schema"];
        s.is_object().then_some(s)
    }

    /// Every operation of the spec, as `"METHOD /template"`.
    fn operations(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (path, item) in self.root["paths"].as_object().expect("paths") {
            for m in ["get", "post", "patch", "put", "delete"] {
                if item[m].is_object() {
                    out.insert(format!("{} {path}", m.to_ascii_uppercase()));
                }
            }
        }
        out
    }

    fn validate(&self, schema: &Value, v: &Value) -> Vec<String> {
        let mut errs = Vec::new();
        self.check(schema, v, "$", &mut errs);
        errs
    }

    fn is_null_marker(&self, s: &Value) -> bool {
        let s = self.resolve(s);
        s.as_object()
            .is_some_and(|m| m.keys().all(|k| k == "type" || k == "nullable"))
            && s["type"] == "object"
            && s["nullable"] == true
    }

    fn check(&self, schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
        let s = self.resolve(schema);
        for (kw, exactly_one) in [("anyOf", false), ("oneOf", true)] {
            let Some(alts) = s[kw].as_array() else {
                continue;
            };
            let real: Vec<&Value> = alts.iter().filter(|a| !self.is_null_marker(a)).collect();
            let marker = real.len() < alts.len();
            if v.is_null() && marker {
                return;
            }
            if real.len() == 1 && !exactly_one {
                // `anyOf [$ref, marker]`: a nullable $ref; report the $ref's own findings.
                self.check(real[0], v, at, errs);
                return;
            }
            let ok = real
                .iter()
                .filter(|a| self.validate(a, v).is_empty())
                .count();
            if (exactly_one && ok != 1) || ok == 0 {
                errs.push(format!("{at}: {ok} of the {kw} alternatives match {v}"));
            }
            return;
        }
        if v.is_null() {
            if s["nullable"] != true {
                errs.push(format!("{at}: null where the schema is not nullable"));
            }
            return;
        }
        if let Some(allowed) = s["enum"].as_array() {
            if !allowed.contains(v) {
                errs.push(format!("{at}: {v} not in enum {allowed:?}"));
            }
        }
        let format = s["format"].as_str();
        let ty = s["type"].as_str();
        match ty {
            Some("string") => match v.as_str() {
                None => errs.push(format!("{at}: expected string, got {v}")),
                Some(t) if format == Some("date-time") && !is_rfc3339(t) => {
                    errs.push(format!("{at}: '{t}' is not an RFC 3339 date-time"))
                }
                Some(_) => {}
            },
            Some("integer") => match v.as_i64() {
                None => errs.push(format!("{at}: expected integer, got {v}")),
                Some(n) if format == Some("int32") && i32::try_from(n).is_err() => {
                    errs.push(format!("{at}: {n} out of int32 range"))
                }
                Some(_) => {}
            },
            Some("number") if !v.is_number() => {
                errs.push(format!("{at}: expected number, got {v}"))
            }
            Some("boolean") if !v.is_boolean() => {
                errs.push(format!("{at}: expected boolean, got {v}"))
            }
            Some("number" | "boolean") => {}
            Some("array") => match v.as_array() {
                None => errs.push(format!("{at}: expected array, got {v}")),
                Some(items) => {
                    for (i, it) in items.iter().enumerate() {
                        self.check(&s["items"], it, &format!("{at}[{i}]"), errs);
                    }
                }
            },
            Some("object") | None
                if ty.is_some() || s["allOf"].is_array() || s["properties"].is_object() =>
            {
                let mut o = Obj::default();
                self.flatten(s, &mut o);
                self.check_object(&o, v, at, errs);
            }
            Some(other) => errs.push(format!("{at}: schema has unknown type {other}")),
            None => {}
        }
    }

    fn flatten<'a>(&'a self, s: &'a Value, o: &mut Obj<'a>) {
        let s = self.resolve(s);
        for p in s["allOf"].as_array().into_iter().flatten() {
            self.flatten(p, o);
        }
        if let Some(m) = s["properties"].as_object() {
            o.declared = true;
            for (k, v) in m {
                o.props.insert(k.clone(), v);
            }
        }
        for r in s["required"].as_array().into_iter().flatten() {
            o.required
                .insert(r.as_str().expect("required name").to_owned());
        }
        if s["additionalProperties"].is_object() {
            o.extra = Some(&s["additionalProperties"]);
        }
    }

    fn check_object(&self, o: &Obj<'_>, v: &Value, at: &str, errs: &mut Vec<String>) {
        let Some(map) = v.as_object() else {
            errs.push(format!("{at}: expected object, got {v}"));
            return;
        };
        for r in &o.required {
            if !map.contains_key(r) {
                errs.push(format!("{at}: required property {r} missing"));
            }
        }
        for (k, val) in map {
            let path = format!("{at}.{k}");
            if let Some(p) = o.props.get(k) {
                self.check(p, val, &path, errs);
            } else if k.contains('@') {
                // An instance annotation the schema does not declare.
            } else if let Some(extra) = o.extra {
                self.check(extra, val, &path, errs);
            } else if o.declared {
                errs.push(format!("{at}: undeclared property {k}"));
            }
        }
    }
}

/// RFC 3339 `date-time`: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` with field ranges checked.
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let n = |r: std::ops::Range<usize>| {
        s.get(r)
            .filter(|t| t.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|t| t.parse::<u32>().ok())
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return false;
    }
    let ok = matches!(
        (n(0..4), n(5..7), n(8..10), n(11..13), n(14..16), n(17..19)),
        (
            Some(_),
            Some(1..=12),
            Some(1..=31),
            Some(0..=23),
            Some(0..=59),
            Some(0..=59)
        )
    );
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        let d = r.bytes().take_while(u8::is_ascii_digit).count();
        if d == 0 {
            return false;
        }
        rest = &r[d..];
    }
    ok && (rest == "Z"
        || (rest.len() == 6
            && matches!(rest.as_bytes()[0], b'+' | b'-')
            && rest.as_bytes()[3] == b':'))
}

fn assert_valid(schema: &Value, v: &Value, what: &str) {
    let errs = spec().validate(schema, v);
    assert!(
        errs.is_empty(),
        "{what}: {} violation(s):\n  {}\nbody: {v}",
        errs.len(),
        errs.iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  ")
    );
}

fn is_delta_segment(s: &str) -> bool {
    [
        "delta",
        "delta()",
        "microsoft.graph.delta",
        "microsoft.graph.delta()",
    ]
    .iter()
    .any(|d| s.eq_ignore_ascii_case(d))
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(x) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(x);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The spec's path template for a URL (absolute, or a batch item's relative one); `None` for
/// a path the spec does not describe.
fn template_of(url: &str) -> Option<String> {
    let path = match url.find("://") {
        Some(i) => {
            let rest = &url[i + 3..];
            &rest[rest.find('/').unwrap_or(rest.len())..]
        }
        None => url,
    };
    let path = path.split('?').next().unwrap_or("");
    if path.ends_with("/oauth2/v2.0/token") {
        return Some("/{tenant}/oauth2/v2.0/token".into());
    }
    let path = path.strip_prefix("/v1.0").unwrap_or(path);
    if path == "/$batch" {
        return Some("/$batch".into());
    }
    let mut segs: Vec<String> = Vec::new();
    for raw in path.split('/').filter(|s| !s.is_empty()) {
        let s = decode(raw);
        match (s.find("('"), s.strip_suffix("')")) {
            (Some(open), Some(head)) => {
                segs.push(s[..open].to_owned());
                segs.push(head[open + 2..].replace("''", "'"));
            }
            _ => segs.push(s),
        }
    }
    let mut best: Option<(usize, String)> = None;
    let documented = spec().root["paths"].as_object().expect("paths").keys();
    for t in documented
        .map(String::as_str)
        .chain(SUPPLEMENT.iter().map(|(t, _)| *t))
    {
        let ts: Vec<&str> = t.split('/').filter(|s| !s.is_empty()).collect();
        if ts.len() != segs.len() {
            continue;
        }
        let mut literal = 0;
        let fits = ts.iter().zip(&segs).all(|(t, s)| {
            if t.starts_with('{') {
                true
            } else if *t == "delta()" {
                literal += 1;
                is_delta_segment(s)
            } else {
                literal += 1;
                t.eq_ignore_ascii_case(s)
            }
        });
        if fits && best.as_ref().is_none_or(|(n, _)| literal > *n) {
            best = Some((literal, t.to_string()));
        }
    }
    best.map(|(_, t)| t)
}

/// Operations Microsoft documents outside the slice, each with the slice's path whose answers
/// it shares: "List childFolders" answers 200 with a collection of contactFolder, "Create
/// contactFolder" under a folder 201 with the contactFolder (the contactfolder-list-
/// childfolders and contactfolder-post-childfolders pages of Graph v1.0).
const SUPPLEMENT: [(&str, &str); 1] = [(
    "/users/{user-id}/contactFolders/{contactFolder-id}/childFolders",
    "/users/{user-id}/contactFolders",
)];

/// The slice's path whose answers `template`'s share.
fn answers_of(template: String) -> String {
    SUPPLEMENT
        .iter()
        .find(|(t, _)| *t == template)
        .map_or(template, |(_, like)| like.to_string())
}

/// Validates one answer against what the spec declares for it.
fn check_answer(
    method: &str,
    url: &str,
    status: u16,
    retry_after: Option<&str>,
    body: &Value,
    empty: bool,
) {
    let what = format!("{method} {url} → {status}");
    let documented = template_of(url)
        .map(answers_of)
        .filter(|t| spec().root["paths"][t][method.to_ascii_lowercase()].is_object());
    let Some(t) = documented else {
        // Not a documented operation: it must be a Graph error.
        assert!(
            status >= 400,
            "{what}: success on a path the spec does not have"
        );
        assert_valid(
            spec().schema("microsoft.graph.ODataErrors.ODataError"),
            body,
            &what,
        );
        return;
    };
    match spec().response(&t, method, status) {
        None => assert!(empty, "{what}: the spec declares no content, got {body}"),
        Some(s) => {
            assert!(!empty, "{what}: empty body where the spec declares content");
            assert_valid(s, body, &what);
        }
    }
    if status >= 400 && t != "/{tenant}/oauth2/v2.0/token" {
        // innerError is service-specific in the spec; pin what the simulator puts there.
        let inner = body["error"]["innerError"]
            .as_object()
            .unwrap_or_else(|| panic!("{what}: no innerError"));
        let keys: BTreeSet<&str> = inner.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["client-request-id", "date", "request-id"]),
            "{what}"
        );
    }
    if status == 429 {
        let secs: u64 = retry_after
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("{what}: no Retry-After"));
        assert!(secs >= 1, "{what}: Retry-After {secs}");
        assert_eq!(body["error"]["code"], "TooManyRequests", "{what}");
    }
}

// ---------------------------------------------------------------------------------------------
// A client that validates every answer

struct R {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl R {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    fn values(&self) -> &Vec<Value> {
        self.body["value"]
            .as_array()
            .unwrap_or_else(|| panic!("no value: {}", self.body))
    }
}

struct T {
    sim: GraphSim,
    http: reqwest::Client,
    token: String,
}

const ANA: &str = "ana@contoso.test";
const BEN: &str = "ben@contoso.test";

impl T {
    /// A simulator without latency, mailboxes ana and ben, and a token from the endpoint.
    async fn new() -> T {
        let sim = GraphSim::start().await;
        sim.set_latency(Duration::ZERO, Duration::ZERO);
        sim.add_mailbox(ANA);
        sim.add_mailbox(BEN);
        let http = reqwest::Client::new();
        let mut t = T {
            sim,
            http,
            token: String::new(),
        };
        let r = t
            .token_request(
                &t.sim.token_url(),
                GraphSim::CLIENT_SECRET,
                GraphSim::SCOPE,
                "client_credentials",
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        t.token = r.body["access_token"].as_str().expect("token").to_owned();
        t
    }

    fn url(&self, p: &str) -> String {
        if p.starts_with("http") {
            p.to_owned()
        } else {
            format!("{}/v1.0{p}", self.sim.base_url)
        }
    }

    async fn token_request(&self, url: &str, secret: &str, scope: &str, grant: &str) -> R {
        let form = [
            ("client_id", GraphSim::CLIENT_ID),
            ("client_secret", secret),
            ("scope", scope),
            ("grant_type", grant),
        ];
        let r = self
            .http
            .post(url)
            .form(&form)
            .send()
            .await
            .expect("token request");
        self.finish("POST", url, r).await
    }

    async fn finish(&self, method: &str, url: &str, r: reqwest::Response) -> R {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("text");
        let body: Value = if text.is_empty() {
            Value::Null
        } else {
            assert_eq!(
                headers.get("content-type").and_then(|v| v.to_str().ok()),
                Some("application/json"),
                "{method} {url}"
            );
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {url}: {e}: {text}"))
        };
        let retry = headers.get("retry-after").and_then(|v| v.to_str().ok());
        check_answer(method, url, status, retry, &body, text.is_empty());
        R {
            status,
            headers,
            body,
        }
    }

    async fn call(
        &self,
        method: &str,
        p: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> R {
        self.call_as(Some(&self.token), method, p, body, headers)
            .await
    }

    async fn call_as(
        &self,
        token: Option<&str>,
        method: &str,
        p: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> R {
        let url = self.url(p);
        let mut r = self.http.request(
            reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
            &url,
        );
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let resp = r
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        self.finish(method, &url, resp).await
    }

    async fn get(&self, p: &str) -> R {
        self.call("GET", p, None, &[]).await
    }

    async fn post(&self, p: &str, body: Value) -> R {
        self.call("POST", p, Some(body), &[]).await
    }

    async fn patch(&self, p: &str, body: Value) -> R {
        self.call("PATCH", p, Some(body), &[]).await
    }

    async fn delete(&self, p: &str) -> R {
        self.call("DELETE", p, None, &[]).await
    }

    /// Sends a batch; validates the envelope and every item against the schema of the item's
    /// own route and status. Returns the envelope and the items by request id.
    async fn batch(&self, requests: Value) -> (R, BTreeMap<String, Value>) {
        let r = self
            .post("/$batch", json!({ "requests": requests.clone() }))
            .await;
        let mut items = BTreeMap::new();
        if r.status != 200 {
            return (r, items);
        }
        for it in r.body["responses"].as_array().expect("responses") {
            let id = it["id"].as_str().expect("id");
            let req = requests
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .find(|q| q["id"].as_str().is_some_and(|x| x.eq_ignore_ascii_case(id)))
                })
                .unwrap_or_else(|| panic!("answer for unknown id {id}"));
            let method = req["method"].as_str().expect("method");
            let url = req["url"].as_str().expect("url");
            let status = it["status"].as_u64().expect("status") as u16;
            let retry = it["headers"]["Retry-After"].as_str();
            let body = it.get("body").cloned().unwrap_or(Value::Null);
            check_answer(method, url, status, retry, &body, it.get("body").is_none());
            if let Some(b) = it.get("body") {
                assert_eq!(
                    it["headers"]["Content-Type"], "application/json",
                    "item {id}"
                );
                assert!(b.is_object(), "item {id}");
            }
            assert!(
                items.insert(id.to_owned(), it.clone()).is_none(),
                "item {id} answered twice"
            );
        }
        assert_eq!(
            items.len(),
            requests.as_array().map_or(0, Vec::len),
            "every item answered once"
        );
        (r, items)
    }

    /// Follows `@odata.nextLink` from `first`; returns every page.
    async fn pages(&self, first: R, headers: &[(&str, &str)]) -> Vec<R> {
        let mut out = vec![first];
        while let Some(next) = out
            .last()
            .and_then(|r| r.body["@odata.nextLink"].as_str())
            .map(str::to_owned)
        {
            assert!(
                next.starts_with(&self.sim.base_url),
                "nextLink is absolute: {next}"
            );
            let r = self.call("GET", &next, None, headers).await;
            assert_eq!(r.status, 200, "{next}: {}", r.body);
            out.push(r);
            assert!(out.len() < 200, "too many pages");
        }
        out
    }

    fn folder_path(&self, upn: &str, f: &str) -> String {
        format!("/users/{upn}/contactFolders/{f}")
    }
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

const SVEP: &str = "singleValueExtendedProperties";
const EXT: &str = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name ExternalId";
const EXT_INT: &str = "Integer {66f5a359-4659-4830-9070-00047ec6ac6e} Id 0x8001";

fn enc(s: &str) -> String {
    s.bytes()
        .map(|c| {
            if c.is_ascii_alphanumeric() || b"-._~$'(),/:{}=".contains(&c) {
                (c as char).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The validator itself

#[test]
fn the_validator_reports_what_the_spec_does_not_allow() {
    let s = spec();
    let contact = s.schema("microsoft.graph.contact");
    let good = json!({"@odata.etag": "W/\"x\"", "@odata.context": "c", "id": "AAMkA1",
        "createdDateTime": "2026-11-01T08:00:00Z", "displayName": null, "categories": [],
        "emailAddresses": [{"name": null, "address": "a@b.test"}], "homeAddress": {},
        "businessAddress": {"city": "Berlin"}, "primaryEmailAddress": null, "birthday": null});
    assert_eq!(s.validate(contact, &good), Vec::<String>::new());
    let errs = |v: Value| s.validate(contact, &v);
    let has = |e: &[String], m: &str| e.iter().any(|x| x.contains(m));
    // Invented or misspelled properties, also inside nested and nullable ($ref + marker) ones.
    assert!(has(
        &errs(json!({"dispalyName": "x"})),
        "$: undeclared property dispalyName"
    ));
    assert!(has(
        &errs(json!({"homeAddress": {"town": "x"}})),
        "$.homeAddress: undeclared property town"
    ));
    assert!(has(
        &errs(json!({"emailAddresses": [{"mail": "x"}]})),
        "undeclared property mail"
    ));
    assert!(has(
        &errs(json!({"primaryEmailAddress": {"adress": "x"}})),
        "undeclared property adress"
    ));
    // Types, formats, nullability.
    assert!(has(&errs(json!({"displayName": 5})), "expected string"));
    assert!(has(
        &errs(json!({"createdDateTime": "2026-11-01 08:00:00"})),
        "RFC 3339"
    ));
    assert!(has(&errs(json!({"emailAddresses": [null]})), "null where"));
    assert!(has(&errs(json!({"categories": "a"})), "expected array"));
    assert!(has(&errs(json!({"id": null})), "$.id: null where"));
    // Declared annotations are checked; undeclared ones are not.
    let item = s.schema("microsoft.graph.contactDeltaItem");
    assert!(s
        .validate(item, &json!({"id": "x", "@removed": {"reason": "deleted"}}))
        .is_empty());
    assert!(has(
        &s.validate(item, &json!({"id": "x", "@removed": {"reason": "gone"}})),
        "not in enum"
    ));
    let page = s.schema("microsoft.graph.contactCollectionResponse");
    assert!(has(
        &s.validate(page, &json!({"value": [], "@odata.nextLink": 5})),
        "expected string"
    ));
    assert!(has(
        &s.validate(page, &json!({"value": [], "nextLink": "x"})),
        "undeclared property nextLink"
    ));
    let dpage = s.schema("microsoft.graph.contactDeltaResponse");
    assert!(has(
        &s.validate(
            dpage,
            &json!({"value": [{"id": "x", "@removed": {}, "surname": 1}]})
        ),
        "expected string"
    ));
    // Errors: required members, a free-form innerError.
    let err = s.schema("microsoft.graph.ODataErrors.ODataError");
    assert!(s
        .validate(
            err,
            &json!({"error": {"code": "x", "message": "y", "innerError": {"any": 1}}})
        )
        .is_empty());
    assert!(has(
        &s.validate(err, &json!({"error": {"code": "x"}})),
        "required property message missing"
    ));
    assert!(has(
        &s.validate(
            err,
            &json!({"error": {"code": "x", "message": "y", "inner": {}}})
        ),
        "undeclared property inner"
    ));
    // Batch items: string headers, a free-form body; token answers.
    let bi = s.schema("BatchResponseItem");
    assert!(s
        .validate(
            bi,
            &json!({"id": "1", "status": 200, "body": {"anything": [1]}})
        )
        .is_empty());
    assert!(has(
        &s.validate(
            bi,
            &json!({"id": "1", "status": 429, "headers": {"Retry-After": 5}})
        ),
        "expected string"
    ));
    assert!(has(
        &s.validate(bi, &json!({"id": "1"})),
        "required property status missing"
    ));
    let tok = s.schema("TokenResponse");
    assert!(has(
        &s.validate(tok, &json!({"token_type": "Bearer", "expires_in": 1})),
        "access_token missing"
    ));
    let extra = json!({"token_type": "Bearer", "expires_in": 1, "access_token": "a",
        "refresh_token": "r"});
    assert!(has(
        &s.validate(tok, &extra),
        "undeclared property refresh_token"
    ));
    // Templates.
    assert_eq!(
        template_of("/users/x/contactFolders/delta()").as_deref(),
        Some("/users/{user-id}/contactFolders/delta()")
    );
    assert_eq!(
        template_of("http://h/v1.0/users('x')/contactFolders('y')/contacts/delta?$skiptoken=1")
            .as_deref(),
        Some("/users/{user-id}/contactFolders/{contactFolder-id}/contacts/delta()")
    );
    assert_eq!(
        template_of("/users/x/contactFolders/y").as_deref(),
        Some("/users/{user-id}/contactFolders/{contactFolder-id}")
    );
    assert_eq!(template_of("/users/x/events"), None);
}

// ---------------------------------------------------------------------------------------------
// Token endpoint and authentication

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_follow_the_client_credentials_flow() {
    let t = T::new().await;
    assert_eq!(t.sim.token_grants(), 1);
    let base = &t.sim.base_url;
    let ok = t
        .token_request(
            &format!("{base}/{}/oauth2/v2.0/token", GraphSim::TENANT_DOMAIN),
            GraphSim::CLIENT_SECRET,
            GraphSim::SCOPE,
            "client_credentials",
        )
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body["token_type"], "Bearer");
    assert_eq!(ok.body["expires_in"], 3599);
    assert_ne!(
        ok.body["access_token"],
        json!(t.token),
        "tokens are not reused"
    );
    assert_eq!(t.sim.token_grants(), 2);

    let r = t
        .token_request(
            &format!("{base}/common/oauth2/v2.0/token"),
            GraphSim::CLIENT_SECRET,
            GraphSim::SCOPE,
            "client_credentials",
        )
        .await;
    aad(&r, 400, "invalid_request", 50059);
    let r = t
        .token_request(
            &format!("{base}/contoso.example/oauth2/v2.0/token"),
            GraphSim::CLIENT_SECRET,
            GraphSim::SCOPE,
            "client_credentials",
        )
        .await;
    aad(&r, 400, "invalid_request", 90002);
    let r = t
        .token_request(
            &t.sim.token_url(),
            "wrong",
            GraphSim::SCOPE,
            "client_credentials",
        )
        .await;
    aad(&r, 401, "invalid_client", 7000215);
    let r = t
        .token_request(
            &t.sim.token_url(),
            GraphSim::CLIENT_SECRET,
            "https://graph.microsoft.com/Contacts.ReadWrite",
            "client_credentials",
        )
        .await;
    aad(&r, 400, "invalid_scope", 1002012);
    let r = t
        .token_request(
            &t.sim.token_url(),
            GraphSim::CLIENT_SECRET,
            GraphSim::SCOPE,
            "password",
        )
        .await;
    aad(&r, 400, "unsupported_grant_type", 70003);
    let r = t
        .http
        .post(t.sim.token_url())
        .json(&json!({"client_id": GraphSim::CLIENT_ID}))
        .send()
        .await
        .expect("send");
    let r = t.finish("POST", &t.sim.token_url(), r).await;
    aad(&r, 400, "invalid_request", 900144);
    let r = t
        .http
        .post(t.sim.token_url())
        .form(&[
            ("client_id", GraphSim::CLIENT_ID),
            ("scope", GraphSim::SCOPE),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .expect("send");
    let r = t.finish("POST", &t.sim.token_url(), r).await;
    aad(&r, 401, "invalid_client", 7000218);
    assert_eq!(t.sim.token_grants(), 2, "failed grants are not grants");

    let r = t
        .http
        .post(t.sim.token_url())
        .form(&[
            ("client_id", "someone-else"),
            ("client_secret", "x"),
            ("scope", GraphSim::SCOPE),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .expect("send");
    let r = t.finish("POST", &t.sim.token_url(), r).await;
    aad(&r, 400, "unauthorized_client", 700016);
    // A token minted without a request works and is not a grant.
    let direct = t.sim.issue_token();
    let folders = format!("{}/users/{ANA}/contactFolders", t.sim.graph_url());
    assert_eq!(
        t.call_as(Some(&direct), "GET", &folders, None, &[])
            .await
            .status,
        200
    );
    assert_eq!(t.sim.token_grants(), 2);
    // A rotated secret: the old one is refused, tokens already issued keep working.
    t.sim.set_secret("rotated~secret");
    let r = t
        .token_request(
            &t.sim.token_url(),
            GraphSim::CLIENT_SECRET,
            GraphSim::SCOPE,
            "client_credentials",
        )
        .await;
    aad(&r, 401, "invalid_client", 7000215);
    let r = t
        .token_request(
            &t.sim.token_url(),
            "rotated~secret",
            GraphSim::SCOPE,
            "client_credentials",
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        t.get(&format!("/users/{ANA}/contactFolders")).await.status,
        200
    );

    // Graph needs a valid, unexpired bearer token.
    let folders = format!("/users/{ANA}/contactFolders");
    for token in [None, Some(""), Some("not-a-token")] {
        let r = t.call_as(token, "GET", &folders, None, &[]).await;
        assert_eq!(
            (r.status, r.code()),
            (401, "InvalidAuthenticationToken"),
            "{token:?}"
        );
        assert!(r
            .header("www-authenticate")
            .is_some_and(|w| w.starts_with("Bearer")));
    }
    t.sim.set_access_ttl(Duration::from_millis(1500));
    let r = t
        .token_request(
            &t.sim.token_url(),
            "rotated~secret",
            GraphSim::SCOPE,
            "client_credentials",
        )
        .await;
    assert_eq!(r.body["expires_in"], 1, "whole seconds");
    let short = r.body["access_token"].as_str().expect("token").to_owned();
    assert_eq!(
        t.call_as(Some(&short), "GET", &folders, None, &[])
            .await
            .status,
        200
    );
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let r = t.call_as(Some(&short), "GET", &folders, None, &[]).await;
    assert_eq!((r.status, r.code()), (401, "InvalidAuthenticationToken"));
    assert!(r.body["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("expired")));
    // The batch envelope needs the token too.
    let r = t
        .call_as(
            Some(&short),
            "POST",
            "/$batch",
            Some(json!({"requests": [{"id": "1", "method": "GET", "url": "/users/x/contacts"}]})),
            &[],
        )
        .await;
    assert_eq!(r.status, 401);
}

/// An AAD error answer with this status, error and AADSTS code.
fn aad(r: &R, status: u16, error: &str, code: u64) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.body["error"], error, "{}", r.body);
    assert_eq!(r.body["error_codes"], json!([code]), "{}", r.body);
    let d = r.body["error_description"].as_str().expect("description");
    assert!(d.starts_with(&format!("AADSTS{code}: ")), "{d}");
    for k in ["timestamp", "trace_id", "correlation_id"] {
        assert!(r.body[k].is_string(), "{k}: {}", r.body);
    }
}

/// A client assertion signed here (not by crmgate's code) with a fixture key.
fn assertion(key: &str, x5t_of: &str, claims: &Value) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs");
    let hex = std::fs::read_to_string(dir.join(format!("mirror-{x5t_of}.thumbprint"))).expect("tp");
    let hex = hex.trim();
    let sha1: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    let header = json!({"alg": "RS256", "typ": "JWT", "x5t": b64.encode(sha1)});
    let input = format!(
        "{}.{}",
        b64.encode(header.to_string()),
        b64.encode(claims.to_string())
    );
    let pem = std::fs::read_to_string(dir.join(format!("mirror-{key}.key"))).expect("key");
    let der = b64_std_between(&pem, "PRIVATE KEY");
    let kp = ring::signature::RsaKeyPair::from_pkcs8(&der).expect("pkcs8");
    let mut sig = vec![0u8; kp.public().modulus_len()];
    kp.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .expect("sign");
    format!("{input}.{}", b64.encode(sig))
}

/// The DER inside a PEM block.
fn b64_std_between(pem: &str, label: &str) -> Vec<u8> {
    use base64::Engine as _;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body: String = pem
        .split(&begin)
        .nth(1)
        .and_then(|r| r.split(&end).next())
        .expect("pem block")
        .split_whitespace()
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("base64")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_assertions_are_checked_as_documented() {
    let t = T::new().await;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs");
    t.sim.add_certificate(
        &std::fs::read_to_string(dir.join("mirror-app.thumbprint")).expect("tp"),
        std::fs::read(dir.join("mirror-app.pubkey.der")).expect("pubkey"),
    );
    let url = t.sim.token_url();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let mut n = 0;
    let mut claims = |f: &dyn Fn(&mut Value)| {
        n += 1;
        let mut c = json!({"aud": url, "iss": GraphSim::CLIENT_ID, "sub": GraphSim::CLIENT_ID,
            "jti": format!("jti-{n}"), "nbf": now, "iat": now, "exp": now + 600});
        f(&mut c);
        c
    };
    let send = |fields: Vec<(&'static str, String)>| {
        let t = &t;
        async move {
            let mut form = vec![
                ("client_id", GraphSim::CLIENT_ID.to_owned()),
                ("scope", GraphSim::SCOPE.to_owned()),
                ("grant_type", "client_credentials".to_owned()),
            ];
            form.extend(fields);
            let r = t
                .http
                .post(t.sim.token_url())
                .form(&form)
                .send()
                .await
                .expect("send");
            t.finish("POST", &t.sim.token_url(), r).await
        }
    };
    let with = |a: String| {
        vec![
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
            ),
            ("client_assertion", a),
        ]
    };
    let grants = t.sim.token_grants();
    let good = assertion("app", "app", &claims(&|_| {}));
    let r = send(with(good.clone())).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["token_type"], "Bearer");
    let tok = r.body["access_token"].as_str().expect("token").to_owned();
    let folders = format!("{}/users/{ANA}/contactFolders", t.sim.graph_url());
    assert_eq!(
        t.call_as(Some(&tok), "GET", &folders, None, &[])
            .await
            .status,
        200
    );
    assert_eq!(t.sim.token_grants(), grants + 1);
    // The same assertion again: its jti was used.
    aad(
        &send(with(good.clone())).await,
        401,
        "invalid_client",
        50027,
    );
    // Signed by another key under the registered thumbprint; an unregistered certificate.
    let forged = assertion("other", "app", &claims(&|_| {}));
    aad(&send(with(forged)).await, 401, "invalid_client", 700027);
    let unknown = assertion("other", "other", &claims(&|_| {}));
    aad(&send(with(unknown)).await, 401, "invalid_client", 700027);
    // Claims: expired, not yet valid, another audience, another issuer or subject, no jti.
    let expired = claims(&|c| {
        c["nbf"] = json!(now - 2000);
        c["exp"] = json!(now - 1000);
    });
    aad(
        &send(with(assertion("app", "app", &expired))).await,
        401,
        "invalid_client",
        700024,
    );
    let early = claims(&|c| {
        c["nbf"] = json!(now + 1000);
        c["exp"] = json!(now + 1600);
    });
    aad(
        &send(with(assertion("app", "app", &early))).await,
        401,
        "invalid_client",
        700024,
    );
    let aud = claims(&|c| c["aud"] = json!("https://login.microsoftonline.com/x/oauth2/token"));
    aad(
        &send(with(assertion("app", "app", &aud))).await,
        401,
        "invalid_client",
        50027,
    );
    for k in ["iss", "sub"] {
        let c = claims(&|c| c[k] = json!("someone-else"));
        aad(
            &send(with(assertion("app", "app", &c))).await,
            401,
            "invalid_client",
            700021,
        );
    }
    let no_jti = claims(&|c| {
        c.as_object_mut().expect("object").remove("jti");
    });
    aad(
        &send(with(assertion("app", "app", &no_jti))).await,
        401,
        "invalid_client",
        50027,
    );
    // A tampered payload breaks the signature; a token that is not a JWT is malformed.
    let fresh = assertion("app", "app", &claims(&|_| {}));
    let mut parts: Vec<String> = fresh.split('.').map(str::to_owned).collect();
    {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut c: Value =
            serde_json::from_slice(&b64.decode(&parts[1]).expect("b64")).expect("json");
        c["sub"] = json!("tampered");
        parts[1] = b64.encode(c.to_string());
    }
    aad(
        &send(with(parts.join("."))).await,
        401,
        "invalid_client",
        700027,
    );
    aad(
        &send(with("not.a-jwt".into())).await,
        401,
        "invalid_client",
        50027,
    );
    // A secret alongside the assertion; an assertion without its type.
    let mut both = with(assertion("app", "app", &claims(&|_| {})));
    both.push(("client_secret", GraphSim::CLIENT_SECRET.to_owned()));
    aad(&send(both).await, 401, "invalid_client", 7000218);
    let untyped = vec![(
        "client_assertion",
        assertion("app", "app", &claims(&|_| {})),
    )];
    aad(&send(untyped).await, 400, "invalid_request", 900144);
    assert_eq!(
        t.sim.token_grants(),
        grants + 1,
        "only the good assertion was a grant"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_found_by_object_id_or_upn_and_mailbox_states_answer() {
    let t = T::new().await;
    let carl = t.sim.add_mailbox("Carl.Case@Contoso.test");
    assert_eq!(carl.len(), 36, "a GUID: {carl}");
    for user in [
        carl.as_str(),
        &carl.to_uppercase(),
        "carl.case@contoso.test",
        "CARL.CASE%40CONTOSO.TEST",
        "users('carl.case@contoso.test')",
    ] {
        let p = if user.starts_with("users(") {
            format!("/{user}/contactFolders")
        } else {
            format!("/users/{user}/contactFolders")
        };
        let r = t.get(&p).await;
        assert_eq!(r.status, 200, "{user}: {}", r.body);
    }
    let r = t.get("/users/nobody@contoso.test/contacts").await;
    assert_eq!((r.status, r.code()), (404, "ErrorInvalidUser"));
    assert!(r.body["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("nobody@contoso.test")));
    let r = t.get("/me/contacts").await;
    assert_eq!(r.status, 400, "/me needs a signed-in user");
    let r = t.get(&format!("/users/{ANA}/events")).await;
    assert_eq!((r.status, r.code()), (400, "BadRequest"));
    let r = t
        .get(&format!("/users/{ANA}/contactFolders/x/childFolders"))
        .await;
    assert_eq!(r.status, 400);
    let r = t
        .call(
            "PUT",
            &format!("/users/{ANA}/contacts"),
            Some(json!({})),
            &[],
        )
        .await;
    assert_eq!((r.status, r.code()), (405, "ErrorInvalidRequest"));
    let r = t
        .call(
            "GET",
            &format!("{}/beta/users/{ANA}/contacts", t.sim.base_url),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 400);
    // Mailbox states.
    t.sim
        .set_mailbox_state("carl.case@contoso.test", MailboxState::NoMailbox);
    let r = t.get(&format!("/users/{carl}/contacts")).await;
    assert_eq!((r.status, r.code()), (404, "MailboxNotEnabledForRESTAPI"));
    t.sim
        .set_mailbox_state("carl.case@contoso.test", MailboxState::AccessDenied);
    let r = t
        .post(
            &format!("/users/{carl}/contacts"),
            json!({"givenName": "X"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "ErrorAccessDenied"));
    assert!(t
        .sim
        .contacts("carl.case@contoso.test", &t.sim.default_folder_id(&carl))
        .is_empty());
    t.sim
        .set_mailbox_state("carl.case@contoso.test", MailboxState::Ok);
    assert_eq!(t.get(&format!("/users/{carl}/contacts")).await.status, 200);
    // Ids: malformed 400, well-formed but unknown 404.
    let r = t.get(&format!("/users/{ANA}/contacts/not-an-id")).await;
    assert_eq!((r.status, r.code()), (400, "ErrorInvalidIdMalformed"));
    let r = t
        .get(&format!("/users/{ANA}/contactFolders/AAMkAbogus"))
        .await;
    assert_eq!((r.status, r.code()), (400, "ErrorInvalidIdMalformed"));
    let bens = t
        .post(&format!("/users/{BEN}/contacts"), json!({"givenName": "B"}))
        .await;
    let other = bens.body["id"].as_str().expect("id");
    let r = t.get(&format!("/users/{ANA}/contacts/{other}")).await;
    assert_eq!((r.status, r.code()), (404, "ErrorItemNotFound"));
    let r = t
        .get(&format!(
            "/users/{ANA}/contactFolders/{}",
            t.sim.default_folder_id(BEN)
        ))
        .await;
    assert_eq!((r.status, r.code()), (404, "ErrorItemNotFound"));
    // request-id on every answer; client-request-id echoed.
    let r = t
        .call(
            "GET",
            &format!("/users/{ANA}/contacts"),
            None,
            &[("client-request-id", "c0ffee00-0000-4000-8000-000000000001")],
        )
        .await;
    assert!(r.header("request-id").is_some());
    assert_eq!(
        r.header("client-request-id"),
        Some("c0ffee00-0000-4000-8000-000000000001")
    );
}

// ---------------------------------------------------------------------------------------------
// Every route, folders, contacts

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_of_the_spec_is_served_and_answers_in_its_shape() {
    let t = T::new().await;
    let u = format!("/users/{ANA}");
    let f = t
        .post(
            &format!("{u}/contactFolders"),
            json!({"displayName": "CRM"}),
        )
        .await;
    assert_eq!(f.status, 201, "{}", f.body);
    let fid = f.body["id"].as_str().expect("id").to_owned();
    let fp = t.folder_path(ANA, &fid);
    assert_eq!(t.get(&format!("{u}/contactFolders")).await.status, 200);
    assert_eq!(t.get(&fp).await.status, 200);
    assert_eq!(
        t.patch(&fp, json!({"displayName": "CRM 2"})).await.status,
        200
    );
    let c = t
        .post(&format!("{fp}/contacts"), json!({"givenName": "Ana"}))
        .await;
    assert_eq!(c.status, 201);
    let cid = c.body["id"].as_str().expect("id").to_owned();
    assert_eq!(t.get(&format!("{fp}/contacts")).await.status, 200);
    assert_eq!(t.get(&format!("{fp}/contacts/{cid}")).await.status, 200);
    assert_eq!(
        t.patch(&format!("{fp}/contacts/{cid}"), json!({"surname": "A"}))
            .await
            .status,
        200
    );
    assert_eq!(t.get(&format!("{fp}/contacts/delta")).await.status, 200);
    assert_eq!(
        t.get(&format!("{u}/contactFolders/delta()")).await.status,
        200
    );
    assert_eq!(t.delete(&format!("{fp}/contacts/{cid}")).await.status, 204);
    let d = t
        .post(&format!("{u}/contacts"), json!({"givenName": "Dora"}))
        .await;
    assert_eq!(d.status, 201);
    let did = d.body["id"].as_str().expect("id").to_owned();
    assert_eq!(t.get(&format!("{u}/contacts")).await.status, 200);
    assert_eq!(t.get(&format!("{u}/contacts/{did}")).await.status, 200);
    assert_eq!(
        t.patch(&format!("{u}/contacts/{did}"), json!({"jobTitle": "CTO"}))
            .await
            .status,
        200
    );
    assert_eq!(t.delete(&format!("{u}/contacts/{did}")).await.status, 204);
    let r = t.get(&format!("{u}/contacts/delta()")).await;
    assert_eq!(
        r.status, 400,
        "the undocumented default-folder delta is refused"
    );
    let (b, _) = t
        .batch(json!([{"id": "1", "method": "GET", "url": format!("{u}/contacts")}]))
        .await;
    assert_eq!(b.status, 200);
    assert_eq!(t.delete(&fp).await.status, 204);
    // The simulator saw exactly the spec's operations (plus the token grant).
    let (total, by_route) = t.sim.requests();
    let seen: BTreeSet<String> = by_route.keys().cloned().collect();
    assert_eq!(
        seen,
        spec().operations(),
        "routes exercised vs the spec's operations"
    );
    assert_eq!(total, by_route.values().sum::<u64>());
    assert_eq!(by_route["POST /$batch"], 1);
    assert_eq!(
        by_route["GET /users/{user-id}/contacts"], 2,
        "the batch item counts as a request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_folders_are_created_listed_renamed_and_deleted() {
    let t = T::new().await;
    let u = format!("/users/{ANA}");
    let def = t.sim.default_folder_id(ANA);
    let f = t
        .post(
            &format!("{u}/contactFolders"),
            json!({"displayName": "CRM Customers"}),
        )
        .await;
    assert_eq!(f.status, 201);
    assert_eq!(
        keys(&f.body),
        set(&["@odata.context", "id", "displayName", "parentFolderId"])
    );
    assert_eq!(f.body["parentFolderId"], json!(def));
    let fid = f.body["id"].as_str().expect("id").to_owned();
    assert!(
        fid.len() > 60 && fid.starts_with("AAMkA"),
        "an Exchange-like id: {fid}"
    );
    // Siblings may not share a name, whatever its case; the documented parentFolderId is fine.
    let r = t
        .post(
            &format!("{u}/contactFolders"),
            json!({"displayName": "crm customers"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "ErrorFolderExists"));
    let r = t
        .post(
            &format!("{u}/contactFolders"),
            json!({"displayName": "CRM Leads", "parentFolderId": def}),
        )
        .await;
    assert_eq!(r.status, 201);
    let leads = r.body["id"].as_str().expect("id").to_owned();
    for (body, status, code) in [
        (json!({}), 400, "ErrorInvalidRequest"),
        (json!({"displayName": ""}), 400, "ErrorInvalidRequest"),
        (
            json!({"displayName": "X", "colour": "red"}),
            400,
            "RequestBodyRead",
        ),
        (
            json!({"displayName": "X", "id": "AAMkA"}),
            400,
            "ErrorInvalidPropertySet",
        ),
        (
            json!({"displayName": "X", "parentFolderId": leads}),
            400,
            "ErrorInvalidPropertySet",
        ),
        (json!({"displayName": 7}), 400, "RequestBodyRead"),
    ] {
        let r = t.post(&format!("{u}/contactFolders"), body.clone()).await;
        assert_eq!((r.status, r.code()), (status, code), "{body}");
    }
    // Paging: 10 by default, nextLink on every page but the last, $top, maxpagesize, $count.
    for i in 0..10 {
        assert_eq!(
            t.post(
                &format!("{u}/contactFolders"),
                json!({"displayName": format!("F{i:02}")})
            )
            .await
            .status,
            201
        );
    }
    let first = t.get(&format!("{u}/contactFolders")).await;
    assert_eq!(first.values().len(), 10);
    let pages = t.pages(first, &[]).await;
    assert_eq!(pages.len(), 2);
    assert!(pages[1].body.get("@odata.nextLink").is_none());
    let ids: BTreeSet<&str> = pages
        .iter()
        .flat_map(|p| p.values())
        .filter_map(|f| f["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 12);
    let r = t
        .get(&format!(
            "{u}/contactFolders?$top=5&$count=true&$select=displayName"
        ))
        .await;
    assert_eq!(r.values().len(), 5);
    assert_eq!(r.body["@odata.count"], 12);
    assert!(r
        .values()
        .iter()
        .all(|f| keys(f) == set(&["id", "displayName"])));
    let r = t
        .call(
            "GET",
            &format!("{u}/contactFolders"),
            None,
            &[("Prefer", "odata.maxpagesize=4")],
        )
        .await;
    assert_eq!(r.values().len(), 4);
    assert_eq!(r.header("preference-applied"), Some("odata.maxpagesize=4"));
    let r = t.get(&format!("{u}/contactFolders?$select=name")).await;
    assert_eq!((r.status, r.code()), (400, "RequestBroker--ParseUri"));
    let r = t
        .get(&format!("{u}/contactFolders?$orderby=displayName"))
        .await;
    assert_eq!(r.status, 400);
    let r = t
        .get(&format!(
            "{u}/contactFolders?$filter=displayName%20eq%20'F01'"
        ))
        .await;
    assert_eq!((r.status, r.code()), (400, "ErrorInvalidUrlQueryFilter"));
    // One folder: get, $select, rename, If-Match.
    let fp = t.folder_path(ANA, &fid);
    let r = t.get(&fp).await;
    assert_eq!(r.body["displayName"], "CRM Customers");
    let r = t.get(&format!("{fp}?$select=parentFolderId")).await;
    assert_eq!(
        keys(&r.body),
        set(&["@odata.context", "id", "parentFolderId"])
    );
    let r = t.patch(&fp, json!({"displayName": "CRM Leads"})).await;
    assert_eq!((r.status, r.code()), (409, "ErrorFolderExists"));
    let r = t.patch(&fp, json!({"displayName": "crm CUSTOMERS"})).await;
    assert_eq!(r.status, 200, "renaming to itself in another case is fine");
    let r = t
        .call(
            "PATCH",
            &fp,
            Some(json!({"displayName": "X"})),
            &[("If-Match", "W/\"abc\"")],
        )
        .await;
    assert_eq!((r.status, r.code()), (412, "ErrorIrresolvableConflict"));
    let r = t.patch(&fp, json!({"displayName": "Kunden"})).await;
    assert_eq!(r.body["displayName"], "Kunden");
    let r = t.patch(&fp, json!({"parentFolderId": def})).await;
    assert_eq!(r.status, 400, "folders are not moved by PATCH");
    // The default folder is a folder, but not one of the list, and not to be deleted.
    let r = t.get(&t.folder_path(ANA, &def)).await;
    assert_eq!(
        (r.status, r.body["displayName"].as_str()),
        (200, Some("Contacts"))
    );
    assert!(t
        .sim
        .folders(ANA)
        .iter()
        .all(|f| f.id != def && f.parent_id == def));
    let r = t.delete(&t.folder_path(ANA, &def)).await;
    assert_eq!(r.status, 400);
    // Deleting a folder deletes its contacts.
    let c = t
        .post(&format!("{fp}/contacts"), json!({"givenName": "Gone"}))
        .await;
    let cid = c.body["id"].as_str().expect("id").to_owned();
    assert_eq!(t.delete(&fp).await.status, 204);
    assert_eq!(t.get(&fp).await.status, 404);
    assert_eq!(t.delete(&fp).await.status, 404);
    assert!(t.sim.contact(ANA, &cid).is_none());
    assert_eq!(t.sim.folders(ANA).len(), 11);
    // Inspection and Outlook-side changes.
    let mine = t.sim.user_create_folder(ANA, "By hand");
    t.sim.user_rename_folder(ANA, &mine, "By hand, renamed");
    let r = t.get(&t.folder_path(ANA, &mine)).await;
    assert_eq!(r.body["displayName"], "By hand, renamed");
    t.sim.user_delete_folder(ANA, &mine);
    assert_eq!(t.get(&t.folder_path(ANA, &mine)).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_folders_are_listed_and_created_under_their_parent() {
    let t = T::new().await;
    let u = format!("/users/{ANA}");
    let parent = new_folder(&t, ANA, "HQ").await;
    let pp = t.folder_path(ANA, &parent);
    let kids = format!("{pp}/childFolders");
    let r = t
        .post(
            &kids,
            json!({"displayName": "My Contacts",
                "singleValueExtendedProperties": [{"id": EXT, "value": "kid-1"}]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        keys(&r.body),
        set(&["@odata.context", "id", "displayName", "parentFolderId"])
    );
    assert_eq!(r.body["parentFolderId"], json!(parent));
    let kid = r.body["id"].as_str().expect("id").to_owned();
    // Listed under its parent only; `/contactFolders` lists the default folder's children.
    let top = t.get(&format!("{u}/contactFolders")).await;
    let ids: Vec<&str> = top.body["value"]
        .as_array()
        .expect("value")
        .iter()
        .filter_map(|f| f["id"].as_str())
        .collect();
    assert!(ids.contains(&parent.as_str()) && !ids.contains(&kid.as_str()));
    let r = t.get(&kids).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["value"][0]["id"], json!(kid));
    assert_eq!(r.body["value"].as_array().map(Vec::len), Some(1));
    let filter = enc(&format!(
        "singleValueExtendedProperties/Any(ep: ep/id eq '{EXT}' and ep/value eq 'KID-1')"
    ));
    let r = t.get(&format!("{kids}?$filter={filter}")).await;
    assert_eq!(
        r.body["value"].as_array().map(Vec::len),
        Some(1),
        "{}",
        r.body
    );
    assert!(r.body["value"][0]
        .get("singleValueExtendedProperties")
        .is_none());
    let r = t.get(&format!("{kids}?$orderby=displayName")).await;
    assert_eq!(r.status, 400);
    // Names are unique among siblings only; the parent the route names may be sent, no other.
    let r = t.post(&kids, json!({"displayName": "my contacts"})).await;
    assert_eq!((r.status, r.code()), (409, "ErrorFolderExists"));
    let r = t
        .post(
            &format!("{u}/contactFolders"),
            json!({"displayName": "My Contacts"}),
        )
        .await;
    assert_eq!(r.status, 201, "a top-level folder of the same name");
    let def = t.sim.default_folder_id(ANA);
    let r = t
        .post(
            &kids,
            json!({"displayName": "Global", "parentFolderId": def}),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "ErrorInvalidPropertySet"));
    let r = t
        .post(
            &kids,
            json!({"displayName": "Global", "parentFolderId": parent}),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(
        t.get(&kids).await.body["value"].as_array().map(Vec::len),
        Some(2)
    );
    let r = t.get(&format!("{kids}?$top=1")).await;
    assert!(r.body["@odata.nextLink"].is_string(), "{}", r.body);
    // A child folder is a folder like any: read, renamed, filled by id.
    let kp = t.folder_path(ANA, &kid);
    assert_eq!(t.get(&kp).await.body["parentFolderId"], json!(parent));
    let r = t.patch(&kp, json!({"displayName": "Global"})).await;
    assert_eq!((r.status, r.code()), (409, "ErrorFolderExists"));
    assert_eq!(
        t.patch(&kp, json!({"displayName": "Mine"})).await.status,
        200
    );
    let c = t
        .post(&format!("{kp}/contacts"), json!({"givenName": "Kid"}))
        .await;
    assert_eq!(c.status, 201);
    let cid = c.body["id"].as_str().expect("id").to_owned();
    // Deleting the parent takes its child folders and their contacts.
    assert_eq!(t.delete(&pp).await.status, 204);
    assert_eq!(t.get(&kp).await.status, 404);
    assert!(t.sim.contact(ANA, &cid).is_none());
    assert_eq!(t.get(&kids).await.status, 404);
    let r = t.post(&kids, json!({"displayName": "Again"})).await;
    assert_eq!((r.status, r.code()), (404, "ErrorItemNotFound"));
    let r = t
        .get(&format!("{u}/contactFolders/nonsense/childFolders"))
        .await;
    assert_eq!((r.status, r.code()), (400, "ErrorInvalidIdMalformed"));
    assert!(t.sim.folders(ANA).iter().all(|f| f.parent_id == def));
}

/// Every property of `microsoft.graph.contact` (from the spec) but navigation properties.
fn contact_properties() -> BTreeSet<String> {
    let mut o = Obj::default();
    spec().flatten(spec().schema("microsoft.graph.contact"), &mut o);
    o.props
        .iter()
        .filter(|(k, v)| v.get("x-ms-navigationProperty").is_none() && k.as_str() != "@odata.type")
        .map(|(k, _)| k.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_have_graphs_shape_and_its_rules() {
    let t = T::new().await;
    let u = format!("/users/{ANA}");
    let def = t.sim.default_folder_id(ANA);
    let f = t
        .post(
            &format!("{u}/contactFolders"),
            json!({"displayName": "CRM"}),
        )
        .await;
    let fid = f.body["id"].as_str().expect("id").to_owned();
    let fp = t.folder_path(ANA, &fid);
    let body = json!({"givenName": "Ana", "surname": "Alves", "companyName": "Acme",
        "emailAddresses": [{"address": "ana@acme.test", "name": "Ana Alves"}],
        "businessPhones": ["+49 30 1234"], "homeAddress": {"city": "Berlin", "street": "Allee 1"},
        "birthday": "1990-05-01T11:59:00Z", "categories": ["CRM"]});
    let c = t.post(&format!("{fp}/contacts"), body).await;
    assert_eq!(c.status, 201, "{}", c.body);
    // Every property, unset ones null / [] / {} / "" as Graph answers them.
    let mut want = contact_properties();
    want.insert("@odata.etag".into());
    want.insert("@odata.context".into());
    assert_eq!(keys(&c.body), want);
    let v = &c.body;
    assert_eq!(v["displayName"], "Ana Alves", "generated from the names");
    assert_eq!(v["parentFolderId"], json!(fid));
    assert_eq!(
        v["@odata.etag"],
        json!(format!("W/\"{}\"", v["changeKey"].as_str().expect("ck")))
    );
    assert_eq!(v["createdDateTime"], v["lastModifiedDateTime"]);
    for (k, empty) in [
        ("middleName", Value::Null),
        ("jobTitle", Value::Null),
        ("imAddresses", json!([])),
        ("homePhones", json!([])),
        ("otherAddress", json!({})),
        ("fileAs", json!("")),
        ("personalNotes", json!("")),
        ("primaryEmailAddress", Value::Null),
    ] {
        assert_eq!(v[k], empty, "{k}");
    }
    assert_eq!(
        v["homeAddress"],
        json!({"city": "Berlin", "street": "Allee 1"})
    );
    let cid = v["id"].as_str().expect("id").to_owned();
    let cp = format!("{fp}/contacts/{cid}");
    // Found only through its folder.
    assert_eq!(t.get(&cp).await.status, 200);
    assert_eq!(t.get(&format!("{u}/contacts/{cid}")).await.status, 404);
    let d = t
        .post(
            &format!("{u}/contacts"),
            json!({"displayName": "Default Dora"}),
        )
        .await;
    assert_eq!(d.body["parentFolderId"], json!(def));
    let did = d.body["id"].as_str().expect("id").to_owned();
    assert_eq!(t.get(&format!("{u}/contacts/{did}")).await.status, 200);
    assert_eq!(
        t.get(&format!("{}/contacts/{did}", t.folder_path(ANA, &def)))
            .await
            .status,
        200
    );
    assert_eq!(t.get(&format!("{fp}/contacts/{did}")).await.status, 404);
    // $select: the selection, id and @odata.etag.
    let r = t.get(&format!("{cp}?$select=surname,emailAddresses")).await;
    assert_eq!(
        keys(&r.body),
        set(&[
            "@odata.context",
            "@odata.etag",
            "id",
            "surname",
            "emailAddresses"
        ])
    );
    let r = t.get(&format!("{cp}?$select=lastName")).await;
    assert_eq!((r.status, r.code()), (400, "RequestBroker--ParseUri"));
    let r = t.get(&format!("{cp}?$select=DisplayName")).await;
    assert_eq!(r.status, 400, "property names are exact");
    let r = t
        .get(&format!("{cp}?$select=displayName&$select=surname"))
        .await;
    assert_eq!(r.status, 400, "a query option given twice");
    let r = t.get(&format!("{cp}?$top=1")).await;
    assert_eq!(r.status, 400, "$top on a single item");
    // PATCH: 200 with the whole contact, a new changeKey; displayName regenerated when the
    // names change without it, kept when it is sent.
    let etag0 = v["@odata.etag"].as_str().expect("etag").to_owned();
    let r = t.patch(&cp, json!({"surname": "Alves-Berg"})).await;
    assert_eq!(r.status, 200);
    assert_eq!(keys(&r.body), want);
    assert_eq!(r.body["displayName"], "Ana Alves-Berg");
    assert_ne!(r.body["@odata.etag"], json!(etag0));
    assert_eq!(r.body["companyName"], "Acme", "untouched properties stay");
    let r = t
        .patch(&cp, json!({"surname": "Berg", "displayName": "Dr. Ana"}))
        .await;
    assert_eq!(r.body["displayName"], "Dr. Ana");
    let etag1 = r.body["@odata.etag"].as_str().expect("etag").to_owned();
    // If-Match.
    let r = t
        .call(
            "PATCH",
            &cp,
            Some(json!({"jobTitle": "CEO"})),
            &[("If-Match", &etag0)],
        )
        .await;
    assert_eq!((r.status, r.code()), (412, "ErrorIrresolvableConflict"));
    let r = t
        .call(
            "PATCH",
            &cp,
            Some(json!({"jobTitle": "CEO"})),
            &[("If-Match", &etag1)],
        )
        .await;
    assert_eq!(r.status, 200);
    let etag2 = r.body["@odata.etag"].as_str().expect("etag").to_owned();
    let bare = etag2.trim_start_matches("W/").trim_matches('"').to_owned();
    let r = t
        .call(
            "PATCH",
            &cp,
            Some(json!({"jobTitle": "CFO"})),
            &[("If-Match", &bare)],
        )
        .await;
    assert_eq!(r.status, 412, "If-Match is the etag exactly");
    let r = t
        .call(
            "PATCH",
            &cp,
            Some(json!({"jobTitle": "CFO"})),
            &[("If-Match", "*")],
        )
        .await;
    assert_eq!(r.status, 200);
    let r = t.call("DELETE", &cp, None, &[("If-Match", &etag2)]).await;
    assert_eq!(r.status, 412);
    // What writes accept.
    for (body, code) in [
        (json!({"id": "x"}), "ErrorInvalidPropertySet"),
        (json!({"changeKey": "x"}), "ErrorInvalidPropertySet"),
        (
            json!({"createdDateTime": "2026-01-01T00:00:00Z"}),
            "ErrorInvalidPropertySet",
        ),
        (
            json!({"lastModifiedDateTime": "2026-01-01T00:00:00Z"}),
            "ErrorInvalidPropertySet",
        ),
        (json!({"parentFolderId": def}), "ErrorInvalidPropertySet"),
        (json!({"nickname": "A"}), "RequestBodyRead"),
        (json!({"email": "a@b.test"}), "RequestBodyRead"),
        (json!({"givenName": 5}), "RequestBodyRead"),
        (json!({"businessPhones": "1"}), "RequestBodyRead"),
        (json!({"businessPhones": null}), "RequestBodyRead"),
        (json!({"birthday": "1 May 1990"}), "RequestBodyRead"),
        (
            json!({"emailAddresses": [{"mail": "a@b.test"}]}),
            "RequestBodyRead",
        ),
        (json!({"homeAddress": {"town": "x"}}), "RequestBodyRead"),
        (
            json!({"businessPhones": ["1", "2", "3"]}),
            "ErrorInvalidRequest",
        ),
        (
            json!({"emailAddresses": [{"address": "1@x"}, {"address": "2@x"},
                {"address": "3@x"}, {"address": "4@x"}]}),
            "ErrorInvalidRequest",
        ),
        (json!({"photo": {}}), "ErrorInvalidRequest"),
        (
            json!({"@odata.type": "#microsoft.graph.message"}),
            "RequestBodyRead",
        ),
    ] {
        let r = t.patch(&cp, body.clone()).await;
        assert_eq!((r.status, r.code()), (400, code), "{body}: {}", r.body);
        let r = t.post(&format!("{fp}/contacts"), body.clone()).await;
        assert_eq!(r.status, 400, "POST {body}");
    }
    let r = t.patch(&cp, json!({"nickname": "A"})).await;
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("'nickname'")),
        "names the property"
    );
    let clear = json!({"@odata.type": "#microsoft.graph.contact", "homeAddress": null,
        "emailAddresses": []});
    let r = t.patch(&cp, clear).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        (
            r.body["homeAddress"].clone(),
            r.body["emailAddresses"].clone()
        ),
        (json!({}), json!([]))
    );
    let r = t
        .http
        .patch(t.url(&cp))
        .bearer_auth(&t.token)
        .body("{\"jobTitle\": \"x\"}")
        .send()
        .await
        .expect("send");
    let r = t.finish("PATCH", &t.url(&cp), r).await;
    assert_eq!((r.status, r.code()), (400, "BadRequest"), "no Content-Type");
    let r = t
        .http
        .post(t.url(&format!("{fp}/contacts")))
        .bearer_auth(&t.token)
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .expect("send");
    let r = t.finish("POST", &t.url(&format!("{fp}/contacts")), r).await;
    assert_eq!(r.status, 400, "not JSON");
    let r = t.post(&format!("{fp}/contacts"), json!([1])).await;
    assert_eq!(r.status, 400, "not an object");
    // Lists: 10 by default, $top up to 1000, maxpagesize, $skip links, $count.
    for i in 0..24 {
        let r = t
            .post(
                &format!("{fp}/contacts"),
                json!({"givenName": format!("P{i:02}"), "surname": "Pager"}),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    let first = t.get(&format!("{fp}/contacts")).await;
    assert_eq!(first.values().len(), 10);
    assert_eq!(keys(&first.values()[0]), {
        let mut w = want.clone();
        w.remove("@odata.context");
        w
    });
    let pages = t.pages(first, &[]).await;
    assert_eq!(
        pages.iter().map(|p| p.values().len()).collect::<Vec<_>>(),
        vec![10, 10, 5]
    );
    let ids: BTreeSet<&str> = pages
        .iter()
        .flat_map(|p| p.values())
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 25);
    let r = t
        .get(&format!(
            "{fp}/contacts?$top=1000&$count=true&$select=givenName"
        ))
        .await;
    assert_eq!(
        (r.values().len(), r.body["@odata.count"].as_u64()),
        (25, Some(25))
    );
    assert!(r.body.get("@odata.nextLink").is_none());
    let r = t.get(&format!("{fp}/contacts?$top=1001")).await;
    assert_eq!((r.status, r.code()), (400, "ErrorInvalidUrlQuery"));
    let r = t.get(&format!("{fp}/contacts?$top=0")).await;
    assert_eq!(r.status, 400);
    let r = t.get(&format!("{fp}/contacts?$top=ten")).await;
    assert_eq!(r.status, 400);
    let pref = [("Prefer", "odata.maxpagesize=7")];
    let first = t
        .call(
            "GET",
            &format!("{fp}/contacts?$select=surname"),
            None,
            &pref,
        )
        .await;
    assert_eq!(
        first.header("preference-applied"),
        Some("odata.maxpagesize=7")
    );
    let pages = t.pages(first, &[]).await;
    assert_eq!(
        pages.iter().map(|p| p.values().len()).collect::<Vec<_>>(),
        vec![7, 7, 7, 4]
    );
    assert!(
        pages
            .iter()
            .flat_map(|p| p.values())
            .all(|c| keys(c) == set(&["@odata.etag", "id", "surname"])),
        "the link keeps the $select"
    );
    for q in [
        "$orderby=surname",
        "$search=%22ana%22",
        "$filter=surname%20eq%20'Pager'",
        "$expand=photo",
        "$format=json",
    ] {
        let r = t.get(&format!("{fp}/contacts?{q}")).await;
        assert_eq!(r.status, 400, "{q}");
    }
    let r = t.get(&format!("{fp}/contacts?custom=1&$top=1")).await;
    assert_eq!(r.status, 200, "custom (non-$) options are ignored");
    // DELETE.
    assert_eq!(t.delete(&cp).await.status, 204);
    assert_eq!(t.get(&cp).await.status, 404);
    assert_eq!(t.delete(&cp).await.status, 404);
    // What the mailbox holds, and what was written.
    let held = t.sim.contacts(ANA, &fid);
    assert_eq!(held.len(), 24);
    assert!(held
        .iter()
        .all(|c| c["singleValueExtendedProperties"] == json!([])));
    let writes = t.sim.writes();
    assert!(writes
        .iter()
        .any(|(w, b)| w == &format!("PATCH {cp}") && b["jobTitle"] == "CEO"));
    assert!(writes
        .iter()
        .any(|(w, b)| w == &format!("DELETE {cp}") && b.is_null()));
    assert!(writes
        .iter()
        .any(|(w, b)| w == &format!("POST {fp}/contacts") && b["givenName"] == "P23"));
    // Outlook-side changes.
    let x = t.sim.user_create(ANA, &fid, json!({"givenName": "Xena"}));
    t.sim
        .user_update(ANA, &x, json!({"mobilePhone": "+49 170 1"}));
    let r = t.get(&format!("{fp}/contacts/{x}")).await;
    assert_eq!(
        (
            r.body["displayName"].as_str(),
            r.body["mobilePhone"].as_str()
        ),
        (Some("Xena"), Some("+49 170 1"))
    );
    let moved = t.sim.user_move(ANA, &x, &def);
    assert_ne!(moved, x, "a move gives a new id");
    assert_eq!(t.get(&format!("{fp}/contacts/{x}")).await.status, 404);
    assert_eq!(
        t.get(&format!("{u}/contacts/{moved}")).await.body["mobilePhone"],
        "+49 170 1"
    );
    t.sim.user_delete(ANA, &moved);
    assert!(t.sim.contact(ANA, &moved).is_none());
}

// ---------------------------------------------------------------------------------------------
// Extended properties

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_properties_are_written_expanded_and_filtered_as_documented() {
    let t = T::new().await;
    let u = format!("/users/{ANA}");
    let f = t
        .post(
            &format!("{u}/contactFolders"),
            json!({"displayName": "CRM",
        "singleValueExtendedProperties": [{"id": EXT, "value": "folder-1"}]}),
        )
        .await;
    assert_eq!(f.status, 201);
    assert!(
        f.body.get("singleValueExtendedProperties").is_none(),
        "never returned unasked"
    );
    let fid = f.body["id"].as_str().expect("id").to_owned();
    let fp = t.folder_path(ANA, &fid);
    let mut ids = Vec::new();
    for (i, ext) in ["ABC-123", "abd-200", "zzz"].iter().enumerate() {
        let c = t
            .post(
                &format!("{fp}/contacts"),
                json!({"givenName": format!("C{i}"),
            "singleValueExtendedProperties": [{"id": EXT, "value": ext},
                {"id": EXT_INT, "value": (i * 10).to_string()}]}),
            )
            .await;
        assert_eq!(c.status, 201, "{}", c.body);
        assert!(c.body.get("singleValueExtendedProperties").is_none());
        ids.push(c.body["id"].as_str().expect("id").to_owned());
    }
    let plain = t
        .post(&format!("{fp}/contacts"), json!({"givenName": "Plain"}))
        .await;
    let plain = plain.body["id"].as_str().expect("id").to_owned();
    // $expand: only the property asked for, only when the item has it.
    let expand = format!(
        "$expand=singleValueExtendedProperties($filter=id%20eq%20'{}')",
        enc(EXT)
    );
    let r = t.get(&format!("{fp}/contacts/{}?{expand}", ids[0])).await;
    assert_eq!(
        r.body["singleValueExtendedProperties"],
        json!([{"id": EXT, "value": "ABC-123"}])
    );
    let r = t.get(&format!("{fp}/contacts/{}", ids[0])).await;
    assert!(r.body.get("singleValueExtendedProperties").is_none());
    let r = t.get(&format!("{fp}/contacts/{plain}?{expand}")).await;
    assert!(
        r.body.get("singleValueExtendedProperties").is_none(),
        "absent, not empty: {}",
        r.body
    );
    let r = t
        .get(&format!(
            "{fp}/contacts/{}?$select=givenName&{expand}",
            ids[1]
        ))
        .await;
    assert_eq!(
        keys(&r.body),
        set(&[
            "@odata.context",
            "@odata.etag",
            "id",
            "givenName",
            "singleValueExtendedProperties"
        ])
    );
    let r = t.get(&format!("{fp}/contacts?{expand}")).await;
    let with: Vec<&Value> = r
        .values()
        .iter()
        .filter(|c| c.get("singleValueExtendedProperties").is_some())
        .collect();
    assert_eq!(with.len(), 3);
    let r = t.get(&format!("{fp}?{expand}")).await;
    assert_eq!(
        r.body["singleValueExtendedProperties"],
        json!([{"id": EXT, "value": "folder-1"}])
    );
    for bad in [
        "$expand=singleValueExtendedProperties",
        "$expand=multiValueExtendedProperties",
        "$expand=singleValueExtendedProperties($filter=id%20eq%20'nonsense')",
    ] {
        let r = t.get(&format!("{fp}/contacts/{}?{bad}", ids[0])).await;
        assert_eq!(r.status, 400, "{bad}");
    }
    // PATCH with an existing id replaces its value (GUID and type without regard to case).
    let upper = EXT
        .replace("66f5a359", "66F5A359")
        .replace("String", "string");
    let r = t
        .patch(
            &format!("{fp}/contacts/{}", ids[2]),
            json!({"singleValueExtendedProperties": [{"id": upper, "value": "ZZZ-2"}]}),
        )
        .await;
    assert_eq!(r.status, 200);
    let held = t.sim.contact(ANA, &ids[2]).expect("contact");
    assert_eq!(
        held["singleValueExtendedProperties"],
        json!([{"id": EXT, "value": "ZZZ-2"}, {"id": EXT_INT, "value": "20"}])
    );
    // $filter: the value without regard to case, the Name exactly; Any/any; '+' is a space.
    let filt = |pred: &str| {
        format!(
            "{fp}/contacts?$filter={}",
            enc(&format!(
                "singleValueExtendedProperties/Any(ep: ep/id eq '{EXT}'{pred})"
            ))
        )
    };
    let found = |r: &R| -> BTreeSet<String> {
        r.values()
            .iter()
            .filter_map(|c| c["id"].as_str())
            .map(str::to_owned)
            .collect()
    };
    let r = t.get(&filt(" and ep/value eq 'abc-123'")).await;
    assert_eq!(found(&r), BTreeSet::from([ids[0].clone()]));
    assert!(
        r.values()
            .iter()
            .all(|c| c.get("singleValueExtendedProperties").is_none()),
        "the filter does not return the property"
    );
    let r = t.get(&filt("")).await;
    assert_eq!(found(&r).len(), 3, "id only: the items that have it");
    let r = t.get(&filt(" and ep/value ne 'abc-123'")).await;
    assert_eq!(found(&r), BTreeSet::from([ids[1].clone(), ids[2].clone()]));
    let r = t.get(&filt(" and ep/value ge 'ABD'")).await;
    assert_eq!(found(&r), BTreeSet::from([ids[1].clone(), ids[2].clone()]));
    let r = t.get(&filt(" and ep/value gt 'abd-200'")).await;
    assert_eq!(found(&r), BTreeSet::from([ids[2].clone()]));
    let r = t.get(&filt(" and ep/value lt 'abd'")).await;
    assert_eq!(found(&r), BTreeSet::from([ids[0].clone()]));
    let r = t.get(&filt(" and ep/value le 'ABD-200'")).await;
    assert_eq!(found(&r).len(), 2);
    let lower_name = EXT.replace("ExternalId", "externalid");
    let r = t
        .get(&format!(
            "{fp}/contacts?$filter={}",
            enc(&format!(
                "singleValueExtendedProperties/Any(ep: ep/id eq '{lower_name}')"
            ))
        ))
        .await;
    assert_eq!(
        (r.status, r.values().len()),
        (200, 0),
        "the Name part is case-sensitive"
    );
    let plus = format!(
        "{fp}/contacts?$filter=singleValueExtendedProperties/any(x:+x/Id+eq+'{}'+and+\
         x/Value+eq+'ABC-123')",
        EXT.replace(' ', "+")
    );
    let r = t.get(&plus).await;
    assert_eq!(found(&r), BTreeSet::from([ids[0].clone()]));
    let r = t
        .get(&format!(
            "{}&$select=givenName&$top=1&$count=true",
            filt("")
        ))
        .await;
    assert_eq!(
        (r.values().len(), r.body["@odata.count"].as_u64()),
        (1, Some(3))
    );
    let pages = t.pages(r, &[]).await;
    assert_eq!(pages.len(), 3, "the nextLink keeps the filter");
    // Folder lists filter too.
    let pred = format!(
        "singleValueExtendedProperties/any(ep: ep/id eq '{EXT}' and ep/value eq 'FOLDER-1')"
    );
    let r = t
        .get(&format!("{u}/contactFolders?$filter={}", enc(&pred)))
        .await;
    assert_eq!(found(&r), BTreeSet::from([fid.clone()]));
    // What is refused.
    for pred in [
        format!("{SVEP}/Any(ep: ep/id eq '{EXT}' and contains(ep/value, 'abc'))"),
        format!("{SVEP}/Any(ep: ep/id eq '{EXT}' and startswith(ep/value, 'abc'))"),
        format!("singleValueExtendedProperties/Any(ep: ep/id eq '{EXT_INT}' and ep/value eq '10')"),
        format!("{SVEP}/Any(ep: ep/id eq '{EXT_INT}' and cast(ep/value, Edm.Int32) eq 10)"),
        format!("singleValueExtendedProperties/Any(ep: ep/id ne '{EXT}')"),
        format!("singleValueExtendedProperties/Any(ep: ep/id eq '{EXT}') and givenName eq 'C0'"),
        "givenName eq 'C0'".to_owned(),
    ] {
        let r = t
            .get(&format!("{fp}/contacts?$filter={}", enc(&pred)))
            .await;
        assert_eq!(
            (r.status, r.code()),
            (400, "ErrorInvalidUrlQueryFilter"),
            "{pred}"
        );
    }
    for (ext, code) in [
        (
            json!([{"id": "String 0x3001", "value": "x"}]),
            "ErrorInvalidExtendedProperty",
        ),
        (
            json!([{"id": EXT_INT.replace("0x8001", "0x0001"), "value": "x"}]),
            "ErrorInvalidExtendedProperty",
        ),
        (
            json!([{"id": "Text {66f5a359-4659-4830-9070-00047ec6ac6e} Name X", "value": "x"}]),
            "ErrorInvalidExtendedProperty",
        ),
        (
            json!([{"id": EXT_INT, "value": "ten"}]),
            "ErrorInvalidExtendedPropertyValue",
        ),
        (
            json!([{"id": EXT, "value": 5}]),
            "ErrorInvalidExtendedPropertyValue",
        ),
        (
            json!([{"id": EXT, "value": "x", "type": "String"}]),
            "RequestBodyRead",
        ),
        (json!({"id": EXT, "value": "x"}), "RequestBodyRead"),
    ] {
        let r = t
            .patch(
                &format!("{fp}/contacts/{}", ids[0]),
                json!({"singleValueExtendedProperties": ext.clone()}),
            )
            .await;
        assert_eq!((r.status, r.code()), (400, code), "{ext}");
    }
    // Folder PATCH with extended properties.
    let r = t
        .patch(
            &fp,
            json!({"singleValueExtendedProperties": [{"id": EXT, "value": "folder-2"}]}),
        )
        .await;
    assert_eq!(r.status, 200);
    let held = t.sim.folders(ANA);
    assert_eq!(
        held[0].ext,
        BTreeMap::from([(EXT.to_owned(), "folder-2".to_owned())])
    );
}

// ---------------------------------------------------------------------------------------------
// Delta

/// Follows a delta round from `url` to its deltaLink: (items of all pages, pages, deltaLink).
async fn delta_round(t: &T, url: &str, headers: &[(&str, &str)]) -> (Vec<Value>, Vec<R>, String) {
    let first = t.call("GET", url, None, headers).await;
    assert_eq!(first.status, 200, "{url}: {}", first.body);
    let pages = t.pages(first, headers).await;
    for p in &pages {
        let (next, delta) = (
            p.body.get("@odata.nextLink"),
            p.body.get("@odata.deltaLink"),
        );
        assert!(
            next.is_some() != delta.is_some(),
            "nextLink xor deltaLink: {}",
            p.body
        );
    }
    let link = pages
        .last()
        .and_then(|p| p.body["@odata.deltaLink"].as_str())
        .expect("deltaLink")
        .to_owned();
    assert!(
        link.starts_with(&t.sim.base_url) && link.contains("$deltatoken="),
        "{link}"
    );
    let items = pages.iter().flat_map(|p| p.values().clone()).collect();
    (items, pages, link)
}

async fn new_folder(t: &T, upn: &str, name: &str) -> String {
    let r = t
        .post(
            &format!("/users/{upn}/contactFolders"),
            json!({ "displayName": name }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["id"].as_str().expect("id").to_owned()
}

fn by_id(items: &[Value]) -> BTreeMap<String, Value> {
    let mut m = BTreeMap::new();
    for it in items {
        let id = it["id"].as_str().expect("id").to_owned();
        assert!(
            m.insert(id, it.clone()).is_none(),
            "no replays expected: {it}"
        );
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_delta_reports_changes_as_documented() {
    let t = T::new().await;
    let (f, g) = (
        new_folder(&t, ANA, "F").await,
        new_folder(&t, ANA, "G").await,
    );
    let (fp, gp) = (t.folder_path(ANA, &f), t.folder_path(ANA, &g));
    let mut c = Vec::new();
    for i in 0..5 {
        let r = t
            .post(
                &format!("{fp}/contacts"),
                json!({"givenName": format!("C{i}"), "surname": "S", "jobTitle": "Dev"}),
            )
            .await;
        c.push(r.body["id"].as_str().expect("id").to_owned());
    }
    // The first round: everything, in pages of maxpagesize, $select encoded in the links.
    let pref = [("Prefer", "odata.maxpagesize=2")];
    let (items, pages, link1) = delta_round(
        &t,
        &format!("{fp}/contacts/delta?$select=displayName,surname"),
        &pref,
    )
    .await;
    assert_eq!(
        pages.iter().map(|p| p.values().len()).collect::<Vec<_>>(),
        vec![2, 2, 1]
    );
    assert_eq!(
        pages[0].header("preference-applied"),
        Some("odata.maxpagesize=2")
    );
    let first = by_id(&items);
    assert_eq!(
        first.keys().cloned().collect::<BTreeSet<_>>(),
        c.iter().cloned().collect()
    );
    assert!(items
        .iter()
        .all(|i| keys(i) == set(&["@odata.etag", "id", "displayName", "surname"])));
    let next = pages[0].body["@odata.nextLink"]
        .as_str()
        .expect("next")
        .to_owned();
    let r = t.get(&format!("{next}&$select=givenName")).await;
    assert_eq!(
        (r.status, r.code()),
        (400, "ErrorInvalidUrlQuery"),
        "options only on the first call"
    );
    for q in [
        "$expand=singleValueExtendedProperties($filter=id%20eq%20'x')",
        "$filter=surname%20eq%20'S'",
        "$top=2",
        "$orderby=surname",
        "$count=true",
        "changeType=created",
    ] {
        let r = t.get(&format!("{fp}/contacts/delta?{q}")).await;
        assert_eq!((r.status, r.code()), (400, "ErrorInvalidUrlQuery"), "{q}");
    }
    let r = t
        .get(&format!("{fp}/contacts/delta?$select=nickname"))
        .await;
    assert_eq!(r.status, 400);
    // Changes through the API and in Outlook.
    assert_eq!(
        t.patch(
            &format!("{fp}/contacts/{}", c[0]),
            json!({"jobTitle": "CTO"})
        )
        .await
        .status,
        200
    );
    t.sim.user_update(ANA, &c[1], json!({"surname": "T"}));
    t.sim.user_delete(ANA, &c[2]);
    let moved = t.sim.user_move(ANA, &c[3], &g);
    let fresh = t
        .sim
        .user_create(ANA, &f, json!({"givenName": "New", "surname": "N"}));
    let (items, _, link2) = delta_round(&t, &link1, &[]).await;
    let got = by_id(&items);
    let expect: BTreeSet<String> = [&c[0], &c[1], &c[2], &c[3], &fresh]
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(
        got.keys().cloned().collect::<BTreeSet<_>>(),
        expect,
        "unchanged C4 is not reported"
    );
    assert_eq!(
        keys(&got[&c[0]]),
        set(&["@odata.etag", "id"]),
        "jobTitle changed, but it is not selected"
    );
    assert_eq!(
        keys(&got[&c[1]]),
        set(&["@odata.etag", "id", "displayName", "surname"]),
        "only what changed"
    );
    assert_eq!(
        (
            got[&c[1]]["surname"].as_str(),
            got[&c[1]]["displayName"].as_str()
        ),
        (Some("T"), Some("C1 T"))
    );
    let etag1 = t.sim.contact(ANA, &c[1]).expect("c1")["@odata.etag"].clone();
    assert_eq!(got[&c[1]]["@odata.etag"], etag1);
    for gone in [&c[2], &c[3]] {
        assert_eq!(
            got[gone],
            json!({"id": gone, "@removed": {"reason": "deleted"}})
        );
    }
    assert_eq!(got[&fresh]["displayName"], "New N");
    assert_eq!(
        keys(&got[&fresh]),
        set(&["@odata.etag", "id", "displayName", "surname"])
    );
    // Nothing changed since: an empty round. An old deltaLink still answers its changes.
    let (items, _, _) = delta_round(&t, &link2, &[]).await;
    assert!(items.is_empty(), "{items:?}");
    let (items, _, _) = delta_round(&t, &link1, &[]).await;
    assert_eq!(items.len(), 5);
    // Without $select a created item is whole; the moved contact shows up in G in full.
    let (items, _, link_g) =
        delta_round(&t, &format!("{gp}/contacts/microsoft.graph.delta()"), &[]).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], json!(moved));
    assert_eq!(keys(&items[0]), {
        let mut k = contact_properties();
        k.insert("@odata.etag".into());
        k
    });
    // Tokens are bound to their mailbox and folder.
    let ben_f = t
        .post(
            &format!("/users/{BEN}/contactFolders"),
            json!({"displayName": "F"}),
        )
        .await;
    let ben_f = ben_f.body["id"].as_str().expect("id").to_owned();
    let (_, _, ben_link) = delta_round(
        &t,
        &format!("{}/contacts/delta", t.folder_path(BEN, &ben_f)),
        &[],
    )
    .await;
    let ben_token = ben_link.split("$deltatoken=").nth(1).expect("token");
    let f_token = link2.split("$deltatoken=").nth(1).expect("token");
    for (url, what) in [
        (
            format!("{fp}/contacts/delta?$deltatoken={ben_token}"),
            "another mailbox's token",
        ),
        (
            format!("{gp}/contacts/delta?$deltatoken={f_token}"),
            "another folder's token",
        ),
        (
            format!("{fp}/contacts/delta?$skiptoken={f_token}"),
            "a delta token as skip token",
        ),
        (
            format!("{fp}/contacts/delta?$deltatoken=made-up"),
            "a made-up token",
        ),
    ] {
        let r = t.get(&url).await;
        assert_eq!(
            (r.status, r.code()),
            (400, "ErrorInvalidSyncStateData"),
            "{what}"
        );
    }
    // Evicted tokens: 410 with the initial query (empty $deltatoken) in Location.
    t.sim.expire_delta_tokens(ANA);
    let r = t.get(&link2).await;
    assert_eq!((r.status, r.code()), (410, "resyncRequired"));
    let loc = r.header("location").expect("Location").to_owned();
    assert!(
        loc.ends_with("$deltatoken=") && loc.contains("$select=displayName,surname"),
        "{loc}"
    );
    let (items, _, _) = delta_round(&t, &loc, &[]).await;
    assert_eq!(items.len(), 4, "a full round again");
    assert!(items
        .iter()
        .all(|i| keys(i) == set(&["@odata.etag", "id", "displayName", "surname"])));
    assert_eq!(t.get(&link_g).await.status, 410);
    let (_, _, ben_again) = delta_round(&t, &ben_link, &[]).await;
    assert!(!ben_again.is_empty(), "other mailboxes keep their tokens");
    // Old states are evicted (16 kept per folder): the oldest then answers like an expired
    // one, the newest still works.
    let mut link = ben_again.clone();
    for _ in 0..17 {
        link = delta_round(&t, &link, &[]).await.2;
    }
    let r = t.get(&ben_again).await;
    assert_eq!((r.status, r.code()), (410, "resyncRequired"), "evicted");
    assert!(r
        .header("location")
        .is_some_and(|l| l.ends_with("$deltatoken=")));
    assert_eq!(t.get(&link).await.status, 200);
    // Delta on a deleted folder.
    assert_eq!(t.delete(&fp).await.status, 204);
    let r = t.get(&format!("{fp}/contacts/delta")).await;
    assert_eq!((r.status, r.code()), (404, "ErrorItemNotFound"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_replays_and_folder_delta() {
    let t = T::new().await;
    let u = format!("/users/{ANA}");
    let g = t
        .post(&format!("{u}/contactFolders"), json!({"displayName": "G"}))
        .await;
    let g = g.body["id"].as_str().expect("id").to_owned();
    let gp = t.folder_path(ANA, &g);
    let mut c = Vec::new();
    for i in 0..3 {
        c.push(
            t.sim
                .user_create(ANA, &g, json!({"givenName": format!("R{i}")})),
        );
    }
    t.sim.set_delta_replays(true);
    let (items, pages, link) = delta_round(&t, &format!("{gp}/contacts/delta"), &[]).await;
    assert!(items.len() > 3, "replays within the round: {}", items.len());
    assert!(
        pages.len() >= 2 && pages.last().is_some_and(|p| p.values().is_empty()),
        "a round ends with an empty page"
    );
    let ids: BTreeSet<&str> = items.iter().filter_map(|i| i["id"].as_str()).collect();
    assert_eq!(ids.len(), 3);
    t.sim.user_update(ANA, &c[0], json!({"jobTitle": "X"}));
    let (items, _, _) = delta_round(&t, &link, &[]).await;
    let twice = items
        .iter()
        .filter_map(|i| i["id"].as_str())
        .any(|id| items.iter().filter(|x| x["id"] == json!(id)).count() >= 2);
    assert!(twice, "an item twice in the round: {items:?}");
    assert!(
        items.iter().any(|i| i["id"] == json!(c[1])),
        "last round's items replayed"
    );
    let update = items
        .iter()
        .find(|i| i["id"] == json!(c[0]) && i.get("jobTitle").is_some())
        .expect("the update");
    assert_eq!(update["jobTitle"], "X");
    t.sim.set_delta_replays(false);

    // Folder delta: the contact folders of the mailbox.
    let (items, _, link) = delta_round(&t, &format!("{u}/contactFolders/delta"), &[]).await;
    let got = by_id(&items);
    assert_eq!(got.len(), 1);
    assert_eq!(
        keys(&got[&g]),
        set(&["id", "displayName", "parentFolderId"])
    );
    t.sim.user_rename_folder(ANA, &g, "G2");
    let h = t.sim.user_create_folder(ANA, "H");
    let (items, _, link2) = delta_round(&t, &link, &[]).await;
    let got = by_id(&items);
    assert_eq!(got[&g], json!({"id": g, "displayName": "G2"}));
    assert_eq!(got[&h]["displayName"], "H");
    t.sim.user_delete_folder(ANA, &g);
    let (items, _, _) = delta_round(&t, &link2, &[]).await;
    assert_eq!(
        items,
        vec![json!({"id": g, "@removed": {"reason": "deleted"}})]
    );
    let (items, _, _) = delta_round(
        &t,
        &format!("{u}/contactFolders/delta()?$select=displayName"),
        &[],
    )
    .await;
    assert_eq!(items, vec![json!({"id": h, "displayName": "H"})]);
    let r = t
        .get(&format!(
            "{u}/contactFolders/delta?$filter=displayName%20eq%20'H'"
        ))
        .await;
    assert_eq!((r.status, r.code()), (400, "ErrorInvalidUrlQuery"));
    let r = t
        .call(
            "GET",
            &format!("{u}/contactFolders/delta"),
            None,
            &[("Prefer", "odata.maxpagesize=5000")],
        )
        .await;
    assert_eq!(
        r.header("preference-applied"),
        Some("odata.maxpagesize=200"),
        "capped at 200"
    );
}

// ---------------------------------------------------------------------------------------------
// $batch

fn status_of(items: &BTreeMap<String, Value>, id: &str) -> u64 {
    items[id]["status"].as_u64().expect("status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_follow_json_batching_and_count_per_item() {
    let t = T::new().await;
    let u = format!("/users/{ANA}");
    let f = new_folder(&t, ANA, "B").await;
    let fp = t.folder_path(ANA, &f);
    let ct = json!({"Content-Type": "application/json"});
    t.sim.reset_counters();
    // A malformed batch fails as a whole.
    let many: Vec<Value> = (0..21)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": format!("{u}/contacts")}))
        .collect();
    let get = |id: &str| json!({"id": id, "method": "GET", "url": "/users/x/contacts"});
    for (reqs, what) in [
        (json!(many), "more than 20"),
        (json!([]), "none"),
        (json!([get("a"), get("A")]), "ids differing in case only"),
        (json!([{"id": "a", "method": "GET"}]), "no url"),
        (json!([{"id": "a", "url": "/x"}]), "no method"),
        (json!([{"method": "GET", "url": "/x"}]), "no id"),
        (
            json!([{"id": "a", "method": "FETCH", "url": "/x"}]),
            "unknown method",
        ),
        (
            json!([{"id": "a", "method": "get", "url": "/x"}]),
            "a method in lower case",
        ),
        (
            json!([{"id": "a", "method": "GET", "url": "/x", "dependsOn": ["b"]}]),
            "unknown dependency",
        ),
        (
            json!([{"id": "a", "method": "GET", "url": "/x", "dependsOn": ["b"]},
                {"id": "b", "method": "GET", "url": "/x", "dependsOn": ["a"]}]),
            "a cycle",
        ),
        (
            json!([{"id": "a", "method": "GET", "url": "/x", "headers": {"x": 1}}]),
            "a header that is no string",
        ),
    ] {
        let (r, _) = t.batch(reqs).await;
        assert_eq!(
            (r.status, r.code()),
            (400, "BadRequest"),
            "{what}: {}",
            r.body
        );
    }
    let r = t.post("/$batch", json!({"calls": []})).await;
    assert_eq!(r.status, 400);
    assert!(
        t.sim.writes().is_empty(),
        "nothing of a malformed batch runs"
    );
    // Items answer one by one, with the schema of their own route.
    let (r, items) = t.batch(json!([
        {"id": "create", "method": "POST", "url": format!("{fp}/contacts"), "headers": ct,
            "body": {"givenName": "Bea"}},
        {"id": "list", "method": "GET", "url": format!("{fp}/contacts?$select=givenName")},
        {"id": "folders", "method": "GET", "url": format!("users/{ANA}/contactFolders")},
        {"id": "nobody", "method": "GET", "url": "/users/nobody@contoso.test/contacts"},
        {"id": "versioned", "method": "GET", "url": format!("/v1.0{u}/contacts")},
        {"id": "absolute", "method": "GET", "url": format!("{}/v1.0{u}/contacts", t.sim.base_url)},
        {"id": "no-content-type", "method": "POST", "url": format!("{fp}/contacts"),
            "body": {"givenName": "X"}},
        {"id": "bad", "method": "POST", "url": format!("{fp}/contacts"), "headers": ct,
            "body": {"nickname": "X"}},
        {"id": "after-bad", "method": "GET", "url": format!("{fp}/contacts"), "dependsOn": ["bad"]},
        {"id": "after-after", "method": "GET", "url": format!("{fp}/contacts"),
            "dependsOn": ["AFTER-BAD"]},
    ])).await;
    assert_eq!(r.status, 200);
    for (id, status) in [
        ("create", 201),
        ("list", 200),
        ("folders", 200),
        ("nobody", 404),
        ("versioned", 400),
        ("absolute", 400),
        ("no-content-type", 400),
        ("bad", 400),
        ("after-bad", 424),
        ("after-after", 424),
    ] {
        assert_eq!(status_of(&items, id), status, "{id}: {}", items[id]);
    }
    assert_eq!(items["nobody"]["body"]["error"]["code"], "ErrorInvalidUser");
    assert_eq!(items["bad"]["body"]["error"]["code"], "RequestBodyRead");
    let cid = items["create"]["body"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // A sequential chain: each item runs after the one it depends on.
    let cp = format!("{fp}/contacts/{cid}");
    let (_, items) = t.batch(json!([
        {"id": "3", "method": "DELETE", "url": cp, "dependsOn": ["2"]},
        {"id": "1", "method": "PATCH", "url": cp, "headers": ct, "body": {"jobTitle": "CEO"}},
        {"id": "2", "method": "GET", "url": format!("{cp}?$select=jobTitle"), "dependsOn": ["1"]},
    ])).await;
    assert_eq!(
        (
            status_of(&items, "1"),
            status_of(&items, "2"),
            status_of(&items, "3")
        ),
        (200, 200, 204)
    );
    assert_eq!(items["2"]["body"]["jobTitle"], "CEO");
    assert!(items["3"].get("body").is_none(), "a 204 item has no body");
    assert!(t.sim.contact(ANA, &cid).is_none());
    let writes: Vec<String> = t.sim.writes().into_iter().map(|(w, _)| w).collect();
    assert_eq!(
        writes,
        vec![
            format!("POST {fp}/contacts"),
            format!("POST {fp}/contacts"),
            format!("PATCH {cp}"),
            format!("DELETE {cp}")
        ],
        "batch items are writes; items refused before their mailbox are not"
    );
    // Answers come back in any order.
    let nobody = |i: usize| format!("/users/nobody{i}@contoso.test/contacts");
    let reqs: Vec<Value> = (0..20)
        .map(|i| json!({"id": format!("n{i}"), "method": "GET", "url": nobody(i)}))
        .collect();
    let mut shuffled = false;
    for _ in 0..5 {
        let (r, _) = t.batch(json!(reqs)).await;
        let order: Vec<&str> = r.body["responses"]
            .as_array()
            .expect("responses")
            .iter()
            .filter_map(|x| x["id"].as_str())
            .collect();
        shuffled |= order
            != reqs
                .iter()
                .filter_map(|x| x["id"].as_str())
                .collect::<Vec<_>>();
    }
    assert!(shuffled, "responses are not in request order");
    // Parallel items count as concurrent requests to their mailbox: 6 at once → two 429s.
    t.sim
        .set_latency(Duration::from_millis(60), Duration::from_millis(90));
    let par: Vec<Value> = (0..6)
        .map(|i| json!({"id": format!("p{i}"), "method": "GET", "url": format!("{u}/contacts")}))
        .collect();
    let (r, items) = t.batch(json!(par)).await;
    assert_eq!(r.status, 200, "the envelope stays 200");
    let throttled: Vec<&Value> = items.values().filter(|i| i["status"] == 429).collect();
    assert_eq!(throttled.len(), 2, "{items:?}");
    for i in &throttled {
        assert_eq!(
            i["body"]["error"]["message"],
            "Application is over its MailboxConcurrency limit."
        );
        assert!(i["headers"]["Retry-After"]
            .as_str()
            .is_some_and(|s| s.parse::<u64>().is_ok()));
    }
    assert_eq!(t.sim.max_in_flight(ANA), 4);
    assert_eq!(t.sim.throttled(), 2);
    // The Retry-After counts as given with the envelope: a request sent after the answer
    // arrived (beyond the 25 ms an answer may be in flight) and before it passed violates.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = t.get(&format!("{u}/contacts")).await;
    assert_eq!(r.status, 429);
    assert_eq!(t.sim.violations_for(ANA), 1);
    assert_eq!(t.sim.violations(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(t.get(&format!("{u}/contacts")).await.status, 200);
    // A dependsOn chain runs one item at a time.
    let chain: Vec<Value> = (0..6)
        .map(|i| {
            let url = format!("/users/{BEN}/contacts");
            let mut x = json!({"id": format!("c{i}"), "method": "GET", "url": url});
            if i > 0 {
                x["dependsOn"] = json!([format!("c{}", i - 1)]);
            }
            x
        })
        .collect();
    let (_, items) = t.batch(json!(chain)).await;
    assert!(items.values().all(|i| i["status"] == 200), "{items:?}");
    assert_eq!(t.sim.max_in_flight(BEN), 1);
    let (_, by_route) = t.sim.requests();
    assert_eq!(
        by_route["GET /users/{user-id}/contacts"],
        1 + 5 * 20 + 6 + 1 + 1 + 6,
        "items count like requests"
    );
    assert!(by_route["POST /$batch"] >= 16);
}

// ---------------------------------------------------------------------------------------------
// Limits, violations, faults

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_per_mailbox_and_early_retries_are_violations() {
    let t = Arc::new(T::new().await);
    t.sim.set_limits(Limits {
        requests_per_window: 5,
        window: Duration::from_secs(3),
        ..Limits::default()
    });
    let ana = format!("/users/{ANA}/contacts");
    for _ in 0..5 {
        assert_eq!(t.get(&ana).await.status, 200);
    }
    let r = t.get(&ana).await;
    assert_eq!((r.status, r.code()), (429, "TooManyRequests"));
    let wait: u64 = r
        .header("retry-after")
        .and_then(|s| s.parse().ok())
        .expect("Retry-After");
    assert!((1..=3).contains(&wait), "{wait}");
    assert_eq!(t.sim.violations(), 0, "the first 429 is no violation");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = t.get(&ana).await;
    assert_eq!(
        r.status, 429,
        "requests while throttled still count and are refused"
    );
    assert_eq!(t.sim.violations_for(ANA), 1);
    assert_eq!(
        t.get(&format!("/users/{BEN}/contacts")).await.status,
        200,
        "other mailboxes are not affected"
    );
    assert_eq!(t.sim.violations_for(BEN), 0);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(t.get(&ana).await.status, 200, "after the window");
    assert_eq!((t.sim.violations(), t.sim.throttled()), (1, 2));
    // Bytes uploaded per 5 minutes.
    t.sim.set_limits(Limits {
        upload_bytes_per_5min: 2000,
        ..Limits::default()
    });
    let notes = "n".repeat(650);
    let ben = format!("/users/{BEN}/contacts");
    for _ in 0..2 {
        assert_eq!(
            t.post(&ben, json!({"personalNotes": notes})).await.status,
            201
        );
    }
    let r = t.post(&ben, json!({"personalNotes": notes})).await;
    assert_eq!(r.status, 429);
    assert!(
        r.header("retry-after")
            .and_then(|s| s.parse::<u64>().ok())
            .is_some_and(|s| s > 200),
        "until the upload window frees up"
    );
    assert_eq!(t.get(&ana).await.status, 200, "ana has uploaded nothing");
    // Concurrency: 4 requests in flight per mailbox.
    t.sim.set_limits(Limits::default());
    t.sim
        .set_latency(Duration::from_millis(400), Duration::from_millis(450));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let (t, ana) = (t.clone(), ana.clone());
        set.spawn(async move {
            let r = t.get(&ana).await;
            (
                r.status,
                r.body["error"]["message"].as_str().unwrap_or("").to_owned(),
            )
        });
    }
    let mut answers = Vec::new();
    while let Some(a) = set.join_next().await {
        answers.push(a.expect("join"));
    }
    assert_eq!(
        answers.iter().filter(|(s, _)| *s == 200).count(),
        4,
        "{answers:?}"
    );
    assert!(
        answers
            .iter()
            .any(|(s, m)| *s == 429 && m == "Application is over its MailboxConcurrency limit."),
        "{answers:?}"
    );
    assert_eq!(t.sim.max_in_flight(ANA), 4);
    // Counters.
    let (total, by_route) = t.sim.requests();
    assert!(
        total >= 17 && by_route["GET /users/{user-id}/contacts"] >= 14,
        "{by_route:?}"
    );
    t.sim.reset_counters();
    assert_eq!(
        (
            t.sim.requests().0,
            t.sim.violations(),
            t.sim.throttled(),
            t.sim.token_grants()
        ),
        (0, 0, 0, 0)
    );
    assert!(t.sim.writes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_fail_before_work_or_drop_the_answer_after_it() {
    let t = T::new().await;
    let u = format!("/users/{ANA}");
    t.sim.set_faults(Faults {
        fail_5xx: 1.0,
        drop_after_write: 0.0,
    });
    let mut seen = BTreeSet::new();
    for _ in 0..12 {
        let r = t
            .post(&format!("{u}/contacts"), json!({"givenName": "F"}))
            .await;
        assert!(r.status == 503 || r.status == 504, "{}", r.status);
        seen.insert((r.status, r.header("retry-after").is_some()));
    }
    assert!(
        seen.len() >= 2,
        "503 and 504, with and without Retry-After: {seen:?}"
    );
    assert!(
        t.sim
            .contacts(ANA, &t.sim.default_folder_id(ANA))
            .is_empty(),
        "nothing was done"
    );
    let r = t
        .post(
            "/$batch",
            json!({"requests": [{"id": "1", "method": "GET", "url": format!("{u}/contacts")}]}),
        )
        .await;
    assert!(r.status == 503 || r.status == 504);
    assert_eq!(t.sim.faults_injected(), 13);
    // Dropped after the write: the client gets no answer, the mailbox has the contact.
    t.sim.set_faults(Faults {
        fail_5xx: 0.0,
        drop_after_write: 1.0,
    });
    let res = t
        .http
        .post(t.url(&format!("{u}/contacts")))
        .bearer_auth(&t.token)
        .json(&json!({"givenName": "Dropped"}))
        .send()
        .await;
    let answered = match res {
        Ok(r) => r.text().await.is_ok(),
        Err(_) => false,
    };
    assert!(!answered, "the connection is closed without an answer");
    let held = t.sim.contacts(ANA, &t.sim.default_folder_id(ANA));
    assert_eq!(held.len(), 1);
    assert_eq!(held[0]["givenName"], "Dropped");
    assert_eq!(
        t.get(&format!("{u}/contacts")).await.status,
        200,
        "reads are not dropped"
    );
    let res = t
        .http
        .post(t.url("/$batch"))
        .bearer_auth(&t.token)
        .json(&json!({"requests": [
        {"id": "1", "method": "POST", "url": format!("{u}/contacts"),
            "headers": {"Content-Type": "application/json"}, "body": {"givenName": "In batch"}}]}))
        .send()
        .await;
    assert!(
        match res {
            Ok(r) => r.text().await.is_err(),
            Err(_) => true,
        },
        "the batch's answer is dropped too"
    );
    assert_eq!(t.sim.contacts(ANA, &t.sim.default_folder_id(ANA)).len(), 2);
    assert_eq!(t.sim.faults_injected(), 15);
}
