//! Tests of the `anthropic` provider API: requests out, answers and streams in, errors.

use super::*;
use crate::config::{ProviderApi, Secret};
use crate::providers::assemble::{Assembler, ResponseContext};
use crate::sse::SseParser;

fn provider() -> ProviderConfig {
    ProviderConfig {
        name: "anthropic".to_owned(),
        api: ProviderApi::Anthropic,
        base_url: "https://api.anthropic.com/".to_owned(),
        api_key: Some(Secret::new("sk-ant-test")),
        api_key_secret_arn: None,
        token_delay: std::time::Duration::ZERO,
    }
}

fn row(max_output_tokens: Option<u64>) -> ModelPrice {
    ModelPrice {
        model: "anthropic/claude-sonnet-4".to_owned(),
        provider: "anthropic".to_owned(),
        upstream_model: "claude-sonnet-4-20250514".to_owned(),
        input_usd_per_mtok: None,
        output_usd_per_mtok: None,
        cached_input_usd_per_mtok: None,
        context_length: Some(200_000),
        max_output_tokens,
        is_free: false,
        is_default: true,
        enabled: true,
        priority: None,
    }
}

fn object(body: Value) -> Map<String, Value> {
    body.as_object().cloned().unwrap()
}

fn translate_with(row: &ModelPrice, body: Value, stream: bool) -> Result<Value, GatewayError> {
    let request = Anthropic.request(&provider(), row, &object(body), stream)?;
    Ok(serde_json::from_slice(&request.body).unwrap())
}

fn translate(body: Value) -> Result<Value, GatewayError> {
    translate_with(&row(Some(16_384)), body, false)
}

fn user_text(text: &str) -> Value {
    json!({"role": "user", "content": [{"type": "text", "text": text}]})
}

