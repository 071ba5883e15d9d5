//! The `responses` provider API: OpenAI's Responses API, or any base URL that speaks it.
//! Docs: <https://platform.openai.com/docs/api-reference/responses>.
//!
//! Pass-through: the request goes out as the client sent it (upstream model id substituted,
//! gateway-only fields already removed); the answer comes back as the provider sent it, with
//! `model` shown as the catalog id, in bodies and in stream events alike.

use bytes::Bytes;
use http::HeaderMap;
use serde_json::{Map, Value};

use super::{Completed, StreamFault, StreamMapper, UpstreamRequest};
use crate::config::ProviderConfig;
use crate::domain::ModelPrice;
use crate::error::GatewayError;
use crate::money::TokenUsage;
use crate::sse::SseEvent;

/// Builds `POST {base}/responses`: the body as given, with the upstream model id (and `stream`)
/// written in place of the client's, serialized without copying the body.
pub fn build_request(
    provider: &ProviderConfig,
    row: &ModelPrice,
    body: &Map<String, Value>,
    stream: bool,
) -> Result<UpstreamRequest, GatewayError> {
    use serde::ser::{SerializeMap, Serializer};
    let mut bytes = Vec::with_capacity(crate::conversation::json_len(body) + row.upstream_model.len() + 32);
    let mut out = serde_json::Serializer::new(&mut bytes);
    let encode = |e: serde_json::Error| GatewayError::Internal(format!("encode: {e}"));
    let mut map = out.serialize_map(None).map_err(encode)?;
    map.serialize_entry("model", &row.upstream_model).map_err(encode)?;
    for (name, value) in body {
        if name == "model" || (stream && name == "stream") {
            continue;
        }
        map.serialize_entry(name, value).map_err(encode)?;
    }
    if stream {
        map.serialize_entry("stream", &true).map_err(encode)?;
    }
    map.end().map_err(encode)?;
    let mut headers = Vec::new();
    if let Some(key) = &provider.api_key {
        headers.push(("authorization", format!("Bearer {}", key.expose())));
    }
    if stream {
        headers.push(("accept", "text/event-stream".to_owned()));
    }
    Ok(UpstreamRequest { url: format!("{}/responses", provider.base_url), headers, body: Bytes::from(bytes) })
}

/// Reads the token usage of a Responses object.
pub fn usage_of(response: &Value) -> TokenUsage {
    let usage = &response["usage"];
    let count = |v: &Value| v.as_u64().unwrap_or(0);
    TokenUsage {
        input_tokens: count(&usage["input_tokens"]),
        cached_input_tokens: count(&usage["input_tokens_details"]["cached_tokens"]),
        output_tokens: count(&usage["output_tokens"]),
        reasoning_tokens: count(&usage["output_tokens_details"]["reasoning_tokens"]),
        cache_write_tokens: count(&usage["input_tokens_details"]["cache_write_tokens"]),
    }
}

/// Parses a complete response and shows the catalog model id.
pub fn parse_response(bytes: &[u8], catalog_model: &str) -> Result<Completed, GatewayError> {
    let mut response: Value = serde_json::from_slice(bytes)
        .map_err(|_| GatewayError::UpstreamFailure("provider returned a body that is not JSON".to_owned()))?;
    let Some(object) = response.as_object_mut() else {
        return Err(GatewayError::UpstreamFailure("provider returned a body that is not an object".to_owned()));
    };
    object.insert("model".to_owned(), Value::String(catalog_model.to_owned()));
    // The id clients see is Mesh's own: stored responses are keyed on ids no provider chooses.
    object.insert("id".to_owned(), Value::String(crate::ids::new_id("resp_")));
    let status = object.get("status").and_then(Value::as_str).unwrap_or("completed").to_owned();
    let usage = usage_of(&response);
    Ok(Completed { response, usage, status })
}

/// Maps an upstream error answer through [`super::provider_fault`]: 4xx keep their status and
/// the provider's (scrubbed) words; 401/403 and 5xx → 502.
pub fn parse_error(provider: &str, status: u16, headers: &HeaderMap, bytes: &[u8]) -> GatewayError {
    let body: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    let error = &body["error"];
    let text = |v: &Value| v.as_str().map(str::to_owned);
    super::provider_fault(
        provider,
        status,
        headers,
        text(&error["type"]),
        text(&error["code"]),
        text(&error["message"]),
        text(&error["param"]),
    )
}

