//! The `anthropic` provider API: Anthropic's Messages API, translated to and from the Responses API.
//! Docs: <https://docs.anthropic.com/en/api/messages>, streaming
//! <https://docs.anthropic.com/en/docs/build-with-claude/streaming>, errors
//! <https://docs.anthropic.com/en/api/errors>, extended thinking
//! <https://docs.anthropic.com/en/docs/build-with-claude/extended-thinking>, tool use
//! <https://docs.anthropic.com/en/docs/agents-and-tools/tool-use/implement-tool-use>.
//!
//! Pure translations in the order request out, response in, stream in, error in; the Messages wire
//! types close the file. What Anthropic cannot honour (built-in tools, `seed`, a temperature above
//! 1) is refused with a 400 naming the provider, never dropped silently.
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
    arguments_object, data_url, default_verbosity_only, end_user, newer_fields, number, stop_sequences, summary_text,
    tool_arguments, tool_choice, ToolChoice,
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

// ---------------------------------------------------------------------------------------------
// Request out

/// The Messages request for a Responses request body.
fn build_request(
    provider: &str,
    row: &ModelPrice,
    body: &Map<String, Value>,
    stream: bool,
) -> Result<AnthropicRequest, GatewayError> {
    refuse_unsupported(provider, body)?;
    let mut conversation = Conversation::default();
    if let Some(Value::String(instructions)) = body.get("instructions") {
        conversation.system_text(instructions);
    }
    match body.get("input") {
        Some(Value::String(text)) => conversation.push(Role::User, text_block(text).into_iter().collect()),
        Some(Value::Array(items)) => {
            for (index, item) in items.iter().enumerate() {
                conversation.item(provider, index, item)?;
            }
        }
        _ => {}
    }
    if let Some(instruction) = format_instruction(body) {
        conversation.system_text(&instruction);
    }
    let (system, messages) = conversation.finish();
    if messages.is_empty() {
        return Err(GatewayError::invalid(
            "invalid_value",
            "input",
            format!("The provider `{provider}` needs at least one user or assistant message in `input`."),
        ));
    }
    let tools = translate_tools(provider, body)?;
    // Anthropic refuses `tool_choice` without tools; without tools there is nothing to choose.
    let tool_choice = if tools.is_empty() { None } else { translate_tool_choice(provider, body)? };
    let mut max_tokens =
        body.get("max_output_tokens").and_then(Value::as_u64).or(row.max_output_tokens).unwrap_or(DEFAULT_MAX_TOKENS);
    let thinking = thinking_budget(body).map(|budget_tokens| AnthropicThinking { kind: "enabled", budget_tokens });
    if let Some(thinking) = &thinking {
        // Anthropic counts thinking inside `max_tokens` and needs room beyond the budget: the
        // limit meant for the answer is kept on top of the budget.
        if max_tokens <= thinking.budget_tokens {
            max_tokens += thinking.budget_tokens;
        }
    }
    Ok(AnthropicRequest {
        model: row.upstream_model.clone(),
        max_tokens,
        system,
        messages,
        tools,
        tool_choice,
        temperature: number(body, "temperature"),
        top_p: number(body, "top_p"),
        stop_sequences: stop_sequences(body)?,
        thinking,
        metadata: end_user(body).map(|user| AnthropicMetadata { user_id: user.to_owned() }),
        service_tier: service_tier(provider, body)?,
        stream,
    })
}

/// `service_tier`: Anthropic's own default, `auto`, serves `auto`; OpenAI's standard tier,
/// `default`, is Anthropic's `standard_only`; other tiers have no equivalent.
fn service_tier(provider: &str, body: &Map<String, Value>) -> Result<Option<&'static str>, GatewayError> {
    match body.get("service_tier").and_then(Value::as_str) {
        None | Some("auto") => Ok(None),
        Some("default") => Ok(Some("standard_only")),
        Some(other) => Err(unsupported(
            "unsupported_parameter",
            "service_tier",
            provider,
            &format!("`service_tier: \"{other}\"` (only `auto` or `default`)"),
        )),
    }
}

