//! Validation of `POST /v1/chat/completions` bodies: the fields Mesh acts on or translates are
//! checked with Chat Completions names (`messages[2].tool_calls[0].function.name`), each bad one
//! answered with a 400 naming it; fields Mesh does not know are left to the provider.

use serde_json::{Map, Value};

use crate::error::GatewayError;
use crate::request::{
    check_format, check_metadata, check_plugins, check_variables, expect_type, integer_at_least, invalid_value,
    number_in, optional_bool, optional_string, require_string, type_name, valid_function_name, MAX_INPUT_ITEMS,
    REASONING_EFFORTS,
};

fn missing(param: &str) -> GatewayError {
    GatewayError::invalid("missing_required_parameter", param, format!("Missing required parameter: `{param}`."))
}

/// Checks a body; `store: true` is refused (Mesh does not store chat completions).
pub(super) fn check(body: &Map<String, Value>) -> Result<(), GatewayError> {
    if optional_string(body, "model", 256)?.as_deref() == Some("") {
        return Err(invalid_value("model", "`model` must not be empty.".to_owned()));
    }
    let template = optional_string(body, "template", 256)?;
    check_variables(body)?;
    match body.get("messages") {
        None | Some(Value::Null) if template.is_none() => {
            return Err(GatewayError::invalid(
                "missing_required_parameter",
                "messages",
                "Missing required parameter: `messages` (a list of chat messages).",
            ))
        }
        None | Some(Value::Null) => {}
        Some(Value::Array(messages)) => check_messages(messages)?,
        Some(other) => expect_type("messages", other, false, "an array of messages")?,
    }
    for field in ["stream", "logprobs", "parallel_tool_calls"] {
        optional_bool(body, field)?;
    }
    if optional_bool(body, "store")? == Some(true) {
        return Err(GatewayError::invalid(
            "unsupported_parameter",
            "store",
            "Mesh does not store chat completions: send `store: false` or leave `store` out \
             (stored conversations are available through `/v1/responses`).",
        ));
    }
    match body.get("stream_options") {
        None | Some(Value::Null) => {}
        Some(Value::Object(options)) => {
            optional_bool(options, "include_usage").map_err(|_| {
                GatewayError::invalid(
                    "invalid_type",
                    "stream_options.include_usage",
                    "Invalid type for `stream_options.include_usage`: expected a boolean.",
                )
            })?;
        }
        Some(other) => expect_type("stream_options", other, false, "an object")?,
    }
    for field in ["max_tokens", "max_completion_tokens"] {
        integer_at_least(body, field, 1)?;
    }
    if integer_at_least(body, "n", 1)?.is_some_and(|n| n > 128) {
        return Err(invalid_value("n", "`n` must be at most 128.".to_owned()));
    }
    integer_at_least(body, "seed", i64::MIN)?;
    number_in(body, "temperature", 0.0, 2.0)?;
    number_in(body, "top_p", 0.0, 1.0)?;
    number_in(body, "frequency_penalty", -2.0, 2.0)?;
    number_in(body, "presence_penalty", -2.0, 2.0)?;
    number_in(body, "top_logprobs", 0.0, 20.0)?;
    optional_string(body, "user", 256)?;
    optional_string(body, "session_id", 256)?;
    check_metadata(body)?;
    match body.get("reasoning_effort") {
        None | Some(Value::Null) => {}
        Some(Value::String(e)) if REASONING_EFFORTS.contains(&e.as_str()) => {}
        Some(Value::String(e)) => {
            return Err(invalid_value(
                "reasoning_effort",
                format!("Invalid `reasoning_effort` `{e}`: expected one of {}.", REASONING_EFFORTS.join(", ")),
            ))
        }
        Some(other) => expect_type("reasoning_effort", other, false, "a string")?,
    }
    match body.get("logit_bias") {
        None | Some(Value::Null) => {}
        Some(Value::Object(bias)) => {
            for (token, value) in bias {
                let param = format!("logit_bias.{token}");
                match value.as_f64() {
                    Some(v) if (-100.0..=100.0).contains(&v) => {}
                    Some(_) => return Err(invalid_value(&param, format!("`{param}` must be between -100 and 100."))),
                    None => expect_type(&param, value, false, "a number")?,
                }
            }
        }
        Some(other) => expect_type("logit_bias", other, false, "an object")?,
    }
    match body.get("stop") {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(Value::Array(stops)) => {
            for (i, stop) in stops.iter().enumerate() {
                expect_type(&format!("stop[{i}]"), stop, stop.is_string(), "a string")?;
            }
        }
        Some(other) => expect_type("stop", other, false, "a string or an array of strings")?,
    }
    check_tools(body)?;
    check_tool_choice(body)?;
    if let Some(format) = body.get("response_format").filter(|f| !f.is_null()) {
        check_format("response_format", format, true)?;
    }
    check_plugins(body)
}

