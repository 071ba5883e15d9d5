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

// ---------------------------------------------------------------------------------------------
// Request

/// The Gemini `GenerateContentRequest` for a Responses request body.
fn request_body(provider: &str, body: &Map<String, Value>) -> Result<Value, GatewayError> {
    refuse_unsupported(provider, body)?;
    let mut conversation = Conversation::new(provider);
    if let Some(Value::String(instructions)) = body.get("instructions") {
        if !instructions.is_empty() {
            conversation.system.push(json!({"text": instructions}));
        }
    }
    conversation.input(body.get("input"))?;
    let (contents, system) = conversation.finish();
    let mut out = Map::new();
    out.insert("contents".to_owned(), Value::Array(contents));
    if !system.is_empty() {
        out.insert("systemInstruction".to_owned(), json!({"parts": system}));
    }
    let tools = function_declarations(provider, body)?;
    let tool_config = tool_config(provider, body)?;
    if let Some(declarations) = tools {
        out.insert("tools".to_owned(), json!([{"functionDeclarations": declarations}]));
        if let Some(config) = tool_config {
            out.insert("toolConfig".to_owned(), json!({"functionCallingConfig": config}));
        }
    }
    let generation = generation_config(body);
    if !generation.is_empty() {
        out.insert("generationConfig".to_owned(), Value::Object(generation));
    }
    Ok(Value::Object(out))
}

/// Refuses request fields Gemini cannot honour rather than dropping them.
fn refuse_unsupported(provider: &str, body: &Map<String, Value>) -> Result<(), GatewayError> {
    if body.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
        return Err(unsupported(
            "unsupported_parameter",
            "parallel_tool_calls",
            provider,
            "turning parallel function calls off (`parallel_tool_calls: false`)",
        ));
    }
    super::input::newer_fields(provider, body)?;
    super::input::default_verbosity_only(provider, body)?;
    super::input::standard_tier_only(provider, body)?;
    // Gemini keeps no conversation state: these would silently lose the earlier turns.
    for field in ["previous_response_id", "conversation", "prompt"] {
        if body.get(field).is_some_and(|v| !v.is_null()) {
            return Err(unsupported(
                "unsupported_parameter",
                field,
                provider,
                &format!("`{field}`; send the whole conversation in `input`"),
            ));
        }
    }
    if body.get("background") == Some(&Value::Bool(true)) {
        return Err(unsupported("unsupported_parameter", "background", provider, "background responses"));
    }
    Ok(())
}

/// One `Content` of the conversation.
#[derive(Debug)]
struct Turn {
    role: &'static str,
    parts: Vec<Value>,
}

/// Builds Gemini `contents` (and the system text) from the Responses input, in order.
#[derive(Debug)]
struct Conversation<'a> {
    provider: &'a str,
    system: Vec<Value>,
    turns: Vec<Turn>,
    /// Function name of every `function_call` seen so far, by call id (a Gemini function
    /// response names its function; a Responses output only names the call).
    call_names: HashMap<String, String>,
    /// A signature (a reasoning item's `encrypted_content`) waiting for the next model part.
    signature: Option<String>,
}

impl<'a> Conversation<'a> {
    fn new(provider: &'a str) -> Self {
        Conversation { provider, system: Vec::new(), turns: Vec::new(), call_names: HashMap::new(), signature: None }
    }

