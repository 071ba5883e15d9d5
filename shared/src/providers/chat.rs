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
    fn request(
        &self,
        provider: &ProviderConfig,
        row: &ModelPrice,
        body: &Map<String, Value>,
        stream: bool,
    ) -> Result<UpstreamRequest, GatewayError> {
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
        let words = ErrorWords::parse(bytes);
        if (400..500).contains(&status) && words.is_context_length() {
            return super::provider_fault(
                provider,
                400,
                headers,
                Some("invalid_request_error".to_owned()),
                Some("context_length_exceeded".to_owned()),
                words.message,
                Some("input".to_owned()),
            );
        }
        let param = words.param.as_deref().map(responses_param);
        super::provider_fault(provider, status, headers, words.error_type, words.code, words.message, param)
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
    let words = ErrorWords::parse(bytes);
    if (400..500).contains(&status) && words.is_context_length() {
        return super::provider_fault(
            provider,
            400,
            headers,
            Some("invalid_request_error".to_owned()),
            Some("context_length_exceeded".to_owned()),
            words.message,
            Some("messages".to_owned()),
        );
    }
    super::provider_fault(provider, status, headers, words.error_type, words.code, words.message, words.param)
}

/// A 400 `unsupported_parameter` naming the provider.
fn unsupported_parameter(param: &str, provider: &str, what: &str) -> GatewayError {
    super::unsupported("unsupported_parameter", param, provider, what)
}

/// The Chat Completions request for a Responses body.
///
/// Maps: `instructions` → first `system` message; `input` → `messages` (see [`messages`]);
/// function `tools` → nested `{type: function, function: {...}}`; `tool_choice`;
/// `text.format` → `response_format`; `max_output_tokens` → `max_tokens` (the name every
/// compatible provider takes; OpenAI still accepts it); `reasoning.effort` → `reasoning_effort`;
/// `temperature`, `top_p`, `seed`, `user`, `stop` as they are; `parallel_tool_calls` and
/// `tool_choice` only with tools (OpenAI refuses them alone); `plugins` only for `openrouter`.
/// Refuses built-in tools, `background: true`, what `input::newer_fields` refuses
/// (`truncation: "auto"`, logprobs, `max_tool_calls`, unknown `include` values), and the fields of
/// [`REFUSED_FIELDS`]; the newer fields are tabled on [`RESPONSES_FIELDS`].
fn chat_request(
    provider: &str,
    upstream_model: &str,
    body: &Map<String, Value>,
    stream: bool,
) -> Result<ChatRequest, GatewayError> {
    refuse_unsupported(provider, body)?;
    let tools = tools(provider, body)?;
    let has_tools = !tools.is_empty();
    let plugins = match body.get("plugins") {
        None | Some(Value::Null) => None,
        Some(plugins) if provider == "openrouter" => Some(plugins.clone()),
        Some(_) => {
            return Err(super::unsupported("unsupported_plugin", "plugins", provider, "plugins"));
        }
    };
    let extra = body
        .iter()
        .filter(|(name, _)| !RESPONSES_FIELDS.contains(&name.as_str()) && !CHAT_FIELDS.contains(&name.as_str()))
        .filter(|(name, _)| !REFUSED_FIELDS.iter().any(|(refused, _)| refused == name))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    let present = |name: &str| body.get(name).filter(|v| !v.is_null()).cloned();
    Ok(ChatRequest {
        model: upstream_model.to_owned(),
        messages: messages(provider, body)?,
        tool_choice: tool_choice(provider, body, has_tools)?,
        parallel_tool_calls: if has_tools { body.get("parallel_tool_calls").and_then(Value::as_bool) } else { None },
        tools,
        response_format: response_format(body),
        max_tokens: present("max_output_tokens"),
        temperature: present("temperature"),
        top_p: present("top_p"),
        seed: present("seed"),
        reasoning_effort: reasoning_effort(body),
        // `text.verbosity`, else a Chat-named `verbosity` the client sent as a provider extra.
        verbosity: body
            .get("text")
            .and_then(|t| t.get("verbosity"))
            .or_else(|| body.get("verbosity"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        user: body.get("user").and_then(Value::as_str).map(str::to_owned),
        safety_identifier: body.get("safety_identifier").and_then(Value::as_str).map(str::to_owned),
        prompt_cache_key: present("prompt_cache_key"),
        service_tier: body.get("service_tier").and_then(Value::as_str).filter(|t| *t != "auto").map(str::to_owned),
        stop: present("stop"),
        plugins,
        stream: stream.then_some(true),
        stream_options: stream.then_some(ChatStreamOptions { include_usage: true }),
        extra,
    })
}

fn refuse_unsupported(provider: &str, body: &Map<String, Value>) -> Result<(), GatewayError> {
    if body.get("background").and_then(Value::as_bool) == Some(true) {
        return Err(unsupported_parameter("background", provider, "background responses (`background: true`)"));
    }
    super::input::newer_fields(provider, body)?;
    for (field, what) in REFUSED_FIELDS {
        if body.get(field).is_some_and(|v| !v.is_null()) {
            return Err(unsupported_parameter(field, provider, what));
        }
    }
    Ok(())
}

/// `instructions` and `input` as Chat messages.
///
/// Choices: `developer` becomes `system` (several compatible providers know no `developer`
/// role); text-only content is sent as one string, its parts joined by a newline (some
/// providers take only string content); a refusal in assistant history is sent as its text
/// (not every provider takes an assistant `refusal` field); `reasoning` items are skipped, as
/// Chat cannot take reasoning back, without separating the message and calls around them.
fn messages(provider: &str, body: &Map<String, Value>) -> Result<Vec<ChatMessage>, GatewayError> {
    let mut messages = Vec::new();
    if let Some(instructions) = body.get("instructions").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        messages.push(ChatMessage::new("system", Value::String(instructions.to_owned())));
    }
    let items = match body.get("input") {
        Some(Value::String(text)) => {
            messages.push(ChatMessage::new("user", Value::String(text.clone())));
            return Ok(messages);
        }
        Some(Value::Array(items)) => items,
        _ => return Ok(messages),
    };
    // Whether the last message is an assistant turn that following function calls join.
    let mut calls_join = false;
    for (i, item) in items.iter().enumerate() {
        let param = format!("input[{i}]");
        let field = |name: &str| item.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
        match item.get("type").and_then(Value::as_str).unwrap_or("message") {
            "message" => {
                let message = message(provider, &param, item)?;
                calls_join = message.role == "assistant";
                messages.push(message);
            }
            "function_call" => {
                let call = ChatToolCall {
                    id: field("call_id"),
                    kind: "function",
                    function: ChatFunctionCall { name: field("name"), arguments: field("arguments") },
                };
                match messages.last_mut() {
                    Some(last) if calls_join => last.tool_calls.push(call),
                    _ => {
                        let mut turn = ChatMessage::new("assistant", Value::Null);
                        turn.tool_calls.push(call);
                        messages.push(turn);
                        calls_join = true;
                    }
                }
            }
            "function_call_output" => {
                let content = super::input::tool_output_text(provider, &format!("{param}.output"), item.get("output"))?;
                let mut answer = ChatMessage::new("tool", Value::String(content));
                answer.tool_call_id = Some(field("call_id"));
                messages.push(answer);
                calls_join = false;
            }
            "reasoning" => {}
            "item_reference" => {
                return Err(unsupported_parameter(
                    &param,
                    provider,
                    "`item_reference` input items (send the items themselves)",
                ));
            }
            other => {
                return Err(unsupported_parameter(
                    &format!("{param}.type"),
                    provider,
                    &format!("`{other}` input items through Chat Completions"),
                ));
            }
        }
    }
    Ok(messages)
}

/// One message item; images and files only in user messages.
fn message(provider: &str, param: &str, item: &Value) -> Result<ChatMessage, GatewayError> {
    let role = match item.get("role").and_then(Value::as_str) {
        Some("assistant") => "assistant",
        Some("system" | "developer") => "system",
        _ => "user",
    };
    let parts = match item.get("content") {
        Some(Value::Array(parts)) => parts,
        Some(Value::String(text)) => return Ok(ChatMessage::new(role, Value::String(text.clone()))),
        _ => return Ok(ChatMessage::new(role, Value::String(String::new()))),
    };
    let mut chat_parts = Vec::new();
    let mut texts = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        let part_param = format!("{param}.content[{j}]");
        let text_field = |name: &str| part.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
        let kind = part.get("type").and_then(Value::as_str).unwrap_or_default();
        let chat_part = match kind {
            "input_text" | "output_text" | "text" => {
                texts.push(text_field("text"));
                json!({"type": "text", "text": text_field("text")})
            }
            "refusal" => {
                texts.push(text_field("refusal"));
                json!({"type": "text", "text": text_field("refusal")})
            }
            "input_image" | "input_file" | "input_audio" if role != "user" => {
                return Err(unsupported_parameter(
                    &format!("{part_param}.type"),
                    provider,
                    &format!("`{kind}` parts in {role} messages"),
                ));
            }
            "input_image" => image_part(provider, &part_param, part)?,
            "input_file" => file_part(provider, &part_param, part)?,
            "input_audio" => {
                json!({"type": "input_audio", "input_audio": part.get("input_audio").cloned().unwrap_or(Value::Null)})
            }
            other => {
                return Err(unsupported_parameter(
                    &format!("{part_param}.type"),
                    provider,
                    &format!("`{other}` content parts"),
                ));
            }
        };
        chat_parts.push(chat_part);
    }
    let content =
        if texts.len() == chat_parts.len() { Value::String(texts.join("\n")) } else { Value::Array(chat_parts) };
    Ok(ChatMessage::new(role, content))
}

