//! Contract test of the HubSpot simulator (tests/support/hubspot_sim.rs) against the facts in
//! `../shared/specs/hubspot/README.md`: record, list, batch, search, association, owner and
//! error shapes, the documented caps, authentication and rate limits. The HubSpot backend's
//! tests (issue 14) may rely on the simulator only as far as this test pins it.

mod support;

use serde_json::{json, Value};
use support::hubspot_sim::HubSpotSim;

struct C {
    base: String,
    http: reqwest::Client,
}

impl C {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(Some(HubSpotSim::TOKEN), method, path, body)
            .await
    }

    async fn call_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self.http.request(
            reqwest::Method::from_bytes(method.as_bytes()).expect("m"),
            format!("{}{path}", self.base),
        );
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.expect("send");
        let status = r.status().as_u16();
        let text = r.text().await.expect("text");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// The README's `Error` schema: category, correlationId, message.
fn is_error(v: &Value) -> bool {
    v["category"].is_string() && v["correlationId"].is_string() && v["message"].is_string()
}

/// The README's `SimplePublicObject`: id, string-or-null properties, times, archived.
fn is_record(v: &Value) -> bool {
    v["id"].is_string()
        && v["properties"]
            .as_object()
            .is_some_and(|p| p.values().all(|x| x.is_string() || x.is_null()))
        && v["createdAt"].is_string()
        && v["updatedAt"].is_string()
        && v["archived"].is_boolean()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_keeps_to_the_documented_shapes_and_caps() {
    let sim = HubSpotSim::start().await;
    let c = C {
        base: sim.base_url.clone(),
        http: reqwest::Client::new(),
    };
    let owner = sim.add_owner(
        "ana@portal.test",
        "Ana",
        "Alves",
        &[("t1", "Berlin"), ("t2", "Remote")],
        false,
    );
    sim.add_owner("queue@portal.test", "Support", "Queue", &[], true);
    let company = sim.add(
        "companies",
        json!({"name": "Acme", "hubspot_owner_id": owner, "type": "PROSPECT"}),
    );
    let mut contacts = Vec::new();
    for i in 0..25 {
        let id = sim.add("contacts", json!({"firstname": format!("C{i:02}"), "lastname": "Test",
            "email": format!("c{i}@acme.test"), "hubspot_owner_id": owner, "lifecyclestage": "customer"}));
        sim.associate("contacts", id, "companies", company);
        contacts.push(id);
    }

    // Authentication: none or a wrong token is 401 with the Error body.
    for t in [None, Some("pat-wrong")] {
        let (s, v) = c.call_as(t, "GET", "/crm/v3/objects/contacts", None).await;
        assert_eq!(s, 401);
        assert!(is_error(&v), "{v}");
    }

    // Owners.
    let (s, v) = c.call("GET", "/crm/v3/owners", None).await;
    assert_eq!(s, 200);
    let o = &v["results"][0];
    for k in [
        "id",
        "email",
        "firstName",
        "lastName",
        "createdAt",
        "updatedAt",
    ] {
        assert!(o[k].is_string(), "{k}: {o}");
    }
    assert!(o["userId"].is_number() && o["archived"] == false && o["type"] == "PERSON");
    assert_eq!(
        o["teams"][0],
        json!({"id": "t1", "name": "Berlin", "primary": true})
    );
    assert_eq!(v["results"][1]["type"], "QUEUE");
    assert!(v.get("paging").is_none(), "no paging on the last page");

    // Lists: default limit 10, paging.next.after until the last page, which has none; only
    // the properties asked for.
    let mut seen = Vec::new();
    let mut after = String::new();
    let mut pages = Vec::new();
    loop {
        let q = if after.is_empty() {
            String::new()
        } else {
            format!("?after={after}")
        };
        let (s, v) = c
            .call("GET", &format!("/crm/v3/objects/contacts{q}"), None)
            .await;
        assert_eq!(s, 200);
        let rs = v["results"].as_array().expect("results");
        assert!(rs.iter().all(is_record));
        pages.push(rs.len());
        seen.extend(rs.iter().map(|r| r["id"].as_str().unwrap_or("").to_owned()));
        match v["paging"]["next"]["after"].as_str() {
            Some(a) => after = a.to_owned(),
            None => {
                assert!(v.get("paging").is_none());
                break;
            }
        }
    }
    assert_eq!(pages, vec![10, 10, 5]);
    assert_eq!(seen.len(), 25);
    let (_, v) = c
        .call(
            "GET",
            "/crm/v3/objects/contacts?limit=1&properties=firstname",
            None,
        )
        .await;
    let keys: Vec<&String> = v["results"][0]["properties"]
        .as_object()
        .expect("p")
        .keys()
        .collect();
    assert_eq!(keys, vec!["firstname"], "only what was asked for");
    let (s, v) = c
        .call("GET", "/crm/v3/objects/contacts?limit=101", None)
        .await;
    assert_eq!(s, 400);
    assert!(is_error(&v));
    let (_, v) = c
        .call(
            "GET",
            "/crm/v3/objects/0-1?limit=2&associations=companies",
            None,
        )
        .await;
    assert_eq!(
        v["results"][0]["associations"]["companies"]["results"][0]["id"],
        company.to_string()
    );

    // Get by id and by e-mail; create 201, PATCH 200, archive 204, then 404 and archived=true.
    let (s, v) = c
        .call(
            "GET",
            "/crm/v3/objects/contacts/c3@acme.test?idProperty=email&properties=firstname",
            None,
        )
        .await;
    assert_eq!(
        (s, v["properties"]["firstname"].clone()),
        (200, json!("C03"))
    );
    let (s, v) = c.call("POST", "/crm/v3/objects/contacts", Some(json!({"properties": {"firstname": "New", "email": "new@acme.test"},
        "associations": [{"to": {"id": company.to_string()}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279}]}]}))).await;
    assert_eq!(s, 201, "{v}");
    assert!(is_record(&v));
    let new_id = v["id"].as_str().expect("id").to_owned();
    let (s, v) = c
        .call(
            "POST",
            "/crm/v3/objects/contacts",
            Some(json!({"properties": {"email": "new@acme.test"}})),
        )
        .await;
    assert_eq!(s, 409, "an e-mail is unique");
    assert!(is_error(&v));
    let (s, v) = c
        .call(
            "PATCH",
            &format!("/crm/v3/objects/contacts/{new_id}"),
            Some(json!({"properties": {"jobtitle": "CTO"}})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["properties"]["jobtitle"], "CTO");
    let (s, _) = c
        .call(
            "DELETE",
            &format!("/crm/v3/objects/contacts/{new_id}"),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, v) = c
        .call("GET", &format!("/crm/v3/objects/contacts/{new_id}"), None)
        .await;
    assert_eq!(s, 404);
    assert!(is_error(&v));
    let (_, v) = c
        .call("GET", "/crm/v3/objects/contacts?archived=true", None)
        .await;
    assert_eq!(v["results"][0]["id"], new_id.as_str());
    assert!(v["results"][0]["archivedAt"].is_string());

    // Batch read: 200 when all are found, 207 with numErrors and errors otherwise; at most
    // 100 inputs.
    let inputs: Vec<Value> = contacts[..3]
        .iter()
        .map(|i| json!({"id": i.to_string()}))
        .collect();
    let (s, v) = c
        .call(
            "POST",
            "/crm/v3/objects/contacts/batch/read",
            Some(json!({"inputs": inputs, "properties": ["email"]})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["results"].as_array().map(Vec::len), Some(3));
    for k in ["status", "startedAt", "completedAt"] {
        assert!(v[k].is_string(), "{k}");
    }
    let (s, v) = c
        .call(
            "POST",
            "/crm/v3/objects/contacts/batch/read",
            Some(json!({"inputs": [{"id": contacts[0].to_string()}, {"id": "999999"}]})),
        )
        .await;
    assert_eq!(s, 207);
    assert_eq!(v["numErrors"], 1);
    assert!(v["errors"][0]["category"].is_string());
    let many: Vec<Value> = (0..101).map(|i| json!({"id": i.to_string()})).collect();
    let (s, _) = c
        .call(
            "POST",
            "/crm/v3/objects/contacts/batch/read",
            Some(json!({"inputs": many})),
        )
        .await;
    assert_eq!(s, 400);

    // Search: groups OR, filters AND; total, paging; caps.
    let (s, v) = c
        .call(
            "POST",
            "/crm/v3/objects/contacts/search",
            Some(json!({
        "filterGroups": [
            {"filters": [{"propertyName": "firstname", "operator": "EQ", "value": "C01"}]},
            {"filters": [{"propertyName": "firstname", "operator": "IN", "values": ["C02", "C03"]},
                         {"propertyName": "lastname", "operator": "EQ", "value": "Test"}]}],
        "sorts": [{"propertyName": "firstname", "direction": "ASCENDING"}],
        "properties": ["firstname"], "limit": 2})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["total"], 3);
    assert_eq!(v["results"][0]["properties"]["firstname"], "C01");
    assert_eq!(v["paging"]["next"]["after"], "2");
    // Dates filter as instants, given as epoch milliseconds (incremental sync's filter).
    let since = |ms: i64| {
        json!({"filterGroups": [{"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": ms.to_string()}]}],
            "limit": 1})
    };
    let (_, v) = c
        .call("POST", "/crm/v3/objects/contacts/search", Some(since(0)))
        .await;
    assert_eq!(v["total"], 25);
    let (_, v) = c
        .call(
            "POST",
            "/crm/v3/objects/contacts/search",
            Some(since(sim.now_ms() + 60_000)),
        )
        .await;
    assert_eq!(v["total"], 0, "nothing modified in the future");
    // Search has its own budget of 5 a second (pinned below): let it refill.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for (body, why) in [
        (json!({"limit": 201}), "limit over 200"),
        (
            json!({"filterGroups": vec![json!({"filters": []}); 7]}),
            "7 groups",
        ),
        (json!({"after": "9990", "limit": 20}), "past 10,000"),
    ] {
        let (s, v) = c
            .call("POST", "/crm/v3/objects/contacts/search", Some(body))
            .await;
        assert_eq!(s, 400, "{why}");
        assert!(is_error(&v), "{why}");
    }

    // Associations v4: default association, list, batch read, HubSpot's type ids.
    let deal = sim.add(
        "deals",
        json!({"dealname": "Big", "dealstage": "appointmentscheduled", "hubspot_owner_id": owner}),
    );
    let (s, _) = c
        .call(
            "PUT",
            &format!(
                "/crm/v4/objects/deals/{deal}/associations/default/contacts/{}",
                contacts[0]
            ),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (_, v) = c
        .call(
            "GET",
            &format!(
                "/crm/v4/objects/contacts/{}/associations/deals",
                contacts[0]
            ),
            None,
        )
        .await;
    assert_eq!(v["results"][0]["toObjectId"], deal);
    assert_eq!(v["results"][0]["associationTypes"][0]["typeId"], 4);
    let (_, v) = c
        .call(
            "POST",
            "/crm/v4/associations/companies/contacts/batch/read",
            Some(json!({"inputs": [{"id": company.to_string()}]})),
        )
        .await;
    assert_eq!(v["results"][0]["to"].as_array().map(Vec::len), Some(25));
    assert_eq!(
        v["results"][0]["to"][0]["associationTypes"][0]["typeId"],
        280
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_enforces_hubspots_rate_limits() {
    let sim = HubSpotSim::start().await;
    let c = C {
        base: sim.base_url.clone(),
        http: reqwest::Client::new(),
    };
    // Search has its own budget: the sixth search within a second is 429 with the policy.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            c.call("POST", "/crm/v3/objects/contacts/search", Some(json!({})))
                .await,
        );
    }
    assert!(statuses[..5].iter().all(|(s, _)| *s == 200));
    assert_eq!(statuses[5].0, 429);
    assert_eq!(statuses[5].1["errorType"], "RATE_LIMIT");
    assert_eq!(statuses[5].1["policyName"], "SECONDLY");
    // The general burst: 100 per rolling 10 s, then 429 naming TEN_SECONDLY_ROLLING.
    let mut last = (0, Value::Null);
    for _ in 0..101 {
        last = c.call("GET", "/crm/v3/owners", None).await;
    }
    assert_eq!(last.0, 429, "{}", last.1);
    assert_eq!(last.1["policyName"], "TEN_SECONDLY_ROLLING");
    assert_eq!(sim.requests().0, 107);
}

