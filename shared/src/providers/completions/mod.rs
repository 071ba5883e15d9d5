//! Provider calls answered in the Chat Completions shape, for `POST /v1/chat/completions`: the
//! same dispatcher, credentials, timeouts and translators as [`Dispatcher::call`], with
//! `chat.completion` objects and `chat.completion.chunk`s coming out.
//!
//! - Providers that speak Chat Completions (`chat`, and OpenAI's `responses` provider on its own
//!   `{base}/chat/completions` endpoint) get the client's request forwarded ([`relay`]).
//! - Translated providers (`anthropic`, `gemini`, `bedrock` and the built-in `echo`) take the
//!   request in the pipeline's Responses form through their existing translators; their
//!   [`Delta`](super::assemble::Delta)s become completions and chunks in [`assemble`].
//!
//! A stream's events are chunk objects, then [`END`] (`null`, written `data: [DONE]`); a chunk
//! with an `error` member reports a failure mid-stream.

use std::time::Instant;

use serde_json::{Map, Value};

use super::dispatch::translator_for;
use super::echo::{self, Played};
use super::{DeltaDecoder, Dispatcher, EventSource, Framing, Route, StreamFault, StreamMapper};
use crate::config::ProviderApi;
use crate::domain::UsageStatus;
use crate::error::GatewayError;
use crate::money::TokenUsage;
use crate::sse::SseEvent;

pub mod assemble;
pub mod relay;

pub use assemble::ChatAssembler;

/// The end of a chunk stream (`data: [DONE]` on the wire).
pub const END: Value = Value::Null;

/// A complete answer, already a `chat.completion`.
#[derive(Debug, Clone)]
pub struct ChatCompleted {
    pub completion: Value,
    pub usage: TokenUsage,
    /// How the answer ended, for the usage record.
    pub status: UsageStatus,
    /// What the provider reported when it failed mid-answer (`status` is then `Failed`).
    pub error: Option<String>,
}

/// What a provider call produced.
#[derive(Debug)]
pub enum ChatReply {
    Complete(ChatCompleted),
    /// Chunks, then [`END`].
    Stream(EventSource),
}

/// Whether a provider API gets Chat Completions forwarded (rather than translated).
pub fn forwards(api: ProviderApi) -> bool {
    matches!(api, ProviderApi::Chat | ProviderApi::Responses)
}

/// Checks a chunk before it is queued for the client: the end marker, or an object whose
/// `choices`, when present, is a list (or `null`, as vLLM sends in its usage chunk). Chunks are
/// re-encoded, so no text can forge a frame.
pub fn check_chunk(chunk: &Value) -> Result<(), StreamFault> {
    match chunk {
        Value::Null => Ok(()),
        Value::Object(object) => match object.get("choices") {
            None | Some(Value::Array(_) | Value::Null) => Ok(()),
            Some(_) => Err(StreamFault::Malformed("chunk `choices` is not a list".to_owned())),
        },
        _ => Err(StreamFault::Malformed("a chunk is not an object".to_owned())),
    }
}

/// The usage a chunk (or completion) reports, if any.
pub fn usage_of(chunk: &Value) -> Option<TokenUsage> {
    super::chat::usage_in(chunk)
}

/// A translated stream: provider events → deltas → chunks.
struct TranslatedChunks {
    decoder: Box<dyn DeltaDecoder>,
    assembler: ChatAssembler,
}

impl StreamMapper for TranslatedChunks {
    fn map(&mut self, event: SseEvent) -> Result<Vec<Value>, StreamFault> {
        let mut chunks = Vec::new();
        for delta in self.decoder.decode(event)? {
            chunks.extend(self.assembler.push(delta));
        }
        Ok(chunks)
    }

    fn finish(&mut self) -> Vec<Value> {
        let mut chunks = Vec::new();
        for delta in self.decoder.finish() {
            chunks.extend(self.assembler.push(delta));
        }
        chunks
    }
}

