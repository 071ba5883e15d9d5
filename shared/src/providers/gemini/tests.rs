//! Tests of the `gemini` provider API: requests out, answers and streams in, errors.

use super::*;
use crate::config::{ProviderApi, Secret};

fn provider() -> ProviderConfig {
    ProviderConfig {
        name: "gemini".into(),
        api: ProviderApi::Gemini,
        base_url: "https://generativelanguage.googleapis.com/".into(),
        api_key: Some(Secret::new("AIza-test")),
        api_key_secret_arn: None,
        token_delay: std::time::Duration::ZERO,
    }
}

fn row(upstream: &str) -> ModelPrice {
    serde_json::from_value(
        json!({"model": "google/gemini-2.5-flash", "provider": "gemini", "upstream_model": upstream}),
    )
    .unwrap()
}

fn translate(body: Value) -> Result<Value, GatewayError> {
    request_body("gemini", body.as_object().unwrap())
}

fn code_and_param(err: &GatewayError) -> (String, String) {
    let body = err.body();
    (body["code"].as_str().unwrap_or_default().to_owned(), body["param"].as_str().unwrap_or_default().to_owned())
}

#[test]
fn builds_url_headers_and_body() {
    let body = json!({"model": "google/gemini-2.5-flash", "input": "hi", "user": "owner:team-a", "store": true});
    let plain = Gemini.request(&provider(), &row("gemini-2.5-flash"), body.as_object().unwrap(), false).unwrap();
    assert_eq!(plain.url, "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(plain.headers, vec![("x-goog-api-key", "AIza-test".to_owned())]);
    let sent: Value = serde_json::from_slice(&plain.body).unwrap();
    assert_eq!(sent, json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}), "gateway fields stay home");
    let streamed = Gemini.request(&provider(), &row("models/gemini-2.5-pro"), body.as_object().unwrap(), true).unwrap();
    assert_eq!(
        streamed.url,
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    );
    assert!(streamed.headers.contains(&("accept", "text/event-stream".to_owned())));
}

