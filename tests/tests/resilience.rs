//! Resilience: failover across a model's rows, retries honouring `retry-after`, circuit
//! breakers (per instance and shared through Redis), timeouts and the request deadline, and
//! every provider fault answered with a defined status, billed once, recovered from without a
//! restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use mesh::domain::UsageStatus;
use mesh::limits::redis::RedisLimiter;
use mesh::routing::BreakerBoard;
use mesh_tests::{eventually, services, wait_for, Gateway, GatewayOptions, PATIENCE};
use serde_json::{json, Value};

fn quick(c: &mut mesh::config::Config) {
    c.routing.backoff_base = Duration::from_millis(10);
    c.routing.backoff_max = Duration::from_millis(50);
    c.upstream.first_byte = Duration::from_millis(500);
    c.upstream.stream_idle = Duration::from_millis(500);
}

async fn two_rows(gw: &Gateway, model: &str, primary_upstream: &str, primary: &str) {
    let first = gw.put_row(model, primary, primary_upstream, "2.50", "10.00", None).await;
    assert!(first.is_default);
    let mut backup = gw.put_row(model, "backup", "gpt-4o", "1.00", "4.00", None).await;
    backup.is_default = false;
    gw.stores.prices.put_price(&backup).await.unwrap();
    // put_row demoted nothing: re-assert the primary as default.
    let mut primary_row = first;
    primary_row.is_default = true;
    gw.stores.prices.put_price(&primary_row).await.unwrap();
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response.headers().get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_on_every_pre_answer_fault() {
    let gw = Gateway::start(GatewayOptions { configure: quick, ..GatewayOptions::default() }).await;
    let (secret, key) = gw.create_key(|_| {}).await;
    let cases = [
        ("f/refused", "gpt-4o", "dead"),
        ("f/e500", "stub-error-500", "openai"),
        ("f/e503", "stub-error-503", "openai"),
        ("f/e429", "stub-error-429", "openai"),
        ("f/slow", "stub-slow", "openai"),
        ("f/malformed", "stub-malformed-json", "openai"),
        ("f/huge", "stub-huge", "openai"),
    ];
    for (model, upstream, provider) in cases {
        two_rows(&gw, model, upstream, provider).await;
        let started = Instant::now();
        let response = gw.post(&secret, &json!({"model": model, "input": "x"})).await;
        assert_eq!(response.status(), 200, "{model} fails over");
        assert_eq!(header(&response, "x-mesh-routing-fallback"), "true", "{model}");
        assert_eq!(header(&response, "x-mesh-served-provider"), "backup", "{model}");
        let attempts: u32 = header(&response, "x-mesh-routing-attempts").parse().unwrap();
        assert!((2..=3).contains(&attempts), "{model}: {attempts} attempts");
        let request_id = header(&response, "x-request-id");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["model"], model);
        assert!(started.elapsed() < Duration::from_secs(3), "{model} took {:?}", started.elapsed());
        let record = gw.usage_of(&request_id).await;
        assert_eq!(record.provider, "backup", "usage names the provider that served");
        // 10 × 1.00 + 2 × 1.00 + 5 × 4.00 = 32 USD per Mtok → 32 000 nano-USD at the backup's prices.
        assert_eq!(record.cost.0, 32_000, "{model}");
    }
    gw.settled().await;
    let spent = gw.key(&key.id).await.spent.0;
    assert_eq!(spent, 32_000 * u64::try_from(cases.len()).unwrap(), "each request charged once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_do_not_fail_over_and_streams_never_switch_mid_way() {
    let gw = Gateway::start(GatewayOptions { configure: quick, ..GatewayOptions::default() }).await;
    let (secret, _) = gw.create_key(|_| {}).await;
    two_rows(&gw, "f/e400", "stub-error-400", "openai").await;
    let response = gw.post(&secret, &json!({"model": "f/e400", "input": "x"})).await;
    assert_eq!(response.status(), 400, "the request itself is at fault");
    assert_eq!(header(&response, "x-mesh-routing-attempts"), "1");
    two_rows(&gw, "f/die", "stub-stream-die", "openai").await;
    let response = gw.post(&secret, &json!({"model": "f/die", "input": "x", "stream": true})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-mesh-served-provider"), "openai");
    let text = response.text().await.unwrap();
    assert!(text.contains("event: response.failed"), "after the first byte there is no failover");
    two_rows(&gw, "f/bad-sse", "stub-malformed-sse", "openai").await;
    let response = gw.post(&secret, &json!({"model": "f/bad-sse", "input": "x", "stream": true})).await;
    let request_id = header(&response, "x-request-id");
    let text = response.text().await.unwrap();
    assert!(text.contains("event: response.failed") && text.contains("malformed"), "{text}");
    assert_eq!(gw.usage_of(&request_id).await.status, UsageStatus::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_honour_retry_after_on_the_same_row() {
    fn patient(c: &mut mesh::config::Config) {
        quick(c);
        c.routing.backoff_max = Duration::from_secs(2);
    }
    let gw = Gateway::start(GatewayOptions { configure: patient, ..GatewayOptions::default() }).await;
    let (secret, _) = gw.create_key(|_| {}).await;
    gw.put_price("f/flaky", "stub-flaky", "2.50", "10.00", None).await;
    let started = Instant::now();
    let response = gw.post(&secret, &json!({"model": "f/flaky", "input": "x"})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-mesh-routing-attempts"), "2");
    assert_eq!(header(&response, "x-mesh-routing-fallback"), "false");
    assert!(started.elapsed() >= Duration::from_secs(1), "waited for retry-after: {:?}", started.elapsed());
    assert_eq!(gw.stub.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_provider_costs_one_timeout_per_breaker_interval() {
    fn config(c: &mut mesh::config::Config) {
        quick(c);
        c.routing.attempts_per_row = 1;
        c.routing.min_calls = 2;
        c.routing.open_for = Duration::from_millis(800);
    }
    let gw = Gateway::start(GatewayOptions { configure: config, ..GatewayOptions::default() }).await;
    let (secret, _) = gw.create_key(|_| {}).await;
    gw.put_price("f/down", "stub-slow", "2.50", "10.00", None).await;
    let body = json!({"model": "f/down", "input": "x"});
    for _ in 0..2 {
        assert_eq!(gw.post(&secret, &body).await.status(), 504);
    }
    let before = gw.stub.requests().len();
    let started = Instant::now();
    for _ in 0..5 {
        let response = gw.post(&secret, &body).await;
        assert_eq!(response.status(), 502, "skipped while open");
    }
    assert!(started.elapsed() < Duration::from_millis(400), "no timeouts paid while open: {:?}", started.elapsed());
    assert_eq!(gw.stub.requests().len(), before, "nothing reached the provider");
    tokio::time::sleep(Duration::from_millis(900)).await;
    gw.post(&secret, &body).await;
    assert_eq!(gw.stub.requests().len(), before + 1, "one probe after the interval");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breakers_are_shared_through_redis() {
    fn config(c: &mut mesh::config::Config) {
        quick(c);
        c.routing.attempts_per_row = 1;
        c.routing.min_calls = 2;
        c.routing.open_for = Duration::from_secs(5);
    }
    let prefix = services::unique_prefix();
    let a = Gateway::start(GatewayOptions {
        redis: true,
        redis_prefix: Some(prefix.clone()),
        configure: config,
        ..GatewayOptions::default()
    })
    .await;
    let b = Gateway::start(GatewayOptions {
        redis: true,
        redis_prefix: Some(prefix.clone()),
        configure: config,
        stores: Some(a.stores.clone()),
        ..GatewayOptions::default()
    })
    .await;
    let (secret, _) = a.create_key(|_| {}).await;
    a.put_price("f/down", "stub-error-500", "2.50", "10.00", None).await;
    let body = json!({"model": "f/down", "input": "x"});
    for _ in 0..2 {
        assert_eq!(a.post(&secret, &body).await.status(), 502);
    }
    // A's breaker opened on the second failure; its announcement is written to Redis by a
    // task of its own, after that answer.
    // (Read through a fresh board each time: a board keeps what it read for a second.)
    let pair = mesh::routing::pair("openai", "stub-error-500");
    eventually("A's open breaker is announced in Redis", PATIENCE, || async {
        let second = Duration::from_secs(1);
        let reader =
            RedisLimiter::new(&services::redis_url(), false, second, second, None).unwrap().with_prefix(&prefix);
        reader.breaker_board().open_for(&pair).await.is_some()
    })
    .await;
    assert_eq!(b.post(&secret, &body).await.status(), 502);
    assert_eq!(b.stub.requests().len(), 0, "instance B saw A's open breaker and did not call the provider");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_deadline_answers_504_in_time() {
    use tower::ServiceExt;
    let gw = Gateway::start(GatewayOptions::default()).await;
    let (secret, _) = gw.create_key(|_| {}).await;
    gw.put_price("f/slow", "stub-slow", "2.50", "10.00", None).await;
    let app = mesh::app::router(gw.state.clone());
    let mut request = http::Request::post("/v1/responses")
        .header("authorization", format!("Bearer {secret}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(json!({"model": "f/slow", "input": "x"}).to_string()))
        .unwrap();
    // What the Lambda front door inserts: the invocation's deadline less a margin.
    request.extensions_mut().insert(mesh::routing::Deadline(Instant::now() + Duration::from_millis(400)));
    let started = Instant::now();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 504);
    assert!(started.elapsed() < Duration::from_millis(1500), "answered before the platform deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_is_still_billed_for_what_the_provider_did() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    gw.put_price("f/slow", "stub-slow", "2.50", "10.00", Some("1.25")).await;
    let (secret, key) = gw
        .create_key(|k| {
            k.spend_cap = Some(mesh::money::Nanos(1_000_000_000));
            k.spend_cap_mode = mesh::domain::CapMode::Hard;
        })
        .await;
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(300)).build().unwrap();
    let sent = impatient
        .post(format!("{}/v1/responses", gw.url))
        .bearer_auth(&secret)
        .json(&json!({"model": "f/slow", "input": "x", "max_output_tokens": 50}))
        .send()
        .await;
    assert!(sent.is_err(), "the client gave up before the provider answered");
    let record = wait_for("the abandoned request was settled", PATIENCE, || async {
        gw.usage_of_key(&key.id).await.into_iter().next().ok_or_else(|| "no usage record".to_owned())
    })
    .await;
    assert_eq!(record.cost.0, 77_500, "the provider's real usage");
    gw.settled().await;
    let settled = gw.key(&key.id).await;
    assert_eq!((settled.spent.0, settled.reserved.0), (77_500, 0), "charged once, reservation released");
}