    fn input(&mut self, input: Option<&Value>) -> Result<(), GatewayError> {
        match input {
            None | Some(Value::Null) => Ok(()),
            Some(Value::String(text)) => {
                self.push("user", json!({"text": text}));
                Ok(())
            }
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    self.item(&format!("input[{i}]"), item)?;
                }
                Ok(())
            }
            Some(_) => Err(GatewayError::invalid("invalid_type", "input", "`input` must be a string or an array.")),
        }
    }

    /// Adds a part, merging it into the previous turn when the role is the same (Gemini wants
    /// the roles to alternate).
    fn push(&mut self, role: &'static str, mut part: Value) {
        if role == "model" {
            if let Some(signature) = self.signature.take() {
                part["thoughtSignature"] = Value::String(signature);
            }
        } else {
            self.settle_signature();
        }
        match self.turns.last_mut() {
            Some(turn) if turn.role == role => turn.parts.push(part),
            _ => self.turns.push(Turn { role, parts: vec![part] }),
        }
    }

    /// A signature that no later model part took came after the model's last part (Gemini puts
    /// a text answer's signature on its final, sometimes empty, part): it goes back there.
    fn settle_signature(&mut self) {
        let Some(signature) = self.signature.take() else { return };
        if let Some(turn) = self.turns.last_mut().filter(|turn| turn.role == "model") {
            if let Some(last) = turn.parts.last_mut().filter(|part| part.get("thoughtSignature").is_none()) {
                last["thoughtSignature"] = Value::String(signature);
            }
        }
    }

    /// The `contents` and the system parts.
    fn finish(mut self) -> (Vec<Value>, Vec<Value>) {
        self.settle_signature();
        let contents = self
            .turns
            .into_iter()
            .map(|mut turn| {
                if turn.role == "model" {
                    let first_call = turn.parts.iter_mut().find(|part| part.get("functionCall").is_some());
                    if let Some(call) = first_call.filter(|part| part.get("thoughtSignature").is_none()) {
                        call["thoughtSignature"] = json!(FOREIGN_SIGNATURE);
                    }
                }
                json!({"role": turn.role, "parts": turn.parts})
            })
            .collect();
        (contents, self.system)
    }

    fn item(&mut self, param: &str, item: &Value) -> Result<(), GatewayError> {
        match item.get("type").and_then(Value::as_str).unwrap_or("message") {
            "message" => self.message(param, item),
            "function_call" => self.function_call(param, item),
            "function_call_output" => self.function_output(param, item),
            // Reasoning summaries are not sent back: Gemini takes its earlier thinking only as
            // the opaque signature, which rides on the model part that follows.
            "reasoning" => {
                if let Some(signature) = item.get("encrypted_content").and_then(Value::as_str) {
                    if !signature.is_empty() {
                        self.signature = Some(signature.to_owned());
                    }
                }
                Ok(())
            }
            other => Err(unsupported(
                "unsupported_parameter",
                &format!("{param}.type"),
                self.provider,
                &format!("input items of type `{other}`"),
            )),
        }
    }

    fn message(&mut self, param: &str, item: &Value) -> Result<(), GatewayError> {
        let parts = match item.get("content") {
            Some(Value::String(text)) => vec![json!({"text": text})],
            Some(Value::Array(parts)) => parts
                .iter()
                .enumerate()
                .map(|(j, part)| content_part(self.provider, &format!("{param}.content[{j}]"), part))
                .collect::<Result<Vec<_>, _>>()?,
            _ => Vec::new(),
        };
        match item.get("role").and_then(Value::as_str).unwrap_or("user") {
            "system" | "developer" => {
                for (j, part) in parts.into_iter().enumerate() {
                    if part.get("text").is_none() {
                        return Err(unsupported(
                            "unsupported_parameter",
                            &format!("{param}.content[{j}]"),
                            self.provider,
                            "non-text content in system instructions",
                        ));
                    }
                    self.system.push(part);
                }
            }
            "assistant" => parts.into_iter().for_each(|part| self.push("model", part)),
            _ => parts.into_iter().for_each(|part| self.push("user", part)),
        }
        Ok(())
    }

    fn function_call(&mut self, param: &str, item: &Value) -> Result<(), GatewayError> {
        let text = |field: &str| item.get(field).and_then(Value::as_str).unwrap_or_default();
        let (call_id, name) = (text("call_id"), text("name"));
        let args = match text("arguments").trim() {
            "" => json!({}),
            arguments => match serde_json::from_str::<Value>(arguments) {
                Ok(args @ Value::Object(_)) => args,
                _ => {
                    return Err(GatewayError::invalid(
                        "invalid_value",
                        format!("{param}.arguments"),
                        "`arguments` must be a JSON object encoded as a string.",
                    ))
                }
            },
        };
        self.call_names.insert(call_id.to_owned(), name.to_owned());
        let mut call = json!({"name": name, "args": args});
        if let Some(id) = gemini_call_id(call_id) {
            call["id"] = json!(id);
        }
        self.push("model", json!({"functionCall": call}));
        Ok(())
    }

    fn function_output(&mut self, param: &str, item: &Value) -> Result<(), GatewayError> {
        let call_id = item.get("call_id").and_then(Value::as_str).unwrap_or_default();
        let Some(name) = self.call_names.get(call_id).cloned() else {
            return Err(GatewayError::invalid(
                "invalid_value",
                format!("{param}.call_id"),
                format!(
                    "No `function_call` with call_id `{call_id}` comes before this output in `input`; \
                     the provider `{}` needs the function's name, so send the call along with its output.",
                    self.provider
                ),
            ));
        };
        // Gemini's function responses take JSON or text: a list of parts is flattened to its text.
        let output = super::input::tool_output_text(self.provider, &format!("{param}.output"), item.get("output"))?;
        // A JSON output goes as JSON, anything else as the string it is.
        let result = serde_json::from_str::<Value>(&output).unwrap_or(Value::String(output));
        let mut response = json!({"name": name, "response": {"result": result}});
        if let Some(id) = gemini_call_id(call_id) {
            response["id"] = json!(id);
        }
        self.push("user", json!({"functionResponse": response}));
        Ok(())
    }
}

