//! `/v1/chat/completions` with real clients, unmodified, against the standalone front door: the
//! official OpenAI SDKs (Python: `tests/sdk/chat_completions.py`, Node: `tests/node/chat.mjs`),
//! LangChain's default `ChatOpenAI` (`tests/sdk/langchain_chat.py`) and the Vercel AI SDK's
//! `openai.chat(...)` (`tests/node/ai_sdk.mjs`), each through the Chat Completions pass-through
//! and the Anthropic, Gemini and Bedrock translations. `tests/run.sh` installs the clients
//! (versions pinned in it and in `tests/node/package.json`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mesh::config::{ProviderApi, ProviderConfig, Secret};
use mesh_tests::anthropic_stub::AnthropicStub;
use mesh_tests::bedrock_stub::BedrockStub;
use mesh_tests::chat_stub::{ChatStub, CHAT_TEXT};
use mesh_tests::gemini_stub::GeminiStub;
use mesh_tests::{Gateway, GatewayOptions};

fn provider(name: &str, api: ProviderApi, base_url: &str, key: Option<&str>) -> ProviderConfig {
    ProviderConfig {
        name: name.into(),
        api,
        base_url: base_url.into(),
        api_key: key.map(Secret::new),
        api_key_secret_arn: None,
        token_delay: std::time::Duration::ZERO,
    }
}

/// A gateway whose catalog has `<prefix>/plain`, `/tools-one` and `/json` on one provider.
struct Family {
    gw: Gateway,
    secret: String,
    prefix: &'static str,
    text: &'static str,
}

async fn family(config: ProviderConfig, prefix: &'static str, plain: &str, text: &'static str) -> Family {
    let name = config.name.clone();
    let gw = Gateway::start(GatewayOptions { providers: vec![config], ..GatewayOptions::default() }).await;
    for (model, upstream) in [("plain", plain), ("tools-one", "tools-one"), ("json", "json")] {
        gw.put_row(&format!("{prefix}/{model}"), &name, upstream, "1", "2", None).await;
    }
    let (secret, _) = gw.create_key(|k| k.rpm = Some(1000)).await;
    Family { gw, secret, prefix, text }
}

fn project_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

impl Family {
    /// Runs one client script; it prints `marker` when every check passed.
    async fn run(&self, program: &str, script: &str, marker: &str) {
        let output = tokio::process::Command::new(program)
            .arg(project_dir().join(script))
            .args([format!("{}/v1", self.gw.url), self.secret.clone(), self.prefix.to_owned(), self.text.to_owned()])
            .output()
            .await
            .unwrap_or_else(|e| panic!("{program} runs (tests/run.sh installs the clients): {e}"));
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{script} via {} failed:\n{stdout}\n{stderr}", self.prefix);
        assert!(stdout.contains(marker), "{script}: {stdout}");
    }

    async fn every_client(&self) {
        self.run("python3", "sdk/chat_completions.py", "chat-sdk-ok").await;
        self.run("node", "node/chat.mjs", "node-chat-ok").await;
        self.run("python3", "sdk/langchain_chat.py", "langchain-ok").await;
        self.run("node", "node/ai_sdk.mjs", "ai-sdk-ok").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_through_the_chat_pass_through() {
    let stub = ChatStub::start().await;
    let config = provider("groq", ProviderApi::Chat, &stub.url, Some("gsk-test"));
    family(config, "groq", "llama-3.3-70b-versatile", CHAT_TEXT).await.every_client().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_through_anthropic() {
    let stub = AnthropicStub::start().await;
    let config = provider("anthropic", ProviderApi::Anthropic, &stub.url, Some(mesh_tests::anthropic_stub::API_KEY));
    family(config, "anthropic", "claude-sonnet-4-20250514", mesh_tests::anthropic_stub::TEXT)
        .await
        .every_client()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_through_gemini() {
    let stub = GeminiStub::start().await;
    let config = provider("gemini", ProviderApi::Gemini, &stub.url, Some(mesh_tests::gemini_stub::API_KEY));
    family(config, "google", "gemini-2.5-flash", mesh_tests::gemini_stub::TEXT).await.every_client().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_through_bedrock() {
    for (name, value) in [("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_REGION", "us-east-1")]
    {
        assert_eq!(std::env::var(name).as_deref(), Ok(value), "export {name}={value} (tests/run.sh does)");
    }
    let stub = BedrockStub::start().await;
    let config = provider("bedrock", ProviderApi::Bedrock, &stub.url, None);
    family(config, "bedrock", "anthropic.claude-sonnet-4-20250514-v1:0", mesh_tests::bedrock_stub::TEXT)
        .await
        .every_client()
        .await;
}
