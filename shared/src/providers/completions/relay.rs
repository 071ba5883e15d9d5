//! Chat Completions forwarded to a provider that speaks them (the `chat` API, and OpenAI's own
//! `responses` provider on `{base}/chat/completions`): the client's request goes out as it came
//! (Mesh's own fields already removed, defaults and template added) with the upstream model id
//! and, for a stream, `stream_options.include_usage: true` (Mesh always bills what the provider
//! reports). The answer comes back as the provider sent it, every field and choice kept, with
//! Mesh's own `chatcmpl-` id and the catalog model.
//! Docs: <https://platform.openai.com/docs/api-reference/chat/create>.

use http::HeaderMap;
use serde_json::Value;

use super::assemble::completion_id;
use super::{ChatCompleted, END};
use crate::config::ProviderConfig;
use crate::domain::{ModelPrice, UsageStatus};
use crate::error::GatewayError;
use crate::providers::{Body, Built, StreamFault, StreamMapper, UpstreamRequest, Wire};
use crate::sse::SseEvent;

/// Builds `POST {base}/chat/completions`: the body as given, with the upstream model id and
/// (when streaming) `stream: true` and `stream_options` with `include_usage: true` written over
/// the client's, serialized without copying the body. The credential is the dispatcher's to add
/// ([`Auth::Bearer`](crate::providers::Auth::Bearer)).
pub fn build_request(provider: &ProviderConfig, row: &ModelPrice, body: &Body, stream: bool) -> Built {
    use serde::ser::{SerializeMap, Serializer};
    let mut bytes = Vec::with_capacity(crate::conversation::json_len(body) + row.upstream_model.len() + 64);
    let mut out = serde_json::Serializer::new(&mut bytes);
    let encode = |e: serde_json::Error| GatewayError::Internal(format!("encode: {e}"));
    let mut map = out.serialize_map(None).map_err(encode)?;
    map.serialize_entry("model", &row.upstream_model).map_err(encode)?;
    for (name, value) in body {
        if name == "model" || (stream && (name == "stream" || name == "stream_options")) {
            continue;
        }
        map.serialize_entry(name, value).map_err(encode)?;
    }
    if stream {
        let mut options = body.get("stream_options").and_then(Value::as_object).cloned().unwrap_or_default();
        options.insert("include_usage".to_owned(), Value::Bool(true));
        map.serialize_entry("stream", &true).map_err(encode)?;
        map.serialize_entry("stream_options", &options).map_err(encode)?;
    }
    map.end().map_err(encode)?;
    let url = format!("{}/chat/completions", provider.base_url.trim_end_matches('/'));
    Ok(UpstreamRequest::json(url, bytes, stream))
}

/// How the choices of a completion (or chunk) ended: `length` and `content_filter` are
/// incomplete answers.
pub fn status_of(choices: Option<&Value>) -> Option<UsageStatus> {
    let choices = choices?.as_array()?;
    let mut status = None;
    for reason in choices.iter().filter_map(|c| c.get("finish_reason").and_then(Value::as_str)) {
        match reason {
            "length" | "content_filter" => return Some(UsageStatus::Incomplete),
            _ => status = Some(UsageStatus::Success),
        }
    }
    status
}

/// Parses a complete answer: Mesh's id and the catalog model are shown, everything else is kept.
pub fn parse_completion(bytes: &[u8], catalog_model: &str) -> Result<ChatCompleted, GatewayError> {
    let mut completion: Value = serde_json::from_slice(bytes)
        .map_err(|_| GatewayError::UpstreamFailure("provider returned a body that is not JSON".to_owned()))?;
    let Some(object) = completion.as_object_mut() else {
        return Err(GatewayError::UpstreamFailure("provider returned a body that is not an object".to_owned()));
    };
    let has_choices = object.get("choices").and_then(Value::as_array).is_some_and(|c| !c.is_empty());
    if !has_choices {
        let said = object.get("error").map(|e| e.get("message").and_then(Value::as_str).unwrap_or_default());
        return Err(GatewayError::UpstreamFailure(match said {
            Some(message) => format!("provider answered 200 with an error: {message}"),
            None => "provider returned a chat completion without choices".to_owned(),
        }));
    }
    object.insert("id".to_owned(), Value::String(completion_id()));
    object.insert("model".to_owned(), Value::String(catalog_model.to_owned()));
    let status = status_of(object.get("choices")).unwrap_or(UsageStatus::Success);
    let usage = crate::providers::chat::usage_in(&completion).unwrap_or_default();
    Ok(ChatCompleted { completion, usage, status, error: None })
}