#[test]
fn request_translation_table() {
    let weather = json!({"type": "function", "name": "get_weather", "description": "Weather of a city", "strict": true,
    "parameters": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": false,
        "required": ["city"],
        "properties": {
            "city": {"type": "string"},
            "additionalProperties": {"type": "object", "additionalProperties": {"type": "string"}, "properties": {"x": {"type": "integer"}}},
            "tags": {"type": "array", "items": {"type": "object", "additionalProperties": false, "properties": {"t": {"type": "string"}}}}
        }}});
    let cases: Vec<(&str, Value, Value)> = vec![
        (
            "string input",
            json!({"input": "hello"}),
            json!({"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}),
        ),
        (
            "instructions and system/developer messages become systemInstruction, in order",
            json!({"instructions": "Be brief.", "input": [
                    {"role": "system", "content": "Answer in French."},
                    {"role": "developer", "content": [{"type": "input_text", "text": "No emoji."}]},
                    {"role": "user", "content": "hi"}]}),
            json!({"systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Answer in French."}, {"text": "No emoji."}]},
                    "contents": [{"role": "user", "parts": [{"text": "hi"}]}]}),
        ),
        (
            "roles map to user/model and consecutive same-role turns merge",
            json!({"input": [
                    {"type": "message", "role": "user", "content": "a"},
                    {"role": "user", "content": [{"type": "input_text", "text": "b"}]},
                    {"role": "assistant", "content": [{"type": "output_text", "text": "c"}, {"type": "refusal", "refusal": "d"}]},
                    {"role": "user", "content": "e"}]}),
            json!({"contents": [
                    {"role": "user", "parts": [{"text": "a"}, {"text": "b"}]},
                    {"role": "model", "parts": [{"text": "c"}, {"text": "d"}]},
                    {"role": "user", "parts": [{"text": "e"}]}]}),
        ),
        (
            "images: data URLs inline, https URLs by reference with the type from the extension",
            json!({"input": [{"role": "user", "content": [
                    {"type": "input_text", "text": "what is this?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto"},
                    {"type": "input_image", "image_url": "https://example.com/cat.JPG?size=large"},
                    {"type": "input_file", "filename": "report.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}]}]}),
            json!({"contents": [{"role": "user", "parts": [
                    {"text": "what is this?"},
                    {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                    {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/cat.JPG?size=large"}},
                    {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}}]}]}),
        ),
        (
            "function call round trip: names by call id, JSON outputs parsed, parallel results merged, dummy signature",
            json!({"input": [
                    {"role": "user", "content": "weather and time in Paris?"},
                    {"type": "function_call", "call_id": "call_a", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
                    {"type": "function_call", "call_id": "call_b", "name": "get_time", "arguments": ""},
                    {"type": "function_call_output", "call_id": "call_a", "output": "{\"temp_c\": 18}"},
                    {"type": "function_call_output", "call_id": "call_b", "output": "noon"},
                    {"type": "function_call_output", "call_id": "call_a", "output": [{"type": "input_text", "text": "[1,"}, {"type": "input_text", "text": "2]"}]}]}),
            json!({"contents": [
                    {"role": "user", "parts": [{"text": "weather and time in Paris?"}]},
                    {"role": "model", "parts": [
                        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "skip_thought_signature_validator"},
                        {"functionCall": {"name": "get_time", "args": {}}}]},
                    {"role": "user", "parts": [
                        {"functionResponse": {"name": "get_weather", "response": {"result": {"temp_c": 18}}}},
                        {"functionResponse": {"name": "get_time", "response": {"result": "noon"}}},
                        {"functionResponse": {"name": "get_weather", "response": {"result": [1, 2]}}}]}]}),
        ),
        (
            "reasoning items: summaries dropped, signatures back on the following model part",
            json!({"input": [
                    {"role": "user", "content": "q1"},
                    {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "thinking..."}], "encrypted_content": "SIG-CALL"},
                    {"type": "function_call", "call_id": "call_a", "name": "f", "arguments": "{}"},
                    {"type": "function_call_output", "call_id": "call_a", "output": "ok"},
                    {"role": "assistant", "content": "answer"},
                    {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "SIG-TEXT"},
                    {"type": "reasoning", "id": "rs_3", "summary": []},
                    {"role": "user", "content": "q2"}]}),
            json!({"contents": [
                    {"role": "user", "parts": [{"text": "q1"}]},
                    {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "SIG-CALL"}]},
                    {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"result": "ok"}}}]},
                    {"role": "model", "parts": [{"text": "answer", "thoughtSignature": "SIG-TEXT"}]},
                    {"role": "user", "parts": [{"text": "q2"}]}]}),
        ),
        (
            "Gemini's own call ids go back; minted ones do not",
            json!({"input": [
                    {"type": "function_call", "call_id": "fc-7", "name": "f", "arguments": "{\"a\":1}"},
                    {"type": "function_call_output", "call_id": "fc-7", "output": "1"}]}),
            json!({"contents": [
                    {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"a": 1}, "id": "fc-7"}, "thoughtSignature": "skip_thought_signature_validator"}]},
                    {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"result": 1}, "id": "fc-7"}}]}]}),
        ),
        (
            "function tools: schema reduced to Gemini's dialect, empty parameters dropped",
            json!({"input": "x", "tools": [weather, {"type": "function", "name": "now", "parameters": {"type": "object", "properties": {}, "additionalProperties": false}}]}),
            json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}],
                    "tools": [{"functionDeclarations": [
                        {"name": "get_weather", "description": "Weather of a city", "parameters": {"type": "object", "required": ["city"],
                            "properties": {
                                "city": {"type": "string"},
                                "additionalProperties": {"type": "object", "properties": {"x": {"type": "integer"}}},
                                "tags": {"type": "array", "items": {"type": "object", "properties": {"t": {"type": "string"}}}}
                            }}},
                        {"name": "now"}]}]}),
        ),
        (
            "tool_choice auto",
            json!({"input": "x", "tools": [{"type": "function", "name": "f"}], "tool_choice": "auto"}),
            json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}], "tools": [{"functionDeclarations": [{"name": "f"}]}],
                    "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}}}),
        ),
        (
            "tool_choice none",
            json!({"input": "x", "tools": [{"type": "function", "name": "f"}], "tool_choice": "none"}),
            json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}], "tools": [{"functionDeclarations": [{"name": "f"}]}],
                    "toolConfig": {"functionCallingConfig": {"mode": "NONE"}}}),
        ),
        (
            "tool_choice required",
            json!({"input": "x", "tools": [{"type": "function", "name": "f"}], "tool_choice": "required"}),
            json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}], "tools": [{"functionDeclarations": [{"name": "f"}]}],
                    "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}),
        ),
        (
            "tool_choice naming a function",
            json!({"input": "x", "tools": [{"type": "function", "name": "f"}, {"type": "function", "name": "g"}],
                    "tool_choice": {"type": "function", "name": "g"}, "parallel_tool_calls": true}),
            json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}],
                    "tools": [{"functionDeclarations": [{"name": "f"}, {"name": "g"}]}],
                    "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["g"]}}}),
        ),
        (
            "tool_choice without tools is moot",
            json!({"input": "x", "tool_choice": "required"}),
            json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}]}),
        ),
        (
            "sampling and limits",
            json!({"input": "x", "temperature": 0.2, "top_p": 0.9, "max_output_tokens": 64, "seed": 7}),
            json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}],
                    "generationConfig": {"temperature": 0.2, "topP": 0.9, "maxOutputTokens": 64, "seed": 7}}),
        ),
        (
            "json_schema output",
            json!({"input": "x", "text": {"format": {"type": "json_schema", "name": "answer", "strict": true,
                    "schema": {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"], "additionalProperties": false}}}}),
            json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}],
                    "generationConfig": {"responseMimeType": "application/json",
                        "responseJsonSchema": {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"], "additionalProperties": false}}}),
        ),
        (
            "json_object output",
            json!({"input": "x", "text": {"format": {"type": "json_object"}}}),
            json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}], "generationConfig": {"responseMimeType": "application/json"}}),
        ),
        (
            "plain text format adds nothing",
            json!({"input": "x", "text": {"format": {"type": "text"}}}),
            json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}]}),
        ),
        (
            "reasoning low",
            json!({"input": "x", "reasoning": {"effort": "low"}}),
            json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}],
                    "generationConfig": {"thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": true}}}),
        ),
        (
            "reasoning medium",
            json!({"input": "x", "reasoning": {"effort": "medium", "summary": "auto"}}),
            json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}],
                    "generationConfig": {"thinkingConfig": {"thinkingBudget": 8192, "includeThoughts": true}}}),
        ),
        (
            "reasoning high",
            json!({"input": "x", "reasoning": {"effort": "high"}}),
            json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}],
                    "generationConfig": {"thinkingConfig": {"thinkingBudget": 24576, "includeThoughts": true}}}),
        ),
        (
            "reasoning none turns thinking off",
            json!({"input": "x", "reasoning": {"effort": "none"}}),
            json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}], "generationConfig": {"thinkingConfig": {"thinkingBudget": 0}}}),
        ),
        (
            "reasoning xhigh and max take the largest budget every model accepts",
            json!({"input": "x", "reasoning": {"effort": "max"}}),
            json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}],
                    "generationConfig": {"thinkingConfig": {"thinkingBudget": 24576, "includeThoughts": true}}}),
        ),
        (
            "minimal",
            json!({"input": "x", "reasoning": {"effort": "minimal"}}),
            json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}],
                    "generationConfig": {"thinkingConfig": {"thinkingBudget": 512, "includeThoughts": true}}}),
        ),
        (
            "user, safety_identifier and the exact no-ops are not sent",
            json!({"input": "x", "user": "u-1", "safety_identifier": "sid-3f9a", "prompt_cache_key": "k",
                    "truncation": "disabled", "top_logprobs": 0, "include": ["reasoning.encrypted_content"],
                    "service_tier": "auto", "stream_options": {"include_obfuscation": true},
                    "text": {"verbosity": "medium"}}),
            json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}]}),
        ),
        (
            "a summary alone asks for thoughts",
            json!({"input": "x", "reasoning": {"summary": "detailed"}}),
            json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}], "generationConfig": {"thinkingConfig": {"includeThoughts": true}}}),
        ),
    ];
    for (name, request, expected) in cases {
        let got = translate(request).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(got, expected, "{name}");
    }
}