const ROLES: [&str; 6] = ["system", "developer", "user", "assistant", "tool", "function"];

fn check_messages(messages: &[Value]) -> Result<(), GatewayError> {
    if messages.len() > MAX_INPUT_ITEMS {
        return Err(invalid_value(
            "messages",
            format!("`messages` may hold at most {MAX_INPUT_ITEMS} messages, got {}.", messages.len()),
        ));
    }
    for (i, message) in messages.iter().enumerate() {
        let param = format!("messages[{i}]");
        let Value::Object(message) = message else { return expect_type(&param, message, false, "a message object") };
        let role = match message.get("role") {
            Some(Value::String(role)) if ROLES.contains(&role.as_str()) => role.as_str(),
            Some(Value::String(role)) => {
                return Err(invalid_value(
                    &format!("{param}.role"),
                    format!("Invalid role `{role}`: expected one of {}.", ROLES.join(", ")),
                ))
            }
            Some(other) => return expect_type(&format!("{param}.role"), other, false, "a string"),
            None => return Err(missing(&format!("{param}.role"))),
        };
        optional_string(message, "name", 256).map_err(|_| {
            GatewayError::invalid(
                "invalid_type",
                format!("{param}.name"),
                format!("Invalid type for `{param}.name`: expected a string."),
            )
        })?;
        let content = message.get("content").filter(|c| !c.is_null());
        match role {
            "assistant" => {
                if let Some(content) = content {
                    check_content(&param, content, &["text", "refusal"])?;
                }
                check_tool_calls(&param, message)?;
            }
            "tool" => {
                require_string(&param, message, "tool_call_id")?;
                check_content(&param, content.ok_or_else(|| missing(&format!("{param}.content")))?, &["text"])?;
            }
            "function" => {
                require_string(&param, message, "name")?;
            }
            "user" => {
                let content = content.ok_or_else(|| missing(&format!("{param}.content")))?;
                check_content(&param, content, &["text", "image_url", "input_audio", "file"])?;
            }
            _ => {
                check_content(&param, content.ok_or_else(|| missing(&format!("{param}.content")))?, &["text"])?;
            }
        }
    }
    Ok(())
}

/// A message's content: a string, or parts of the `allowed` types.
fn check_content(param: &str, content: &Value, allowed: &[&str]) -> Result<(), GatewayError> {
    let parts = match content {
        Value::String(_) => return Ok(()),
        Value::Array(parts) => parts,
        other => {
            return expect_type(&format!("{param}.content"), other, false, "a string or an array of content parts")
        }
    };
    for (j, part) in parts.iter().enumerate() {
        let part_param = format!("{param}.content[{j}]");
        let Value::Object(part) = part else { return expect_type(&part_param, part, false, "a content part object") };
        let kind = match part.get("type") {
            Some(Value::String(kind)) => kind.as_str(),
            Some(other) => return expect_type(&format!("{part_param}.type"), other, false, "a string"),
            None => return Err(missing(&format!("{part_param}.type"))),
        };
        if !allowed.contains(&kind) {
            return Err(invalid_value(
                &format!("{part_param}.type"),
                format!("Invalid content part type `{kind}` here: expected one of {}.", allowed.join(", ")),
            ));
        }
        let object_field = |field: &str| object_member(&part_param, part, field);
        match kind {
            "text" => require_string(&part_param, part, "text")?,
            "refusal" => require_string(&part_param, part, "refusal")?,
            "image_url" => require_string(&format!("{part_param}.image_url"), object_field("image_url")?, "url")?,
            "input_audio" => {
                let audio = object_field("input_audio")?;
                require_string(&format!("{part_param}.input_audio"), audio, "data")?;
                require_string(&format!("{part_param}.input_audio"), audio, "format")?;
            }
            _ => {
                object_field("file")?;
            }
        }
    }
    Ok(())
}

