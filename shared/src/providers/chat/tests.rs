//! Tests of the `chat` provider API: requests out, answers and streams in, errors.

use super::*;
use crate::config::{ProviderApi, Secret};
use crate::providers::assemble::ResponseContext;
use crate::providers::assemble_complete;
use crate::sse::SseParser;

const TEXT_SSE: &str = include_str!("../../../../tests/fixtures/chat-text.sse");
const TOOL_CALLS_SSE: &str = include_str!("../../../../tests/fixtures/chat-tool-calls.sse");
const REASONING_SSE: &str = include_str!("../../../../tests/fixtures/chat-reasoning.sse");

fn provider(name: &str) -> ProviderConfig {
    ProviderConfig {
        name: name.to_owned(),
        api: ProviderApi::Chat,
        base_url: "https://api.groq.com/openai/v1/".to_owned(),
        api_key: Some(Secret::new("gsk-test")),
        api_key_secret_arn: None,
        token_delay: std::time::Duration::ZERO,
    }
}

fn row() -> ModelPrice {
    ModelPrice {
        model: "meta/llama-3.3-70b".to_owned(),
        provider: "groq".to_owned(),
        upstream_model: "llama-3.3-70b-versatile".to_owned(),
        input_usd_per_mtok: None,
        output_usd_per_mtok: None,
        cached_input_usd_per_mtok: None,
        context_length: None,
        max_output_tokens: None,
        is_free: false,
        is_default: true,
        enabled: true,
        priority: None,
    }
}

fn translate_for(provider_name: &str, body: &Value, stream: bool) -> Result<Value, GatewayError> {
    let body = body.as_object().cloned().unwrap_or_default();
    let request = Chat.request(&provider(provider_name), &row(), &body, stream)?;
    Ok(serde_json::from_slice(&request.body).unwrap())
}

fn translate(body: &Value) -> Value {
    translate_for("groq", body, false).unwrap_or_else(|e| panic!("{body} refused: {e}"))
}

fn decode_all(sse: &str, piece: usize) -> Vec<Delta> {
    let mut parser = SseParser::new();
    let mut decoder = Chat.decoder();
    let mut deltas = Vec::new();
    for chunk in sse.as_bytes().chunks(piece) {
        for event in parser.feed(chunk).unwrap() {
            deltas.extend(decoder.decode(event).unwrap());
        }
    }
    if let Some(event) = parser.finish().unwrap() {
        deltas.extend(decoder.decode(event).unwrap());
    }
    deltas.extend(decoder.finish());
    deltas
}

fn data(json: &Value) -> SseEvent {
    SseEvent { event: None, data: json.to_string(), id: None }
}

use crate::providers::assemble::usage;

fn call(index: u64, call_id: &str, name: &str) -> Delta {
    Delta::ToolCallStart { index, call_id: call_id.to_owned(), name: name.to_owned() }
}

fn args(index: u64, fragment: &str) -> Delta {
    Delta::ToolCallArguments { index, fragment: fragment.to_owned() }
}

fn text_of(deltas: &[Delta]) -> String {
    deltas.iter().filter_map(|d| if let Delta::Text(t) = d { Some(t.as_str()) } else { None }).collect()
}

