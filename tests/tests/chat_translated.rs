//! `POST /v1/chat/completions` through the translated providers (Anthropic, Gemini, Bedrock and
//! the built-in echo), each at its stub speaking the exact wire format: text, tool calls (a
//! round trip and parallel calls), structured output, truncation, whole and streamed, with the
//! usage `/v1/responses` reports for the same answer and what each provider cannot honour
//! refused with a 400 naming it and the parameter in Chat Completions terms.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mesh::config::{ProviderApi, ProviderConfig, Secret};
use mesh::domain::UsageStatus;
use mesh_tests::anthropic_stub::AnthropicStub;
use mesh_tests::bedrock_stub::BedrockStub;
use mesh_tests::chat_client::{chat, ChatAnswer};
use mesh_tests::gemini_stub::GeminiStub;
use mesh_tests::{Gateway, GatewayOptions, StubRequest};
use serde_json::{json, Value};

/// One translated provider behind the gateway.
struct Family {
    gw: Gateway,
    secret: String,
    /// The catalog prefix of its rows: `<prefix>/<upstream>`.
    prefix: &'static str,
    /// The plain model's upstream id and its answer.
    plain: &'static str,
    text: &'static str,
    /// The requests the stub received.
    requests: Box<dyn Fn() -> Vec<StubRequest> + Send + Sync>,
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

async fn family(config: ProviderConfig, prefix: &'static str, plain: &'static str, text: &'static str) -> Family {
    let name = config.name.clone();
    let gw = Gateway::start(GatewayOptions { providers: vec![config], ..GatewayOptions::default() }).await;
    for upstream in [plain, "tools-one", "tools-two", "json", "length"] {
        gw.put_row(&format!("{prefix}/{upstream}"), &name, upstream, "3", "15", Some("0.30")).await;
    }
    let (secret, _) = gw.create_key(|_| {}).await;
    Family { gw, secret, prefix, plain, text, requests: Box::new(Vec::new) }
}

async fn anthropic() -> (Family, std::sync::Arc<AnthropicStub>) {
    let stub = std::sync::Arc::new(AnthropicStub::start().await);
    let config = provider("anthropic", ProviderApi::Anthropic, &stub.url, Some(mesh_tests::anthropic_stub::API_KEY));
    let mut f = family(config, "anthropic", "claude-sonnet-4-20250514", mesh_tests::anthropic_stub::TEXT).await;
    let held = stub.clone();
    f.requests = Box::new(move || held.requests());
    (f, stub)
}

async fn gemini() -> (Family, std::sync::Arc<GeminiStub>) {
    let stub = std::sync::Arc::new(GeminiStub::start().await);
    let config = provider("gemini", ProviderApi::Gemini, &stub.url, Some(mesh_tests::gemini_stub::API_KEY));
    let mut f = family(config, "google", "gemini-2.5-flash", mesh_tests::gemini_stub::TEXT).await;
    let held = stub.clone();
    f.requests = Box::new(move || {
        held.requests().into_iter().map(|r| StubRequest { headers: r.headers, body: r.body }).collect()
    });
    (f, stub)
}

async fn bedrock() -> (Family, std::sync::Arc<BedrockStub>) {
    for (name, value) in [("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_REGION", "us-east-1")]
    {
        assert_eq!(std::env::var(name).as_deref(), Ok(value), "export {name}={value} (tests/run.sh does)");
    }
    let stub = std::sync::Arc::new(BedrockStub::start().await);
    let config = provider("bedrock", ProviderApi::Bedrock, &stub.url, None);
    let mut f =
        family(config, "bedrock", "anthropic.claude-sonnet-4-20250514-v1:0", mesh_tests::bedrock_stub::TEXT).await;
    let held = stub.clone();
    f.requests = Box::new(move || held.requests().into_iter().map(|r| r.request).collect());
    (f, stub)
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

fn weather_tools() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
        {"type": "function", "function": {"name": "get_time", "description": "Time in a zone",
        "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]}}}])
}

impl Family {
    fn model(&self, upstream: &str) -> String {
        format!("{}/{upstream}", self.prefix)
    }

    async fn chat(&self, body: Value) -> ChatAnswer {
        chat(&self.gw, &self.secret, &body).await
    }

    /// Everything a Chat Completions client relies on, whole and streamed.
    async fn scenarios(&self) {
        let plain = self.model(self.plain);
        // The usage `/v1/responses` reports for the same answer.
        let responses: Value =
            self.gw.post(&self.secret, &json!({"model": plain, "input": "hi"})).await.json().await.unwrap();
        let expected = &responses["usage"];
        for stream in [false, true] {
            let mode = if stream { "stream" } else { "whole" };
            let answer = self
                .chat(json!({"model": plain, "messages": [{"role": "system", "content": "Be brief."}, user("hi")],
                    "stream": stream, "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null },
                    "max_completion_tokens": 200, "temperature": 0.5}))
                .await;
            assert_eq!(answer.status, 200, "{mode}: {}", answer.body);
            assert_eq!(answer.text(), self.text, "{mode}");
            assert_eq!(answer.finish_reason().as_deref(), Some("stop"), "{mode}");
            if !stream {
                assert_eq!(answer.body["model"], plain);
                assert!(answer.body["id"].as_str().unwrap().starts_with("chatcmpl-"));
                assert_eq!(answer.body["choices"][0]["message"]["role"], "assistant");
            } else {
                assert!(answer.done);
                assert!(answer.chunks.iter().all(|c| c["model"] == plain));
                assert_eq!(answer.chunks[0]["choices"][0]["delta"]["role"], "assistant");
            }
            let usage = answer.usage().unwrap_or_else(|| panic!("{mode}: usage"));
            assert_eq!(usage["prompt_tokens"], expected["input_tokens"], "{mode}");
            assert_eq!(
                usage["prompt_tokens_details"]["cached_tokens"],
                expected["input_tokens_details"]["cached_tokens"]
            );
            assert_eq!(usage["completion_tokens"], expected["output_tokens"], "{mode}");
            assert_eq!(
                usage["completion_tokens_details"]["reasoning_tokens"],
                expected["output_tokens_details"]["reasoning_tokens"]
            );
            let record = self.gw.usage_of(&answer.request_id).await;
            assert_eq!(Some(record.tokens.input_tokens), expected["input_tokens"].as_u64(), "{mode}");
            assert_eq!(record.status, UsageStatus::Success);
            assert!(record.cost.0 > 0);
            self.tools(stream).await;
            let json = self
                .chat(json!({"model": self.model("json"), "messages": [user("x")], "stream": stream,
                    "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "strict": true,
                        "schema": {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"],
                            "additionalProperties": false}}}}))
                .await;
            assert_eq!(json.status, 200, "{}", json.body);
            assert_eq!(serde_json::from_str::<Value>(&json.text()).unwrap(), json!({"answer": 42}), "{mode}");
            let cut =
                self.chat(json!({"model": self.model("length"), "messages": [user("x")], "stream": stream})).await;
            assert_eq!(cut.finish_reason().as_deref(), Some("length"), "{mode}");
            assert_eq!(self.gw.usage_of(&cut.request_id).await.status, UsageStatus::Incomplete);
        }
    }

    /// A two-turn function calling round trip, and two parallel calls.
    async fn tools(&self, stream: bool) {
        let question = user("What is the weather in Paris?");
        let first = self
            .chat(json!({"model": self.model("tools-one"), "messages": [question], "tools": weather_tools(),
                "tool_choice": "auto", "stream": stream}))
            .await;
        assert_eq!(first.status, 200, "{}", first.body);
        assert_eq!(first.finish_reason().as_deref(), Some("tool_calls"));
        let calls = first.tool_calls();
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        let arguments: Value = serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(arguments, json!({"city": "Paris"}));
        let call_id = calls[0]["id"].as_str().unwrap().to_owned();
        let mut assistant = json!({"role": "assistant", "content": null, "tool_calls": calls});
        if !first.text().is_empty() {
            assistant["content"] = json!(first.text());
        }
        let second = self
            .chat(json!({"model": self.model("tools-one"), "tools": weather_tools(), "stream": stream, "messages": [
                question, assistant, {"role": "tool", "tool_call_id": call_id, "content": "18C and sunny"}]}))
            .await;
        assert_eq!(second.status, 200, "{}", second.body);
        assert!(second.text().contains("18C and sunny"), "{}", second.text());
        assert_eq!(second.finish_reason().as_deref(), Some("stop"));

        let two = self
            .chat(json!({"model": self.model("tools-two"), "messages": [user("x")], "tools": weather_tools(), "stream": stream}))
            .await;
        let calls = two.tool_calls();
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert_ne!(calls[0]["id"], calls[1]["id"]);
        assert_eq!(two.finish_reason().as_deref(), Some("tool_calls"));
    }

    /// Each field is refused with a 400 naming the provider and the parameter, before the call.
    async fn refuses(&self, provider: &str, cases: &[(Value, &str)]) {
        let before = (self.requests)().len();
        for (extra, param) in cases {
            let mut body = json!({"model": self.model(self.plain), "messages": [user("x")]});
            for (name, value) in extra.as_object().unwrap() {
                body[name] = value.clone();
            }
            let answer = self.chat(body.clone()).await;
            assert_eq!(answer.status, 400, "{body}: {}", answer.body);
            let error = &answer.body["error"];
            assert_eq!(error["param"], *param, "{body}: {error}");
            assert_eq!(error["code"], "unsupported_parameter", "{body}");
            assert!(error["message"].as_str().unwrap().contains(&format!("`{provider}`")), "{error}");
        }
        assert_eq!((self.requests)().len(), before, "refused before any provider call");
    }
}

/// Refused on every translated provider.
fn common_refusals() -> Vec<(Value, &'static str)> {
    vec![
        (json!({"n": 2}), "n"),
        (json!({"logprobs": true}), "logprobs"),
        (json!({"top_logprobs": 3}), "top_logprobs"),
        (json!({"logit_bias": {"50256": -100}}), "logit_bias"),
        (json!({"modalities": ["text", "audio"]}), "modalities"),
        (json!({"top_k": 5}), "top_k"),
        (json!({"messages": [{"role": "user", "name": "ada", "content": "x"}]}), "messages[0].name"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_speaks_chat_completions() {
    let (f, stub) = anthropic().await;
    f.scenarios().await;
    let mut refusals = common_refusals();
    refusals.extend([
        (json!({"seed": 7}), "seed"),
        (json!({"temperature": 1.5}), "temperature"),
        (json!({"frequency_penalty": 0.5}), "frequency_penalty"),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"},
                {"type": "input_audio", "input_audio": {"data": "AA==", "format": "wav"}}]}]}),
            "messages[0].content[1].type",
        ),
    ]);
    f.refuses("anthropic", &refusals).await;
    // A stream the provider breaks ends with an error chunk (no `[DONE]`) and bills what it said.
    f.gw.put_row("anthropic/stream-error", "anthropic", "stream-error", "3", "15", None).await;
    let broken = f.chat(json!({"model": "anthropic/stream-error", "messages": [user("x")], "stream": true})).await;
    assert!(!broken.done);
    let error = &broken.chunks.last().unwrap()["error"];
    assert_eq!((error["type"].as_str(), error["code"].as_str()), (Some("api_error"), Some("upstream_error")));
    assert!(broken.chunks.last().unwrap().get("usage").is_none(), "usage is for billing only");
    let record = f.gw.usage_of(&broken.request_id).await;
    assert_eq!(record.status, UsageStatus::Failed);
    assert!(record.tokens.input_tokens > 0, "billed for what the provider reported");
    // What maps: the system message, stop sequences, the output limit, images, reasoning effort.
    let answer = f
        .chat(json!({"model": f.model(f.plain), "stop": ["END"], "max_tokens": 300, "reasoning_effort": "low",
            "messages": [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]}))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let sent = stub.last_request().body;
    assert_eq!(sent["system"][0]["text"], "Be brief.");
    assert_eq!(sent["stop_sequences"], json!(["END"]));
    assert_eq!(sent["thinking"]["budget_tokens"], 1024);
    assert_eq!(sent["messages"][0]["content"][1]["source"]["type"], "base64");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_speaks_chat_completions() {
    let (f, stub) = gemini().await;
    f.scenarios().await;
    f.refuses("gemini", &common_refusals()).await;
    let answer = f
        .chat(json!({"model": f.model(f.plain), "messages": [user("x")], "stop": "END", "seed": 7,
            "frequency_penalty": 0.5, "presence_penalty": -0.5, "top_p": 0.9}))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let config = &stub.last_request().body["generationConfig"];
    assert_eq!(config["stopSequences"], json!(["END"]));
    assert_eq!((config["seed"].as_u64(), config["topP"].as_f64()), (Some(7), Some(0.9)));
    assert_eq!((config["frequencyPenalty"].as_f64(), config["presencePenalty"].as_f64()), (Some(0.5), Some(-0.5)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bedrock_speaks_chat_completions() {
    let (f, stub) = bedrock().await;
    f.scenarios().await;
    let mut refusals = common_refusals();
    refusals.extend([(json!({"seed": 7}), "seed"), (json!({"presence_penalty": 1}), "presence_penalty")]);
    f.refuses("bedrock", &refusals).await;
    let answer =
        f.chat(json!({"model": f.model(f.plain), "messages": [user("x")], "stop": ["END"], "max_tokens": 64})).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let sent = stub.last_request().body;
    assert_eq!(sent["inferenceConfig"]["stopSequences"], json!(["END"]));
    assert_eq!(sent["inferenceConfig"]["maxTokens"], 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_speaks_chat_completions() {
    let gw = Gateway::start(GatewayOptions {
        providers: vec![provider("echo", ProviderApi::Echo, "", None)],
        ..GatewayOptions::default()
    })
    .await;
    gw.put_row("mesh/echo", "echo", "echo", "0.10", "0.40", None).await;
    let (secret, _) = gw.create_key(|_| {}).await;
    for stream in [false, true] {
        let answer = chat(
            &gw,
            &secret,
            &json!({"model": "mesh/echo", "messages": [user("one two three")], "stream": stream, "max_tokens": 2}),
        )
        .await;
        assert_eq!(answer.text(), "one two ", "max_tokens cuts the echo");
        assert_eq!(answer.finish_reason().as_deref(), Some("length"));
        let called = chat(
            &gw,
            &secret,
            &json!({"model": "mesh/echo", "messages": [user("Paris")], "tools": weather_tools(), "stream": stream,
                "tool_choice": {"type": "function", "function": {"name": "get_time"}}}),
        )
        .await;
        assert_eq!(called.tool_calls()[0]["function"]["name"], "get_time", "the named tool");
    }
    let refused = chat(&gw, &secret, &json!({"model": "mesh/echo", "messages": [user("x")], "n": 3})).await;
    assert_eq!((refused.status, refused.body["error"]["param"].as_str()), (400, Some("n")));
}