/// The object `field` of `part`, or the 400 naming it.
fn object_member<'a>(
    param: &str,
    part: &'a Map<String, Value>,
    field: &str,
) -> Result<&'a Map<String, Value>, GatewayError> {
    match part.get(field) {
        Some(Value::Object(inner)) => Ok(inner),
        Some(other) => Err(GatewayError::invalid(
            "invalid_type",
            format!("{param}.{field}"),
            format!("Invalid type for `{param}.{field}`: expected an object, got {}.", type_name(other)),
        )),
        None => Err(missing(&format!("{param}.{field}"))),
    }
}

fn check_tool_calls(param: &str, message: &Map<String, Value>) -> Result<(), GatewayError> {
    let calls = match message.get("tool_calls") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(calls)) => calls,
        Some(other) => return expect_type(&format!("{param}.tool_calls"), other, false, "an array"),
    };
    for (k, call) in calls.iter().enumerate() {
        let call_param = format!("{param}.tool_calls[{k}]");
        let Value::Object(call) = call else { return expect_type(&call_param, call, false, "a tool call object") };
        require_string(&call_param, call, "id")?;
        match call.get("type").and_then(Value::as_str) {
            Some("function") | None => {}
            Some(other) => {
                return Err(invalid_value(
                    &format!("{call_param}.type"),
                    format!("Invalid tool call type `{other}`: expected function."),
                ))
            }
        }
        match call.get("function") {
            Some(Value::Object(function)) => {
                require_string(&format!("{call_param}.function"), function, "name")?;
                require_string(&format!("{call_param}.function"), function, "arguments")?;
            }
            Some(other) => expect_type(&format!("{call_param}.function"), other, false, "an object")?,
            None => return Err(missing(&format!("{call_param}.function"))),
        }
    }
    Ok(())
}

fn check_tools(body: &Map<String, Value>) -> Result<(), GatewayError> {
    let tools = match body.get("tools") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(tools)) => tools,
        Some(other) => return expect_type("tools", other, false, "an array of tools"),
    };
    for (i, tool) in tools.iter().enumerate() {
        let param = format!("tools[{i}]");
        let Value::Object(tool) = tool else { return expect_type(&param, tool, false, "a tool object") };
        match tool.get("type").and_then(Value::as_str) {
            Some("function") => {}
            Some("custom") => continue,
            Some(other) => {
                return Err(GatewayError::invalid(
                    "unsupported_tool",
                    format!("{param}.type"),
                    format!("Unsupported tool type `{other}`: expected `function` (or `custom`)."),
                ))
            }
            None => return Err(missing(&format!("{param}.type"))),
        }
        let function = match tool.get("function") {
            Some(Value::Object(function)) => function,
            Some(other) => return expect_type(&format!("{param}.function"), other, false, "an object"),
            None if tool.contains_key("name") => return Err(invalid_value(
                &param,
                "Chat Completions nests function tools: put `name`, `parameters` and `description` under `function`."
                    .to_owned(),
            )),
            None => return Err(missing(&format!("{param}.function"))),
        };
        let name_param = format!("{param}.function.name");
        match function.get("name") {
            Some(Value::String(name)) if valid_function_name(name) => {}
            Some(Value::String(name)) => {
                return Err(invalid_value(
                    &name_param,
                    format!("Invalid function name `{name}`: use 1-64 letters, digits, `_` or `-`."),
                ))
            }
            Some(other) => expect_type(&name_param, other, false, "a string")?,
            None => return Err(missing(&name_param)),
        }
        if let Some(parameters) = function.get("parameters") {
            expect_type(
                &format!("{param}.function.parameters"),
                parameters,
                parameters.is_object() || parameters.is_null(),
                "a JSON Schema object",
            )?;
        }
        optional_bool(function, "strict").map_err(|_| {
            GatewayError::invalid(
                "invalid_type",
                format!("{param}.function.strict"),
                format!("Invalid type for `{param}.function.strict`: expected a boolean."),
            )
        })?;
    }
    Ok(())
}