/// Gemini's own id of a function call, to echo back. Ids Mesh mints (and OpenAI-style ones)
/// start with `call_`; those Gemini never saw and are not sent.
fn gemini_call_id(call_id: &str) -> Option<&str> {
    (!call_id.is_empty() && !call_id.starts_with("call_")).then_some(call_id)
}

/// A content part of a message.
fn content_part(provider: &str, param: &str, part: &Value) -> Result<Value, GatewayError> {
    let text = |field: &str| part.get(field).and_then(Value::as_str).unwrap_or_default();
    match part.get("type").and_then(Value::as_str).unwrap_or_default() {
        "input_text" | "output_text" => Ok(json!({"text": text("text")})),
        "refusal" => Ok(json!({"text": text("refusal")})),
        "input_image" => {
            if let Some(url) = part.get("image_url").and_then(Value::as_str) {
                media_part(provider, &format!("{param}.image_url"), url, None)
            } else if part.get("file_id").is_some_and(|id| !id.is_null()) {
                Err(unsupported(
                    "unsupported_parameter",
                    &format!("{param}.file_id"),
                    provider,
                    "uploaded file ids; send the image as a data URL or an https URL",
                ))
            } else {
                Err(GatewayError::invalid(
                    "missing_required_parameter",
                    format!("{param}.image_url"),
                    "An `input_image` part needs `image_url`.",
                ))
            }
        }
        "input_file" => file_part(provider, param, part),
        other => Err(unsupported(
            "unsupported_parameter",
            &format!("{param}.type"),
            provider,
            &format!("content parts of type `{other}`"),
        )),
    }
}

fn file_part(provider: &str, param: &str, part: &Value) -> Result<Value, GatewayError> {
    let filename = part.get("filename").and_then(Value::as_str);
    if let Some(data) = part.get("file_data").and_then(Value::as_str) {
        if data.starts_with("data:") {
            return media_part(provider, &format!("{param}.file_data"), data, filename);
        }
        let Some(mime) = filename.and_then(mime_of_name) else {
            return Err(unsupported(
                "unsupported_parameter",
                &format!("{param}.file_data"),
                provider,
                "files whose media type cannot be told from `filename`; send `file_data` as a data URL",
            ));
        };
        return Ok(json!({"inlineData": {"mimeType": mime, "data": data}}));
    }
    if let Some(url) = part.get("file_url").and_then(Value::as_str) {
        return media_part(provider, &format!("{param}.file_url"), url, filename);
    }
    Err(unsupported("unsupported_parameter", param, provider, "uploaded file ids; send `file_data` or `file_url`"))
}