/// Forwards a provider's chunks, showing Mesh's id and the catalog model; `[DONE]` becomes the
/// end marker and nothing after it is read.
#[derive(Debug)]
pub struct Relay {
    catalog_model: String,
    id: String,
    done: bool,
}

impl Relay {
    pub fn new(catalog_model: &str) -> Self {
        Relay { catalog_model: catalog_model.to_owned(), id: completion_id(), done: false }
    }
}

/// The relay behind the dispatcher's [`Wire`]: the request as [`build_request`] makes it, errors
/// mapped as the `chat` API's, a whole answer as [`parse_completion`] shows it, and chunks
/// forwarded one by one as they come.
impl Wire for Relay {
    type Answer = ChatCompleted;

    fn request(&self, provider: &ProviderConfig, row: &ModelPrice, body: &Body, stream: bool) -> Built {
        build_request(provider, row, body, stream)
    }

    fn error(&self, provider: &str, status: u16, headers: &HeaderMap, bytes: &[u8]) -> GatewayError {
        crate::providers::chat::relay_error(provider, status, headers, bytes)
    }

    fn complete(self: Box<Self>, bytes: &[u8]) -> Result<ChatCompleted, GatewayError> {
        parse_completion(bytes, &self.catalog_model)
    }

    fn stream(self: Box<Self>) -> Box<dyn StreamMapper> {
        self
    }
}

impl StreamMapper for Relay {
    fn map(&mut self, event: SseEvent) -> Result<Vec<Value>, StreamFault> {
        let data = event.data.trim();
        if self.done || data.is_empty() {
            return Ok(Vec::new());
        }
        if data == "[DONE]" {
            self.done = true;
            return Ok(vec![END]);
        }
        let mut chunk: Value =
            serde_json::from_str(data).map_err(|_| StreamFault::Malformed("a chunk is not JSON".to_owned()))?;
        let Some(object) = chunk.as_object_mut() else {
            return Err(StreamFault::Malformed("a chunk is not an object".to_owned()));
        };
        if object.contains_key("choices") || object.contains_key("id") {
            object.insert("id".to_owned(), Value::String(self.id.clone()));
            object.insert("model".to_owned(), Value::String(self.catalog_model.clone()));
        }
        Ok(vec![chunk])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ProviderApi, Secret};
    use serde_json::json;

    fn provider() -> ProviderConfig {
        ProviderConfig {
            name: "groq".into(),
            api: ProviderApi::Chat,
            base_url: "https://api.groq.com/openai/v1/".into(),
            api_key: Some(Secret::new("gsk-1")),
            api_key_secret_arn: None,
            token_delay: std::time::Duration::ZERO,
        }
    }

    fn row() -> ModelPrice {
        serde_json::from_value(json!({"model": "groq/llama", "provider": "groq", "upstream_model": "llama-3.3-70b",
            "input_usd_per_mtok": "1", "output_usd_per_mtok": "1", "is_default": true}))
        .unwrap()
    }

