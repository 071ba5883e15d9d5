//! `previous_response_id` chains of three turns driven by the official OpenAI Python SDK on the
//! `chat` and `anthropic` providers, whole and streamed: the provider receives the whole
//! conversation, in order, in its own wire format.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mesh::config::{ProviderApi, ProviderConfig, Secret};
use mesh_tests::anthropic_stub::{self, AnthropicStub};
use mesh_tests::chat_stub::{ChatStub, CHAT_TEXT};
use mesh_tests::{Gateway, GatewayOptions};
use serde_json::Value;

async fn run_chain(gw: &Gateway, secret: &str, model: &str, expected: &str) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/chain_scenarios.py");
    let output = tokio::process::Command::new("python3")
        .arg(script)
        .args([format!("{}/v1", gw.url), secret.to_owned(), model.to_owned(), expected.to_owned()])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "SDK chain failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The roles and texts of a provider message list.
fn transcript(messages: &Value) -> Vec<(String, String)> {
    messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let text = match &m["content"] {
                Value::String(text) => text.clone(),
                Value::Array(blocks) => blocks.iter().filter_map(|b| b["text"].as_str()).collect::<Vec<_>>().join(""),
                _ => String::new(),
            };
            (m["role"].as_str().unwrap().to_owned(), text)
        })
        .collect()
}

fn expected_conversation(answer: &str) -> Vec<(String, String)> {
    vec![
        ("user".into(), "My name is Ada.".into()),
        ("assistant".into(), answer.into()),
        ("user".into(), "What is my name?".into()),
        ("assistant".into(), answer.into()),
        ("user".into(), "Spell it.".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_turn_chains_on_chat() {
    let chat = ChatStub::start().await;
    let gw = Gateway::start(GatewayOptions {
        providers: vec![ProviderConfig {
            name: "groq".into(),
            api: ProviderApi::Chat,
            base_url: chat.url.clone(),
            api_key: Some(Secret::new("gsk-test")),
            api_key_secret_arn: None,
            token_delay: std::time::Duration::ZERO,
        }],
        ..GatewayOptions::default()
    })
    .await;
    gw.put_row("meta/llama-3.3-70b", "groq", "llama-3.3-70b-versatile", "0.59", "0.79", None).await;
    let (secret, _) = gw.create_key(|_| {}).await;
    run_chain(&gw, &secret, "meta/llama-3.3-70b", CHAT_TEXT).await;
    let requests = chat.requests();
    assert_eq!(requests.len(), 6);
    for third in [&requests[2], &requests[5]] {
        assert_eq!(transcript(&third.body["messages"]), expected_conversation(CHAT_TEXT));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_turn_chains_on_anthropic() {
    let anthropic = AnthropicStub::start().await;
    let gw = Gateway::start(GatewayOptions {
        providers: vec![ProviderConfig {
            name: "anthropic".into(),
            api: ProviderApi::Anthropic,
            base_url: anthropic.url.clone(),
            api_key: Some(Secret::new(anthropic_stub::API_KEY)),
            api_key_secret_arn: None,
            token_delay: std::time::Duration::ZERO,
        }],
        ..GatewayOptions::default()
    })
    .await;
    gw.put_row("anthropic/claude-sonnet", "anthropic", "claude-sonnet-4-5", "3", "15", Some("0.30")).await;
    let (secret, _) = gw.create_key(|_| {}).await;
    run_chain(&gw, &secret, "anthropic/claude-sonnet", anthropic_stub::TEXT).await;
    let requests = anthropic.requests();
    assert_eq!(requests.len(), 6);
    for third in [&requests[2], &requests[5]] {
        assert_eq!(transcript(&third.body["messages"]), expected_conversation(anthropic_stub::TEXT));
    }
}
