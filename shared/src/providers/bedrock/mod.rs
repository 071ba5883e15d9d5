//! The `bedrock` provider API: Amazon Bedrock's Converse and ConverseStream operations, translated
//! to and from the Responses API. Docs: Converse
//! <https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html>,
//! ConverseStream
//! <https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ConverseStream.html>,
//! structured output <https://docs.aws.amazon.com/bedrock/latest/userguide/structured-output.html>.
//!
//! Transport: `POST {base}/model/{modelId}/converse` (or `/converse-stream`, answered as an AWS
//! event stream, `application/vnd.amazon.eventstream`) over the gateway's pooled HTTP client,
//! signed with SigV4 for the service `bedrock` by the AWS SDK's signer, with credentials from the
//! SDK's default chain (the function's role under Lambda). A provider API key, when configured
//! (`MESH_PROVIDER_<NAME>_API_KEY`: a Bedrock API key), is sent as a bearer token instead.
//! Event stream frames are cut by their stated length and decoded by the SDK into [`SseEvent`]s named after the
//! frame's `:event-type` (exceptions as `exception:<type>`), so one stream loop serves every
//! provider.
//!
//! Pure translations: `request` (request out), `response` (answer and stream in), the Converse
//! wire types in `wire`, errors in with the `Translator` impl here, tests in `tests`. Reasoning
//! round trip as with the `anthropic` API: a `reasoningText` block becomes a reasoning item whose
//! `encrypted_content` is the block's signature, `redactedContent` is kept behind
//! [`REDACTED_PREFIX`].
//!
//! The newer Responses request fields, decided one by one (the shared ones in
//! `input::newer_fields`):
//!
//! | field | on Converse |
//! | --- | --- |
//! | `prompt_cache_key` | left out: a routing hint for OpenAI's cache; Bedrock caches at `cachePoint`s, so the answer is the same |
//! | `safety_identifier` | `requestMetadata.user`, unless `user` is given (then `user`) |
//! | `max_tool_calls` | refused |
//! | `top_logprobs` | `0` left out (exact); more refused |
//! | `stream_options` | left out (`include_obfuscation` only pads events) |
//! | `text.verbosity` | `medium` (the default) left out; `low`/`high` refused |
//! | `truncation` | `disabled` left out (exact: Bedrock refuses an overlong prompt); `auto` refused |
//! | `include` | `reasoning.encrypted_content` honoured (reasoning signatures always come back); logprobs and unknown values refused |
//! | `service_tier` | `auto` and `default` left out (the standard tier); other tiers refused |
//! | `reasoning.effort` | Claude: the Anthropic thinking budgets (`anthropic::thinking_budget_of`); `none` leaves thinking off; other model families: refused, `none` aside |

use std::collections::BTreeMap;

use bytes::Bytes;
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Number, Value};