/// An image or file given by URL: a base64 data URL goes inline, an http(s) URL by reference.
fn media_part(provider: &str, param: &str, url: &str, filename: Option<&str>) -> Result<Value, GatewayError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let bad = || {
            GatewayError::invalid(
                "invalid_value",
                param,
                "Expected a base64 data URL such as `data:image/png;base64,...`.",
            )
        };
        let (meta, data) = rest.split_once(',').ok_or_else(bad)?;
        let mut fields = meta.split(';');
        let declared = fields.next().unwrap_or_default();
        if !fields.any(|field| field == "base64") {
            return Err(bad());
        }
        let mime = match declared {
            "" => filename.and_then(mime_of_name).ok_or_else(bad)?,
            declared => declared,
        };
        return Ok(json!({"inlineData": {"mimeType": mime, "data": data}}));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        let Some(mime) = mime_of_name(url).or_else(|| filename.and_then(mime_of_name)) else {
            return Err(unsupported(
                "unsupported_parameter",
                param,
                provider,
                "URLs whose media type cannot be told from the file extension; send a data URL",
            ));
        };
        return Ok(json!({"fileData": {"mimeType": mime, "fileUri": url}}));
    }
    Err(GatewayError::invalid("invalid_value", param, "Expected a data URL or an http(s) URL."))
}

/// The media type of a file name or URL, from its extension.
fn mime_of_name(name: &str) -> Option<&'static str> {
    let path = name.split(['?', '#']).next().unwrap_or_default();
    let file = path.rsplit('/').next().unwrap_or_default();
    let (_, extension) = file.rsplit_once('.')?;
    Some(match extension.to_ascii_lowercase().as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "wav" => "audio/wav",
        "mp3" => "audio/mp3",
        "mp4" => "video/mp4",
        _ => return None,
    })
}

/// The `functionDeclarations` of the function tools; built-in tools are refused.
fn function_declarations(provider: &str, body: &Map<String, Value>) -> Result<Option<Vec<Value>>, GatewayError> {
    let mut declarations = Vec::new();
    for tool in super::function_tools(provider, body)? {
        let mut declaration = Map::new();
        declaration.insert("name".to_owned(), tool.get("name").cloned().unwrap_or(Value::Null));
        if let Some(Value::String(description)) = tool.get("description") {
            declaration.insert("description".to_owned(), json!(description));
        }
        if let Some(parameters) = tool.get("parameters").filter(|p| p.is_object()) {
            let parameters = openapi_schema(parameters);
            // Gemini refuses an OBJECT schema without properties ("should be non-empty for
            // OBJECT type"); a function without parameters simply declares none.
            if declares_parameters(&parameters) {
                declaration.insert("parameters".to_owned(), parameters);
            }
        }
        declarations.push(Value::Object(declaration));
    }
    Ok((!declarations.is_empty()).then_some(declarations))
}

/// A JSON Schema reduced to Gemini's dialect (a subset of the OpenAPI 3.0 schema object), which
/// rejects the JSON Schema keywords `additionalProperties` and `$schema` (OpenAI strict mode
/// requires `additionalProperties: false`, so most client schemas carry it). Property *names*
/// are kept, whatever they are.
fn openapi_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, value) in map {
                match key.as_str() {
                    "additionalProperties" | "$schema" => {}
                    "properties" => {
                        let properties = match value {
                            Value::Object(properties) => Value::Object(
                                properties.iter().map(|(name, s)| (name.clone(), openapi_schema(s))).collect(),
                            ),
                            other => other.clone(),
                        };
                        out.insert(key.clone(), properties);
                    }
                    _ => {
                        out.insert(key.clone(), openapi_schema(value));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(openapi_schema).collect()),
        other => other.clone(),
    }
}