#[test]
fn request_translation_table() {
    let model = "llama-3.3-70b-versatile";
    let weather = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
    let cases: Vec<(&str, Value, Value)> = vec![
        (
            "string input and instructions",
            json!({"model": "meta/llama-3.3-70b", "input": "hi", "instructions": "be brief"}),
            json!({"model": model, "messages": [
                    {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}),
        ),
        (
            "message items of every role; text parts become one string",
            json!({"input": [
                    {"role": "developer", "content": "rules"},
                    {"type": "message", "role": "user", "content": [
                        {"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
                    {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed", "content": [
                        {"type": "output_text", "text": "ok", "annotations": []}]},
                    {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]},
                    {"role": "system", "content": "sys"}]}),
            json!({"model": model, "messages": [
                    {"role": "system", "content": "rules"},
                    {"role": "user", "content": "a\nb"},
                    {"role": "assistant", "content": "ok"},
                    {"role": "assistant", "content": "I can't."},
                    {"role": "system", "content": "sys"}]}),
        ),
        (
            "images become image_url parts, detail kept",
            json!({"input": [{"role": "user", "content": [
                    {"type": "input_text", "text": "what is this?"},
                    {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "low"},
                    {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="},
                    {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}]}]}),
            json!({"model": model, "messages": [{"role": "user", "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}}]}]}),
        ),
        (
            "function calls join the assistant message before them; reasoning is skipped",
            json!({"input": [
                    {"role": "user", "content": "weather in Paris and Rome?"},
                    {"type": "reasoning", "id": "rs_1", "summary": []},
                    {"role": "assistant", "content": "Let me check."},
                    {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "gAAA"},
                    {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
                        "arguments": "{\"city\":\"Paris\"}", "status": "completed"},
                    {"type": "function_call", "call_id": "call_2", "name": "get_weather", "arguments": "{\"city\":\"Rome\"}"},
                    {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
                    {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "21C"}]}]}),
            json!({"model": model, "messages": [
                    {"role": "user", "content": "weather in Paris and Rome?"},
                    {"role": "assistant", "content": "Let me check.", "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                        {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}]},
                    {"role": "tool", "content": "18C", "tool_call_id": "call_1"},
                    {"role": "tool", "content": "21C", "tool_call_id": "call_2"}]}),
        ),
        (
            "function calls after a user message open an assistant turn with null content",
            json!({"input": [
                    {"role": "user", "content": "weather?"},
                    {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
                    {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
                    {"type": "function_call", "call_id": "call_2", "name": "get_weather", "arguments": "{}"}]}),
            json!({"model": model, "messages": [
                    {"role": "user", "content": "weather?"},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
                    {"role": "tool", "content": "18C", "tool_call_id": "call_1"},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]}]}),
        ),
        (
            "function tools nest; a named tool_choice nests; parallel_tool_calls kept",
            json!({"input": "hi", "parallel_tool_calls": false,
                    "tool_choice": {"type": "function", "name": "get_weather"},
                    "tools": [{"type": "function", "name": "get_weather", "description": "Weather now",
                        "parameters": weather, "strict": true}, {"type": "function", "name": "ping"}]}),
            json!({"model": model, "messages": [{"role": "user", "content": "hi"}],
                    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                        "parameters": weather, "strict": true}}, {"type": "function", "function": {"name": "ping"}}],
                    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
                    "parallel_tool_calls": false}),
        ),
        (
            "tool_choice modes pass as they are",
            json!({"input": "hi", "tool_choice": "required", "tools": [{"type": "function", "name": "ping"}]}),
            json!({"model": model, "messages": [{"role": "user", "content": "hi"}],
                    "tools": [{"type": "function", "function": {"name": "ping"}}], "tool_choice": "required"}),
        ),
        (
            "tool_choice auto and parallel_tool_calls need tools on Chat",
            json!({"input": "hi", "tool_choice": "auto", "parallel_tool_calls": true, "tools": []}),
            json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "json_schema format",
            json!({"input": "hi", "text": {"format": {"type": "json_schema", "name": "answer",
                    "schema": {"type": "object", "properties": {"answer": {"type": "integer"}}}, "strict": true}}}),
            json!({"model": model, "messages": [{"role": "user", "content": "hi"}],
                    "response_format": {"type": "json_schema", "json_schema": {"name": "answer",
                        "schema": {"type": "object", "properties": {"answer": {"type": "integer"}}}, "strict": true}}}),
        ),
        (
            "json_object format",
            json!({"input": "hi", "text": {"format": {"type": "json_object"}}}),
            json!({"model": model, "messages": [{"role": "user", "content": "hi"}],
                    "response_format": {"type": "json_object"}}),
        ),
        (
            "text format needs nothing; verbosity goes as Chat's verbosity",
            json!({"input": "hi", "text": {"format": {"type": "text"}, "verbosity": "low"}}),
            json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "verbosity": "low"}),
        ),
        (
            "sampling and limits map; gateway-side fields stay home; provider extras pass",
            json!({"input": "hi", "max_output_tokens": 100, "temperature": 0.2, "top_p": 0.9, "seed": 7,
                    "reasoning": {"effort": "high", "summary": "auto"}, "safety_identifier": "sid-3f9a", "stop": ["\n"],
                    "metadata": {"a": "b"}, "store": true, "previous_response_id": "resp_1",
                    "service_tier": "auto", "truncation": "disabled", "background": false,
                    "include": ["file_search_call.results", "reasoning.encrypted_content"], "top_logprobs": 0,
                    "prompt_cache_key": "k", "stream": false, "stream_options": {"include_obfuscation": false},
                    "max_tool_calls": null, "frequency_penalty": 0.5, "top_k": 40, "max_tokens": 5, "messages": [],
                    "verbosity": "high"}),
            json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100,
                    "temperature": 0.2, "top_p": 0.9, "seed": 7, "reasoning_effort": "high",
                    "safety_identifier": "sid-3f9a", "prompt_cache_key": "k", "stop": ["\n"],
                    "frequency_penalty": 0.5, "top_k": 40, "verbosity": "high"}),
        ),
        (
            "a Chat-named verbosity extra still goes when text.verbosity is absent",
            json!({"input": "hi", "verbosity": "high"}),
            json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "verbosity": "high"}),
        ),
        (
            "user and safety_identifier both go as the client gave them; a tier other than auto passes",
            json!({"input": "hi", "user": "u-1", "safety_identifier": "sid-1", "service_tier": "flex"}),
            json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "user": "u-1",
                    "safety_identifier": "sid-1", "service_tier": "flex"}),
        ),
    ];
    for (name, body, expected) in cases {
        assert_eq!(translate(&body), expected, "{name}");
    }
}