/// Refuses parameters Anthropic has no equivalent for.
fn refuse_unsupported(provider: &str, body: &Map<String, Value>) -> Result<(), GatewayError> {
    let present = |field: &str| body.get(field).is_some_and(|v| !v.is_null());
    if present("seed") {
        return Err(unsupported("unsupported_parameter", "seed", provider, "`seed`"));
    }
    newer_fields(provider, body)?;
    default_verbosity_only(provider, body)?;
    if body.get("temperature").and_then(Value::as_f64).is_some_and(|t| t > 1.0) {
        return Err(unsupported(
            "unsupported_parameter",
            "temperature",
            provider,
            "a `temperature` above 1 (its range is 0 to 1)",
        ));
    }
    Ok(())
}

/// `reasoning.effort` → a thinking budget.
fn thinking_budget(body: &Map<String, Value>) -> Option<u64> {
    thinking_budget_of(body.get("reasoning")?.get("effort")?.as_str()?)
}

/// The extended-thinking budget (tokens) for each `reasoning.effort`, for Claude here and on
/// Bedrock. `none` leaves thinking off (it is off unless asked for); `minimal` and `low` take
/// the smallest budget Anthropic allows (1024); `max` takes 59 904, the most that leaves the
/// default 4096-token answer inside the 64k output of Claude Sonnet 4 (a model with less
/// output answers the request with its own 400).
pub(crate) fn thinking_budget_of(effort: &str) -> Option<u64> {
    match effort {
        "none" => None,
        "minimal" | "low" => Some(1024),
        "medium" => Some(4096),
        "high" => Some(16_384),
        "xhigh" => Some(32_768),
        "max" => Some(59_904),
        // Validation admits no other value.
        _ => None,
    }
}

/// Structured output as an instruction. The Messages API has no JSON mode: rather than force a
/// tool call and rewrite its input into text, Mesh asks for JSON matching the schema in the system
/// prompt and returns the model's text as it comes (the schema is not enforced by the provider).
fn format_instruction(body: &Map<String, Value>) -> Option<String> {
    let format = body.get("text")?.get("format")?;
    match format.get("type")?.as_str()? {
        "json_schema" => {
            let schema = format.get("schema").cloned().unwrap_or_else(|| json!({}));
            let name = format.get("name").and_then(Value::as_str).map(|n| format!(" named `{n}`")).unwrap_or_default();
            Some(format!(
                "Answer with a single JSON value{name} that conforms to this JSON Schema, and nothing else \
                 (no prose, no code fences):\n{schema}"
            ))
        }
        "json_object" => {
            Some("Answer with a single valid JSON object and nothing else (no prose, no code fences).".to_owned())
        }
        _ => None,
    }
}

/// Flat function tools → Anthropic tools; built-in tools are refused.
fn translate_tools(provider: &str, body: &Map<String, Value>) -> Result<Vec<AnthropicTool>, GatewayError> {
    let list = super::function_tools(provider, body)?;
    let mut tools = Vec::with_capacity(list.len());
    for tool in list {
        // `strict` is not sent: Anthropic has no strict-schema flag for tool inputs; the schema
        // itself still goes out as `input_schema`.
        let input_schema = match tool.get("parameters") {
            Some(Value::Object(schema)) => Value::Object(schema.clone()),
            _ => json!({"type": "object", "properties": {}}),
        };
        tools.push(AnthropicTool {
            name: tool.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
            description: tool.get("description").and_then(Value::as_str).map(str::to_owned),
            input_schema,
        });
    }
    Ok(tools)
}

/// `tool_choice` and `parallel_tool_calls` → Anthropic's `tool_choice`.
fn translate_tool_choice(
    provider: &str,
    body: &Map<String, Value>,
) -> Result<Option<AnthropicToolChoice>, GatewayError> {
    let serial = body.get("parallel_tool_calls") == Some(&Value::Bool(false));
    let choice = |kind: &'static str, name: Option<String>| AnthropicToolChoice {
        kind,
        name,
        disable_parallel_tool_use: (serial && kind != "none").then_some(true),
    };
    Ok(Some(match tool_choice(provider, body)? {
        ToolChoice::Unset if serial => choice("auto", None),
        ToolChoice::Unset => return Ok(None),
        ToolChoice::Auto => choice("auto", None),
        ToolChoice::Required => choice("any", None),
        ToolChoice::None => choice("none", None),
        ToolChoice::Function(name) => choice("tool", Some(name)),
    }))
}

