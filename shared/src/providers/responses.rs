//! The `responses` provider API: OpenAI's Responses API, or any base URL that speaks it.
//! Docs: <https://platform.openai.com/docs/api-reference/responses>.
//!
//! Pass-through: the request goes out as the client sent it (upstream model id substituted,
//! gateway-only fields already removed), with `store: false` and the reasoning state asked for:
//! Mesh keeps conversations in its own store, so no owner's items live in the provider's
//! project. The answer comes back as the provider sent it, with Mesh's own response and item
//! ids, `model` shown as the catalog id and the client's own `previous_response_id`, `store`,
//! `user` and `safety_identifier`, in bodies and in stream events alike.

use std::collections::HashMap;

use http::HeaderMap;
use serde_json::{Map, Value};

use super::assemble::ResponseContext;
use super::{Body, Built, Completed, StreamFault, StreamMapper, UpstreamRequest, Wire};
use crate::config::ProviderConfig;
use crate::domain::ModelPrice;
use crate::error::GatewayError;
use crate::money::TokenUsage;
use crate::sse::SseEvent;

/// The reasoning state a stateless provider call must return for the next turn.
const ENCRYPTED_REASONING: &str = "reasoning.encrypted_content";

/// Input items as a stateless call (`store: false`) takes them: without `id`s, which would name
/// items the provider never stored (it answers 404 "Items are not persisted when `store` is set
/// to false"), and without reasoning items that carry no encrypted state (an id was all they
/// had). Serialized in place, never copied.
struct StatelessInput<'a>(&'a [Value]);

impl serde::Serialize for StatelessInput<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        struct WithoutId<'a>(&'a Map<String, Value>);
        impl serde::Serialize for WithoutId<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(None)?;
                for (name, value) in self.0.iter().filter(|(name, _)| *name != "id") {
                    map.serialize_entry(name, value)?;
                }
                map.end()
            }
        }
        let mut seq = serializer.serialize_seq(None)?;
        for item in self.0 {
            match item {
                Value::Object(object) => {
                    let reasoning = object.get("type").and_then(Value::as_str) == Some("reasoning");
                    if reasoning && !object.get("encrypted_content").is_some_and(Value::is_string) {
                        continue;
                    }
                    seq.serialize_element(&WithoutId(object))?;
                }
                other => seq.serialize_element(other)?,
            }
        }
        seq.end()
    }
}