#[test]
fn every_reasoning_effort_maps_to_chat_reasoning_effort() {
    for effort in ["none", "minimal", "low", "medium", "high", "xhigh", "max"] {
        let request = translate(&json!({"input": "hi", "reasoning": {"effort": effort}}));
        assert_eq!(request["reasoning_effort"], effort);
    }
}

#[test]
fn newer_fields_chat_cannot_honour_are_refused_by_name() {
    for (body, param) in [
        (json!({"input": "hi", "max_tool_calls": 2}), "max_tool_calls"),
        (json!({"input": "hi", "top_logprobs": 3}), "top_logprobs"),
        (json!({"input": "hi", "truncation": "auto"}), "truncation"),
        (json!({"input": "hi", "include": ["message.output_text.logprobs"]}), "include[0]"),
    ] {
        let err = translate_for("groq", &body, false).unwrap_err();
        assert_eq!(
            (err.body()["code"].as_str(), err.body()["param"].as_str()),
            (Some("unsupported_parameter"), Some(param))
        );
        assert!(err.body()["message"].as_str().unwrap_or_default().contains("`groq`"), "{}", err.body());
    }
}

#[test]
fn function_outputs_as_part_lists_flatten_to_text() {
    let body = json!({"input": [
            {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": [
                {"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]}]});
    assert_eq!(translate(&body)["messages"][1], json!({"role": "tool", "content": "a\nb", "tool_call_id": "call_1"}));
    let image = json!({"input": [
            {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": [
                {"type": "input_image", "image_url": "https://example.com/a.png"}]}]});
    let err = translate_for("groq", &image, false).unwrap_err();
    assert_eq!(err.body()["param"], "input[1].output[0].type");
}

#[test]
fn usage_reports_cache_writes() {
    let completion = json!({"choices": [{"index": 0, "finish_reason": "stop", "message": {"content": "hi"}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 2,
                "prompt_tokens_details": {"cached_tokens": 40, "cache_write_tokens": 60}}});
    let deltas = Chat.response(completion.to_string().as_bytes()).unwrap();
    let usage = deltas.iter().find_map(|d| if let Delta::Usage(u) = d { Some(*u) } else { None }).unwrap();
    assert_eq!((usage.input_tokens, usage.cached_input_tokens, usage.cache_write_tokens), (100, 40, 60));
}

#[test]
fn streaming_asks_for_usage_and_the_call_is_built() {
    let body = json!({"input": "hi"}).as_object().cloned().unwrap_or_default();
    let request = Chat.request(&provider("groq"), &row(), &body, true).unwrap();
    assert_eq!(request.url, "https://api.groq.com/openai/v1/chat/completions");
    assert!(request.headers.contains(&("authorization", "Bearer gsk-test".to_owned())));
    assert!(request.headers.contains(&("accept", "text/event-stream".to_owned())));
    let sent: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"], json!({"include_usage": true}));
    let plain = Chat.request(&provider("groq"), &row(), &body, false).unwrap();
    assert!(!plain.headers.iter().any(|(name, _)| *name == "accept"));
}

#[test]
fn plugins_go_to_openrouter_only() {
    let body = json!({"input": "hi", "plugins": [{"id": "web", "max_results": 3}]});
    let sent = translate_for("openrouter", &body, false).unwrap();
    assert_eq!(sent["plugins"], json!([{"id": "web", "max_results": 3}]));
    let err = translate_for("groq", &body, false).unwrap_err();
    assert_eq!(err.body()["code"], "unsupported_plugin");
}

#[test]
fn what_chat_cannot_honour_is_refused() {
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({"input": "x", "tools": [{"type": "web_search_preview"}]}), "unsupported_tool", "tools[0].type"),
        (
            json!({"input": "x", "tools": [{"type": "function", "name": "f"}, {"type": "file_search"}]}),
            "unsupported_tool",
            "tools[1].type",
        ),
        (json!({"input": "x", "tools": [{"type": "code_interpreter"}]}), "unsupported_tool", "tools[0].type"),
        (json!({"input": "x", "tools": [{"type": "computer_use_preview"}]}), "unsupported_tool", "tools[0].type"),
        (json!({"input": "x", "tools": [{"type": "image_generation"}]}), "unsupported_tool", "tools[0].type"),
        (json!({"input": "x", "tools": [{"type": "web_search"}]}), "unsupported_tool", "tools[0].type"),
        (json!({"input": "x", "background": true}), "unsupported_parameter", "background"),
        (json!({"input": "x", "truncation": "auto"}), "unsupported_parameter", "truncation"),
        (
            json!({"input": "x", "include": ["reasoning.encrypted_content", "message.output_text.logprobs"]}),
            "unsupported_parameter",
            "include[1]",
        ),
        (json!({"input": "x", "top_logprobs": 5}), "unsupported_parameter", "top_logprobs"),
        (json!({"input": "x", "max_tool_calls": 3}), "unsupported_parameter", "max_tool_calls"),
        (json!({"input": "x", "conversation": "conv_1"}), "unsupported_parameter", "conversation"),
        (json!({"input": "x", "tool_choice": {"type": "web_search_preview"}}), "unsupported_parameter", "tool_choice"),
        (json!({"input": [{"type": "item_reference", "id": "msg_1"}]}), "unsupported_parameter", "input[0]"),
        (
            json!({"input": [{"type": "web_search_call", "id": "ws_1", "status": "completed"}]}),
            "unsupported_parameter",
            "input[0].type",
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]}),
            "unsupported_parameter",
            "input[0].content[0].file_id",
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]}),
            "unsupported_parameter",
            "input[0].content[0].file_id",
        ),
        (
            json!({"input": [{"role": "system", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}]}),
            "unsupported_parameter",
            "input[0].content[0].type",
        ),
    ];
    for (body, code, param) in cases {
        let err = translate_for("groq", &body, false).expect_err(&body.to_string());
        assert_eq!(err.status(), 400, "{body}");
        let error = err.body();
        assert_eq!(error["code"], code, "{body}");
        assert_eq!(error["param"], param, "{body}");
        assert!(error["message"].as_str().unwrap_or_default().contains("`groq`"), "{error}");
    }
}

