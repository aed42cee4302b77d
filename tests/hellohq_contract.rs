//! Contract tests: crmgate's helloHQ simulator (tests/support/hellohq_sim.rs) checked against
//! the published Swagger 2.0 description of v1 in `fixtures/hellohq/v1-odata-swagger.json`
//! and the OpenAPI 3.0.1 description of v2 in `fixtures/hellohq/v2-rest-openapi.json`.
//!
//! Two small validators live here, one for the swagger `definitions` and one for OpenAPI 3
//! `components/schemas`. Besides type/format/enum/required checks both report every property the
//! schema does not declare, so a simulator that invents fields (or misspells one) fails.

mod support;

use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;
use support::hellohq_sim::{Faults, Sim};

// ---------------------------------------------------------------------------------------------
// Swagger 2.0 validator

struct Spec {
    root: Value,
    /// Definition name by description: the swagger generator cuts nested schemas off after a
    /// few levels (`{"type":"object"}` with no properties); the description still names them.
    by_description: HashMap<String, String>,
}

fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let p =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hellohq/v1-odata-swagger.json");
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let root: Value = serde_json::from_str(&text).expect("swagger json");
        let mut counts: HashMap<String, Vec<String>> = HashMap::new();
        for (name, d) in root["definitions"].as_object().expect("definitions") {
            let has_props = d["properties"].as_object().is_some_and(|m| !m.is_empty());
            if let (Some(desc), true) = (d["description"].as_str(), has_props) {
                counts
                    .entry(desc.to_owned())
                    .or_default()
                    .push(name.clone());
            }
        }
        let by_description = counts
            .into_iter()
            .filter(|(_, v)| v.len() == 1)
            .map(|(k, mut v)| (k, v.remove(0)))
            .collect();
        Spec {
            root,
            by_description,
        }
    })
}

impl Spec {
    fn def(&self, name: &str) -> &Value {
        let d = &self.root["definitions"][name];
        assert!(d.is_object(), "no definition {name}");
        d
    }

    fn resolve<'a>(&'a self, s: &'a Value) -> &'a Value {
        match s["$ref"].as_str() {
            Some(r) => self.def(
                r.strip_prefix("#/definitions/")
                    .unwrap_or_else(|| panic!("odd $ref {r}")),
            ),
            None => s,
        }
    }

    /// The response schema a path declares for `method` and `status`.
    fn response(&self, path: &str, method: &str, status: &str) -> &Value {
        let s = &self.root["paths"][path][method]["responses"][status]["schema"];
        assert!(
            s.is_object(),
            "no {method} {path} {status} schema in the spec"
        );
        s
    }

    /// All violations of `v` against `schema` (empty = valid).
    fn validate(&self, schema: &Value, v: &Value) -> Vec<String> {
        let mut errs = Vec::new();
        self.check(schema, v, "$", false, &mut errs);
        errs
    }

    fn check(&self, schema: &Value, v: &Value, at: &str, nullable: bool, errs: &mut Vec<String>) {
        let schema = self.resolve(schema);
        if v.is_null() {
            if !nullable {
                errs.push(format!("{at}: null where a value is required"));
            }
            return;
        }
        if let Some(allowed) = schema["enum"].as_array() {
            if !allowed.contains(v) {
                errs.push(format!("{at}: {v} not in enum {allowed:?}"));
            }
        }
        let format = schema["format"].as_str();
        match schema["type"].as_str() {
            Some("string") => match v.as_str() {
                None => errs.push(format!("{at}: expected string, got {v}")),
                Some(s) if format == Some("date-time") && !is_rfc3339(s) => {
                    errs.push(format!("{at}: '{s}' is not an RFC 3339 date-time"))
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
                None => errs.push(format!("{at}: expected array, got {}", kind(v))),
                Some(items) => {
                    let item_schema = &schema["items"];
                    for (i, it) in items.iter().enumerate() {
                        if item_schema.is_object() {
                            self.check(item_schema, it, &format!("{at}[{i}]"), false, errs);
                        }
                    }
                }
            },
            Some("object") => self.check_object(schema, v, at, errs),
            Some(other) => errs.push(format!("{at}: schema has unknown type {other}")),
            None => {}
        }
    }

    fn check_object(&self, schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
        let Some(obj) = v.as_object() else {
            errs.push(format!("{at}: expected object, got {}", kind(v)));
            return;
        };
        let mut schema = schema;
        let declared = schema["properties"]
            .as_object()
            .is_some_and(|m| !m.is_empty());
        if !declared {
            // A cut-off nested schema: use the definition with the same description, if any.
            match schema["description"]
                .as_str()
                .and_then(|d| self.by_description.get(d))
            {
                Some(name) => schema = self.def(name),
                None => return, // open object: nothing declared to check against
            }
        }
        let props = schema["properties"].as_object().expect("properties");
        let required: BTreeSet<&str> = schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for r in &required {
            if obj.get(*r).is_none_or(Value::is_null) {
                errs.push(format!("{at}: required property {r} missing"));
            }
        }
        for (k, val) in obj {
            if k.starts_with("@odata.") {
                continue;
            }
            match props.get(k) {
                None => errs.push(format!("{at}: undeclared property {k}")),
                Some(p) => self.check(
                    p,
                    val,
                    &format!("{at}.{k}"),
                    !required.contains(k.as_str()),
                    errs,
                ),
            }
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` to unix milliseconds.
fn unix_ms(s: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().expect("digits");
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    let (y, mp) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + (153 * mp + 2) / 5 + d - 1;
    let days = era * 146_097 + doe - 719_468;
    (days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)) * 1000
}

/// RFC 3339 `date-time`: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` with field ranges checked.
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return false;
    }
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(se)) = (
        digits(0..4),
        digits(5..7),
        digits(8..10),
        digits(11..13),
        digits(14..16),
        digits(17..19),
    ) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mdays = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo)
        || d == 0
        || d > mdays[(mo - 1) as usize]
        || h > 23
        || mi > 59
        || se > 60
    {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &r[n..];
    }
    match rest {
        "Z" | "z" => true,
        _ => {
            let rb = rest.as_bytes();
            rb.len() == 6
                && matches!(rb[0], b'+' | b'-')
                && rb[3] == b':'
                && rest[1..3].parse::<u32>().is_ok_and(|h| h < 24)
                && rest[4..6].parse::<u32>().is_ok_and(|m| m < 60)
        }
    }
}

fn assert_valid(schema: &Value, v: &Value, what: &str) {
    let errs = spec().validate(schema, v);
    assert!(
        errs.is_empty(),
        "{what}: {} violation(s):\n  {}",
        errs.len(),
        errs.iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// A token through the refresh grant: client credentials as HTTP Basic, and a rotated refresh
/// token in the answer (the one used no longer works).
async fn token(c: &reqwest::Client, sim: &Sim) -> String {
    let used = sim.refresh_token();
    let r = c
        .post(format!("{}/Token", sim.base_url))
        .header("authorization", Sim::basic_auth())
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", used.as_str()),
        ])
        .send()
        .await
        .expect("token request");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("token json");
    assert_eq!(v["token_type"], "bearer");
    assert_eq!(v["expires_in"], 1199);
    let rotated = v["refresh_token"].as_str().expect("refresh_token");
    assert_ne!(rotated, used);
    assert_eq!(sim.refresh_token(), rotated);
    v["access_token"].as_str().expect("access_token").to_owned()
}

struct Api {
    c: reqwest::Client,
    base: String,
    tok: String,
}

impl Api {
    async fn new(sim: &Sim) -> Api {
        let c = reqwest::Client::new();
        let tok = token(&c, sim).await;
        Api {
            c,
            base: sim.base_url.clone(),
            tok,
        }
    }

