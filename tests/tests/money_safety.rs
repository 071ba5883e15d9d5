//! Money and tenant safety: every served request is billed once under the gateway's own id
//! whatever `x-request-id` says, refusals come before any costly work, hard caps count
//! everything sent upstream, soft caps hold for back-to-back requests on one instance and
//! across instances, and no owner's stored response can be replaced by another's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use mesh::domain::{now_unix, CapMode, StoredResponse};
use mesh::money::Nanos;
use mesh_tests::{on_both_stores, services, Gateway, GatewayOptions, StoreKind};
use serde_json::{json, Value};

/// The stub's answer costs 77 500 nano-USD at these prices (12 in, 2 cached, 5 out).
const COST: u64 = 77_500;

async fn gateway(options: GatewayOptions) -> Gateway {
    let gw = Gateway::start(options).await;
    gw.put_price("openai/gpt-4o", "gpt-4o", "2.50", "10.00", Some("1.25")).await;
    gw
}

async fn post_with_id(gw: &Gateway, secret: &str, request_id: &str) -> reqwest::Response {
    gw.http
        .post(format!("{}/v1/responses", gw.url))
        .bearer_auth(secret)
        .header("x-request-id", request_id)
        .json(&json!({"model": "openai/gpt-4o", "input": "x"}))
        .send()
        .await
        .unwrap()
}