/// Builds the `system` blocks and the strictly alternating `messages`.
#[derive(Debug, Default)]
struct Conversation {
    system: Vec<AnthropicText>,
    messages: Vec<AnthropicMessage>,
    /// Thinking blocks of reasoning items, waiting for the assistant content they precede.
    thinking: Vec<AnthropicBlock>,
}

impl Conversation {
    fn system_text(&mut self, text: &str) {
        if !text.is_empty() {
            self.system.push(AnthropicText { kind: "text", text: text.to_owned() });
        }
    }

    /// Appends blocks to the conversation, merging consecutive turns of one role.
    fn push(&mut self, role: Role, blocks: Vec<AnthropicBlock>) {
        if blocks.is_empty() {
            return;
        }
        let blocks = match role {
            Role::Assistant => {
                let mut all = std::mem::take(&mut self.thinking);
                all.extend(blocks);
                all
            }
            Role::User => {
                // Thinking that no assistant content follows has nothing to attach to.
                self.thinking.clear();
                blocks
            }
        };
        match self.messages.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => self.messages.push(AnthropicMessage { role, content: blocks }),
        }
    }

    fn item(&mut self, provider: &str, index: usize, item: &Value) -> Result<(), GatewayError> {
        let param = format!("input[{index}]");
        let text = |field: &str| item.get(field).and_then(Value::as_str).unwrap_or_default().to_owned();
        match item.get("type").and_then(Value::as_str).unwrap_or("message") {
            "message" => {
                let content = item.get("content").unwrap_or(&Value::Null);
                match item.get("role").and_then(Value::as_str).unwrap_or("user") {
                    "system" | "developer" => {
                        for text in system_texts(provider, &param, content)? {
                            self.system_text(&text);
                        }
                    }
                    "assistant" => self.push(Role::Assistant, content_blocks(provider, &param, content)?),
                    _ => self.push(Role::User, content_blocks(provider, &param, content)?),
                }
            }
            "function_call" => {
                let input = arguments_object(&param, item.get("arguments"))?;
                self.push(
                    Role::Assistant,
                    vec![AnthropicBlock::ToolUse { id: text("call_id"), name: text("name"), input }],
                );
            }
            "function_call_output" => {
                let content = match item.get("output") {
                    Some(Value::Array(parts)) => {
                        AnthropicToolResult::Blocks(parts_blocks(provider, &format!("{param}.output"), parts)?)
                    }
                    _ => AnthropicToolResult::Text(text("output")),
                };
                self.push(Role::User, vec![AnthropicBlock::ToolResult { tool_use_id: text("call_id"), content }]);
            }
            "reasoning" => {
                // Only signed reasoning can go back: Anthropic verifies thinking by its signature.
                let state = text("encrypted_content");
                if let Some(data) = state.strip_prefix(REDACTED_PREFIX) {
                    self.thinking.push(AnthropicBlock::RedactedThinking { data: data.to_owned() });
                } else if !state.is_empty() {
                    self.thinking.push(AnthropicBlock::Thinking { thinking: summary_text(item), signature: state });
                }
            }
            "item_reference" => {
                return Err(unsupported(
                    "unsupported_parameter",
                    &param,
                    provider,
                    "`item_reference` input items (send the items themselves)",
                ))
            }
            other => {
                return Err(unsupported(
                    "unsupported_parameter",
                    &format!("{param}.type"),
                    provider,
                    &format!("`{other}` input items"),
                ))
            }
        }
        Ok(())
    }

    /// The `system` blocks and the messages, tool results first in each user turn (Anthropic
    /// wants them before any text of the turn).
    fn finish(mut self) -> (Vec<AnthropicText>, Vec<AnthropicMessage>) {
        for message in &mut self.messages {
            if message.role == Role::User {
                message.content.sort_by_key(|block| !matches!(block, AnthropicBlock::ToolResult { .. }));
            }
        }
        (self.system, self.messages)
    }
}

fn text_block(text: &str) -> Option<AnthropicBlock> {
    // Anthropic refuses empty text blocks.
    (!text.is_empty()).then(|| AnthropicBlock::Text { text: text.to_owned() })
}

