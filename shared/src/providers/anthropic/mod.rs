//! The `anthropic` provider API: Anthropic's Messages API, translated to and from the Responses API.
//! Docs: <https://docs.anthropic.com/en/api/messages>, streaming
//! <https://docs.anthropic.com/en/docs/build-with-claude/streaming>, errors
//! <https://docs.anthropic.com/en/api/errors>, extended thinking
//! <https://docs.anthropic.com/en/docs/build-with-claude/extended-thinking>, tool use
//! <https://docs.anthropic.com/en/docs/agents-and-tools/tool-use/implement-tool-use>.
//!
//! Pure translations: `request` (request out), `response` (answer and stream in), the Messages
//! wire types in `wire`, errors in with the `Translator` impl here, tests in `tests`. What
//! Anthropic cannot honour (built-in tools, `seed`, a temperature above 1) is refused with a 400
//! naming the provider, never dropped silently.
//!
//! The newer Responses request fields, decided one by one (the shared ones in
//! `input::newer_fields`):
//!
//! | field | on the Messages API |
//! | --- | --- |
//! | `prompt_cache_key` | left out: a routing hint for OpenAI's cache; Anthropic caches by prompt prefix, so the answer is the same |
//! | `safety_identifier` | `metadata.user_id`, unless `user` is given (then `user`) |
//! | `max_tool_calls` | refused |
//! | `top_logprobs` | `0` left out (exact); more refused |
//! | `stream_options` | left out (`include_obfuscation` only pads events) |
//! | `text.verbosity` | `medium` (the default) left out; `low`/`high` refused |
//! | `truncation` | `disabled` left out (exact: Anthropic refuses an overlong prompt); `auto` refused |
//! | `include` | `reasoning.encrypted_content` honoured (thinking signatures always come back); logprobs and unknown values refused |
//! | `service_tier` | `auto` left out (Anthropic's default is its own `auto`); `default` → `standard_only`; other tiers refused |
//! | `reasoning.effort` | a thinking budget, see [`thinking_budget_of`]; `none` leaves thinking off |
//!
//! Reasoning round trip: a `thinking` block becomes a reasoning item whose summary is the thinking
//! text and whose `encrypted_content` is the block's signature; a `redacted_thinking` block becomes
//! a reasoning item whose `encrypted_content` is its data behind [`REDACTED_PREFIX`] (`:` never
//! occurs in Anthropic's base64 signatures, so the two cannot be confused). Sent back as input,
//! such items become the same blocks again, at their place in the assistant turn.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Number, Value};

use super::assemble::{Delta, FinishReason};
use super::input::{
    data_url, default_verbosity_only, end_user, newer_fields, number, stop_sequences, tool_arguments, tool_choice,
    ToolChoice,
};
use super::walk::{
    unsupported_part, walk, File, FunctionCall, Image, Input, InputSink, Output, Part, Reasoning, Speaker, Turns,
};
use super::{unsupported, DeltaDecoder, StreamFault, Translator, UpstreamRequest};
use crate::config::ProviderConfig;
use crate::domain::ModelPrice;
use crate::error::GatewayError;
use crate::money::TokenUsage;
use crate::sse::SseEvent;

/// The API version Mesh speaks (`anthropic-version` header).
const API_VERSION: &str = "2023-06-01";
/// `max_tokens` when neither the request nor the catalog row gives one (Anthropic requires it).
const DEFAULT_MAX_TOKENS: u64 = 4096;
/// Marks reasoning state that came from a `redacted_thinking` block.
pub const REDACTED_PREFIX: &str = "redacted_thinking:";

/// The `anthropic` translator.
#[derive(Debug, Clone, Copy)]
pub struct Anthropic;

impl Translator for Anthropic {
    fn request(&self, provider: &ProviderConfig, row: &ModelPrice, body: &super::Body, stream: bool) -> super::Built {
        let Some(key) = &provider.api_key else {
            return Err(GatewayError::ProviderNotAvailable(provider.name.clone()));
        };
        let request = build_request(&provider.name, row, body, stream)?;
        let bytes = serde_json::to_vec(&request).map_err(|e| GatewayError::Internal(format!("encode: {e}")))?;
        let mut headers = vec![("x-api-key", key.expose().to_owned()), ("anthropic-version", API_VERSION.to_owned())];
        if stream {
            headers.push(("accept", "text/event-stream".to_owned()));
        }
        Ok(UpstreamRequest {
            url: format!("{}/v1/messages", provider.base_url.trim_end_matches('/')),
            headers,
            body: Bytes::from(bytes),
        })
    }

    fn response(&self, bytes: &[u8]) -> Result<Vec<Delta>, GatewayError> {
        let message: AnthropicResponse = serde_json::from_slice(bytes).map_err(|_| {
            GatewayError::UpstreamFailure("anthropic returned a body that is not a Messages response".to_owned())
        })?;
        let mut deltas = Vec::new();
        for (index, block) in (0u64..).zip(message.content) {
            match block {
                AnthropicContent::Text { text } => deltas.push(Delta::Text(text)),
                AnthropicContent::Thinking { thinking, signature } => {
                    if !thinking.is_empty() {
                        deltas.push(Delta::Reasoning(thinking));
                    }
                    if !signature.is_empty() {
                        deltas.push(Delta::ReasoningState(signature));
                    }
                }
                AnthropicContent::RedactedThinking { data } => {
                    deltas.push(Delta::ReasoningState(format!("{REDACTED_PREFIX}{data}")));
                }
                AnthropicContent::ToolUse { id, name, input } => {
                    deltas.push(Delta::ToolCallStart { index, call_id: id, name });
                    deltas.push(Delta::ToolCallArguments { index, fragment: tool_arguments(&input) });
                }
                AnthropicContent::Other => {}
            }
        }
        deltas.push(Delta::Usage(message.usage.tokens()));
        deltas.push(Delta::Finish(finish_reason(message.stop_reason.as_deref())));
        Ok(deltas)
    }

    fn decoder(&self) -> Box<dyn DeltaDecoder> {
        Box::new(AnthropicDecoder::default())
    }

    fn error(&self, provider: &str, status: u16, headers: &HeaderMap, bytes: &[u8]) -> GatewayError {
        let error = serde_json::from_slice::<AnthropicErrorBody>(bytes).map(|body| body.error).unwrap_or_default();
        let kind = Some(error.kind).filter(|k| !k.is_empty());
        let message = Some(error.message).filter(|m| !m.is_empty());
        if status == 400 && message.as_deref().is_some_and(is_context_overflow) {
            return super::provider_fault(
                provider,
                status,
                headers,
                kind,
                Some("context_length_exceeded".to_owned()),
                message,
                Some("input".to_owned()),
            );
        }
        // Anthropic has no error codes besides its error types: the type serves as the code.
        super::provider_fault(provider, status, headers, kind.clone(), kind, message, None)
    }
}

mod request;
mod response;
mod wire;

pub(crate) use request::thinking_budget_of;
use request::*;
use response::*;
use wire::*;

#[cfg(test)]
mod tests;