fn declares_parameters(schema: &Value) -> bool {
    let is_object = schema.get("type").is_none_or(|t| t == "object");
    !is_object || schema.get("properties").and_then(Value::as_object).is_some_and(|p| !p.is_empty())
}

/// `functionCallingConfig` for `tool_choice`.
fn tool_config(provider: &str, body: &Map<String, Value>) -> Result<Option<Value>, GatewayError> {
    let config = match body.get("tool_choice") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(choice)) => match choice.as_str() {
            "auto" => json!({"mode": "AUTO"}),
            "none" => json!({"mode": "NONE"}),
            "required" => json!({"mode": "ANY"}),
            other => {
                return Err(GatewayError::invalid(
                    "invalid_value",
                    "tool_choice",
                    format!("Invalid `tool_choice` `{other}`: expected none, auto, required or a function."),
                ))
            }
        },
        Some(Value::Object(choice)) if choice.get("type").and_then(Value::as_str) == Some("function") => {
            json!({"mode": "ANY", "allowedFunctionNames": [choice.get("name").cloned().unwrap_or(Value::Null)]})
        }
        Some(_) => {
            return Err(unsupported("unsupported_parameter", "tool_choice", provider, "this kind of `tool_choice`"))
        }
    };
    Ok(Some(config))
}

/// `generationConfig`: sampling, output limit, output format and thinking.
fn generation_config(body: &Map<String, Value>) -> Map<String, Value> {
    let mut config = Map::new();
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("max_output_tokens", "maxOutputTokens"),
        ("seed", "seed"),
        // Chat Completions fields (the `/v1/chat/completions` route sends them here).
        ("frequency_penalty", "frequencyPenalty"),
        ("presence_penalty", "presencePenalty"),
    ] {
        if let Some(value) = body.get(from).filter(|v| v.is_number()) {
            config.insert(to.to_owned(), value.clone());
        }
    }
    match body.get("stop") {
        Some(Value::String(stop)) => {
            config.insert("stopSequences".to_owned(), json!([stop]));
        }
        Some(Value::Array(stops)) if !stops.is_empty() => {
            config.insert("stopSequences".to_owned(), Value::Array(stops.clone()));
        }
        _ => {}
    }
    let format = body.get("text").and_then(|text| text.get("format"));
    match format.and_then(|f| f.get("type")).and_then(Value::as_str) {
        // `responseJsonSchema` takes JSON Schema as is (`responseSchema` wants the OpenAPI
        // subset); Google's docs name it the JSON Schema alternative.
        Some("json_schema") => {
            config.insert("responseMimeType".to_owned(), json!("application/json"));
            if let Some(schema) = format.and_then(|f| f.get("schema")).filter(|s| s.is_object()) {
                config.insert("responseJsonSchema".to_owned(), schema.clone());
            }
        }
        Some("json_object") => {
            config.insert("responseMimeType".to_owned(), json!("application/json"));
        }
        _ => {}
    }
    let reasoning = body.get("reasoning").filter(|r| r.is_object());
    let effort = reasoning.and_then(|r| r.get("effort")).and_then(Value::as_str);
    let summary = reasoning.and_then(|r| r.get("summary")).is_some_and(|s| !s.is_null());
    match effort.and_then(thinking_budget) {
        Some(0) => {
            config.insert("thinkingConfig".to_owned(), json!({"thinkingBudget": 0}));
        }
        Some(budget) => {
            config.insert("thinkingConfig".to_owned(), json!({"thinkingBudget": budget, "includeThoughts": true}));
        }
        None if summary => {
            config.insert("thinkingConfig".to_owned(), json!({"includeThoughts": true}));
        }
        None => {}
    }
    config
}

// ---------------------------------------------------------------------------------------------
// Response and stream

/// Maps the parts of one answer to deltas, across all the chunks of a stream.
#[derive(Debug, Default)]
struct PartMapper {
    /// Function calls so far: Gemini numbers none, so the count is the index.
    calls: u64,
    /// A signature went into the reasoning item still open; a second one would be glued to it.
    signature_open: bool,
}

