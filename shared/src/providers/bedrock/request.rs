//! Request out: the provider request built from a Responses request.

use super::*;

pub(super) fn build_request(
    provider: &str,
    s3_buckets: &[String],
    row: &ModelPrice,
    body: &Map<String, Value>,
) -> Result<ConverseRequest, GatewayError> {
    refuse_unsupported(provider, body)?;
    let mut conversation = Conversation {
        provider,
        s3_buckets,
        system: Vec::new(),
        turns: Turns::default(),
        has_tool_blocks: false,
        history_tools: Vec::new(),
    };
    if let Some(Value::String(instructions)) = body.get("instructions") {
        conversation.system_text(instructions);
    }
    walk(provider, &Input::of(body)?, &mut conversation)?;
    let (output_config, instruction) = output_format(body);
    if let Some(instruction) = instruction {
        conversation.system_text(&instruction);
    }
    let Conversation { system, turns, has_tool_blocks, history_tools, .. } = conversation;
    let messages = turns.finish(
        provider,
        |block| matches!(block, Block::ToolResult(_)),
        |speaker, content| Message { role: speaker, content },
    )?;
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
pub(super) fn metadata_value(text: &str) -> String {
    text.chars()
        .take(256)
        .map(
            |c| if c.is_ascii_alphanumeric() || c.is_ascii_whitespace() || ":_@$#=/+,-.".contains(c) { c } else { '_' },
        )
        .collect()
}

/// Refuses parameters Converse has no equivalent for.
pub(super) fn refuse_unsupported(provider: &str, body: &Map<String, Value>) -> Result<(), GatewayError> {
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
pub(super) fn thinking_budget(provider: &str, upstream_model: &str, effort: &str) -> Result<Option<u64>, GatewayError> {
    let Some(budget) = crate::providers::anthropic::thinking_budget_of(effort) else { return Ok(None) };
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
pub(super) fn output_format(body: &Map<String, Value>) -> (Option<OutputConfig>, Option<String>) {
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
pub(super) fn tool_config(
    provider: &str,
    body: &Map<String, Value>,
    has_tool_blocks: bool,
    history_tools: &[String],
) -> Result<Option<ToolConfig>, GatewayError> {
    let list = crate::providers::function_tools(provider, body)?;
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

/// Builds the `system` blocks and the alternating `messages` from the walk of `input`.
#[derive(Debug)]
pub(super) struct Conversation<'p> {
    pub(super) provider: &'p str,
    pub(super) s3_buckets: &'p [String],
    pub(super) system: Vec<SystemBlock>,
    pub(super) turns: Turns<Block>,
    pub(super) has_tool_blocks: bool,
    /// Names of the functions the conversation's `toolUse` blocks call, in order of first use.
    pub(super) history_tools: Vec<String>,
}

impl Conversation<'_> {
    pub(super) fn system_text(&mut self, text: &str) {
        if !text.is_empty() {
            self.system.push(SystemBlock { text: text.to_owned() });
        }
    }
}

impl<'a> InputSink<'a> for Conversation<'_> {
    type Block = Block;
    const TOOL_OUTPUT_PARTS: bool = true;

    fn block(&mut self, param: &str, _: Speaker, part: &Part<'a>) -> Result<Option<Block>, GatewayError> {
        Ok(match part {
            // Converse refuses blank text blocks.
            Part::Text(text) => (!text.trim().is_empty()).then(|| Block::Text((*text).to_owned())),
            Part::Image(image) => Some(Block::Image(image_source(self.provider, self.s3_buckets, param, image)?)),
            Part::File(file) => Some(Block::Document(document(self.provider, param, file)?)),
            Part::Audio(_) | Part::Other(_) => return Err(unsupported_part(self.provider, param, part)),
        })
    }

    fn system(&mut self, texts: Vec<&'a str>) -> Result<(), GatewayError> {
        // A blank system text is left out, as a blank text block is.
        texts.into_iter().filter(|text| !text.trim().is_empty()).for_each(|text| self.system_text(text));
        Ok(())
    }

    fn message(&mut self, speaker: Speaker, blocks: Vec<Block>) -> Result<(), GatewayError> {
        self.turns.push(speaker, blocks);
        Ok(())
    }

    fn function_call(&mut self, param: &str, call: &FunctionCall<'a>) -> Result<(), GatewayError> {
        let input = call.arguments_object(param)?;
        self.has_tool_blocks = true;
        if !self.history_tools.iter().any(|name| name == call.name) {
            self.history_tools.push(call.name.to_owned());
        }
        let tool_use = ToolUse { tool_use_id: call.call_id.to_owned(), name: call.name.to_owned(), input };
        self.turns.push(Speaker::Assistant, vec![Block::ToolUse(tool_use)]);
        Ok(())
    }

    fn function_call_output(&mut self, _: &str, call_id: &'a str, output: Output<Block>) -> Result<(), GatewayError> {
        let content = match output {
            Output::Blocks(blocks) => blocks
                .into_iter()
                .map(|block| match block {
                    Block::Text(text) => json!({"text": text}),
                    Block::Image(image) => json!({"image": image}),
                    Block::Document(document) => json!({"document": document}),
                    _ => Value::Null,
                })
                .collect(),
            Output::Text(text) => vec![json!({"text": text})],
        };
        self.has_tool_blocks = true;
        self.turns
            .push(Speaker::User, vec![Block::ToolResult(ToolResult { tool_use_id: call_id.to_owned(), content })]);
        Ok(())
    }

    fn reasoning(&mut self, _: &str, reasoning: &Reasoning<'a>) -> Result<(), GatewayError> {
        // Only signed reasoning can go back: Claude verifies it by its signature.
        if let Some(state) = reasoning.encrypted_content {
            self.turns.reason(Block::ReasoningContent(match state.strip_prefix(REDACTED_PREFIX) {
                Some(data) => json!({"redactedContent": data}),
                None => json!({"reasoningText": {"text": reasoning.summary_text(), "signature": state}}),
            }));
        }
        Ok(())
    }
}

/// Images go as bytes (base64 `data:` URLs) or S3 locations (`s3://` URLs) in an allowed bucket;
/// Bedrock fetches no http(s) URLs.
pub(super) fn image_source(
    provider: &str,
    s3_buckets: &[String],
    param: &str,
    image: &Image<'_>,
) -> Result<Value, GatewayError> {
    let url = image.url.unwrap_or_default();
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
pub(super) fn check_s3_location(
    provider: &str,
    s3_buckets: &[String],
    param: &str,
    location: &str,
) -> Result<(), GatewayError> {
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
pub(super) fn document(provider: &str, param: &str, file: &File<'_>) -> Result<Value, GatewayError> {
    let Some(("application/pdf", data)) = data_url(file.data.unwrap_or_default()) else {
        return Err(unsupported(
            "unsupported_parameter",
            param,
            provider,
            "files other than PDFs as base64 `data:` URLs (no `file_url`, no `file_id`)",
        ));
    };
    let name: String = file
        .filename
        .unwrap_or_default()
        .trim_end_matches(".pdf")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '(' | ')' | '[' | ']') { c } else { '-' })
        .collect();
    // Unnamed documents are named by their place in the message (`input[i].content[j]`: j + 1).
    let index = param.rsplit('[').next().and_then(|tail| tail.trim_end_matches(']').parse::<usize>().ok());
    let name = if name.trim().is_empty() { format!("document-{}", index.unwrap_or_default() + 1) } else { name };
    Ok(json!({"format": "pdf", "name": name, "source": {"bytes": data}}))
}
