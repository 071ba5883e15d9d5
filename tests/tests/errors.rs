//! Every error row of the spine, through real HTTP: status, envelope, code, param, request id.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mesh::config::FailMode;
use mesh::domain::{now_unix, KeyStatus};
use mesh_tests::{on_both_stores, Gateway, GatewayOptions, StoreKind};
use serde_json::{json, Value};

async fn expect_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status for {code}");
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(body["request_id"], request_id, "the body carries the request id of the header");
    for field in ["message", "type", "param", "code"] {
        assert!(body["error"].get(field).is_some(), "envelope field {field} in {body}");
    }
    body
}

async fn auth_errors(kind: StoreKind) {
    let gw = Gateway::start(GatewayOptions::on(kind)).await;
    gw.put_price("openai/gpt-4o", "gpt-4o", "2.5", "10", Some("1.25")).await;
    let body = json!({"model": "openai/gpt-4o", "input": "hi"});
    let url = format!("{}/v1/responses", gw.url);

    let missing = gw.http.post(&url).json(&body).send().await.unwrap();
    let err = expect_error(missing, 401, "missing_api_key").await;
    assert_eq!(err["error"]["type"], "authentication_error");

    let malformed = expect_error(gw.post("sk-not-ours", &body).await, 401, "invalid_api_key").await;
    let unknown = expect_error(gw.post("rsk_01JDEVKEY00000000000000000", &body).await, 401, "invalid_api_key").await;
    assert_eq!(malformed["error"]["message"], unknown["error"]["message"], "one message for malformed and unknown");

    let (suspended, _) = gw.create_key(|k| k.status = KeyStatus::Suspended).await;
    let err = expect_error(gw.post(&suspended, &body).await, 403, "key_suspended").await;
    assert_eq!(err["error"]["type"], "permission_error");
    let (expired, _) = gw.create_key(|k| k.expires_at = Some(now_unix() - 10)).await;
    expect_error(gw.post(&expired, &body).await, 403, "key_suspended").await;
    let (narrow, _) = gw.create_key(|k| k.allowed_models = vec!["openai/gpt-4o-mini".into()]).await;
    let err = expect_error(gw.post(&narrow, &body).await, 403, "model_not_allowed").await;
    assert_eq!(err["error"]["param"], "model");
    assert_eq!(gw.stub.requests().len(), 0, "nothing refused reaches the provider");
}
on_both_stores!(auth_errors_on, auth_errors);

async fn catalog_errors(kind: StoreKind) {
    let gw = Gateway::start(GatewayOptions::on(kind)).await;
    let (secret, _) = gw.create_key(|_| {}).await;
    let err = expect_error(gw.post(&secret, &json!({"input": "hi"})).await, 400, "missing_required_parameter").await;
    assert_eq!(err["error"]["param"], "model");
    let err =
        expect_error(gw.post(&secret, &json!({"model": "acme/nothing", "input": "hi"})).await, 404, "model_not_found")
            .await;
    assert_eq!(err["error"]["param"], "model");

    let mut disabled = gw.put_price("openai/old", "old", "1", "1", None).await;
    disabled.enabled = false;
    gw.stores.prices.put_price(&disabled).await.unwrap();
    expect_error(gw.post(&secret, &json!({"model": "openai/old", "input": "hi"})).await, 404, "model_not_found").await;

    let mut unpriced = gw.put_price("openai/unpriced", "x", "1", "1", None).await;
    unpriced.output_usd_per_mtok = None;
    gw.stores.prices.put_price(&unpriced).await.unwrap();
    expect_error(gw.post(&secret, &json!({"model": "openai/unpriced", "input": "hi"})).await, 404, "model_not_found")
        .await;

    gw.put_row("acme/keyless", "nokey", "m", "1", "1", None).await;
    let err = expect_error(
        gw.post(&secret, &json!({"model": "acme/keyless", "input": "hi"})).await,
        503,
        "provider_not_available",
    )
    .await;
    assert!(!err["error"]["message"].as_str().unwrap().contains("sk-"), "no secrets in errors");
    assert_eq!(gw.stub.requests().len(), 0);
}
on_both_stores!(catalog_errors_on, catalog_errors);

