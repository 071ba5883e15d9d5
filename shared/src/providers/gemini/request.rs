//! Request out: the provider request built from a Responses request.

use super::*;

/// The Gemini `GenerateContentRequest` for a Responses request body.
pub(super) fn request_body(provider: &str, body: &Map<String, Value>) -> Result<Value, GatewayError> {
    refuse_unsupported(provider, body)?;
    let mut conversation = Conversation::new(provider);
    if let Some(Value::String(instructions)) = body.get("instructions") {
        if !instructions.is_empty() {
            conversation.system.push(json!({"text": instructions}));
        }
    }
    walk(provider, &Input::of(body)?, &mut conversation)?;
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
pub(super) fn refuse_unsupported(provider: &str, body: &Map<String, Value>) -> Result<(), GatewayError> {
    if body.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
        return Err(unsupported(
            "unsupported_parameter",
            "parallel_tool_calls",
            provider,
            "turning parallel function calls off (`parallel_tool_calls: false`)",
        ));
    }
    crate::providers::input::newer_fields(provider, body)?;
    crate::providers::input::default_verbosity_only(provider, body)?;
    crate::providers::input::standard_tier_only(provider, body)?;
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
pub(super) struct Turn {
    pub(super) role: &'static str,
    pub(super) parts: Vec<Value>,
}

/// Builds Gemini `contents` (and the system text) from the Responses input, in order.
#[derive(Debug)]
pub(super) struct Conversation<'a> {
    pub(super) provider: &'a str,
    pub(super) system: Vec<Value>,
    pub(super) turns: Vec<Turn>,
    /// Function name of every `function_call` seen so far, by call id (a Gemini function
    /// response names its function; a Responses output only names the call).
    pub(super) call_names: HashMap<String, String>,
    /// A signature (a reasoning item's `encrypted_content`) waiting for the next model part.
    pub(super) signature: Option<String>,
}

impl<'a> Conversation<'a> {
    pub(super) fn new(provider: &'a str) -> Self {
        Conversation { provider, system: Vec::new(), turns: Vec::new(), call_names: HashMap::new(), signature: None }
    }