/// JSON pointers into a Messages request and the values expected there.
type Pointers = Vec<(&'static str, Value)>;

/// Each case: a Responses body and the JSON pointers of the Messages request it must produce
/// (`Value::Null` = the field is absent).
#[test]
fn request_translation_table() {
    let weather_schema = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
    let call = |id: &str, city: &str| {
        json!({"type": "function_call", "id": format!("fc_{id}"), "call_id": id, "name": "get_weather",
                "arguments": format!("{{\"city\":\"{city}\"}}"), "status": "completed"})
    };
    let output = |id: &str, text: &str| json!({"type": "function_call_output", "call_id": id, "output": text});
    let tool_use =
        |id: &str, city: &str| json!({"type": "tool_use", "id": id, "name": "get_weather", "input": {"city": city}});
    let tool_result = |id: &str, text: &str| json!({"type": "tool_result", "tool_use_id": id, "content": text});
    let tools = json!([{"type": "function", "name": "get_weather", "parameters": weather_schema}]);
    let cases: Vec<(&str, Value, Pointers)> = vec![
        (
            "a string input is one user text message; the row gives max_tokens",
            json!({"input": "hi"}),
            vec![
                ("/model", json!("claude-sonnet-4-20250514")),
                ("/max_tokens", json!(16_384)),
                ("/messages", json!([user_text("hi")])),
                ("/system", Value::Null),
                ("/stream", Value::Null),
                ("/tools", Value::Null),
                ("/tool_choice", Value::Null),
                ("/thinking", Value::Null),
                ("/temperature", Value::Null),
            ],
        ),
        (
            "max_output_tokens wins over the row",
            json!({"input": "hi", "max_output_tokens": 300}),
            vec![("/max_tokens", json!(300))],
        ),
        (
            "instructions, system and developer messages join `system` in order",
            json!({"instructions": "Be brief.", "input": [
                {"role": "system", "content": "Sys one."},
                {"role": "user", "content": "hi"},
                {"role": "developer", "content": [{"type": "input_text", "text": "Dev two."}]}
            ]}),
            vec![
                (
                    "/system",
                    json!([{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Sys one."},
                            {"type": "text", "text": "Dev two."}]),
                ),
                ("/messages", json!([user_text("hi")])),
            ],
        ),
        (
            "consecutive turns of one role merge; empty text is skipped",
            json!({"input": [
                {"role": "user", "content": "a"},
                {"role": "user", "content": [{"type": "input_text", "text": "b"}, {"type": "input_text", "text": ""}]},
                {"role": "assistant", "content": [{"type": "output_text", "text": "c", "annotations": []}]},
                {"type": "message", "role": "assistant", "content": "d"},
                {"role": "assistant", "content": ""},
                {"role": "user", "content": "e"}
            ]}),
            vec![(
                "/messages",
                json!([
                    {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                    {"role": "assistant", "content": [{"type": "text", "text": "c"}, {"type": "text", "text": "d"}]},
                    user_text("e")
                ]),
            )],
        ),
        (
            "images: data URLs become base64 sources, http(s) URLs url sources",
            json!({"input": [{"role": "user", "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="},
                {"type": "input_image", "image_url": "https://example.com/cat.jpg", "detail": "auto"}
            ]}]}),
            vec![(
                "/messages/0/content",
                json!([
                    {"type": "text", "text": "What is this?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
                ]),
            )],
        ),
        (
            "a PDF file part becomes a document block",
            json!({"input": [{"role": "user", "content": [
                {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}
            ]}]}),
            vec![(
                "/messages/0/content/0",
                json!({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}),
            )],
        ),
        (
            "function round trip: call → tool_use in the assistant turn, output → tool_result",
            json!({"input": [
                    {"role": "user", "content": "Weather in Paris?"},
                    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me check."}]},
                    call("toolu_01", "Paris"),
                    output("toolu_01", "18C and sunny")
                ], "tools": tools}),
            vec![(
                "/messages",
                json!([
                    user_text("Weather in Paris?"),
                    {"role": "assistant", "content": [{"type": "text", "text": "Let me check."}, tool_use("toolu_01", "Paris")]},
                    {"role": "user", "content": [tool_result("toolu_01", "18C and sunny")]}
                ]),
            )],
        ),
        (
            "parallel calls share one assistant turn, their outputs one user turn",
            json!({"input": [
                {"role": "user", "content": "Paris and London?"},
                call("toolu_a", "Paris"), call("toolu_b", "London"),
                output("toolu_a", "18C"), output("toolu_b", "12C"),
                {"role": "user", "content": "Thanks, compare them."}
            ]}),
            vec![(
                "/messages",
                json!([
                    user_text("Paris and London?"),
                    {"role": "assistant", "content": [tool_use("toolu_a", "Paris"), tool_use("toolu_b", "London")]},
                    {"role": "user", "content": [tool_result("toolu_a", "18C"), tool_result("toolu_b", "12C"),
                        {"type": "text", "text": "Thanks, compare them."}]}
                ]),
            )],
        ),
        (
            "tool results come first in a user turn",
            json!({"input": [
                {"role": "user", "content": "q"}, call("toolu_a", "Paris"),
                {"role": "user", "content": "extra"}, output("toolu_a", "18C")
            ]}),
            vec![("/messages/2/content", json!([tool_result("toolu_a", "18C"), {"type": "text", "text": "extra"}]))],
        ),
        (
            "empty arguments become an empty input object; output parts become blocks",
            json!({"input": [
                {"role": "user", "content": "q"},
                {"type": "function_call", "call_id": "toolu_x", "name": "now", "arguments": ""},
                {"type": "function_call_output", "call_id": "toolu_x", "output": [
                    {"type": "input_text", "text": "noon"},
                    {"type": "input_image", "image_url": "https://example.com/clock.png"}
                ]}
            ]}),
            vec![
                ("/messages/1/content/0", json!({"type": "tool_use", "id": "toolu_x", "name": "now", "input": {}})),
                (
                    "/messages/2/content/0/content",
                    json!([{"type": "text", "text": "noon"},
                            {"type": "image", "source": {"type": "url", "url": "https://example.com/clock.png"}}]),
                ),
            ],
        ),
        (
            "signed reasoning goes back as a thinking block at the start of its assistant turn",
            json!({"input": [
                {"role": "user", "content": "Weather in Paris?"},
                {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Use the tool."}],
                    "encrypted_content": "EqQBsig"},
                call("toolu_01", "Paris"),
                output("toolu_01", "18C")
            ]}),
            vec![(
                "/messages/1",
                json!({"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "Use the tool.", "signature": "EqQBsig"},
                    tool_use("toolu_01", "Paris")
                ]}),
            )],
        ),
        (
            "unsigned reasoning is dropped; redacted state goes back as redacted_thinking",
            json!({"input": [
                {"role": "user", "content": "q"},
                {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "unsigned"}]},
                {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "redacted_thinking:EmwKAhgBEgy3va"},
                {"role": "assistant", "content": "ok"}
            ]}),
            vec![(
                "/messages/1",
                json!({"role": "assistant", "content": [
                    {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va"}, {"type": "text", "text": "ok"}
                ]}),
            )],
        ),
        (
            "reasoning that no assistant content follows is dropped",
            json!({"input": [
                {"role": "user", "content": "a"},
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "sig"},
                {"role": "user", "content": "b"}
            ]}),
            vec![(
                "/messages",
                json!([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]),
            )],
        ),
        (
            "flat function tools; `strict` is not sent; no parameters → an empty object schema",
            json!({"input": "hi", "tools": [
                {"type": "function", "name": "get_weather", "description": "Weather of a city", "parameters": weather_schema, "strict": true},
                {"type": "function", "name": "noop"}
            ]}),
            vec![
                (
                    "/tools",
                    json!([
                        {"name": "get_weather", "description": "Weather of a city", "input_schema": weather_schema},
                        {"name": "noop", "input_schema": {"type": "object", "properties": {}}}
                    ]),
                ),
                ("/tool_choice", Value::Null),
            ],
        ),
        (
            "tool_choice auto",
            json!({"input": "hi", "tools": tools, "tool_choice": "auto"}),
            vec![("/tool_choice", json!({"type": "auto"}))],
        ),
        (
            "tool_choice required → any",
            json!({"input": "hi", "tools": tools, "tool_choice": "required"}),
            vec![("/tool_choice", json!({"type": "any"}))],
        ),
        (
            "tool_choice none",
            json!({"input": "hi", "tools": tools, "tool_choice": "none"}),
            vec![("/tool_choice", json!({"type": "none"}))],
        ),
        (
            "tool_choice function → tool",
            json!({"input": "hi", "tools": tools, "tool_choice": {"type": "function", "name": "get_weather"}}),
            vec![("/tool_choice", json!({"type": "tool", "name": "get_weather"}))],
        ),
        (
            "parallel_tool_calls false → disable_parallel_tool_use on auto",
            json!({"input": "hi", "tools": tools, "parallel_tool_calls": false}),
            vec![("/tool_choice", json!({"type": "auto", "disable_parallel_tool_use": true}))],
        ),
        (
            "parallel_tool_calls false with required",
            json!({"input": "hi", "tools": tools, "tool_choice": "required", "parallel_tool_calls": false}),
            vec![("/tool_choice", json!({"type": "any", "disable_parallel_tool_use": true}))],
        ),
        (
            "parallel_tool_calls false with none",
            json!({"input": "hi", "tools": tools, "tool_choice": "none", "parallel_tool_calls": false}),
            vec![("/tool_choice", json!({"type": "none"}))],
        ),
        (
            "tool_choice without tools is not sent",
            json!({"input": "hi", "tool_choice": "required"}),
            vec![("/tool_choice", Value::Null)],
        ),
        (
            "sampling parameters and stop sequences",
            json!({"input": "hi", "temperature": 0.5, "top_p": 0.9, "stop": "END"}),
            vec![("/temperature", json!(0.5)), ("/top_p", json!(0.9)), ("/stop_sequences", json!(["END"]))],
        ),
        ("stop as a list", json!({"input": "hi", "stop": ["a", "b"]}), vec![("/stop_sequences", json!(["a", "b"]))]),
        ("temperature 1 is allowed", json!({"input": "hi", "temperature": 1}), vec![("/temperature", json!(1))]),
        (
            "reasoning effort low → a 1024-token thinking budget",
            json!({"input": "hi", "reasoning": {"effort": "low"}}),
            vec![("/thinking", json!({"type": "enabled", "budget_tokens": 1024})), ("/max_tokens", json!(16_384))],
        ),
        (
            "effort minimal",
            json!({"input": "hi", "reasoning": {"effort": "minimal"}}),
            vec![("/thinking/budget_tokens", json!(1024))],
        ),
        (
            "effort medium",
            json!({"input": "hi", "reasoning": {"effort": "medium"}}),
            vec![("/thinking/budget_tokens", json!(4096))],
        ),
        (
            "effort high raises max_tokens above the budget",
            json!({"input": "hi", "reasoning": {"effort": "high"}, "max_output_tokens": 2000}),
            vec![("/thinking/budget_tokens", json!(16_384)), ("/max_tokens", json!(18_384))],
        ),
        (
            "effort none → no thinking",
            json!({"input": "hi", "reasoning": {"effort": "none"}}),
            vec![("/thinking", Value::Null)],
        ),
        (
            "effort xhigh",
            json!({"input": "hi", "reasoning": {"effort": "xhigh"}}),
            vec![("/thinking/budget_tokens", json!(32_768))],
        ),
        (
            "effort max → the largest budget that leaves a 4096-token answer in 64k",
            json!({"input": "hi", "reasoning": {"effort": "max"}, "max_output_tokens": 4096}),
            vec![("/thinking/budget_tokens", json!(59_904)), ("/max_tokens", json!(64_000))],
        ),
        (
            "safety_identifier → metadata.user_id",
            json!({"input": "hi", "safety_identifier": "sid-3f9a"}),
            vec![("/metadata", json!({"user_id": "sid-3f9a"})), ("/safety_identifier", Value::Null)],
        ),
        (
            "user is preferred to safety_identifier",
            json!({"input": "hi", "user": "u-1", "safety_identifier": "sid-3f9a"}),
            vec![("/metadata", json!({"user_id": "u-1"}))],
        ),
        (
            "service_tier auto is Anthropic's own default; default is standard_only",
            json!({"input": "hi", "service_tier": "auto"}),
            vec![("/service_tier", Value::Null)],
        ),
        (
            "service_tier default",
            json!({"input": "hi", "service_tier": "default"}),
            vec![("/service_tier", json!("standard_only"))],
        ),
        (
            "fields Anthropic has no use for are not sent",
            json!({"input": "hi", "store": true, "metadata": {"a": "b"}, "truncation": "disabled",
                    "include": ["reasoning.encrypted_content"], "prompt_cache_key": "k", "top_logprobs": 0,
                    "stream_options": {"include_obfuscation": true}, "text": {"verbosity": "medium"}}),
            vec![
                ("/store", Value::Null),
                ("/metadata", Value::Null),
                ("/truncation", Value::Null),
                ("/include", Value::Null),
                ("/prompt_cache_key", Value::Null),
                ("/top_logprobs", Value::Null),
                ("/stream_options", Value::Null),
                ("/text", Value::Null),
            ],
        ),
    ];
    for (name, body, expected) in cases {
        let request = translate(body).unwrap_or_else(|e| panic!("{name}: refused: {e:?}"));
        for (pointer, want) in expected {
            let got = request.pointer(pointer).cloned().unwrap_or(Value::Null);
            assert_eq!(got, want, "{name}: {pointer} in {request:#}");
        }
    }
}

