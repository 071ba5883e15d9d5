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
mod tests;
