//! The `gemini` provider end to end: the gateway in front of a stub speaking Google's Gemini
//! wire format, each scenario both as a complete answer and as a stream, checking the final
//! Responses output, what reached Gemini, and that the usage was recorded and priced. Also the
//! official OpenAI Python SDK against a Gemini-served model.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mesh::config::{ProviderApi, ProviderConfig, Secret};
use mesh::domain::UsageStatus;
use mesh::sse::SseParser;
use mesh_tests::gemini_stub::{self, GeminiStub};
use mesh_tests::{Gateway, GatewayOptions};
use serde_json::{json, Value};

/// Cost of the stub's usage (12 input of which 4 cached, 7 output) at $0.30 / $0.075 cached /
/// $2.50 per Mtok: 8 × 0.30 + 4 × 0.075 + 7 × 2.50 = 20.2 µUSD = 20 200 nano-USD.
const STUB_COST_NANOS: u64 = 20_200;

struct Setup {
    gw: Gateway,
    stub: GeminiStub,
    secret: String,
}

async fn setup() -> Setup {
    let stub = GeminiStub::start().await;
    let gw = Gateway::start(GatewayOptions {
        providers: vec![ProviderConfig {
            name: "gemini".into(),
            api: ProviderApi::Gemini,
            base_url: stub.url.clone(),
            api_key: Some(Secret::new("AIza-test")),
            api_key_secret_arn: None,
            token_delay: std::time::Duration::ZERO,
        }],
        ..GatewayOptions::default()
    })
    .await;
    for upstream in ["gemini-2.5-flash", "tools-one", "tools-two", "json", "length", "error-429", "error-500"] {
        gw.put_row(&format!("google/{upstream}"), "gemini", upstream, "0.30", "2.50", Some("0.075")).await;
    }
    let (secret, _) = gw.create_key(|_| {}).await;
    Setup { gw, stub, secret }
}

/// What the gateway answered, the same way for both modes.
struct Answer {
    status: u16,
    headers: http::HeaderMap,
    request_id: String,
    /// The Responses object (the terminal event's, when streamed), or the error body.
    body: Value,
    /// Stream events (empty for complete answers).
    events: Vec<Value>,
}

impl Answer {
    fn text_deltas(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["type"] == "response.output_text.delta")
            .map(|e| e["delta"].as_str().unwrap().to_owned())
            .collect()
    }
}

async fn ask(setup: &Setup, mut body: Value, stream: bool) -> Answer {
    body["stream"] = json!(stream);
    let response = setup.gw.post(&setup.secret, &body).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let request_id = headers["x-request-id"].to_str().unwrap().to_owned();
    let is_sse = headers.get("content-type").is_some_and(|v| v == "text/event-stream");
    let bytes = response.bytes().await.unwrap();
    if !is_sse {
        assert!(!stream || status != 200, "a stream answers text/event-stream");
        let body = serde_json::from_slice(&bytes).unwrap();
        return Answer { status, headers, request_id, body, events: Vec::new() };
    }
    let mut parser = SseParser::new();
    let frames: Vec<_> = parser.feed(&bytes).unwrap().into_iter().chain(parser.finish().unwrap()).collect();
    let mut events = Vec::new();
    for frame in frames {
        let payload: Value = serde_json::from_str(&frame.data).unwrap();
        assert_eq!(frame.event.as_deref(), payload["type"].as_str(), "event name equals the payload type");
        events.push(payload);
    }
    let sequence: Vec<u64> = events.iter().map(|e| e["sequence_number"].as_u64().unwrap()).collect();
    assert!(sequence.windows(2).all(|w| w[1] == w[0] + 1), "sequence numbers: {sequence:?}");
    assert_eq!(events[0]["type"], "response.created");
    let terminal = events.last().unwrap().clone();
    assert!(
        ["response.completed", "response.incomplete", "response.failed"].contains(&terminal["type"].as_str().unwrap()),
        "{terminal}"
    );
    // Every item event refers to an item added before it at the same output index.
    let mut added = std::collections::HashMap::new();
    for event in &events {
        if event["type"] == "response.output_item.added" {
            added.insert(event["item"]["id"].as_str().unwrap().to_owned(), event["output_index"].clone());
        }
        if let Some(id) = event.get("item_id").and_then(Value::as_str) {
            assert_eq!(added.get(id), Some(&event["output_index"]), "{event}");
        }
    }
    Answer { status, headers, request_id, body: terminal["response"].clone(), events }
}