impl PartMapper {
    fn parts(&mut self, parts: &[Value], out: &mut Vec<Delta>) {
        for part in parts {
            if let Some(signature) = part.get("thoughtSignature").and_then(Value::as_str) {
                if !signature.is_empty() && !self.signature_open {
                    out.push(Delta::ReasoningState(signature.to_owned()));
                    self.signature_open = true;
                }
            }
            if let Some(call) = part.get("functionCall") {
                let call_id = match call.get("id").and_then(Value::as_str) {
                    Some(id) if !id.is_empty() => id.to_owned(),
                    _ => new_id("call_"),
                };
                let name = call.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
                let arguments = match call.get("args") {
                    Some(args) if !args.is_null() => args.to_string(),
                    _ => "{}".to_owned(),
                };
                out.push(Delta::ToolCallStart { index: self.calls, call_id, name });
                out.push(Delta::ToolCallArguments { index: self.calls, fragment: arguments });
                self.calls += 1;
                self.signature_open = false;
            } else if let Some(text) = part.get("text").and_then(Value::as_str) {
                if part.get("thought").and_then(Value::as_bool) == Some(true) {
                    out.push(Delta::Reasoning(text.to_owned()));
                } else if !text.is_empty() {
                    out.push(Delta::Text(text.to_owned()));
                    self.signature_open = false;
                }
            }
            // Other parts (generated images, executable code) come from features Mesh refuses.
        }
    }
}

/// Decodes Gemini answers: one whole `GenerateContentResponse`, or the chunks of a stream.
#[derive(Debug, Default)]
struct GeminiDecoder {
    parts: PartMapper,
    /// The latest `usageMetadata` (each chunk carries the counts so far).
    usage: Option<TokenUsage>,
    reason: Option<FinishReason>,
    done: bool,
}

impl GeminiDecoder {
    fn chunk(&mut self, chunk: &Value) -> Vec<Delta> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        if let Some(error) = chunk.get("error") {
            let message = error.get("message").and_then(Value::as_str).unwrap_or("The provider reported an error.");
            self.reason = Some(FinishReason::Error(message.to_owned()));
            return self.end(FinishReason::Stop);
        }
        let has_usage = match chunk.get("usageMetadata").filter(|meta| meta.is_object()) {
            Some(meta) => {
                self.usage = Some(usage_of(meta));
                true
            }
            None => false,
        };
        match chunk.get("candidates").and_then(|c| c.get(0)) {
            Some(candidate) => {
                if let Some(Value::Array(parts)) = candidate.pointer("/content/parts") {
                    self.parts.parts(parts, &mut out);
                }
                if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str) {
                    self.reason = Some(finish_reason(reason));
                }
            }
            // The prompt itself was blocked: no candidate at all.
            None if chunk.pointer("/promptFeedback/blockReason").is_some() => {
                self.reason = Some(FinishReason::ContentFilter);
            }
            None => {}
        }
        if self.reason.is_some() && has_usage {
            out.extend(self.end(FinishReason::Stop));
        }
        out
    }

    /// Usage, then the finish (`fallback` when Gemini never said why it stopped).
    fn end(&mut self, fallback: FinishReason) -> Vec<Delta> {
        if self.done {
            return Vec::new();
        }
        self.done = true;
        let mut out = Vec::new();
        if let Some(usage) = self.usage.take() {
            out.push(Delta::Usage(usage));
        }
        out.push(Delta::Finish(self.reason.take().unwrap_or(fallback)));
        out
    }
}

impl DeltaDecoder for GeminiDecoder {
    fn decode(&mut self, event: SseEvent) -> Result<Vec<Delta>, StreamFault> {
        let data = event.data.trim();
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let chunk: Value = serde_json::from_str(data)
            .map_err(|_| StreamFault::Malformed("gemini event data is not JSON".to_owned()))?;
        if !chunk.is_object() {
            return Err(StreamFault::Malformed("gemini event data is not an object".to_owned()));
        }
        Ok(self.chunk(&chunk))
    }

