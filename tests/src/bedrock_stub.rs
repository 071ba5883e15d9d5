//! A stub of the Amazon Bedrock runtime's Converse and ConverseStream operations
//! (<https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html>,
//! <https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ConverseStream.html>):
//! records every request, verifies its SigV4 signature (credentials `test`/`test`, region
//! `us-east-1`, service `bedrock`) the way AWS does, checks the conversation rules Bedrock
//! enforces, and answers in the exact Converse wire format, whole or as an AWS event stream
//! (`application/vnd.amazon.eventstream`) cut into network chunks that split frames.
//!
//! Behaviour is chosen by the model id's last dot-separated part (so
//! `anthropic.claude-sonnet-4-20250514-v1:0` and `us.anthropic.thinking` work as ids): anything
//! else answers plain text; `tools-one` calls the first tool once (and, when the last user turn
//! holds a `toolResult`, answers with text that uses it); `tools-two` makes two parallel calls;
//! `json` answers `{"answer":42}` (and wants `outputConfig.textFormat`); `length` stops at
//! `max_tokens`; `history` answers with the conversation it was sent ([`transcript`]);
//! `guardrail` is stopped by a guardrail; `thinking` reasons (signed) before
//! answering and checks the signature of reasoning sent back; `error-429`, `error-503`,
//! `error-424`, `error-403` and `error-long` (input too long) fail; `stream-error` breaks its
//! stream with a `modelStreamErrorException` frame after the first delta.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, StatusCode, Uri};
use serde_json::{json, Value};

use crate::stub::StubRequest;

/// The access key id the stub accepts (the tests export `AWS_ACCESS_KEY_ID=test`).
pub const ACCESS_KEY_ID: &str = "test";
/// The secret access key the stub signs with (`AWS_SECRET_ACCESS_KEY=test`).
pub const SECRET_ACCESS_KEY: &str = "test";
/// The region of the credential scope (`AWS_REGION=us-east-1`).
pub const REGION: &str = "us-east-1";
/// The SigV4 service name of the Bedrock runtime.
pub const SERVICE: &str = "bedrock";
/// The answer of the plain text model.
pub const TEXT: &str = "Hello from Bedrock";
/// The reasoning text of the `thinking` model.
pub const THINKING: &str = "The user asks for 2 + 2. That is 4.";
/// The signature of the stub's reasoning block.
pub const SIGNATURE: &str = "ErcBCkgIBhABGAIiQMuiyDObz/Z/ryneZUbZXEmn5CiQWSXVuJKlGPOcmNcA1u5ZMO4ML6yf+pO3dA0N/ewNMMqsiCFRi0oEf4ZX0ZwSDC8Y9sa4YgBaSkAJZhoMbYcp8R7SXqgbJTRdIjBsjPEbDnO2TXbZgF7T9cKnWnc2rj0tnwPM7bhKXgQM2bLD2XzuvXGk/gDjYQFJ3GwqHQrYxKwKNlhrUA==";
/// The ids of the stub's tool calls.
pub const CALL_ONE: &str = "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q";
pub const CALL_TWO: &str = "tooluse_7R8GsaLqTJ2wqPAbIrHDkQ";
/// The message of the `stream-error` model's exception frame.
pub const STREAM_ERROR: &str = "The system encountered an unexpected error during processing. Try your request again.";
/// The message of the `error-long` model.
pub const TOO_LONG: &str = "Input is too long for requested model.";
/// The message of the stub's 403 for a bad signature.
pub const BAD_SIGNATURE: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";
/// How far `x-amz-date` may be from the stub's clock (AWS allows 5 minutes).
const MAX_SKEW: Duration = Duration::from_secs(5 * 60);

/// What every answer reports: Responses usage is 135 input (100 cached) and 15 output tokens.
pub fn usage() -> Value {
    json!({"inputTokens": 25, "outputTokens": 15, "totalTokens": 150, "cacheReadInputTokens": 100,
        "cacheWriteInputTokens": 10})
}