/// The output with generated ids replaced by their prefix and `*`.
fn shape(output: &Value) -> Value {
    let mut output = output.clone();
    for item in output.as_array_mut().unwrap() {
        for (field, prefixes) in [("id", &["msg_", "fc_", "rs_"][..]), ("call_id", &["call_"][..])] {
            if let Some(id) = item.get(field).and_then(Value::as_str) {
                let prefix = prefixes.iter().find(|p| id.starts_with(**p)).unwrap_or_else(|| panic!("{field} {id}"));
                item[field] = json!(format!("{prefix}*"));
            }
        }
    }
    output
}

fn message(text: &str) -> Value {
    json!({"type": "message", "id": "msg_*", "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]})
}

fn signature_item() -> Value {
    json!({"type": "reasoning", "id": "rs_*", "summary": [{"type": "summary_text", "text": ""}],
        "encrypted_content": gemini_stub::SIGNATURE})
}

fn call_item(name: &str, arguments: &str) -> Value {
    json!({"type": "function_call", "id": "fc_*", "call_id": "call_*", "name": name, "arguments": arguments, "status": "completed"})
}

fn stub_usage() -> Value {
    json!({"input_tokens": 12, "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0}, "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 19})
}

/// The request reached Gemini at the right method with the key, and its body is `expected`.
fn check_upstream(setup: &Setup, model: &str, stream: bool, expected: &Value) {
    let request = setup.stub.last_request();
    assert_eq!(request.model, model);
    assert_eq!(request.headers["x-goog-api-key"], "AIza-test");
    if stream {
        assert_eq!(request.method, "streamGenerateContent");
        assert_eq!(request.query.as_deref(), Some("alt=sse"));
    } else {
        assert_eq!(request.method, "generateContent");
        assert_eq!(request.query, None);
    }
    assert_eq!(&request.body, expected);
}

async fn check_usage(setup: &Setup, answer: &Answer, model: &str, status: UsageStatus) {
    let record = setup.gw.usage_of(&answer.request_id).await;
    assert_eq!(record.provider, "gemini");
    assert_eq!(record.model, model);
    assert_eq!(record.status, status);
    let tokens = &record.tokens;
    assert_eq!(
        (tokens.input_tokens, tokens.cached_input_tokens, tokens.output_tokens, tokens.reasoning_tokens),
        (12, 4, 7, 2)
    );
    assert_eq!(record.cost.0, STUB_COST_NANOS);
}

macro_rules! both_modes {
    ($name:ident, $scenario:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn complete() {
                super::$scenario(false).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn streamed() {
                super::$scenario(true).await;
            }
        }
    };
}

async fn plain_text(stream: bool) {
    let setup = setup().await;
    let request = json!({"model": "google/gemini-2.5-flash", "input": "hi", "instructions": "Be brief.",
        "temperature": 0.5, "max_output_tokens": 100});
    let answer = ask(&setup, request, stream).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["status"], "completed");
    assert_eq!(answer.body["model"], "google/gemini-2.5-flash");
    assert_eq!(answer.body["instructions"], "Be brief.");
    assert_eq!(shape(&answer.body["output"]), json!([message(gemini_stub::TEXT)]));
    assert_eq!(answer.body["usage"], stub_usage());
    if stream {
        assert_eq!(answer.text_deltas(), vec!["Hello ", "from G", "emini"], "pieces arrive as Gemini sent them");
        assert_eq!(answer.events.last().unwrap()["type"], "response.completed");
    }
    check_upstream(
        &setup,
        "gemini-2.5-flash",
        stream,
        &json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "generationConfig": {"temperature": 0.5, "maxOutputTokens": 100}}),
    );
    if stream {
        assert_eq!(setup.stub.last_request().headers["accept"], "text/event-stream");
    }
    check_usage(&setup, &answer, "google/gemini-2.5-flash", UsageStatus::Success).await;
}
both_modes!(plain_text_is, plain_text);

fn weather_tool() -> Value {
    json!({"type": "function", "name": "get_weather", "description": "Current weather of a city", "strict": true,
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false}})
}

