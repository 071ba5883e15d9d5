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

use serde_json::Value;

use super::sink::Translating;
use super::{anthropic, gemini, Answer, Body, Dispatcher, Reply, Route, StreamFault, Wire};
use crate::config::ProviderApi;
use crate::domain::UsageStatus;
use crate::error::GatewayError;
use crate::money::TokenUsage;

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

/// What a provider call produced: a whole `chat.completion`, or chunks then [`END`].
pub type ChatReply = Reply<ChatCompleted>;

impl Answer for ChatCompleted {
    fn check(chunk: &Value) -> Result<(), StreamFault> {
        check_chunk(chunk)
    }
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

impl Dispatcher {
    /// Sends a Chat Completions request and returns the answer as Chat Completions. `body` is
    /// the Chat Completions body for a provider that [`forwards`], else the Responses form.
    /// Nothing may outlast `deadline`.
    pub async fn call_chat(
        &self,
        route: &Route,
        body: &Body,
        stream: bool,
        catalog_model: &str,
        deadline: Instant,
    ) -> Result<ChatReply, GatewayError> {
        let assembler = || ChatAssembler::new(catalog_model);
        let wire: Box<dyn Wire<Answer = ChatCompleted> + '_> = match route.provider.api {
            ProviderApi::Chat | ProviderApi::Responses => Box::new(relay::Relay::new(catalog_model)),
            ProviderApi::Anthropic => Translating::boxed(&anthropic::Anthropic, assembler()),
            ProviderApi::Gemini => Translating::boxed(&gemini::Gemini, assembler()),
            ProviderApi::Bedrock => Translating::boxed(self.bedrock(), assembler()),
            ProviderApi::Echo => return self.play(route, body, stream, deadline, assembler()).await,
        };
        self.run(route, wire, body, stream, deadline).await
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