/// One request the stub received.
#[derive(Debug, Clone)]
pub struct BedrockRequest {
    /// The path as it arrived on the wire, still percent-encoded.
    pub raw_path: String,
    /// The model id from the path, percent-decoded.
    pub model_id: String,
    /// `converse` or `converse-stream`.
    pub operation: &'static str,
    /// Headers and the body parsed as JSON (`null` when it is not JSON).
    pub request: StubRequest,
    /// The body exactly as received.
    pub raw_body: Bytes,
    /// The outcome of the SigV4 check (why it failed).
    pub signature: Result<(), String>,
}

#[derive(Debug, Default)]
struct Shared {
    requests: Mutex<Vec<BedrockRequest>>,
}

/// A running stub.
#[derive(Debug)]
pub struct BedrockStub {
    /// Base URL as a Bedrock runtime endpoint (`http://127.0.0.1:PORT`).
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for BedrockStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BedrockStub {
    pub async fn start() -> BedrockStub {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/model/{model_id}/converse", post(converse))
            .route("/model/{model_id}/converse-stream", post(converse_stream))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind bedrock stub");
        let addr = listener.local_addr().expect("bedrock stub addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        BedrockStub { url: format!("http://{addr}"), shared, task }
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<BedrockRequest> {
        self.shared.requests.lock().expect("stub lock").clone()
    }

    /// The last request received.
    pub fn last(&self) -> BedrockRequest {
        self.requests().pop().expect("the bedrock stub received a request")
    }

    /// Headers and body of the last request received.
    pub fn last_request(&self) -> StubRequest {
        self.last().request
    }
}

/// Bedrock's error answer: `{"message": ...}` with the exception name in `x-amzn-errortype`.
fn error(status: u16, kind: &str, message: &str) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-amzn-requestid", "7c4b2b8e-5d0a-4f43-9a4e-0c3f1c8b6a21")
        .header("x-amzn-errortype", format!("{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"))
        .body(Body::from(json!({"message": message}).to_string()))
        .unwrap_or_default()
}

async fn converse(
    State(shared): State<Arc<Shared>>,
    Path(model_id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(&shared, model_id, &uri, headers, body, false)
}

async fn converse_stream(
    State(shared): State<Arc<Shared>>,
    Path(model_id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(&shared, model_id, &uri, headers, body, true)
}

fn respond(
    shared: &Shared,
    model_id: String,
    uri: &Uri,
    headers: HeaderMap,
    raw_body: Bytes,
    stream: bool,
) -> Response {
    let signature = verify_signature(uri, &headers, &raw_body);
    let parsed: Option<Value> = serde_json::from_slice(&raw_body).ok();
    shared.requests.lock().expect("stub lock").push(BedrockRequest {
        raw_path: uri.path().to_owned(),
        model_id: model_id.clone(),
        operation: if stream { "converse-stream" } else { "converse" },
        request: StubRequest { headers: headers.clone(), body: parsed.clone().unwrap_or(Value::Null) },
        raw_body: raw_body.clone(),
        signature: signature.clone(),
    });
    if signature.is_err() {
        return error(403, "InvalidSignatureException", BAD_SIGNATURE);
    }
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/json") {
        return error(415, "UnsupportedMediaTypeException", "The content type must be application/json.");
    }
    let Some(body) = parsed else {
        return error(400, "SerializationException", "Unable to parse the request body as JSON.");
    };
    if let Err(message) = validate(&body) {
        return error(400, "ValidationException", &message);
    }
    let behaviour = model_id.rsplit('.').next().unwrap_or_default();
    match behaviour {
        "error-429" => return error(429, "ThrottlingException", "Too many requests, please wait before trying again."),
        "error-503" => return error(503, "ServiceUnavailableException", "Bedrock is unable to process your request."),
        "error-424" => {
            return error(424, "ModelErrorException", "The model produced an invalid response. Try your request again.")
        }
        "error-403" => {
            return error(
                403,
                "AccessDeniedException",
                "You don't have access to the model with the specified model ID.",
            )
        }
        "error-long" => return error(400, "ValidationException", TOO_LONG),
        "thinking" => {
            if let Err(message) = check_thinking(&body) {
                return error(400, "ValidationException", &message);
            }
        }
        "json" => {
            if let Err(message) = check_output_config(&body) {
                return error(400, "ValidationException", &message);
            }
        }
        _ => {}
    }
    let (content, stop_reason) = scenario(behaviour, &body);
    if stream {
        return event_stream(stream_frames(&content, stop_reason, behaviour == "stream-error"));
    }
    let answer = json!({
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop_reason,
        "usage": usage(),
        "metrics": {"latencyMs": 321}
    });
    (
        StatusCode::OK,
        [("content-type", "application/json"), ("x-amzn-requestid", "0d4f1f6e-2a53-4a4a-8d4b-3f6f3b0c9a11")],
        answer.to_string(),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// SigV4

/// Verifies `authorization` (`AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`)
/// and `x-amz-date` by signing the request again as received (path still percent-encoded, only
/// the signed headers) with the stub's credentials.
pub fn verify_signature(uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let authorization = header("authorization").ok_or("no authorization header")?;
    let fields = authorization
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| format!("not a SigV4 authorization: {authorization}"))?;
    let field = |name: &str| {
        fields
            .split(", ")
            .find_map(|part| part.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
            .ok_or_else(|| format!("authorization without {name}: {authorization}"))
    };
    let (credential, signed_headers, signature) = (field("Credential")?, field("SignedHeaders")?, field("Signature")?);
    let amz_date = header("x-amz-date").ok_or("no x-amz-date header")?;
    let time = parse_amz_date(amz_date).ok_or_else(|| format!("malformed x-amz-date `{amz_date}`"))?;
    let skew = match SystemTime::now().duration_since(time) {
        Ok(behind) => behind,
        Err(ahead) => ahead.duration(),
    };
    if skew > MAX_SKEW {
        return Err(format!("signature expired: x-amz-date {amz_date} is {skew:?} away from now"));
    }
    let scope = format!("{ACCESS_KEY_ID}/{}/{REGION}/{SERVICE}/aws4_request", &amz_date[..8]);
    if credential != scope {
        return Err(format!("credential scope `{credential}`, expected `{scope}`"));
    }
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        return Err(format!("signature `{signature}` is not 64 lowercase hex digits"));
    }
    let names: Vec<&str> = signed_headers.split(';').collect();
    for required in ["host", "x-amz-date"] {
        if !names.contains(&required) {
            return Err(format!("SignedHeaders `{signed_headers}` lacks `{required}`"));
        }
    }
    let mut signed = Vec::with_capacity(names.len());
    for name in &names {
        let value = header(name).ok_or_else(|| format!("signed header `{name}` is missing"))?;
        signed.push((*name, value));
    }
    let host = header("host").ok_or("no host header")?;
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("http://{host}{path_and_query}");
    let identity = aws_credential_types::Credentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY, None, None, "stub").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name(SERVICE)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("signing params: {e}"))?
        .into();
    let request = SignableRequest::new("POST", &url, signed.into_iter(), SignableBody::Bytes(body))
        .map_err(|e| format!("signable request: {e}"))?;
    let (instructions, expected) = sign(request, &params).map_err(|e| format!("signing: {e}"))?.into_parts();
    if signature != expected {
        return Err(format!("signature {signature}, expected {expected}"));
    }
    let expected_authorization =
        instructions.headers().find(|(name, _)| *name == "authorization").map(|(_, value)| value.to_owned());
    if expected_authorization.as_deref() != Some(authorization) {
        return Err(format!("authorization `{authorization}`, expected {expected_authorization:?}"));
    }
    Ok(())
}

/// `YYYYMMDDTHHMMSSZ` → a time.
fn parse_amz_date(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() != 16
        || b[8] != b'T'
        || b[15] != b'Z'
        || !text[..8].bytes().chain(text[9..15].bytes()).all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let rfc3339 =
        format!("{}-{}-{}T{}:{}:{}Z", &text[..4], &text[4..6], &text[6..8], &text[9..11], &text[11..13], &text[13..15]);
    let time = aws_smithy_types::DateTime::from_str(&rfc3339, aws_smithy_types::date_time::Format::DateTime).ok()?;
    SystemTime::try_from(time).ok()
}

// ---------------------------------------------------------------------------------------------
// Validation

/// The request rules Bedrock enforces that a translation can get wrong.
fn validate(body: &Value) -> Result<(), String> {
    const FIELDS: [&str; 12] = [
        "messages",
        "system",
        "inferenceConfig",
        "toolConfig",
        "guardrailConfig",
        "additionalModelRequestFields",
        "promptVariables",
        "additionalModelResponseFieldPaths",
        "requestMetadata",
        "performanceConfig",
        "outputConfig",
        "serviceTier",
    ];
    let object = body.as_object().ok_or("The request body must be a JSON object.")?;
    if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!("Unknown field `{unknown}` in the request."));
    }
    let max_tokens = body["inferenceConfig"]["maxTokens"].as_u64();
    if body.get("inferenceConfig").is_some() {
        let config = body["inferenceConfig"].as_object().ok_or("inferenceConfig: expected an object")?;
        if let Some(unknown) =
            config.keys().find(|k| !["maxTokens", "temperature", "topP", "stopSequences"].contains(&k.as_str()))
        {
            return Err(format!("inferenceConfig: unknown field `{unknown}`"));
        }
        if config.contains_key("maxTokens") && max_tokens.is_none_or(|n| n < 1) {
            return Err("1 validation error detected: Value at 'inferenceConfig.maxTokens' failed to satisfy constraint: Member must have value greater than or equal to 1".to_owned());
        }
        if body["inferenceConfig"]["temperature"].as_f64().is_some_and(|t| !(0.0..=1.0).contains(&t)) {
            return Err("inferenceConfig.temperature: must be between 0 and 1".to_owned());
        }
    }
    if let Some(thinking) = body.get("additionalModelRequestFields").and_then(|f| f.get("thinking")) {
        let budget = thinking["budget_tokens"].as_u64().unwrap_or_default();
        if thinking["type"] != "enabled" || budget < 1024 || max_tokens.is_some_and(|max| budget >= max) {
            return Err("The model returned the following errors: thinking.budget_tokens: must be ≥ 1024 and less than max_tokens".to_owned());
        }
    }
    if let Some(system) = body.get("system") {
        let blocks = system.as_array().ok_or("system: expected a list of blocks")?;
        if blocks.iter().any(|b| b["text"].as_str().is_none_or(|t| t.trim().is_empty())) {
            return Err(
                "The text field in the SystemContentBlock object is blank. Add text to the text field, and try again."
                    .to_owned(),
            );
        }
    }
    if let Some(metadata) = body.get("requestMetadata") {
        // Keys and values match `[a-zA-Z0-9\s:_@$#=/+,-.]`, 1..=256 (values 0..=256) long; 16 at most.
        let metadata = metadata.as_object().ok_or("requestMetadata: expected a map of strings")?;
        let allowed = |text: &str| {
            text.len() <= 256
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c.is_ascii_whitespace() || ":_@$#=/+,-.".contains(c))
        };
        if metadata.len() > 16 {
            return Err("requestMetadata: at most 16 entries".to_owned());
        }
        for (key, value) in metadata {
            if key.is_empty() || !allowed(key) || !value.as_str().is_some_and(allowed) {
                return Err(format!("1 validation error detected: Value at 'requestMetadata' failed to satisfy constraint: Map value must satisfy constraint: [Member must satisfy regular expression pattern: [a-zA-Z0-9\\s:_@$#=/+,-.]{{0,256}}] (entry `{key}`)"));
            }
        }
    }
    validate_tool_config(body)?;
    let messages = body["messages"].as_array().ok_or(
        "1 validation error detected: Value at 'messages' failed to satisfy constraint: Member must not be null",
    )?;
    if messages.is_empty() {
        return Err("A conversation must start with a user message. Try again with a conversation that starts with a user message.".to_owned());
    }
    let mut uses_tools = false;
    let mut pending_tool_uses: Vec<String> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let role = message["role"].as_str().unwrap_or_default();
        if i == 0 && role != "user" {
            return Err("A conversation must start with a user message. Try again with a conversation that starts with a user message.".to_owned());
        }
        let expected = if i % 2 == 0 { "user" } else { "assistant" };
        if role != expected {
            return Err("A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again.".to_owned());
        }
        let blocks = message["content"].as_array().ok_or(format!("messages.{i}.content: expected a list"))?;
        if blocks.is_empty() {
            return Err(format!("The content field in the Message object at messages.{i} is empty. Add a ContentBlock object to the content field and try again."));
        }
        let mut tool_uses = Vec::new();
        let mut results = Vec::new();
        for (j, block) in blocks.iter().enumerate() {
            let at = format!("messages.{i}.content.{j}");
            let members = block.as_object().ok_or(format!("{at}: expected an object"))?;
            if members.len() != 1 {
                return Err(format!("{at}: a ContentBlock must have exactly one member set"));
            }
            let (kind, value) = members.iter().next().ok_or(format!("{at}: empty ContentBlock"))?;
            match (role, kind.as_str()) {
                (_, "text") if value.as_str().is_none_or(|t| t.trim().is_empty()) => {
                    return Err(format!("The text field in the ContentBlock object at {at} is blank. Add text to the text field, and try again."))
                }
                (_, "text" | "cachePoint") => {}
                ("user", "image") => {
                    let format = value["format"].as_str().unwrap_or_default();
                    if !["png", "jpeg", "gif", "webp"].contains(&format)
                        || (!value["source"]["bytes"].is_string() && !value["source"]["s3Location"]["uri"].is_string())
                    {
                        return Err(format!("{at}.image: invalid image block {value}"));
                    }
                }
                ("user", "document") => {
                    if value["format"].as_str().is_none() || value["name"].as_str().is_none_or(str::is_empty) {
                        return Err(format!("{at}.document: format and name are required"));
                    }
                }
                ("user", "toolResult") => {
                    uses_tools = true;
                    let id = value["toolUseId"].as_str().unwrap_or_default();
                    if !pending_tool_uses.iter().any(|u| u == id) {
                        return Err(format!("The model returned the following errors: {at}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."));
                    }
                    let content = value["content"].as_array().ok_or(format!("{at}.toolResult.content: expected a list"))?;
                    if content.iter().any(|c| c.as_object().is_none_or(|o| o.len() != 1)) {
                        return Err(format!("{at}.toolResult.content: each block must have exactly one member"));
                    }
                    if value.get("status").is_some_and(|s| s != "success" && s != "error") {
                        return Err(format!("{at}.toolResult.status: expected success or error"));
                    }
                    results.push(id.to_owned());
                }
                ("assistant", "toolUse") => {
                    uses_tools = true;
                    let name = value["name"].as_str().unwrap_or_default();
                    if !value["input"].is_object() || value["toolUseId"].as_str().is_none_or(str::is_empty) || name.is_empty() {
                        return Err(format!("{at}.toolUse: toolUseId, name and an input object are required"));
                    }
                    tool_uses.push(value["toolUseId"].as_str().unwrap_or_default().to_owned());
                }
                ("assistant", "reasoningContent") => {
                    let text = &value["reasoningText"];
                    let signed = text["text"].is_string() && text["signature"].as_str().is_some_and(|s| !s.is_empty());
                    if !signed && !value["redactedContent"].is_string() {
                        return Err(format!("{at}.reasoningContent: reasoningText needs text and a signature"));
                    }
                }
                (role, kind) => return Err(format!("{at}: `{kind}` blocks are not allowed in {role} messages")),
            }
        }
        if role == "user" {
            if let Some(missing) = pending_tool_uses.iter().find(|id| !results.contains(id)) {
                return Err(format!("The model returned the following errors: messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: {missing}. Each `tool_use` block must have a corresponding `tool_result` block in the next message."));
            }
        }
        pending_tool_uses = tool_uses;
    }
    if uses_tools && body.get("toolConfig").is_none() {
        return Err("The toolConfig field must be defined when using toolUse and toolResult content blocks.".to_owned());
    }
    Ok(())
}