    fn finish(&mut self) -> Vec<Delta> {
        self.end(FinishReason::Error("The provider ended the stream without saying why it stopped.".to_owned()))
    }
}

/// Token counts of a `usageMetadata`. The prompt count includes cached tokens; output is the
/// answer plus the thinking, both billed as output.
fn usage_of(meta: &Value) -> TokenUsage {
    let count = |field: &str| meta.get(field).and_then(Value::as_u64).unwrap_or(0);
    let thoughts = count("thoughtsTokenCount");
    TokenUsage {
        // Tool-use prompt tokens (results of Google's own tools) are billed as input too.
        input_tokens: count("promptTokenCount").saturating_add(count("toolUsePromptTokenCount")),
        cached_input_tokens: count("cachedContentTokenCount"),
        output_tokens: count("candidatesTokenCount").saturating_add(thoughts),
        reasoning_tokens: thoughts,
        // Gemini reports no cache writes (its implicit cache is not billed for writing).
        cache_write_tokens: 0,
    }
}

fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

fn error_of(provider: &str, status: u16, headers: &HeaderMap, bytes: &[u8]) -> GatewayError {
    let body: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    // Without `alt=sse` a failed stream answers a JSON array holding the envelope.
    let envelope = match body {
        Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
        other => other,
    };
    let error = envelope.get("error").cloned().unwrap_or(Value::Null);
    let message = error.get("message").and_then(Value::as_str).map(str::to_owned);
    let code = error.get("status").and_then(Value::as_str).map(str::to_ascii_lowercase);
    if (400..500).contains(&status) && message.as_deref().is_some_and(is_context_overflow) {
        return GatewayError::UpstreamClient(UpstreamFault {
            status: 400,
            error_type: "invalid_request_error".to_owned(),
            code: Some("context_length_exceeded".to_owned()),
            message: message.unwrap_or_default(),
            param: Some("input".to_owned()),
            retry_after_seconds: None,
        });
    }
    // Gemini refuses a bad API key (Mesh's own credential) with 400 `INVALID_ARGUMENT` and the
    // reason `API_KEY_INVALID`: that is the gateway's fault, as a 401 is.
    let status = if status == 400 && error_reason(&error) == Some("API_KEY_INVALID") { 401 } else { status };
    // Gemini states the wait in a `RetryInfo` detail rather than (or besides) `retry-after`.
    let mut headers = headers.clone();
    if status == 429 && !headers.contains_key("retry-after") {
        if let Some(seconds) = retry_delay(&error) {
            headers.insert("retry-after", HeaderValue::from(seconds));
        }
    }
    provider_fault(provider, status, &headers, None, code, message, None)
}

/// "The input token count (1234567) exceeds the maximum number of tokens allowed (1048576)."
fn is_context_overflow(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("input token count") && message.contains("exceed")
}

/// Whole seconds (rounded up) of the `google.rpc.RetryInfo` detail's `retryDelay` (`"37s"`,
/// `"1.5s"`).
/// The `reason` of the error's `google.rpc.ErrorInfo` detail.
fn error_reason(error: &Value) -> Option<&str> {
    error
        .get("details")?
        .as_array()?
        .iter()
        .find(|d| d.get("@type").and_then(Value::as_str).is_some_and(|t| t.ends_with("google.rpc.ErrorInfo")))?
        .get("reason")?
        .as_str()
}

fn retry_delay(error: &Value) -> Option<u64> {
    let details = error.get("details")?.as_array()?;
    let info = details
        .iter()
        .find(|d| d.get("@type").and_then(Value::as_str).is_some_and(|t| t.ends_with("google.rpc.RetryInfo")))?;
    let delay = info.get("retryDelay")?.as_str()?.strip_suffix('s')?;
    let (whole, fraction) = delay.split_once('.').unwrap_or((delay, ""));
    let whole: u64 = whole.parse().ok()?;
    let round_up = fraction.bytes().any(|b| b != b'0');
    Some(whole + u64::from(round_up))
}

#[cfg(test)]
mod tests;
