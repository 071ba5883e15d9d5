//! The `chat` provider API: OpenAI-compatible Chat Completions, as spoken by Groq, Together,
//! Mistral, DeepSeek, Fireworks, OpenRouter, xAI, vLLM and Ollama.
//! Docs: <https://platform.openai.com/docs/api-reference/chat/create> (request and object),
//! <https://platform.openai.com/docs/api-reference/chat-streaming> (chunks),
//! <https://platform.openai.com/docs/guides/function-calling>,
//! <https://platform.openai.com/docs/guides/structured-outputs>.
//!
//! Request: a Responses body becomes `POST {base}/chat/completions` ([`chat_request`] says what
//! maps where, what is left out and what is refused). Answers, whole or streamed, become
//! [`Delta`]s from `choices[0]`. In a stream the usage chunk (empty `choices`) comes after the
//! `finish_reason` chunk, so the decoder finishes at `[DONE]` (or at the end of the body).

use bytes::Bytes;
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::assemble::{Delta, FinishReason};
use super::walk::{
    unsupported_part, walk, File, FunctionCall, Image, Input, InputSink, Output, Part, Reasoning, Speaker,
};
use super::{DeltaDecoder, StreamFault, Translator, UpstreamRequest};
use crate::config::ProviderConfig;
use crate::domain::ModelPrice;
use crate::error::GatewayError;
use crate::ids::new_id;
use crate::money::TokenUsage;
use crate::sse::SseEvent;

/// Request fields this module translates, checks or deliberately leaves out. Any other field
/// of the body is a provider extra (`frequency_penalty`, `top_k`, OpenRouter's `provider`, ...,
/// as sent with the SDKs' `extra_body`) and is forwarded verbatim.
///
/// Left out on purpose: `model` and `stream` (Mesh sets them), `store` and
/// `previous_response_id` (gateway state, not the provider's), `metadata` (OpenAI keeps it only
/// with stored completions; other Chat providers reject or ignore it), `prompt_cache_retention`
/// (an OpenAI-only hint), and `reasoning.summary` (a presentation hint: a Chat provider returns
/// whatever reasoning it exposes).
///
/// The newer Responses fields, decided one by one (the shared ones in `input::newer_fields`):
///
/// | field | on Chat Completions |
/// | --- | --- |
/// | `prompt_cache_key` | forwarded as is (Chat has the same field) |
/// | `safety_identifier` | forwarded as is (Chat has the same field); `user` too when given |
/// | `max_tool_calls` | refused |
/// | `top_logprobs` | `0` left out (exact); more refused: Mesh returns no logprobs |
/// | `stream_options` | the Responses one left out (`include_obfuscation` only pads events); Mesh writes Chat's own |
/// | `text.verbosity` | forwarded as `verbosity` |
/// | `truncation` | `disabled` left out (exact); `auto` refused |
/// | `include` | `reasoning.encrypted_content` accepted (Chat keeps no reasoning state to return); logprobs and unknown values refused |
/// | `service_tier` | `auto` left out (exact); any other tier forwarded as is for the provider to honour or refuse |
/// | `reasoning.effort` | forwarded as `reasoning_effort`, all seven values: Chat's `reasoning_effort` is the same enum |
const RESPONSES_FIELDS: [&str; 29] = [
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "text",
    "max_output_tokens",
    "temperature",
    "top_p",
    "seed",
    "reasoning",
    "user",
    "stop",
    "plugins",
    "stream",
    "stream_options",
    "store",
    "previous_response_id",
    "metadata",
    "service_tier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
    "include",
    "truncation",
    "background",
    "top_logprobs",
    "max_tool_calls",
];

/// Chat fields Mesh writes from the translation (or, for `max_completion_tokens`, that would
/// contradict one it writes): a client field of the same name is not forwarded over them.
const CHAT_FIELDS: [&str; 6] =
    ["messages", "response_format", "max_tokens", "max_completion_tokens", "reasoning_effort", "verbosity"];

/// Responses fields Chat Completions has no way to honour: refused whenever they are set.
const REFUSED_FIELDS: [(&str, &str); 2] =
    [("conversation", "server-side conversations (`conversation`)"), ("prompt", "stored prompts (`prompt`)")];

/// The `chat` translator.
#[derive(Debug, Clone, Copy)]
pub struct Chat;

impl Translator for Chat {
    fn request(&self, provider: &ProviderConfig, row: &ModelPrice, body: &super::Body, stream: bool) -> super::Built {
        let request = chat_request(&provider.name, &row.upstream_model, body, stream)?;
        let bytes = serde_json::to_vec(&request).map_err(|e| GatewayError::Internal(format!("encode: {e}")))?;
        let mut headers = Vec::new();
        if let Some(key) = &provider.api_key {
            headers.push(("authorization", format!("Bearer {}", key.expose())));
        }
        if stream {
            headers.push(("accept", "text/event-stream".to_owned()));
        }
        Ok(UpstreamRequest {
            url: format!("{}/chat/completions", provider.base_url.trim_end_matches('/')),
            headers,
            body: Bytes::from(bytes),
        })
    }