    #[test]
    fn the_body_goes_out_as_sent_with_the_upstream_model_and_usage_asked_for() {
        let body = json!({"model": "groq/llama", "messages": [{"role": "user", "content": "hi", "name": "ada"}],
            "stream": true, "stream_options": {"include_obfuscation": false}, "top_k": 5, "logit_bias": {"42": -100}});
        let request = build_request(&provider(), &row(), body.as_object().unwrap(), true).unwrap();
        assert_eq!(request.url, "https://api.groq.com/openai/v1/chat/completions");
        assert_eq!(request.headers, vec![("accept", "text/event-stream".to_owned())], "the dispatcher adds the key");
        let sent: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(
            sent,
            json!({"model": "llama-3.3-70b", "messages": [{"role": "user", "content": "hi", "name": "ada"}],
                "top_k": 5, "logit_bias": {"42": -100}, "stream": true,
                "stream_options": {"include_obfuscation": false, "include_usage": true}})
        );
        let whole = json!({"model": "x", "messages": [], "stream": false});
        let request = build_request(&provider(), &row(), whole.as_object().unwrap(), false).unwrap();
        let sent: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(sent, json!({"model": "llama-3.3-70b", "messages": [], "stream": false}));
    }

    #[test]
    fn completions_keep_their_fields_and_show_mesh_ids() {
        let body = json!({"id": "chatcmpl-up", "object": "chat.completion", "model": "llama-3.3-70b", "system_fingerprint": "fp",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "a"}, "finish_reason": "stop", "logprobs": {"content": []}},
                        {"index": 1, "message": {"role": "assistant", "content": "b"}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 3}}});
        let done = parse_completion(body.to_string().as_bytes(), "groq/llama").unwrap();
        assert_eq!(done.completion["model"], "groq/llama");
        assert_ne!(done.completion["id"], "chatcmpl-up");
        assert!(done.completion["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert_eq!(done.completion["choices"][0]["logprobs"], json!({"content": []}));
        assert_eq!(done.completion["system_fingerprint"], "fp");
        assert_eq!(done.status, UsageStatus::Incomplete, "one choice was cut");
        assert_eq!((done.usage.input_tokens, done.usage.cached_input_tokens, done.usage.output_tokens), (7, 3, 2));
        for broken in [&b"nope"[..], b"[1]", br#"{"error": {"message": "busy"}}"#, br#"{"choices": []}"#] {
            let err = parse_completion(broken, "m").unwrap_err();
            assert_eq!(err.status(), 502, "{}", String::from_utf8_lossy(broken));
        }
    }

    #[test]
    fn chunks_are_relayed_until_done() {
        let mut relay = Relay::new("groq/llama");
        let event = |data: &str| SseEvent { event: None, data: data.to_owned(), id: None };
        let first = relay
            .map(event(r#"{"id":"x","model":"up","choices":[{"index":0,"delta":{"content":"a"}}],"x_extra":1}"#))
            .unwrap();
        assert_eq!(first[0]["model"], "groq/llama");
        assert_eq!(first[0]["x_extra"], 1);
        let second = relay.map(event(r#"{"id":"y","choices":[]}"#)).unwrap();
        assert_eq!(first[0]["id"], second[0]["id"], "one id for the whole stream");
        let error = relay.map(event(r#"{"error":{"message":"boom"}}"#)).unwrap();
        assert_eq!(error[0], json!({"error": {"message": "boom"}}));
        assert_eq!(relay.map(event("[DONE]")).unwrap(), vec![END]);
        assert!(relay.map(event(r#"{"choices":[]}"#)).unwrap().is_empty(), "nothing after [DONE]");
        let mut relay = Relay::new("m");
        assert!(matches!(relay.map(event("[1]")), Err(StreamFault::Malformed(_))));
        assert!(matches!(relay.map(event("{oops")), Err(StreamFault::Malformed(_))));
    }

    #[test]
    fn statuses_follow_finish_reasons() {
        assert_eq!(status_of(Some(&json!([{"finish_reason": "stop"}]))), Some(UsageStatus::Success));
        assert_eq!(
            status_of(Some(&json!([{"finish_reason": "tool_calls"}, {"finish_reason": "content_filter"}]))),
            Some(UsageStatus::Incomplete)
        );
        assert_eq!(status_of(Some(&json!([{"finish_reason": null}]))), None);
        assert_eq!(status_of(None), None);
    }
}
