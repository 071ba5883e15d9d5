//! Request out: the provider request built from a Responses request.

use super::*;

/// The Messages request for a Responses request body.
pub(super) fn build_request(
    provider: &str,
    row: &ModelPrice,
    body: &Map<String, Value>,
    stream: bool,
) -> Result<AnthropicRequest, GatewayError> {
    refuse_unsupported(provider, body)?;
    let mut conversation = Conversation { provider, system: Vec::new(), turns: Turns::default() };
    if let Some(Value::String(instructions)) = body.get("instructions") {
        conversation.system_text(instructions);
    }
    walk(provider, &Input::of(body)?, &mut conversation)?;
    if let Some(instruction) = format_instruction(body) {
        conversation.system_text(&instruction);
    }
    let Conversation { system, turns, .. } = conversation;
    let messages = turns.finish(
        provider,
        |block| matches!(block, AnthropicBlock::ToolResult { .. }),
        |speaker, content| AnthropicMessage { role: speaker, content },
    )?;
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
pub(super) fn service_tier(provider: &str, body: &Map<String, Value>) -> Result<Option<&'static str>, GatewayError> {
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
pub(super) fn refuse_unsupported(provider: &str, body: &Map<String, Value>) -> Result<(), GatewayError> {
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
pub(super) fn thinking_budget(body: &Map<String, Value>) -> Option<u64> {
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
pub(super) fn format_instruction(body: &Map<String, Value>) -> Option<String> {
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
pub(super) fn translate_tools(provider: &str, body: &Map<String, Value>) -> Result<Vec<AnthropicTool>, GatewayError> {
    let list = crate::providers::function_tools(provider, body)?;
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
pub(super) fn translate_tool_choice(
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

/// Builds the `system` blocks and the strictly alternating `messages` from the walk of `input`.
#[derive(Debug)]
pub(super) struct Conversation<'p> {
    pub(super) provider: &'p str,
    pub(super) system: Vec<AnthropicText>,
    pub(super) turns: Turns<AnthropicBlock>,
}

impl Conversation<'_> {
    pub(super) fn system_text(&mut self, text: &str) {
        if !text.is_empty() {
            self.system.push(AnthropicText { kind: "text", text: text.to_owned() });
        }
    }
}

impl<'a> InputSink<'a> for Conversation<'_> {
    type Block = AnthropicBlock;
    const TOOL_OUTPUT_PARTS: bool = true;

    fn block(&mut self, param: &str, _: Speaker, part: &Part<'a>) -> Result<Option<AnthropicBlock>, GatewayError> {
        Ok(match part {
            // Anthropic refuses empty text blocks.
            Part::Text(text) => (!text.is_empty()).then(|| AnthropicBlock::Text { text: (*text).to_owned() }),
            Part::Image(image) => Some(image_block(self.provider, param, image)?),
            Part::File(file) => Some(document_block(self.provider, param, file)?),
            Part::Audio(_) | Part::Other(_) => return Err(unsupported_part(self.provider, param, part)),
        })
    }

    fn system(&mut self, texts: Vec<&'a str>) -> Result<(), GatewayError> {
        texts.into_iter().for_each(|text| self.system_text(text));
        Ok(())
    }

    fn message(&mut self, speaker: Speaker, blocks: Vec<AnthropicBlock>) -> Result<(), GatewayError> {
        self.turns.push(speaker, blocks);
        Ok(())
    }

    fn function_call(&mut self, param: &str, call: &FunctionCall<'a>) -> Result<(), GatewayError> {
        let input = call.arguments_object(param)?;
        let block = AnthropicBlock::ToolUse { id: call.call_id.to_owned(), name: call.name.to_owned(), input };
        self.turns.push(Speaker::Assistant, vec![block]);
        Ok(())
    }

    fn function_call_output(
        &mut self,
        _: &str,
        call_id: &'a str,
        output: Output<AnthropicBlock>,
    ) -> Result<(), GatewayError> {
        let content = match output {
            Output::Blocks(blocks) => AnthropicToolResult::Blocks(blocks),
            Output::Text(text) => AnthropicToolResult::Text(text),
        };
        self.turns.push(Speaker::User, vec![AnthropicBlock::ToolResult { tool_use_id: call_id.to_owned(), content }]);
        Ok(())
    }

    fn reasoning(&mut self, _: &str, reasoning: &Reasoning<'a>) -> Result<(), GatewayError> {
        // Only signed reasoning can go back: Anthropic verifies thinking by its signature.
        if let Some(state) = reasoning.encrypted_content {
            self.turns.reason(match state.strip_prefix(REDACTED_PREFIX) {
                Some(data) => AnthropicBlock::RedactedThinking { data: data.to_owned() },
                None => AnthropicBlock::Thinking { thinking: reasoning.summary_text(), signature: state.to_owned() },
            });
        }
        Ok(())
    }
}

pub(super) fn image_block(provider: &str, param: &str, image: &Image<'_>) -> Result<AnthropicBlock, GatewayError> {
    let url = image.url.unwrap_or_default();
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

pub(super) fn document_block(provider: &str, param: &str, file: &File<'_>) -> Result<AnthropicBlock, GatewayError> {
    let file_url = file.url.unwrap_or_default();
    let source = if let Some((media_type @ "application/pdf", data)) = data_url(file.data.unwrap_or_default()) {
        AnthropicSource::Base64 { media_type: media_type.to_owned(), data: data.to_owned() }
    } else if file_url.starts_with("https://") || file_url.starts_with("http://") {
        AnthropicSource::Url { url: file_url.to_owned() }
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