#[tokio::test]
async fn validation_errors_name_the_field() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    gw.put_price("openai/gpt-4o", "gpt-4o", "2.5", "10", None).await;
    let (secret, _) = gw.create_key(|_| {}).await;
    let url = format!("{}/v1/responses", gw.url);
    let raw = gw
        .http
        .post(&url)
        .bearer_auth(&secret)
        .header("content-type", "application/json")
        .body("{\"input\": ")
        .send()
        .await
        .unwrap();
    expect_error(raw, 400, "invalid_json").await;
    let cases = [
        (json!({"model": "openai/gpt-4o"}), "missing_required_parameter", "input"),
        (json!({"model": "openai/gpt-4o", "input": 42}), "invalid_type", "input"),
        (json!({"model": "openai/gpt-4o", "input": "x", "temperature": 2.5}), "invalid_value", "temperature"),
        (json!({"model": "openai/gpt-4o", "input": "x", "max_output_tokens": 0}), "invalid_value", "max_output_tokens"),
        (
            json!({"model": "openai/gpt-4o", "input": "x", "tools": [{"type": "hyperdrive"}]}),
            "unsupported_tool",
            "tools[0].type",
        ),
        (
            json!({"model": "openai/gpt-4o", "input": "x", "plugins": [{"id": "moderation"}]}),
            "unsupported_plugin",
            "plugins",
        ),
        (
            json!({"model": "openai/gpt-4o", "input": vec![json!({"role": "user", "content": "x"}); mesh::request::MAX_INPUT_ITEMS + 1]}),
            "invalid_value",
            "input",
        ),
    ];
    for (body, code, param) in cases {
        let err = expect_error(gw.post(&secret, &body).await, 400, code).await;
        assert_eq!(err["error"]["param"], param, "{body}");
        assert_eq!(err["error"]["type"], "invalid_request_error");
    }
    // 6 MB + 1 byte.
    let huge = format!("{{\"model\":\"openai/gpt-4o\",\"input\":\"{}\"}}", "a".repeat(6 * 1024 * 1024));
    let response = gw
        .http
        .post(&url)
        .bearer_auth(&secret)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    expect_error(response, 413, "request_too_large").await;
    assert_eq!(gw.stub.requests().len(), 0);
}

#[tokio::test]
async fn upstream_errors_are_mapped() {
    let gw = Gateway::start(GatewayOptions {
        configure: |c| c.upstream.first_byte = std::time::Duration::from_millis(500),
        ..GatewayOptions::default()
    })
    .await;
    let (secret, key) = gw.create_key(|_| {}).await;
    for (model, upstream) in [
        ("t/e400", "stub-error-400"),
        ("t/e429", "stub-error-429"),
        ("t/e500", "stub-error-500"),
        ("t/slow", "stub-slow"),
    ] {
        gw.put_price(model, upstream, "1", "1", None).await;
    }
    let err =
        expect_error(gw.post(&secret, &json!({"model": "t/e400", "input": "x"})).await, 400, "invalid_value").await;
    assert_eq!(err["error"]["message"], "Invalid value for 'temperature'.");

    let response = gw.post(&secret, &json!({"model": "t/e429", "input": "x"})).await;
    assert_eq!(response.headers()["retry-after"], "7");
    let err = expect_error(response, 429, "rate_limit_exceeded").await;
    assert_eq!(err["error"]["retry_after_seconds"], 7);

    let err =
        expect_error(gw.post(&secret, &json!({"model": "t/e500", "input": "x"})).await, 502, "upstream_error").await;
    assert!(!err["error"]["message"].as_str().unwrap().contains("exploded"), "upstream internals are not echoed");
    let started = std::time::Instant::now();
    expect_error(gw.post(&secret, &json!({"model": "t/slow", "input": "x"})).await, 504, "gateway_timeout").await;
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "the timeout fired before the stub answered");
    // Failed calls are recorded at no cost.
    gw.settled().await;
    let records = gw.usage_of_key(&key.id).await;
    assert!(records.iter().all(|r| r.cost.0 == 0));
    assert_eq!(gw.key(&key.id).await.spent.0, 0);
}