    fn req(&self, m: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.c
            .request(m, format!("{}{path}", self.base))
            .bearer_auth(&self.tok)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .req(reqwest::Method::GET, path)
            .send()
            .await
            .expect("send");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// GET with query pairs (encoded by reqwest, so `+01:00` survives).
    async fn query(&self, path: &str, q: &[(&str, &str)]) -> (u16, Value) {
        let r = self
            .req(reqwest::Method::GET, path)
            .query(q)
            .send()
            .await
            .expect("send");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }
}

fn ids(v: &Value) -> Vec<i64> {
    v["value"]
        .as_array()
        .expect("value array")
        .iter()
        .map(|o| o["Id"].as_i64().expect("Id"))
        .collect()
}

fn assert_odata_error(v: &Value) {
    assert!(v["error"]["code"].is_string(), "error.code in {v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error.message in {v}"
    );
}

// ---------------------------------------------------------------------------------------------
// The validator itself

#[test]
fn validator_rejects_bad_objects() {
    let s = spec();
    let cp = s.def("ContactPerson");
    assert!(s
        .validate(cp, &json!({"Id": 1, "FirstName": "A", "CompanyId": null}))
        .is_empty());

    let e = s.validate(cp, &json!({"Id": 1, "Bogus": 2}));
    assert!(
        e.iter().any(|m| m.contains("undeclared property Bogus")),
        "{e:?}"
    );
    let e = s.validate(cp, &json!({"Id": "1"}));
    assert!(e.iter().any(|m| m.contains("expected integer")), "{e:?}");
    let e = s.validate(cp, &json!({"Id": 1, "FirstName": 5}));
    assert!(e.iter().any(|m| m.contains("expected string")), "{e:?}");
    let e = s.validate(cp, &json!({"Id": 3_000_000_000_i64}));
    assert!(e.iter().any(|m| m.contains("int32")), "{e:?}");
    let e = s.validate(cp, &json!({"Id": 1, "UpdatedOn": "2026-11-01 08:00"}));
    assert!(e.iter().any(|m| m.contains("RFC 3339")), "{e:?}");
    let e = s.validate(cp, &json!({"Id": 1, "UpdatedOn": "2026-02-30T08:00:00Z"}));
    assert!(e.iter().any(|m| m.contains("RFC 3339")), "{e:?}");
    let e = s.validate(cp, &json!({"Id": 1, "SalutationForm": "Casual"}));
    assert!(e.iter().any(|m| m.contains("enum")), "{e:?}");
    let e = s.validate(cp, &json!({"FirstName": "A"}));
    assert!(
        e.iter().any(|m| m.contains("required property Id")),
        "{e:?}"
    );
    let e = s.validate(
        cp,
        &json!({"Id": 1, "DefaultAddress": {"Id": 2, "Mail": "x@y"}}),
    );
    assert!(
        e.iter()
            .any(|m| m.contains("$.DefaultAddress: undeclared property Mail")),
        "{e:?}"
    );
    let e = s.validate(cp, &json!({"Id": 1, "Addresses": {"Id": 2}}));
    assert!(e.iter().any(|m| m.contains("expected array")), "{e:?}");

    // Nested inline items (Company.ResponsibleUsers), and a cut-off nested schema resolved by its
    // description: Lead.Project.Members items are declared as a bare `{"type":"object"}`.
    let e = s.validate(
        s.def("Company"),
        &json!({"Id": 1, "ResponsibleUsers": [{"Id": 2, "Email": "a"}]}),
    );
    assert!(
        e.iter()
            .any(|m| m.contains("ResponsibleUsers[0]: undeclared property Email")),
        "{e:?}"
    );
    let cut = &s.def("Lead")["properties"]["Project"]["properties"]["Members"]["items"];
    assert!(
        cut["properties"].is_null(),
        "spec changed: Lead.Project.Members items now declare properties"
    );
    let lead = |m: Value| json!({"Id": 1, "Project": {"Id": 2, "Members": [m]}});
    assert!(s
        .validate(s.def("Lead"), &lead(json!({"Id": 3, "UserId": 7})))
        .is_empty());
    let e = s.validate(s.def("Lead"), &lead(json!({"Id": 3, "UserId": "7"})));
    assert!(
        e.iter()
            .any(|m| m.contains("Members[0].UserId: expected integer")),
        "{e:?}"
    );
    let e = s.validate(s.def("Lead"), &lead(json!({"Id": 3, "Role": 1})));
    assert!(
        e.iter()
            .any(|m| m.contains("Members[0]: undeclared property Role")),
        "{e:?}"
    );

    // Wrapper and array response schemas.
    let wrap = s.def("ODataResponse[List[ContactPerson]]");
    assert!(s
        .validate(wrap, &json!({"@odata.context": "x", "value": [{"Id": 1}]}))
        .is_empty());
    let e = s.validate(
        wrap,
        &json!({"@odata.context": "x", "value": [{"Id": 1}], "nextLink": "y"}),
    );
    assert!(
        e.iter().any(|m| m.contains("undeclared property nextLink")),
        "{e:?}"
    );
    let arr = s.response("/v1/ContactPersons", "get", "200");
    let e = s.validate(arr, &json!([{"Id": 1}, {"Id": 2, "Nope": true}]));
    assert!(
        e.iter()
            .any(|m| m.contains("$[1]: undeclared property Nope")),
        "{e:?}"
    );

    assert!(is_rfc3339("2026-11-01T08:00:00Z"));
    assert!(is_rfc3339("2018-01-26T18:15:00.1234567+01:00"));
    assert!(!is_rfc3339("2026-11-01T08:00:00"));
    assert!(!is_rfc3339("2026-13-01T08:00:00Z"));
}

// ---------------------------------------------------------------------------------------------
// Schemas

#[tokio::test(flavor = "multi_thread")]
async fn list_endpoints_match_the_spec() {
    let sim = Sim::start().await;
    let p = sim.populate(300, 7);
    assert!(sim.delete("ContactPersons", p.contacts[0]));
    assert!(sim.delete("Companies", *p.companies.last().expect("company")));
    let api = Api::new(&sim).await;
    let s = spec();

    let cases: &[(&str, &str, &str, &[&str])] = &[
        ("/v1/Subsystem", "/v1/Subsystem", "Subsystem", &[]),
        (
            "/v1/Users?$expand=UserGroups",
            "/v1/Users",
            "User",
            &["UserGroups"],
        ),
        (
            "/v1/Companies?$expand=ResponsibleUsers,Subsystems,CompanyTypes,DefaultAddress",
            "/v1/Companies",
            "Company",
            &[
                "ResponsibleUsers",
                "Subsystems",
                "CompanyTypes",
                "DefaultAddress",
            ],
        ),
        (
            "/v1/ContactPersons?$expand=DefaultAddress",
            "/v1/ContactPersons",
            "ContactPerson",
            &["DefaultAddress"],
        ),
        (
            "/v1/Projects?$expand=Members,ContactPersons,Subsystems",
            "/v1/Projects",
            "Project",
            &["Members", "ContactPersons", "Subsystems"],
        ),
        (
            "/v1/Leads?$expand=ContactPersons,Subsystems,Status",
            "/v1/Leads",
            "Lead",
            &["ContactPersons", "Subsystems", "Status"],
        ),
        ("/v1/CompanyTypes", "/v1/CompanyTypes", "CompanyType", &[]),
        ("/v1/LeadStatuses", "/v1/LeadStatuses", "LeadStatus", &[]),
        (
            "/v1/ConfigSystemEvents/do.GetDeleted()",
            "/v1/ConfigSystemEvents/do.GetDeleted()",
            "ConfigSystemEvent",
            &[],
        ),
    ];
    for (url, spec_path, entity, expanded) in cases {
        let (st, body) = api.get(url).await;
        assert_eq!(st, 200, "{url}: {body}");
        let value = body["value"]
            .as_array()
            .unwrap_or_else(|| panic!("{url}: no value array"));
        assert!(!value.is_empty(), "{url}: empty list proves nothing");
        let set = spec_path.trim_start_matches("/v1/");
        let set = set.split('/').next().expect("set");
        assert_eq!(
            body["@odata.context"],
            format!("{}/v1/$metadata#{set}", sim.base_url),
            "{url}"
        );

        // The path's own 200 schema is a bare array of the entity...
        let arr = s.response(spec_path, "get", "200");
        assert_eq!(arr["type"], "array", "{spec_path}");
        assert_eq!(
            arr["items"]["$ref"],
            format!("#/definitions/{entity}"),
            "{spec_path}"
        );
        assert_valid(arr, &body["value"], url);
        // ...and the wire envelope is the (otherwise unreferenced) ODataResponse[List[X]].
        assert_valid(s.def(&format!("ODataResponse[List[{entity}]]")), &body, url);

        // $expand really produced the navigation properties that were validated.
        for nav in *expanded {
            assert!(
                value
                    .iter()
                    .any(|o| o[*nav].as_array().is_some_and(|a| !a.is_empty())
                        || o[*nav].is_object()),
                "{url}: {nav} never filled"
            );
        }
        // Without $expand, navigation properties are absent; scalars stay.
        if !expanded.is_empty() {
            let (_, plain) = api.get(spec_path).await;
            let first = &plain["value"][0];
            for nav in *expanded {
                assert!(
                    first.get(*nav).is_none(),
                    "{spec_path}: {nav} present without $expand"
                );
            }
            assert!(
                first.get("UpdatedOn").is_some_and(Value::is_string),
                "{spec_path}: {first}"
            );
        }
    }

    // Deleted events point at what was deleted.
    let (_, ev) = api.get("/v1/ConfigSystemEvents/do.GetDeleted()").await;
    let got: Vec<(String, i64)> = ev["value"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["DatabaseObject"].as_str().unwrap_or("").to_owned(),
                e["EntityId"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert!(
        got.contains(&("ContactPerson".into(), p.contacts[0] as i64)),
        "{got:?}"
    );
    assert!(
        got.contains(&("Company".into(), *p.companies.last().expect("c") as i64)),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn single_get_post_put_match_the_spec() {
    let sim = Sim::start().await;
    let p = sim.populate(50, 3);
    let api = Api::new(&sim).await;
    let s = spec();
    let item = "/v1/ContactPersons({Id})";

    // Single GET with ETag and Date.
    let id = p.contacts[1];
    let r = api
        .req(
            reqwest::Method::GET,
            &format!(
                "/v1/ContactPersons({id})?$expand=DefaultAddress,Addresses,Company,CustomFields"
            ),
        )
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    let etag = r.headers()["etag"].to_str().expect("etag").to_owned();
    assert!(r.headers().contains_key("date"));
    let one: Value = r.json().await.expect("json");
    assert_valid(
        s.response(item, "get", "200"),
        &one,
        "GET ContactPersons(id)",
    );
    assert_eq!(one["Id"], id);
    assert!(one["Company"]["Name"].is_string(), "{one}");
    assert_eq!(one["Addresses"][0], one["DefaultAddress"]);
    let updated = one["UpdatedOn"].as_str().expect("UpdatedOn");
    assert!(
        updated.len() == 20 && updated.ends_with('Z'),
        "second precision UTC: {updated}"
    );
    assert_eq!(
        etag,
        format!("W/\"{}\"", unix_ms(updated)),
        "ETag is UpdatedOn in unix millis"
    );

    // Other entity GETs.
    for (set, path, eid) in [
        ("Companies", "/v1/Companies({Id})", p.companies[0]),
        ("Users", "/v1/Users({Id})", p.users[0]),
        ("Projects", "/v1/Projects({Id})", p.projects[0]),
        ("Leads", "/v1/Leads({Id})", p.leads[0]),
        ("Subsystem", "/v1/Subsystem({Id})", 1),
    ] {
        let (st, v) = api.get(&format!("/v1/{set}({eid})")).await;
        assert_eq!(st, 200, "{set}: {v}");
        let mut schema = s.response(path, "get", "200");
        if schema["type"] == "array" {
            // The spec declares `/v1/Subsystem({Id})` GET 200 as an array of Subsystem, like the
            // collection; an OData single-entity GET returns the object, validated as the item.
            assert_eq!(
                set, "Subsystem",
                "only Subsystem({{Id}}) is declared as an array"
            );
            schema = &schema["items"];
        }
        assert_valid(schema, &v, path);
    }

    // POST 201: Id in the body is ignored, and so is a related entity sent inline (OData v4
    // has no deep update; the sim takes the strict reading): the answer, not asked to
    // `$expand`, carries no navigation property.
    let company = p.companies[0];
    let new = json!({
        "Id": 999_999, "FirstName": "Nora", "LastName": "Neu", "CompanyId": company,
        "Position": "Einkauf", "PhoneLandline": "+49 30 1234567", "SalutationForm": "Formal",
        "DefaultAddress": {"Street": "Hauptstraße", "City": "Berlin", "Email": "nora@neu.example"}
    });
    let r = api
        .req(reqwest::Method::POST, "/v1/ContactPersons")
        .json(&new)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.expect("json");
    assert_valid(
        s.response("/v1/ContactPersons", "post", "201"),
        &created,
        "POST ContactPersons",
    );
    let nid = created["Id"].as_i64().expect("Id") as i32;
    assert_ne!(nid, 999_999);
    assert!(
        created.get("DefaultAddress").is_none(),
        "a write answer has no navigation property unless $expand asks: {created}"
    );
    assert!(
        created["DefaultAddressId"].is_null(),
        "the inline address was not made"
    );
    let stored = sim.get("ContactPersons", nid).expect("stored");
    assert_eq!(stored["FirstName"], "Nora");
    assert!(stored["DefaultAddress"].is_null(), "{stored}");
    assert!(sim
        .stats()
        .write_bodies
        .iter()
        .any(|(k, b)| k == "POST /v1/ContactPersons" && b["FirstName"] == "Nora"));

    // The address through its own resource, then linked by the scalar DefaultAddressId.
    let addresses = "/v1/Companies({Id})/Addresses";
    let r = api
        .req(
            reqwest::Method::POST,
            &format!("/v1/Companies({company})/Addresses"),
        )
        .json(&json!({"Street": "Hauptstraße", "City": "Berlin", "Email": "nora@neu.example"}))
        .send()
        .await
        .expect("post address");
    assert_eq!(r.status(), 201);
    let address: Value = r.json().await.expect("json");
    assert_valid(
        s.response(addresses, "post", "201"),
        &address,
        "POST Addresses",
    );
    let aid = address["Id"].as_i64().expect("address Id");
    let (st, one) = api
        .get(&format!("/v1/Companies({company})/Addresses({aid})"))
        .await;
    assert_eq!(st, 200);
    assert_valid(
        s.response("/v1/Companies({Id})/Addresses({AddressId})", "get", "200"),
        &one,
        "GET Addresses(id)",
    );
    let (st, list) = api
        .get(&format!("/v1/Companies({company})/Addresses"))
        .await;
    assert_eq!(st, 200);
    // The spec declares the collection as an array; OData wraps it in `value`.
    assert_valid(
        s.response(addresses, "get", "200"),
        &list["value"],
        "GET Addresses",
    );
    assert!(ids(&list).contains(&aid));

    // PUT 200 is a full replace of the contact person's own properties: omitted scalars
    // become null; DefaultAddressId links the address; the inline DefaultAddress is ignored;
    // `$expand` on the write brings the address into the answer.
    sim.advance_clock(Duration::from_secs(5));
    let put = json!({"FirstName": "Nora", "LastName": "Neumann", "CompanyId": company,
        "DefaultAddressId": aid, "DefaultAddress": {"Email": "ignored@neu.example"}});
    let r = api
        .req(
            reqwest::Method::PUT,
            &format!("/v1/ContactPersons({nid})?$expand=DefaultAddress"),
        )
        .json(&put)
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 200);
    let replaced: Value = r.json().await.expect("json");
    assert_valid(
        s.response(item, "put", "200"),
        &replaced,
        "PUT ContactPersons(id)",
    );
    assert_eq!(replaced["LastName"], "Neumann");
    assert!(
        replaced["Position"].is_null(),
        "omitted Position must be nulled: {replaced}"
    );
    assert!(replaced["PhoneLandline"].is_null());
    assert!(replaced["SalutationForm"].is_null());
    assert_eq!(replaced["DefaultAddress"]["Email"], "nora@neu.example");
    assert_eq!(replaced["CreatedOn"], created["CreatedOn"]);
    assert_ne!(replaced["UpdatedOn"], created["UpdatedOn"]);
    // Omitting DefaultAddressId unlinks the address (full replace); the address stays.
    let r = api
        .req(reqwest::Method::PUT, &format!("/v1/ContactPersons({nid})"))
        .json(&json!({"FirstName": "Nora", "LastName": "Neumann", "CompanyId": company}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 200);
    let (_, again) = api
        .get(&format!("/v1/ContactPersons({nid})?$expand=DefaultAddress"))
        .await;
    assert!(again["DefaultAddress"].is_null(), "{again}");
    // An address of another company cannot be linked.
    let other = p.companies[1];
    let r = api
        .req(
            reqwest::Method::POST,
            &format!("/v1/Companies({other})/Addresses"),
        )
        .json(&json!({"City": "Hamburg"}))
        .send()
        .await
        .expect("post address");
    let foreign = r.json::<Value>().await.expect("json")["Id"].clone();
    let r = api
        .req(reqwest::Method::PUT, &format!("/v1/ContactPersons({nid})"))
        .json(&json!({"LastName": "Neumann", "CompanyId": company, "DefaultAddressId": foreign}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 400);
    // A contact person is created for a company (v2: "for the company with the given
    // CompanyId"): none, refused.
    let r = api
        .req(reqwest::Method::POST, "/v1/ContactPersons")
        .json(&json!({"FirstName": "Ohne", "LastName": "Firma"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    assert_odata_error(&r.json().await.expect("json"));
    // Deleting the address.
    let r = api
        .req(
            reqwest::Method::DELETE,
            &format!("/v1/Companies({company})/Addresses({aid})"),
        )
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 204);
    let (st, _) = api
        .get(&format!("/v1/Companies({company})/Addresses({aid})"))
        .await;
    assert_eq!(st, 404);
    let put = json!({"FirstName": "Nora", "LastName": "Neumann", "CompanyId": company});

    // Write errors.
    let code = |r: reqwest::Response| r.status().as_u16();
    let bad_company = api
        .req(reqwest::Method::POST, "/v1/ContactPersons")
        .json(&json!({"LastName": "X", "CompanyId": 987_654}))
        .send()
        .await
        .expect("post");
    assert_eq!(code(bad_company), 400);
    let bad_type = api
        .req(reqwest::Method::PUT, &format!("/v1/ContactPersons({nid})"))
        .json(&json!({"LastName": 42}))
        .send()
        .await
        .expect("put");
    assert_eq!(bad_type.status(), 400);
    assert_odata_error(&bad_type.json().await.expect("json"));
    let missing = api
        .req(reqwest::Method::PUT, "/v1/ContactPersons(987654)")
        .json(&put)
        .send()
        .await
        .expect("put");
    assert_eq!(code(missing), 404);
    let not_allowed = api
        .req(reqwest::Method::POST, "/v1/Companies")
        .json(&json!({"Name": "X"}))
        .send()
        .await
        .expect("post");
    assert_eq!(not_allowed.status(), 405);
    assert_odata_error(&not_allowed.json().await.expect("json"));
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_honours_if_match_and_feeds_get_deleted() {
    let sim = Sim::start().await;
    let p = sim.populate(20, 5);
    let api = Api::new(&sim).await;
    let id = p.contacts[2];
    let before = sim.now();

    let r = api
        .req(reqwest::Method::GET, &format!("/v1/ContactPersons({id})"))
        .send()
        .await
        .expect("get");
    let etag = r.headers()["etag"].to_str().expect("etag").to_owned();

    let stale = api
        .req(
            reqwest::Method::DELETE,
            &format!("/v1/ContactPersons({id})"),
        )
        .header("If-Match", "W/\"1\"")
        .send()
        .await
        .expect("delete");
    assert_eq!(stale.status(), 412);
    assert_odata_error(&stale.json().await.expect("json"));
    assert!(sim.get("ContactPersons", id).is_some());

    let ok = api
        .req(
            reqwest::Method::DELETE,
            &format!("/v1/ContactPersons({id})"),
        )
        .header("If-Match", &etag)
        .send()
        .await
        .expect("delete");
    assert_eq!(ok.status(), 204);
    assert!(sim.get("ContactPersons", id).is_none());
    let (st, body) = api.get(&format!("/v1/ContactPersons({id})")).await;
    assert_eq!(st, 404);
    assert_odata_error(&body);
    let again = api
        .req(
            reqwest::Method::DELETE,
            &format!("/v1/ContactPersons({id})"),
        )
        .send()
        .await
        .expect("delete");
    assert_eq!(again.status(), 404);

    let (st, ev) = api
        .query(
            "/v1/ConfigSystemEvents/do.GetDeleted()",
            &[("$filter", &format!("CreatedOn ge {before}"))],
        )
        .await;
    assert_eq!(st, 200, "{ev}");
    let evs = ev["value"].as_array().expect("value");
    assert_eq!(evs.len(), 1, "{ev}");
    assert_eq!(evs[0]["EntityId"], id);
    assert_eq!(evs[0]["DatabaseObject"], "ContactPerson");
    assert_valid(spec().def("ConfigSystemEvent"), &evs[0], "deleted event");

    // Switched off: deletes leave no event.
    sim.set_deleted_events(false);
    assert!(sim.delete("ContactPersons", p.contacts[3]));
    let (_, ev) = api
        .query(
            "/v1/ConfigSystemEvents/do.GetDeleted()",
            &[("$filter", &format!("CreatedOn ge {before}"))],
        )
        .await;
    assert_eq!(ev["value"].as_array().expect("value").len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Query options

#[tokio::test(flavor = "multi_thread")]
async fn query_options_filter_page_select_count() {
    let sim = Sim::start().await;
    let p = sim.populate(2500, 11);
    // The pages below are the client's own ($top up to 1000); server-driven paging (a page
    // cap below $top, with next links) is checked at the end.
    sim.set_page_cap(1000);
    let api = Api::new(&sim).await;
    let total = p.contacts.len();

    // $count and the 1000 cap.
    let (st, b) = api
        .query(
            "/v1/ContactPersons",
            &[("$count", "true"), ("$top", "5000")],
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(b["@odata.count"], total);
    assert_eq!(b["value"].as_array().expect("value").len(), 1000);
    let (_, b) = api.get("/v1/ContactPersons").await;
    assert_eq!(
        b["value"].as_array().expect("value").len(),
        1000,
        "default page is capped too"
    );

    // $top/$skip paging in Id order covers every id exactly once.
    let mut seen = Vec::new();
    let mut skip = 0;
    loop {
        let (st, b) = api
            .query(
                "/v1/ContactPersons",
                &[
                    ("$select", "Id"),
                    ("$top", "700"),
                    ("$skip", &skip.to_string()),
                ],
            )
            .await;
        assert_eq!(st, 200);
        let page = ids(&b);
        for o in b["value"].as_array().expect("value") {
            let keys: Vec<&String> = o.as_object().expect("obj").keys().collect();
            assert_eq!(keys, ["Id"], "$select=Id returns only Id");
        }
        if page.is_empty() {
            break;
        }
        skip += page.len();
        seen.extend(page);
    }
    let mut want: Vec<i64> = p.contacts.iter().map(|i| *i as i64).collect();
    want.sort_unstable();
    assert_eq!(seen, want);

    // UpdatedOn,Id order also pages through everything once, and is sorted.
    let mut seen = Vec::new();
    let mut last = String::new();
    for skip in (0..).step_by(1000) {
        let (_, b) = api
            .query(
                "/v1/ContactPersons",
                &[
                    ("$select", "Id,UpdatedOn"),
                    ("$orderby", "UpdatedOn,Id"),
                    ("$skip", &skip.to_string()),
                ],
            )
            .await;
        let v = b["value"].as_array().expect("value");
        if v.is_empty() {
            break;
        }
        for o in v {
            let u = o["UpdatedOn"].as_str().expect("UpdatedOn").to_owned();
            assert!(u >= last, "not ordered by UpdatedOn: {last} then {u}");
            last = u;
            seen.push(o["Id"].as_i64().expect("Id"));
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, want);

    // $filter=UpdatedOn gt: only later changes, in either offset notation.
    sim.advance_clock(Duration::from_secs(120));
    let cursor = sim.now();
    sim.advance_clock(Duration::from_secs(1));
    let changed = [p.contacts[10], p.contacts[20], p.contacts[30]];
    for id in changed {
        assert!(sim.update("ContactPersons", id, |o| o["Position"] = json!("Neu")));
    }
    // A membership-style edit that does not stamp UpdatedOn stays invisible to the filter.
    assert!(
        sim.update_silent("ContactPersons", p.contacts[40], |o| o["Position"] =
            json!("Still"))
    );
    let (st, b) = api
        .query(
            "/v1/ContactPersons",
            &[
                ("$filter", &format!("UpdatedOn gt {cursor}")),
                ("$count", "true"),
            ],
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let mut got = ids(&b);
    got.sort_unstable();
    let mut exp: Vec<i64> = changed.iter().map(|i| *i as i64).collect();
    exp.sort_unstable();
    assert_eq!(got, exp);
    assert_eq!(b["@odata.count"], 3);
    let plus_one = cursor.replace('Z', "").replacen("T08:", "T09:", 1) + "+01:00";
    if cursor.contains("T08:") {
        let (_, b) = api
            .query(
                "/v1/ContactPersons",
                &[("$filter", &format!("UpdatedOn gt {plus_one}"))],
            )
            .await;
        assert_eq!(ids(&b).len(), 3, "offset {plus_one}: {b}");
    }
    let (_, b) = api
        .query(
            "/v1/ContactPersons",
            &[
                (
                    "$filter",
                    &format!("UpdatedOn gt {cursor} and CreatedOn le {cursor}"),
                ),
                ("$orderby", "UpdatedOn asc,Id asc"),
            ],
        )
        .await;
    assert_eq!(ids(&b).len(), 3, "{b}");
    let (_, b) = api
        .query(
            "/v1/ContactPersons",
            &[("$filter", &format!("UpdatedOn lt {cursor}"))],
        )
        .await;
    assert_eq!(ids(&b).len(), 1000);

    // Server-driven paging: the server caps pages at 300 and says where the rest is. A page
    // the client's $top ends has no next link.
    sim.set_page_cap(300);
    let (_, b) = api.query("/v1/ContactPersons", &[("$top", "2")]).await;
    assert_eq!(ids(&b).len(), 2);
    assert!(
        b.get("@odata.nextLink").is_none(),
        "{}",
        b["@odata.nextLink"]
    );
    let mut seen = Vec::new();
    let mut url = format!("{}/v1/ContactPersons?$select=Id&$top=1000", sim.base_url);
    let mut pages = 0;
    loop {
        let b: Value = api
            .c
            .get(&url)
            .bearer_auth(&api.tok)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        pages += 1;
        let page = ids(&b);
        assert!(page.len() <= 300);
        seen.extend(page);
        match b["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(pages, 4, "1000 asked for, served 300 + 300 + 300 + 100");
    assert_eq!(seen.len(), 1000);
    let mut sorted = seen.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), 1000, "no id twice");
}

// ---------------------------------------------------------------------------------------------
// Auth and errors

#[tokio::test(flavor = "multi_thread")]
async fn auth_and_error_bodies() {
    let sim = Sim::start().await;
    sim.populate(10, 1);
    let c = reqwest::Client::new();

    let r = c
        .get(format!("{}/v1/ContactPersons", sim.base_url))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = c
        .get(format!("{}/v1/ContactPersons", sim.base_url))
        .bearer_auth("made-up")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 401);

    // The token endpoint: Basic only, each refresh token once.
    let form = |t: &str| {
        vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", t.to_owned()),
        ]
    };
    let first = sim.refresh_token();
    let no_basic = c
        .post(format!("{}/Token", sim.base_url))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", first.as_str()),
            ("client_id", Sim::CLIENT_ID),
            ("client_secret", Sim::CLIENT_SECRET),
        ])
        .send()
        .await
        .expect("token");
    assert_eq!(
        no_basic.status(),
        400,
        "credentials in the body are refused"
    );
    let wrong = c
        .post(format!("{}/Token", sim.base_url))
        .basic_auth(Sim::CLIENT_ID, Some("wrong"))
        .form(&form(&first))
        .send()
        .await
        .expect("token");
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        wrong.json::<Value>().await.expect("json"),
        json!({"error": "invalid_client"})
    );
    let _ = token(&c, &sim).await;
    let reused = c
        .post(format!("{}/Token", sim.base_url))
        .header("authorization", Sim::basic_auth())
        .form(&form(&first))
        .send()
        .await
        .expect("token");
    assert_eq!(reused.status(), 400, "a used refresh token is invalid");
    assert_eq!(
        reused.json::<Value>().await.expect("json"),
        json!({"error": "invalid_grant"})
    );

    let api = Api::new(&sim).await;
    for (q, what) in [
        ("UpdatedOn gt yesterday", "bad literal"),
        ("UpdatedOn gt '2026-11-01T08:00:00Z'", "quoted literal"),
        ("LastName eq 'x'", "unsupported property"),
        ("UpdatedOn between 1", "bad operator"),
    ] {
        let (st, b) = api.query("/v1/ContactPersons", &[("$filter", q)]).await;
        assert_eq!(st, 400, "{what}: {b}");
        assert_odata_error(&b);
    }
    for (k, v) in [
        ("$orderby", "LastName"),
        ("$top", "-1"),
        ("$expand", "Nope"),
        ("$select", "Nope"),
        ("$search", "x"),
    ] {
        let (st, b) = api.query("/v1/ContactPersons", &[(k, v)]).await;
        assert_eq!(st, 400, "{k}={v}: {b}");
        assert_odata_error(&b);
    }
    let (st, b) = api.get("/v1/Nonsense").await;
    assert_eq!(st, 404);
    assert_odata_error(&b);
    let (st, b) = api.get("/v1/Companies(424242)").await;
    assert_eq!(st, 404);
    assert_odata_error(&b);

    // The Date header follows the sim clock.
    let r = api
        .req(reqwest::Method::GET, "/v1/Subsystem")
        .send()
        .await
        .expect("get");
    assert!(r.headers()["date"]
        .to_str()
        .expect("date")
        .contains("Nov 2026"));

    sim.expire_tokens();
    let (st, _) = api.get("/v1/Subsystem").await;
    assert_eq!(st, 401);
    let api = Api::new(&sim).await;
    let (st, _) = api.get("/v1/Subsystem").await;
    assert_eq!(st, 200);
    // Tokens also lapse after expires_in on the sim clock.
    sim.advance_clock(Duration::from_secs(1200));
    let (st, _) = api.get("/v1/Subsystem").await;
    assert_eq!(st, 401);
}

// ---------------------------------------------------------------------------------------------
// Faults

#[tokio::test(flavor = "multi_thread")]
async fn fault_switches() {
    let sim = Sim::start().await;
    let p = sim.populate(10, 2);
    let api = Api::new(&sim).await;
    let status = |r: &reqwest::Response| r.status().as_u16();
    let get = || api.req(reqwest::Method::GET, "/v1/Subsystem").send();

    sim.set_faults(Faults {
        throttle_rate: 1.0,
        retry_after: Some(7),
        ..Faults::default()
    });
    let r = get().await.expect("get");
    assert_eq!(status(&r), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    sim.set_faults(Faults {
        throttle_rate: 1.0,
        ..Faults::default()
    });
    let r = get().await.expect("get");
    assert_eq!(status(&r), 429);
    assert!(r.headers().get("retry-after").is_none());

    sim.set_faults(Faults {
        fail_rate: 1.0,
        ..Faults::default()
    });
    let r = get().await.expect("get");
    assert_eq!(status(&r), 500);
    assert_odata_error(&r.json().await.expect("json"));

    sim.set_faults(Faults {
        down: true,
        ..Faults::default()
    });
    let r = get().await.expect("get");
    assert_eq!(status(&r), 503);
    assert_odata_error(&r.json().await.expect("json"));
    let t = api
        .c
        .post(format!("{}/Token", sim.base_url))
        .form(&[("grant_type", "x")])
        .send()
        .await
        .expect("token");
    assert_eq!(t.status(), 503, "/Token is subject to down");

    sim.set_faults(Faults {
        drop_rate: 1.0,
        ..Faults::default()
    });
    let e = get().await;
    assert!(
        e.is_err(),
        "a dropped connection must be a client error, got {:?}",
        e.map(|r| r.status())
    );

    // Dropped writes: some were applied before the drop, some were not.
    let before = sim.list("ContactPersons").len();
    let mut applied = 0;
    for i in 0..16 {
        let n = sim.list("ContactPersons").len();
        let r = api
            .req(reqwest::Method::POST, "/v1/ContactPersons")
            .json(&json!({"LastName": format!("Drop{i}"), "CompanyId": p.companies[0]}))
            .send()
            .await;
        assert!(r.is_err());
        applied += sim.list("ContactPersons").len() - n;
    }
    assert!(
        applied > 0 && applied < 16,
        "applied {applied} of 16 dropped writes"
    );
    assert_eq!(sim.list("ContactPersons").len(), before + applied);

    // Timeouts hang, then answer normally.
    sim.set_faults(Faults {
        timeout_rate: 1.0,
        hang: Duration::from_millis(300),
        ..Faults::default()
    });
    let t0 = std::time::Instant::now();
    let r = get().await.expect("get");
    assert_eq!(status(&r), 200);
    assert!(t0.elapsed() >= Duration::from_millis(300));
    let r = api
        .c
        .get(format!("{}/v1/Subsystem", sim.base_url))
        .bearer_auth(&api.tok)
        .timeout(Duration::from_millis(100))
        .send()
        .await;
    assert!(r.is_err_and(|e| e.is_timeout()));

    // Latency.
    sim.set_faults(Faults {
        latency: Duration::from_millis(150),
        ..Faults::default()
    });
    let t0 = std::time::Instant::now();
    assert_eq!(status(&get().await.expect("get")), 200);
    assert!(t0.elapsed() >= Duration::from_millis(150));

    // Per-credential rate limit over a sliding minute of the sim clock.
    sim.set_faults(Faults {
        rate_limit_per_min: Some(3),
        ..Faults::default()
    });
    sim.reset_stats();
    for _ in 0..3 {
        assert_eq!(status(&get().await.expect("get")), 200);
    }
    let r = get().await.expect("get");
    assert_eq!(status(&r), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .expect("ra")
        .parse()
        .expect("secs");
    assert!((1..=60).contains(&wait), "{wait}");
    // A second token of the same client shares the budget.
    let api2 = Api::new(&sim).await;
    let (st, _) = api2.get("/v1/Subsystem").await;
    assert_eq!(st, 429);
    sim.advance_clock(Duration::from_secs(61));
    assert_eq!(status(&get().await.expect("get")), 200);

    let stats = sim.stats();
    assert_eq!(
        stats.by_route.get("GET Subsystem").copied(),
        Some(6),
        "{:?}",
        stats.by_route
    );
    assert_eq!(
        stats.by_route.get("POST Token").copied(),
        Some(1),
        "{:?}",
        stats.by_route
    );
    assert_eq!(stats.requests, 7);
    assert_eq!(stats.max_per_minute, 6);
    assert_eq!(sim.faults().rate_limit_per_min, Some(3));
}

#[tokio::test(flavor = "multi_thread")]
async fn populate_is_deterministic_and_shaped() {
    let a = Sim::start().await;
    let b = Sim::start().await;
    let pa = a.populate(1000, 42);
    let pb = b.populate(1000, 42);
    assert_eq!(pa.contacts, pb.contacts);
    assert_eq!(pa.contacts.len(), 1000);
    assert_eq!(pa.users.len(), 10);
    assert_eq!(pa.companies.len(), 200);
    assert_eq!(pa.projects.len(), 20);
    assert_eq!(pa.leads.len(), 20);
    let strip = |mut v: Value| {
        // Timestamps follow the real clock component; compare the rest.
        if let Some(m) = v.as_object_mut() {
            m.remove("CreatedOn");
            m.remove("UpdatedOn");
        }
        v
    };
    for set in ["Users", "Companies", "ContactPersons", "Projects", "Leads"] {
        let la: Vec<Value> = a.list(set).into_iter().map(strip).collect();
        let lb: Vec<Value> = b.list(set).into_iter().map(strip).collect();
        assert_eq!(la, lb, "{set} differs for the same seed");
    }
    let subs: Vec<Value> = a.list("Subsystem");
    assert_eq!(
        subs.iter().map(|s| s["Name"].clone()).collect::<Vec<_>>(),
        [json!("DE"), json!("AT"), json!("CH")]
    );
    assert_eq!(subs[0]["IsMaster"], true);
    let interessent = a
        .list("Companies")
        .iter()
        .filter(|c| {
            c["CompanyTypes"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t["Name"] == "Interessent"))
        })
        .count();
    assert!(
        (1..40).contains(&interessent),
        "{interessent} Interessent companies"
    );
    let u = a.get("Users", pa.users[0]).expect("user");
    assert_eq!(u["EMailWork"], format!("user{}@hq.test", pa.users[0]));
    let c = a.get("ContactPersons", pa.contacts[0]).expect("contact");
    assert!(c["DefaultAddress"]["Email"]
        .as_str()
        .is_some_and(|e| e.contains('@')));
    assert!(c["PhoneLandline"]
        .as_str()
        .is_some_and(|p| p.starts_with('+')));
    let pr = a.get("Projects", pa.projects[0]).expect("project");
    let m = pr["Members"].as_array().expect("members").len();
    assert!((2..=4).contains(&m));
}

/// Size check for the benchmark use: `cargo test --release --test hellohq_contract -- --ignored`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "timing check, run explicitly"]
async fn populate_100k_and_serve_pages_fast() {
    let sim = Sim::start().await;
    let t0 = std::time::Instant::now();
    let p = sim.populate(100_000, 1);
    let populate = t0.elapsed();
    assert_eq!(p.contacts.len(), 100_000);
    let api = Api::new(&sim).await;
    let t1 = std::time::Instant::now();
    let mut n = 0;
    for skip in (0..100_000).step_by(1000) {
        let (st, b) = api
            .query(
                "/v1/ContactPersons",
                &[("$expand", "DefaultAddress"), ("$skip", &skip.to_string())],
            )
            .await;
        assert_eq!(st, 200);
        n += b["value"].as_array().expect("value").len();
    }
    let pages = t1.elapsed();
    let t2 = std::time::Instant::now();
    let (_, b) = api
        .query(
            "/v1/ContactPersons",
            &[
                ("$orderby", "UpdatedOn,Id"),
                ("$skip", "50000"),
                ("$count", "true"),
            ],
        )
        .await;
    assert_eq!(b["@odata.count"], 100_000);
    let sorted = t2.elapsed();
    assert_eq!(n, 100_000);
    eprintln!("populate(100k) {populate:?}; 100 Id-ordered pages {pages:?}; one UpdatedOn-ordered page {sorted:?}");
    assert!(
        populate < Duration::from_secs(5),
        "populate took {populate:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// OpenAPI 3 validator (v2)

struct Spec3 {
    root: Value,
}

fn spec3() -> &'static Spec3 {
    static SPEC: OnceLock<Spec3> = OnceLock::new();
    SPEC.get_or_init(|| {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hellohq/v2-rest-openapi.json");
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let root: Value = serde_json::from_str(&text).expect("openapi json");
        assert_eq!(root["openapi"], "3.0.1", "spec version changed");
        Spec3 { root }
    })
}

impl Spec3 {
    fn schema(&self, name: &str) -> &Value {
        let d = &self.root["components"]["schemas"][name];
        assert!(d.is_object(), "no schema {name}");
        d
    }

    /// Follows `$ref` chains. In OpenAPI 3.0 the siblings of a `$ref` are ignored, so a
    /// `nullable` next to a `$ref` does not count; the target's own flags do.
    fn resolve<'a>(&'a self, mut s: &'a Value) -> &'a Value {
        for _ in 0..16 {
            match s["$ref"].as_str() {
                Some(r) => {
                    s = self.schema(
                        r.strip_prefix("#/components/schemas/")
                            .unwrap_or_else(|| panic!("odd $ref {r}")),
                    )
                }
                None => return s,
            }
        }
        panic!("$ref chain too long")
    }

    /// The `application/json` schema a path declares for `method` and `status`.
    fn response(&self, path: &str, method: &str, status: &str) -> &Value {
        let s = &self.root["paths"][path][method]["responses"][status]["content"]
            ["application/json"]["schema"];
        assert!(
            s.is_object(),
            "no {method} {path} {status} schema in the spec"
        );
        s
    }

    fn validate(&self, schema: &Value, v: &Value) -> Vec<String> {
        let mut errs = Vec::new();
        self.check(schema, v, "$", &mut errs);
        errs
    }

    fn check(&self, schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
        let schema = self.resolve(schema);
        if v.is_null() {
            if schema["nullable"] != true {
                errs.push(format!("{at}: null where the schema is not nullable"));
            }
            return;
        }
        if let Some(parts) = schema["allOf"].as_array() {
            // Merge the parts so that "undeclared" means undeclared in all of them.
            let mut props = serde_json::Map::new();
            let mut required = Vec::new();
            let mut other = Vec::new();
            for p in parts {
                let p = self.resolve(p);
                if p["properties"].is_object() || p["type"] == "object" {
                    if let Some(m) = p["properties"].as_object() {
                        props.extend(m.clone());
                    }
                    required.extend(p["required"].as_array().cloned().unwrap_or_default());
                } else {
                    other.push(p);
                }
            }
            if !props.is_empty() {
                let merged = json!({"type": "object", "properties": props, "required": required});
                self.check(&merged, v, at, errs);
            }
            for p in other {
                self.check(p, v, at, errs);
            }
            return;
        }
        for (kw, want_one) in [("oneOf", true), ("anyOf", false)] {
            if let Some(alts) = schema[kw].as_array() {
                let ok = alts
                    .iter()
                    .filter(|a| self.validate(a, v).is_empty())
                    .count();
                if (want_one && ok != 1) || (!want_one && ok == 0) {
                    errs.push(format!("{at}: {ok} of the {kw} alternatives match {v}"));
                }
                return;
            }
        }
        let mut ty = schema["type"].as_str();
        if let Some(allowed) = schema["enum"].as_array() {
            // The v2 spec declares its enums (DocumentType, CustomFieldType, SalutationForm…) as
            // `"type": "integer"` with string members. Nothing could satisfy both, so such an enum
            // is read as what its members are: a string enum.
            if ty == Some("integer") && allowed.iter().all(Value::is_string) {
                ty = Some("string");
            }
            if !allowed.contains(v) {
                errs.push(format!("{at}: {v} not in enum {allowed:?}"));
            }
        }
        let format = schema["format"].as_str();
        match ty {
            Some("string") => match v.as_str() {
                None => errs.push(format!("{at}: expected string, got {v}")),
                Some(s) => {
                    if format == Some("date-time") && !is_rfc3339(s) {
                        errs.push(format!("{at}: '{s}' is not an RFC 3339 date-time"));
                    }
                    if format == Some("uuid") && !is_uuid(s) {
                        errs.push(format!("{at}: '{s}' is not a uuid"));
                    }
                    if let Some(n) = schema["minLength"].as_u64() {
                        if (s.chars().count() as u64) < n {
                            errs.push(format!("{at}: '{s}' shorter than minLength {n}"));
                        }
                    }
                }
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
                None => errs.push(format!("{at}: expected array, got {}", kind(v))),
                Some(items) => {
                    for (i, it) in items.iter().enumerate() {
                        self.check(&schema["items"], it, &format!("{at}[{i}]"), errs);
                    }
                }
            },
            Some("object") => self.check_object(schema, v, at, errs),
            None if schema["properties"].is_object() => self.check_object(schema, v, at, errs),
            Some(other) => errs.push(format!("{at}: schema has unknown type {other}")),
            None => {} // untyped (e.g. CustomFieldGet.value): anything goes
        }
    }

    fn check_object(&self, schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
        let Some(obj) = v.as_object() else {
            errs.push(format!("{at}: expected object, got {}", kind(v)));
            return;
        };
        let empty = serde_json::Map::new();
        let props = schema["properties"].as_object().unwrap_or(&empty);
        for r in schema["required"].as_array().into_iter().flatten() {
            let r = r.as_str().expect("required name");
            if !obj.contains_key(r) {
                errs.push(format!("{at}: required property {r} missing"));
            }
        }
        for (k, val) in obj {
            let path = format!("{at}.{k}");
            match (props.get(k), &schema["additionalProperties"]) {
                (Some(p), _) => self.check(p, val, &path, errs),
                (None, Value::Bool(true)) => {}
                (None, extra) if extra.is_object() => self.check(extra, val, &path, errs),
                // Absent or false: the v2 schemas all say false; be strict either way.
                (None, _) => errs.push(format!("{at}: undeclared property {k}")),
            }
        }
    }
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|c| c.is_ascii_hexdigit()))
}

fn assert_valid3(schema: &Value, v: &Value, what: &str) {
    let errs = spec3().validate(schema, v);
    assert!(
        errs.is_empty(),
        "{what}: {} violation(s):\n  {}",
        errs.len(),
        errs.iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  ")
    );
}

#[test]
fn v2_validator_rejects_bad_objects() {
    let s = spec3();
    let sub = s.schema("SubsystemGet");
    let ok = json!({"id": 1, "name": null, "isMaster": true, "currency": "EUR",
        "createdOn": "2026-11-01T08:00:00Z", "createdBy": 1,
        "updatedOn": "2026-11-01T08:00:00.123Z", "updatedBy": 1});
    assert_eq!(s.validate(sub, &ok), Vec::<String>::new());

    let e = s.validate(sub, &json!({"id": 1, "Name": "DE"}));
    assert!(
        e.iter().any(|m| m.contains("$: undeclared property Name")),
        "{e:?}"
    );
    let e = s.validate(sub, &json!({"id": "1"}));
    assert!(
        e.iter().any(|m| m.contains("$.id: expected integer")),
        "{e:?}"
    );
    let e = s.validate(sub, &json!({"id": 1, "isMaster": "true"}));
    assert!(e.iter().any(|m| m.contains("expected boolean")), "{e:?}");
    let e = s.validate(sub, &json!({"id": 1, "isMaster": null}));
    assert!(
        e.iter()
            .any(|m| m.contains("$.isMaster: null where the schema is not nullable")),
        "{e:?}"
    );
    let e = s.validate(sub, &json!({"id": 3_000_000_000_i64}));
    assert!(e.iter().any(|m| m.contains("int32")), "{e:?}");
    let e = s.validate(sub, &json!({"id": 1, "updatedOn": "2026-11-01 08:00:00"}));
    assert!(e.iter().any(|m| m.contains("RFC 3339")), "{e:?}");

    // Nested through $ref: required, minLength, arrays, and a non-nullable $ref object.
    let co = s.schema("CompanyGetRelated");
    assert!(s
        .validate(co, &json!({"name": "X", "addresses": null}))
        .is_empty());
    let e = s.validate(co, &json!({"id": 1}));
    assert!(
        e.iter()
            .any(|m| m.contains("required property name missing")),
        "{e:?}"
    );
    let e = s.validate(co, &json!({"name": ""}));
    assert!(e.iter().any(|m| m.contains("minLength")), "{e:?}");
    let e = s.validate(co, &json!({"name": "X", "defaultAddress": null}));
    assert!(
        e.iter().any(|m| m.contains("$.defaultAddress: null")),
        "{e:?}"
    );
    let e = s.validate(
        co,
        &json!({"name": "X", "subsystems": [{"name": "DE", "id": 1}]}),
    );
    assert!(
        e.iter()
            .any(|m| m.contains("$.subsystems[0]: undeclared property id")),
        "{e:?}"
    );
    let addr = json!({"street": "S", "zipCode": "1", "city": "C", "country": "DE",
        "description": "D", "standardForDocumentType": "Invoice"});
    assert!(s
        .validate(co, &json!({"name": "X", "defaultAddress": addr}))
        .is_empty());
    let mut bad = addr.clone();
    bad.as_object_mut().expect("obj").remove("description");
    bad["mail"] = json!("x@y");
    let e = s.validate(co, &json!({"name": "X", "addresses": [bad]}));
    assert!(
        e.iter()
            .any(|m| m.contains("$.addresses[0]: required property description missing")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.contains("$.addresses[0]: undeclared property mail")),
        "{e:?}"
    );
    let e = s.validate(co, &json!({"name": "X", "responsibleUsers": {"userId": 1}}));
    assert!(e.iter().any(|m| m.contains("expected array")), "{e:?}");

    // The spec's enums are `"type": "integer"` with string members.
    let dt = s.schema("DocumentType");
    assert_eq!(dt["type"], "integer", "spec changed: DocumentType type");
    assert!(s.validate(dt, &json!("Invoice")).is_empty());
    assert!(!s.validate(dt, &json!("Akonto")).is_empty());
    assert!(!s.validate(dt, &json!(1)).is_empty());

    // Keywords the two spec schemas here do not use.
    let synthetic = json!({"oneOf": [
        {"type": "string", "format": "uuid"},
        {"type": "object", "properties": {"a": {"type": "integer", "format": "int64"}},
         "additionalProperties": false}
    ]});
    assert!(s
        .validate(&synthetic, &json!("0b7e3f1c-55aa-4c1e-9d3b-8f2a6c4e1d00"))
        .is_empty());
    assert!(s
        .validate(&synthetic, &json!({"a": 5_000_000_000_i64}))
        .is_empty());
    assert!(!s.validate(&synthetic, &json!("not-a-uuid")).is_empty());
    assert!(!s.validate(&synthetic, &json!({"a": 1, "b": 2})).is_empty());
    let all = json!({"allOf": [
        {"$ref": "#/components/schemas/SubsystemBase"},
        {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}
    ]});
    assert!(s
        .validate(&all, &json!({"id": 1, "name": "DE", "isMaster": true}))
        .is_empty());
    let e = s.validate(&all, &json!({"name": "DE", "extra": 1}));
    assert!(
        e.iter().any(|m| m.contains("required property id")),
        "{e:?}"
    );
    assert!(
        e.iter().any(|m| m.contains("undeclared property extra")),
        "{e:?}"
    );

    // What the v2 paths used here declare.
    for p in ["/v2/Subsystems", "/v2/Companies"] {
        let r = s.response(p, "get", "200");
        assert_eq!(r["type"], "array", "{p}");
        let one = s.response(&format!("{p}/{{id}}"), "get", "200");
        assert_eq!(one["$ref"], r["items"]["$ref"], "{p}");
        for path in [p.to_owned(), format!("{p}/{{id}}")] {
            let responses = s.root["paths"][&path]["get"]["responses"]
                .as_object()
                .expect("responses");
            assert_eq!(
                responses.keys().collect::<Vec<_>>(),
                ["200"],
                "spec changed: {path} now declares more responses (an error schema?)"
            );
            assert!(
                s.root["paths"][&path]["get"]["parameters"]
                    .as_array()
                    .is_none_or(|a| a.iter().all(|p| p["in"] == "path")),
                "spec changed: {path} now declares query parameters"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// v2 endpoints

struct V2Answer {
    status: u16,
    count: Option<usize>,
    next: Option<String>,
    body: Value,
}

impl Api {
    /// GET an absolute URL or a path (query already encoded as given).
    async fn v2(&self, url: &str) -> V2Answer {
        let url = if url.starts_with("http") {
            url.to_owned()
        } else {
            format!("{}{url}", self.base)
        };
        let r = self
            .c
            .get(&url)
            .bearer_auth(&self.tok)
            .send()
            .await
            .expect("send");
        let h = |k: &str| {
            r.headers()
                .get(k)
                .map(|v| v.to_str().expect("ascii header").to_owned())
        };
        let count = h("helloHQ-Count").map(|c| c.parse().expect("count number"));
        let next = h("helloHQ-NextLink");
        let status = r.status().as_u16();
        let body = r.json().await.unwrap_or(Value::Null);
        V2Answer {
            status,
            count,
            next,
            body,
        }
    }
}

fn v2_ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|o| o["id"].as_i64().expect("id"))
        .collect()
}

fn assert_v2_error(v: &Value) {
    let m = v.as_object().unwrap_or_else(|| panic!("error body {v}"));
    assert_eq!(m.keys().collect::<Vec<_>>(), ["message"], "{v}");
    assert!(m["message"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_subsystems_and_companies_match_the_spec() {
    let sim = Sim::start().await;
    let p = sim.populate(300, 7);
    let api = Api::new(&sim).await;
    let s = spec3();

    // Subsystems.
    let a = api.v2("/v2/Subsystems").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_valid3(
        s.response("/v2/Subsystems", "get", "200"),
        &a.body,
        "GET /v2/Subsystems",
    );
    assert_eq!(a.count, Some(3));
    assert_eq!(a.next, None);
    let stored = sim.list("Subsystem");
    for (v2, v1) in a.body.as_array().expect("array").iter().zip(&stored) {
        assert_eq!(v2["id"], v1["Id"]);
        assert_eq!(v2["name"], v1["Name"]);
        assert_eq!(v2["isMaster"], v1["IsMaster"]);
        assert_eq!(v2["updatedOn"], v1["UpdatedOn"]);
        assert_eq!(v2["createdOn"], v1["CreatedOn"]);
        assert!(v2.as_object().expect("obj").contains_key("currency"));
    }
    let one = api.v2("/v2/Subsystems/1").await;
    assert_eq!(one.status, 200);
    assert_eq!(one.count, None, "no count header on a single GET");
    assert_valid3(
        s.response("/v2/Subsystems/{id}", "get", "200"),
        &one.body,
        "GET /v2/Subsystems/{id}",
    );
    assert_eq!(one.body, a.body[0]);

    // Companies: every one of them, related data always present.
    sim.update("Companies", p.companies[0], |o| {
        o["CustomFields"] = json!([{"Id": 9, "Name": "Branche", "Value": "Bau", "Type": "Text"}]);
        o["DefaultAddress"]["DefaultForDocumentType"] = json!("Invoice");
    });
    let a = api.v2("/v2/Companies").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_valid3(
        s.response("/v2/Companies", "get", "200"),
        &a.body,
        "GET /v2/Companies",
    );
    let mut want: Vec<i64> = p.companies.iter().map(|i| *i as i64).collect();
    want.sort_unstable();
    assert_eq!(v2_ids(&a.body), want);
    assert_eq!(a.count, Some(want.len()));
    assert_eq!(a.next, None);
    let mut link_ids = BTreeSet::new();
    for c in a.body.as_array().expect("array") {
        let id = c["id"].as_i64().expect("id");
        let v1 = sim.get("Companies", id as i32).expect("stored");
        assert_eq!(c["name"], v1["Name"]);
        assert_eq!(c["updatedOn"], v1["UpdatedOn"]);
        assert_eq!(c["createdBy"], v1["CreatedBy"]);
        let ids = |v: &Value, k: &str| -> Vec<i64> {
            v.as_array()
                .expect("array")
                .iter()
                .map(|x| x[k].as_i64().expect("int"))
                .collect()
        };
        assert_eq!(
            ids(&c["companyTypes"], "id"),
            ids(&v1["CompanyTypes"], "Id")
        );
        assert!(c["companyTypes"]
            .as_array()
            .expect("types")
            .iter()
            .all(|t| t["companyId"] == id && t["name"].is_string()));
        assert_eq!(
            ids(&c["responsibleUsers"], "userId"),
            ids(&v1["ResponsibleUsers"], "Id")
        );
        for r in c["responsibleUsers"].as_array().expect("users") {
            assert!(
                link_ids.insert(r["id"].as_i64().expect("link id")),
                "link ids are unique"
            );
        }
        let subs: Vec<&Value> = v1["Subsystems"]
            .as_array()
            .expect("subs")
            .iter()
            .map(|x| &x["Name"])
            .collect();
        let got: Vec<&Value> = c["subsystems"]
            .as_array()
            .expect("subs")
            .iter()
            .map(|x| &x["name"])
            .collect();
        assert_eq!(got, subs);
        let (d, vd) = (&c["defaultAddress"], &v1["DefaultAddress"]);
        assert_eq!(d["id"], vd["Id"]);
        assert_eq!(d["street"], vd["Street"]);
        assert_eq!(d["houseNumber"], vd["HouseNumber"]);
        assert_eq!(d["zipCode"], vd["ZipCode"]);
        assert_eq!(d["city"], vd["City"]);
        assert_eq!(d["country"], vd["Country"]);
        assert_eq!(d["email"], vd["Email"]);
        assert_eq!(d["website"], vd["Website"]);
        assert_eq!(c["addresses"], json!([d]));
        assert!(c["customFields"].is_array());
    }
    let first = &a.body[0];
    assert_eq!(first["customFields"][0]["name"], "Branche");
    assert_eq!(
        first["defaultAddress"]["standardForDocumentType"],
        "Invoice"
    );

    // Single GETs; the responsible-user link ids are stable between answers.
    for id in [p.companies[0], p.companies[p.companies.len() / 2]] {
        let one = api.v2(&format!("/v2/Companies/{id}")).await;
        assert_eq!(one.status, 200, "{}", one.body);
        assert_valid3(
            s.response("/v2/Companies/{id}", "get", "200"),
            &one.body,
            "GET /v2/Companies/{id}",
        );
        let listed = a
            .body
            .as_array()
            .expect("array")
            .iter()
            .find(|c| c["id"] == id)
            .expect("listed");
        assert_eq!(&one.body, listed);
    }
    for url in ["/v2/Companies/424242", "/v2/Subsystems/99"] {
        let r = api.v2(url).await;
        assert_eq!(r.status, 404, "{url}");
        assert_v2_error(&r.body);
    }
    // A deleted company is gone from v2 as well.
    let gone = *p.companies.last().expect("company");
    assert!(sim.delete("Companies", gone));
    assert_eq!(api.v2(&format!("/v2/Companies/{gone}")).await.status, 404);
    assert_eq!(api.v2("/v2/Companies").await.count, Some(want.len() - 1));

    let by_route = sim.stats().by_route;
    for k in [
        "GET v2/Subsystems",
        "GET v2/Subsystems(id)",
        "GET v2/Companies",
        "GET v2/Companies(id)",
    ] {
        assert!(by_route.get(k).is_some_and(|n| *n > 0), "{k}: {by_route:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_paging_filter_and_count() {
    let sim = Sim::start().await;
    let p = sim.populate(2500, 11);
    let api = Api::new(&sim).await;
    let mut want: Vec<i64> = p.companies.iter().map(|i| *i as i64).collect();
    want.sort_unstable();
    let total = want.len();
    assert_eq!(total, 500);

    // top/skip in id order covers every id exactly once; NextLink names the next page.
    let mut seen: Vec<i64> = Vec::new();
    let mut links = Vec::new();
    let mut skip = 0;
    loop {
        let a = api.v2(&format!("/v2/Companies?top=70&skip={skip}")).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.count, Some(total));
        let page = v2_ids(&a.body);
        assert!(page.len() <= 70);
        seen.extend(&page);
        skip += page.len();
        match a.next {
            Some(n) => {
                assert_eq!(
                    n,
                    format!("{}/v2/Companies?top=70&skip={skip}", sim.base_url)
                );
                links.push(n);
            }
            None => {
                assert_eq!(skip, total, "NextLink missing before the end");
                break;
            }
        }
    }
    assert_eq!(seen, want);
    assert_eq!(links.len(), total.div_ceil(70) - 1);
    // Following the links gives the same sequence.
    let mut followed = Vec::new();
    let mut url = Some("/v2/Companies?top=70".to_owned());
    while let Some(u) = url {
        let a = api.v2(&u).await;
        assert_eq!(a.status, 200);
        followed.extend(v2_ids(&a.body));
        url = a.next;
    }
    assert_eq!(followed, want);
    // Default page size is 1000: one page, no link. Skipping past the end: empty, no link.
    let a = api.v2("/v2/Companies").await;
    assert_eq!((v2_ids(&a.body).len(), a.next), (total, None));
    let a = api.v2("/v2/Companies?skip=9999").await;
    assert_eq!(
        (a.body.clone(), a.count, a.next),
        (json!([]), Some(total), None)
    );
    let a = api.v2("/v2/Companies?top=1000").await;
    assert_eq!(a.status, 200);

    // orderby=updatedOn,id is sorted and still complete.
    let mut seen = Vec::new();
    let mut last = (String::new(), 0);
    let mut url = Some("/v2/Companies?orderby=updatedOn,id&top=200".to_owned());
    while let Some(u) = url {
        let a = api.v2(&u).await;
        assert_eq!(a.status, 200, "{}", a.body);
        for c in a.body.as_array().expect("array") {
            let k = (
                c["updatedOn"].as_str().expect("updatedOn").to_owned(),
                c["id"].as_i64().expect("id"),
            );
            assert!(k > last, "not ordered by updatedOn,id: {last:?} then {k:?}");
            last = k;
            seen.push(last.1);
        }
        url = a.next;
        if let Some(n) = &url {
            assert!(n.contains("orderby=updatedOn%2Cid"), "{n}");
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, want);

    // filter=updatedOn ge datetime'…' selects exactly the companies updated since.
    let mut stamps: Vec<String> = sim
        .list("Companies")
        .iter()
        .map(|c| c["UpdatedOn"].as_str().expect("UpdatedOn").to_owned())
        .collect();
    stamps.sort_unstable();
    let cursor = stamps[stamps.len() / 3].clone();
    let expect = |pred: &dyn Fn(&str) -> bool| -> Vec<i64> {
        sim.list("Companies")
            .iter()
            .filter(|c| pred(c["UpdatedOn"].as_str().expect("UpdatedOn")))
            .map(|c| c["Id"].as_i64().expect("Id"))
            .collect()
    };
    let bare = cursor.trim_end_matches('Z').to_owned();
    let cases: Vec<(String, Vec<i64>)> = vec![
        (
            format!("updatedOn ge datetime'{cursor}'"),
            expect(&|u| u >= cursor.as_str()),
        ),
        (
            format!("updatedOn ge datetime'{bare}'"),
            expect(&|u| u >= cursor.as_str()),
        ),
        (
            format!("updatedOn gt datetime'{cursor}'"),
            expect(&|u| u > cursor.as_str()),
        ),
        (
            format!("updatedOn le datetime'{bare}'"),
            expect(&|u| u <= cursor.as_str()),
        ),
        (
            format!("updatedOn lt datetime'{cursor}'"),
            expect(&|u| u < cursor.as_str()),
        ),
    ];
    for (f, exp) in &cases {
        assert!(!exp.is_empty() && exp.len() < total, "{f}: degenerate case");
        let a = api.query("/v2/Companies", &[("filter", f)]).await;
        assert_eq!(a.0, 200, "{f}: {}", a.1);
        assert_eq!(&v2_ids(&a.1), exp, "{f}");
        let h = api
            .req(reqwest::Method::GET, "/v2/Companies")
            .query(&[("filter", f.as_str()), ("top", "1")])
            .send()
            .await
            .expect("send");
        assert_eq!(
            h.headers()["helloHQ-Count"].to_str().expect("count"),
            exp.len().to_string(),
            "{f}"
        );
    }
    // Hand-encoded variants: %20 and %27, '+' for spaces.
    let n_ge = cases[0].1.len();
    for q in [
        format!("filter=updatedOn%20ge%20datetime%27{cursor}%27"),
        format!("filter=updatedOn+ge+datetime'{cursor}'"),
        format!(
            "filter=updatedOn%20ge%20datetime%27{}%27",
            cursor.replace(':', "%3A")
        ),
    ] {
        let a = api.v2(&format!("/v2/Companies?{q}")).await;
        assert_eq!(a.status, 200, "{q}: {}", a.body);
        assert_eq!((v2_ids(&a.body).len(), a.count), (n_ge, Some(n_ge)), "{q}");
    }
    // NextLink keeps the filter: paging a filtered set follows it.
    let mut followed = Vec::new();
    let mut url = Some(format!(
        "/v2/Companies?filter=updatedOn%20ge%20datetime%27{cursor}%27&top=50"
    ));
    while let Some(u) = url {
        let a = api.v2(&u).await;
        assert_eq!(a.status, 200, "{u}: {}", a.body);
        assert_eq!(a.count, Some(n_ge));
        followed.extend(v2_ids(&a.body));
        url = a.next;
    }
    assert_eq!(followed, cases[0].1);

    // Changes after a cursor on the sim clock; a silent edit stays invisible.
    sim.advance_clock(Duration::from_secs(120));
    let cursor = sim.now();
    sim.advance_clock(Duration::from_secs(1));
    let changed = [p.companies[3], p.companies[30], p.companies[300]];
    for id in changed {
        assert!(sim.update("Companies", id, |o| o["Name"] = json!("Neu GmbH")));
    }
    assert!(sim.update_silent("Companies", p.companies[4], |o| o["Name"] = json!("Still")));
    let a = api
        .query(
            "/v2/Companies",
            &[("filter", &format!("updatedOn ge datetime'{cursor}'"))],
        )
        .await;
    let exp: Vec<i64> = changed.iter().map(|i| *i as i64).collect();
    assert_eq!(v2_ids(&a.1), exp);
    assert!(a
        .1
        .as_array()
        .expect("array")
        .iter()
        .all(|c| c["name"] == "Neu GmbH"));

    // Requests are recorded like v1's.
    let paths = sim.stats().paths;
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("/v2/Companies?filter=updatedOn ge datetime")),
        "{:?}",
        &paths[paths.len().saturating_sub(3)..]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_errors_auth_and_shared_limits() {
    let sim = Sim::start().await;
    sim.populate(20, 4);
    let api = Api::new(&sim).await;

    for q in [
        "top=1001",
        "top=0",
        "top=-1",
        "top=ten",
        "skip=-1",
        "filter=garbage",
        "filter=updatedOn%20ge%202026-11-01T08:00:00Z",
        "filter=updatedOn%20ge%20datetime%27yesterday%27",
        "filter=name%20eq%20%27x%27",
        "filter=updatedOn%20between%20datetime%272026-11-01T08:00:00Z%27",
        "orderby=name",
        "orderby=updatedOn%20desc",
        "%24filter=updatedOn%20ge%20datetime%272026-11-01T08:00:00Z%27",
        "%24top=5",
        "expand=subsystems",
        "top=5&top=6",
    ] {
        let a = api.v2(&format!("/v2/Companies?{q}")).await;
        assert_eq!(a.status, 400, "{q}: {}", a.body);
        assert_v2_error(&a.body);
    }
    for url in ["/v2/Companies/abc", "/v2/Companies/1?top=5"] {
        let a = api.v2(url).await;
        assert_eq!(a.status, 400, "{url}: {}", a.body);
        assert_v2_error(&a.body);
    }
    let a = api.v2("/v2/Leads").await;
    assert_eq!(a.status, 404);
    assert_v2_error(&a.body);

    // Writes are not served.
    for (m, url) in [
        (reqwest::Method::POST, "/v2/Companies"),
        (reqwest::Method::PUT, "/v2/Companies/1"),
        (reqwest::Method::DELETE, "/v2/Companies/1"),
        (reqwest::Method::POST, "/v2/Subsystems"),
    ] {
        let r = api
            .req(m.clone(), url)
            .json(&json!({"name": "X"}))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 405, "{m} {url}");
        assert_v2_error(&r.json().await.expect("json"));
    }
    assert!(sim.get("Companies", 1).is_some());

    // 401 without or with an unknown/expired token.
    for tok in [None, Some("made-up")] {
        let mut rq = api.c.get(format!("{}/v2/Companies", sim.base_url));
        if let Some(t) = tok {
            rq = rq.bearer_auth(t);
        }
        let r = rq.send().await.expect("send");
        assert_eq!(r.status(), 401, "{tok:?}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        assert_v2_error(&r.json().await.expect("json"));
    }
    sim.expire_tokens();
    assert_eq!(api.v2("/v2/Subsystems").await.status, 401);
    let api = Api::new(&sim).await;

    // Faults apply to v2 too, with v2 error bodies.
    sim.set_faults(Faults {
        fail_rate: 1.0,
        ..Faults::default()
    });
    let a = api.v2("/v2/Subsystems").await;
    assert_eq!(a.status, 500);
    assert_v2_error(&a.body);
    sim.set_faults(Faults {
        down: true,
        ..Faults::default()
    });
    assert_eq!(api.v2("/v2/Subsystems").await.status, 503);

    // v1 and v2 share one per-credential budget.
    sim.set_faults(Faults {
        rate_limit_per_min: Some(4),
        ..Faults::default()
    });
    sim.advance_clock(Duration::from_secs(61));
    sim.reset_stats();
    assert_eq!(api.get("/v1/Subsystem").await.0, 200);
    assert_eq!(api.v2("/v2/Subsystems").await.status, 200);
    assert_eq!(api.get("/v1/Companies").await.0, 200);
    assert_eq!(api.v2("/v2/Companies/1").await.status, 200);
    let r = api
        .req(reqwest::Method::GET, "/v2/Companies")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(api.get("/v1/Subsystem").await.0, 429);
    sim.advance_clock(Duration::from_secs(61));
    assert_eq!(api.v2("/v2/Companies").await.status, 200);

    let st = sim.stats();
    let route = |k: &str| st.by_route.get(k).copied().unwrap_or(0);
    assert_eq!(route("GET v2/Subsystems"), 1, "{:?}", st.by_route);
    assert_eq!(route("GET v2/Subsystems(id)"), 0);
    assert_eq!(route("GET v2/Companies"), 2);
    assert_eq!(route("GET v2/Companies(id)"), 1);
    assert_eq!(route("GET Subsystem"), 2);
    assert_eq!(st.requests, 7);
    assert_eq!(st.paths.len(), 7);
    assert_eq!(st.paths[1], "/v2/Subsystems?");
}