fn image_part(provider: &str, param: &str, part: &Value) -> Result<Value, GatewayError> {
    let Some(url) = part.get("image_url").and_then(Value::as_str) else {
        if part.get("file_id").is_some_and(|v| !v.is_null()) {
            return Err(unsupported_parameter(
                &format!("{param}.file_id"),
                provider,
                "images by `file_id` (send `image_url`: a URL or a data URL)",
            ));
        }
        return Err(GatewayError::invalid(
            "missing_required_parameter",
            format!("{param}.image_url"),
            format!("Missing required parameter: `{param}.image_url`."),
        ));
    };
    let mut image = json!({"url": url});
    if let Some(detail) = part.get("detail").filter(|d| !d.is_null()) {
        image["detail"] = detail.clone();
    }
    Ok(json!({"type": "image_url", "image_url": image}))
}

fn file_part(provider: &str, param: &str, part: &Value) -> Result<Value, GatewayError> {
    let Some(data) = part.get("file_data").and_then(Value::as_str) else {
        let field = if part.get("file_id").is_some() { "file_id" } else { "file_url" };
        return Err(unsupported_parameter(
            &format!("{param}.{field}"),
            provider,
            &format!("files by `{field}` (send `file_data`)"),
        ));
    };
    let mut file = json!({"file_data": data});
    if let Some(name) = part.get("filename").and_then(Value::as_str) {
        file["filename"] = json!(name);
    }
    Ok(json!({"type": "file", "file": file}))
}

/// `reasoning.effort` → `reasoning_effort`. Chat Completions takes the same seven values
/// (`ReasoningEffort` is one type in the SDKs), so each maps to itself: a compatible provider
/// that knows fewer refuses the others with its own 400.
fn reasoning_effort(body: &Map<String, Value>) -> Option<String> {
    body.get("reasoning")?.get("effort")?.as_str().map(str::to_owned)
}

/// Function tools, nested the Chat way; built-in tools are refused.
///
/// `strict` is sent only when the client set it: the Responses API defaults it to true, Chat
/// providers to false, and several reject the field altogether.
fn tools(provider: &str, body: &Map<String, Value>) -> Result<Vec<ChatTool>, GatewayError> {
    Ok(super::function_tools(provider, body)?
        .into_iter()
        .map(|tool| {
            let mut function = Map::new();
            for field in ["name", "description", "parameters", "strict"] {
                if let Some(value) = tool.get(field).filter(|v| !v.is_null()) {
                    function.insert(field.to_owned(), value.clone());
                }
            }
            ChatTool { kind: "function", function }
        })
        .collect())
}

fn tool_choice(provider: &str, body: &Map<String, Value>, has_tools: bool) -> Result<Option<Value>, GatewayError> {
    let choice = match body.get("tool_choice") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(mode)) if !has_tools && (mode == "auto" || mode == "none") => return Ok(None),
        Some(Value::String(mode)) => json!(mode),
        Some(choice) if choice.get("type").and_then(Value::as_str) == Some("function") => {
            json!({"type": "function", "function": {"name": choice.get("name").cloned().unwrap_or(Value::Null)}})
        }
        Some(choice) => {
            let kind = choice.get("type").and_then(Value::as_str).unwrap_or_default();
            return Err(unsupported_parameter(
                "tool_choice",
                provider,
                &format!("`tool_choice` of type `{kind}` (only none, auto, required or a function)"),
            ));
        }
    };
    Ok(Some(choice))
}

/// `text.format` as `response_format`; plain text needs none.
fn response_format(body: &Map<String, Value>) -> Option<Value> {
    let format = body.get("text")?.get("format")?;
    match format.get("type").and_then(Value::as_str)? {
        "json_object" => Some(json!({"type": "json_object"})),
        "json_schema" => {
            let mut schema = Map::new();
            for field in ["name", "description", "schema", "strict"] {
                if let Some(value) = format.get(field).filter(|v| !v.is_null()) {
                    schema.insert(field.to_owned(), value.clone());
                }
            }
            Some(json!({"type": "json_schema", "json_schema": schema}))
        }
        _ => None,
    }
}

/// A provider's (Chat-named) `param` in Responses terms.
fn responses_param(param: &str) -> String {
    match param {
        "max_tokens" | "max_completion_tokens" => "max_output_tokens".to_owned(),
        "reasoning_effort" => "reasoning.effort".to_owned(),
        p if p.starts_with("messages") => "input".to_owned(),
        p if p.starts_with("response_format") => "text.format".to_owned(),
        p => p.to_owned(),
    }
}