async fn replayed_request_ids_are_each_charged(kind: StoreKind) {
    let gw = gateway(GatewayOptions::on(kind)).await;
    let (first, first_key) = gw.create_key(|_| {}).await;
    let (second, second_key) = gw
        .create_key(|k| {
            k.spend_cap = Some(Nanos(1_000_000_000));
            k.spend_cap_mode = CapMode::Hard;
        })
        .await;
    let mut ours = Vec::new();
    for secret in [&first, &second, &first, &second] {
        let response = post_with_id(&gw, secret, "client-id-1").await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-request-id"], "client-id-1", "the caller's id is echoed");
        ours.push(response.headers()["x-mesh-request-id"].to_str().unwrap().to_owned());
    }
    ours.sort();
    ours.dedup();
    assert_eq!(ours.len(), 4, "each request has its own gateway id");
    for id in &ours {
        let record = gw.usage_of(id).await;
        assert!(record.request_id.starts_with("req_"));
        assert_eq!(record.cost.0, COST);
    }
    gw.settled().await;
    for key in [&first_key, &second_key] {
        let stored = gw.key(&key.id).await;
        assert_eq!(stored.spent.0, 2 * COST, "charged twice out of two");
        assert_eq!(stored.reserved, Nanos::ZERO, "every reservation settled");
    }
    assert_eq!(gw.usage_of_key(&first_key.id).await.len() + gw.usage_of_key(&second_key.id).await.len(), 4);
}
on_both_stores!(replayed_request_ids_on, replayed_request_ids_are_each_charged);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_come_before_costly_work() {
    let gw = gateway(GatewayOptions::default()).await;
    let (secret, _) = gw.create_key(|k| k.rpm = Some(1)).await;
    assert_eq!(gw.post(&secret, &json!({"model": "openai/gpt-4o", "input": "x"})).await.status(), 200);
    let calls = gw.stub.requests().len();
    // Over the limit: refused before the history walk (an unknown id would be 404), the
    // template lookup and the validation of the rest of the body.
    let unknown = mesh::ids::new_id("resp_");
    for body in [
        json!({"model": "openai/gpt-4o", "input": "x", "previous_response_id": unknown}),
        json!({"model": "openai/gpt-4o", "input": "x", "template": "no-such-template"}),
        json!({"model": "openai/gpt-4o", "input": "x", "temperature": 7}),
        json!({"input": "x", "template": "no-such-template"}),
    ] {
        let response = gw.post(&secret, &body).await;
        assert_eq!(response.status(), 429, "{body}");
    }
    // A model that does not exist is still refused before the limits (no slot used).
    assert_eq!(gw.post(&secret, &json!({"model": "acme/none", "input": "x"})).await.status(), 404);
    assert_eq!(gw.stub.requests().len(), calls, "no provider call");
    // An unknown key is refused before its body is read.
    let response = gw
        .http
        .post(format!("{}/v1/responses", gw.url))
        .bearer_auth("rsk_01JDEVKEY00000000000000000")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // Under the limit, an unknown previous response is 404 at once when it is not an id this
    // gateway just minted, and after a short wait when it is.
    let (free, _) = gw.create_key(|_| {}).await;
    for id in ["resp_01arz3ndektsv4rrffq69g5fav", "resp_not-a-mesh-id", "msg_01arz3ndektsv4rrffq69g5fav"] {
        let body = json!({"model": "openai/gpt-4o", "input": "x", "previous_response_id": id});
        let response = gw.post(&free, &body).await;
        assert_eq!(response.status(), 404, "{id}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "response_not_found");
    }
}

async fn hard_caps_count_the_rebuilt_history(kind: StoreKind) {
    let gw = gateway(GatewayOptions::on(kind)).await;
    // Turn one: 40 kB of input. Its worst case (about 40 060 tokens at 2 500 nano-USD + 5
    // output tokens at 10 000 = 100 200 000 nano-USD) fits the cap; it costs 77 500.
    let (secret, key) = gw
        .create_key(|k| {
            k.spend_cap = Some(Nanos(100_500_000));
            k.spend_cap_mode = CapMode::Hard;
        })
        .await;
    let long = "y".repeat(40_000);
    let first = gw.post(&secret, &json!({"model": "openai/gpt-4o", "input": long, "max_output_tokens": 5})).await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    gw.settled().await;
    assert_eq!(gw.key(&key.id).await.spent.0, COST);
    // Turn two is a few bytes, but the conversation sent upstream carries turn one's 40 kB: its
    // worst case (over 100 900 000) passes what is left, so it is refused before the provider.
    let calls = gw.stub.requests().len();
    let second = gw
        .post(
            &secret,
            &json!({"model": "openai/gpt-4o", "input": "and?", "max_output_tokens": 5, "previous_response_id": first["id"]}),
        )
        .await;
    assert_eq!(second.status(), 402);
    assert_eq!(gw.stub.requests().len(), calls);
    // The same through an `item_reference` to turn one's 40 kB message: a few bytes of request
    // that resolve to the whole item, counted before the provider.
    let items: Value = gw
        .http
        .get(format!("{}/v1/responses/{}/input_items", gw.url, first["id"].as_str().unwrap()))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let referenced = gw
        .post(
            &secret,
            &json!({"model": "openai/gpt-4o", "max_output_tokens": 5, "input": [
                {"type": "item_reference", "id": items["data"][0]["id"]}, {"role": "user", "content": "and?"}]}),
        )
        .await;
    assert_eq!(referenced.status(), 402);
    assert_eq!(gw.stub.requests().len(), calls);
    // Without the history the same request fits.
    let third = gw.post(&secret, &json!({"model": "openai/gpt-4o", "input": "and?", "max_output_tokens": 5})).await;
    assert_eq!(third.status(), 200);
}
on_both_stores!(hard_caps_history_on, hard_caps_count_the_rebuilt_history);

async fn soft_caps_hold_for_back_to_back_requests(kind: StoreKind) {
    let gw = gateway(GatewayOptions::on(kind)).await;
    let (secret, key) = gw.create_key(|k| k.spend_cap = Some(Nanos(200_000))).await;
    let body = json!({"model": "openai/gpt-4o", "input": "x"});
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(gw.post(&secret, &body).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 402, 402], "155 000 < 200 000 ≤ 232 500");
    gw.settled().await;
    assert_eq!(gw.key(&key.id).await.spent.0, 3 * COST);
    // Streamed answers count before their last event reaches the client too.
    let (secret, _) = gw.create_key(|k| k.spend_cap = Some(Nanos(100_000))).await;
    let streamed = json!({"model": "openai/gpt-4o", "input": "x", "stream": true});
    let first = gw.post(&secret, &streamed).await;
    assert_eq!(first.status(), 200);
    let text = first.text().await.unwrap();
    assert!(text.contains("response.completed"));
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let response = gw.post(&secret, &streamed).await;
        statuses.push(response.status().as_u16());
        let _ = response.text().await.unwrap();
    }
    assert_eq!(statuses, [200, 402], "77 500 < 100 000 ≤ 155 000");
}
on_both_stores!(soft_caps_back_to_back_on, soft_caps_hold_for_back_to_back_requests);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_caps_hold_across_instances_through_the_shared_spend() {
    let prefix = services::unique_prefix();
    // What is checked is the shared spend, not Redis's speed: a loaded machine can take longer
    // than the production 50 ms timeout, after which an instance rightly falls back to its own
    // view (tested in rate_limits.rs).
    let patient = |c: &mut mesh::config::Config| c.redis_timeout = Duration::from_secs(5);
    let a = gateway(GatewayOptions {
        redis: true,
        redis_prefix: Some(prefix.clone()),
        configure: patient,
        ..GatewayOptions::default()
    })
    .await;
    let b = Gateway::start(GatewayOptions {
        redis: true,
        redis_prefix: Some(prefix.clone()),
        stores: Some(a.stores.clone()),
        configure: patient,
        ..GatewayOptions::default()
    })
    .await;
    let (secret, key) = a.create_key(|k| k.spend_cap = Some(Nanos(200_000))).await;
    let body = json!({"model": "openai/gpt-4o", "input": "x"});
    // Instance B serves one request and keeps the key cached.
    assert_eq!(b.post(&secret, &body).await.status(), 200);
    b.settled().await;
    // Instance A serves two more: 232 500 spent in all.
    for _ in 0..2 {
        assert_eq!(a.post(&secret, &body).await.status(), 200);
    }
    let redis = redis::Client::open(services::redis_url()).unwrap();
    let mut connection = redis.get_multiplexed_async_connection().await.unwrap();
    let shared = format!("{prefix}:{{{}}}:s", key.id);
    let started = Instant::now();
    loop {
        let spent: Option<u64> = redis::cmd("GET").arg(&shared).query_async(&mut connection).await.unwrap();
        if spent.is_some_and(|s| s >= 3 * COST) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the shared spend reached {spent:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // B's cached key still says 77 500; the shared spend says the cap is reached.
    let refused = b.post(&secret, &body).await;
    assert_eq!(refused.status(), 402);
}

async fn stored_responses_never_cross_owners(kind: StoreKind) {
    let (stores, _dir) = mesh_tests::gateway::fresh_stores(kind).await;
    let now = now_unix();
    let stored = |owner: &str, text: &str| StoredResponse {
        id: "resp_repeated_by_a_provider".to_owned(),
        owner: owner.to_owned(),
        previous_response_id: None,
        input_items: vec![json!({"role": "user", "content": text})],
        response: json!({"id": "resp_repeated_by_a_provider", "output": []}),
        model: "openai/gpt-4o".to_owned(),
        provider: "openai".to_owned(),
        created_at: now,
        expires_at: now + 3_600,
    };
    stores.responses.put_response(&stored("team-a", "first")).await.unwrap();
    let err = stores.responses.put_response(&stored("team-b", "second")).await.unwrap_err();
    assert!(matches!(err, mesh::error::StoreError::Conflict(_)), "{err:?}");
    let kept = stores.responses.response("resp_repeated_by_a_provider", now).await.unwrap().unwrap();
    assert_eq!((kept.owner.as_str(), kept.input_items[0]["content"].as_str()), ("team-a", Some("first")));
    // The owner itself may rewrite its own record.
    stores.responses.put_response(&stored("team-a", "again")).await.unwrap();
    let kept = stores.responses.response("resp_repeated_by_a_provider", now).await.unwrap().unwrap();
    assert_eq!(kept.input_items[0]["content"], "again");
}
on_both_stores!(stored_responses_on, stored_responses_never_cross_owners);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_ids_are_the_gateways_own() {
    let gw = gateway(GatewayOptions::default()).await;
    let (a, _) = gw.create_key(|k| k.owner = "team-a".into()).await;
    let (b, _) = gw.create_key(|k| k.owner = "team-b".into()).await;
    let body = json!({"model": "openai/gpt-4o", "input": "x"});
    let first: Value = gw.post(&a, &body).await.json().await.unwrap();
    let second: Value = gw.post(&b, &body).await.json().await.unwrap();
    assert_ne!(first["id"], second["id"]);
    for (secret, own, other) in [(&a, &first, &second), (&b, &second, &first)] {
        let get = |id: &Value| {
            gw.http.get(format!("{}/v1/responses/{}", gw.url, id.as_str().unwrap())).bearer_auth(secret).send()
        };
        let started = Instant::now();
        loop {
            let status = get(&own["id"]).await.unwrap().status();
            if status == 200 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "own response stored: {status}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(get(&other["id"]).await.unwrap().status(), 404);
    }
}
