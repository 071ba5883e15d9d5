//! The `anthropic` provider end to end: the gateway in front of a stub of Anthropic's Messages API,
//! whole and streamed: text, function-calling round trips, parallel calls, structured output,
//! truncation, thinking taken back, upstream errors, refusals, and the official OpenAI Python SDK.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mesh::config::{ProviderApi, ProviderConfig, Secret};
use mesh::domain::{UsageRecord, UsageStatus};
use mesh_tests::answers::{function_call, message, read_answer, without_ids, Answer};
use mesh_tests::anthropic_stub::{self, AnthropicStub};
use mesh_tests::{Gateway, GatewayOptions};
use serde_json::{json, Value};

/// Upstream ids of the stub's behaviours; each is served as the catalog model `anthropic/<id>`.
const UPSTREAMS: [&str; 11] = [
    "claude-sonnet-4-20250514",
    "tools-one",
    "tools-two",
    "json",
    "length",
    "thinking",
    "error-429",
    "error-529",
    "error-long",
    "stream-error",
    "fixture:anthropic-tool-use.sse",
];

struct Setup {
    gw: Gateway,
    stub: AnthropicStub,
    secret: String,
}

async fn setup() -> Setup {
    let stub = AnthropicStub::start().await;
    let gw = Gateway::start(GatewayOptions {
        providers: vec![ProviderConfig {
            name: "anthropic".into(),
            api: ProviderApi::Anthropic,
            base_url: stub.url.clone(),
            api_key: Some(Secret::new("sk-ant-test")),
            api_key_secret_arn: None,
            token_delay: std::time::Duration::ZERO,
        }],
        ..GatewayOptions::default()
    })
    .await;
    for upstream in UPSTREAMS {
        gw.put_row(&catalog(upstream), "anthropic", upstream, "3", "15", Some("0.30")).await;
    }
    let (secret, _) = gw.create_key(|_| {}).await;
    Setup { gw, stub, secret }
}

fn catalog(upstream: &str) -> String {
    match upstream {
        "claude-sonnet-4-20250514" => "anthropic/claude-sonnet-4".to_owned(),
        other => format!("anthropic/{}", other.trim_start_matches("fixture:").trim_end_matches(".sse")),
    }
}

impl Setup {
    /// Sends a request, whole or streamed; a stream is checked for order and consistency and its
    /// terminal event's response returned.
    async fn call(&self, mut body: Value, stream: bool) -> Answer {
        if stream {
            body["stream"] = json!(true);
        }
        let response = self.gw.post(&self.secret, &body).await;
        read_answer(response, stream).await
    }

    async fn usage(&self, answer: &Answer) -> UsageRecord {
        self.gw.usage_of(&answer.request_id).await
    }
}

fn weather_tool() -> Value {
    json!({"type": "function", "name": "get_weather", "description": "Current weather of a city", "strict": true,
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false}})
}