fn check_tool_choice(body: &Map<String, Value>) -> Result<(), GatewayError> {
    match body.get("tool_choice") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(choice)) if ["none", "auto", "required"].contains(&choice.as_str()) => Ok(()),
        Some(Value::String(choice)) => Err(invalid_value(
            "tool_choice",
            format!("Invalid `tool_choice` `{choice}`: expected none, auto, required or an object."),
        )),
        Some(Value::Object(choice)) => match choice.get("type").and_then(Value::as_str) {
            Some("function") => match choice.get("function").and_then(|f| f.get("name")) {
                Some(Value::String(_)) => Ok(()),
                _ => Err(missing("tool_choice.function.name")),
            },
            Some(_) => Ok(()),
            None => Err(missing("tool_choice.type")),
        },
        Some(other) => expect_type("tool_choice", other, false, "a string or an object"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn code_and_param(body: Value) -> (String, Option<String>) {
        let err = check(body.as_object().unwrap()).expect_err(&body.to_string());
        assert_eq!(err.status(), 400);
        let body = err.body();
        (body["code"].as_str().unwrap_or_default().to_owned(), body["param"].as_str().map(str::to_owned))
    }

    #[test]
    fn table_of_bad_bodies() {
        let user = json!([{"role": "user", "content": "hi"}]);
        let with = |extra: Value| {
            let mut body = json!({"messages": user});
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            body
        };
        let cases: Vec<(Value, &str, &str)> = vec![
            (json!({"model": "a/b"}), "missing_required_parameter", "messages"),
            (json!({"messages": "hi"}), "invalid_type", "messages"),
            (json!({"messages": [{"role": "wizard", "content": "x"}]}), "invalid_value", "messages[0].role"),
            (json!({"messages": [{"content": "x"}]}), "missing_required_parameter", "messages[0].role"),
            (json!({"messages": [{"role": "user"}]}), "missing_required_parameter", "messages[0].content"),
            (
                json!({"messages": [{"role": "tool", "content": "x"}]}),
                "missing_required_parameter",
                "messages[0].tool_call_id",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}),
                "missing_required_parameter",
                "messages[0].content[0].image_url.url",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "input_text", "text": "x"}]}]}),
                "invalid_value",
                "messages[0].content[0].type",
            ),
            (
                json!({"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
                "invalid_value",
                "messages[0].content[0].type",
            ),
            (
                json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f"}}]}]}),
                "missing_required_parameter",
                "messages[0].tool_calls[0].function.arguments",
            ),
            (with(json!({"store": true})), "unsupported_parameter", "store"),
            (with(json!({"max_tokens": 0})), "invalid_value", "max_tokens"),
            (with(json!({"max_completion_tokens": "x"})), "invalid_type", "max_completion_tokens"),
            (with(json!({"n": 0})), "invalid_value", "n"),
            (with(json!({"n": 129})), "invalid_value", "n"),
            (with(json!({"temperature": 2.5})), "invalid_value", "temperature"),
            (with(json!({"frequency_penalty": -3})), "invalid_value", "frequency_penalty"),
            (with(json!({"reasoning_effort": "maximal"})), "invalid_value", "reasoning_effort"),
            (with(json!({"logit_bias": {"50256": 200}})), "invalid_value", "logit_bias.50256"),
            (with(json!({"stop": [1]})), "invalid_type", "stop[0]"),
            (with(json!({"stream_options": {"include_usage": "yes"}})), "invalid_type", "stream_options.include_usage"),
            (with(json!({"tools": [{"type": "function", "name": "f"}]})), "invalid_value", "tools[0]"),
            (
                with(json!({"tools": [{"type": "function", "function": {"name": "a b"}}]})),
                "invalid_value",
                "tools[0].function.name",
            ),
            (with(json!({"tools": [{"type": "web_search"}]})), "unsupported_tool", "tools[0].type"),
            (
                with(json!({"tool_choice": {"type": "function", "name": "f"}})),
                "missing_required_parameter",
                "tool_choice.function.name",
            ),
            (
                with(json!({"response_format": {"type": "json_schema"}})),
                "missing_required_parameter",
                "response_format.json_schema",
            ),
            (with(json!({"plugins": [{}]})), "missing_required_parameter", "plugins[0].id"),
        ];
        for (body, code, param) in cases {
            assert_eq!(code_and_param(body.clone()), (code.to_owned(), Some(param.to_owned())), "{body}");
        }
    }

    #[test]
    fn the_wider_surface_passes() {
        let body = json!({
            "model": "openai/gpt-4o", "stream": true, "stream_options": {"include_usage": true},
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "name": "ada", "content": [{"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "ok"}
            ],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}, "strict": true}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}}, "n": 2, "logprobs": true, "top_logprobs": 3,
            "logit_bias": {"50256": -100}, "stop": ["x"], "seed": 7, "store": false, "reasoning_effort": "low",
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object"}}},
            "some_provider_extra": {"x": 1}
        });
        assert!(check(body.as_object().unwrap()).is_ok());
        assert!(check(json!({"template": "greet"}).as_object().unwrap()).is_ok(), "a template makes messages optional");
    }
}
