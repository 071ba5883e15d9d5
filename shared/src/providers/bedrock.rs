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
use std::time::SystemTime;

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Number, Value};

use super::assemble::{Delta, FinishReason};
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
/// The SigV4 service name of the Bedrock runtime.
pub const SIGNING_SERVICE: &str = "bedrock";
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
    fn request(
        &self,
        provider: &ProviderConfig,
        row: &ModelPrice,
        body: &Map<String, Value>,
        stream: bool,
    ) -> Result<UpstreamRequest, GatewayError> {
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
// Signing

/// Adds SigV4 headers (`authorization`, `x-amz-date`, and `x-amz-security-token` for temporary
/// credentials) to a request. Every header already on the request is signed.
pub fn sign(
    request: &mut UpstreamRequest,
    credentials: &aws_credential_types::Credentials,
    region: &str,
    time: SystemTime,
) -> Result<(), GatewayError> {
    use aws_sigv4::http_request::{sign as sigv4, SignableBody, SignableRequest, SigningSettings};
    let failed = |e: &dyn std::fmt::Display| GatewayError::Internal(format!("sigv4: {e}"));
    let identity = credentials.clone().into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SIGNING_SERVICE)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| failed(&e))?
        .into();
    let mut signed: Vec<(&str, &str)> = vec![("content-type", "application/json")];
    signed.extend(request.headers.iter().map(|(name, value)| (*name, value.as_str())));
    let signable = SignableRequest::new("POST", &request.url, signed.into_iter(), SignableBody::Bytes(&request.body))
        .map_err(|e| failed(&e))?;
    let (instructions, _) = sigv4(signable, &params).map_err(|e| failed(&e))?.into_parts();
    for (name, value) in instructions.headers() {
        let name = match name {
            "authorization" => "authorization",
            "x-amz-date" => "x-amz-date",
            "x-amz-security-token" => "x-amz-security-token",
            "x-amz-content-sha256" => "x-amz-content-sha256",
            other => return Err(GatewayError::Internal(format!("sigv4: unexpected header `{other}`"))),
        };
        request.headers.push((name, value.to_owned()));
    }
    Ok(())
}

/// The signing region of a Bedrock runtime endpoint (`bedrock-runtime[-fips].REGION.amazonaws.com`),
/// `None` for other hosts (a VPC endpoint or a local stub: the SDK's region applies).
pub fn endpoint_region(base_url: &str) -> Option<String> {
    let host = base_url.split("://").nth(1)?.split(['/', ':']).next()?;
    let mut labels = host.split('.');
    let service = labels.next()?;
    let region = labels.next()?;
    (service.starts_with("bedrock-runtime") && host.ends_with(".amazonaws.com") && !region.is_empty())
        .then(|| region.to_owned())
}

// ---------------------------------------------------------------------------------------------
// Event stream framing

/// Decodes an AWS event stream (`application/vnd.amazon.eventstream`) into events: the
/// `:event-type` header names an event, `exception:<:exception-type>` an exception and
/// `error:<:error-code>` an error; the payload is the data.
///
/// Each frame states its total length in its first four bytes: a length under the smallest
/// frame is malformed and one over the limit fails at once (before any of it is buffered), and
/// a frame is decoded (CRCs checked by the SDK) only once whole, so a frame arriving in many
/// chunks costs one 4-byte look per chunk, not a rescan.
#[derive(Debug)]
pub struct EventStreamParser {
    buffer: BytesMut,
    max_frame: usize,
}

/// The smallest frame: a 12-byte prelude and a 4-byte message CRC.
const MIN_FRAME: usize = 16;

impl Default for EventStreamParser {
    fn default() -> Self {
        EventStreamParser::with_max_frame(super::MAX_UPSTREAM_BODY)
    }
}

impl EventStreamParser {
    /// A parser refusing frames longer than `max_frame` bytes.
    pub fn with_max_frame(max_frame: usize) -> Self {
        EventStreamParser { buffer: BytesMut::new(), max_frame }
    }

    pub fn buffered_len(&self) -> usize {
        self.buffer.len()
    }

    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, StreamFault> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(prefix) = self.buffer.first_chunk::<4>() {
            let declared = usize::try_from(u32::from_be_bytes(*prefix)).unwrap_or(usize::MAX);
            if declared < MIN_FRAME {
                return Err(StreamFault::Malformed(format!("bedrock event stream frame of {declared} bytes")));
            }
            if declared > self.max_frame {
                return Err(StreamFault::TooLarge);
            }
            if self.buffer.len() < declared {
                break;
            }
            let frame = self.buffer.split_to(declared).freeze();
            let message = aws_smithy_eventstream::frame::read_message_from(frame)
                .map_err(|e| StreamFault::Malformed(format!("bedrock event stream frame: {e}")))?;
            events.push(frame_event(&message));
        }
        Ok(events)
    }

    /// Bytes left over at the end of the stream are a truncated frame.
    pub fn finish(&mut self) -> Result<(), StreamFault> {
        if self.buffer.has_remaining() {
            return Err(StreamFault::Malformed("bedrock event stream ended inside a frame".to_owned()));
        }
        Ok(())
    }
}