/// Checks `toolConfig`: valid tool specs and a choice among them.
fn validate_tool_config(body: &Value) -> Result<(), String> {
    let Some(config) = body.get("toolConfig") else { return Ok(()) };
    let tools = config["tools"]
        .as_array()
        .filter(|t| !t.is_empty())
        .ok_or("toolConfig.tools: at least one tool is required")?;
    let mut names = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        let spec = &tool["toolSpec"];
        let name = spec["name"].as_str().unwrap_or_default();
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid_name || !spec["inputSchema"]["json"].is_object() {
            return Err(format!(
                "toolConfig.tools.{i}.toolSpec: a name ([a-zA-Z0-9_-]+) and inputSchema.json are required"
            ));
        }
        if spec.get("description").is_some_and(|d| d.as_str().is_none_or(str::is_empty)) {
            return Err(format!("toolConfig.tools.{i}.toolSpec.description: must be a non-empty string"));
        }
        if spec.get("strict").is_some_and(|s| !s.is_boolean()) {
            return Err(format!("toolConfig.tools.{i}.toolSpec.strict: must be a boolean"));
        }
        names.push(name.to_owned());
    }
    if let Some(choice) = config.get("toolChoice") {
        let valid = choice == &json!({"auto": {}})
            || choice == &json!({"any": {}})
            || choice["tool"]["name"].as_str().is_some_and(|n| names.iter().any(|t| t == n))
                && choice.as_object().is_some_and(|o| o.len() == 1);
        if !valid {
            return Err(format!("toolConfig.toolChoice: invalid choice {choice}"));
        }
    }
    Ok(())
}