#[test]
fn refusals_table() {
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "web search",
            json!({"input": "x", "tools": [{"type": "web_search_preview"}]}),
            "unsupported_tool",
            "tools[0].type",
        ),
        (
            "file search",
            json!({"input": "x", "tools": [{"type": "function", "name": "f"}, {"type": "file_search", "vector_store_ids": ["vs_1"]}]}),
            "unsupported_tool",
            "tools[1].type",
        ),
        (
            "code interpreter",
            json!({"input": "x", "tools": [{"type": "code_interpreter"}]}),
            "unsupported_tool",
            "tools[0].type",
        ),
        (
            "computer use",
            json!({"input": "x", "tools": [{"type": "computer_use_preview"}]}),
            "unsupported_tool",
            "tools[0].type",
        ),
        (
            "image generation",
            json!({"input": "x", "tools": [{"type": "image_generation"}]}),
            "unsupported_tool",
            "tools[0].type",
        ),
        ("web_search", json!({"input": "x", "tools": [{"type": "web_search"}]}), "unsupported_tool", "tools[0].type"),
        (
            "parallel tool calls off",
            json!({"input": "x", "tools": [{"type": "function", "name": "f"}], "parallel_tool_calls": false}),
            "unsupported_parameter",
            "parallel_tool_calls",
        ),
        (
            "previous response",
            json!({"input": "x", "previous_response_id": "resp_1"}),
            "unsupported_parameter",
            "previous_response_id",
        ),
        (
            "image URL without a known extension",
            json!({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://example.com/image?id=3"}]}]}),
            "unsupported_parameter",
            "input[0].content[0].image_url",
        ),
        (
            "uploaded image id",
            json!({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]}),
            "unsupported_parameter",
            "input[0].content[0].file_id",
        ),
        (
            "data URL that is not base64",
            json!({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:image/png,abc"}]}]}),
            "invalid_value",
            "input[0].content[0].image_url",
        ),
        (
            "output of an unknown call",
            json!({"input": [{"type": "function_call_output", "call_id": "call_x", "output": "1"}]}),
            "invalid_value",
            "input[0].call_id",
        ),
        (
            "arguments that are not an object",
            json!({"input": [{"type": "function_call", "call_id": "call_x", "name": "f", "arguments": "[1]"}]}),
            "invalid_value",
            "input[0].arguments",
        ),
        (
            "item references",
            json!({"input": [{"type": "item_reference", "id": "msg_1"}]}),
            "unsupported_parameter",
            "input[0]",
        ),
        (
            "a limit on tool calls",
            json!({"input": "x", "max_tool_calls": 2}),
            "unsupported_parameter",
            "max_tool_calls",
        ),
        ("logprobs", json!({"input": "x", "top_logprobs": 1}), "unsupported_parameter", "top_logprobs"),
        ("truncation auto", json!({"input": "x", "truncation": "auto"}), "unsupported_parameter", "truncation"),
        (
            "logprobs by include",
            json!({"input": "x", "include": ["message.output_text.logprobs"]}),
            "unsupported_parameter",
            "include[0]",
        ),
        (
            "low verbosity",
            json!({"input": "x", "text": {"verbosity": "low"}}),
            "unsupported_parameter",
            "text.verbosity",
        ),
        ("a flex tier", json!({"input": "x", "service_tier": "flex"}), "unsupported_parameter", "service_tier"),
        (
            "an image in a function output",
            json!({"input": [{"type": "function_call", "call_id": "call_x", "name": "f", "arguments": "{}"},
                    {"type": "function_call_output", "call_id": "call_x", "output": [{"type": "input_image", "image_url": "data:image/png;base64,AA=="}]}]}),
            "unsupported_parameter",
            "input[1].output[0].type",
        ),
        (
            "an image in the system prompt",
            json!({"input": [{"role": "system", "content": [{"type": "input_image", "image_url": "data:image/png;base64,AA=="}]}]}),
            "unsupported_parameter",
            "input[0].content[0].type",
        ),
    ];
    for (name, request, code, param) in cases {
        let err = translate(request).err().unwrap_or_else(|| panic!("{name}: accepted"));
        assert_eq!(err.status(), 400, "{name}");
        assert_eq!(code_and_param(&err), (code.to_owned(), param.to_owned()), "{name}");
        if code.starts_with("unsupported") {
            assert!(err.body()["message"].as_str().unwrap().contains("`gemini`"), "{name}: names the provider");
        }
    }
}

use crate::providers::assemble::usage;

/// Call ids are generated: compare them by shape, then blank them.
fn blank_call_ids(deltas: Vec<Delta>) -> Vec<Delta> {
    deltas
        .into_iter()
        .map(|delta| match delta {
            Delta::ToolCallStart { index, call_id, name } => {
                assert!(call_id.starts_with("call_") && call_id.len() == 31, "{call_id}");
                Delta::ToolCallStart { index, call_id: "call_*".into(), name }
            }
            other => other,
        })
        .collect()
}

#[test]
fn response_with_thoughts_text_and_calls() {
    let body = json!({
        "candidates": [{
            "content": {"role": "model", "parts": [
                {"text": "Let me check the weather.", "thought": true},
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "CiQBsig=="},
                {"functionCall": {"name": "get_time", "args": {"tz": "CET"}}}
            ]},
            "finishReason": "STOP", "index": 0
        }],
        "usageMetadata": {"promptTokenCount": 120, "candidatesTokenCount": 30, "cachedContentTokenCount": 100,
            "thoughtsTokenCount": 50, "totalTokenCount": 200},
        "modelVersion": "gemini-2.5-flash", "responseId": "abc"
    });
    let deltas = blank_call_ids(Gemini.response(body.to_string().as_bytes()).unwrap());
    assert_eq!(
        deltas,
        vec![
            Delta::Reasoning("Let me check the weather.".into()),
            Delta::ReasoningState("CiQBsig==".into()),
            Delta::ToolCallStart { index: 0, call_id: "call_*".into(), name: "get_weather".into() },
            Delta::ToolCallArguments { index: 0, fragment: "{\"city\":\"Paris\"}".into() },
            Delta::ToolCallStart { index: 1, call_id: "call_*".into(), name: "get_time".into() },
            Delta::ToolCallArguments { index: 1, fragment: "{\"tz\":\"CET\"}".into() },
            usage(120, 100, 80, 50),
            Delta::Finish(FinishReason::Stop),
        ]
    );
}