    /// Adds a part, merging it into the previous turn when the role is the same (Gemini wants
    /// the roles to alternate).
    pub(super) fn push(&mut self, role: &'static str, mut part: Value) {
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
    pub(super) fn settle_signature(&mut self) {
        let Some(signature) = self.signature.take() else { return };
        if let Some(turn) = self.turns.last_mut().filter(|turn| turn.role == "model") {
            if let Some(last) = turn.parts.last_mut().filter(|part| part.get("thoughtSignature").is_none()) {
                last["thoughtSignature"] = Value::String(signature);
            }
        }
    }

    /// The `contents` and the system parts.
    pub(super) fn finish(mut self) -> (Vec<Value>, Vec<Value>) {
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
}

impl<'a> InputSink<'a> for Conversation<'_> {
    type Block = Value;
    const TOOL_OUTPUT_PARTS: bool = false;

    fn block(&mut self, param: &str, _: Speaker, part: &Part<'a>) -> Result<Option<Value>, GatewayError> {
        content_part(self.provider, param, part).map(Some)
    }

    fn system(&mut self, texts: Vec<&'a str>) -> Result<(), GatewayError> {
        self.system.extend(texts.into_iter().map(|text| json!({"text": text})));
        Ok(())
    }

    fn message(&mut self, speaker: Speaker, parts: Vec<Value>) -> Result<(), GatewayError> {
        let role = if speaker == Speaker::Assistant { "model" } else { "user" };
        parts.into_iter().for_each(|part| self.push(role, part));
        Ok(())
    }

    fn function_call(&mut self, param: &str, call: &FunctionCall<'a>) -> Result<(), GatewayError> {
        let args = call.arguments_object(param)?;
        self.call_names.insert(call.call_id.to_owned(), call.name.to_owned());
        let mut function_call = json!({"name": call.name, "args": args});
        if let Some(id) = gemini_call_id(call.call_id) {
            function_call["id"] = json!(id);
        }
        self.push("model", json!({"functionCall": function_call}));
        Ok(())
    }

    /// Gemini's function responses take JSON or text: a list of parts is flattened to its text.
    fn function_call_output(
        &mut self,
        param: &str,
        call_id: &'a str,
        output: Output<Value>,
    ) -> Result<(), GatewayError> {
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
        let output = match output {
            Output::Text(text) => text,
            Output::Blocks(_) => String::new(),
        };
        // A JSON output goes as JSON, anything else as the string it is.
        let result = serde_json::from_str::<Value>(&output).unwrap_or(Value::String(output));
        let mut response = json!({"name": name, "response": {"result": result}});
        if let Some(id) = gemini_call_id(call_id) {
            response["id"] = json!(id);
        }
        self.push("user", json!({"functionResponse": response}));
        Ok(())
    }

    /// Reasoning summaries are not sent back: Gemini takes its earlier thinking only as the
    /// opaque signature, which rides on the model part that follows.
    fn reasoning(&mut self, _: &str, reasoning: &Reasoning<'a>) -> Result<(), GatewayError> {
        if let Some(signature) = reasoning.encrypted_content {
            self.signature = Some(signature.to_owned());
        }
        Ok(())
    }
}

/// Gemini's own id of a function call, to echo back. Ids Mesh mints (and OpenAI-style ones)
/// start with `call_`; those Gemini never saw and are not sent.
pub(super) fn gemini_call_id(call_id: &str) -> Option<&str> {
    (!call_id.is_empty() && !call_id.starts_with("call_")).then_some(call_id)
}

/// A content part of a message.
pub(super) fn content_part(provider: &str, param: &str, part: &Part<'_>) -> Result<Value, GatewayError> {
    match part {
        Part::Text(text) => Ok(json!({"text": text})),
        Part::Image(Image { url: Some(url), .. }) => media_part(provider, &format!("{param}.image_url"), url, None),
        Part::Image(Image { file_id: Some(_), .. }) => Err(unsupported(
            "unsupported_parameter",
            &format!("{param}.file_id"),
            provider,
            "uploaded file ids; send the image as a data URL or an https URL",
        )),
        Part::Image(_) => Err(GatewayError::invalid(
            "missing_required_parameter",
            format!("{param}.image_url"),
            "An `input_image` part needs `image_url`.",
        )),
        Part::File(file) => file_part(provider, param, file),
        Part::Audio(_) | Part::Other(_) => Err(unsupported_part(provider, param, part)),
    }
}

pub(super) fn file_part(provider: &str, param: &str, file: &File<'_>) -> Result<Value, GatewayError> {
    let filename = file.filename;
    if let Some(data) = file.data {
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
    if let Some(url) = file.url {
        return media_part(provider, &format!("{param}.file_url"), url, filename);
    }
    Err(unsupported("unsupported_parameter", param, provider, "uploaded file ids; send `file_data` or `file_url`"))
}

/// An image or file given by URL: a base64 data URL goes inline, an http(s) URL by reference.
pub(super) fn media_part(
    provider: &str,
    param: &str,
    url: &str,
    filename: Option<&str>,
) -> Result<Value, GatewayError> {
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
pub(super) fn mime_of_name(name: &str) -> Option<&'static str> {
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
pub(super) fn function_declarations(
    provider: &str,
    body: &Map<String, Value>,
) -> Result<Option<Vec<Value>>, GatewayError> {
    let mut declarations = Vec::new();
    for tool in crate::providers::function_tools(provider, body)? {
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
pub(super) fn openapi_schema(schema: &Value) -> Value {
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

pub(super) fn declares_parameters(schema: &Value) -> bool {
    let is_object = schema.get("type").is_none_or(|t| t == "object");
    !is_object || schema.get("properties").and_then(Value::as_object).is_some_and(|p| !p.is_empty())
}

/// `functionCallingConfig` for `tool_choice`.
pub(super) fn tool_config(provider: &str, body: &Map<String, Value>) -> Result<Option<Value>, GatewayError> {
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
pub(super) fn generation_config(body: &Map<String, Value>) -> Map<String, Value> {
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
