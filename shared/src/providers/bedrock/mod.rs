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
//! Pure translations in the order request out, response in, stream in, error in; the Converse wire
//! types close the file. Reasoning round trip as with the `anthropic` API: a `reasoningText` block
//! becomes a reasoning item whose `encrypted_content` is the block's signature, `redactedContent`
//! is kept behind [`REDACTED_PREFIX`].
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
    arguments_object, data_url, default_verbosity_only, end_user, newer_fields, number, standard_tier_only,
    stop_sequences, summary_text, tool_arguments, tool_choice, ToolChoice,
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

// ---------------------------------------------------------------------------------------------
// Request out

fn build_request(
    provider: &str,
    s3_buckets: &[String],
    row: &ModelPrice,
    body: &Map<String, Value>,
) -> Result<ConverseRequest, GatewayError> {
    refuse_unsupported(provider, body)?;
    let mut conversation = Conversation::default();
    if let Some(Value::String(instructions)) = body.get("instructions") {
        conversation.system_text(instructions);
    }
    match body.get("input") {
        Some(Value::String(text)) => conversation.push(Role::User, text_block(text).into_iter().collect()),
        Some(Value::Array(items)) => {
            for (index, item) in items.iter().enumerate() {
                conversation.item(provider, s3_buckets, index, item)?;
            }
        }
        _ => {}
    }
    let (output_config, instruction) = output_format(body);
    if let Some(instruction) = instruction {
        conversation.system_text(&instruction);
    }
    let history_tools = std::mem::take(&mut conversation.history_tools);
    let has_tool_blocks = conversation.has_tool_blocks;
    let (system, messages) = conversation.finish();
    if messages.is_empty() {
        return Err(GatewayError::invalid(
            "invalid_value",
            "input",
            format!("The provider `{provider}` needs at least one user or assistant message in `input`."),
        ));
    }
    let tool_config = tool_config(provider, body, has_tool_blocks, &history_tools)?;
    let mut max_tokens =
        body.get("max_output_tokens").and_then(Value::as_u64).or(row.max_output_tokens).unwrap_or(DEFAULT_MAX_TOKENS);
    let mut additional = Map::new();
    if let Some(effort) = body.get("reasoning").and_then(|r| r.get("effort")).and_then(Value::as_str) {
        if let Some(budget) = thinking_budget(provider, &row.upstream_model, effort)? {
            // Claude counts thinking inside `maxTokens`: the limit meant for the answer stays on top.
            if max_tokens <= budget {
                max_tokens += budget;
            }
            additional.insert("thinking".to_owned(), json!({"type": "enabled", "budget_tokens": budget}));
        }
    }
    let request_metadata =
        end_user(body).map(|user| BTreeMap::from([("user".to_owned(), metadata_value(user))])).unwrap_or_default();
    Ok(ConverseRequest {
        messages,
        system,
        inference_config: InferenceConfig {
            max_tokens,
            temperature: number(body, "temperature"),
            top_p: number(body, "top_p"),
            stop_sequences: stop_sequences(body)?,
        },
        tool_config,
        output_config,
        additional_model_request_fields: (!additional.is_empty()).then_some(Value::Object(additional)),
        request_metadata,
    })
}

/// A `requestMetadata` value: Bedrock takes at most 256 characters of
/// `[a-zA-Z0-9\s:_@$#=/+,-.]`; others become `_` so that any `user` reaches the invocation logs.
fn metadata_value(text: &str) -> String {
    text.chars()
        .take(256)
        .map(
            |c| if c.is_ascii_alphanumeric() || c.is_ascii_whitespace() || ":_@$#=/+,-.".contains(c) { c } else { '_' },
        )
        .collect()
}

/// Refuses parameters Converse has no equivalent for.
fn refuse_unsupported(provider: &str, body: &Map<String, Value>) -> Result<(), GatewayError> {
    if body.get("seed").is_some_and(|v| !v.is_null()) {
        return Err(unsupported("unsupported_parameter", "seed", provider, "`seed`"));
    }
    newer_fields(provider, body)?;
    default_verbosity_only(provider, body)?;
    standard_tier_only(provider, body)?;
    if body.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
        return Err(unsupported(
            "unsupported_parameter",
            "parallel_tool_calls",
            provider,
            "`parallel_tool_calls: false` (Converse has no switch for it)",
        ));
    }
    Ok(())
}