/// Builds `POST {base}/responses`: the body as given, with the upstream model id (and `stream`)
/// written in place of the client's, asking the provider to keep nothing (`store: false`, input
/// items without ids) and to return the reasoning state; serialized without copying the body.
/// The credential is the dispatcher's to add ([`super::Auth::Bearer`]).
pub fn build_request(provider: &ProviderConfig, row: &ModelPrice, body: &Body, stream: bool) -> Built {
    use serde::ser::{SerializeMap, Serializer};
    let mut bytes = Vec::with_capacity(crate::conversation::json_len(body) + row.upstream_model.len() + 32);
    let mut out = serde_json::Serializer::new(&mut bytes);
    let encode = |e: serde_json::Error| GatewayError::Internal(format!("encode: {e}"));
    if body.get("background") == Some(&Value::Bool(true)) {
        return Err(GatewayError::invalid(
            "unsupported_parameter",
            "background",
            format!(
                "Background responses (`background: true`) are not supported through Mesh on `{}`: \
                 Mesh answers in the foreground and keeps the conversation state itself.",
                provider.name
            ),
        ));
    }
    let mut include: Vec<&Value> =
        body.get("include").and_then(Value::as_array).map(|i| i.iter().collect()).unwrap_or_default();
    let encrypted = Value::String(ENCRYPTED_REASONING.to_owned());
    if !include.contains(&&encrypted) {
        include.push(&encrypted);
    }
    let mut map = out.serialize_map(None).map_err(encode)?;
    map.serialize_entry("model", &row.upstream_model).map_err(encode)?;
    for (name, value) in body {
        if matches!(name.as_str(), "model" | "store" | "include") || (stream && name == "stream") {
            continue;
        }
        match (name.as_str(), value) {
            ("input", Value::Array(items)) => map.serialize_entry(name, &StatelessInput(items)),
            _ => map.serialize_entry(name, value),
        }
        .map_err(encode)?;
    }
    map.serialize_entry("store", &false).map_err(encode)?;
    map.serialize_entry("include", &include).map_err(encode)?;
    if stream {
        map.serialize_entry("stream", &true).map_err(encode)?;
    }
    map.end().map_err(encode)?;
    Ok(UpstreamRequest::json(format!("{}/responses", provider.base_url), bytes, stream))
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

/// Parses a complete response and shows it as Mesh's (see [`Rewrite`]).
pub fn parse_response(bytes: &[u8], ctx: ResponseContext) -> Result<Completed, GatewayError> {
    let mut response: Value = serde_json::from_slice(bytes)
        .map_err(|_| GatewayError::UpstreamFailure("provider returned a body that is not JSON".to_owned()))?;
    let Some(object) = response.as_object_mut() else {
        return Err(GatewayError::UpstreamFailure("provider returned a body that is not an object".to_owned()));
    };
    Rewrite::new(ctx).response(object);
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

/// What Mesh changes in a provider's Response objects and events: its own response id (stored
/// responses are keyed on ids no provider chooses) and item ids (they name the response that
/// holds them, for `item_reference`), the catalog model, and the client's own
/// `previous_response_id`, `store`, `user` and `safety_identifier` (Mesh rebuilt the history,
/// sent `store: false` and may have tagged the owner).
#[derive(Debug)]
pub struct Rewrite {
    ctx: ResponseContext,
    /// Mesh's id for each provider item id.
    items: HashMap<String, String>,
}

impl Rewrite {
    pub fn new(ctx: ResponseContext) -> Self {
        Rewrite { ctx, items: HashMap::new() }
    }

    /// Mesh's id for the provider's item `upstream` at `output_index` (the same every time).
    fn item(&mut self, upstream: &str, output_index: Option<u64>) -> String {
        if let Some(mine) = self.items.get(upstream) {
            return mine.clone();
        }
        let prefix = match upstream.split_once('_') {
            Some((head, _)) if (1..=8).contains(&head.len()) && head.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                &upstream[..=head.len()]
            }
            _ => "item_",
        };
        let slot = match output_index {
            Some(index) => format!("o{index}"),
            None => format!("u{}", self.items.len()),
        };
        let mine = crate::ids::item_id(prefix, &self.ctx.response_id, &slot);
        self.items.insert(upstream.to_owned(), mine.clone());
        mine
    }

    fn item_object(&mut self, item: &mut Value, output_index: Option<u64>) {
        if let Some(Value::String(id)) = item.get_mut("id") {
            let mine = self.item(id, output_index);
            *id = mine;
        }
    }

    /// Rewrites a Response object.
    pub fn response(&mut self, response: &mut Map<String, Value>) {
        response.insert("id".to_owned(), Value::String(self.ctx.response_id.clone()));
        response.insert("model".to_owned(), Value::String(self.ctx.catalog_model.clone()));
        for field in ["previous_response_id", "store", "user", "safety_identifier"] {
            match self.ctx.request.get(field) {
                Some(value) => {
                    response.insert(field.to_owned(), value.clone());
                }
                None if field == "previous_response_id" => {
                    response.insert(field.to_owned(), Value::Null);
                }
                None if field == "store" => {
                    response.insert(field.to_owned(), Value::Bool(true));
                }
                None if field == "safety_identifier" => {
                    response.remove(field);
                }
                None => {}
            }
        }
        if let Some(Value::Array(output)) = response.get_mut("output") {
            for (index, item) in output.iter_mut().enumerate() {
                self.item_object(item, u64::try_from(index).ok());
            }
        }
    }

    /// Rewrites a stream event: its Response, its item and its item id.
    pub fn event(&mut self, event: &mut Map<String, Value>) {
        if let Some(Value::Object(response)) = event.get_mut("response") {
            self.response(response);
        }
        let output_index = event.get("output_index").and_then(Value::as_u64);
        if let Some(item) = event.get_mut("item") {
            self.item_object(item, output_index);
        }
        if let Some(Value::String(id)) = event.get_mut("item_id") {
            let mine = self.item(id, output_index);
            *id = mine;
        }
    }
}

/// The pass-through behind the dispatcher's [`Wire`]: the request as [`build_request`] makes it,
/// errors as [`parse_error`] maps them, a whole answer as [`parse_response`] shows it, and
/// stream events forwarded one by one as they come (nothing buffered), rewritten as Mesh's (see
/// [`Rewrite`]).
#[derive(Debug)]
pub struct PassThrough {
    rewrite: Rewrite,
}

impl PassThrough {
    pub fn new(ctx: ResponseContext) -> Self {
        PassThrough { rewrite: Rewrite::new(ctx) }
    }
}

impl Wire for PassThrough {
    type Answer = Completed;

    fn request(&self, provider: &ProviderConfig, row: &ModelPrice, body: &Body, stream: bool) -> Built {
        build_request(provider, row, body, stream)
    }

    fn error(&self, provider: &str, status: u16, headers: &HeaderMap, bytes: &[u8]) -> GatewayError {
        parse_error(provider, status, headers, bytes)
    }

    fn complete(self: Box<Self>, bytes: &[u8]) -> Result<Completed, GatewayError> {
        parse_response(bytes, self.rewrite.ctx)
    }

    fn stream(self: Box<Self>) -> Box<dyn StreamMapper> {
        self
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
        self.rewrite.event(object);
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
        let ctx = || ResponseContext::new("openai/gpt-4o", &Map::new());
        let done = parse_response(body.to_string().as_bytes(), ctx()).unwrap();
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
        let mut mapper = PassThrough::new(ctx());
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
    fn item_ids_and_client_fields_are_meshs() {
        let mut client = Map::new();
        client.insert("previous_response_id".to_owned(), json!("resp_prev"));
        let mut provider = Map::new();
        provider.insert("safety_identifier".to_owned(), json!("mesh_tag"));
        provider.insert("store".to_owned(), json!(false));
        let ctx = ResponseContext::for_request("resp_01jdevkey00000000000000000", "openai/gpt-4o", &provider, &client);
        let body = json!({"id": "resp_up", "model": "gpt-4o", "store": false, "safety_identifier": "mesh_tag",
            "previous_response_id": null, "output": [{"type": "message", "id": "msg_up1", "content": []},
            {"type": "function_call", "id": "fc_up2", "call_id": "call_1", "name": "f", "arguments": "{}"}]});
        let done = parse_response(body.to_string().as_bytes(), ctx.clone()).unwrap();
        let r = &done.response;
        assert_eq!((r["previous_response_id"].as_str(), r["store"].as_bool()), (Some("resp_prev"), Some(true)));
        assert!(r.get("safety_identifier").is_none(), "the gateway's tag is not the client's");
        assert_eq!(r["output"][0]["id"], "msg_01jdevkey00000000000000000o0");
        assert_eq!(r["output"][1]["id"], "fc_01jdevkey00000000000000000o1");
        assert_eq!(r["output"][1]["call_id"], "call_1");

        let mut mapper = PassThrough::new(ctx);
        let mut map = |data: Value| mapper.map(SseEvent { event: None, data: data.to_string(), id: None }).unwrap();
        let added = map(
            json!({"type": "response.output_item.added", "output_index": 0, "item": {"type": "message", "id": "msg_up1"}}),
        );
        let delta =
            map(json!({"type": "response.output_text.delta", "output_index": 0, "item_id": "msg_up1", "delta": "x"}));
        assert_eq!(added[0]["item"]["id"], delta[0]["item_id"]);
        assert_eq!(delta[0]["item_id"], "msg_01jdevkey00000000000000000o0");
    }

    #[test]
    fn asks_for_no_provider_state() {
        let provider = ProviderConfig {
            name: "openai".to_owned(),
            api: crate::config::ProviderApi::Responses,
            base_url: "http://127.0.0.1:9/v1".to_owned(),
            api_key: None,
            api_key_secret_arn: None,
            token_delay: std::time::Duration::ZERO,
        };
        let row: ModelPrice =
            serde_json::from_value(json!({"model": "openai/gpt-4o", "provider": "openai", "upstream_model": "gpt-4o"}))
                .unwrap();
        let body = json!({"input": "x", "store": true, "include": ["message.output_text.logprobs"]});
        let request = build_request(&provider, &row, body.as_object().unwrap(), false).unwrap();
        let sent: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(sent["store"], false);
        assert_eq!(sent["include"], json!(["message.output_text.logprobs", "reasoning.encrypted_content"]));
        assert_eq!(sent["input"], "x");
        let body = json!({"input": [
            {"role": "user", "content": "a", "id": "msg_1"},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "e"},
            {"type": "function_call", "id": "fc_1", "call_id": "c", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": "x"}]});
        let request = build_request(&provider, &row, body.as_object().unwrap(), false).unwrap();
        let sent: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(
            sent["input"],
            json!([{"role": "user", "content": "a"}, {"type": "reasoning", "summary": [], "encrypted_content": "e"},
                {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c", "output": "x"}]),
            "ids name nothing upstream; reasoning without its state is dropped"
        );
        let background = json!({"input": "x", "background": true});
        let err = build_request(&provider, &row, background.as_object().unwrap(), false).unwrap_err();
        assert_eq!(err.body()["param"], "background");
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