/// The blocks of a user or assistant message's content (a string or parts).
fn content_blocks(provider: &str, param: &str, content: &Value) -> Result<Vec<AnthropicBlock>, GatewayError> {
    match content {
        Value::String(text) => Ok(text_block(text).into_iter().collect()),
        Value::Array(parts) => parts_blocks(provider, &format!("{param}.content"), parts),
        _ => Ok(Vec::new()),
    }
}

fn parts_blocks(provider: &str, param: &str, parts: &[Value]) -> Result<Vec<AnthropicBlock>, GatewayError> {
    let mut blocks = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let part_param = format!("{param}[{j}]");
        let field = |name: &str| part.get(name).and_then(Value::as_str);
        match field("type").unwrap_or_default() {
            "input_text" | "output_text" | "text" => blocks.extend(text_block(field("text").unwrap_or_default())),
            "refusal" => blocks.extend(text_block(field("refusal").unwrap_or_default())),
            "input_image" => blocks.push(image_block(provider, &part_param, part)?),
            "input_file" => blocks.push(document_block(provider, &part_param, part)?),
            other => {
                return Err(unsupported(
                    "unsupported_parameter",
                    &format!("{part_param}.type"),
                    provider,
                    &format!("`{other}` content parts"),
                ))
            }
        }
    }
    Ok(blocks)
}

/// The text of a system or developer message (text parts only).
fn system_texts(provider: &str, param: &str, content: &Value) -> Result<Vec<String>, GatewayError> {
    content_blocks(provider, param, content)?
        .into_iter()
        .map(|block| match block {
            AnthropicBlock::Text { text } => Ok(text),
            _ => Err(unsupported(
                "unsupported_parameter",
                &format!("{param}.content"),
                provider,
                "images or files in system or developer messages",
            )),
        })
        .collect()
}

fn image_block(provider: &str, param: &str, part: &Value) -> Result<AnthropicBlock, GatewayError> {
    let url = part.get("image_url").and_then(Value::as_str).unwrap_or_default();
    let source = if let Some((media_type, data)) = data_url(url) {
        AnthropicSource::Base64 { media_type: media_type.to_owned(), data: data.to_owned() }
    } else if url.starts_with("https://") || url.starts_with("http://") {
        AnthropicSource::Url { url: url.to_owned() }
    } else {
        return Err(unsupported(
            "unsupported_parameter",
            param,
            provider,
            "images other than base64 `data:` URLs or http(s) URLs (no `file_id`)",
        ));
    };
    Ok(AnthropicBlock::Image { source })
}

fn document_block(provider: &str, param: &str, part: &Value) -> Result<AnthropicBlock, GatewayError> {
    let field = |name: &str| part.get(name).and_then(Value::as_str).unwrap_or_default();
    let source = if let Some((media_type @ "application/pdf", data)) = data_url(field("file_data")) {
        AnthropicSource::Base64 { media_type: media_type.to_owned(), data: data.to_owned() }
    } else if field("file_url").starts_with("https://") || field("file_url").starts_with("http://") {
        AnthropicSource::Url { url: field("file_url").to_owned() }
    } else {
        return Err(unsupported(
            "unsupported_parameter",
            param,
            provider,
            "files other than PDFs as base64 `data:` URLs or http(s) `file_url`s (no `file_id`)",
        ));
    };
    Ok(AnthropicBlock::Document { source })
}

// ---------------------------------------------------------------------------------------------
// Response in

fn finish_reason(stop_reason: Option<&str>) -> FinishReason {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => FinishReason::Length,
        Some("refusal") => FinishReason::ContentFilter,
        // end_turn, stop_sequence, tool_use (the calls are the output), pause_turn.
        _ => FinishReason::Stop,
    }
}

/// An error message saying the prompt does not fit the model's context window.
fn is_context_overflow(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("prompt is too long") || message.contains("exceed context limit")
}

// ---------------------------------------------------------------------------------------------
// Stream in

/// Decodes one Messages stream. Usage: the input side comes with `message_start`, the output
/// count (cumulative) with `message_delta`; each event's counts replace the ones before.
#[derive(Debug, Default)]
struct AnthropicDecoder {
    usage: AnthropicUsage,
    stop_reason: Option<String>,
    /// Open tool blocks by index: the input given at their start, and whether deltas followed.
    tools: BTreeMap<u64, (Value, bool)>,
}