fn weather_declaration() -> Value {
    json!({"name": "get_weather", "description": "Current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}})
}

async fn tool_round_trip(stream: bool) {
    let setup = setup().await;
    let question = json!({"role": "user", "content": "Weather in Paris?"});
    let first =
        ask(&setup, json!({"model": "google/tools-one", "input": [question], "tools": [weather_tool()]}), stream).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["status"], "completed");
    assert_eq!(
        shape(&first.body["output"]),
        json!([signature_item(), call_item("get_weather", "{\"city\":\"Paris\"}")]),
        "the thought signature rides in a reasoning item before the call"
    );
    check_upstream(
        &setup,
        "tools-one",
        stream,
        &json!({"contents": [{"role": "user", "parts": [{"text": "Weather in Paris?"}]}],
            "tools": [{"functionDeclarations": [weather_declaration()]}]}),
    );
    check_usage(&setup, &first, "google/tools-one", UsageStatus::Success).await;

    // Second turn: the client sends the output back with the function's result.
    let call = first.body["output"][1].clone();
    let mut input = vec![question];
    input.extend(first.body["output"].as_array().unwrap().iter().cloned());
    input.push(json!({"type": "function_call_output", "call_id": call["call_id"], "output": "{\"temp_c\": 18}"}));
    let second =
        ask(&setup, json!({"model": "google/tools-one", "input": input, "tools": [weather_tool()]}), stream).await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(shape(&second.body["output"]), json!([message("Tool said: {\"temp_c\":18}")]));
    check_upstream(
        &setup,
        "tools-one",
        stream,
        &json!({"contents": [
            {"role": "user", "parts": [{"text": "Weather in Paris?"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                "thoughtSignature": gemini_stub::SIGNATURE}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"result": {"temp_c": 18}}}}]}],
            "tools": [{"functionDeclarations": [weather_declaration()]}]}),
    );
    check_usage(&setup, &second, "google/tools-one", UsageStatus::Success).await;
}
both_modes!(tool_round_trip_is, tool_round_trip);