#[test]
fn a_completion_becomes_deltas() {
    let completion = json!({
            "id": "chatcmpl-123", "object": "chat.completion", "created": 1_677_652_288, "model": "gpt-4o-mini",
            "system_fingerprint": "fp_44709d6fcb",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there, how may I assist you today?",
                "refusal": null, "annotations": []}, "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21,
                "prompt_tokens_details": {"cached_tokens": 3, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 2, "audio_tokens": 0,
                    "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
            "service_tier": "default"});
    let deltas = Chat.response(completion.to_string().as_bytes()).unwrap();
    assert_eq!(
        deltas,
        vec![
            Delta::Text("Hello there, how may I assist you today?".into()),
            usage(9, 3, 12, 2),
            Delta::Finish(FinishReason::Stop)
        ]
    );
}

#[test]
fn tool_calls_reasoning_refusals_and_stop_reasons() {
    let tools = json!({"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant",
            "content": null, "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": {"tz": "CET"}}}]}}],
            "usage": {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99}});
    assert_eq!(
        Chat.response(tools.to_string().as_bytes()).unwrap(),
        vec![
            call(0, "call_a", "get_weather"),
            args(0, "{\"city\":\"Paris\"}"),
            call(1, "call_b", "get_time"),
            args(1, "{\"tz\":\"CET\"}"),
            usage(82, 0, 17, 0),
            Delta::Finish(FinishReason::Stop)
        ]
    );
    let deepseek = json!({"choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant",
            "content": "Hi", "reasoning_content": "The user greets me."}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 30, "prompt_cache_hit_tokens": 8,
                "prompt_cache_miss_tokens": 4, "completion_tokens_details": {"reasoning_tokens": 25}}});
    assert_eq!(
        Chat.response(deepseek.to_string().as_bytes()).unwrap(),
        vec![
            Delta::Reasoning("The user greets me.".into()),
            Delta::Text("Hi".into()),
            usage(12, 8, 30, 25),
            Delta::Finish(FinishReason::Length)
        ]
    );
    let openrouter = json!({"choices": [{"index": 0, "finish_reason": "content_filter", "message": {
            "role": "assistant", "content": "", "reasoning": "hmm", "refusal": "I can't help with that."}}]});
    assert_eq!(
        Chat.response(openrouter.to_string().as_bytes()).unwrap(),
        vec![
            Delta::Reasoning("hmm".into()),
            Delta::Refusal("I can't help with that.".into()),
            Delta::Finish(FinishReason::ContentFilter)
        ]
    );
    let mistral = json!({"choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant",
            "content": [{"type": "thinking", "thinking": [{"type": "text", "text": "Let me think."}]},
                {"type": "text", "text": "42"}]}}]});
    assert_eq!(
        Chat.response(mistral.to_string().as_bytes()).unwrap(),
        vec![Delta::Reasoning("Let me think.".into()), Delta::Text("42".into()), Delta::Finish(FinishReason::Stop)]
    );
}