#[test]
fn max_tokens_defaults_to_4096_without_a_row_limit() {
    let request = translate_with(&row(None), json!({"input": "hi"}), false).unwrap();
    assert_eq!(request["max_tokens"], 4096);
    let request = translate_with(&row(None), json!({"input": "hi", "reasoning": {"effort": "medium"}}), false).unwrap();
    assert_eq!(request["max_tokens"], 8192, "raised above the 4096 budget");
}

#[test]
fn structured_output_is_asked_for_in_the_system_prompt() {
    let schema = json!({"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]});
    let request = translate(json!({"input": "hi", "instructions": "Be exact.",
            "text": {"format": {"type": "json_schema", "name": "result", "schema": schema, "strict": true}}}))
    .unwrap();
    assert_eq!(request["system"][0]["text"], "Be exact.");
    let instruction = request["system"][1]["text"].as_str().unwrap();
    assert!(instruction.contains("JSON Schema"), "{instruction}");
    assert!(instruction.contains("`result`"), "{instruction}");
    assert!(instruction.ends_with(&schema.to_string()), "{instruction}");
    assert!(request.get("response_format").is_none() && request.get("text").is_none());
    let request = translate(json!({"input": "hi", "text": {"format": {"type": "json_object"}}})).unwrap();
    assert!(request["system"][0]["text"].as_str().unwrap().contains("JSON object"));
    let request = translate(json!({"input": "hi", "text": {"format": {"type": "text"}}})).unwrap();
    assert!(request.get("system").is_none());
}

#[test]
fn url_headers_and_stream_flag() {
    let request = Anthropic.request(&provider(), &row(None), &object(json!({"input": "hi"})), true).unwrap();
    assert_eq!(request.url, "https://api.anthropic.com/v1/messages");
    let header = |name: &str| request.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
    assert_eq!(header("x-api-key"), Some("sk-ant-test"));
    assert_eq!(header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(header("authorization"), None);
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["stream"], true);
    let mut keyless = provider();
    keyless.api_key = None;
    let err = Anthropic.request(&keyless, &row(None), &object(json!({"input": "hi"})), false).unwrap_err();
    assert_eq!(err.status(), 503);
}

#[test]
fn refusals_name_the_provider_and_the_field() {
    let mut cases: Vec<(Value, &str, &str)> = crate::request::BUILTIN_TOOLS
        .iter()
        .map(|kind| (json!({"input": "hi", "tools": [{"type": kind}]}), "unsupported_tool", "tools[0].type"))
        .collect();
    cases.extend([
            (json!({"input": "hi", "seed": 7}), "unsupported_parameter", "seed"),
            (json!({"input": "hi", "top_logprobs": 2}), "unsupported_parameter", "top_logprobs"),
            (json!({"input": "hi", "temperature": 1.5}), "unsupported_parameter", "temperature"),
            (json!({"input": "hi", "max_tool_calls": 1}), "unsupported_parameter", "max_tool_calls"),
            (json!({"input": "hi", "truncation": "auto"}), "unsupported_parameter", "truncation"),
            (json!({"input": "hi", "include": ["message.output_text.logprobs"]}), "unsupported_parameter", "include[0]"),
            (json!({"input": "hi", "text": {"verbosity": "low"}}), "unsupported_parameter", "text.verbosity"),
            (json!({"input": "hi", "service_tier": "flex"}), "unsupported_parameter", "service_tier"),
            (json!({"input": [{"type": "item_reference", "id": "msg_1"}]}), "unsupported_parameter", "input[0]"),
            (json!({"input": [{"type": "web_search_call", "id": "ws_1"}]}), "unsupported_parameter", "input[0].type"),
            (
                json!({"input": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
                "unsupported_parameter",
                "input[0].content[0].type",
            ),
            (
                json!({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]}),
                "unsupported_parameter",
                "input[0].content[0]",
            ),
            (
                json!({"input": [{"role": "user", "content": "q"},
                    {"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}]}),
                "invalid_value",
                "input[1].arguments",
            ),
            (json!({"input": [{"role": "system", "content": "only a system prompt"}]}), "invalid_value", "input"),
            (
                json!({"input": "hi", "tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "web_search_preview"}}),
                "unsupported_tool",
                "tool_choice",
            ),
            (json!({"input": "hi", "stop": 3}), "invalid_type", "stop"),
        ]);
    for (body, code, param) in cases {
        let err = translate(body.clone()).expect_err(&format!("refused: {body}"));
        assert_eq!(err.status(), 400, "{body}");
        let envelope = err.body();
        assert_eq!(envelope["code"], code, "{body}: {envelope}");
        assert_eq!(envelope["param"], param, "{body}: {envelope}");
        if code.starts_with("unsupported") {
            assert!(envelope["message"].as_str().unwrap().contains("`anthropic`"), "{envelope}");
        }
    }
}

/// Usage with `cache_creation_input_tokens` (`writes`), which the input count includes.
fn written(input: u64, cached: u64, writes: u64, output: u64) -> Delta {
    Delta::Usage(TokenUsage {
        input_tokens: input,
        cached_input_tokens: cached,
        output_tokens: output,
        cache_write_tokens: writes,
        ..TokenUsage::default()
    })
}

#[test]
fn response_blocks_become_deltas_in_order() {
    let body = json!({
        "id": "msg_01Aq9w938a90dw8q", "type": "message", "role": "assistant", "model": "claude-sonnet-4-20250514",
        "content": [
            {"type": "thinking", "thinking": "The user wants weather.", "signature": "EqQBCgIYAhIM"},
            {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"},
            {"type": "text", "text": "I'll check the weather."},
            {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather", "input": {"location": "San Francisco, CA"}},
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 2095, "output_tokens": 503, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 2000,
            "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 0}, "service_tier": "standard"}
    });
    let deltas = Anthropic.response(body.to_string().as_bytes()).unwrap();
    assert_eq!(
        deltas,
        vec![
            Delta::Reasoning("The user wants weather.".into()),
            Delta::ReasoningState("EqQBCgIYAhIM".into()),
            Delta::ReasoningState("redacted_thinking:EmwKAhgBEgy3va3pzix".into()),
            Delta::Text("I'll check the weather.".into()),
            Delta::ToolCallStart {
                index: 3,
                call_id: "toolu_01A09q90qw90lq917835lq9".into(),
                name: "get_weather".into()
            },
            Delta::ToolCallArguments { index: 3, fragment: r#"{"location":"San Francisco, CA"}"#.into() },
            written(4195, 2000, 100, 503),
            Delta::Finish(FinishReason::Stop),
        ]
    );
}

#[test]
fn stop_reasons_map_to_finish_reasons() {
    for (stop, want) in [
        ("end_turn", FinishReason::Stop),
        ("stop_sequence", FinishReason::Stop),
        ("tool_use", FinishReason::Stop),
        ("pause_turn", FinishReason::Stop),
        ("max_tokens", FinishReason::Length),
        ("model_context_window_exceeded", FinishReason::Length),
        ("refusal", FinishReason::ContentFilter),
    ] {
        let body = json!({"type": "message", "content": [{"type": "text", "text": "x"}], "stop_reason": stop,
                "usage": {"input_tokens": 1, "output_tokens": 1}});
        let deltas = Anthropic.response(body.to_string().as_bytes()).unwrap();
        assert_eq!(deltas.last(), Some(&Delta::Finish(want)), "{stop}");
    }
    assert_eq!(Anthropic.response(b"<html>").unwrap_err().status(), 502);
}

/// Decodes a recorded stream, cut into `chunk`-byte network pieces.
fn decode(transcript: &str, chunk: usize) -> Result<Vec<Delta>, StreamFault> {
    let mut parser = SseParser::new();
    let mut decoder = Anthropic.decoder();
    let mut deltas = Vec::new();
    for piece in transcript.as_bytes().chunks(chunk) {
        for event in parser.feed(piece)? {
            deltas.extend(decoder.decode(event)?);
        }
    }
    if let Some(event) = parser.finish()? {
        deltas.extend(decoder.decode(event)?);
    }
    deltas.extend(decoder.finish());
    Ok(deltas)
}

/// The final Responses object the assembler builds from a recorded stream.
fn assembled(transcript: &str) -> Value {
    let mut assembler = Assembler::new(ResponseContext::new("anthropic/claude-sonnet-4", &Map::new()));
    let mut last = Vec::new();
    for delta in decode(transcript, 7).unwrap() {
        let events = assembler.push(delta);
        if !events.is_empty() {
            last = events;
        }
    }
    last.pop().unwrap()["response"].clone()
}

const TEXT: &str = include_str!("../../../../tests/fixtures/anthropic-text.sse");
const TOOL_USE: &str = include_str!("../../../../tests/fixtures/anthropic-tool-use.sse");
const THINKING: &str = include_str!("../../../../tests/fixtures/anthropic-thinking.sse");
const ERROR: &str = include_str!("../../../../tests/fixtures/anthropic-error.sse");

#[test]
fn stream_text_deltas_and_usage() {
    let deltas = decode(TEXT, 1 << 20).unwrap();
    assert_eq!(
        deltas,
        vec![
            written(135, 100, 10, 1),
            Delta::Text(String::new()),
            Delta::Text("Hello".into()),
            Delta::Text(" from Claude".into()),
            written(135, 100, 10, 15),
            Delta::Finish(FinishReason::Stop),
        ]
    );
    assert_eq!(decode(TEXT, 7).unwrap(), deltas, "network chunking does not matter");
    let response = assembled(TEXT);
    assert_eq!(response["status"], "completed");
    assert_eq!(response["output"][0]["content"][0]["text"], "Hello from Claude");
    assert_eq!(response["usage"]["input_tokens"], 135);
    assert_eq!(response["usage"]["input_tokens_details"]["cached_tokens"], 100);
    assert_eq!(response["usage"]["output_tokens"], 15);
}

#[test]
fn stream_tool_use_arguments_arrive_in_fragments() {
    let deltas = decode(TOOL_USE, 1 << 20).unwrap();
    let fragments: String = deltas
        .iter()
        .filter_map(|d| match d {
            Delta::ToolCallArguments { index: 1, fragment } => Some(fragment.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(fragments, r#"{"location": "San Francisco, CA", "unit": "fahrenheit"}"#);
    let response = assembled(TOOL_USE);
    assert_eq!(response["status"], "completed");
    let output = response["output"].as_array().unwrap();
    assert_eq!(output.len(), 2);
    assert_eq!(output[0]["content"][0]["text"], "Okay, let's check the weather for San Francisco, CA:");
    assert_eq!(output[1]["type"], "function_call");
    assert_eq!(output[1]["call_id"], "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
    assert_eq!(output[1]["name"], "get_weather");
    assert_eq!(output[1]["arguments"], fragments);
    assert_eq!(response["usage"]["output_tokens"], 89);
}

#[test]
fn stream_thinking_becomes_a_reasoning_item_with_its_signature() {
    let response = assembled(THINKING);
    let output = response["output"].as_array().unwrap();
    assert_eq!(output[0]["type"], "reasoning");
    assert_eq!(
            output[0]["summary"][0]["text"],
            "I need to find the GCD of 1071 and 462 using the Euclidean algorithm.\n\n1071 = 2 × 462 + 147\n462 = 3 × 147 + 21\n147 = 7 × 21 + 0"
        );
    assert!(output[0]["encrypted_content"]
        .as_str()
        .unwrap()
        .starts_with("EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl"));
    assert_eq!(output[1]["content"][0]["text"], "The greatest common divisor of 1071 and 462 is **21**.");
    assert_eq!(response["usage"]["output_tokens"], 142);
}

#[test]
fn stream_error_event_fails_the_response() {
    let deltas = decode(ERROR, 1 << 20).unwrap();
    assert_eq!(deltas.last(), Some(&Delta::Finish(FinishReason::Error("Overloaded (overloaded_error)".into()))));
    let response = assembled(ERROR);
    assert_eq!(response["status"], "failed");
    assert_eq!(response["output"][0]["content"][0]["text"], "Once upon");
    assert_eq!(response["usage"]["input_tokens"], 12);
}

#[test]
fn stream_edge_cases() {
    // A length stop, a tool input given whole at its block's start, usage in message_delta
    // carrying the input side too, unknown events and deltas skipped.
    let transcript = [
            r#"{"type":"message_start","message":{"usage":{"input_tokens":5,"output_tokens":1}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_9","name":"f","input":{"a":1}}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"citations_delta","citation":{}}}"#,
            r#"{"type":"brand_new_event"}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"input_tokens":5,"cache_read_input_tokens":20,"output_tokens":9}}"#,
            r#"{"type":"message_stop"}"#,
        ]
        .iter()
        .map(|data| format!("data: {data}\n\n"))
        .collect::<String>();
    let deltas = decode(&transcript, 1 << 20).unwrap();
    assert_eq!(
        deltas,
        vec![
            written(5, 0, 0, 1),
            Delta::ToolCallStart { index: 0, call_id: "toolu_9".into(), name: "f".into() },
            Delta::ToolCallArguments { index: 0, fragment: r#"{"a":1}"#.into() },
            Delta::Text(String::new()),
            written(25, 20, 0, 9),
            Delta::Finish(FinishReason::Length),
        ]
    );
    let malformed = decode("event: content_block_delta\ndata: {not json\n\n", 64);
    assert!(matches!(malformed, Err(StreamFault::Malformed(_))));
    let wrong_shape = decode("data: {\"type\":\"content_block_delta\",\"index\":\"x\"}\n\n", 64);
    assert!(matches!(wrong_shape, Err(StreamFault::Malformed(_))));
}

#[test]
fn error_mapping_table() {
    let envelope = |kind: &str, message: &str| {
        json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}).to_string()
    };
    let mut retry = HeaderMap::new();
    retry.insert("retry-after", http::HeaderValue::from_static("7"));
    let none = HeaderMap::new();
    // (status, headers, body) in; (status, type, code, retry-after) out.
    type Row<'a> = (u16, &'a HeaderMap, String, u16, &'a str, &'a str, Option<u64>);
    let cases: Vec<Row> = vec![
        (
            400,
            &none,
            envelope("invalid_request_error", "max_tokens: Field required"),
            400,
            "invalid_request_error",
            "invalid_request_error",
            None,
        ),
        (
            400,
            &none,
            envelope("invalid_request_error", "prompt is too long: 208656 tokens > 200000 maximum"),
            400,
            "invalid_request_error",
            "context_length_exceeded",
            None,
        ),
        // The provider refused Mesh's own credential: the gateway's fault, not the caller's.
        (401, &none, envelope("authentication_error", "invalid x-api-key"), 502, "api_error", "upstream_error", None),
        (
            403,
            &none,
            envelope("permission_error", "Your API key does not have permission to use the specified resource."),
            502,
            "api_error",
            "upstream_error",
            None,
        ),
        (
            404,
            &none,
            envelope("not_found_error", "model: claude-nope"),
            404,
            "not_found_error",
            "not_found_error",
            None,
        ),
        (
            413,
            &none,
            envelope("request_too_large", "Request exceeds the maximum allowed number of bytes."),
            413,
            "request_too_large",
            "request_too_large",
            None,
        ),
        (
            429,
            &retry,
            envelope("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
            429,
            "rate_limit_error",
            "rate_limit_error",
            Some(7),
        ),
        (529, &none, envelope("overloaded_error", "Overloaded"), 502, "api_error", "upstream_error", None),
        (500, &none, envelope("api_error", "Internal server error"), 502, "api_error", "upstream_error", None),
    ];
    for (status, headers, body, want_status, want_type, want_code, want_retry) in cases {
        let err = Anthropic.error("anthropic", status, headers, body.as_bytes());
        assert_eq!(err.status(), want_status, "{body}");
        let error = err.body();
        assert_eq!(error["type"], want_type, "{body}");
        assert_eq!(error["code"], want_code, "{body}");
        assert_eq!(error.get("retry_after_seconds").and_then(Value::as_u64), want_retry, "{body}");
        if want_status < 500 {
            let message: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(error["message"], message["error"]["message"], "the provider's words are kept");
        }
    }
    let too_long = Anthropic.error(
        "anthropic",
        400,
        &none,
        envelope("invalid_request_error", "prompt is too long: 1 > 0").as_bytes(),
    );
    assert_eq!(too_long.body()["param"], "input");
    let html = Anthropic.error("anthropic", 413, &none, b"<html>413 Request Entity Too Large</html>");
    assert_eq!(html.status(), 413);
    assert!(html.body()["message"].as_str().unwrap().contains("`anthropic`"));
}