fn finish_reason(reason: Option<&str>) -> FinishReason {
    match reason {
        Some("length" | "max_tokens") => FinishReason::Length,
        Some("content_filter") => FinishReason::ContentFilter,
        Some("error") => FinishReason::Error("The provider reported an error.".to_owned()),
        // stop, tool_calls, function_call, eos and whatever else a provider names a normal end.
        _ => FinishReason::Stop,
    }
}

/// Tool call arguments as text (a few providers send them as a JSON object).
fn arguments_text(arguments: &Value) -> String {
    match arguments {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Reasoning, text and refusal of a message or a delta.
fn prose_deltas(answer: &ChatAnswer, out: &mut Vec<Delta>) {
    fn string(field: &Option<Value>) -> Option<&str> {
        field.as_ref().and_then(Value::as_str).filter(|t| !t.is_empty())
    }
    if let Some(reasoning) = string(&answer.reasoning_content).or_else(|| string(&answer.reasoning)) {
        out.push(Delta::Reasoning(reasoning.to_owned()));
    }
    match &answer.content {
        Some(Value::String(text)) if !text.is_empty() => out.push(Delta::Text(text.clone())),
        // Mistral's reasoning models send typed chunks: `text` and `thinking`.
        Some(Value::Array(parts)) => {
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(text) = part.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                            out.push(Delta::Text(text.to_owned()));
                        }
                    }
                    Some("thinking") => {
                        let thinking = match part.get("thinking") {
                            Some(Value::String(text)) => text.clone(),
                            Some(Value::Array(pieces)) => {
                                pieces.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect()
                            }
                            _ => String::new(),
                        };
                        if !thinking.is_empty() {
                            out.push(Delta::Reasoning(thinking));
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    if let Some(refusal) = string(&answer.refusal) {
        out.push(Delta::Refusal(refusal.to_owned()));
    }
}

/// A tool call being streamed, by the provider's index.
#[derive(Debug)]
struct StreamedCall {
    index: u64,
    id: Option<String>,
    started: bool,
    /// Argument fragments that came before the function name.
    pending: String,
}

/// Decodes a Chat Completions stream.
#[derive(Debug, Default)]
struct ChatDecoder {
    calls: Vec<StreamedCall>,
    /// The `finish_reason` seen so far; reported when the stream ends, after the usage chunk.
    finish: Option<FinishReason>,
    done: bool,
}

impl ChatDecoder {
    fn tool_call(&mut self, piece: &ChatToolCallPiece, out: &mut Vec<Delta>) {
        let id = piece.id.clone().filter(|id| !id.is_empty());
        let index = piece
            .index
            .or_else(|| {
                id.as_ref().and_then(|id| self.calls.iter().find(|c| c.id.as_ref() == Some(id))).map(|c| c.index)
            })
            .or_else(|| if id.is_some() { None } else { self.calls.last().map(|c| c.index) })
            .unwrap_or_else(|| self.calls.iter().map(|c| c.index + 1).max().unwrap_or(0));
        let position = match self.calls.iter().position(|c| c.index == index) {
            Some(position) => position,
            None => {
                self.calls.push(StreamedCall { index, id: None, started: false, pending: String::new() });
                self.calls.len() - 1
            }
        };
        let call = &mut self.calls[position];
        if call.id.is_none() {
            call.id = id;
        }
        let function = piece.function.as_ref();
        let fragment = function.and_then(|f| f.arguments.as_ref()).map(arguments_text).unwrap_or_default();
        if !call.started {
            let Some(name) = function.and_then(|f| f.name.clone()).filter(|n| !n.is_empty()) else {
                call.pending.push_str(&fragment);
                return;
            };
            call.started = true;
            let call_id = call.id.clone().unwrap_or_else(|| new_id("call_"));
            out.push(Delta::ToolCallStart { index, call_id, name });
            if !call.pending.is_empty() {
                out.push(Delta::ToolCallArguments { index, fragment: std::mem::take(&mut call.pending) });
            }
        }
        if !fragment.is_empty() {
            out.push(Delta::ToolCallArguments { index, fragment });
        }
    }
}

impl DeltaDecoder for ChatDecoder {
    fn decode(&mut self, event: SseEvent) -> Result<Vec<Delta>, StreamFault> {
        let data = event.data.trim();
        if self.done || data.is_empty() {
            return Ok(Vec::new());
        }
        if data == "[DONE]" {
            self.done = true;
            return Ok(vec![Delta::Finish(self.finish.take().unwrap_or(FinishReason::Stop))]);
        }
        let chunk: ChatCompletion = serde_json::from_str(data)
            .map_err(|_| StreamFault::Malformed("a chunk is not a Chat Completions chunk".to_owned()))?;
        let mut out = Vec::new();
        if let Some(error) = chunk.error.as_ref().filter(|e| !e.is_null()) {
            let message = ErrorWords::of(error).message.unwrap_or_else(|| "The provider reported an error.".into());
            if let Some(usage) = chunk.usage() {
                out.push(Delta::Usage(usage));
            }
            self.done = true;
            out.push(Delta::Finish(FinishReason::Error(message)));
            return Ok(out);
        }
        if let Some(choice) = chunk.first_choice() {
            if let Some(delta) = choice.delta.as_ref().or(choice.message.as_ref()) {
                prose_deltas(delta, &mut out);
                for piece in delta.tool_calls.iter().flatten() {
                    self.tool_call(piece, &mut out);
                }
            }
            if let Some(reason) = choice.finish_reason.as_deref() {
                self.finish = Some(finish_reason(Some(reason)));
            }
        }
        if let Some(usage) = chunk.usage() {
            out.push(Delta::Usage(usage));
        }
        Ok(out)
    }

    /// A stream that ended without `[DONE]` still finishes if the provider said why it stopped;
    /// without a `finish_reason` it stays unfinished and the gateway reports it broken.
    fn finish(&mut self) -> Vec<Delta> {
        if self.done {
            return Vec::new();
        }
        match self.finish.take() {
            Some(reason) => {
                self.done = true;
                vec![Delta::Finish(reason)]
            }
            None => Vec::new(),
        }
    }
}

/// What a provider said in an error: OpenAI's `{"error": {message, type, code, param}}`, or the
/// variants compatible providers send (`{"error": "text"}`, `{"message": ...}` at the top level,
/// `{"detail": ...}`, a plain-text body).
#[derive(Debug, Default, PartialEq)]
struct ErrorWords {
    error_type: Option<String>,
    code: Option<String>,
    message: Option<String>,
    param: Option<String>,
}

impl ErrorWords {
    fn parse(bytes: &[u8]) -> Self {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(body)) => match body.get("error") {
                Some(error @ Value::Object(_)) => ErrorWords::of(error),
                Some(Value::String(message)) => {
                    ErrorWords { message: Some(message.clone()), ..ErrorWords::of(&Value::Object(body.clone())) }
                }
                _ => ErrorWords::of(&Value::Object(body)),
            },
            Ok(Value::String(message)) => ErrorWords { message: Some(message), ..ErrorWords::default() },
            _ => {
                let text = String::from_utf8_lossy(bytes);
                let text = text.trim();
                let message = (!text.is_empty()).then(|| text.chars().take(500).collect());
                ErrorWords { message, ..ErrorWords::default() }
            }
        }
    }

    /// The words of one error object. Numeric codes only repeat the HTTP status: not kept.
    fn of(error: &Value) -> Self {
        let text = |name: &str| error.get(name).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
        let message = text("message").or_else(|| match error.get("detail") {
            Some(Value::String(detail)) => Some(detail.clone()),
            Some(Value::Null) | None => None,
            Some(detail) => Some(detail.to_string()),
        });
        let message = message.or_else(|| error.as_str().map(str::to_owned));
        ErrorWords { error_type: text("type"), code: text("code"), message, param: text("param") }
    }

    /// Whether the prompt did not fit the model's context window.
    fn is_context_length(&self) -> bool {
        if self.code.as_deref() == Some("context_length_exceeded") {
            return true;
        }
        let message = self.message.as_deref().unwrap_or_default().to_ascii_lowercase();
        ["context length", "context_length", "context window", "maximum context"].iter().any(|m| message.contains(m))
    }
}

// Wire types: the request Mesh sends, and the completion or chunk it reads (one shape serves
// both: a completion's `message` and a chunk's `delta` carry the same fields).

#[derive(Debug, Serialize)]
struct ChatRequest {
    model: String,
    messages: Vec<ChatMessage>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ChatTool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_effort: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    verbosity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    safety_identifier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_cache_key: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_tier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plugins: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<ChatStreamOptions>,
    /// Provider extras the client sent, forwarded verbatim.
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Debug, Serialize)]
struct ChatStreamOptions {
    include_usage: bool,
}

#[derive(Debug, Serialize)]
struct ChatMessage {
    role: &'static str,
    /// A string or content parts; `null` for an assistant turn of tool calls only.
    content: Value,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ChatToolCall>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<String>,
}

impl ChatMessage {
    fn new(role: &'static str, content: Value) -> Self {
        ChatMessage { role, content, tool_calls: Vec::new(), tool_call_id: None }
    }
}

#[derive(Debug, Serialize)]
struct ChatToolCall {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    function: ChatFunctionCall,
}

#[derive(Debug, Serialize)]
struct ChatFunctionCall {
    name: String,
    arguments: String,
}

#[derive(Debug, Serialize)]
struct ChatTool {
    #[serde(rename = "type")]
    kind: &'static str,
    function: Map<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ChatCompletion {
    /// Empty (or `null`, on vLLM) in the usage chunk of a stream.
    choices: Option<Vec<ChatChoice>>,
    usage: Option<ChatUsage>,
    /// OpenRouter and others report failures in a 200 body or a stream chunk.
    error: Option<Value>,
    /// Groq's streams carried usage here before `stream_options` existed.
    x_groq: Option<GroqExtras>,
}

impl ChatCompletion {
    fn first_choice(&self) -> Option<&ChatChoice> {
        self.choices.as_ref()?.iter().find(|c| c.index.unwrap_or(0) == 0)
    }

    fn usage(&self) -> Option<TokenUsage> {
        self.usage.as_ref().or_else(|| self.x_groq.as_ref()?.usage.as_ref()).map(ChatUsage::tokens)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct GroqExtras {
    usage: Option<ChatUsage>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ChatChoice {
    index: Option<u64>,
    message: Option<ChatAnswer>,
    delta: Option<ChatAnswer>,
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ChatAnswer {
    /// A string, or (Mistral) a list of typed chunks.
    content: Option<Value>,
    /// The text fields are read as any JSON value and used only when they are strings, so an
    /// unexpected shape from some server does not fail the whole chunk.
    refusal: Option<Value>,
    /// DeepSeek, xAI, vLLM (older), Together.
    reasoning_content: Option<Value>,
    /// OpenRouter, Groq, vLLM (newer), Ollama.
    reasoning: Option<Value>,
    tool_calls: Option<Vec<ChatToolCallPiece>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ChatToolCallPiece {
    index: Option<u64>,
    id: Option<String>,
    function: Option<ChatFunctionPiece>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ChatFunctionPiece {
    name: Option<String>,
    arguments: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ChatUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<ChatPromptDetails>,
    completion_tokens_details: Option<ChatCompletionDetails>,
    /// DeepSeek's name for cached prompt tokens.
    prompt_cache_hit_tokens: Option<u64>,
}

impl ChatUsage {
    fn tokens(&self) -> TokenUsage {
        let cached = self.prompt_tokens_details.as_ref().and_then(|d| d.cached_tokens).or(self.prompt_cache_hit_tokens);
        TokenUsage {
            input_tokens: self.prompt_tokens.unwrap_or(0),
            cached_input_tokens: cached.unwrap_or(0),
            output_tokens: self.completion_tokens.unwrap_or(0),
            reasoning_tokens: self.completion_tokens_details.as_ref().and_then(|d| d.reasoning_tokens).unwrap_or(0),
            cache_write_tokens: self.prompt_tokens_details.as_ref().and_then(|d| d.cache_write_tokens).unwrap_or(0),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ChatPromptDetails {
    cached_tokens: Option<u64>,
    /// Prompt tokens written to the provider's cache (OpenAI, 2026).
    cache_write_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ChatCompletionDetails {
    reasoning_tokens: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ProviderApi, Secret};
    use crate::providers::assemble::ResponseContext;
    use crate::providers::assemble_complete;
    use crate::sse::SseParser;

    const TEXT_SSE: &str = include_str!("../../../tests/fixtures/chat-text.sse");
    const TOOL_CALLS_SSE: &str = include_str!("../../../tests/fixtures/chat-tool-calls.sse");
    const REASONING_SSE: &str = include_str!("../../../tests/fixtures/chat-reasoning.sse");

    fn provider(name: &str) -> ProviderConfig {
        ProviderConfig {
            name: name.to_owned(),
            api: ProviderApi::Chat,
            base_url: "https://api.groq.com/openai/v1/".to_owned(),
            api_key: Some(Secret::new("gsk-test")),
            api_key_secret_arn: None,
            token_delay: std::time::Duration::ZERO,
        }
    }

    fn row() -> ModelPrice {
        ModelPrice {
            model: "meta/llama-3.3-70b".to_owned(),
            provider: "groq".to_owned(),
            upstream_model: "llama-3.3-70b-versatile".to_owned(),
            input_usd_per_mtok: None,
            output_usd_per_mtok: None,
            cached_input_usd_per_mtok: None,
            context_length: None,
            max_output_tokens: None,
            is_free: false,
            is_default: true,
            enabled: true,
            priority: None,
        }
    }

    fn translate_for(provider_name: &str, body: &Value, stream: bool) -> Result<Value, GatewayError> {
        let body = body.as_object().cloned().unwrap_or_default();
        let request = Chat.request(&provider(provider_name), &row(), &body, stream)?;
        Ok(serde_json::from_slice(&request.body).unwrap())
    }

    fn translate(body: &Value) -> Value {
        translate_for("groq", body, false).unwrap_or_else(|e| panic!("{body} refused: {e}"))
    }

    fn decode_all(sse: &str, piece: usize) -> Vec<Delta> {
        let mut parser = SseParser::new();
        let mut decoder = Chat.decoder();
        let mut deltas = Vec::new();
        for chunk in sse.as_bytes().chunks(piece) {
            for event in parser.feed(chunk).unwrap() {
                deltas.extend(decoder.decode(event).unwrap());
            }
        }
        if let Some(event) = parser.finish().unwrap() {
            deltas.extend(decoder.decode(event).unwrap());
        }
        deltas.extend(decoder.finish());
        deltas
    }

    fn data(json: &Value) -> SseEvent {
        SseEvent { event: None, data: json.to_string(), id: None }
    }

    fn usage(input: u64, cached: u64, output: u64, reasoning: u64) -> Delta {
        Delta::Usage(TokenUsage {
            input_tokens: input,
            cached_input_tokens: cached,
            output_tokens: output,
            reasoning_tokens: reasoning,
            ..TokenUsage::default()
        })
    }

    fn call(index: u64, call_id: &str, name: &str) -> Delta {
        Delta::ToolCallStart { index, call_id: call_id.to_owned(), name: name.to_owned() }
    }

    fn args(index: u64, fragment: &str) -> Delta {
        Delta::ToolCallArguments { index, fragment: fragment.to_owned() }
    }

    fn text_of(deltas: &[Delta]) -> String {
        deltas.iter().filter_map(|d| if let Delta::Text(t) = d { Some(t.as_str()) } else { None }).collect()
    }

    #[test]
    fn request_translation_table() {
        let model = "llama-3.3-70b-versatile";
        let weather = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
        let cases: Vec<(&str, Value, Value)> = vec![
            (
                "string input and instructions",
                json!({"model": "meta/llama-3.3-70b", "input": "hi", "instructions": "be brief"}),
                json!({"model": model, "messages": [
                    {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}),
            ),
            (
                "message items of every role; text parts become one string",
                json!({"input": [
                    {"role": "developer", "content": "rules"},
                    {"type": "message", "role": "user", "content": [
                        {"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
                    {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed", "content": [
                        {"type": "output_text", "text": "ok", "annotations": []}]},
                    {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]},
                    {"role": "system", "content": "sys"}]}),
                json!({"model": model, "messages": [
                    {"role": "system", "content": "rules"},
                    {"role": "user", "content": "a\nb"},
                    {"role": "assistant", "content": "ok"},
                    {"role": "assistant", "content": "I can't."},
                    {"role": "system", "content": "sys"}]}),
            ),
            (
                "images become image_url parts, detail kept",
                json!({"input": [{"role": "user", "content": [
                    {"type": "input_text", "text": "what is this?"},
                    {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "low"},
                    {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="},
                    {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}]}]}),
                json!({"model": model, "messages": [{"role": "user", "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}}]}]}),
            ),
            (
                "function calls join the assistant message before them; reasoning is skipped",
                json!({"input": [
                    {"role": "user", "content": "weather in Paris and Rome?"},
                    {"type": "reasoning", "id": "rs_1", "summary": []},
                    {"role": "assistant", "content": "Let me check."},
                    {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "gAAA"},
                    {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
                        "arguments": "{\"city\":\"Paris\"}", "status": "completed"},
                    {"type": "function_call", "call_id": "call_2", "name": "get_weather", "arguments": "{\"city\":\"Rome\"}"},
                    {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
                    {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "21C"}]}]}),
                json!({"model": model, "messages": [
                    {"role": "user", "content": "weather in Paris and Rome?"},
                    {"role": "assistant", "content": "Let me check.", "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                        {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}]},
                    {"role": "tool", "content": "18C", "tool_call_id": "call_1"},
                    {"role": "tool", "content": "21C", "tool_call_id": "call_2"}]}),
            ),
            (
                "function calls after a user message open an assistant turn with null content",
                json!({"input": [
                    {"role": "user", "content": "weather?"},
                    {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
                    {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
                    {"type": "function_call", "call_id": "call_2", "name": "get_weather", "arguments": "{}"}]}),
                json!({"model": model, "messages": [
                    {"role": "user", "content": "weather?"},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
                    {"role": "tool", "content": "18C", "tool_call_id": "call_1"},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]}]}),
            ),
            (
                "function tools nest; a named tool_choice nests; parallel_tool_calls kept",
                json!({"input": "hi", "parallel_tool_calls": false,
                    "tool_choice": {"type": "function", "name": "get_weather"},
                    "tools": [{"type": "function", "name": "get_weather", "description": "Weather now",
                        "parameters": weather, "strict": true}, {"type": "function", "name": "ping"}]}),
                json!({"model": model, "messages": [{"role": "user", "content": "hi"}],
                    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                        "parameters": weather, "strict": true}}, {"type": "function", "function": {"name": "ping"}}],
                    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
                    "parallel_tool_calls": false}),
            ),
            (
                "tool_choice modes pass as they are",
                json!({"input": "hi", "tool_choice": "required", "tools": [{"type": "function", "name": "ping"}]}),
                json!({"model": model, "messages": [{"role": "user", "content": "hi"}],
                    "tools": [{"type": "function", "function": {"name": "ping"}}], "tool_choice": "required"}),
            ),
            (
                "tool_choice auto and parallel_tool_calls need tools on Chat",
                json!({"input": "hi", "tool_choice": "auto", "parallel_tool_calls": true, "tools": []}),
                json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
            ),
            (
                "json_schema format",
                json!({"input": "hi", "text": {"format": {"type": "json_schema", "name": "answer",
                    "schema": {"type": "object", "properties": {"answer": {"type": "integer"}}}, "strict": true}}}),
                json!({"model": model, "messages": [{"role": "user", "content": "hi"}],
                    "response_format": {"type": "json_schema", "json_schema": {"name": "answer",
                        "schema": {"type": "object", "properties": {"answer": {"type": "integer"}}}, "strict": true}}}),
            ),
            (
                "json_object format",
                json!({"input": "hi", "text": {"format": {"type": "json_object"}}}),
                json!({"model": model, "messages": [{"role": "user", "content": "hi"}],
                    "response_format": {"type": "json_object"}}),
            ),
            (
                "text format needs nothing; verbosity goes as Chat's verbosity",
                json!({"input": "hi", "text": {"format": {"type": "text"}, "verbosity": "low"}}),
                json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "verbosity": "low"}),
            ),
            (
                "sampling and limits map; gateway-side fields stay home; provider extras pass",
                json!({"input": "hi", "max_output_tokens": 100, "temperature": 0.2, "top_p": 0.9, "seed": 7,
                    "reasoning": {"effort": "high", "summary": "auto"}, "safety_identifier": "sid-3f9a", "stop": ["\n"],
                    "metadata": {"a": "b"}, "store": true, "previous_response_id": "resp_1",
                    "service_tier": "auto", "truncation": "disabled", "background": false,
                    "include": ["file_search_call.results", "reasoning.encrypted_content"], "top_logprobs": 0,
                    "prompt_cache_key": "k", "stream": false, "stream_options": {"include_obfuscation": false},
                    "max_tool_calls": null, "frequency_penalty": 0.5, "top_k": 40, "max_tokens": 5, "messages": [],
                    "verbosity": "high"}),
                json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100,
                    "temperature": 0.2, "top_p": 0.9, "seed": 7, "reasoning_effort": "high",
                    "safety_identifier": "sid-3f9a", "prompt_cache_key": "k", "stop": ["\n"],
                    "frequency_penalty": 0.5, "top_k": 40, "verbosity": "high"}),
            ),
            (
                "a Chat-named verbosity extra still goes when text.verbosity is absent",
                json!({"input": "hi", "verbosity": "high"}),
                json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "verbosity": "high"}),
            ),
            (
                "user and safety_identifier both go as the client gave them; a tier other than auto passes",
                json!({"input": "hi", "user": "u-1", "safety_identifier": "sid-1", "service_tier": "flex"}),
                json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "user": "u-1",
                    "safety_identifier": "sid-1", "service_tier": "flex"}),
            ),
        ];
        for (name, body, expected) in cases {
            assert_eq!(translate(&body), expected, "{name}");
        }
    }

    #[test]
    fn every_reasoning_effort_maps_to_chat_reasoning_effort() {
        for effort in ["none", "minimal", "low", "medium", "high", "xhigh", "max"] {
            let request = translate(&json!({"input": "hi", "reasoning": {"effort": effort}}));
            assert_eq!(request["reasoning_effort"], effort);
        }
    }

    #[test]
    fn newer_fields_chat_cannot_honour_are_refused_by_name() {
        for (body, param) in [
            (json!({"input": "hi", "max_tool_calls": 2}), "max_tool_calls"),
            (json!({"input": "hi", "top_logprobs": 3}), "top_logprobs"),
            (json!({"input": "hi", "truncation": "auto"}), "truncation"),
            (json!({"input": "hi", "include": ["message.output_text.logprobs"]}), "include[0]"),
        ] {
            let err = translate_for("groq", &body, false).unwrap_err();
            assert_eq!(
                (err.body()["code"].as_str(), err.body()["param"].as_str()),
                (Some("unsupported_parameter"), Some(param))
            );
            assert!(err.body()["message"].as_str().unwrap_or_default().contains("`groq`"), "{}", err.body());
        }
    }

    #[test]
    fn function_outputs_as_part_lists_flatten_to_text() {
        let body = json!({"input": [
            {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": [
                {"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]}]});
        assert_eq!(
            translate(&body)["messages"][1],
            json!({"role": "tool", "content": "a\nb", "tool_call_id": "call_1"})
        );
        let image = json!({"input": [
            {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": [
                {"type": "input_image", "image_url": "https://example.com/a.png"}]}]});
        let err = translate_for("groq", &image, false).unwrap_err();
        assert_eq!(err.body()["param"], "input[1].output[0].type");
    }

    #[test]
    fn usage_reports_cache_writes() {
        let completion = json!({"choices": [{"index": 0, "finish_reason": "stop", "message": {"content": "hi"}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 2,
                "prompt_tokens_details": {"cached_tokens": 40, "cache_write_tokens": 60}}});
        let deltas = Chat.response(completion.to_string().as_bytes()).unwrap();
        let usage = deltas.iter().find_map(|d| if let Delta::Usage(u) = d { Some(*u) } else { None }).unwrap();
        assert_eq!((usage.input_tokens, usage.cached_input_tokens, usage.cache_write_tokens), (100, 40, 60));
    }

    #[test]
    fn streaming_asks_for_usage_and_the_call_is_built() {
        let body = json!({"input": "hi"}).as_object().cloned().unwrap_or_default();
        let request = Chat.request(&provider("groq"), &row(), &body, true).unwrap();
        assert_eq!(request.url, "https://api.groq.com/openai/v1/chat/completions");
        assert!(request.headers.contains(&("authorization", "Bearer gsk-test".to_owned())));
        assert!(request.headers.contains(&("accept", "text/event-stream".to_owned())));
        let sent: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(sent["stream"], true);
        assert_eq!(sent["stream_options"], json!({"include_usage": true}));
        let plain = Chat.request(&provider("groq"), &row(), &body, false).unwrap();
        assert!(!plain.headers.iter().any(|(name, _)| *name == "accept"));
    }

    #[test]
    fn plugins_go_to_openrouter_only() {
        let body = json!({"input": "hi", "plugins": [{"id": "web", "max_results": 3}]});
        let sent = translate_for("openrouter", &body, false).unwrap();
        assert_eq!(sent["plugins"], json!([{"id": "web", "max_results": 3}]));
        let err = translate_for("groq", &body, false).unwrap_err();
        assert_eq!(err.body()["code"], "unsupported_plugin");
    }

    #[test]
    fn what_chat_cannot_honour_is_refused() {
        let cases: Vec<(Value, &str, &str)> = vec![
            (json!({"input": "x", "tools": [{"type": "web_search_preview"}]}), "unsupported_tool", "tools[0].type"),
            (
                json!({"input": "x", "tools": [{"type": "function", "name": "f"}, {"type": "file_search"}]}),
                "unsupported_tool",
                "tools[1].type",
            ),
            (json!({"input": "x", "tools": [{"type": "code_interpreter"}]}), "unsupported_tool", "tools[0].type"),
            (json!({"input": "x", "tools": [{"type": "computer_use_preview"}]}), "unsupported_tool", "tools[0].type"),
            (json!({"input": "x", "tools": [{"type": "image_generation"}]}), "unsupported_tool", "tools[0].type"),
            (json!({"input": "x", "tools": [{"type": "web_search"}]}), "unsupported_tool", "tools[0].type"),
            (json!({"input": "x", "background": true}), "unsupported_parameter", "background"),
            (json!({"input": "x", "truncation": "auto"}), "unsupported_parameter", "truncation"),
            (
                json!({"input": "x", "include": ["reasoning.encrypted_content", "message.output_text.logprobs"]}),
                "unsupported_parameter",
                "include[1]",
            ),
            (json!({"input": "x", "top_logprobs": 5}), "unsupported_parameter", "top_logprobs"),
            (json!({"input": "x", "max_tool_calls": 3}), "unsupported_parameter", "max_tool_calls"),
            (json!({"input": "x", "conversation": "conv_1"}), "unsupported_parameter", "conversation"),
            (
                json!({"input": "x", "tool_choice": {"type": "web_search_preview"}}),
                "unsupported_parameter",
                "tool_choice",
            ),
            (json!({"input": [{"type": "item_reference", "id": "msg_1"}]}), "unsupported_parameter", "input[0]"),
            (
                json!({"input": [{"type": "web_search_call", "id": "ws_1", "status": "completed"}]}),
                "unsupported_parameter",
                "input[0].type",
            ),
            (
                json!({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]}),
                "unsupported_parameter",
                "input[0].content[0].file_id",
            ),
            (
                json!({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]}),
                "unsupported_parameter",
                "input[0].content[0].file_id",
            ),
            (
                json!({"input": [{"role": "system", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}]}),
                "unsupported_parameter",
                "input[0].content[0].type",
            ),
        ];
        for (body, code, param) in cases {
            let err = translate_for("groq", &body, false).expect_err(&body.to_string());
            assert_eq!(err.status(), 400, "{body}");
            let error = err.body();
            assert_eq!(error["code"], code, "{body}");
            assert_eq!(error["param"], param, "{body}");
            assert!(error["message"].as_str().unwrap_or_default().contains("`groq`"), "{error}");
        }
    }

    #[test]
    fn a_completion_becomes_deltas() {
        let completion = json!({
            "id": "chatcmpl-123", "object": "chat.completion", "created": 1_677_652_288, "model": "gpt-4o-mini",
            "system_fingerprint": "fp_44709d6fcb",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there, how may I assist you today?",
                "refusal": null, "annotations": []}, "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21,
                "prompt_tokens_details": {"cached_tokens": 3, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 2, "audio_tokens": 0,
                    "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
            "service_tier": "default"});
        let deltas = Chat.response(completion.to_string().as_bytes()).unwrap();
        assert_eq!(
            deltas,
            vec![
                Delta::Text("Hello there, how may I assist you today?".into()),
                usage(9, 3, 12, 2),
                Delta::Finish(FinishReason::Stop)
            ]
        );
    }

    #[test]
    fn tool_calls_reasoning_refusals_and_stop_reasons() {
        let tools = json!({"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant",
            "content": null, "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": {"tz": "CET"}}}]}}],
            "usage": {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99}});
        assert_eq!(
            Chat.response(tools.to_string().as_bytes()).unwrap(),
            vec![
                call(0, "call_a", "get_weather"),
                args(0, "{\"city\":\"Paris\"}"),
                call(1, "call_b", "get_time"),
                args(1, "{\"tz\":\"CET\"}"),
                usage(82, 0, 17, 0),
                Delta::Finish(FinishReason::Stop)
            ]
        );
        let deepseek = json!({"choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant",
            "content": "Hi", "reasoning_content": "The user greets me."}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 30, "prompt_cache_hit_tokens": 8,
                "prompt_cache_miss_tokens": 4, "completion_tokens_details": {"reasoning_tokens": 25}}});
        assert_eq!(
            Chat.response(deepseek.to_string().as_bytes()).unwrap(),
            vec![
                Delta::Reasoning("The user greets me.".into()),
                Delta::Text("Hi".into()),
                usage(12, 8, 30, 25),
                Delta::Finish(FinishReason::Length)
            ]
        );
        let openrouter = json!({"choices": [{"index": 0, "finish_reason": "content_filter", "message": {
            "role": "assistant", "content": "", "reasoning": "hmm", "refusal": "I can't help with that."}}]});
        assert_eq!(
            Chat.response(openrouter.to_string().as_bytes()).unwrap(),
            vec![
                Delta::Reasoning("hmm".into()),
                Delta::Refusal("I can't help with that.".into()),
                Delta::Finish(FinishReason::ContentFilter)
            ]
        );
        let mistral = json!({"choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant",
            "content": [{"type": "thinking", "thinking": [{"type": "text", "text": "Let me think."}]},
                {"type": "text", "text": "42"}]}}]});
        assert_eq!(
            Chat.response(mistral.to_string().as_bytes()).unwrap(),
            vec![Delta::Reasoning("Let me think.".into()), Delta::Text("42".into()), Delta::Finish(FinishReason::Stop)]
        );
    }

    #[test]
    fn a_truncated_completion_assembles_as_incomplete() {
        let completion = json!({"choices": [{"index": 0, "finish_reason": "length",
            "message": {"role": "assistant", "content": "The answer is"}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}});
        let deltas = Chat.response(completion.to_string().as_bytes()).unwrap();
        let done = assemble_complete(deltas, ResponseContext::new("meta/llama", &Map::new()));
        assert_eq!(done.status, "incomplete");
        assert_eq!(done.response["incomplete_details"], json!({"reason": "max_output_tokens"}));
        assert_eq!(done.response["output"][0]["content"][0]["text"], "The answer is");
        assert_eq!(done.usage.output_tokens, 3);
    }

    #[test]
    fn broken_completions_are_upstream_failures() {
        for body in [
            &b"<html>bad gateway</html>"[..],
            br#"{"error": {"message": "Provider returned error", "code": 502}}"#,
            br#"{"id": "x", "choices": []}"#,
        ] {
            let err = Chat.response(body).unwrap_err();
            assert_eq!(err.status(), 502, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn text_stream_finishes_after_its_usage_chunk() {
        let deltas = decode_all(TEXT_SSE, usize::MAX);
        assert_eq!(text_of(&deltas), "Hello! How can I help?");
        let tail = &deltas[deltas.len() - 2..];
        assert_eq!(tail, &[usage(19, 0, 10, 0), Delta::Finish(FinishReason::Stop)]);
        assert_eq!(deltas.iter().filter(|d| matches!(d, Delta::Finish(_))).count(), 1);
        // Network chunks of any size decode the same.
        assert_eq!(decode_all(TEXT_SSE, 7), deltas);
        assert_eq!(decode_all(TEXT_SSE, 1), deltas);
    }

    #[test]
    fn tool_call_stream_decodes_and_assembles() {
        let deltas = decode_all(TOOL_CALLS_SSE, 7);
        assert_eq!(
            deltas,
            vec![
                call(0, "call_DdmO9pD3xa9XTPNJ32zg2hcA", "get_weather"),
                args(0, "{\"lo"),
                args(0, "cation\": \"P"),
                args(0, "aris, France\"}"),
                call(1, "call_ABCDEFGHIJKLMNOPQRSTUVWX", "get_weather"),
                args(1, "{\"lo"),
                args(1, "cation\": \"B"),
                args(1, "ogot\u{e1}, Colombia\"}"),
                usage(82, 64, 49, 0),
                Delta::Finish(FinishReason::Stop),
            ]
        );
        let done = assemble_complete(deltas, ResponseContext::new("openai/gpt-4o-mini", &Map::new()));
        assert_eq!(done.status, "completed");
        let output = done.response["output"].as_array().cloned().unwrap_or_default();
        assert_eq!(output.len(), 2);
        assert_eq!(output[0]["type"], "function_call");
        assert_eq!(output[0]["arguments"], "{\"location\": \"Paris, France\"}");
        assert_eq!(output[1]["call_id"], "call_ABCDEFGHIJKLMNOPQRSTUVWX");
        assert_eq!(output[1]["arguments"], "{\"location\": \"Bogot\u{e1}, Colombia\"}");
        assert_eq!(done.usage.cached_input_tokens, 64);
    }

    #[test]
    fn reasoning_stream_comes_before_the_text() {
        let deltas = decode_all(REASONING_SSE, 13);
        assert_eq!(
            deltas,
            vec![
                Delta::Reasoning("The user".into()),
                Delta::Reasoning(" greets".into()),
                Delta::Reasoning(" me.".into()),
                Delta::Text("Hi".into()),
                Delta::Text(" there!".into()),
                usage(12, 0, 30, 25),
                Delta::Finish(FinishReason::Stop),
            ]
        );
    }

    #[test]
    fn interleaved_and_unindexed_tool_calls() {
        let mut decoder = Chat.decoder();
        let mut deltas = Vec::new();
        let chunks = [
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 0, "id": "call_a", "type": "function", "function": {"name": "f", "arguments": ""}},
                {"index": 1, "id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{\"y\":"}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "function": {"arguments": "2}"}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"x\":1}"}}]}}]}),
            // Arguments before the name (a few servers do this): held until the call can start.
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 2, "function": {"arguments": "{\"z\""}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 2, "id": "call_c", "function": {"name": "h", "arguments": ":3}"}}]}}]}),
            // Whole calls without an index (Gemini's compatible endpoint).
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"id": "call_d", "type": "function",
                "function": {"name": "k", "arguments": "{}"}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
        ];
        for chunk in &chunks {
            deltas.extend(decoder.decode(data(chunk)).unwrap());
        }
        deltas.extend(decoder.decode(SseEvent { data: "[DONE]".into(), ..SseEvent::default() }).unwrap());
        assert_eq!(
            deltas,
            vec![
                call(0, "call_a", "f"),
                call(1, "call_b", "g"),
                args(1, "{\"y\":"),
                args(1, "2}"),
                args(0, "{\"x\":1}"),
                call(2, "call_c", "h"),
                args(2, "{\"z\""),
                args(2, ":3}"),
                call(3, "call_d", "k"),
                args(3, "{}"),
                Delta::Finish(FinishReason::Stop),
            ]
        );
        assert!(decoder.finish().is_empty(), "finished once");
    }

    #[test]
    fn stream_faults_errors_and_early_ends() {
        let mut decoder = Chat.decoder();
        let fault = decoder.decode(SseEvent { data: "{\"choices\": [".into(), ..SseEvent::default() }).unwrap_err();
        assert!(matches!(fault, StreamFault::Malformed(_)));

        let mut decoder = Chat.decoder();
        decoder.decode(data(&json!({"choices": [{"index": 0, "delta": {"content": "Hel"}}]}))).unwrap();
        let error = json!({"error": {"message": "Upstream overloaded", "code": 502},
            "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]});
        assert_eq!(
            decoder.decode(data(&error)).unwrap(),
            vec![Delta::Finish(FinishReason::Error("Upstream overloaded".into()))]
        );
        assert!(decoder.decode(data(&json!({"choices": []}))).unwrap().is_empty(), "nothing after the error");
        assert!(decoder.finish().is_empty());

        // No [DONE], but the provider said why it stopped: the stream still finishes.
        let mut decoder = Chat.decoder();
        decoder
            .decode(data(&json!({"choices": [{"index": 0, "delta": {"content": "cut"}, "finish_reason": "length"}]})))
            .unwrap();
        assert_eq!(decoder.finish(), vec![Delta::Finish(FinishReason::Length)]);

        // No [DONE] and no finish_reason: left unfinished for the gateway to report.
        let mut decoder = Chat.decoder();
        decoder.decode(data(&json!({"choices": [{"index": 0, "delta": {"content": "cu"}}]}))).unwrap();
        assert!(decoder.finish().is_empty());

        // An unexpected shape in a text field is skipped, not a broken stream.
        let mut decoder = Chat.decoder();
        let odd = json!({"choices": [{"index": 0, "delta": {"content": "ok", "reasoning": {"tokens": 3}}}]});
        assert_eq!(decoder.decode(data(&odd)).unwrap(), vec![Delta::Text("ok".into())]);

        // Keep-alive comments never reach the decoder; empty data lines are ignored.
        let mut decoder = Chat.decoder();
        assert!(decoder.decode(SseEvent::default()).unwrap().is_empty());
    }

    #[test]
    fn error_envelopes_are_mapped() {
        let mut retry = HeaderMap::new();
        retry.insert("retry-after", http::HeaderValue::from_static("7"));
        let none = HeaderMap::new();
        let openai = br#"{"error": {"message": "Rate limit reached for model `llama-3.3-70b-versatile`", "type": "tokens", "param": null, "code": "rate_limit_exceeded"}}"#;
        let err = Chat.error("groq", 429, &retry, openai);
        assert_eq!(err.status(), 429);
        let body = err.body();
        assert_eq!(body["code"], "rate_limit_exceeded");
        assert_eq!(body["type"], "tokens");
        assert_eq!(body["retry_after_seconds"], 7);
        assert!(body["message"].as_str().unwrap_or_default().starts_with("Rate limit reached"));

        let cases: Vec<(u16, &[u8], u16, Value)> = vec![
            (
                400,
                br#"{"error": "model `x` does not exist"}"#,
                400,
                json!({"message": "model `x` does not exist", "type": "invalid_request_error", "code": null, "param": null}),
            ),
            (
                400,
                br#"{"object": "error", "message": "max_tokens must be at least 1", "type": "BadRequestError", "param": "max_tokens", "code": 400}"#,
                400,
                json!({"message": "max_tokens must be at least 1", "type": "BadRequestError", "code": null, "param": "max_output_tokens"}),
            ),
            (
                404,
                br#"{"detail": "Not Found"}"#,
                404,
                json!({"message": "Not Found", "type": "invalid_request_error", "code": null, "param": null}),
            ),
            (
                401,
                br#"{"error": {"message": "Invalid API Key gsk_abcd****wxyz", "type": "invalid_request_error", "code": "invalid_api_key"}}"#,
                502,
                json!({"message": "The provider failed to answer the request.", "type": "api_error", "code": "upstream_error", "param": null}),
            ),
            (
                403,
                b"Forbidden",
                502,
                json!({"message": "The provider failed to answer the request.", "type": "api_error", "code": "upstream_error", "param": null}),
            ),
            (
                400,
                br#"{"error": {"message": "Key sk-abcdefgh1234 cannot set `logit_bias`", "type": "invalid_request_error", "code": null}}"#,
                400,
                json!({"message": "Key [redacted] cannot set `logit_bias`", "type": "invalid_request_error", "code": null, "param": null}),
            ),
            (
                400,
                br#"{"error": {"message": "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.", "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}"#,
                400,
                json!({"message": "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.",
                    "type": "invalid_request_error", "code": "context_length_exceeded", "param": "input"}),
            ),
            (
                413,
                br#"{"object": "error", "message": "Prompt contains 40000 tokens, too large for model with 32768 maximum context length", "type": "invalid_request_error", "param": null, "code": null}"#,
                400,
                json!({"message": "Prompt contains 40000 tokens, too large for model with 32768 maximum context length",
                    "type": "invalid_request_error", "code": "context_length_exceeded", "param": "input"}),
            ),
        ];
        for (status, bytes, want_status, want) in cases {
            let err = Chat.error("groq", status, &none, bytes);
            assert_eq!(err.status().as_u16(), want_status, "{}", String::from_utf8_lossy(bytes));
            assert_eq!(err.body(), want, "{}", String::from_utf8_lossy(bytes));
        }
        for status in [500, 502, 503] {
            let err = Chat.error("groq", status, &none, br#"{"error": {"message": "boom", "type": "server_error"}}"#);
            assert_eq!(err.status(), 502);
            assert_eq!(err.body()["code"], "upstream_error");
        }
    }
}
