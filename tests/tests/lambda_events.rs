//! The sample events in `events/`, parsed by `lambda_http` exactly as the Lambda front door
//! receives them (Function URL = HTTP API v2, API Gateway REST = v1), run through the app
//! in process with no socket and no Lambda runtime.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use http_body_util::BodyExt;
use mesh::app::{router, state_with, SettleMode};
use mesh::config::Config;
use mesh::ids::hash_secret;
use mesh::limits::memory::MemoryLimiter;
use mesh::routing::LocalBreakerBoard;
use mesh_tests::gateway::{fresh_stores, stub_providers};
use mesh_tests::{StoreKind, Stub};
use tower::ServiceExt;

/// The key the sample events carry.
const EVENT_SECRET: &str = "rsk_01JDEVKEY00000000000000000";

async fn app() -> (axum::Router, Stub) {
    let stub = Stub::start().await;
    let (stores, _dir) = fresh_stores(StoreKind::Local).await;
    let mut config = Config::default();
    for provider in stub_providers(&stub.url) {
        config.providers.insert(provider.name.clone(), provider);
    }
    // The sample events ask for the offline model, as `infra/dev.sh` configures it.
    let echo = mesh::config::ProviderConfig {
        name: "echo".into(),
        api: mesh::config::ProviderApi::Echo,
        base_url: String::new(),
        api_key: None,
        api_key_secret_arn: None,
        token_delay: std::time::Duration::ZERO,
    };
    config.providers.insert(echo.name.clone(), echo);
    let key = mesh::domain::ApiKey {
        id: "key_events".into(),
        key_hash: hash_secret(EVENT_SECRET),
        name: "events".into(),
        owner: "team-a".into(),
        status: mesh::domain::KeyStatus::Active,
        rpm: None,
        rpd: None,
        spend_cap: None,
        spend_cap_mode: mesh::domain::CapMode::Soft,
        spent: mesh::money::Nanos::ZERO,
        reserved: mesh::money::Nanos::ZERO,
        default_model: None,
        default_params: serde_json::Map::new(),
        allowed_models: vec![],
        expires_at: None,
        created_at: 0,
    };
    stores.keys.insert_key(&key).await.unwrap();
    let row: mesh::domain::ModelPrice = serde_json::from_value(serde_json::json!({
        "model": "mesh/echo", "provider": "echo", "upstream_model": "echo",
        "input_usd_per_mtok": "0.10", "output_usd_per_mtok": "0.40", "is_default": true
    }))
    .unwrap();
    stores.prices.put_price(&row).await.unwrap();
    let state = state_with(
        config,
        stores,
        Arc::new(MemoryLimiter::new()),
        Arc::new(LocalBreakerBoard),
        SettleMode::BeforeBodyEnds,
    )
    .unwrap();
    (router(state), stub)
}

async fn invoke(app: &axum::Router, file: &str) -> (u16, String, String) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let request =
        lambda_http::request::from_str(&text).unwrap_or_else(|e| panic!("{file} is a Lambda HTTP event: {e}"));
    let response = app.clone().oneshot(responses::without_stage(request)).await.unwrap();
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, content_type, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn function_url_events() {
    let (app, _stub) = app().await;
    let (status, _, body) = invoke(&app, "function-url-responses.json").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"model\":\"mesh/echo\""));
    assert!(body.contains("\"text\":\"Say hello\""), "{body}");
    let (status, content_type, body) = invoke(&app, "function-url-stream.json").await;
    assert_eq!((status, content_type.as_str()), (200, "text/event-stream"));
    assert!(body.contains("event: response.completed"));
    let (status, _, body) = invoke(&app, "function-url-bad-key.json").await;
    assert_eq!(status, 401);
    assert!(body.contains("invalid_api_key"));
    let (status, _, body) = invoke(&app, "function-url-bad-json.json").await;
    assert_eq!(status, 400);
    assert!(body.contains("invalid_json"));
    let (status, _, _) = invoke(&app, "function-url-healthz.json").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn chat_completions_events() {
    let (app, _stub) = app().await;
    let (status, content_type, body) = invoke(&app, "function-url-chat-stream.json").await;
    assert_eq!((status, content_type.as_str()), (200, "text/event-stream"), "{body}");
    assert!(body.contains("\"object\":\"chat.completion.chunk\""), "{body}");
    assert!(body.contains("\"choices\":[],\"usage\":{"), "the usage chunk, asked for: {body}");
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    assert!(!body.contains("event:"));
    let (status, _, body) = invoke(&app, "apigw-rest-chat.json").await;
    assert_eq!(status, 200, "{body}");
    let completion: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(completion["model"], "mesh/echo");
    assert_eq!(completion["choices"][0]["message"]["content"], "Say hello");
}

#[tokio::test]
async fn api_gateway_rest_events() {
    let (app, _stub) = app().await;
    let (status, _, body) = invoke(&app, "apigw-rest-responses.json").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"model\":\"mesh/echo\""));
    let (status, _, body) = invoke(&app, "apigw-rest-bad-key.json").await;
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = invoke(&app, "apigw-rest-bad-json.json").await;
    assert_eq!(status, 400, "{body}");
}