/// Reasoning sent back must carry the signature the stub issued, with its text unchanged.
fn check_thinking(body: &Value) -> Result<(), String> {
    for message in body["messages"].as_array().into_iter().flatten() {
        for block in message["content"].as_array().into_iter().flatten() {
            let text = &block["reasoningContent"]["reasoningText"];
            if block.get("reasoningContent").is_some() && (text["signature"] != SIGNATURE || text["text"] != THINKING) {
                return Err(
                    "The model returned the following errors: Invalid `signature` in `thinking` block".to_owned()
                );
            }
        }
    }
    Ok(())
}

/// The `json` model answers only under a JSON schema given as `outputConfig.textFormat`.
fn check_output_config(body: &Value) -> Result<(), String> {
    let format = &body["outputConfig"]["textFormat"];
    if format["type"] != "json_schema" {
        return Err("outputConfig.textFormat.type: expected json_schema".to_owned());
    }
    let schema = format["structure"]["jsonSchema"]["schema"]
        .as_str()
        .ok_or("outputConfig.textFormat.structure.jsonSchema.schema: expected the schema as a JSON string")?;
    match serde_json::from_str::<Value>(schema) {
        Ok(Value::Object(_)) => Ok(()),
        _ => Err("outputConfig.textFormat.structure.jsonSchema.schema: not a JSON schema object".to_owned()),
    }
}