impl DeltaDecoder for AnthropicDecoder {
    fn decode(&mut self, event: SseEvent) -> Result<Vec<Delta>, StreamFault> {
        let mut value: Value = serde_json::from_str(&event.data)
            .map_err(|_| StreamFault::Malformed("anthropic event data is not JSON".to_owned()))?;
        if let (Value::Object(object), Some(name)) = (&mut value, event.event) {
            object.entry("type").or_insert(Value::String(name));
        }
        let parsed: AnthropicEvent = serde_json::from_value(value)
            .map_err(|e| StreamFault::Malformed(format!("anthropic event does not fit its type: {e}")))?;
        Ok(self.event(parsed))
    }
}

impl AnthropicDecoder {
    fn event(&mut self, event: AnthropicEvent) -> Vec<Delta> {
        match event {
            AnthropicEvent::MessageStart { message } => {
                self.usage.absorb(&message.usage);
                vec![Delta::Usage(self.usage.tokens())]
            }
            AnthropicEvent::ContentBlockStart { index, content_block } => match content_block {
                AnthropicContent::Text { text } => vec![Delta::Text(text)],
                AnthropicContent::Thinking { thinking, signature } => {
                    let mut deltas = Vec::new();
                    if !thinking.is_empty() {
                        deltas.push(Delta::Reasoning(thinking));
                    }
                    if !signature.is_empty() {
                        deltas.push(Delta::ReasoningState(signature));
                    }
                    deltas
                }
                AnthropicContent::RedactedThinking { data } => {
                    vec![Delta::ReasoningState(format!("{REDACTED_PREFIX}{data}"))]
                }
                AnthropicContent::ToolUse { id, name, input } => {
                    self.tools.insert(index, (input, false));
                    vec![Delta::ToolCallStart { index, call_id: id, name }]
                }
                AnthropicContent::Other => Vec::new(),
            },
            AnthropicEvent::ContentBlockDelta { index, delta } => match delta {
                AnthropicBlockDelta::TextDelta { text } => vec![Delta::Text(text)],
                AnthropicBlockDelta::InputJsonDelta { partial_json } => {
                    if let Some((_, streamed)) = self.tools.get_mut(&index) {
                        *streamed = true;
                    }
                    vec![Delta::ToolCallArguments { index, fragment: partial_json }]
                }
                AnthropicBlockDelta::ThinkingDelta { thinking } => vec![Delta::Reasoning(thinking)],
                AnthropicBlockDelta::SignatureDelta { signature } => vec![Delta::ReasoningState(signature)],
                AnthropicBlockDelta::Other => Vec::new(),
            },
            AnthropicEvent::ContentBlockStop { index } => match self.tools.remove(&index) {
                // A tool block whose input came whole at its start (no deltas followed).
                Some((Value::Object(input), false)) if !input.is_empty() => {
                    vec![Delta::ToolCallArguments { index, fragment: Value::Object(input).to_string() }]
                }
                _ => Vec::new(),
            },
            AnthropicEvent::MessageDelta { delta, usage } => {
                if delta.stop_reason.is_some() {
                    self.stop_reason = delta.stop_reason;
                }
                self.usage.absorb(&usage);
                vec![Delta::Usage(self.usage.tokens())]
            }
            AnthropicEvent::MessageStop => vec![Delta::Finish(finish_reason(self.stop_reason.as_deref()))],
            AnthropicEvent::Error { error } => {
                vec![Delta::Finish(FinishReason::Error(format!("{} ({})", error.message, error.kind)))]
            }
            // `ping` keeps the connection alive; new event types may appear and are skipped.
            AnthropicEvent::Ping | AnthropicEvent::Other => Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Wire types

#[derive(Debug, Serialize)]
struct AnthropicRequest {
    model: String,
    max_tokens: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    system: Vec<AnthropicText>,
    messages: Vec<AnthropicMessage>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<AnthropicTool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<AnthropicToolChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<Number>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<AnthropicThinking>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<AnthropicMetadata>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_tier: Option<&'static str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

#[derive(Debug, Serialize)]
struct AnthropicText {
    #[serde(rename = "type")]
    kind: &'static str,
    text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Role {
    User,
    Assistant,
}

#[derive(Debug, Serialize)]
struct AnthropicMessage {
    role: Role,
    content: Vec<AnthropicBlock>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AnthropicBlock {
    Text { text: String },
    Image { source: AnthropicSource },
    Document { source: AnthropicSource },
    ToolUse { id: String, name: String, input: Value },
    ToolResult { tool_use_id: String, content: AnthropicToolResult },
    Thinking { thinking: String, signature: String },
    RedactedThinking { data: String },
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AnthropicSource {
    Base64 { media_type: String, data: String },
    Url { url: String },
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum AnthropicToolResult {
    Text(String),
    Blocks(Vec<AnthropicBlock>),
}

#[derive(Debug, Serialize)]
struct AnthropicTool {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    input_schema: Value,
}

#[derive(Debug, Serialize)]
struct AnthropicToolChoice {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disable_parallel_tool_use: Option<bool>,
}

#[derive(Debug, Serialize)]
struct AnthropicThinking {
    #[serde(rename = "type")]
    kind: &'static str,
    budget_tokens: u64,
}

#[derive(Debug, Serialize)]
struct AnthropicMetadata {
    user_id: String,
}

#[derive(Debug, Deserialize)]
struct AnthropicResponse {
    #[serde(default)]
    content: Vec<AnthropicContent>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: AnthropicUsage,
}

/// A content block of an answer (also the `content_block` of `content_block_start`).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AnthropicContent {
    Text {
        #[serde(default)]
        text: String,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
        #[serde(default)]
        signature: String,
    },
    RedactedThinking {
        #[serde(default)]
        data: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    /// Server tool blocks and block types added later.
    #[serde(other)]
    Other,
}

/// Token counts; every field is optional because stream events carry only some of them.
#[derive(Debug, Default, Clone, Deserialize)]
struct AnthropicUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

impl AnthropicUsage {
    fn absorb(&mut self, newer: &AnthropicUsage) {
        let take = |old: &mut Option<u64>, new: Option<u64>| {
            if new.is_some() {
                *old = new;
            }
        };
        take(&mut self.input_tokens, newer.input_tokens);
        take(&mut self.cache_creation_input_tokens, newer.cache_creation_input_tokens);
        take(&mut self.cache_read_input_tokens, newer.cache_read_input_tokens);
        take(&mut self.output_tokens, newer.output_tokens);
    }

    /// Anthropic's `input_tokens` excludes cache reads and writes; the Responses count is the sum.
    /// Anthropic reports no separate count of thinking tokens.
    fn tokens(&self) -> TokenUsage {
        let read = self.cache_read_input_tokens.unwrap_or(0);
        TokenUsage {
            input_tokens: self
                .input_tokens
                .unwrap_or(0)
                .saturating_add(self.cache_creation_input_tokens.unwrap_or(0))
                .saturating_add(read),
            cached_input_tokens: read,
            output_tokens: self.output_tokens.unwrap_or(0),
            reasoning_tokens: 0,
            cache_write_tokens: self.cache_creation_input_tokens.unwrap_or(0),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AnthropicEvent {
    MessageStart {
        message: AnthropicStartMessage,
    },
    ContentBlockStart {
        index: u64,
        content_block: AnthropicContent,
    },
    ContentBlockDelta {
        index: u64,
        delta: AnthropicBlockDelta,
    },
    ContentBlockStop {
        index: u64,
    },
    MessageDelta {
        delta: AnthropicMessageDelta,
        #[serde(default)]
        usage: AnthropicUsage,
    },
    MessageStop,
    Ping,
    Error {
        error: AnthropicError,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct AnthropicStartMessage {
    #[serde(default)]
    usage: AnthropicUsage,
}

#[derive(Debug, Deserialize)]
struct AnthropicMessageDelta {
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AnthropicBlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    ThinkingDelta {
        thinking: String,
    },
    SignatureDelta {
        signature: String,
    },
    /// `citations_delta` and delta types added later.
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct AnthropicErrorBody {
    error: AnthropicError,
}

#[derive(Debug, Default, Deserialize)]
struct AnthropicError {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: String,
}

#[cfg(test)]
mod tests;