#[test]
fn response_call_ids_and_finish_reasons() {
    let body = json!({"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"id": "fc-1", "name": "f"}}]}, "finishReason": "STOP"}]});
    let deltas = Gemini.response(body.to_string().as_bytes()).unwrap();
    assert_eq!(deltas[0], Delta::ToolCallStart { index: 0, call_id: "fc-1".into(), name: "f".into() });
    assert_eq!(deltas[1], Delta::ToolCallArguments { index: 0, fragment: "{}".into() });
    for (reason, expected) in [
        ("STOP", FinishReason::Stop),
        ("MAX_TOKENS", FinishReason::Length),
        ("SAFETY", FinishReason::ContentFilter),
        ("RECITATION", FinishReason::ContentFilter),
        ("BLOCKLIST", FinishReason::ContentFilter),
        ("PROHIBITED_CONTENT", FinishReason::ContentFilter),
        ("SPII", FinishReason::ContentFilter),
        ("MALFORMED_FUNCTION_CALL", FinishReason::Stop),
        ("OTHER", FinishReason::Stop),
    ] {
        let body = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "partial"}]}, "finishReason": reason}],
                "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5}});
        let deltas = Gemini.response(body.to_string().as_bytes()).unwrap();
        assert_eq!(deltas, vec![Delta::Text("partial".into()), usage(3, 0, 2, 0), Delta::Finish(expected)], "{reason}");
    }
    let blocked = json!({"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
            "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}});
    assert_eq!(
        Gemini.response(blocked.to_string().as_bytes()).unwrap(),
        vec![usage(9, 0, 0, 0), Delta::Finish(FinishReason::ContentFilter)]
    );
    assert_eq!(Gemini.response(b"<html>").unwrap_err().status(), 502);
}

fn decode_fixture(text: &str) -> Vec<Delta> {
    let mut parser = crate::sse::SseParser::new();
    let mut decoder = Gemini.decoder();
    let mut deltas = Vec::new();
    for event in parser.feed(text.as_bytes()).unwrap().into_iter().chain(parser.finish().unwrap()) {
        deltas.extend(decoder.decode(event).unwrap());
    }
    deltas.extend(decoder.finish());
    deltas
}

#[test]
fn stream_of_text() {
    let deltas = decode_fixture(include_str!("../../../../tests/fixtures/gemini-text.sse"));
    assert_eq!(
        deltas,
        vec![
            Delta::Text("The opposite of hot".into()),
            Delta::Text(" is cold, and the opposite of".into()),
            Delta::Text(" day is night.".into()),
            usage(8, 0, 14, 0),
            Delta::Finish(FinishReason::Stop),
        ]
    );
}

#[test]
fn stream_of_thoughts_and_text_with_a_closing_signature() {
    let deltas = decode_fixture(include_str!("../../../../tests/fixtures/gemini-thinking.sse"));
    assert_eq!(
        deltas,
        vec![
            Delta::Reasoning("**Weighing the question**\n\nThe user wants a number.".into()),
            Delta::Reasoning(" Two plus two is four.".into()),
            Delta::Text("2 + 2 = ".into()),
            Delta::Text("4".into()),
            Delta::ReasoningState("EpYBCpMBAdHtim9+Tl5n0cZKeP4Vg==".into()),
            usage(11, 0, 61, 54),
            Delta::Finish(FinishReason::Stop),
        ]
    );
}

#[test]
fn stream_of_parallel_function_calls() {
    let deltas = blank_call_ids(decode_fixture(include_str!("../../../../tests/fixtures/gemini-function-calls.sse")));
    assert_eq!(
        deltas,
        vec![
            Delta::ReasoningState("CiIBVKhc7oDgjyN2Xr8bR3uAqb7N".into()),
            Delta::ToolCallStart { index: 0, call_id: "call_*".into(), name: "get_weather".into() },
            Delta::ToolCallArguments { index: 0, fragment: "{\"location\":\"Boston, MA\"}".into() },
            Delta::ToolCallStart { index: 1, call_id: "call_*".into(), name: "get_weather".into() },
            Delta::ToolCallArguments { index: 1, fragment: "{\"location\":\"San Francisco, CA\"}".into() },
            usage(72, 0, 150, 128),
            Delta::Finish(FinishReason::Stop),
        ]
    );
}

#[test]
fn stream_cut_by_max_tokens() {
    let deltas = decode_fixture(include_str!("../../../../tests/fixtures/gemini-max-tokens.sse"));
    assert_eq!(
        deltas,
        vec![
            Delta::Text("Once upon a time, in a".into()),
            Delta::Text(" land far away".into()),
            usage(6, 0, 10, 0),
            Delta::Finish(FinishReason::Length),
        ]
    );
}

#[test]
fn stream_edge_cases() {
    // A finish reason without usage waits for the end of the stream, keeping earlier usage.
    let mut decoder = GeminiDecoder::default();
    let event = |data: Value| SseEvent { event: None, data: data.to_string(), id: None };
    let first = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "a"}]}}],
            "usageMetadata": {"promptTokenCount": 4, "totalTokenCount": 4}});
    assert_eq!(decoder.decode(event(first)).unwrap(), vec![Delta::Text("a".into())]);
    let last =
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "b"}]}, "finishReason": "SAFETY"}]});
    assert_eq!(decoder.decode(event(last)).unwrap(), vec![Delta::Text("b".into())]);
    assert_eq!(decoder.finish(), vec![usage(4, 0, 0, 0), Delta::Finish(FinishReason::ContentFilter)]);
    assert_eq!(decoder.finish(), Vec::new(), "finishes once");

    // A stream that stops without a finish reason fails.
    let mut decoder = GeminiDecoder::default();
    decoder.decode(event(json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "a"}]}}]}))).unwrap();
    assert!(matches!(decoder.finish().as_slice(), [Delta::Finish(FinishReason::Error(_))]));

    // An error chunk mid-stream fails the answer with Google's words.
    let mut decoder = GeminiDecoder::default();
    let failed = decoder
        .decode(event(json!({"error": {"code": 500, "message": "Internal error encountered.", "status": "INTERNAL"}})))
        .unwrap();
    assert_eq!(failed, vec![Delta::Finish(FinishReason::Error("Internal error encountered.".into()))]);

    // Malformed data.
    let mut decoder = GeminiDecoder::default();
    let bad = SseEvent { event: None, data: "{\"candidates\": [".into(), id: None };
    assert!(matches!(decoder.decode(bad), Err(StreamFault::Malformed(_))));
    let not_object = SseEvent { event: None, data: "[1]".into(), id: None };
    assert!(matches!(decoder.decode(not_object), Err(StreamFault::Malformed(_))));
}