impl Dispatcher {
    /// Sends a Chat Completions request and returns the answer as Chat Completions. `body` is
    /// the Chat Completions body for a provider that [`forwards`], else the Responses form.
    /// Nothing may outlast `deadline`.
    pub async fn call_chat(
        &self,
        route: &Route,
        body: &Map<String, Value>,
        stream: bool,
        catalog_model: &str,
        deadline: Instant,
    ) -> Result<ChatReply, GatewayError> {
        let api = route.provider.api;
        let assembler = ChatAssembler::new(catalog_model);
        if api == ProviderApi::Echo {
            return Ok(match echo::play(route, body, stream, deadline, self.timeouts).await? {
                Played::Complete(deltas) => ChatReply::Complete(assembler.complete(deltas)),
                Played::Stream(deltas, deadline) => ChatReply::Stream(EventSource::local(
                    deltas,
                    Box::new(assembler),
                    self.timeouts.stream_idle,
                    deadline,
                    check_chunk,
                )),
            });
        }
        let name = route.provider.name.as_str();
        if forwards(api) {
            let request = relay::build_request(&route.provider, &route.row, body, stream)?;
            let response = self
                .exchange(route, request, deadline, |status, headers, bytes| {
                    super::chat::relay_error(name, status, headers, bytes)
                })
                .await?;
            let deadline = deadline.min(Instant::now() + self.timeouts.total);
            if stream {
                let relay = Box::new(relay::Relay::new(catalog_model));
                return Ok(ChatReply::Stream(self.chunk_source(response, Framing::Sse, relay, deadline)));
            }
            let bytes = self.read_body(response, deadline).await?;
            return relay::parse_completion(&bytes, catalog_model).map(ChatReply::Complete);
        }
        let Some(translator) = translator_for(api, &self.bedrock) else {
            return Err(GatewayError::ProviderNotAvailable(route.provider.name.clone()));
        };
        let request = translator.request(&route.provider, &route.row, body, stream)?;
        let response = self
            .exchange(route, request, deadline, |status, headers, bytes| translator.error(name, status, headers, bytes))
            .await?;
        let deadline = deadline.min(Instant::now() + self.timeouts.total);
        if stream {
            let mapper = Box::new(TranslatedChunks { decoder: translator.decoder(), assembler });
            return Ok(ChatReply::Stream(self.chunk_source(response, translator.framing(), mapper, deadline)));
        }
        let bytes = self.read_body(response, deadline).await?;
        Ok(ChatReply::Complete(assembler.complete(translator.response(&bytes)?)))
    }

    fn chunk_source(
        &self,
        response: reqwest::Response,
        framing: Framing,
        mapper: Box<dyn StreamMapper>,
        deadline: Instant,
    ) -> EventSource {
        self.event_source(response, framing, mapper, deadline, check_chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chunks_are_objects_or_the_end_marker() {
        for good in [Value::Null, json!({"choices": []}), json!({"choices": null, "usage": {}}), json!({"error": {}})] {
            assert!(check_chunk(&good).is_ok(), "{good}");
        }
        for bad in [json!(1), json!("data: x"), json!([]), json!({"choices": {"0": 1}})] {
            assert!(matches!(check_chunk(&bad), Err(StreamFault::Malformed(_))), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_translated_stream_ends_with_the_end_marker() {
        let route = Route {
            row: serde_json::from_value(json!({"model": "mesh/echo", "provider": "echo", "upstream_model": "echo",
                "input_usd_per_mtok": "0", "output_usd_per_mtok": "0", "is_default": true}))
            .unwrap(),
            provider: std::sync::Arc::new(crate::config::ProviderConfig {
                name: "echo".into(),
                api: ProviderApi::Echo,
                base_url: String::new(),
                api_key: None,
                api_key_secret_arn: None,
                token_delay: std::time::Duration::ZERO,
            }),
            trace: Vec::new(),
        };
        let dispatcher =
            Dispatcher::new(&std::collections::BTreeMap::new(), crate::config::UpstreamTimeouts::default()).unwrap();
        let body = json!({"input": "one two"});
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let ChatReply::Stream(mut source) =
            dispatcher.call_chat(&route, body.as_object().unwrap(), true, "mesh/echo", deadline).await.unwrap()
        else {
            panic!("a stream")
        };
        let mut events = Vec::new();
        while let Some(event) = source.next().await.unwrap() {
            events.push(event);
        }
        // The end marker is a `null` event, which `next` yields like any other.
        let text: String = events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect();
        assert_eq!(text, "one two");
        assert_eq!(events.last(), Some(&END));
        let ChatReply::Complete(done) =
            dispatcher.call_chat(&route, body.as_object().unwrap(), false, "mesh/echo", deadline).await.unwrap()
        else {
            panic!("complete")
        };
        assert_eq!(done.completion["choices"][0]["message"]["content"], "one two");
        assert_eq!(done.usage.output_tokens, 2);
    }
}
