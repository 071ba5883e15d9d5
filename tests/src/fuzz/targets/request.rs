//! Request validation (`mesh::request::parse`) and, for accepted bodies, each provider's
//! request translation: a body is accepted, or refused with a 400 naming a catalog code; an
//! accepted body re-validates to the same request; translation gives JSON or a 4xx, never a
//! panic or a 5xx for what the caller sent.

use mesh::config::{ProviderApi, ProviderConfig, Secret};
use mesh::domain::ModelPrice;
use mesh::request::{parse, GATEWAY_FIELDS};
use serde_json::{json, Value};

use crate::fuzz::targets::translate::translator;

const CODES: [&str; 8] = [
    "invalid_json",
    "missing_required_parameter",
    "invalid_type",
    "invalid_value",
    "unsupported_tool",
    "unsupported_parameter",
    "unsupported_plugin",
    "missing_template_variables",
];

fn provider(api: ProviderApi) -> ProviderConfig {
    ProviderConfig {
        name: "acme".into(),
        api,
        base_url: "https://provider.invalid/v1".into(),
        api_key: Some(Secret::new("sk-test")),
        api_key_secret_arn: None,
        token_delay: std::time::Duration::ZERO,
    }
}

fn row(upstream_model: &str) -> Option<ModelPrice> {
    serde_json::from_value(json!({
        "model": "acme/model", "provider": "acme", "upstream_model": upstream_model,
        "input_usd_per_mtok": "1", "output_usd_per_mtok": "2", "max_output_tokens": 4096, "is_default": true
    }))
    .ok()
}

pub fn target(data: &[u8]) {
    let request = match parse(data) {
        Ok(request) => request,
        Err(err) => {
            assert_eq!(err.status().as_u16(), 400, "{err:?}");
            let body = err.body();
            assert_eq!(body["type"], "invalid_request_error");
            assert!(CODES.contains(&body["code"].as_str().unwrap_or("")), "{body}");
            assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
            return;
        }
    };
    // Idempotent: what was accepted, written back out, is accepted as the same request.
    let again = match serde_json::to_vec(&request.body).map(|bytes| parse(&bytes)) {
        Ok(Ok(again)) => again,
        other => panic!("accepted body no longer valid: {other:?}"),
    };
    assert_eq!(again.body, request.body);
    assert_eq!(
        (again.model, again.stream, again.max_output_tokens),
        (request.model.clone(), request.stream, request.max_output_tokens)
    );
    let mut body = request.body.clone();
    for field in GATEWAY_FIELDS {
        body.remove(field);
    }
    let translated = [
        (ProviderApi::Chat, "chat", "gpt-4o"),
        (ProviderApi::Anthropic, "anthropic", "claude-sonnet-4-20250514"),
        (ProviderApi::Gemini, "gemini", "gemini-2.5-flash"),
        (ProviderApi::Bedrock, "bedrock", "anthropic.claude-sonnet-4-20250514-v1:0"),
    ];
    for (api, name, upstream) in translated {
        let Some(row) = row(upstream) else { continue };
        match translator(name).request(&provider(api), &row, &body, request.stream) {
            Ok(upstream) => {
                assert!(
                    serde_json::from_slice::<Value>(&upstream.body).is_ok(),
                    "{name} wrote a body that is not JSON"
                );
            }
            Err(err) => assert!(err.status().is_client_error(), "{name}: {err:?}"),
        }
    }
    if let Some(row) = row("gpt-4o") {
        let built =
            mesh::providers::responses::build_request(&provider(ProviderApi::Responses), &row, &body, request.stream);
        assert!(built.is_ok_and(|u| serde_json::from_slice::<Value>(&u.body).is_ok()));
    }
}

pub fn seeds() -> Vec<Vec<u8>> {
    [
        json!({"model": "openai/gpt-4o", "input": "Say hello"}),
        json!({"model": "acme/m", "stream": true, "instructions": "be brief", "max_output_tokens": 100, "temperature": 0.5,
            "top_p": 1, "seed": 7, "user": "u", "metadata": {"k": "v"}, "reasoning": {"effort": "high", "summary": "auto"},
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}, {"type": "input_image", "image_url": "https://x.invalid/a.png"}]},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "42"},
                {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "t"}], "encrypted_content": "sig"}],
            "tools": [{"type": "function", "name": "f", "description": "d", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}, "strict": true}],
            "tool_choice": {"type": "function", "name": "f"}, "parallel_tool_calls": false,
            "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}, "strict": true}},
            "truncation": "auto", "include": ["reasoning.encrypted_content"], "store": false, "previous_response_id": "resp_1"}),
        json!({"template": "greeting", "variables": {"name": "Ada", "n": 3, "b": true}, "session_id": "s1",
            "plugins": [{"id": "pii-redaction", "kinds": ["email"]}, {"id": "response-healing"}, {"id": "web"}],
            "response_format": {"type": "json_object"}, "tool_choice": "required", "tools": [{"type": "web_search_preview"}]}),
    ]
    .iter()
    .map(|v| v.to_string().into_bytes())
    .collect()
}

pub const TOKENS: &[&str] = &[
    "\"model\":",
    "\"input\":",
    "\"tools\":",
    "\"max_output_tokens\":",
    "\"stream\":true",
    "\"role\":\"system\"",
    "\"type\":\"function_call_output\"",
    "\"reasoning\":",
    "\"tool_choice\":",
];