/// The provider refusing Mesh's own credential (401) or access (403) is the gateway's fault: 502
/// `upstream_error`, not the 401 `invalid_api_key` that makes SDKs blame the caller's Mesh key,
/// and none of the provider's words (which quote the key) in the answer.
#[tokio::test]
async fn provider_credential_refusals_are_the_gateways_fault() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    gw.put_price("t/e401", "stub-error-401", "1", "1", None).await;
    gw.put_price("t/e403", "stub-error-403", "1", "1", None).await;
    let (secret, key) = gw.create_key(|_| {}).await;
    for model in ["t/e401", "t/e403"] {
        for stream in [false, true] {
            let response = gw.post(&secret, &json!({"model": model, "input": "x", "stream": stream})).await;
            let err = expect_error(response, 502, "upstream_error").await;
            assert_eq!(err["error"]["type"], "api_error", "{model}");
            let text = err.to_string();
            for leak in ["sk-", "****", "cret", "Incorrect API key", "proj_stub", "invalid_api_key"] {
                assert!(!text.contains(leak), "{model}: `{leak}` in {text}");
            }
        }
    }
    let requests = gw.stub.requests();
    assert!(requests.iter().any(|r| r.body["model"] == "stub-error-401"), "the provider was asked");
    gw.settled().await;
    let records = gw.usage_of_key(&key.id).await;
    assert!(records.len() >= 4 && records.iter().all(|r| r.cost.0 == 0), "audited at no cost: {}", records.len());

    // A provider refusing the gateway's credential is not retried: the next row serves at once.
    let mut backup = gw.put_row("t/failover", "backup", "stub-ok", "1", "1", None).await;
    backup.is_default = false;
    gw.stores.prices.put_price(&backup).await.unwrap();
    gw.put_price("t/failover", "stub-error-401", "1", "1", None).await;
    let response = gw.post(&secret, &json!({"model": "t/failover", "input": "x"})).await;
    assert_eq!(response.status(), 200);
    let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
    let asked: Vec<String> = gw.stub.requests().iter().map(|r| r.body["model"].to_string()).collect();
    assert_eq!(header("x-mesh-routing-attempts"), "2", "one attempt on the refusing provider: {asked:?}");
    assert_eq!(header("x-mesh-served-provider"), "backup");
}

#[tokio::test]
async fn request_ids_and_routes() {
    let gw = Gateway::start(GatewayOptions { fail_mode: FailMode::Open, ..GatewayOptions::default() }).await;
    let health = gw.http.get(format!("{}/healthz", gw.url)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(health.headers()["x-request-id"].to_str().unwrap().starts_with("req_"));
    let ready = gw.http.get(format!("{}/readyz", gw.url)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let echoed = gw.http.get(format!("{}/healthz", gw.url)).header("x-request-id", "trace-123").send().await.unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "trace-123");
    let insane =
        gw.http.get(format!("{}/healthz", gw.url)).header("x-request-id", "bad id with spaces").send().await.unwrap();
    assert!(insane.headers()["x-request-id"].to_str().unwrap().starts_with("req_"));
    let missing = gw.http.get(format!("{}/v2/nothing", gw.url)).send().await.unwrap();
    expect_error(missing, 404, "not_found").await;
    let wrong_method = gw.http.get(format!("{}/v1/responses", gw.url)).send().await.unwrap();
    assert_eq!(wrong_method.status(), 405);
}
