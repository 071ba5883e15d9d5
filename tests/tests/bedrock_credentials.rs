//! Bedrock without AWS credentials: the SDK's default chain finds none (no environment
//! variables, no profile files, no container endpoint, instance metadata off), so a call to a
//! `bedrock` row answers 503 `provider_not_available` and nothing reaches the provider. Its own
//! test binary, because it changes the process environment.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mesh::config::{ProviderApi, ProviderConfig};
use mesh_tests::bedrock_stub::BedrockStub;
use mesh_tests::{Gateway, GatewayOptions};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_credentials_bedrock_is_not_available() {
    for name in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ] {
        std::env::remove_var(name);
    }
    let empty = std::env::temp_dir().join("mesh-no-aws-profile");
    std::env::set_var("AWS_CONFIG_FILE", &empty);
    std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", &empty);
    // Never probe the instance metadata service from a test machine.
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    std::env::set_var("AWS_REGION", "us-east-1");

    let stub = BedrockStub::start().await;
    let gw = Gateway::start(GatewayOptions {
        providers: vec![ProviderConfig {
            name: "bedrock".into(),
            api: ProviderApi::Bedrock,
            base_url: stub.url.clone(),
            api_key: None,
            api_key_secret_arn: None,
            token_delay: std::time::Duration::ZERO,
        }],
        ..GatewayOptions::default()
    })
    .await;
    gw.put_row("anthropic/claude-sonnet-4", "bedrock", "anthropic.claude-sonnet-4-20250514-v1:0", "3", "15", None)
        .await;
    let (secret, _) = gw.create_key(|_| {}).await;
    for stream in [false, true] {
        let response =
            gw.post(&secret, &json!({"model": "anthropic/claude-sonnet-4", "input": "hi", "stream": stream})).await;
        assert_eq!(response.status(), 503, "stream: {stream}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "provider_not_available", "{body}");
    }
    assert!(stub.requests().is_empty(), "nothing unsigned reaches Bedrock");
}