/// `reasoning.effort` → a thinking budget for Claude models (the one reasoning switch Converse
/// passes through `additionalModelRequestFields` that Mesh knows the shape of); refused for other
/// model families rather than dropped.
fn thinking_budget(provider: &str, upstream_model: &str, effort: &str) -> Result<Option<u64>, GatewayError> {
    let Some(budget) = super::anthropic::thinking_budget_of(effort) else { return Ok(None) };
    if !upstream_model.contains("anthropic.") {
        return Err(unsupported(
            "unsupported_parameter",
            "reasoning.effort",
            provider,
            &format!("`reasoning.effort` for `{upstream_model}` (only Anthropic Claude models)"),
        ));
    }
    Ok(Some(budget))
}

/// `text.format`: a JSON schema becomes Converse's structured output (`outputConfig.textFormat`,
/// enforced by Bedrock); `json_object` has no schema to enforce and becomes an instruction.
fn output_format(body: &Map<String, Value>) -> (Option<OutputConfig>, Option<String>) {
    let Some(format) = body.get("text").and_then(|t| t.get("format")) else { return (None, None) };
    match format.get("type").and_then(Value::as_str) {
        Some("json_schema") => {
            let schema = format.get("schema").cloned().unwrap_or_else(|| json!({}));
            let text = |field: &str| format.get(field).and_then(Value::as_str).map(str::to_owned);
            let config = OutputConfig {
                text_format: OutputFormat {
                    kind: "json_schema",
                    structure: OutputStructure {
                        json_schema: JsonSchemaDefinition {
                            schema: schema.to_string(),
                            name: text("name"),
                            description: text("description"),
                        },
                    },
                },
            };
            (Some(config), None)
        }
        Some("json_object") => (
            None,
            Some("Answer with a single valid JSON object and nothing else (no prose, no code fences).".to_owned()),
        ),
        _ => (None, None),
    }
}

/// Function tools and `tool_choice` → `toolConfig`. Bedrock requires a tool config whenever the
/// conversation holds `toolUse`/`toolResult` blocks: a request that carries function calls in its
/// history but no `tools` gets one declaring the functions named there (any arguments). Converse
/// has no `none` choice: without tool blocks in the conversation the tools are left out; with
/// them `none` cannot be honoured and is refused.
fn tool_config(
    provider: &str,
    body: &Map<String, Value>,
    has_tool_blocks: bool,
    history_tools: &[String],
) -> Result<Option<ToolConfig>, GatewayError> {
    let list = super::function_tools(provider, body)?;
    if list.is_empty() {
        if history_tools.is_empty() {
            return Ok(None);
        }
        let tools = history_tools
            .iter()
            .map(|name| BedrockTool {
                tool_spec: ToolSpec {
                    name: name.clone(),
                    description: Some("A function called earlier in this conversation.".to_owned()),
                    input_schema: json!({"json": {"type": "object"}}),
                    strict: None,
                },
            })
            .collect();
        return Ok(Some(ToolConfig { tools, tool_choice: None }));
    }
    let tool_choice = match tool_choice(provider, body)? {
        ToolChoice::Unset => None,
        ToolChoice::Auto => Some(json!({"auto": {}})),
        ToolChoice::Required => Some(json!({"any": {}})),
        ToolChoice::None if has_tool_blocks => {
            return Err(unsupported(
                "unsupported_parameter",
                "tool_choice",
                provider,
                "`tool_choice: none` in a conversation that holds function calls",
            ))
        }
        ToolChoice::None => return Ok(None),
        ToolChoice::Function(name) => Some(json!({"tool": {"name": name}})),
    };
    let tools = list
        .into_iter()
        .map(|tool| {
            let schema = match tool.get("parameters") {
                Some(Value::Object(schema)) => Value::Object(schema.clone()),
                _ => json!({"type": "object", "properties": {}}),
            };
            BedrockTool {
                tool_spec: ToolSpec {
                    name: tool.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
                    description: tool.get("description").and_then(Value::as_str).map(str::to_owned),
                    input_schema: json!({"json": schema}),
                    strict: tool.get("strict").and_then(Value::as_bool).filter(|strict| *strict),
                },
            }
        })
        .collect();
    Ok(Some(ToolConfig { tools, tool_choice }))
}

/// Builds the `system` blocks and the alternating `messages`.
#[derive(Debug, Default)]
struct Conversation {
    system: Vec<SystemBlock>,
    messages: Vec<Message>,
    /// Reasoning blocks waiting for the assistant content they precede.
    reasoning: Vec<Block>,
    has_tool_blocks: bool,
    /// Names of the functions the conversation's `toolUse` blocks call, in order of first use.
    history_tools: Vec<String>,
}