use super::assemble::{Delta, FinishReason};
pub use super::aws::{endpoint_region, sign, EventStreamParser, SIGNING_SERVICE};
use super::input::{
    data_url, default_verbosity_only, end_user, newer_fields, number, standard_tier_only, stop_sequences,
    tool_arguments, tool_choice, ToolChoice,
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

/// `maxTokens` when neither the request nor the catalog row gives one.
const DEFAULT_MAX_TOKENS: u64 = 4096;
/// Marks reasoning state that came from a `redactedContent` block.
pub const REDACTED_PREFIX: &str = "redacted:";
/// Content type of a ConverseStream answer.
pub const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

/// The `bedrock` translator, with the S3 buckets requests may name as image sources
/// (`MESH_BEDROCK_S3_BUCKETS`): Bedrock reads `s3://` sources with the gateway's own AWS role,
/// so a bucket nobody allowed is refused (400) instead of being read for the caller.
#[derive(Debug, Clone, Default)]
pub struct Bedrock {
    s3_buckets: Vec<String>,
}

impl Bedrock {
    /// A translator that lets requests name images in these buckets (none by default).
    pub fn with_s3_buckets(s3_buckets: Vec<String>) -> Self {
        Bedrock { s3_buckets }
    }
}

impl Translator for Bedrock {
    fn request(&self, provider: &ProviderConfig, row: &ModelPrice, body: &super::Body, stream: bool) -> super::Built {
        let request = build_request(&provider.name, &self.s3_buckets, row, body)?;
        let bytes = serde_json::to_vec(&request).map_err(|e| GatewayError::Internal(format!("encode: {e}")))?;
        let operation = if stream { "converse-stream" } else { "converse" };
        let mut headers = vec![("accept", if stream { EVENT_STREAM } else { "application/json" }.to_owned())];
        if let Some(key) = &provider.api_key {
            headers.push(("authorization", format!("Bearer {}", key.expose())));
        }
        Ok(UpstreamRequest {
            url: format!(
                "{}/model/{}/{operation}",
                provider.base_url.trim_end_matches('/'),
                encode_path_segment(&row.upstream_model)
            ),
            headers,
            body: Bytes::from(bytes),
        })
    }

    fn framing(&self) -> super::Framing {
        super::Framing::EventStream
    }

    fn response(&self, bytes: &[u8]) -> Result<Vec<Delta>, GatewayError> {
        let answer: ConverseResponse = serde_json::from_slice(bytes).map_err(|_| {
            GatewayError::UpstreamFailure("bedrock returned a body that is not a Converse response".to_owned())
        })?;
        let mut deltas = Vec::new();
        for (index, block) in (0u64..).zip(answer.output.message.content) {
            match block {
                OutputBlock::Text(text) => deltas.push(Delta::Text(text)),
                OutputBlock::ToolUse(call) => {
                    deltas.push(Delta::ToolCallStart { index, call_id: call.tool_use_id, name: call.name });
                    deltas.push(Delta::ToolCallArguments { index, fragment: tool_arguments(&call.input) });
                }
                OutputBlock::ReasoningContent(reasoning) => deltas.extend(reasoning.deltas()),
                OutputBlock::Other(_) => {}
            }
        }
        deltas.push(Delta::Usage(answer.usage.tokens()));
        deltas.push(Delta::Finish(finish_reason(answer.stop_reason.as_deref())));
        Ok(deltas)
    }

    fn decoder(&self) -> Box<dyn DeltaDecoder> {
        Box::new(BedrockDecoder::default())
    }

    fn error(&self, provider: &str, status: u16, headers: &HeaderMap, bytes: &[u8]) -> GatewayError {
        let body = serde_json::from_slice::<BedrockErrorBody>(bytes).unwrap_or_default();
        let kind = error_type(headers, &body);
        let message = body.message.or(body.message_upper).filter(|m| !m.is_empty());
        let detail = || {
            format!(
                "{provider} answered {status} {}: {}",
                kind.as_deref().unwrap_or(""),
                message.as_deref().unwrap_or("")
            )
        };
        match status {
            // The model failed to answer (ModelErrorException) or took too long (ModelTimeoutException):
            // the provider's fault, not the caller's.
            424 => return GatewayError::UpstreamFailure(detail()),
            408 => return GatewayError::GatewayTimeout(detail()),
            400 if message.as_deref().is_some_and(is_context_overflow) => {
                return super::provider_fault(
                    provider,
                    status,
                    headers,
                    None,
                    Some("context_length_exceeded".to_owned()),
                    message,
                    Some("input".to_owned()),
                )
            }
            _ => {}
        }
        // Bedrock's exception names (`ValidationException`, `ThrottlingException`, ...) serve as codes.
        super::provider_fault(provider, status, headers, None, kind, message, None)
    }
}

/// The exception name from `x-amzn-errortype` (`ThrottlingException:http://...`) or `__type`.
fn error_type(headers: &HeaderMap, body: &BedrockErrorBody) -> Option<String> {
    let raw = headers
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| body.kind.clone())?;
    let name = raw.split(':').next().unwrap_or_default();
    let name = name.rsplit('#').next().unwrap_or_default();
    (!name.is_empty()).then(|| name.to_owned())
}

/// An error message saying the prompt does not fit the model's context window.
fn is_context_overflow(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    ["input is too long", "prompt is too long", "too many input tokens", "context window", "context length"]
        .iter()
        .any(|needle| message.contains(needle))
}

/// Percent-encodes a model id (or ARN) for use as one path segment: everything but RFC 3986's
/// unreserved characters.
fn encode_path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

mod request;
mod response;
mod wire;

use request::*;
use response::*;
use wire::*;

#[cfg(test)]
mod tests;