fn frame_event(message: &aws_smithy_types::event_stream::Message) -> SseEvent {
    let header = |name: &str| {
        message
            .headers()
            .iter()
            .find(|h| h.name().as_str() == name)
            .and_then(|h| h.value().as_string().ok())
            .map(|s| s.as_str().to_owned())
    };
    let payload = String::from_utf8_lossy(message.payload()).into_owned();
    let (event, data) = match header(":message-type").as_deref() {
        Some("exception") => (format!("exception:{}", header(":exception-type").unwrap_or_default()), payload),
        Some("error") => (
            format!("error:{}", header(":error-code").unwrap_or_default()),
            json!({"message": header(":error-message").unwrap_or_default()}).to_string(),
        ),
        _ => (header(":event-type").unwrap_or_default(), payload),
    };
    SseEvent { event: Some(event), data, id: None }
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
mod tests {
    use super::*;
    use crate::config::{ProviderApi, Secret};
    use crate::providers::assemble::{Assembler, ResponseContext};
    use aws_smithy_types::event_stream::{Header, HeaderValue, Message as Frame};

    fn provider() -> ProviderConfig {
        ProviderConfig {
            name: "bedrock".to_owned(),
            api: ProviderApi::Bedrock,
            base_url: "https://bedrock-runtime.eu-west-1.amazonaws.com/".to_owned(),
            api_key: None,
            api_key_secret_arn: None,
            token_delay: std::time::Duration::ZERO,
        }
    }

    fn row(upstream: &str, max_output_tokens: Option<u64>) -> ModelPrice {
        serde_json::from_value(json!({
            "model": "anthropic/claude-sonnet-4", "provider": "bedrock", "upstream_model": upstream,
            "max_output_tokens": max_output_tokens
        }))
        .unwrap()
    }

    const CLAUDE: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";

    /// Translates with the S3 bucket `bucket` allowed.
    fn translate_with(upstream: &str, body: Value) -> Result<Value, GatewayError> {
        let bedrock = Bedrock::with_s3_buckets(vec!["bucket".to_owned()]);
        let request = bedrock.request(&provider(), &row(upstream, Some(16_384)), body.as_object().unwrap(), false)?;
        Ok(serde_json::from_slice(&request.body).unwrap())
    }

    #[test]
    fn s3_sources_need_an_allowed_bucket() {
        let image = |url: &str| {
            json!({"input": [{"role": "user", "content": [{"type": "input_text", "text": "x"},
            {"type": "input_image", "image_url": url}]}]})
        };
        let refused = |bedrock: &Bedrock, body: Value| {
            let err = bedrock.request(&provider(), &row(CLAUDE, None), body.as_object().unwrap(), false).unwrap_err();
            assert_eq!((err.status().as_u16(), err.kind()), (400, "invalid_value"));
            err.body()
        };
        let none = Bedrock::default();
        let body = refused(&none, image("s3://bucket/cat.png"));
        assert_eq!(body["param"], "input[0].content[1].image_url");
        assert!(body["message"].as_str().unwrap().contains("MESH_BEDROCK_S3_BUCKETS"));
        let allowed = Bedrock::with_s3_buckets(vec!["bucket".to_owned()]);
        assert!(allowed
            .request(&provider(), &row(CLAUDE, None), image("s3://bucket/a/cat.png").as_object().unwrap(), false)
            .is_ok());
        for url in
            ["s3://other/cat.png", "s3://bucket.evil/cat.png", "s3://bucket", "s3://bucket/", "s3://BUCKET/cat.png"]
        {
            refused(&allowed, image(url));
        }
        let long = format!("s3://{}/cat.png", "b".repeat(5000));
        assert!(!refused(&allowed, image(&long))["message"].as_str().unwrap().contains("bbbb"), "not echoed");
        // Tool outputs carry images too.
        let output = json!({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": [{"type": "input_image", "image_url": "s3://other/x.png"}]}],
            "tools": [{"type": "function", "name": "f"}]});
        assert_eq!(refused(&allowed, output)["param"], "input[1].output[0].image_url");
    }

    fn translate(body: Value) -> Result<Value, GatewayError> {
        translate_with(CLAUDE, body)
    }

    fn user(text: &str) -> Value {
        json!({"role": "user", "content": [{"text": text}]})
    }

    /// JSON pointers into a Converse request and the values expected there.
    type Pointers = Vec<(&'static str, Value)>;

    /// Each case: a Responses body and JSON pointers into the Converse request it must produce
    /// (`Value::Null` = absent).
    #[test]
    fn request_translation_table() {
        let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
        let tools = json!([{"type": "function", "name": "get_weather", "description": "Weather", "parameters": schema, "strict": true}]);
        let call = json!({"type": "function_call", "call_id": "tooluse_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"});
        let output = json!({"type": "function_call_output", "call_id": "tooluse_1", "output": "18C"});
        let cases: Vec<(&str, Value, Pointers)> = vec![
            (
                "a string input is one user message; the row gives maxTokens",
                json!({"input": "hi"}),
                vec![
                    ("/messages", json!([user("hi")])),
                    ("/inferenceConfig", json!({"maxTokens": 16_384})),
                    ("/system", Value::Null),
                    ("/toolConfig", Value::Null),
                    ("/additionalModelRequestFields", Value::Null),
                    ("/outputConfig", Value::Null),
                ],
            ),
            (
                "sampling, stop sequences and the user",
                json!({"input": "hi", "max_output_tokens": 300, "temperature": 0.5, "top_p": 0.9, "stop": ["END"], "user": "u-1"}),
                vec![
                    (
                        "/inferenceConfig",
                        json!({"maxTokens": 300, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"]}),
                    ),
                    ("/requestMetadata", json!({"user": "u-1"})),
                ],
            ),
            (
                "instructions, system and developer messages become system blocks; turns of one role merge",
                json!({"instructions": "Be brief.", "input": [
                    {"role": "system", "content": "Sys."},
                    {"role": "user", "content": "a"},
                    {"role": "user", "content": [{"type": "input_text", "text": "b"}, {"type": "input_text", "text": " "}]},
                    {"role": "developer", "content": "Dev."},
                    {"role": "assistant", "content": [{"type": "output_text", "text": "c"}]}
                ]}),
                vec![
                    ("/system", json!([{"text": "Be brief."}, {"text": "Sys."}, {"text": "Dev."}])),
                    (
                        "/messages",
                        json!([{"role": "user", "content": [{"text": "a"}, {"text": "b"}]},
                        {"role": "assistant", "content": [{"text": "c"}]}]),
                    ),
                ],
            ),
            (
                "images and PDFs become bytes",
                json!({"input": [{"role": "user", "content": [
                    {"type": "input_image", "image_url": "data:image/jpeg;base64,/9j/4AAQ"},
                    {"type": "input_image", "image_url": "s3://bucket/cat.png"},
                    {"type": "input_file", "filename": "report.v2.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}
                ]}]}),
                vec![(
                    "/messages/0/content",
                    json!([
                        {"image": {"format": "jpeg", "source": {"bytes": "/9j/4AAQ"}}},
                        {"image": {"format": "png", "source": {"s3Location": {"uri": "s3://bucket/cat.png"}}}},
                        {"document": {"format": "pdf", "name": "report-v2", "source": {"bytes": "JVBERi0="}}}
                    ]),
                )],
            ),
            (
                "a function round trip: toolUse in the assistant turn, toolResult first in the user turn",
                json!({"input": [{"role": "user", "content": "Weather?"}, call, output.clone(),
                    {"role": "user", "content": "And tomorrow?"}], "tools": tools}),
                vec![(
                    "/messages",
                    json!([
                        user("Weather?"),
                        {"role": "assistant", "content": [{"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}}]},
                        {"role": "user", "content": [{"toolResult": {"toolUseId": "tooluse_1", "content": [{"text": "18C"}]}}, {"text": "And tomorrow?"}]}
                    ]),
                )],
            ),
            (
                "function tools with strict schemas; tool_choice required → any",
                json!({"input": "hi", "tools": tools, "tool_choice": "required"}),
                vec![(
                    "/toolConfig",
                    json!({"tools": [{"toolSpec": {"name": "get_weather", "description": "Weather",
                        "inputSchema": {"json": schema}, "strict": true}}], "toolChoice": {"any": {}}}),
                )],
            ),
            (
                "a named function",
                json!({"input": "hi", "tools": tools, "tool_choice": {"type": "function", "name": "get_weather"}}),
                vec![("/toolConfig/toolChoice", json!({"tool": {"name": "get_weather"}}))],
            ),
            (
                "auto",
                json!({"input": "hi", "tools": tools, "tool_choice": "auto"}),
                vec![("/toolConfig/toolChoice", json!({"auto": {}}))],
            ),
            (
                "function calls in the history without tools: the functions named there are declared",
                json!({"input": [{"role": "user", "content": "Weather?"}, call.clone(), output.clone(), {"role": "user", "content": "Thanks"}]}),
                vec![(
                    "/toolConfig",
                    json!({"tools": [{"toolSpec": {"name": "get_weather", "description": "A function called earlier in this conversation.",
                        "inputSchema": {"json": {"type": "object"}}}}]}),
                )],
            ),
            (
                "a user outside Bedrock's metadata alphabet is reduced to it",
                json!({"input": "hi", "user": "R&D (Zoë's team)"}),
                vec![("/requestMetadata", json!({"user": "R_D _Zo__s team_"}))],
            ),
            (
                "safety_identifier → requestMetadata.user",
                json!({"input": "hi", "safety_identifier": "sid-3f9a"}),
                vec![("/requestMetadata", json!({"user": "sid-3f9a"})), ("/safety_identifier", Value::Null)],
            ),
            (
                "user is preferred to safety_identifier",
                json!({"input": "hi", "user": "u-1", "safety_identifier": "sid-3f9a"}),
                vec![("/requestMetadata", json!({"user": "u-1"}))],
            ),
            (
                "exact no-ops are accepted and not sent",
                json!({"input": "hi", "truncation": "disabled", "top_logprobs": 0, "prompt_cache_key": "k",
                    "include": ["reasoning.encrypted_content"], "service_tier": "default",
                    "stream_options": {"include_obfuscation": false}, "text": {"verbosity": "medium"}}),
                vec![("/truncation", Value::Null), ("/prompt_cache_key", Value::Null), ("/serviceTier", Value::Null)],
            ),
            (
                "reasoning effort max → the largest Claude budget",
                json!({"input": "hi", "reasoning": {"effort": "max"}}),
                vec![(
                    "/additionalModelRequestFields",
                    json!({"thinking": {"type": "enabled", "budget_tokens": 59_904}}),
                )],
            ),
            (
                "reasoning effort none → no thinking",
                json!({"input": "hi", "reasoning": {"effort": "none"}}),
                vec![("/additionalModelRequestFields", Value::Null)],
            ),
            (
                "none without tool blocks leaves the tools out",
                json!({"input": "hi", "tools": tools, "tool_choice": "none"}),
                vec![("/toolConfig", Value::Null)],
            ),
            (
                "a JSON schema format becomes enforced structured output, the schema as a string",
                json!({"input": "hi", "text": {"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": true}}}),
                vec![(
                    "/outputConfig",
                    json!({"textFormat": {"type": "json_schema", "structure": {"jsonSchema": {"schema": "{\"type\":\"object\"}", "name": "answer"}}}}),
                )],
            ),
            (
                "json_object becomes an instruction",
                json!({"input": "hi", "text": {"format": {"type": "json_object"}}}),
                vec![(
                    "/system/0/text",
                    json!("Answer with a single valid JSON object and nothing else (no prose, no code fences)."),
                )],
            ),
            (
                "reasoning effort → a thinking budget for Claude, maxTokens kept above it",
                json!({"input": "hi", "reasoning": {"effort": "high"}, "max_output_tokens": 1000}),
                vec![
                    (
                        "/additionalModelRequestFields",
                        json!({"thinking": {"type": "enabled", "budget_tokens": 16_384}}),
                    ),
                    ("/inferenceConfig/maxTokens", json!(17_384)),
                ],
            ),
            (
                "signed reasoning goes back before the assistant content it preceded",
                json!({"input": [
                    {"role": "user", "content": "2+2?"},
                    {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Add."}], "encrypted_content": "sig=="},
                    {"type": "reasoning", "summary": [], "encrypted_content": "redacted:b64data"},
                    {"role": "assistant", "content": "4"},
                    {"role": "user", "content": "thanks"}
                ]}),
                vec![(
                    "/messages/1",
                    json!({"role": "assistant", "content": [
                        {"reasoningContent": {"reasoningText": {"text": "Add.", "signature": "sig=="}}},
                        {"reasoningContent": {"redactedContent": "b64data"}},
                        {"text": "4"}
                    ]}),
                )],
            ),
        ];
        for (name, body, pointers) in cases {
            let request = translate(body).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            for (pointer, expected) in pointers {
                let got = request.pointer(pointer).cloned().unwrap_or(Value::Null);
                assert_eq!(got, expected, "{name}: {pointer} in {request}");
            }
        }
    }

    #[test]
    fn refusals_name_the_provider_and_the_field() {
        let tools = json!([{"type": "function", "name": "f", "parameters": {"type": "object"}}]);
        let cases = vec![
            (json!({"input": "hi", "seed": 1}), "unsupported_parameter", "seed"),
            (json!({"input": "hi", "top_logprobs": 2}), "unsupported_parameter", "top_logprobs"),
            (json!({"input": "hi", "max_tool_calls": 4}), "unsupported_parameter", "max_tool_calls"),
            (json!({"input": "hi", "truncation": "auto"}), "unsupported_parameter", "truncation"),
            (
                json!({"input": "hi", "include": ["message.output_text.logprobs"]}),
                "unsupported_parameter",
                "include[0]",
            ),
            (json!({"input": "hi", "text": {"verbosity": "high"}}), "unsupported_parameter", "text.verbosity"),
            (json!({"input": "hi", "service_tier": "priority"}), "unsupported_parameter", "service_tier"),
            (json!({"input": "hi", "parallel_tool_calls": false}), "unsupported_parameter", "parallel_tool_calls"),
            (json!({"input": "hi", "tools": [{"type": "web_search"}]}), "unsupported_tool", "tools[0].type"),
            (
                json!({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}], "tools": tools, "tool_choice": "none"}),
                "unsupported_parameter",
                "tool_choice",
            ),
            (
                json!({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/cat.png"}]}]}),
                "unsupported_parameter",
                "input[0].content[0]",
            ),
            (json!({"input": [{"type": "item_reference", "id": "msg_1"}]}), "unsupported_parameter", "input[0]"),
            (json!({"input": [{"role": "system", "content": "only system"}]}), "invalid_value", "input"),
        ];
        for (body, code, param) in cases {
            let GatewayError::InvalidRequest { code: got, param: Some(got_param), message } =
                translate(body.clone()).unwrap_err()
            else {
                panic!("{body}: not an invalid request");
            };
            assert_eq!((got, got_param.as_str()), (code, param), "{body}");
            if code != "invalid_value" {
                assert!(message.contains("`bedrock`"), "{message}");
            }
        }
        for effort in ["minimal", "low", "medium", "high", "xhigh", "max"] {
            let err = translate_with("amazon.nova-pro-v1:0", json!({"input": "hi", "reasoning": {"effort": effort}}))
                .unwrap_err();
            assert!(format!("{err:?}").contains("reasoning.effort"), "{err:?}");
        }
        assert!(translate_with("amazon.nova-pro-v1:0", json!({"input": "hi", "reasoning": {"effort": "none"}})).is_ok());
    }

    #[test]
    fn url_encodes_the_model_id_and_picks_the_operation() {
        let body = json!({"input": "hi"});
        let whole =
            Bedrock::default().request(&provider(), &row(CLAUDE, None), body.as_object().unwrap(), false).unwrap();
        assert_eq!(
            whole.url,
            "https://bedrock-runtime.eu-west-1.amazonaws.com/model/us.anthropic.claude-sonnet-4-20250514-v1%3A0/converse"
        );
        assert_eq!(whole.headers, vec![("accept", "application/json".to_owned())]);
        let arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.x";
        let stream = Bedrock::default().request(&provider(), &row(arn, None), body.as_object().unwrap(), true).unwrap();
        assert!(stream.url.ends_with(
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.x/converse-stream"
        ));
        assert_eq!(stream.headers[0], ("accept", EVENT_STREAM.to_owned()));
        let parsed: Value = serde_json::from_slice(&stream.body).unwrap();
        assert_eq!(parsed["inferenceConfig"]["maxTokens"], 4096, "the default when neither request nor row has one");
        let mut keyed = provider();
        keyed.api_key = Some(Secret::new("bedrock-api-key"));
        let request = Bedrock::default().request(&keyed, &row(CLAUDE, None), body.as_object().unwrap(), false).unwrap();
        assert!(request.headers.contains(&("authorization", "Bearer bedrock-api-key".to_owned())));
    }

    #[test]
    fn sigv4_headers_and_regions() {
        let mut request = UpstreamRequest {
            url: "https://bedrock-runtime.eu-west-1.amazonaws.com/model/a%3A0/converse".to_owned(),
            headers: vec![("accept", "application/json".to_owned())],
            body: Bytes::from_static(b"{}"),
        };
        let credentials = aws_credential_types::Credentials::new("AKID", "SECRET", Some("TOKEN".into()), None, "test");
        let time = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_767_225_600); // 2026-01-01
        sign(&mut request, &credentials, "eu-west-1", time).unwrap();
        let header = |name: &str| request.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
        assert_eq!(header("x-amz-date").as_deref(), Some("20260101T000000Z"));
        assert_eq!(header("x-amz-security-token").as_deref(), Some("TOKEN"));
        let authorization = header("authorization").unwrap();
        assert!(
            authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKID/20260101/eu-west-1/bedrock/aws4_request, SignedHeaders=accept;content-type;host;x-amz-date;x-amz-security-token, Signature="),
            "{authorization}"
        );
        let signature = authorization.rsplit('=').next().unwrap();
        assert_eq!(signature.len(), 64);
        // The same request signed again at the same time gives the same signature; another body does not.
        let mut again = UpstreamRequest {
            url: request.url.clone(),
            headers: vec![("accept", "application/json".to_owned())],
            body: Bytes::from_static(b"{}"),
        };
        sign(&mut again, &credentials, "eu-west-1", time).unwrap();
        assert!(again.headers.iter().any(|(n, v)| *n == "authorization" && *v == authorization));
        let mut other = UpstreamRequest { body: Bytes::from_static(b"{\"a\":1}"), ..again };
        other.headers.retain(|(n, _)| *n == "accept");
        sign(&mut other, &credentials, "eu-west-1", time).unwrap();
        assert!(!other.headers.iter().any(|(n, v)| *n == "authorization" && *v == authorization));

        assert_eq!(endpoint_region("https://bedrock-runtime.us-west-2.amazonaws.com").as_deref(), Some("us-west-2"));
        assert_eq!(
            endpoint_region("https://bedrock-runtime-fips.us-east-1.amazonaws.com/").as_deref(),
            Some("us-east-1")
        );
        assert_eq!(endpoint_region("http://127.0.0.1:4010"), None);
        assert_eq!(endpoint_region("https://vpce-1.bedrock-runtime.us-east-1.vpce.amazonaws.com"), None);
    }

    fn complete(deltas: Vec<Delta>) -> Value {
        let ctx = ResponseContext::new("anthropic/claude-sonnet-4", &Map::new());
        crate::providers::assemble_complete(deltas, ctx).response
    }

    #[test]
    fn converse_answers_become_responses() {
        let answer = json!({
            "output": {"message": {"role": "assistant", "content": [
                {"reasoningContent": {"reasoningText": {"text": "Think.", "signature": "sig"}}},
                {"text": "Let me check."},
                {"toolUse": {"toolUseId": "tooluse_a", "name": "get_weather", "input": {"city": "Paris"}}},
                {"toolUse": {"toolUseId": "tooluse_b", "name": "get_weather", "input": {"city": "Rome"}}},
                {"citationsContent": {"citations": []}}
            ]}},
            "stopReason": "tool_use",
            "usage": {"inputTokens": 25, "outputTokens": 15, "totalTokens": 150, "cacheReadInputTokens": 100, "cacheWriteInputTokens": 10},
            "metrics": {"latencyMs": 100}
        });
        let response = complete(Bedrock::default().response(answer.to_string().as_bytes()).unwrap());
        assert_eq!(response["status"], "completed");
        let output = response["output"].as_array().unwrap();
        let kinds: Vec<&str> = output.iter().map(|i| i["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["reasoning", "message", "function_call", "function_call"]);
        assert_eq!(output[0]["encrypted_content"], "sig");
        assert_eq!(output[0]["summary"][0]["text"], "Think.");
        assert_eq!(output[1]["content"][0]["text"], "Let me check.");
        assert_eq!(
            (output[2]["call_id"].as_str(), output[2]["arguments"].as_str()),
            (Some("tooluse_a"), Some("{\"city\":\"Paris\"}"))
        );
        assert_eq!(output[3]["call_id"], "tooluse_b");
        assert_eq!(response["usage"]["input_tokens"], 135);
        assert_eq!(response["usage"]["input_tokens_details"]["cached_tokens"], 100);
        assert_eq!(response["usage"]["input_tokens_details"]["cache_write_tokens"], 10);
        assert_eq!(response["usage"]["output_tokens"], 15);

        for (stop, status, reason) in [
            ("max_tokens", "incomplete", json!("max_output_tokens")),
            ("model_context_window_exceeded", "incomplete", json!("max_output_tokens")),
            ("content_filtered", "incomplete", json!("content_filter")),
            ("guardrail_intervened", "incomplete", json!("content_filter")),
            ("end_turn", "completed", Value::Null),
            ("stop_sequence", "completed", Value::Null),
        ] {
            let answer = json!({"output": {"message": {"role": "assistant", "content": [{"text": "x"}]}}, "stopReason": stop, "usage": {}});
            let response = complete(Bedrock::default().response(answer.to_string().as_bytes()).unwrap());
            assert_eq!(response["status"], status, "{stop}");
            assert_eq!(response["incomplete_details"]["reason"].clone(), reason, "{stop}");
        }
        assert!(matches!(Bedrock::default().response(b"<html>"), Err(GatewayError::UpstreamFailure(_))));
    }

    fn frame(event: &str, payload: Value) -> Vec<u8> {
        let message = Frame::new(payload.to_string().into_bytes())
            .add_header(Header::new(":event-type", HeaderValue::String(event.to_owned().into())))
            .add_header(Header::new(":content-type", HeaderValue::String("application/json".into())))
            .add_header(Header::new(":message-type", HeaderValue::String("event".into())));
        let mut bytes = Vec::new();
        aws_smithy_eventstream::frame::write_message_to(&message, &mut bytes).unwrap();
        bytes
    }

    fn exception(kind: &str, message: &str) -> Vec<u8> {
        let message = Frame::new(json!({"message": message}).to_string().into_bytes())
            .add_header(Header::new(":exception-type", HeaderValue::String(kind.to_owned().into())))
            .add_header(Header::new(":content-type", HeaderValue::String("application/json".into())))
            .add_header(Header::new(":message-type", HeaderValue::String("exception".into())));
        let mut bytes = Vec::new();
        aws_smithy_eventstream::frame::write_message_to(&message, &mut bytes).unwrap();
        bytes
    }

    /// Feeds the bytes in chunks of `chunk` through the frame parser, decoder and assembler.
    fn run_stream(bytes: &[u8], chunk: usize) -> (Vec<Value>, Result<(), StreamFault>) {
        let mut parser = EventStreamParser::default();
        let mut decoder = Bedrock::default().decoder();
        let mut assembler = Assembler::new(ResponseContext::new("anthropic/claude-sonnet-4", &Map::new()));
        let mut events = Vec::new();
        for piece in bytes.chunks(chunk) {
            match parser.feed(piece) {
                Ok(frames) => {
                    for event in frames {
                        for delta in decoder.decode(event).unwrap() {
                            events.extend(assembler.push(delta));
                        }
                    }
                }
                Err(fault) => return (events, Err(fault)),
            }
        }
        if let Err(fault) = parser.finish() {
            return (events, Err(fault));
        }
        for delta in decoder.finish() {
            events.extend(assembler.push(delta));
        }
        (events, Ok(()))
    }

    fn tool_stream() -> Vec<u8> {
        let delta =
            |i: u64, d: Value| frame("contentBlockDelta", json!({"contentBlockIndex": i, "delta": d, "p": "abcdefgh"}));
        [
            frame("messageStart", json!({"role": "assistant", "p": "abc"})),
            delta(0, json!({"reasoningContent": {"text": "Two "}})),
            delta(0, json!({"reasoningContent": {"text": "cities."}})),
            delta(0, json!({"reasoningContent": {"signature": "sig"}})),
            frame("contentBlockStop", json!({"contentBlockIndex": 0})),
            delta(1, json!({"text": "Checking"})),
            delta(1, json!({"text": " both."})),
            frame("contentBlockStop", json!({"contentBlockIndex": 1})),
            frame("contentBlockStart", json!({"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "tooluse_a", "name": "get_weather"}}})),
            delta(2, json!({"toolUse": {"input": "{\"city\""}})),
            delta(2, json!({"toolUse": {"input": ":\"Paris\"}"}})),
            frame("contentBlockStop", json!({"contentBlockIndex": 2})),
            frame("contentBlockStart", json!({"contentBlockIndex": 3, "start": {"toolUse": {"toolUseId": "tooluse_b", "name": "get_weather"}}})),
            delta(3, json!({"toolUse": {"input": "{\"city\":\"Rome\"}"}})),
            frame("contentBlockStop", json!({"contentBlockIndex": 3})),
            frame("messageStop", json!({"stopReason": "tool_use"})),
            frame("metadata", json!({"usage": {"inputTokens": 25, "outputTokens": 15, "totalTokens": 150, "cacheReadInputTokens": 100, "cacheWriteInputTokens": 10}, "metrics": {"latencyMs": 9}})),
        ]
        .concat()
    }

    #[test]
    fn a_stream_of_frames_becomes_the_responses_event_sequence() {
        let whole = tool_stream();
        // Chunked at every size from one byte to a whole frame: frames split anywhere decode alike.
        let (reference, result) = run_stream(&whole, whole.len());
        result.unwrap();
        for chunk in [1, 3, 7, 64, 300] {
            let (events, result) = run_stream(&whole, chunk);
            result.unwrap();
            assert_eq!(events.len(), reference.len(), "chunk {chunk}");
        }
        let terminal = reference.last().unwrap();
        assert_eq!(terminal["type"], "response.completed");
        let output = terminal["response"]["output"].as_array().unwrap();
        let kinds: Vec<&str> = output.iter().map(|i| i["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["reasoning", "message", "function_call", "function_call"]);
        assert_eq!(output[0]["summary"][0]["text"], "Two cities.");
        assert_eq!(output[0]["encrypted_content"], "sig");
        assert_eq!(output[1]["content"][0]["text"], "Checking both.");
        assert_eq!(output[2]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(output[3]["arguments"], "{\"city\":\"Rome\"}");
        assert_eq!(terminal["response"]["usage"]["input_tokens"], 135);
        let args: Vec<&str> = reference
            .iter()
            .filter(|e| e["type"] == "response.function_call_arguments.delta")
            .map(|e| e["delta"].as_str().unwrap())
            .collect();
        assert_eq!(args, ["{\"city\"", ":\"Paris\"}", "{\"city\":\"Rome\"}"]);
        for pair in reference.windows(2) {
            assert!(pair[0]["sequence_number"].as_u64() < pair[1]["sequence_number"].as_u64());
        }
    }

    #[test]
    fn stream_faults() {
        // An exception frame mid-stream fails the response with the provider's words.
        let broken = [
            frame("messageStart", json!({"role": "assistant"})),
            frame("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "Once"}})),
            exception("modelStreamErrorException", "The model stream broke."),
        ]
        .concat();
        let (events, result) = run_stream(&broken, 5);
        result.unwrap();
        let terminal = events.last().unwrap();
        assert_eq!(terminal["type"], "response.failed");
        let message = terminal["response"]["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("The model stream broke.") && message.contains("modelStreamErrorException"),
            "{message}"
        );

        // A corrupted frame (bad CRC) is a malformed stream.
        let mut corrupt = frame("messageStart", json!({"role": "assistant"}));
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        assert!(matches!(run_stream(&corrupt, 4).1, Err(StreamFault::Malformed(_))));

        // A stream that ends inside a frame is malformed too.
        let whole = frame("messageStart", json!({"role": "assistant"}));
        assert!(matches!(run_stream(&whole[..whole.len() - 3], 4).1, Err(StreamFault::Malformed(_))));

        // Hostile lengths: under the smallest frame, or over the limit, fail at once.
        let mut parser = EventStreamParser::default();
        assert!(matches!(parser.feed(&[0, 0, 0, 5, 1, 2, 3, 4]), Err(StreamFault::Malformed(_))));
        let mut parser = EventStreamParser::default();
        assert!(matches!(parser.feed(&[0xff, 0xff, 0xff, 0xff]), Err(StreamFault::TooLarge)), "4 GiB declared");
        assert_eq!(parser.buffered_len(), 4, "nothing waited for");
        let mut parser = EventStreamParser::with_max_frame(whole.len() - 1);
        assert!(matches!(parser.feed(&whole[..4]), Err(StreamFault::TooLarge)));
        let mut parser = EventStreamParser::with_max_frame(whole.len());
        assert_eq!(parser.feed(&whole).unwrap().len(), 1, "a frame of exactly the limit is fine");
        // A prelude whose declared length disagrees with its CRC is caught once the frame is whole.
        let mut lying = whole.clone();
        lying[3] = lying[3].wrapping_sub(1);
        assert!(matches!(run_stream(&lying, 4).1, Err(StreamFault::Malformed(_))));

        // A stop without metadata still finishes; a stream without a stop does not.
        let no_metadata = [
            frame("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "cut"}})),
            frame("messageStop", json!({"stopReason": "max_tokens"})),
        ]
        .concat();
        let (events, _) = run_stream(&no_metadata, 100);
        assert_eq!(events.last().unwrap()["type"], "response.incomplete");
        let unfinished = frame("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "cut"}}));
        let (events, _) = run_stream(&unfinished, 100);
        assert!(!events.iter().any(|e| e["type"].as_str().is_some_and(|t| t.starts_with("response.completed"))));

        // An event whose payload does not fit its type.
        let mut decoder = Bedrock::default().decoder();
        let bad = SseEvent {
            event: Some("contentBlockDelta".to_owned()),
            data: "{\"contentBlockIndex\": \"x\", \"delta\": {\"text\": \"a\"}}".to_owned(),
            id: None,
        };
        assert!(matches!(decoder.decode(bad), Err(StreamFault::Malformed(_))));
    }

    #[test]
    fn error_mapping_table() {
        let headers = |kind: &str| {
            let mut map = HeaderMap::new();
            map.insert(
                "x-amzn-errortype",
                format!("{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/").parse().unwrap(),
            );
            map
        };
        let body = |message: &str| json!({"message": message}).to_string();
        let map = |status: u16, kind: &str, message: &str| {
            Bedrock::default().error("bedrock", status, &headers(kind), body(message).as_bytes())
        };

        match map(429, "ThrottlingException", "Too many requests, please wait before trying again.") {
            GatewayError::UpstreamClient(fault) => {
                assert_eq!(
                    (fault.status, fault.error_type.as_str(), fault.code.as_deref()),
                    (429, "rate_limit_error", Some("ThrottlingException"))
                );
                assert_eq!(fault.message, "Too many requests, please wait before trying again.");
            }
            other => panic!("{other:?}"),
        }
        match map(400, "ValidationException", "Input is too long for requested model.") {
            GatewayError::UpstreamClient(fault) => {
                assert_eq!(
                    (fault.status, fault.code.as_deref(), fault.param.as_deref()),
                    (400, Some("context_length_exceeded"), Some("input"))
                );
            }
            other => panic!("{other:?}"),
        }
        // Refused credentials or access are the gateway's fault: 502, the words only in the logs.
        for (status, kind) in [(403, "AccessDeniedException"), (403, "UnrecognizedClientException"), (401, "")] {
            let err = map(status, kind, "The security token AKIAIOSFODNN7EXAMPLE is not valid.");
            assert!(matches!(err, GatewayError::UpstreamCredential(_)), "{status} {kind}: {err:?}");
            assert_eq!((err.status().as_u16(), err.body()["code"].as_str()), (502, Some("upstream_error")));
            assert!(!format!("{err} {}", err.body()).contains("AKIA"));
        }
        assert!(matches!(
            map(503, "ServiceUnavailableException", "Bedrock is unable to process your request."),
            GatewayError::UpstreamFailure(_)
        ));
        assert!(matches!(map(500, "InternalServerException", "oops"), GatewayError::UpstreamFailure(_)));
        assert!(matches!(map(424, "ModelErrorException", "The model failed"), GatewayError::UpstreamFailure(_)));
        assert!(matches!(map(408, "ModelTimeoutException", "slow"), GatewayError::GatewayTimeout(_)));
        // `__type` in the body when the header is missing; an unreadable body still maps by status.
        match Bedrock::default().error(
            "bedrock",
            404,
            &HeaderMap::new(),
            br#"{"__type": "com.amazon#ResourceNotFoundException", "Message": "no model"}"#,
        ) {
            GatewayError::UpstreamClient(fault) => {
                assert_eq!(
                    (fault.code.as_deref(), fault.message.as_str()),
                    (Some("ResourceNotFoundException"), "no model")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Bedrock::default().error("bedrock", 400, &HeaderMap::new(), b"not json"),
            GatewayError::UpstreamClient(_)
        ));
    }
}