/// Webhook deliveries as the README describes them: a JSON array of at most 100 events, each
/// with `eventId`, `subscriptionId`, `portalId`, `appId`, `occurredAt` (ms), `subscriptionType`,
/// `attemptNumber`, `objectId` (property changes: `propertyName`, `propertyValue`,
/// `changeSource`), signed in `X-HubSpot-Signature-v3` = base64(HMAC-SHA256(secret, method +
/// URI + body + timestamp)) — checked here with the hmac crate directly, not the simulator's
/// helper. And the daily-limit 429 body and the OAuth token answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_deliveries_daily_limits_and_tokens_keep_the_documented_shapes() {
    use base64::Engine as _;
    use hmac::Mac as _;
    let sim = HubSpotSim::start().await;
    // Nobody listens here: deliveries fail, and are recorded all the same.
    let target = "http://127.0.0.1:9/hubspot/webhooks";
    sim.deliver_webhooks(target, "contract-secret");
    let c = sim.add("contacts", json!({"firstname": "W"}));
    sim.update("contacts", c, json!({"jobtitle": "Hooked"}));
    let k = sim.add("companies", json!({"name": "K"}));
    sim.associate("contacts", c, "companies", k);
    sim.archive("contacts", c);
    let mut events: Vec<Value> = Vec::new();
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        events = sim
            .deliveries()
            .iter()
            .flat_map(|(_, _, b)| serde_json::from_slice::<Vec<Value>>(b).expect("an array"))
            .collect();
        if events.len() >= 5 {
            break;
        }
    }
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| e["subscriptionType"].as_str())
        .collect();
    for want in [
        "contact.creation",
        "contact.propertyChange",
        "company.creation",
        "contact.associationChange",
        "contact.deletion",
    ] {
        assert!(kinds.contains(&want), "{want} in {kinds:?}");
    }
    for e in &events {
        for f in [
            "eventId",
            "subscriptionId",
            "portalId",
            "appId",
            "occurredAt",
            "attemptNumber",
            "objectId",
        ] {
            assert!(e[f].is_u64(), "{f} in {e}");
        }
        if e["subscriptionType"] == "contact.propertyChange" {
            assert_eq!(e["propertyName"], "jobtitle");
            assert_eq!(e["propertyValue"], "Hooked");
            assert!(e["changeSource"].is_string());
        }
    }
    for (ts, sig, body) in sim.deliveries() {
        let events: Vec<Value> = serde_json::from_slice(&body).expect("array");
        assert!(events.len() <= 100);
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"contract-secret").expect("key");
        mac.update(format!("POST{target}").as_bytes());
        mac.update(&body);
        mac.update(ts.as_bytes());
        let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(sig, want, "v3 signature");
        assert!(ts.parse::<i64>().is_ok(), "timestamp in ms");
    }
    sim.stop_webhooks();

    let http = reqwest::Client::new();
    // The daily limit: HubSpot's 429 body naming the DAILY policy.
    sim.set_daily_exhausted(true);
    let r = http
        .get(format!("{}/crm/v3/objects/contacts", sim.base_url))
        .bearer_auth(HubSpotSim::TOKEN)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 429);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["policyName"], "DAILY");
    assert_eq!(v["errorType"], "RATE_LIMIT");
    assert_eq!(v["status"], "error");
    assert!(v["message"].as_str().is_some_and(|m| m.contains("daily")));
    sim.set_daily_exhausted(false);

    // OAuth: the refresh-token grant answers a bearer token with its lifetime; the refresh
    // token used stops working.
    let grant = |refresh: String| {
        http.post(format!("{}/oauth/v1/token", sim.base_url))
            .form(&[
                ("grant_type", "refresh_token"),
                ("client_id", HubSpotSim::CLIENT_ID),
                ("client_secret", HubSpotSim::CLIENT_SECRET),
                ("refresh_token", refresh.as_str()),
            ])
            .send()
    };
    let r = grant(HubSpotSim::REFRESH_TOKEN.into())
        .await
        .expect("grant");
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["token_type"], "bearer");
    assert!(v["expires_in"].as_u64().is_some_and(|s| s > 0));
    let access = v["access_token"].as_str().expect("access").to_owned();
    let ok = http
        .get(format!("{}/crm/v3/objects/contacts", sim.base_url))
        .bearer_auth(&access)
        .send()
        .await
        .expect("get");
    assert_eq!(ok.status().as_u16(), 200, "the access token works");
    let again = grant(HubSpotSim::REFRESH_TOKEN.into())
        .await
        .expect("grant");
    assert_eq!(
        again.status().as_u16(),
        400,
        "a used refresh token is spent"
    );
}
