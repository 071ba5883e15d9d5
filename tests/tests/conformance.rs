//! The conformance suite: real clients of the Responses API, unmodified, against the standalone
//! front door, each through the Responses pass-through (the OpenAI Responses stub) and the Chat
//! Completions, Anthropic, Gemini and Bedrock translations (their stubs):
//! - the OpenAI Python SDK (`tests/sdk/conformance_openai.py`);
//! - a strict check of every raw body and stream event against the Python SDK's own types and
//!   the rules its stream helpers and openai-node's accumulator enforce (`conformance_wire.py`);
//! - the OpenAI Node SDK (`tests/node/conformance_openai.mjs`);
//! - the OpenAI Agents SDK for Python (`conformance_agents.py`);
//! - the Vercel AI SDK's Responses provider (`tests/node/conformance_ai_sdk.mjs`);
//! - LangChain's `ChatOpenAI(use_responses_api=True)` (`conformance_langchain.py`).
//!
//! Each script runs every one of its cases, prints `ok CLIENT CASE` or `FAIL CLIENT CASE: why`
//! per case and exits 1 if any failed; the test prints that report. `tests/run.sh` installs the
//! clients at the versions pinned in `tests/sdk/requirements-conformance.txt` and
//! `tests/node/package.json`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mesh::config::{ProviderApi, ProviderConfig, Secret};
use mesh_tests::anthropic_stub::{self, AnthropicStub};
use mesh_tests::bedrock_stub::{self, BedrockStub};
use mesh_tests::chat_stub::{ChatStub, CHAT_TEXT};
use mesh_tests::gemini_stub::{self, GeminiStub};
use mesh_tests::{stub_models, Gateway, GatewayOptions};

/// The models every provider's catalog has, as `PREFIX/NAME`, and the stub models behind them.
const MODELS: [&str; 6] = ["plain", "tools-one", "json", "history", "length", "stream-error"];

/// A gateway in front of one provider, with a key, and the stub it calls.
struct Setup {
    gw: Gateway,
    secret: String,
    prefix: &'static str,
    text: &'static str,
    /// The stub behind a translation, kept running.
    _stub: Option<Box<dyn std::any::Any + Send>>,
}

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

async fn with_catalog(gw: Gateway, name: &str, prefix: &'static str, plain: &str, text: &'static str) -> Setup {
    for model in MODELS {
        let upstream = if model == "plain" { plain } else { model };
        gw.put_row(&format!("{prefix}/{model}"), name, upstream, "1", "2", Some("0.5")).await;
    }
    let (secret, _) = gw.create_key(|k| k.rpm = Some(10_000)).await;
    Setup { gw, secret, prefix, text, _stub: None }
}

/// The OpenAI Responses pass-through: the gateway's own `openai` provider is the Responses stub.
async fn responses() -> Setup {
    let gw = Gateway::start(GatewayOptions::default()).await;
    with_catalog(gw, "openai", "openai", "plain", stub_models::TEXT).await
}

/// A translation: `provider`'s stub behind the gateway.
async fn translated(
    config: ProviderConfig,
    prefix: &'static str,
    plain: &str,
    text: &'static str,
    stub: Box<dyn std::any::Any + Send>,
) -> Setup {
    let name = config.name.clone();
    let gw = Gateway::start(GatewayOptions { providers: vec![config], ..GatewayOptions::default() }).await;
    let mut setup = with_catalog(gw, &name, prefix, plain, text).await;
    setup._stub = Some(stub);
    setup
}

async fn chat() -> Setup {
    let stub = ChatStub::start().await;
    let config = provider("groq", ProviderApi::Chat, &stub.url, Some("gsk-test"));
    translated(config, "groq", "llama-3.3-70b-versatile", CHAT_TEXT, Box::new(stub)).await
}

async fn anthropic() -> Setup {
    let stub = AnthropicStub::start().await;
    let config = provider("anthropic", ProviderApi::Anthropic, &stub.url, Some(anthropic_stub::API_KEY));
    translated(config, "anthropic", "claude-sonnet-4-5", anthropic_stub::TEXT, Box::new(stub)).await
}

async fn gemini() -> Setup {
    let stub = GeminiStub::start().await;
    let config = provider("gemini", ProviderApi::Gemini, &stub.url, Some(gemini_stub::API_KEY));
    translated(config, "google", "gemini-2.5-flash", gemini_stub::TEXT, Box::new(stub)).await
}

/// Bedrock signs with the test credentials `tests/run.sh` exports.
async fn bedrock() -> Setup {
    for (name, value) in [("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_REGION", "us-east-1")]
    {
        assert_eq!(std::env::var(name).as_deref(), Ok(value), "export {name}={value} (tests/run.sh does)");
    }
    let stub = BedrockStub::start().await;
    let config = provider("bedrock", ProviderApi::Bedrock, &stub.url, None);
    translated(config, "bedrock", "anthropic.claude-sonnet-4-20250514-v1:0", bedrock_stub::TEXT, Box::new(stub)).await
}

impl Setup {
    /// Runs one client script against this gateway; every case must pass.
    async fn run(&self, program: &str, script: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
        let started = std::time::Instant::now();
        let output = tokio::time::timeout(
            std::time::Duration::from_secs(90),
            tokio::process::Command::new(program)
                .arg(&path)
                .args([
                    format!("{}/v1", self.gw.url),
                    self.secret.clone(),
                    self.prefix.to_owned(),
                    self.text.to_owned(),
                ])
                .kill_on_drop(true)
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("{script} via {} took over 90 s", self.prefix))
        .unwrap_or_else(|e| panic!("{program} runs (tests/run.sh installs the clients): {e}"));
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let took = started.elapsed().as_secs_f64();
        assert!(
            output.status.success(),
            "{script} via {} failed ({took:.1} s):\n{stdout}\n--- stderr ---\n{stderr}",
            self.prefix
        );
        assert!(stdout.contains("all passed"), "{script} via {}: {stdout}", self.prefix);
        // The per-case report (cargo test shows it with --nocapture).
        eprintln!("{script} via {} ({took:.1} s):\n{stdout}", self.prefix);
    }
}

/// One test per client and provider.
macro_rules! clients {
    ($($client:ident: $program:literal $script:literal;)*) => {$(
        mod $client {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn responses() {
                super::responses().await.run($program, $script).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn chat() {
                super::chat().await.run($program, $script).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn anthropic() {
                super::anthropic().await.run($program, $script).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn gemini() {
                super::gemini().await.run($program, $script).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn bedrock() {
                super::bedrock().await.run($program, $script).await;
            }
        }
    )*};
}

clients! {
    python_sdk: "python3" "sdk/conformance_openai.py";
    wire: "python3" "sdk/conformance_wire.py";
    node_sdk: "node" "node/conformance_openai.mjs";
    agents: "python3" "sdk/conformance_agents.py";
    ai_sdk: "node" "node/conformance_ai_sdk.mjs";
    langchain: "python3" "sdk/conformance_langchain.py";
}