async fn parallel_calls(stream: bool) {
    let setup = setup().await;
    let time_tool = json!({"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}}});
    let request = json!({"model": "google/tools-two", "input": "Weather and time in Paris?",
        "tools": [weather_tool(), time_tool], "tool_choice": "required"});
    let answer = ask(&setup, request, stream).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        shape(&answer.body["output"]),
        json!([
            signature_item(),
            call_item("get_weather", "{\"city\":\"Paris\"}"),
            call_item("get_time", "{\"timezone\":\"Europe/Paris\"}")
        ])
    );
    assert_ne!(answer.body["output"][1]["call_id"], answer.body["output"][2]["call_id"], "distinct call ids");
    if stream {
        let arguments: Vec<&Value> =
            answer.events.iter().filter(|e| e["type"] == "response.function_call_arguments.delta").collect();
        assert_eq!(arguments.len(), 2, "each call's arguments arrive whole");
    }
    check_upstream(
        &setup,
        "tools-two",
        stream,
        &json!({"contents": [{"role": "user", "parts": [{"text": "Weather and time in Paris?"}]}],
            "tools": [{"functionDeclarations": [weather_declaration(),
                {"name": "get_time", "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}}}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}),
    );
    check_usage(&setup, &answer, "google/tools-two", UsageStatus::Success).await;
}
both_modes!(parallel_calls_are, parallel_calls);

async fn structured_output(stream: bool) {
    let setup = setup().await;
    let schema = json!({"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"], "additionalProperties": false});
    let format = json!({"type": "json_schema", "name": "answer", "schema": schema, "strict": true});
    let request = json!({"model": "google/json", "input": "6 times 7?", "text": {"format": format}});
    let answer = ask(&setup, request, stream).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(shape(&answer.body["output"]), json!([message("{\"answer\":42}")]));
    assert_eq!(answer.body["text"]["format"], format, "the format is echoed");
    check_upstream(
        &setup,
        "json",
        stream,
        &json!({"contents": [{"role": "user", "parts": [{"text": "6 times 7?"}]}],
            "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": schema}}),
    );
    check_usage(&setup, &answer, "google/json", UsageStatus::Success).await;
}
both_modes!(structured_output_is, structured_output);

async fn max_tokens(stream: bool) {
    let setup = setup().await;
    let answer =
        ask(&setup, json!({"model": "google/length", "input": "Tell a story", "max_output_tokens": 16}), stream).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["status"], "incomplete");
    assert_eq!(answer.body["incomplete_details"], json!({"reason": "max_output_tokens"}));
    // The message the limit cut is kept, marked incomplete.
    let mut cut = message("Once upon a time");
    cut["status"] = json!("incomplete");
    assert_eq!(shape(&answer.body["output"]), json!([cut]));
    assert_eq!(answer.body["usage"], stub_usage());
    if stream {
        assert_eq!(answer.events.last().unwrap()["type"], "response.incomplete");
    }
    check_upstream(
        &setup,
        "length",
        stream,
        &json!({"contents": [{"role": "user", "parts": [{"text": "Tell a story"}]}],
            "generationConfig": {"maxOutputTokens": 16}}),
    );
    check_usage(&setup, &answer, "google/length", UsageStatus::Incomplete).await;
}
both_modes!(max_tokens_truncation_is_incomplete, max_tokens);

async fn upstream_errors(stream: bool) {
    let setup = setup().await;
    let limited = ask(&setup, json!({"model": "google/error-429", "input": "x"}), stream).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.headers["content-type"], "application/json");
    assert_eq!(limited.headers["retry-after"], "7");
    let error = &limited.body["error"];
    assert_eq!(error["code"], "resource_exhausted");
    assert_eq!(error["type"], "rate_limit_error");
    assert_eq!(error["retry_after_seconds"], 7);
    assert!(error["message"].as_str().unwrap().starts_with("You exceeded your current quota"));
    assert_eq!(limited.body["request_id"], limited.request_id.as_str());
    assert_eq!(setup.stub.last_request().model, "error-429");

    let broken = ask(&setup, json!({"model": "google/error-500", "input": "x"}), stream).await;
    assert_eq!(broken.status, 502);
    assert_eq!(broken.body["error"]["code"], "upstream_error");
    assert_eq!(broken.body["error"]["type"], "api_error");
    assert!(!broken.body.to_string().contains("internal error has occurred"), "provider internals stay home");
    let record = setup.gw.usage_of(&broken.request_id).await;
    assert_eq!((record.status, record.cost.0, record.provider.as_str()), (UsageStatus::Error, 0, "gemini"));
}
both_modes!(upstream_errors_are_mapped, upstream_errors);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_features_never_reach_gemini() {
    let setup = setup().await;
    for (body, code, param) in [
        (
            json!({"model": "google/gemini-2.5-flash", "input": "x", "tools": [{"type": "web_search_preview"}]}),
            "unsupported_tool",
            "tools[0].type",
        ),
        (
            json!({"model": "google/tools-one", "input": "x", "tools": [weather_tool()], "parallel_tool_calls": false}),
            "unsupported_parameter",
            "parallel_tool_calls",
        ),
    ] {
        let answer = ask(&setup, body, false).await;
        assert_eq!(answer.status, 400);
        assert_eq!(answer.body["error"]["code"], code);
        assert_eq!(answer.body["error"]["param"], param);
        assert!(answer.body["error"]["message"].as_str().unwrap().contains("`gemini`"));
    }
    assert!(setup.stub.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_against_gemini() {
    let setup = setup().await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/gemini_scenarios.py");
    let output = tokio::process::Command::new("python3")
        .arg(script)
        .args([
            format!("{}/v1", setup.gw.url),
            setup.secret.clone(),
            "google/gemini-2.5-flash".to_owned(),
            "google/tools-one".to_owned(),
            gemini_stub::TEXT.to_owned(),
        ])
        .output()
        .await
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "python SDK failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("gemini-sdk-ok"));

    // The script's second turns: one sent the whole first output back (the real signature
    // returns), the other only the call (the documented placeholder stands in).
    let second_turns: Vec<Value> = setup
        .stub
        .requests()
        .into_iter()
        .filter(|r| r.model == "tools-one" && r.body["contents"].as_array().unwrap().len() == 3)
        .map(|r| r.body["contents"][1]["parts"][0]["thoughtSignature"].clone())
        .collect();
    assert_eq!(second_turns, vec![json!(gemini_stub::SIGNATURE), json!("skip_thought_signature_validator")]);
}
