//! Request out: the provider request built from a Responses request.

use super::*;

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
pub(super) fn chat_request(
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
            return Err(crate::providers::unsupported("unsupported_plugin", "plugins", provider, "plugins"));
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

pub(super) fn refuse_unsupported(provider: &str, body: &Map<String, Value>) -> Result<(), GatewayError> {
    if body.get("background").and_then(Value::as_bool) == Some(true) {
        return Err(unsupported_parameter("background", provider, "background responses (`background: true`)"));
    }
    crate::providers::input::newer_fields(provider, body)?;
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
pub(super) fn messages(provider: &str, body: &Map<String, Value>) -> Result<Vec<ChatMessage>, GatewayError> {
    let mut sink = ChatMessages { provider, messages: Vec::new(), calls_join: false };
    if let Some(instructions) = body.get("instructions").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        sink.messages.push(ChatMessage::new("system", Value::String(instructions.to_owned())));
    }
    walk(provider, &Input::of(body)?, &mut sink)?;
    Ok(sink.messages)
}

/// Builds the Chat `messages` from the walk of `input`.
pub(super) struct ChatMessages<'p> {
    pub(super) provider: &'p str,
    pub(super) messages: Vec<ChatMessage>,
    /// Whether the last message is an assistant turn that following function calls join.
    pub(super) calls_join: bool,
}

/// A Chat content part, and its text when it is a text part.
pub(super) type ChatPart = (Value, Option<String>);

impl<'a> InputSink<'a> for ChatMessages<'_> {
    type Block = ChatPart;
    const TOOL_OUTPUT_PARTS: bool = false;

    /// Images, files and audio only in user messages.
    fn block(&mut self, param: &str, speaker: Speaker, part: &Part<'a>) -> Result<Option<ChatPart>, GatewayError> {
        let provider = self.provider;
        Ok(Some(match part {
            Part::Text(text) => (json!({"type": "text", "text": text}), Some((*text).to_owned())),
            Part::Image(_) | Part::File(_) | Part::Audio(_) if speaker != Speaker::User => {
                return Err(unsupported_parameter(
                    &format!("{param}.type"),
                    provider,
                    &format!("`{}` parts in {} messages", part.kind(), speaker.name()),
                ));
            }
            Part::Image(image) => (image_part(provider, param, image)?, None),
            Part::File(file) => (file_part(provider, param, file)?, None),
            Part::Audio(audio) => (json!({"type": "input_audio", "input_audio": audio}), None),
            Part::Other(_) => return Err(unsupported_part(provider, param, part)),
        }))
    }

    fn system(&mut self, texts: Vec<&'a str>) -> Result<(), GatewayError> {
        self.messages.push(ChatMessage::new("system", Value::String(texts.join("\n"))));
        self.calls_join = false;
        Ok(())
    }

    /// Text-only content is one string, its parts joined by a newline.
    fn message(&mut self, speaker: Speaker, blocks: Vec<ChatPart>) -> Result<(), GatewayError> {
        let content = if blocks.iter().all(|(_, text)| text.is_some()) {
            Value::String(blocks.into_iter().filter_map(|(_, text)| text).collect::<Vec<_>>().join("\n"))
        } else {
            Value::Array(blocks.into_iter().map(|(part, _)| part).collect())
        };
        self.messages.push(ChatMessage::new(speaker.name(), content));
        self.calls_join = speaker == Speaker::Assistant;
        Ok(())
    }

    fn function_call(&mut self, _: &str, call: &FunctionCall<'a>) -> Result<(), GatewayError> {
        let call = ChatToolCall {
            id: call.call_id.to_owned(),
            kind: "function",
            function: ChatFunctionCall { name: call.name.to_owned(), arguments: call.arguments.to_owned() },
        };
        match self.messages.last_mut() {
            Some(last) if self.calls_join => last.tool_calls.push(call),
            _ => {
                let mut turn = ChatMessage::new("assistant", Value::Null);
                turn.tool_calls.push(call);
                self.messages.push(turn);
                self.calls_join = true;
            }
        }
        Ok(())
    }

    fn function_call_output(
        &mut self,
        _: &str,
        call_id: &'a str,
        output: Output<ChatPart>,
    ) -> Result<(), GatewayError> {
        let text = match output {
            Output::Text(text) => text,
            Output::Blocks(parts) => parts.into_iter().filter_map(|(_, text)| text).collect::<Vec<_>>().join("\n"),
        };
        let mut answer = ChatMessage::new("tool", Value::String(text));
        answer.tool_call_id = Some(call_id.to_owned());
        self.messages.push(answer);
        self.calls_join = false;
        Ok(())
    }

    fn reasoning(&mut self, _: &str, _: &Reasoning<'a>) -> Result<(), GatewayError> {
        Ok(())
    }
}

pub(super) fn image_part(provider: &str, param: &str, image: &Image<'_>) -> Result<Value, GatewayError> {
    let Some(url) = image.url else {
        if image.file_id.is_some() {
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
    let mut image_url = json!({"url": url});
    if let Some(detail) = image.detail {
        image_url["detail"] = detail.clone();
    }
    Ok(json!({"type": "image_url", "image_url": image_url}))
}

pub(super) fn file_part(provider: &str, param: &str, file: &File<'_>) -> Result<Value, GatewayError> {
    let Some(data) = file.data else {
        let field = if file.file_id.is_some() { "file_id" } else { "file_url" };
        return Err(unsupported_parameter(
            &format!("{param}.{field}"),
            provider,
            &format!("files by `{field}` (send `file_data`)"),
        ));
    };
    let mut out = json!({"file_data": data});
    if let Some(name) = file.filename {
        out["filename"] = json!(name);
    }
    Ok(json!({"type": "file", "file": out}))
}

/// `reasoning.effort` → `reasoning_effort`. Chat Completions takes the same seven values
/// (`ReasoningEffort` is one type in the SDKs), so each maps to itself: a compatible provider
/// that knows fewer refuses the others with its own 400.
pub(super) fn reasoning_effort(body: &Map<String, Value>) -> Option<String> {
    body.get("reasoning")?.get("effort")?.as_str().map(str::to_owned)
}

/// Function tools, nested the Chat way; built-in tools are refused.
///
/// `strict` is sent only when the client set it: the Responses API defaults it to true, Chat
/// providers to false, and several reject the field altogether.
pub(super) fn tools(provider: &str, body: &Map<String, Value>) -> Result<Vec<ChatTool>, GatewayError> {
    Ok(crate::providers::function_tools(provider, body)?
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

pub(super) fn tool_choice(
    provider: &str,
    body: &Map<String, Value>,
    has_tools: bool,
) -> Result<Option<Value>, GatewayError> {
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
pub(super) fn response_format(body: &Map<String, Value>) -> Option<Value> {
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
pub(super) fn responses_param(param: &str) -> String {
    match param {
        "max_tokens" | "max_completion_tokens" => "max_output_tokens".to_owned(),
        "reasoning_effort" => "reasoning.effort".to_owned(),
        p if p.starts_with("messages") => "input".to_owned(),
        p if p.starts_with("response_format") => "text.format".to_owned(),
        p => p.to_owned(),
    }
}