    fn response(&self, bytes: &[u8]) -> Result<Vec<Delta>, GatewayError> {
        let completion: ChatCompletion = serde_json::from_slice(bytes).map_err(|_| {
            GatewayError::UpstreamFailure("provider returned a body that is not a chat completion".into())
        })?;
        let choice = completion.first_choice();
        if let Some(error) = completion.error.as_ref().filter(|e| !e.is_null()) {
            if choice.is_none() {
                let words = ErrorWords::of(error);
                return Err(GatewayError::UpstreamFailure(format!(
                    "provider answered 200 with an error: {}",
                    words.message.unwrap_or_default()
                )));
            }
        }
        let Some(choice) = choice else {
            return Err(GatewayError::UpstreamFailure("provider returned a chat completion without choices".into()));
        };
        let mut deltas = Vec::new();
        let message = choice.message.as_ref().or(choice.delta.as_ref());
        if let Some(message) = message {
            prose_deltas(message, &mut deltas);
            for (position, call) in message.tool_calls.iter().flatten().enumerate() {
                let index = u64::try_from(position).unwrap_or(u64::MAX);
                let function = call.function.as_ref();
                let name = function.and_then(|f| f.name.clone()).unwrap_or_default();
                let call_id = call.id.clone().filter(|id| !id.is_empty()).unwrap_or_else(|| new_id("call_"));
                deltas.push(Delta::ToolCallStart { index, call_id, name });
                let arguments = function.and_then(|f| f.arguments.as_ref()).map(arguments_text).unwrap_or_default();
                if !arguments.is_empty() {
                    deltas.push(Delta::ToolCallArguments { index, fragment: arguments });
                }
            }
        }
        if let Some(usage) = completion.usage() {
            deltas.push(Delta::Usage(usage));
        }
        deltas.push(Delta::Finish(finish_reason(choice.finish_reason.as_deref())));
        Ok(deltas)
    }

    fn decoder(&self) -> Box<dyn DeltaDecoder> {
        Box::new(ChatDecoder::default())
    }

    fn error(&self, provider: &str, status: u16, headers: &HeaderMap, bytes: &[u8]) -> GatewayError {
        chat_fault(provider, status, headers, bytes, "input", responses_param)
    }
}

/// The token usage a Chat Completions object or chunk reports (`usage`, or Groq's
/// `x_groq.usage`), for the Chat Completions endpoint's pass-through.
pub(super) fn usage_in(value: &Value) -> Option<TokenUsage> {
    let usage = value
        .get("usage")
        .filter(|u| u.is_object())
        .or_else(|| value.get("x_groq")?.get("usage").filter(|u| u.is_object()))?;
    ChatUsage::deserialize(usage).ok().map(|usage| usage.tokens())
}

/// A Chat Completions provider's error answer to a forwarded Chat Completions request: mapped
/// like [`Chat::error`], with the provider's `param` kept in Chat terms.
pub(super) fn relay_error(provider: &str, status: u16, headers: &HeaderMap, bytes: &[u8]) -> GatewayError {
    chat_fault(provider, status, headers, bytes, "messages", str::to_owned)
}

/// A Chat provider's error answer: a context overflow is a 400 `context_length_exceeded` on
/// `overflow_param`; anything else keeps the provider's words, its `param` passed through `param`.
fn chat_fault(
    provider: &str,
    status: u16,
    headers: &HeaderMap,
    bytes: &[u8],
    overflow_param: &str,
    param: fn(&str) -> String,
) -> GatewayError {
    let words = ErrorWords::parse(bytes);
    if (400..500).contains(&status) && words.is_context_length() {
        return super::provider_fault(
            provider,
            400,
            headers,
            Some("invalid_request_error".to_owned()),
            Some("context_length_exceeded".to_owned()),
            words.message,
            Some(overflow_param.to_owned()),
        );
    }
    let param = words.param.as_deref().map(param);
    super::provider_fault(provider, status, headers, words.error_type, words.code, words.message, param)
}

/// A 400 `unsupported_parameter` naming the provider.
fn unsupported_parameter(param: &str, provider: &str, what: &str) -> GatewayError {
    super::unsupported("unsupported_parameter", param, provider, what)
}

mod request;
mod response;
mod wire;

use request::*;
use response::*;
use wire::*;

#[cfg(test)]
mod tests;