// ---------------------------------------------------------------------------------------------
// Answers

/// The answer's content blocks and stop reason.
fn scenario(behaviour: &str, body: &Value) -> (Vec<Value>, &'static str) {
    let tool = body["toolConfig"]["tools"][0]["toolSpec"]["name"].as_str().unwrap_or("get_weather").to_owned();
    let results = last_tool_results(body);
    let text = |text: &str| json!({"text": text});
    let call = |id: &str, city: &str| json!({"toolUse": {"toolUseId": id, "name": tool, "input": {"city": city}}});
    match behaviour {
        "tools-one" if !results.is_empty() => {
            (vec![text(&format!("The weather in Paris: {}.", results[0]))], "end_turn")
        }
        "tools-one" => (vec![text("Let me check the weather."), call(CALL_ONE, "Paris")], "tool_use"),
        "tools-two" if !results.is_empty() => (vec![text(&format!("Results: {}.", results.join(" / ")))], "end_turn"),
        "tools-two" => (vec![call(CALL_ONE, "Paris"), call(CALL_TWO, "London")], "tool_use"),
        "json" => (vec![text(r#"{"answer":42}"#)], "end_turn"),
        "history" => (vec![text(&transcript(body))], "end_turn"),
        "length" => (vec![text("This answer is cut")], "max_tokens"),
        "guardrail" => (vec![text("Sorry, the model cannot answer this question.")], "guardrail_intervened"),
        "thinking" => (
            vec![
                json!({"reasoningContent": {"reasoningText": {"text": THINKING, "signature": SIGNATURE}}}),
                text("2 + 2 = 4."),
            ],
            "end_turn",
        ),
        "stream-error" => (vec![text("Once upon a time")], "end_turn"),
        _ => (vec![text(TEXT)], "end_turn"),
    }
}

/// The conversation of a request in the form of [`crate::stub_models::transcript`]: `role:text`
/// per message (its text blocks joined), `function_call:NAME` per `toolUse` block and
/// `function_call_output:OUTPUT` per `toolResult` block, joined by ` | `.
pub fn transcript(body: &Value) -> String {
    let mut entries = Vec::new();
    for message in body["messages"].as_array().into_iter().flatten() {
        let role = message["role"].as_str().unwrap_or_default();
        let blocks = message["content"].as_array().cloned().unwrap_or_default();
        let text: String = blocks.iter().filter_map(|b| b["text"].as_str()).collect();
        if !text.is_empty() {
            entries.push(format!("{role}:{text}"));
        }
        for block in &blocks {
            if let Some(call) = block.get("toolUse") {
                entries.push(format!("function_call:{}", call["name"].as_str().unwrap_or_default()));
            }
            if let Some(result) = block.get("toolResult") {
                let output: String =
                    result["content"].as_array().into_iter().flatten().filter_map(|c| c["text"].as_str()).collect();
                entries.push(format!("function_call_output:{output}"));
            }
        }
    }
    entries.join(" | ")
}

/// The texts of the `toolResult` blocks of the last user turn.
fn last_tool_results(body: &Value) -> Vec<String> {
    let Some(last) = body["messages"].as_array().and_then(|m| m.last()) else { return Vec::new() };
    last["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b.get("toolResult"))
        .map(|result| {
            result["content"].as_array().into_iter().flatten().filter_map(|c| c["text"].as_str()).collect::<String>()
        })
        .collect()
}

fn pieces(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

/// One event stream frame.
fn frame(headers: Vec<Header>, payload: &Value) -> Bytes {
    let message = Message::new_from_parts(headers, Bytes::from(payload.to_string()));
    let mut buffer: Vec<u8> = Vec::new();
    aws_smithy_eventstream::frame::write_message_to(&message, &mut buffer).expect("encode an event stream frame");
    Bytes::from(buffer)
}

fn string(name: &'static str, value: &str) -> Header {
    Header::new(name, HeaderValue::String(value.to_owned().into()))
}

/// An `event` frame; `pad` adds the `p` padding field Bedrock puts into payloads.
fn event(kind: &str, mut payload: Value, pad: usize) -> Bytes {
    if pad > 0 {
        payload["p"] = json!("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[..pad.min(62)]);
    }
    frame(
        vec![
            string(":event-type", kind),
            string(":content-type", "application/json"),
            string(":message-type", "event"),
        ],
        &payload,
    )
}

/// An `exception` frame.
fn exception(kind: &str, payload: &Value) -> Bytes {
    frame(
        vec![
            string(":exception-type", kind),
            string(":content-type", "application/json"),
            string(":message-type", "exception"),
        ],
        payload,
    )
}

/// The frames of an answer, in ConverseStream's order. With `break_off`, a
/// `modelStreamErrorException` follows the first block's first delta and the stream ends.
pub fn stream_frames(content: &[Value], stop_reason: &str, break_off: bool) -> Vec<Bytes> {
    let mut frames = vec![event("messageStart", json!({"role": "assistant"}), 5)];
    for (index, block) in content.iter().enumerate() {
        let delta = |delta: Value, pad: usize| {
            event("contentBlockDelta", json!({"contentBlockIndex": index, "delta": delta}), pad)
        };
        let mut deltas = Vec::new();
        if let Some(call) = block.get("toolUse") {
            frames.push(event(
                "contentBlockStart",
                json!({"contentBlockIndex": index,
                    "start": {"toolUse": {"toolUseId": call["toolUseId"], "name": call["name"]}}}),
                0,
            ));
            for piece in pieces(&call["input"].to_string(), 7) {
                deltas.push(delta(json!({"toolUse": {"input": piece}}), 3));
            }
        } else if let Some(reasoning) = block.get("reasoningContent") {
            for piece in pieces(reasoning["reasoningText"]["text"].as_str().unwrap_or_default(), 10) {
                deltas.push(delta(json!({"reasoningContent": {"text": piece}}), 11));
            }
            deltas.push(delta(json!({"reasoningContent": {"signature": reasoning["reasoningText"]["signature"]}}), 0));
        } else {
            for (i, piece) in pieces(block["text"].as_str().unwrap_or_default(), 5).into_iter().enumerate() {
                deltas.push(delta(json!({"text": piece}), i % 3 * 7));
            }
        }
        if break_off {
            frames.extend(deltas.into_iter().take(1));
            frames.push(exception(
                "modelStreamErrorException",
                &json!({"message": STREAM_ERROR, "originalStatusCode": 500, "originalMessage": "Internal server error"}),
            ));
            return frames;
        }
        frames.extend(deltas);
        frames.push(event("contentBlockStop", json!({"contentBlockIndex": index}), 0));
    }
    frames.push(event("messageStop", json!({"stopReason": stop_reason}), 2));
    frames.push(event("metadata", json!({"usage": usage(), "metrics": {"latencyMs": 321}}), 20));
    frames
}

/// An event stream answer: one network chunk per frame, except that the second frame is split
/// inside its prelude, the third in its middle, and the last two travel in one chunk.
fn event_stream(frames: Vec<Bytes>) -> Response {
    let mut chunks = Vec::new();
    let count = frames.len();
    for (i, frame) in frames.into_iter().enumerate() {
        match i {
            1 => {
                chunks.push(frame.slice(..7));
                chunks.push(frame.slice(7..));
            }
            2 => {
                let middle = frame.len() / 2;
                chunks.push(frame.slice(..middle));
                chunks.push(frame.slice(middle..));
            }
            _ if i + 1 == count && i > 3 => {
                let mut both = chunks.pop().map(|c: Bytes| c.to_vec()).unwrap_or_default();
                both.extend_from_slice(&frame);
                chunks.push(Bytes::from(both));
            }
            _ => chunks.push(frame),
        }
    }
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        for chunk in chunks {
            if sender.send(Ok(chunk)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/vnd.amazon.eventstream")
        .header("x-amzn-requestid", "5b2f8f3e-8a8e-4c1e-9d0f-2b6a7e3c1d44")
        .body(Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(receiver)))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_decode_back_with_the_sdk_decoder() {
        use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
        let content =
            vec![json!({"text": "Hi there"}), json!({"toolUse": {"toolUseId": "t1", "name": "f", "input": {"a": 1}}})];
        let mut buffer = bytes::BytesMut::new();
        for frame in stream_frames(&content, "tool_use", false) {
            buffer.extend_from_slice(&frame);
        }
        let mut decoder = MessageFrameDecoder::new();
        let mut kinds = Vec::new();
        while let Ok(DecodedFrame::Complete(message)) = decoder.decode_frame(&mut buffer) {
            let kind = message.headers().iter().find(|h| h.name().as_str() == ":event-type").unwrap();
            kinds.push(kind.value().as_string().unwrap().as_str().to_owned());
        }
        assert_eq!(
            kinds,
            [
                "messageStart",
                "contentBlockDelta",
                "contentBlockDelta",
                "contentBlockStop",
                "contentBlockStart",
                "contentBlockDelta",
                "contentBlockStop",
                "messageStop",
                "metadata"
            ]
        );
        assert!(buffer.is_empty());
    }

    #[test]
    fn amz_dates_parse() {
        let time = parse_amz_date("20150830T123600Z").unwrap();
        assert_eq!(time.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(), 1_440_938_160);
        assert!(parse_amz_date("2015-08-30T12:36:00Z").is_none());
    }
}
