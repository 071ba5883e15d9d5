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
    fn request(
        &self,
        provider: &ProviderConfig,
        row: &ModelPrice,
        body: &Map<String, Value>,
        stream: bool,
    ) -> Result<UpstreamRequest, GatewayError> {
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
mod tests {
    use super::*;
    use crate::config::{ProviderApi, Secret};
    use crate::providers::assemble::{Assembler, ResponseContext};
    use crate::sse::SseParser;

    fn provider() -> ProviderConfig {
        ProviderConfig {
            name: "anthropic".to_owned(),
            api: ProviderApi::Anthropic,
            base_url: "https://api.anthropic.com/".to_owned(),
            api_key: Some(Secret::new("sk-ant-test")),
            api_key_secret_arn: None,
            token_delay: std::time::Duration::ZERO,
        }
    }

    fn row(max_output_tokens: Option<u64>) -> ModelPrice {
        ModelPrice {
            model: "anthropic/claude-sonnet-4".to_owned(),
            provider: "anthropic".to_owned(),
            upstream_model: "claude-sonnet-4-20250514".to_owned(),
            input_usd_per_mtok: None,
            output_usd_per_mtok: None,
            cached_input_usd_per_mtok: None,
            context_length: Some(200_000),
            max_output_tokens,
            is_free: false,
            is_default: true,
            enabled: true,
            priority: None,
        }
    }

    fn object(body: Value) -> Map<String, Value> {
        body.as_object().cloned().unwrap()
    }

    fn translate_with(row: &ModelPrice, body: Value, stream: bool) -> Result<Value, GatewayError> {
        let request = Anthropic.request(&provider(), row, &object(body), stream)?;
        Ok(serde_json::from_slice(&request.body).unwrap())
    }

    fn translate(body: Value) -> Result<Value, GatewayError> {
        translate_with(&row(Some(16_384)), body, false)
    }

    fn user_text(text: &str) -> Value {
        json!({"role": "user", "content": [{"type": "text", "text": text}]})
    }

    /// JSON pointers into a Messages request and the values expected there.
    type Pointers = Vec<(&'static str, Value)>;

    /// Each case: a Responses body and the JSON pointers of the Messages request it must produce
    /// (`Value::Null` = the field is absent).
    #[test]
    fn request_translation_table() {
        let weather_schema =
            json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
        let call = |id: &str, city: &str| {
            json!({"type": "function_call", "id": format!("fc_{id}"), "call_id": id, "name": "get_weather",
                "arguments": format!("{{\"city\":\"{city}\"}}"), "status": "completed"})
        };
        let output = |id: &str, text: &str| json!({"type": "function_call_output", "call_id": id, "output": text});
        let tool_use = |id: &str, city: &str| json!({"type": "tool_use", "id": id, "name": "get_weather", "input": {"city": city}});
        let tool_result = |id: &str, text: &str| json!({"type": "tool_result", "tool_use_id": id, "content": text});
        let tools = json!([{"type": "function", "name": "get_weather", "parameters": weather_schema}]);
        let cases: Vec<(&str, Value, Pointers)> = vec![
            (
                "a string input is one user text message; the row gives max_tokens",
                json!({"input": "hi"}),
                vec![
                    ("/model", json!("claude-sonnet-4-20250514")),
                    ("/max_tokens", json!(16_384)),
                    ("/messages", json!([user_text("hi")])),
                    ("/system", Value::Null),
                    ("/stream", Value::Null),
                    ("/tools", Value::Null),
                    ("/tool_choice", Value::Null),
                    ("/thinking", Value::Null),
                    ("/temperature", Value::Null),
                ],
            ),
            (
                "max_output_tokens wins over the row",
                json!({"input": "hi", "max_output_tokens": 300}),
                vec![("/max_tokens", json!(300))],
            ),
            (
                "instructions, system and developer messages join `system` in order",
                json!({"instructions": "Be brief.", "input": [
                    {"role": "system", "content": "Sys one."},
                    {"role": "user", "content": "hi"},
                    {"role": "developer", "content": [{"type": "input_text", "text": "Dev two."}]}
                ]}),
                vec![
                    (
                        "/system",
                        json!([{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Sys one."},
                            {"type": "text", "text": "Dev two."}]),
                    ),
                    ("/messages", json!([user_text("hi")])),
                ],
            ),
            (
                "consecutive turns of one role merge; empty text is skipped",
                json!({"input": [
                    {"role": "user", "content": "a"},
                    {"role": "user", "content": [{"type": "input_text", "text": "b"}, {"type": "input_text", "text": ""}]},
                    {"role": "assistant", "content": [{"type": "output_text", "text": "c", "annotations": []}]},
                    {"type": "message", "role": "assistant", "content": "d"},
                    {"role": "assistant", "content": ""},
                    {"role": "user", "content": "e"}
                ]}),
                vec![(
                    "/messages",
                    json!([
                        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                        {"role": "assistant", "content": [{"type": "text", "text": "c"}, {"type": "text", "text": "d"}]},
                        user_text("e")
                    ]),
                )],
            ),
            (
                "images: data URLs become base64 sources, http(s) URLs url sources",
                json!({"input": [{"role": "user", "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="},
                    {"type": "input_image", "image_url": "https://example.com/cat.jpg", "detail": "auto"}
                ]}]}),
                vec![(
                    "/messages/0/content",
                    json!([
                        {"type": "text", "text": "What is this?"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
                    ]),
                )],
            ),
            (
                "a PDF file part becomes a document block",
                json!({"input": [{"role": "user", "content": [
                    {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}
                ]}]}),
                vec![(
                    "/messages/0/content/0",
                    json!({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}),
                )],
            ),
            (
                "function round trip: call → tool_use in the assistant turn, output → tool_result",
                json!({"input": [
                    {"role": "user", "content": "Weather in Paris?"},
                    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me check."}]},
                    call("toolu_01", "Paris"),
                    output("toolu_01", "18C and sunny")
                ], "tools": tools}),
                vec![(
                    "/messages",
                    json!([
                        user_text("Weather in Paris?"),
                        {"role": "assistant", "content": [{"type": "text", "text": "Let me check."}, tool_use("toolu_01", "Paris")]},
                        {"role": "user", "content": [tool_result("toolu_01", "18C and sunny")]}
                    ]),
                )],
            ),
            (
                "parallel calls share one assistant turn, their outputs one user turn",
                json!({"input": [
                    {"role": "user", "content": "Paris and London?"},
                    call("toolu_a", "Paris"), call("toolu_b", "London"),
                    output("toolu_a", "18C"), output("toolu_b", "12C"),
                    {"role": "user", "content": "Thanks, compare them."}
                ]}),
                vec![(
                    "/messages",
                    json!([
                        user_text("Paris and London?"),
                        {"role": "assistant", "content": [tool_use("toolu_a", "Paris"), tool_use("toolu_b", "London")]},
                        {"role": "user", "content": [tool_result("toolu_a", "18C"), tool_result("toolu_b", "12C"),
                            {"type": "text", "text": "Thanks, compare them."}]}
                    ]),
                )],
            ),
            (
                "tool results come first in a user turn",
                json!({"input": [
                    {"role": "user", "content": "q"}, call("toolu_a", "Paris"),
                    {"role": "user", "content": "extra"}, output("toolu_a", "18C")
                ]}),
                vec![(
                    "/messages/2/content",
                    json!([tool_result("toolu_a", "18C"), {"type": "text", "text": "extra"}]),
                )],
            ),
            (
                "empty arguments become an empty input object; output parts become blocks",
                json!({"input": [
                    {"role": "user", "content": "q"},
                    {"type": "function_call", "call_id": "toolu_x", "name": "now", "arguments": ""},
                    {"type": "function_call_output", "call_id": "toolu_x", "output": [
                        {"type": "input_text", "text": "noon"},
                        {"type": "input_image", "image_url": "https://example.com/clock.png"}
                    ]}
                ]}),
                vec![
                    ("/messages/1/content/0", json!({"type": "tool_use", "id": "toolu_x", "name": "now", "input": {}})),
                    (
                        "/messages/2/content/0/content",
                        json!([{"type": "text", "text": "noon"},
                            {"type": "image", "source": {"type": "url", "url": "https://example.com/clock.png"}}]),
                    ),
                ],
            ),
            (
                "signed reasoning goes back as a thinking block at the start of its assistant turn",
                json!({"input": [
                    {"role": "user", "content": "Weather in Paris?"},
                    {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Use the tool."}],
                        "encrypted_content": "EqQBsig"},
                    call("toolu_01", "Paris"),
                    output("toolu_01", "18C")
                ]}),
                vec![(
                    "/messages/1",
                    json!({"role": "assistant", "content": [
                        {"type": "thinking", "thinking": "Use the tool.", "signature": "EqQBsig"},
                        tool_use("toolu_01", "Paris")
                    ]}),
                )],
            ),
            (
                "unsigned reasoning is dropped; redacted state goes back as redacted_thinking",
                json!({"input": [
                    {"role": "user", "content": "q"},
                    {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "unsigned"}]},
                    {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "redacted_thinking:EmwKAhgBEgy3va"},
                    {"role": "assistant", "content": "ok"}
                ]}),
                vec![(
                    "/messages/1",
                    json!({"role": "assistant", "content": [
                        {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va"}, {"type": "text", "text": "ok"}
                    ]}),
                )],
            ),
            (
                "reasoning that no assistant content follows is dropped",
                json!({"input": [
                    {"role": "user", "content": "a"},
                    {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "sig"},
                    {"role": "user", "content": "b"}
                ]}),
                vec![(
                    "/messages",
                    json!([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]),
                )],
            ),
            (
                "flat function tools; `strict` is not sent; no parameters → an empty object schema",
                json!({"input": "hi", "tools": [
                    {"type": "function", "name": "get_weather", "description": "Weather of a city", "parameters": weather_schema, "strict": true},
                    {"type": "function", "name": "noop"}
                ]}),
                vec![
                    (
                        "/tools",
                        json!([
                            {"name": "get_weather", "description": "Weather of a city", "input_schema": weather_schema},
                            {"name": "noop", "input_schema": {"type": "object", "properties": {}}}
                        ]),
                    ),
                    ("/tool_choice", Value::Null),
                ],
            ),
            (
                "tool_choice auto",
                json!({"input": "hi", "tools": tools, "tool_choice": "auto"}),
                vec![("/tool_choice", json!({"type": "auto"}))],
            ),
            (
                "tool_choice required → any",
                json!({"input": "hi", "tools": tools, "tool_choice": "required"}),
                vec![("/tool_choice", json!({"type": "any"}))],
            ),
            (
                "tool_choice none",
                json!({"input": "hi", "tools": tools, "tool_choice": "none"}),
                vec![("/tool_choice", json!({"type": "none"}))],
            ),
            (
                "tool_choice function → tool",
                json!({"input": "hi", "tools": tools, "tool_choice": {"type": "function", "name": "get_weather"}}),
                vec![("/tool_choice", json!({"type": "tool", "name": "get_weather"}))],
            ),
            (
                "parallel_tool_calls false → disable_parallel_tool_use on auto",
                json!({"input": "hi", "tools": tools, "parallel_tool_calls": false}),
                vec![("/tool_choice", json!({"type": "auto", "disable_parallel_tool_use": true}))],
            ),
            (
                "parallel_tool_calls false with required",
                json!({"input": "hi", "tools": tools, "tool_choice": "required", "parallel_tool_calls": false}),
                vec![("/tool_choice", json!({"type": "any", "disable_parallel_tool_use": true}))],
            ),
            (
                "parallel_tool_calls false with none",
                json!({"input": "hi", "tools": tools, "tool_choice": "none", "parallel_tool_calls": false}),
                vec![("/tool_choice", json!({"type": "none"}))],
            ),
            (
                "tool_choice without tools is not sent",
                json!({"input": "hi", "tool_choice": "required"}),
                vec![("/tool_choice", Value::Null)],
            ),
            (
                "sampling parameters and stop sequences",
                json!({"input": "hi", "temperature": 0.5, "top_p": 0.9, "stop": "END"}),
                vec![("/temperature", json!(0.5)), ("/top_p", json!(0.9)), ("/stop_sequences", json!(["END"]))],
            ),
            (
                "stop as a list",
                json!({"input": "hi", "stop": ["a", "b"]}),
                vec![("/stop_sequences", json!(["a", "b"]))],
            ),
            ("temperature 1 is allowed", json!({"input": "hi", "temperature": 1}), vec![("/temperature", json!(1))]),
            (
                "reasoning effort low → a 1024-token thinking budget",
                json!({"input": "hi", "reasoning": {"effort": "low"}}),
                vec![("/thinking", json!({"type": "enabled", "budget_tokens": 1024})), ("/max_tokens", json!(16_384))],
            ),
            (
                "effort minimal",
                json!({"input": "hi", "reasoning": {"effort": "minimal"}}),
                vec![("/thinking/budget_tokens", json!(1024))],
            ),
            (
                "effort medium",
                json!({"input": "hi", "reasoning": {"effort": "medium"}}),
                vec![("/thinking/budget_tokens", json!(4096))],
            ),
            (
                "effort high raises max_tokens above the budget",
                json!({"input": "hi", "reasoning": {"effort": "high"}, "max_output_tokens": 2000}),
                vec![("/thinking/budget_tokens", json!(16_384)), ("/max_tokens", json!(18_384))],
            ),
            (
                "effort none → no thinking",
                json!({"input": "hi", "reasoning": {"effort": "none"}}),
                vec![("/thinking", Value::Null)],
            ),
            (
                "effort xhigh",
                json!({"input": "hi", "reasoning": {"effort": "xhigh"}}),
                vec![("/thinking/budget_tokens", json!(32_768))],
            ),
            (
                "effort max → the largest budget that leaves a 4096-token answer in 64k",
                json!({"input": "hi", "reasoning": {"effort": "max"}, "max_output_tokens": 4096}),
                vec![("/thinking/budget_tokens", json!(59_904)), ("/max_tokens", json!(64_000))],
            ),
            (
                "safety_identifier → metadata.user_id",
                json!({"input": "hi", "safety_identifier": "sid-3f9a"}),
                vec![("/metadata", json!({"user_id": "sid-3f9a"})), ("/safety_identifier", Value::Null)],
            ),
            (
                "user is preferred to safety_identifier",
                json!({"input": "hi", "user": "u-1", "safety_identifier": "sid-3f9a"}),
                vec![("/metadata", json!({"user_id": "u-1"}))],
            ),
            (
                "service_tier auto is Anthropic's own default; default is standard_only",
                json!({"input": "hi", "service_tier": "auto"}),
                vec![("/service_tier", Value::Null)],
            ),
            (
                "service_tier default",
                json!({"input": "hi", "service_tier": "default"}),
                vec![("/service_tier", json!("standard_only"))],
            ),
            (
                "fields Anthropic has no use for are not sent",
                json!({"input": "hi", "store": true, "metadata": {"a": "b"}, "truncation": "disabled",
                    "include": ["reasoning.encrypted_content"], "prompt_cache_key": "k", "top_logprobs": 0,
                    "stream_options": {"include_obfuscation": true}, "text": {"verbosity": "medium"}}),
                vec![
                    ("/store", Value::Null),
                    ("/metadata", Value::Null),
                    ("/truncation", Value::Null),
                    ("/include", Value::Null),
                    ("/prompt_cache_key", Value::Null),
                    ("/top_logprobs", Value::Null),
                    ("/stream_options", Value::Null),
                    ("/text", Value::Null),
                ],
            ),
        ];
        for (name, body, expected) in cases {
            let request = translate(body).unwrap_or_else(|e| panic!("{name}: refused: {e:?}"));
            for (pointer, want) in expected {
                let got = request.pointer(pointer).cloned().unwrap_or(Value::Null);
                assert_eq!(got, want, "{name}: {pointer} in {request:#}");
            }
        }
    }

    #[test]
    fn max_tokens_defaults_to_4096_without_a_row_limit() {
        let request = translate_with(&row(None), json!({"input": "hi"}), false).unwrap();
        assert_eq!(request["max_tokens"], 4096);
        let request =
            translate_with(&row(None), json!({"input": "hi", "reasoning": {"effort": "medium"}}), false).unwrap();
        assert_eq!(request["max_tokens"], 8192, "raised above the 4096 budget");
    }

    #[test]
    fn structured_output_is_asked_for_in_the_system_prompt() {
        let schema = json!({"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]});
        let request = translate(json!({"input": "hi", "instructions": "Be exact.",
            "text": {"format": {"type": "json_schema", "name": "result", "schema": schema, "strict": true}}}))
        .unwrap();
        assert_eq!(request["system"][0]["text"], "Be exact.");
        let instruction = request["system"][1]["text"].as_str().unwrap();
        assert!(instruction.contains("JSON Schema"), "{instruction}");
        assert!(instruction.contains("`result`"), "{instruction}");
        assert!(instruction.ends_with(&schema.to_string()), "{instruction}");
        assert!(request.get("response_format").is_none() && request.get("text").is_none());
        let request = translate(json!({"input": "hi", "text": {"format": {"type": "json_object"}}})).unwrap();
        assert!(request["system"][0]["text"].as_str().unwrap().contains("JSON object"));
        let request = translate(json!({"input": "hi", "text": {"format": {"type": "text"}}})).unwrap();
        assert!(request.get("system").is_none());
    }

    #[test]
    fn url_headers_and_stream_flag() {
        let request = Anthropic.request(&provider(), &row(None), &object(json!({"input": "hi"})), true).unwrap();
        assert_eq!(request.url, "https://api.anthropic.com/v1/messages");
        let header = |name: &str| request.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
        assert_eq!(header("x-api-key"), Some("sk-ant-test"));
        assert_eq!(header("anthropic-version"), Some("2023-06-01"));
        assert_eq!(header("authorization"), None);
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["stream"], true);
        let mut keyless = provider();
        keyless.api_key = None;
        let err = Anthropic.request(&keyless, &row(None), &object(json!({"input": "hi"})), false).unwrap_err();
        assert_eq!(err.status(), 503);
    }

    #[test]
    fn refusals_name_the_provider_and_the_field() {
        let mut cases: Vec<(Value, &str, &str)> = crate::request::BUILTIN_TOOLS
            .iter()
            .map(|kind| (json!({"input": "hi", "tools": [{"type": kind}]}), "unsupported_tool", "tools[0].type"))
            .collect();
        cases.extend([
            (json!({"input": "hi", "seed": 7}), "unsupported_parameter", "seed"),
            (json!({"input": "hi", "top_logprobs": 2}), "unsupported_parameter", "top_logprobs"),
            (json!({"input": "hi", "temperature": 1.5}), "unsupported_parameter", "temperature"),
            (json!({"input": "hi", "max_tool_calls": 1}), "unsupported_parameter", "max_tool_calls"),
            (json!({"input": "hi", "truncation": "auto"}), "unsupported_parameter", "truncation"),
            (json!({"input": "hi", "include": ["message.output_text.logprobs"]}), "unsupported_parameter", "include[0]"),
            (json!({"input": "hi", "text": {"verbosity": "low"}}), "unsupported_parameter", "text.verbosity"),
            (json!({"input": "hi", "service_tier": "flex"}), "unsupported_parameter", "service_tier"),
            (json!({"input": [{"type": "item_reference", "id": "msg_1"}]}), "unsupported_parameter", "input[0]"),
            (json!({"input": [{"type": "web_search_call", "id": "ws_1"}]}), "unsupported_parameter", "input[0].type"),
            (
                json!({"input": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
                "unsupported_parameter",
                "input[0].content[0].type",
            ),
            (
                json!({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]}),
                "unsupported_parameter",
                "input[0].content[0]",
            ),
            (
                json!({"input": [{"role": "user", "content": "q"},
                    {"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}]}),
                "invalid_value",
                "input[1].arguments",
            ),
            (json!({"input": [{"role": "system", "content": "only a system prompt"}]}), "invalid_value", "input"),
            (
                json!({"input": "hi", "tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "web_search_preview"}}),
                "unsupported_tool",
                "tool_choice",
            ),
            (json!({"input": "hi", "stop": 3}), "invalid_type", "stop"),
        ]);
        for (body, code, param) in cases {
            let err = translate(body.clone()).expect_err(&format!("refused: {body}"));
            assert_eq!(err.status(), 400, "{body}");
            let envelope = err.body();
            assert_eq!(envelope["code"], code, "{body}: {envelope}");
            assert_eq!(envelope["param"], param, "{body}: {envelope}");
            if code.starts_with("unsupported") {
                assert!(envelope["message"].as_str().unwrap().contains("`anthropic`"), "{envelope}");
            }
        }
    }

    fn usage(input: u64, cached: u64, output: u64) -> Delta {
        written(input, cached, 0, output)
    }

    /// Usage with `cache_creation_input_tokens` (`writes`), which the input count includes.
    fn written(input: u64, cached: u64, writes: u64, output: u64) -> Delta {
        Delta::Usage(TokenUsage {
            input_tokens: input,
            cached_input_tokens: cached,
            output_tokens: output,
            cache_write_tokens: writes,
            ..TokenUsage::default()
        })
    }

    #[test]
    fn response_blocks_become_deltas_in_order() {
        let body = json!({
            "id": "msg_01Aq9w938a90dw8q", "type": "message", "role": "assistant", "model": "claude-sonnet-4-20250514",
            "content": [
                {"type": "thinking", "thinking": "The user wants weather.", "signature": "EqQBCgIYAhIM"},
                {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"},
                {"type": "text", "text": "I'll check the weather."},
                {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather", "input": {"location": "San Francisco, CA"}},
                {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 2095, "output_tokens": 503, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 2000,
                "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 0}, "service_tier": "standard"}
        });
        let deltas = Anthropic.response(body.to_string().as_bytes()).unwrap();
        assert_eq!(
            deltas,
            vec![
                Delta::Reasoning("The user wants weather.".into()),
                Delta::ReasoningState("EqQBCgIYAhIM".into()),
                Delta::ReasoningState("redacted_thinking:EmwKAhgBEgy3va3pzix".into()),
                Delta::Text("I'll check the weather.".into()),
                Delta::ToolCallStart {
                    index: 3,
                    call_id: "toolu_01A09q90qw90lq917835lq9".into(),
                    name: "get_weather".into()
                },
                Delta::ToolCallArguments { index: 3, fragment: r#"{"location":"San Francisco, CA"}"#.into() },
                written(4195, 2000, 100, 503),
                Delta::Finish(FinishReason::Stop),
            ]
        );
    }

    #[test]
    fn stop_reasons_map_to_finish_reasons() {
        for (stop, want) in [
            ("end_turn", FinishReason::Stop),
            ("stop_sequence", FinishReason::Stop),
            ("tool_use", FinishReason::Stop),
            ("pause_turn", FinishReason::Stop),
            ("max_tokens", FinishReason::Length),
            ("model_context_window_exceeded", FinishReason::Length),
            ("refusal", FinishReason::ContentFilter),
        ] {
            let body = json!({"type": "message", "content": [{"type": "text", "text": "x"}], "stop_reason": stop,
                "usage": {"input_tokens": 1, "output_tokens": 1}});
            let deltas = Anthropic.response(body.to_string().as_bytes()).unwrap();
            assert_eq!(deltas.last(), Some(&Delta::Finish(want)), "{stop}");
        }
        assert_eq!(Anthropic.response(b"<html>").unwrap_err().status(), 502);
    }

    /// Decodes a recorded stream, cut into `chunk`-byte network pieces.
    fn decode(transcript: &str, chunk: usize) -> Result<Vec<Delta>, StreamFault> {
        let mut parser = SseParser::new();
        let mut decoder = Anthropic.decoder();
        let mut deltas = Vec::new();
        for piece in transcript.as_bytes().chunks(chunk) {
            for event in parser.feed(piece)? {
                deltas.extend(decoder.decode(event)?);
            }
        }
        if let Some(event) = parser.finish()? {
            deltas.extend(decoder.decode(event)?);
        }
        deltas.extend(decoder.finish());
        Ok(deltas)
    }

    /// The final Responses object the assembler builds from a recorded stream.
    fn assembled(transcript: &str) -> Value {
        let mut assembler = Assembler::new(ResponseContext::new("anthropic/claude-sonnet-4", &Map::new()));
        let mut last = Vec::new();
        for delta in decode(transcript, 7).unwrap() {
            let events = assembler.push(delta);
            if !events.is_empty() {
                last = events;
            }
        }
        last.pop().unwrap()["response"].clone()
    }

    const TEXT: &str = include_str!("../../../tests/fixtures/anthropic-text.sse");
    const TOOL_USE: &str = include_str!("../../../tests/fixtures/anthropic-tool-use.sse");
    const THINKING: &str = include_str!("../../../tests/fixtures/anthropic-thinking.sse");
    const ERROR: &str = include_str!("../../../tests/fixtures/anthropic-error.sse");

    #[test]
    fn stream_text_deltas_and_usage() {
        let deltas = decode(TEXT, 1 << 20).unwrap();
        assert_eq!(
            deltas,
            vec![
                written(135, 100, 10, 1),
                Delta::Text(String::new()),
                Delta::Text("Hello".into()),
                Delta::Text(" from Claude".into()),
                written(135, 100, 10, 15),
                Delta::Finish(FinishReason::Stop),
            ]
        );
        assert_eq!(decode(TEXT, 7).unwrap(), deltas, "network chunking does not matter");
        let response = assembled(TEXT);
        assert_eq!(response["status"], "completed");
        assert_eq!(response["output"][0]["content"][0]["text"], "Hello from Claude");
        assert_eq!(response["usage"]["input_tokens"], 135);
        assert_eq!(response["usage"]["input_tokens_details"]["cached_tokens"], 100);
        assert_eq!(response["usage"]["output_tokens"], 15);
    }

    #[test]
    fn stream_tool_use_arguments_arrive_in_fragments() {
        let deltas = decode(TOOL_USE, 1 << 20).unwrap();
        let fragments: String = deltas
            .iter()
            .filter_map(|d| match d {
                Delta::ToolCallArguments { index: 1, fragment } => Some(fragment.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(fragments, r#"{"location": "San Francisco, CA", "unit": "fahrenheit"}"#);
        let response = assembled(TOOL_USE);
        assert_eq!(response["status"], "completed");
        let output = response["output"].as_array().unwrap();
        assert_eq!(output.len(), 2);
        assert_eq!(output[0]["content"][0]["text"], "Okay, let's check the weather for San Francisco, CA:");
        assert_eq!(output[1]["type"], "function_call");
        assert_eq!(output[1]["call_id"], "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
        assert_eq!(output[1]["name"], "get_weather");
        assert_eq!(output[1]["arguments"], fragments);
        assert_eq!(response["usage"]["output_tokens"], 89);
    }

    #[test]
    fn stream_thinking_becomes_a_reasoning_item_with_its_signature() {
        let response = assembled(THINKING);
        let output = response["output"].as_array().unwrap();
        assert_eq!(output[0]["type"], "reasoning");
        assert_eq!(
            output[0]["summary"][0]["text"],
            "I need to find the GCD of 1071 and 462 using the Euclidean algorithm.\n\n1071 = 2 × 462 + 147\n462 = 3 × 147 + 21\n147 = 7 × 21 + 0"
        );
        assert!(output[0]["encrypted_content"]
            .as_str()
            .unwrap()
            .starts_with("EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl"));
        assert_eq!(output[1]["content"][0]["text"], "The greatest common divisor of 1071 and 462 is **21**.");
        assert_eq!(response["usage"]["output_tokens"], 142);
    }

    #[test]
    fn stream_error_event_fails_the_response() {
        let deltas = decode(ERROR, 1 << 20).unwrap();
        assert_eq!(deltas.last(), Some(&Delta::Finish(FinishReason::Error("Overloaded (overloaded_error)".into()))));
        let response = assembled(ERROR);
        assert_eq!(response["status"], "failed");
        assert_eq!(response["output"][0]["content"][0]["text"], "Once upon");
        assert_eq!(response["usage"]["input_tokens"], 12);
    }

    #[test]
    fn stream_edge_cases() {
        // A length stop, a tool input given whole at its block's start, usage in message_delta
        // carrying the input side too, unknown events and deltas skipped.
        let transcript = [
            r#"{"type":"message_start","message":{"usage":{"input_tokens":5,"output_tokens":1}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_9","name":"f","input":{"a":1}}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"citations_delta","citation":{}}}"#,
            r#"{"type":"brand_new_event"}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"input_tokens":5,"cache_read_input_tokens":20,"output_tokens":9}}"#,
            r#"{"type":"message_stop"}"#,
        ]
        .iter()
        .map(|data| format!("data: {data}\n\n"))
        .collect::<String>();
        let deltas = decode(&transcript, 1 << 20).unwrap();
        assert_eq!(
            deltas,
            vec![
                usage(5, 0, 1),
                Delta::ToolCallStart { index: 0, call_id: "toolu_9".into(), name: "f".into() },
                Delta::ToolCallArguments { index: 0, fragment: r#"{"a":1}"#.into() },
                Delta::Text(String::new()),
                usage(25, 20, 9),
                Delta::Finish(FinishReason::Length),
            ]
        );
        let malformed = decode("event: content_block_delta\ndata: {not json\n\n", 64);
        assert!(matches!(malformed, Err(StreamFault::Malformed(_))));
        let wrong_shape = decode("data: {\"type\":\"content_block_delta\",\"index\":\"x\"}\n\n", 64);
        assert!(matches!(wrong_shape, Err(StreamFault::Malformed(_))));
    }

    #[test]
    fn error_mapping_table() {
        let envelope = |kind: &str, message: &str| {
            json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}).to_string()
        };
        let mut retry = HeaderMap::new();
        retry.insert("retry-after", http::HeaderValue::from_static("7"));
        let none = HeaderMap::new();
        // (status, headers, body) in; (status, type, code, retry-after) out.
        type Row<'a> = (u16, &'a HeaderMap, String, u16, &'a str, &'a str, Option<u64>);
        let cases: Vec<Row> = vec![
            (
                400,
                &none,
                envelope("invalid_request_error", "max_tokens: Field required"),
                400,
                "invalid_request_error",
                "invalid_request_error",
                None,
            ),
            (
                400,
                &none,
                envelope("invalid_request_error", "prompt is too long: 208656 tokens > 200000 maximum"),
                400,
                "invalid_request_error",
                "context_length_exceeded",
                None,
            ),
            // The provider refused Mesh's own credential: the gateway's fault, not the caller's.
            (
                401,
                &none,
                envelope("authentication_error", "invalid x-api-key"),
                502,
                "api_error",
                "upstream_error",
                None,
            ),
            (
                403,
                &none,
                envelope("permission_error", "Your API key does not have permission to use the specified resource."),
                502,
                "api_error",
                "upstream_error",
                None,
            ),
            (
                404,
                &none,
                envelope("not_found_error", "model: claude-nope"),
                404,
                "not_found_error",
                "not_found_error",
                None,
            ),
            (
                413,
                &none,
                envelope("request_too_large", "Request exceeds the maximum allowed number of bytes."),
                413,
                "request_too_large",
                "request_too_large",
                None,
            ),
            (
                429,
                &retry,
                envelope("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
                429,
                "rate_limit_error",
                "rate_limit_error",
                Some(7),
            ),
            (529, &none, envelope("overloaded_error", "Overloaded"), 502, "api_error", "upstream_error", None),
            (500, &none, envelope("api_error", "Internal server error"), 502, "api_error", "upstream_error", None),
        ];
        for (status, headers, body, want_status, want_type, want_code, want_retry) in cases {
            let err = Anthropic.error("anthropic", status, headers, body.as_bytes());
            assert_eq!(err.status(), want_status, "{body}");
            let error = err.body();
            assert_eq!(error["type"], want_type, "{body}");
            assert_eq!(error["code"], want_code, "{body}");
            assert_eq!(error.get("retry_after_seconds").and_then(Value::as_u64), want_retry, "{body}");
            if want_status < 500 {
                let message: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(error["message"], message["error"]["message"], "the provider's words are kept");
            }
        }
        let too_long = Anthropic.error(
            "anthropic",
            400,
            &none,
            envelope("invalid_request_error", "prompt is too long: 1 > 0").as_bytes(),
        );
        assert_eq!(too_long.body()["param"], "input");
        let html = Anthropic.error("anthropic", 413, &none, b"<html>413 Request Entity Too Large</html>");
        assert_eq!(html.status(), 413);
        assert!(html.body()["message"].as_str().unwrap().contains("`anthropic`"));
    }
}
