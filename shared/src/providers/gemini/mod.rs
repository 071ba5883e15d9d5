//! The `gemini` provider API: Google's Gemini `models.generateContent` and
//! `models.streamGenerateContent` (server-sent events with `alt=sse`), translated to and from the
//! Responses API. Docs: <https://ai.google.dev/api/generate-content>,
//! <https://ai.google.dev/gemini-api/docs/function-calling>,
//! <https://ai.google.dev/gemini-api/docs/thinking>,
//! <https://ai.google.dev/gemini-api/docs/thought-signatures>,
//! <https://ai.google.dev/gemini-api/docs/structured-output>,
//! <https://ai.google.dev/gemini-api/docs/troubleshooting> (error statuses).
//!
//! - Request out: `instructions` and system/developer messages become `systemInstruction`; the
//!   input becomes `contents` of alternating `user`/`model` turns; function tools become one
//!   `functionDeclarations` tool; sampling, output format and thinking go to `generationConfig`.
//! - Response in: the parts of the first candidate in order (thoughts, text, function calls,
//!   thought signatures), then `usageMetadata`, then `finishReason`.
//! - Stream in: each `data:` line is a whole `GenerateContentResponse` holding the next parts.
//! - Error in: `{"error": {"code", "message", "status"}}`.
//!
//! The newer Responses request fields, decided one by one (the shared ones in
//! `input::newer_fields`):
//!
//! | field | on Gemini |
//! | --- | --- |
//! | `prompt_cache_key` | left out: a routing hint for OpenAI's cache; Gemini caches implicitly by prefix, so the answer is the same |
//! | `safety_identifier`, `user` | left out: Gemini's API has no end-user field |
//! | `max_tool_calls` | refused |
//! | `top_logprobs` | `0` left out (exact); more refused (Mesh returns no logprobs) |
//! | `stream_options` | left out (`include_obfuscation` only pads events) |
//! | `text.verbosity` | `medium` (the default) left out; `low`/`high` refused |
//! | `truncation` | `disabled` left out (exact: Gemini refuses an overlong prompt); `auto` refused |
//! | `include` | `reasoning.encrypted_content` honoured (thought signatures always come back); logprobs and unknown values refused |
//! | `service_tier` | `auto` and `default` left out (the standard tier); other tiers refused |
//! | `reasoning.effort` | a `thinkingBudget`, see [`thinking_budget`] |
//!
//! Thought signatures: Gemini returns an opaque `thoughtSignature` on some parts and (Gemini 3)
//! refuses a later turn whose function call lacks it. Mesh hands it to the client as the
//! `encrypted_content` of a reasoning item placed just before the part that carried it; when
//! the client sends that reasoning item back, the signature goes back on the same part.

use std::collections::HashMap;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use serde_json::{json, Map, Value};

use super::assemble::{Delta, FinishReason};
use super::walk::{
    unsupported_part, walk, File, FunctionCall, Image, Input, InputSink, Output, Part, Reasoning, Speaker,
};
use super::{provider_fault, unsupported, DeltaDecoder, StreamFault, Translator, UpstreamRequest};
use crate::config::ProviderConfig;
use crate::domain::ModelPrice;
use crate::error::{GatewayError, UpstreamFault};
use crate::ids::new_id;
use crate::money::TokenUsage;
use crate::sse::SseEvent;

/// The signature Google documents for a function call the model did not produce in this
/// conversation (history from another model, or a client that dropped the reasoning item):
/// Gemini 3 refuses a model turn whose first function call carries no signature at all.
const FOREIGN_SIGNATURE: &str = "skip_thought_signature_validator";

/// Thinking budget in tokens for a `reasoning.effort`. 24 576 is the largest budget every
/// Gemini 2.5 model accepts (so `high`, `xhigh` and `max` all take it) and 512 the smallest
/// non-zero one; `none` turns thinking off (a model that cannot turn it off says so itself).
fn thinking_budget(effort: &str) -> Option<u64> {
    match effort {
        "none" => Some(0),
        "minimal" => Some(512),
        "low" => Some(1024),
        "medium" => Some(8192),
        "high" | "xhigh" | "max" => Some(24_576),
        // Validation admits no other value.
        _ => None,
    }
}

/// The `gemini` translator.
#[derive(Debug, Clone, Copy)]
pub struct Gemini;

impl Translator for Gemini {
    fn request(&self, provider: &ProviderConfig, row: &ModelPrice, body: &super::Body, stream: bool) -> super::Built {
        let payload = request_body(&provider.name, body)?;
        let bytes = serde_json::to_vec(&payload).map_err(|e| GatewayError::Internal(format!("encode: {e}")))?;
        let base = provider.base_url.trim_end_matches('/');
        let model = row.upstream_model.strip_prefix("models/").unwrap_or(&row.upstream_model);
        let url = if stream {
            format!("{base}/v1beta/models/{model}:streamGenerateContent?alt=sse")
        } else {
            format!("{base}/v1beta/models/{model}:generateContent")
        };
        let mut headers = Vec::new();
        if let Some(key) = &provider.api_key {
            headers.push(("x-goog-api-key", key.expose().to_owned()));
        }
        if stream {
            headers.push(("accept", "text/event-stream".to_owned()));
        }
        Ok(UpstreamRequest { url, headers, body: Bytes::from(bytes) })
    }

    fn response(&self, bytes: &[u8]) -> Result<Vec<Delta>, GatewayError> {
        let body: Value = serde_json::from_slice(bytes)
            .map_err(|_| GatewayError::UpstreamFailure("gemini returned a body that is not JSON".to_owned()))?;
        if !body.is_object() {
            return Err(GatewayError::UpstreamFailure("gemini returned a body that is not an object".to_owned()));
        }
        let mut decoder = GeminiDecoder::default();
        let mut deltas = decoder.chunk(&body);
        // A complete answer without a finish reason is over all the same.
        deltas.extend(decoder.end(FinishReason::Stop));
        Ok(deltas)
    }

    fn decoder(&self) -> Box<dyn DeltaDecoder> {
        Box::new(GeminiDecoder::default())
    }

    fn error(&self, provider: &str, status: u16, headers: &HeaderMap, bytes: &[u8]) -> GatewayError {
        error_of(provider, status, headers, bytes)
    }
}

mod request;
mod response;

use request::*;
use response::*;

#[cfg(test)]
mod tests;