fn anthropic_tool() -> Value {
    json!({"name": "get_weather", "description": "Current weather of a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false}})
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": [{"type": "text", "text": text}]})
}

const CALL_ONE: &str = "toolu_01A09q90qw90lq917835lq9";
const CALL_TWO: &str = "toolu_02B19r91rx91mr028946mr0";

/// The stub's usage (25 + 10 cache writes + 100 cache reads in, 15 out) at $3 / $15 / $0.30 per
/// Mtok: 35 × 3 + 100 × 0.30 + 15 × 15 = 360 micro-USD.
async fn assert_priced(setup: &Setup, answer: &Answer, status: UsageStatus) {
    let record = setup.usage(answer).await;
    assert_eq!(record.provider, "anthropic");
    assert_eq!(
        (record.tokens.input_tokens, record.tokens.cached_input_tokens, record.tokens.output_tokens),
        (135, 100, 15)
    );
    assert_eq!(record.cost.0, 360_000);
    assert_eq!(record.status, status);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_text() {
    let s = setup().await;
    for stream in [false, true] {
        let answer = s
            .call(
                json!({"model": "anthropic/claude-sonnet-4", "input": "Say hello", "instructions": "Be brief."}),
                stream,
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.body["status"], "completed");
        assert_eq!(answer.body["model"], "anthropic/claude-sonnet-4");
        assert_eq!(answer.body["instructions"], "Be brief.");
        assert_eq!(without_ids(&answer.body["output"]), json!([message(anthropic_stub::TEXT)]));
        assert_eq!(
            answer.body["usage"],
            json!({"input_tokens": 135, "input_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 10}, "output_tokens": 15,
                "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 150})
        );
        if stream {
            let text: String = answer
                .events
                .iter()
                .filter(|e| e["type"] == "response.output_text.delta")
                .map(|e| e["delta"].as_str().unwrap())
                .collect();
            assert_eq!(text, anthropic_stub::TEXT);
            assert!(answer.events.iter().filter(|e| e["type"] == "response.output_text.delta").count() > 1);
        }
        let sent = s.stub.last_request();
        assert_eq!(sent.headers["x-api-key"], "sk-ant-test");
        assert_eq!(sent.headers["anthropic-version"], "2023-06-01");
        assert!(sent.headers.get("authorization").is_none());
        let mut expected = json!({
            "model": "claude-sonnet-4-20250514",
            "max_tokens": 16_384,
            "system": [{"type": "text", "text": "Be brief."}],
            "messages": [user("Say hello")],
            "metadata": {"user_id": mesh::ids::safety_identifier("team-a")}
        });
        if stream {
            expected["stream"] = json!(true);
        }
        assert_eq!(sent.body, expected);
        assert_priced(&s, &answer, UsageStatus::Success).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_calling_round_trip() {
    let s = setup().await;
    for stream in [false, true] {
        let question = json!({"role": "user", "content": "What's the weather in Paris?"});
        let first = s
            .call(
                json!({"model": "anthropic/tools-one", "input": [question], "tools": [weather_tool()],
                    "tool_choice": "required", "parallel_tool_calls": false}),
                stream,
            )
            .await;
        assert_eq!(first.status, 200, "{}", first.body);
        assert_eq!(first.body["status"], "completed");
        assert_eq!(
            without_ids(&first.body["output"]),
            json!([message("Let me check the weather."), function_call(CALL_ONE, "Paris")])
        );
        let sent = s.stub.last_request().body;
        assert_eq!(sent["tools"], json!([anthropic_tool()]));
        assert_eq!(sent["tool_choice"], json!({"type": "any", "disable_parallel_tool_use": true}));
        assert_priced(&s, &first, UsageStatus::Success).await;

        // Turn two: the whole output goes back, with the function's result.
        let mut input = vec![question];
        input.extend(first.body["output"].as_array().unwrap().iter().cloned());
        input.push(json!({"type": "function_call_output", "call_id": CALL_ONE, "output": "18C and sunny"}));
        let second =
            s.call(json!({"model": "anthropic/tools-one", "input": input, "tools": [weather_tool()]}), stream).await;
        assert_eq!(second.status, 200, "{}", second.body);
        assert_eq!(without_ids(&second.body["output"]), json!([message("The weather in Paris: 18C and sunny.")]));
        let sent = s.stub.last_request().body;
        assert_eq!(
            sent["messages"],
            json!([
                user("What's the weather in Paris?"),
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Let me check the weather."},
                    {"type": "tool_use", "id": CALL_ONE, "name": "get_weather", "input": {"city": "Paris"}}
                ]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": CALL_ONE, "content": "18C and sunny"}]}
            ])
        );
        assert!(sent.get("tool_choice").is_none());
        assert_priced(&s, &second, UsageStatus::Success).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_parallel_tool_calls() {
    let s = setup().await;
    for stream in [false, true] {
        let question = json!({"role": "user", "content": "Weather in Paris and London?"});
        let first = s
            .call(json!({"model": "anthropic/tools-two", "input": [question], "tools": [weather_tool()]}), stream)
            .await;
        assert_eq!(first.status, 200, "{}", first.body);
        assert_eq!(
            without_ids(&first.body["output"]),
            json!([function_call(CALL_ONE, "Paris"), function_call(CALL_TWO, "London")])
        );
        assert_priced(&s, &first, UsageStatus::Success).await;

        let mut input = vec![question];
        input.extend(first.body["output"].as_array().unwrap().iter().cloned());
        input.push(json!({"type": "function_call_output", "call_id": CALL_ONE, "output": "18C"}));
        input.push(json!({"type": "function_call_output", "call_id": CALL_TWO, "output": "12C"}));
        let second =
            s.call(json!({"model": "anthropic/tools-two", "input": input, "tools": [weather_tool()]}), stream).await;
        assert_eq!(second.status, 200, "{}", second.body);
        assert_eq!(without_ids(&second.body["output"]), json!([message("Results: 18C / 12C.")]));
        let sent = s.stub.last_request().body;
        assert_eq!(sent["messages"].as_array().unwrap().len(), 3, "one assistant turn, one user turn of results");
        assert_eq!(
            sent["messages"][1]["content"],
            json!([
                {"type": "tool_use", "id": CALL_ONE, "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": CALL_TWO, "name": "get_weather", "input": {"city": "London"}}
            ])
        );
        assert_eq!(
            sent["messages"][2]["content"],
            json!([
                {"type": "tool_result", "tool_use_id": CALL_ONE, "content": "18C"},
                {"type": "tool_result", "tool_use_id": CALL_TWO, "content": "12C"}
            ])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_output() {
    let s = setup().await;
    let schema = json!({"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"],
        "additionalProperties": false});
    for stream in [false, true] {
        let answer = s
            .call(
                json!({"model": "anthropic/json", "input": "What is 6 × 7?",
                    "text": {"format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": true}}}),
                stream,
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(without_ids(&answer.body["output"]), json!([message(r#"{"answer":42}"#)]));
        assert_eq!(answer.body["text"]["format"]["type"], "json_schema", "the request's format is echoed");
        let sent = s.stub.last_request().body;
        let system = sent["system"][0]["text"].as_str().unwrap();
        assert!(system.contains("JSON Schema") && system.contains(&schema.to_string()), "{system}");
        assert!(sent.get("text").is_none() && sent.get("response_format").is_none());
        assert_priced(&s, &answer, UsageStatus::Success).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tokens_truncation_is_incomplete() {
    let s = setup().await;
    for stream in [false, true] {
        let answer =
            s.call(json!({"model": "anthropic/length", "input": "Tell a story", "max_output_tokens": 5}), stream).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.body["status"], "incomplete");
        assert_eq!(answer.body["incomplete_details"], json!({"reason": "max_output_tokens"}));
        assert_eq!(answer.body["output"][0]["content"][0]["text"], "This answer is cut");
        if stream {
            assert_eq!(answer.events.last().unwrap()["type"], "response.incomplete");
        }
        assert_eq!(s.stub.last_request().body["max_tokens"], 5);
        assert_priced(&s, &answer, UsageStatus::Incomplete).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thinking_becomes_reasoning_and_goes_back_signed() {
    let s = setup().await;
    for stream in [false, true] {
        let question = json!({"role": "user", "content": "What is 2 + 2?"});
        let first = s
            .call(json!({"model": "anthropic/thinking", "input": [question], "reasoning": {"effort": "low"}}), stream)
            .await;
        assert_eq!(first.status, 200, "{}", first.body);
        assert_eq!(
            without_ids(&first.body["output"]),
            json!([
                {"type": "reasoning", "summary": [{"type": "summary_text", "text": anthropic_stub::THINKING}],
                    "encrypted_content": anthropic_stub::SIGNATURE},
                message("2 + 2 = 4.")
            ])
        );
        let sent = s.stub.last_request().body;
        assert_eq!(sent["thinking"], json!({"type": "enabled", "budget_tokens": 1024}));
        assert_eq!(sent["max_tokens"], 16_384);
        assert_priced(&s, &first, UsageStatus::Success).await;

        let mut input = vec![question];
        input.extend(first.body["output"].as_array().unwrap().iter().cloned());
        input.push(json!({"role": "user", "content": "And doubled?"}));
        let second = s
            .call(json!({"model": "anthropic/thinking", "input": input, "reasoning": {"effort": "low"}}), stream)
            .await;
        assert_eq!(second.status, 200, "the stub accepted the signature: {}", second.body);
        let sent = s.stub.last_request().body;
        assert_eq!(
            sent["messages"][1],
            json!({"role": "assistant", "content": [
                {"type": "thinking", "thinking": anthropic_stub::THINKING, "signature": anthropic_stub::SIGNATURE},
                {"type": "text", "text": "2 + 2 = 4."}
            ]})
        );
        assert_eq!(sent["messages"][2], user("And doubled?"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors() {
    let s = setup().await;
    for stream in [false, true] {
        let limited = s.call(json!({"model": "anthropic/error-429", "input": "hi"}), stream).await;
        assert_eq!(limited.status, 429);
        assert_eq!(limited.headers["retry-after"], "7");
        assert_eq!(limited.body["error"]["type"], "rate_limit_error");
        assert_eq!(limited.body["error"]["retry_after_seconds"], 7);
        assert_eq!(
            limited.body["error"]["message"], "Number of request tokens has exceeded your per-minute rate limit",
            "the provider's words are kept"
        );
        assert_eq!(limited.body["request_id"], limited.request_id.as_str());

        let overloaded = s.call(json!({"model": "anthropic/error-529", "input": "hi"}), stream).await;
        assert_eq!(overloaded.status, 502);
        assert_eq!(overloaded.body["error"]["code"], "upstream_error");
        assert!(overloaded.headers.get("retry-after").is_none());
        let record = s.usage(&overloaded).await;
        assert_eq!((record.status, record.cost.0), (UsageStatus::Error, 0), "audited at no cost");

        let too_long = s.call(json!({"model": "anthropic/error-long", "input": "hi"}), stream).await;
        assert_eq!(too_long.status, 400);
        assert_eq!(too_long.body["error"]["code"], "context_length_exceeded");
        assert!(too_long.body["error"]["message"].as_str().unwrap().contains("prompt is too long"));
    }
}

/// Anthropic refusing Mesh's own key (401) or its access (403) is the gateway's fault: the
/// client gets 502 `upstream_error`, never the provider's words or any key text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_the_gateways_fault() {
    let stub = AnthropicStub::start().await;
    let provider = |name: &str, key: &str| ProviderConfig {
        name: name.into(),
        api: ProviderApi::Anthropic,
        base_url: stub.url.clone(),
        api_key: Some(Secret::new(key)),
        api_key_secret_arn: None,
        token_delay: std::time::Duration::ZERO,
    };
    let gw = Gateway::start(GatewayOptions {
        providers: vec![provider("anthropic", anthropic_stub::API_KEY), provider("stale", "sk-ant-stale-key-0000")],
        ..GatewayOptions::default()
    })
    .await;
    gw.put_row("anthropic/denied", "anthropic", "error-403", "3", "15", None).await;
    gw.put_row("anthropic/stale", "stale", "claude-sonnet-4-20250514", "3", "15", None).await;
    let (secret, _) = gw.create_key(|_| {}).await;
    for model in ["anthropic/stale", "anthropic/denied"] {
        for stream in [false, true] {
            let response = gw.post(&secret, &json!({"model": model, "input": "hi", "stream": stream})).await;
            let answer = read_answer(response, stream).await;
            assert_eq!(answer.status, 502, "{model}: {}", answer.body);
            assert_eq!(answer.body["error"]["code"], "upstream_error", "{model}");
            assert_eq!(answer.body["error"]["type"], "api_error", "{model}");
            let text = answer.body.to_string();
            for leak in ["sk-ant", "WXYZ", "x-api-key", "permission", "authentication_error"] {
                assert!(!text.contains(leak), "{model}: `{leak}` in {text}");
            }
            let record = gw.usage_of(&answer.request_id).await;
            assert_eq!((record.status, record.cost.0), (UsageStatus::Error, 0), "{model}: audited at no cost");
        }
    }
    assert!(
        stub.requests().iter().any(|r| r.headers["x-api-key"] == "sk-ant-stale-key-0000"),
        "the stale key was sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_event_mid_stream_fails_the_response() {
    let s = setup().await;
    let answer = s.call(json!({"model": "anthropic/stream-error", "input": "Tell a story"}), true).await;
    assert_eq!(answer.status, 200);
    let last = answer.events.last().unwrap();
    assert_eq!(last["type"], "response.failed");
    assert_eq!(last["response"]["status"], "failed");
    assert!(last["response"]["error"]["message"].as_str().unwrap().contains("Overloaded"), "{last}");
    assert_eq!(last["response"]["output"][0]["content"][0]["text"], "Once ");
    let record = s.usage(&answer).await;
    assert_eq!(record.status, UsageStatus::Failed);
    // What was consumed is still charged: 135 in (100 cached) and the 1 output token so far.
    assert_eq!((record.tokens.input_tokens, record.tokens.output_tokens), (135, 1));
    assert_eq!(record.cost.0, 150_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_transcript_replays_through_the_gateway() {
    let s = setup().await;
    let answer = s.call(json!({"model": "anthropic/anthropic-tool-use", "input": "Weather in SF?"}), true).await;
    assert_eq!(answer.body["status"], "completed");
    assert_eq!(
        without_ids(&answer.body["output"]),
        json!([
            message("Okay, let's check the weather for San Francisco, CA:"),
            {"type": "function_call", "call_id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather",
                "arguments": "{\"location\": \"San Francisco, CA\", \"unit\": \"fahrenheit\"}", "status": "completed"}
        ])
    );
    let record = s.usage(&answer).await;
    assert_eq!((record.tokens.input_tokens, record.tokens.output_tokens), (472, 89));
    // 472 × 3 + 89 × 15 = 2751 micro-USD.
    assert_eq!(record.cost.0, 2_751_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_anthropic_cannot_do_is_refused_before_the_call() {
    let s = setup().await;
    for (body, code, param) in [
        (
            json!({"model": "anthropic/claude-sonnet-4", "input": "hi", "tools": [{"type": "web_search_preview"}]}),
            "unsupported_tool",
            "tools[0].type",
        ),
        (json!({"model": "anthropic/claude-sonnet-4", "input": "hi", "seed": 7}), "unsupported_parameter", "seed"),
        (
            json!({"model": "anthropic/claude-sonnet-4", "input": "hi", "temperature": 1.5}),
            "unsupported_parameter",
            "temperature",
        ),
    ] {
        for stream in [false, true] {
            let answer = s.call(body.clone(), stream).await;
            assert_eq!(answer.status, 400, "{}", answer.body);
            assert_eq!(answer.body["error"]["code"], code);
            assert_eq!(answer.body["error"]["param"], param);
            assert!(answer.body["error"]["message"].as_str().unwrap().contains("`anthropic`"));
        }
    }
    assert!(s.stub.requests().is_empty(), "nothing reached the provider");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_scenarios() {
    let s = setup().await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/anthropic_scenarios.py");
    let output = tokio::process::Command::new("python3")
        .arg(script)
        .args([
            format!("{}/v1", s.gw.url),
            s.secret.clone(),
            "anthropic/claude-sonnet-4".to_owned(),
            "anthropic/tools-one".to_owned(),
        ])
        .output()
        .await
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "python SDK failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("anthropic-scenarios-ok"));
    // Plain text ×3 and the round trip's two turns ×3 reached the provider.
    assert_eq!(s.stub.requests().len(), 9);
}