fn mapped(status: u16, headers: &[(&'static str, &'static str)], body: &Value) -> GatewayError {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(*name, HeaderValue::from_static(value));
    }
    Gemini.error("gemini", status, &map, body.to_string().as_bytes())
}

#[test]
fn error_mapping() {
    let invalid = json!({"error": {"code": 400, "message": "Invalid JSON payload received. Unknown name \"foo\": Cannot find field.", "status": "INVALID_ARGUMENT"}});
    let err = mapped(400, &[], &invalid);
    assert_eq!(err.status(), 400);
    assert_eq!(err.body()["code"], "invalid_argument");
    assert_eq!(err.body()["type"], "invalid_request_error");
    assert!(err.body()["message"].as_str().unwrap().starts_with("Invalid JSON payload"));

    let quota = json!({"error": {"code": 429, "message": "You exceeded your current quota.", "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
                        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}]}});
    let err = mapped(429, &[("retry-after", "7")], &quota);
    assert_eq!(err.status(), 429);
    assert_eq!(err.body()["code"], "resource_exhausted");
    assert_eq!(err.body()["type"], "rate_limit_error");
    assert_eq!(err.body()["retry_after_seconds"], 7, "the header wins");
    assert_eq!(mapped(429, &[], &quota).body()["retry_after_seconds"], 37, "else RetryInfo");
    let mut fractional = quota.clone();
    fractional["error"]["details"][1]["retryDelay"] = json!("1.250s");
    assert_eq!(mapped(429, &[], &fractional).body()["retry_after_seconds"], 2, "rounded up");

    let too_long = json!({"error": {"code": 400, "message": "The input token count (1250000) exceeds the maximum number of tokens allowed (1048576).", "status": "INVALID_ARGUMENT"}});
    let err = mapped(400, &[], &too_long);
    assert_eq!(err.status(), 400);
    assert_eq!(err.body()["code"], "context_length_exceeded");
    assert_eq!(err.body()["param"], "input");

    let denied = json!([{"error": {"code": 403, "message": "Permission denied.", "status": "PERMISSION_DENIED"}}]);
    let err = mapped(403, &[], &denied);
    assert_eq!((err.status().as_u16(), err.body()["code"].clone()), (502, json!("upstream_error")));
    assert_eq!(err.body()["type"], "api_error");
    let bad_key = json!({"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]}});
    let err = mapped(400, &[], &bad_key);
    assert_eq!(
        (err.status().as_u16(), err.body()["code"].clone()),
        (502, json!("upstream_error")),
        "Mesh's key, not the caller's"
    );
    assert!(!err.body().to_string().contains("API key"));
    let unauthenticated = json!({"error": {"code": 401, "message": "Request had invalid authentication credentials: AIzaSyA-1234567890abcdefghijklmnopqrstu", "status": "UNAUTHENTICATED"}});
    let err = mapped(401, &[], &unauthenticated);
    assert_eq!(err.status(), 502);
    assert!(!err.body().to_string().contains("AIza") && !err.to_string().contains("AIza"));

    let internal = json!({"error": {"code": 500, "message": "An internal error has occurred.", "status": "INTERNAL"}});
    let err = mapped(500, &[], &internal);
    assert_eq!(err.status(), 502);
    assert_eq!(err.body()["code"], "upstream_error");
    assert_eq!(mapped(503, &[], &json!("overloaded")).status(), 502);
    assert_eq!(mapped(404, &[], &json!(null)).status(), 404, "a body that is no envelope keeps the status");
}