#[test]
fn a_truncated_completion_assembles_as_incomplete() {
    let completion = json!({"choices": [{"index": 0, "finish_reason": "length",
            "message": {"role": "assistant", "content": "The answer is"}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}});
    let deltas = Chat.response(completion.to_string().as_bytes()).unwrap();
    let done = assemble_complete(deltas, ResponseContext::new("meta/llama", &Map::new()));
    assert_eq!(done.status, "incomplete");
    assert_eq!(done.response["incomplete_details"], json!({"reason": "max_output_tokens"}));
    assert_eq!(done.response["output"][0]["content"][0]["text"], "The answer is");
    assert_eq!(done.usage.output_tokens, 3);
}

#[test]
fn broken_completions_are_upstream_failures() {
    for body in [
        &b"<html>bad gateway</html>"[..],
        br#"{"error": {"message": "Provider returned error", "code": 502}}"#,
        br#"{"id": "x", "choices": []}"#,
    ] {
        let err = Chat.response(body).unwrap_err();
        assert_eq!(err.status(), 502, "{}", String::from_utf8_lossy(body));
    }
}

#[test]
fn text_stream_finishes_after_its_usage_chunk() {
    let deltas = decode_all(TEXT_SSE, usize::MAX);
    assert_eq!(text_of(&deltas), "Hello! How can I help?");
    let tail = &deltas[deltas.len() - 2..];
    assert_eq!(tail, &[usage(19, 0, 10, 0), Delta::Finish(FinishReason::Stop)]);
    assert_eq!(deltas.iter().filter(|d| matches!(d, Delta::Finish(_))).count(), 1);
    // Network chunks of any size decode the same.
    assert_eq!(decode_all(TEXT_SSE, 7), deltas);
    assert_eq!(decode_all(TEXT_SSE, 1), deltas);
}

#[test]
fn tool_call_stream_decodes_and_assembles() {
    let deltas = decode_all(TOOL_CALLS_SSE, 7);
    assert_eq!(
        deltas,
        vec![
            call(0, "call_DdmO9pD3xa9XTPNJ32zg2hcA", "get_weather"),
            args(0, "{\"lo"),
            args(0, "cation\": \"P"),
            args(0, "aris, France\"}"),
            call(1, "call_ABCDEFGHIJKLMNOPQRSTUVWX", "get_weather"),
            args(1, "{\"lo"),
            args(1, "cation\": \"B"),
            args(1, "ogot\u{e1}, Colombia\"}"),
            usage(82, 64, 49, 0),
            Delta::Finish(FinishReason::Stop),
        ]
    );
    let done = assemble_complete(deltas, ResponseContext::new("openai/gpt-4o-mini", &Map::new()));
    assert_eq!(done.status, "completed");
    let output = done.response["output"].as_array().cloned().unwrap_or_default();
    assert_eq!(output.len(), 2);
    assert_eq!(output[0]["type"], "function_call");
    assert_eq!(output[0]["arguments"], "{\"location\": \"Paris, France\"}");
    assert_eq!(output[1]["call_id"], "call_ABCDEFGHIJKLMNOPQRSTUVWX");
    assert_eq!(output[1]["arguments"], "{\"location\": \"Bogot\u{e1}, Colombia\"}");
    assert_eq!(done.usage.cached_input_tokens, 64);
}

#[test]
fn reasoning_stream_comes_before_the_text() {
    let deltas = decode_all(REASONING_SSE, 13);
    assert_eq!(
        deltas,
        vec![
            Delta::Reasoning("The user".into()),
            Delta::Reasoning(" greets".into()),
            Delta::Reasoning(" me.".into()),
            Delta::Text("Hi".into()),
            Delta::Text(" there!".into()),
            usage(12, 0, 30, 25),
            Delta::Finish(FinishReason::Stop),
        ]
    );
}

#[test]
fn interleaved_and_unindexed_tool_calls() {
    let mut decoder = Chat.decoder();
    let mut deltas = Vec::new();
    let chunks = [
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 0, "id": "call_a", "type": "function", "function": {"name": "f", "arguments": ""}},
                {"index": 1, "id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{\"y\":"}}]}}]}),
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "function": {"arguments": "2}"}}]}}]}),
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"x\":1}"}}]}}]}),
        // Arguments before the name (a few servers do this): held until the call can start.
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 2, "function": {"arguments": "{\"z\""}}]}}]}),
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 2, "id": "call_c", "function": {"name": "h", "arguments": ":3}"}}]}}]}),
        // Whole calls without an index (Gemini's compatible endpoint).
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"id": "call_d", "type": "function",
                "function": {"name": "k", "arguments": "{}"}}]}}]}),
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
    ];
    for chunk in &chunks {
        deltas.extend(decoder.decode(data(chunk)).unwrap());
    }
    deltas.extend(decoder.decode(SseEvent { data: "[DONE]".into(), ..SseEvent::default() }).unwrap());
    assert_eq!(
        deltas,
        vec![
            call(0, "call_a", "f"),
            call(1, "call_b", "g"),
            args(1, "{\"y\":"),
            args(1, "2}"),
            args(0, "{\"x\":1}"),
            call(2, "call_c", "h"),
            args(2, "{\"z\""),
            args(2, ":3}"),
            call(3, "call_d", "k"),
            args(3, "{}"),
            Delta::Finish(FinishReason::Stop),
        ]
    );
    assert!(decoder.finish().is_empty(), "finished once");
}