/// Forwards Responses stream events, showing the catalog model id and Mesh's own response id.
#[derive(Debug)]
pub struct PassThrough {
    catalog_model: String,
    response_id: String,
}

impl PassThrough {
    pub fn new(catalog_model: &str) -> Self {
        PassThrough { catalog_model: catalog_model.to_owned(), response_id: crate::ids::new_id("resp_") }
    }
}

impl StreamMapper for PassThrough {
    fn map(&mut self, event: SseEvent) -> Result<Vec<Value>, StreamFault> {
        if event.data == "[DONE]" {
            return Ok(Vec::new());
        }
        let mut value: Value = serde_json::from_str(&event.data)
            .map_err(|_| StreamFault::Malformed("event data is not JSON".to_owned()))?;
        let Some(object) = value.as_object_mut() else {
            return Err(StreamFault::Malformed("event data is not an object".to_owned()));
        };
        if !object.contains_key("type") {
            let Some(name) = event.event else {
                return Err(StreamFault::Malformed("event without a type".to_owned()));
            };
            object.insert("type".to_owned(), Value::String(name));
        }
        if let Some(Value::Object(response)) = object.get_mut("response") {
            if response.contains_key("model") {
                response.insert("model".to_owned(), Value::String(self.catalog_model.clone()));
            }
            if response.contains_key("id") {
                response.insert("id".to_owned(), Value::String(self.response_id.clone()));
            }
        }
        Ok(vec![value])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rewrites_model_in_bodies_and_events() {
        let body = json!({"id": "resp_1", "model": "gpt-4o-2024-08-06", "status": "completed", "extra": [1, 2],
            "usage": {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 4}, "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 2}}});
        let done = parse_response(body.to_string().as_bytes(), "openai/gpt-4o").unwrap();
        assert_eq!(done.response["model"], "openai/gpt-4o");
        assert_eq!(done.response["extra"], json!([1, 2]));
        assert_eq!(
            done.usage,
            TokenUsage {
                input_tokens: 10,
                cached_input_tokens: 4,
                output_tokens: 7,
                reasoning_tokens: 2,
                ..TokenUsage::default()
            }
        );
        let mut mapper = PassThrough::new("openai/gpt-4o");
        let event = SseEvent {
            event: Some("response.created".into()),
            data: json!({"type": "response.created", "sequence_number": 0, "response": {"model": "gpt-4o"}})
                .to_string(),
            id: None,
        };
        let mapped = mapper.map(event).unwrap();
        assert_eq!(mapped[0]["response"]["model"], "openai/gpt-4o");
        assert!(done.response["id"].as_str().unwrap().starts_with("resp_"));
        assert_ne!(done.response["id"], "resp_1", "Mesh's own id, not the provider's");
    }

    #[test]
    fn maps_upstream_errors() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", http::HeaderValue::from_static("7"));
        let err = parse_error(
            "openai",
            429,
            &headers,
            br#"{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded","param":null}}"#,
        );
        assert_eq!(err.status(), 429);
        assert_eq!(err.body()["message"], "slow down");
        assert_eq!(err.body()["retry_after_seconds"], 7);
        assert_eq!(parse_error("openai", 503, &headers, b"oops").status(), 502);
        let leaky = br#"{"error":{"message":"Incorrect API key provided: sk-proj-****abcd.","type":"invalid_request_error","code":"invalid_api_key","param":null}}"#;
        for status in [401, 403] {
            let err = parse_error("openai", status, &HeaderMap::new(), leaky);
            assert_eq!(err.status(), 502, "the provider refused Mesh's credential, not the caller's");
            assert_eq!(
                (err.body()["type"].as_str(), err.body()["code"].as_str()),
                (Some("api_error"), Some("upstream_error"))
            );
            assert!(!err.body().to_string().contains("abcd"), "{}", err.body());
            assert!(!err.to_string().contains("abcd"), "nor in the logged detail");
        }
        let err = parse_error(
            "openai",
            404,
            &HeaderMap::new(),
            br#"{"error":{"message":"The model sk-proj-****abcd does not exist","code":"model_not_found"}}"#,
        );
        assert_eq!(err.status(), 404, "other 4xx keep their status");
        assert_eq!(err.body()["message"], "The model [redacted] does not exist");
    }
}