impl Conversation {
    fn system_text(&mut self, text: &str) {
        if !text.is_empty() {
            self.system.push(SystemBlock { text: text.to_owned() });
        }
    }

    /// Appends blocks, merging consecutive turns of one role.
    fn push(&mut self, role: Role, blocks: Vec<Block>) {
        if blocks.is_empty() {
            return;
        }
        let blocks = match role {
            Role::Assistant => {
                let mut all = std::mem::take(&mut self.reasoning);
                all.extend(blocks);
                all
            }
            Role::User => {
                self.reasoning.clear();
                blocks
            }
        };
        match self.messages.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => self.messages.push(Message { role, content: blocks }),
        }
    }

    fn item(&mut self, provider: &str, s3_buckets: &[String], index: usize, item: &Value) -> Result<(), GatewayError> {
        let param = format!("input[{index}]");
        let text = |field: &str| item.get(field).and_then(Value::as_str).unwrap_or_default().to_owned();
        match item.get("type").and_then(Value::as_str).unwrap_or("message") {
            "message" => {
                let content = item.get("content").unwrap_or(&Value::Null);
                match item.get("role").and_then(Value::as_str).unwrap_or("user") {
                    "system" | "developer" => {
                        for block in content_blocks(provider, s3_buckets, &param, content)? {
                            match block {
                                Block::Text(text) => self.system_text(&text),
                                _ => {
                                    return Err(unsupported(
                                        "unsupported_parameter",
                                        &format!("{param}.content"),
                                        provider,
                                        "images or files in system or developer messages",
                                    ))
                                }
                            }
                        }
                    }
                    "assistant" => self.push(Role::Assistant, content_blocks(provider, s3_buckets, &param, content)?),
                    _ => self.push(Role::User, content_blocks(provider, s3_buckets, &param, content)?),
                }
            }
            "function_call" => {
                let input = arguments_object(&param, item.get("arguments"))?;
                self.has_tool_blocks = true;
                let name = text("name");
                if !self.history_tools.contains(&name) {
                    self.history_tools.push(name);
                }
                self.push(
                    Role::Assistant,
                    vec![Block::ToolUse(ToolUse { tool_use_id: text("call_id"), name: text("name"), input })],
                );
            }
            "function_call_output" => {
                let content = match item.get("output") {
                    Some(Value::Array(parts)) => parts_blocks(provider, s3_buckets, &format!("{param}.output"), parts)?
                        .into_iter()
                        .map(|block| match block {
                            Block::Text(text) => json!({"text": text}),
                            Block::Image(image) => json!({"image": image}),
                            Block::Document(document) => json!({"document": document}),
                            _ => Value::Null,
                        })
                        .collect(),
                    _ => vec![json!({"text": text("output")})],
                };
                self.has_tool_blocks = true;
                self.push(Role::User, vec![Block::ToolResult(ToolResult { tool_use_id: text("call_id"), content })]);
            }
            "reasoning" => {
                // Only signed reasoning can go back: Claude verifies it by its signature.
                let state = text("encrypted_content");
                if let Some(data) = state.strip_prefix(REDACTED_PREFIX) {
                    self.reasoning.push(Block::ReasoningContent(json!({"redactedContent": data})));
                } else if !state.is_empty() {
                    self.reasoning.push(Block::ReasoningContent(
                        json!({"reasoningText": {"text": summary_text(item), "signature": state}}),
                    ));
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

    /// The system blocks and the messages, tool results first in each user turn (Claude wants
    /// them before any text of the turn).
    fn finish(mut self) -> (Vec<SystemBlock>, Vec<Message>) {
        for message in &mut self.messages {
            if message.role == Role::User {
                message.content.sort_by_key(|block| !matches!(block, Block::ToolResult(_)));
            }
        }
        (self.system, self.messages)
    }
}

fn text_block(text: &str) -> Option<Block> {
    // Converse refuses blank text blocks.
    (!text.trim().is_empty()).then(|| Block::Text(text.to_owned()))
}

fn content_blocks(
    provider: &str,
    s3_buckets: &[String],
    param: &str,
    content: &Value,
) -> Result<Vec<Block>, GatewayError> {
    match content {
        Value::String(text) => Ok(text_block(text).into_iter().collect()),
        Value::Array(parts) => parts_blocks(provider, s3_buckets, &format!("{param}.content"), parts),
        _ => Ok(Vec::new()),
    }
}

fn parts_blocks(
    provider: &str,
    s3_buckets: &[String],
    param: &str,
    parts: &[Value],
) -> Result<Vec<Block>, GatewayError> {
    let mut blocks = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let part_param = format!("{param}[{j}]");
        let field = |name: &str| part.get(name).and_then(Value::as_str);
        match field("type").unwrap_or_default() {
            "input_text" | "output_text" | "text" => blocks.extend(text_block(field("text").unwrap_or_default())),
            "refusal" => blocks.extend(text_block(field("refusal").unwrap_or_default())),
            "input_image" => blocks.push(Block::Image(image(provider, s3_buckets, &part_param, part)?)),
            "input_file" => blocks.push(Block::Document(document(provider, &part_param, part, j)?)),
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

/// Images go as bytes (base64 `data:` URLs) or S3 locations (`s3://` URLs) in an allowed bucket;
/// Bedrock fetches no http(s) URLs.
fn image(provider: &str, s3_buckets: &[String], param: &str, part: &Value) -> Result<Value, GatewayError> {
    let url = part.get("image_url").and_then(Value::as_str).unwrap_or_default();
    let refuse = || {
        unsupported(
            "unsupported_parameter",
            param,
            provider,
            "images other than PNG, JPEG, GIF or WebP as base64 `data:` URLs or `s3://` URLs (no http(s) URLs, no `file_id`)",
        )
    };
    if let Some((media_type, data)) = data_url(url) {
        let format = match media_type {
            "image/png" => "png",
            "image/jpeg" | "image/jpg" => "jpeg",
            "image/gif" => "gif",
            "image/webp" => "webp",
            _ => return Err(refuse()),
        };
        return Ok(json!({"format": format, "source": {"bytes": data}}));
    }
    if let Some(location) = url.strip_prefix("s3://") {
        check_s3_location(provider, s3_buckets, &format!("{param}.image_url"), location)?;
        let format = match url.rsplit('.').next().map(str::to_ascii_lowercase).as_deref() {
            Some("png") => "png",
            Some("jpg" | "jpeg") => "jpeg",
            Some("gif") => "gif",
            Some("webp") => "webp",
            _ => return Err(refuse()),
        };
        return Ok(json!({"format": format, "source": {"s3Location": {"uri": url}}}));
    }
    Err(refuse())
}

/// Refuses an `s3://` location whose bucket the operator did not allow: Bedrock would read it
/// with the gateway's own AWS credentials, not the caller's.
fn check_s3_location(provider: &str, s3_buckets: &[String], param: &str, location: &str) -> Result<(), GatewayError> {
    let (bucket, key) = location.split_once('/').unwrap_or((location, ""));
    if !key.is_empty() && s3_buckets.iter().any(|allowed| allowed == bucket) {
        return Ok(());
    }
    let named = if crate::config::valid_s3_bucket(bucket) { format!("`{bucket}`") } else { "named".to_owned() };
    Err(GatewayError::invalid(
        "invalid_value",
        param,
        format!(
            "The provider `{provider}` may not read S3 objects from the bucket {named}: use a base64 `data:` URL, or ask an operator to allow the bucket (MESH_BEDROCK_S3_BUCKETS)."
        ),
    ))
}

/// PDFs as base64 `data:` URLs become documents; the name is the file name reduced to the
/// characters Bedrock allows in one.
fn document(provider: &str, param: &str, part: &Value, index: usize) -> Result<Value, GatewayError> {
    let field = |name: &str| part.get(name).and_then(Value::as_str).unwrap_or_default();
    let Some(("application/pdf", data)) = data_url(field("file_data")) else {
        return Err(unsupported(
            "unsupported_parameter",
            param,
            provider,
            "files other than PDFs as base64 `data:` URLs (no `file_url`, no `file_id`)",
        ));
    };
    let name: String = field("filename")
        .trim_end_matches(".pdf")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '(' | ')' | '[' | ']') { c } else { '-' })
        .collect();
    let name = if name.trim().is_empty() { format!("document-{}", index + 1) } else { name };
    Ok(json!({"format": "pdf", "name": name, "source": {"bytes": data}}))
}

// ---------------------------------------------------------------------------------------------
// Response in

fn finish_reason(stop_reason: Option<&str>) -> FinishReason {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => FinishReason::Length,
        Some("guardrail_intervened" | "content_filtered") => FinishReason::ContentFilter,
        // end_turn, stop_sequence, tool_use (the calls are the output).
        _ => FinishReason::Stop,
    }
}

// ---------------------------------------------------------------------------------------------
// Stream in

/// Decodes one ConverseStream: `messageStop` carries the stop reason and `metadata` (which
/// follows it) the usage, so the finish is given once both have come (or at the end of the stream).
#[derive(Debug, Default)]
struct BedrockDecoder {
    stop_reason: Option<String>,
    finished: bool,
}

impl DeltaDecoder for BedrockDecoder {
    fn decode(&mut self, event: SseEvent) -> Result<Vec<Delta>, StreamFault> {
        let name = event.event.unwrap_or_default();
        if let Some(kind) = name.strip_prefix("exception:").or_else(|| name.strip_prefix("error:")) {
            let message = serde_json::from_str::<BedrockErrorBody>(&event.data)
                .ok()
                .and_then(|body| body.message.or(body.message_upper))
                .unwrap_or_default();
            self.finished = true;
            return Ok(vec![Delta::Finish(FinishReason::Error(format!("{message} ({kind})")))]);
        }
        let malformed = |e: serde_json::Error| StreamFault::Malformed(format!("bedrock `{name}` event: {e}"));
        Ok(match name.as_str() {
            "contentBlockStart" => {
                let start: BlockStart = serde_json::from_str(&event.data).map_err(malformed)?;
                match start.start {
                    Some(BlockStartKind { tool_use: Some(call) }) => vec![Delta::ToolCallStart {
                        index: start.content_block_index,
                        call_id: call.tool_use_id,
                        name: call.name,
                    }],
                    _ => Vec::new(),
                }
            }
            "contentBlockDelta" => {
                let delta: BlockDelta = serde_json::from_str(&event.data).map_err(malformed)?;
                let index = delta.content_block_index;
                match delta.delta {
                    DeltaKind::Text(text) => vec![Delta::Text(text)],
                    DeltaKind::ToolUse(ToolUseDelta { input }) => {
                        vec![Delta::ToolCallArguments { index, fragment: input }]
                    }
                    DeltaKind::ReasoningContent(reasoning) => match reasoning {
                        ReasoningDelta::Text(text) => vec![Delta::Reasoning(text)],
                        ReasoningDelta::Signature(signature) => vec![Delta::ReasoningState(signature)],
                        ReasoningDelta::RedactedContent(data) => {
                            vec![Delta::ReasoningState(format!("{REDACTED_PREFIX}{data}"))]
                        }
                        ReasoningDelta::Other(_) => Vec::new(),
                    },
                    DeltaKind::Other(_) => Vec::new(),
                }
            }
            "messageStop" => {
                let stop: MessageStop = serde_json::from_str(&event.data).map_err(malformed)?;
                self.stop_reason = Some(stop.stop_reason);
                Vec::new()
            }
            "metadata" => {
                let metadata: StreamMetadata = serde_json::from_str(&event.data).map_err(malformed)?;
                let mut deltas = vec![Delta::Usage(metadata.usage.tokens())];
                if let Some(stop) = &self.stop_reason {
                    self.finished = true;
                    deltas.push(Delta::Finish(finish_reason(Some(stop))));
                }
                deltas
            }
            // messageStart, contentBlockStop and event types added later.
            _ => Vec::new(),
        })
    }

    fn finish(&mut self) -> Vec<Delta> {
        match &self.stop_reason {
            // A stream that stopped but sent no metadata: the answer is complete, the usage unknown.
            Some(stop) if !self.finished => {
                self.finished = true;
                vec![Delta::Finish(finish_reason(Some(stop)))]
            }
            _ => Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Wire types

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ConverseRequest {
    messages: Vec<Message>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    system: Vec<SystemBlock>,
    inference_config: InferenceConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_config: Option<OutputConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    additional_model_request_fields: Option<Value>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    request_metadata: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
struct SystemBlock {
    text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Role {
    User,
    Assistant,
}

#[derive(Debug, Serialize)]
struct Message {
    role: Role,
    content: Vec<Block>,
}

/// A content block: a union, one key per kind.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
enum Block {
    Text(String),
    Image(Value),
    Document(Value),
    ToolUse(ToolUse),
    ToolResult(ToolResult),
    ReasoningContent(Value),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolUse {
    tool_use_id: String,
    name: String,
    #[serde(default)]
    input: Value,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolResult {
    tool_use_id: String,
    content: Vec<Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct InferenceConfig {
    max_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<Number>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig {
    tools: Vec<BedrockTool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct BedrockTool {
    tool_spec: ToolSpec,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolSpec {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    input_schema: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct OutputConfig {
    text_format: OutputFormat,
}

#[derive(Debug, Serialize)]
struct OutputFormat {
    #[serde(rename = "type")]
    kind: &'static str,
    structure: OutputStructure,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct OutputStructure {
    json_schema: JsonSchemaDefinition,
}

/// The schema travels as a JSON string.
#[derive(Debug, Serialize)]
struct JsonSchemaDefinition {
    schema: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConverseResponse {
    output: ConverseOutput,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: BedrockUsage,
}

#[derive(Debug, Deserialize)]
struct ConverseOutput {
    message: OutputMessage,
}

#[derive(Debug, Deserialize)]
struct OutputMessage {
    #[serde(default)]
    content: Vec<OutputBlock>,
}

/// A content block of an answer; block kinds Mesh does not map (citations, guard content, ...)
/// are skipped.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
enum OutputBlock {
    Text(String),
    ToolUse(ToolUse),
    ReasoningContent(ReasoningBlock),
    #[serde(untagged)]
    Other(serde::de::IgnoredAny),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
enum ReasoningBlock {
    ReasoningText(ReasoningText),
    RedactedContent(String),
    #[serde(untagged)]
    Other(serde::de::IgnoredAny),
}

impl ReasoningBlock {
    fn deltas(self) -> Vec<Delta> {
        match self {
            ReasoningBlock::ReasoningText(ReasoningText { text, signature }) => {
                let mut deltas = Vec::new();
                if !text.is_empty() {
                    deltas.push(Delta::Reasoning(text));
                }
                if let Some(signature) = signature.filter(|s| !s.is_empty()) {
                    deltas.push(Delta::ReasoningState(signature));
                }
                deltas
            }
            ReasoningBlock::RedactedContent(data) => vec![Delta::ReasoningState(format!("{REDACTED_PREFIX}{data}"))],
            ReasoningBlock::Other(_) => Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct ReasoningText {
    #[serde(default)]
    text: String,
    #[serde(default)]
    signature: Option<String>,
}

/// Token counts. For Claude, `inputTokens` excludes cache reads and writes; the Responses count is
/// the sum, with the reads as cached tokens.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BedrockUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cache_read_input_tokens: u64,
    #[serde(default)]
    cache_write_input_tokens: u64,
}

impl BedrockUsage {
    fn tokens(&self) -> TokenUsage {
        TokenUsage {
            input_tokens: self
                .input_tokens
                .saturating_add(self.cache_read_input_tokens)
                .saturating_add(self.cache_write_input_tokens),
            cached_input_tokens: self.cache_read_input_tokens,
            output_tokens: self.output_tokens,
            reasoning_tokens: 0,
            cache_write_tokens: self.cache_write_input_tokens,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockStart {
    #[serde(default)]
    content_block_index: u64,
    #[serde(default)]
    start: Option<BlockStartKind>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockStartKind {
    #[serde(default)]
    tool_use: Option<ToolUseStart>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolUseStart {
    tool_use_id: String,
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockDelta {
    #[serde(default)]
    content_block_index: u64,
    delta: DeltaKind,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
enum DeltaKind {
    Text(String),
    ToolUse(ToolUseDelta),
    ReasoningContent(ReasoningDelta),
    #[serde(untagged)]
    Other(serde::de::IgnoredAny),
}

#[derive(Debug, Deserialize)]
struct ToolUseDelta {
    #[serde(default)]
    input: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
enum ReasoningDelta {
    Text(String),
    Signature(String),
    RedactedContent(String),
    #[serde(untagged)]
    Other(serde::de::IgnoredAny),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageStop {
    stop_reason: String,
}

#[derive(Debug, Deserialize)]
struct StreamMetadata {
    #[serde(default)]
    usage: BedrockUsage,
}

#[derive(Debug, Default, Deserialize)]
struct BedrockErrorBody {
    #[serde(default)]
    message: Option<String>,
    #[serde(default, rename = "Message")]
    message_upper: Option<String>,
    #[serde(default, rename = "__type")]
    kind: Option<String>,
}

#[cfg(test)]
mod tests;