#[test]
fn stream_faults_errors_and_early_ends() {
    let mut decoder = Chat.decoder();
    let fault = decoder.decode(SseEvent { data: "{\"choices\": [".into(), ..SseEvent::default() }).unwrap_err();
    assert!(matches!(fault, StreamFault::Malformed(_)));

    let mut decoder = Chat.decoder();
    decoder.decode(data(&json!({"choices": [{"index": 0, "delta": {"content": "Hel"}}]}))).unwrap();
    let error = json!({"error": {"message": "Upstream overloaded", "code": 502},
            "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]});
    assert_eq!(
        decoder.decode(data(&error)).unwrap(),
        vec![Delta::Finish(FinishReason::Error("Upstream overloaded".into()))]
    );
    assert!(decoder.decode(data(&json!({"choices": []}))).unwrap().is_empty(), "nothing after the error");
    assert!(decoder.finish().is_empty());

    // No [DONE], but the provider said why it stopped: the stream still finishes.
    let mut decoder = Chat.decoder();
    decoder
        .decode(data(&json!({"choices": [{"index": 0, "delta": {"content": "cut"}, "finish_reason": "length"}]})))
        .unwrap();
    assert_eq!(decoder.finish(), vec![Delta::Finish(FinishReason::Length)]);

    // No [DONE] and no finish_reason: left unfinished for the gateway to report.
    let mut decoder = Chat.decoder();
    decoder.decode(data(&json!({"choices": [{"index": 0, "delta": {"content": "cu"}}]}))).unwrap();
    assert!(decoder.finish().is_empty());

    // An unexpected shape in a text field is skipped, not a broken stream.
    let mut decoder = Chat.decoder();
    let odd = json!({"choices": [{"index": 0, "delta": {"content": "ok", "reasoning": {"tokens": 3}}}]});
    assert_eq!(decoder.decode(data(&odd)).unwrap(), vec![Delta::Text("ok".into())]);

    // Keep-alive comments never reach the decoder; empty data lines are ignored.
    let mut decoder = Chat.decoder();
    assert!(decoder.decode(SseEvent::default()).unwrap().is_empty());
}

#[test]
fn error_envelopes_are_mapped() {
    let mut retry = HeaderMap::new();
    retry.insert("retry-after", http::HeaderValue::from_static("7"));
    let none = HeaderMap::new();
    let openai = br#"{"error": {"message": "Rate limit reached for model `llama-3.3-70b-versatile`", "type": "tokens", "param": null, "code": "rate_limit_exceeded"}}"#;
    let err = Chat.error("groq", 429, &retry, openai);
    assert_eq!(err.status(), 429);
    let body = err.body();
    assert_eq!(body["code"], "rate_limit_exceeded");
    assert_eq!(body["type"], "tokens");
    assert_eq!(body["retry_after_seconds"], 7);
    assert!(body["message"].as_str().unwrap_or_default().starts_with("Rate limit reached"));

    let cases: Vec<(u16, &[u8], u16, Value)> = vec![
            (
                400,
                br#"{"error": "model `x` does not exist"}"#,
                400,
                json!({"message": "model `x` does not exist", "type": "invalid_request_error", "code": null, "param": null}),
            ),
            (
                400,
                br#"{"object": "error", "message": "max_tokens must be at least 1", "type": "BadRequestError", "param": "max_tokens", "code": 400}"#,
                400,
                json!({"message": "max_tokens must be at least 1", "type": "BadRequestError", "code": null, "param": "max_output_tokens"}),
            ),
            (
                404,
                br#"{"detail": "Not Found"}"#,
                404,
                json!({"message": "Not Found", "type": "invalid_request_error", "code": null, "param": null}),
            ),
            (
                401,
                br#"{"error": {"message": "Invalid API Key gsk_abcd****wxyz", "type": "invalid_request_error", "code": "invalid_api_key"}}"#,
                502,
                json!({"message": "The provider failed to answer the request.", "type": "api_error", "code": "upstream_error", "param": null}),
            ),
            (
                403,
                b"Forbidden",
                502,
                json!({"message": "The provider failed to answer the request.", "type": "api_error", "code": "upstream_error", "param": null}),
            ),
            (
                400,
                br#"{"error": {"message": "Key sk-abcdefgh1234 cannot set `logit_bias`", "type": "invalid_request_error", "code": null}}"#,
                400,
                json!({"message": "Key [redacted] cannot set `logit_bias`", "type": "invalid_request_error", "code": null, "param": null}),
            ),
            (
                400,
                br#"{"error": {"message": "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.", "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}"#,
                400,
                json!({"message": "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.",
                    "type": "invalid_request_error", "code": "context_length_exceeded", "param": "input"}),
            ),
            (
                413,
                br#"{"object": "error", "message": "Prompt contains 40000 tokens, too large for model with 32768 maximum context length", "type": "invalid_request_error", "param": null, "code": null}"#,
                400,
                json!({"message": "Prompt contains 40000 tokens, too large for model with 32768 maximum context length",
                    "type": "invalid_request_error", "code": "context_length_exceeded", "param": "input"}),
            ),
        ];
    for (status, bytes, want_status, want) in cases {
        let err = Chat.error("groq", status, &none, bytes);
        assert_eq!(err.status().as_u16(), want_status, "{}", String::from_utf8_lossy(bytes));
        assert_eq!(err.body(), want, "{}", String::from_utf8_lossy(bytes));
    }
    for status in [500, 502, 503] {
        let err = Chat.error("groq", status, &none, br#"{"error": {"message": "boom", "type": "server_error"}}"#);
        assert_eq!(err.status(), 502);
        assert_eq!(err.body()["code"], "upstream_error");
    }
}
