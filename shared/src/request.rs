//! Validation of `POST /v1/responses` bodies: the Responses request surface plus Mesh's fields.
//!
//! The body is kept as an ordered JSON object so fields Mesh does not interpret reach the
//! provider unchanged; the fields Mesh does interpret are checked here, each bad one answered
//! with a 400 naming it (DESIGN §2).

use serde_json::{Map, Value};

use crate::error::GatewayError;

/// Largest accepted body (Lambda's synchronous payload limit).
pub const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;

/// Most items an `input` list may hold (a bound on the work one request can ask for: ids, copies,
/// token estimates and provider translation are per item).
pub const MAX_INPUT_ITEMS: usize = 4096;

/// Mesh's own request fields, never sent to a provider.
pub const GATEWAY_FIELDS: [&str; 4] = ["template", "variables", "session_id", "plugins"];

/// Built-in tool types of the Responses API that Mesh accepts (besides `function`).
pub const BUILTIN_TOOLS: [&str; 7] = [
    "image_generation",
    "web_search_preview",
    "web_search_preview_2025_03_11",
    "web_search",
    "file_search",
    "computer_use_preview",
    "code_interpreter",
];

/// Every `reasoning.effort` the SDKs send (`ReasoningEffort`); each translator maps each one
/// to its provider's nearest setting or refuses it naming the provider.
pub(crate) const REASONING_EFFORTS: [&str; 7] = ["none", "minimal", "low", "medium", "high", "xhigh", "max"];
const MESSAGE_ROLES: [&str; 4] = ["user", "assistant", "system", "developer"];

/// A validated request: the body as received plus the fields the gateway acts on.
#[derive(Debug, Clone)]
pub struct ResponsesRequest {
    pub body: Map<String, Value>,
    pub model: Option<String>,
    pub stream: bool,
    pub session_id: Option<String>,
    pub template: Option<String>,
    pub previous_response_id: Option<String>,
    pub max_output_tokens: Option<u64>,
}

/// What every endpoint's parsed request gives the pipeline: its Responses form.
impl AsRef<ResponsesRequest> for ResponsesRequest {
    fn as_ref(&self) -> &ResponsesRequest {
        self
    }
}

pub(crate) fn invalid_type(param: &str, expected: &str) -> GatewayError {
    GatewayError::invalid("invalid_type", param, format!("Invalid type for `{param}`: expected {expected}."))
}

pub(crate) fn invalid_value(param: &str, message: String) -> GatewayError {
    GatewayError::invalid("invalid_value", param, message)
}

pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(crate) fn expect_type(param: &str, value: &Value, ok: bool, expected: &str) -> Result<(), GatewayError> {
    if ok {
        Ok(())
    } else {
        Err(GatewayError::invalid(
            "invalid_type",
            param,
            format!("Invalid type for `{param}`: expected {expected}, got {}.", type_name(value)),
        ))
    }
}

pub(crate) fn optional_string(
    body: &Map<String, Value>,
    field: &str,
    max_len: usize,
) -> Result<Option<String>, GatewayError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.chars().count() <= max_len => Ok(Some(text.clone())),
        Some(Value::String(_)) => Err(invalid_value(field, format!("`{field}` must be at most {max_len} characters."))),
        Some(other) => expect_type(field, other, false, "a string").map(|()| None),
    }
}

pub(crate) fn optional_bool(body: &Map<String, Value>, field: &str) -> Result<Option<bool>, GatewayError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => expect_type(field, other, false, "a boolean").map(|()| None),
    }
}

pub(crate) fn number_in(body: &Map<String, Value>, field: &str, min: f64, max: f64) -> Result<(), GatewayError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Number(n)) => {
            let v = n.as_f64().unwrap_or(f64::NAN);
            if (min..=max).contains(&v) {
                Ok(())
            } else {
                Err(invalid_value(field, format!("`{field}` must be between {min} and {max}, got {n}.")))
            }
        }
        Some(other) => expect_type(field, other, false, "a number"),
    }
}

pub(crate) fn integer_at_least(body: &Map<String, Value>, field: &str, min: i64) -> Result<Option<i64>, GatewayError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) if v >= min => Ok(Some(v)),
            Some(v) => Err(invalid_value(field, format!("`{field}` must be at least {min}, got {v}."))),
            None if n.as_u64().is_some() => Ok(Some(i64::MAX)),
            None => Err(invalid_type(field, "an integer")),
        },
        Some(other) => expect_type(field, other, false, "an integer").map(|()| None),
    }
}

/// Parses and validates a body. `has_template` relaxes the `input` requirement.
pub fn parse(bytes: &[u8]) -> Result<ResponsesRequest, GatewayError> {
    validate(parse_object(bytes)?)
}

/// A body as a JSON object, or the 400 saying why it is not one.
pub(crate) fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, GatewayError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|err| GatewayError::InvalidRequest {
        code: "invalid_json",
        message: format!("The request body is not valid JSON: {err}."),
        param: None,
    })?;
    let Value::Object(body) = value else {
        return Err(GatewayError::InvalidRequest {
            code: "invalid_type",
            message: format!("The request body must be a JSON object, got {}.", type_name(&value)),
            param: None,
        });
    };
    Ok(body)
}

/// Validates an already parsed body.
pub fn validate(body: Map<String, Value>) -> Result<ResponsesRequest, GatewayError> {
    let model = optional_string(&body, "model", 256)?;
    if model.as_deref() == Some("") {
        return Err(invalid_value("model", "`model` must not be empty.".to_owned()));
    }
    let template = optional_string(&body, "template", 256)?;
    check_variables(&body)?;
    match body.get("input") {
        None | Some(Value::Null) if template.is_none() => {
            return Err(GatewayError::invalid(
                "missing_required_parameter",
                "input",
                "Missing required parameter: `input` (a string or a list of input items).",
            ))
        }
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(Value::Array(items)) => check_input_items(items)?,
        Some(other) => expect_type("input", other, false, "a string or an array of input items")?,
    }
    if body.get("conversation").is_some_and(|c| !c.is_null()) {
        return Err(GatewayError::invalid(
            "unsupported_parameter",
            "conversation",
            "`conversation` is not supported: Mesh keeps conversation state itself; continue with \
             `previous_response_id`, or send the earlier items (or `item_reference`s to them).",
        ));
    }
    optional_string(&body, "instructions", usize::MAX)?;
    let stream = optional_bool(&body, "stream")?.unwrap_or(false);
    for field in ["store", "background", "parallel_tool_calls"] {
        optional_bool(&body, field)?;
    }
    let max_output_tokens = integer_at_least(&body, "max_output_tokens", 1)?.map(|v| u64::try_from(v).unwrap_or(0));
    integer_at_least(&body, "max_tool_calls", 1)?;
    number_in(&body, "temperature", 0.0, 2.0)?;
    number_in(&body, "top_p", 0.0, 1.0)?;
    number_in(&body, "top_logprobs", 0.0, 20.0)?;
    integer_at_least(&body, "seed", i64::MIN)?;
    optional_string(&body, "user", 256)?;
    let session_id = optional_string(&body, "session_id", 256)?;
    let previous_response_id = optional_string(&body, "previous_response_id", 256)?;
    check_metadata(&body)?;
    check_reasoning(&body)?;
    check_tools(&body)?;
    check_tool_choice(&body)?;
    if let Some(format) = body.get("response_format") {
        check_format("response_format", format, true)?;
    }
    match body.get("text") {
        None | Some(Value::Null) => {}
        Some(Value::Object(text)) => {
            if let Some(format) = text.get("format") {
                check_format("text.format", format, false)?;
            }
        }
        Some(other) => expect_type("text", other, false, "an object")?,
    }
    match body.get("truncation") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t == "auto" || t == "disabled" => {}
        Some(Value::String(t)) => {
            return Err(invalid_value("truncation", format!("`truncation` must be `auto` or `disabled`, got `{t}`.")))
        }
        Some(other) => expect_type("truncation", other, false, "a string")?,
    }
    match body.get("include") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                expect_type(&format!("include[{i}]"), item, item.is_string(), "a string")?;
            }
        }
        Some(other) => expect_type("include", other, false, "an array of strings")?,
    }
    check_plugins(&body)?;
    Ok(ResponsesRequest { body, model, stream, session_id, template, previous_response_id, max_output_tokens })
}

pub(crate) fn check_variables(body: &Map<String, Value>) -> Result<(), GatewayError> {
    match body.get("variables") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(vars)) => {
            for (name, value) in vars {
                let param = format!("variables.{name}");
                expect_type(
                    &param,
                    value,
                    matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_)),
                    "a string, number or boolean",
                )?;
            }
            Ok(())
        }
        Some(other) => expect_type("variables", other, false, "an object"),
    }
}

fn too_many_items(count: usize) -> GatewayError {
    invalid_value("input", format!("`input` may hold at most {MAX_INPUT_ITEMS} items, got {count}."))
}

/// The length of an `input` list, counted while scanning the body without building its items
/// (so a hostile list is refused before it costs a tree in memory).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ItemCount(pub usize);

impl<'de> serde::Deserialize<'de> for ItemCount {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Counter;
        impl<'de> serde::de::Visitor<'de> for Counter {
            type Value = ItemCount;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<ItemCount, A::Error> {
                let mut count = 0;
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    count += 1;
                }
                Ok(ItemCount(count))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<ItemCount, A::Error> {
                while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
                Ok(ItemCount(0))
            }
            fn visit_str<E>(self, _: &str) -> Result<ItemCount, E> {
                Ok(ItemCount(0))
            }
            fn visit_bool<E>(self, _: bool) -> Result<ItemCount, E> {
                Ok(ItemCount(0))
            }
            fn visit_i64<E>(self, _: i64) -> Result<ItemCount, E> {
                Ok(ItemCount(0))
            }
            fn visit_u64<E>(self, _: u64) -> Result<ItemCount, E> {
                Ok(ItemCount(0))
            }
            fn visit_f64<E>(self, _: f64) -> Result<ItemCount, E> {
                Ok(ItemCount(0))
            }
            fn visit_unit<E>(self) -> Result<ItemCount, E> {
                Ok(ItemCount(0))
            }
        }
        deserializer.deserialize_any(Counter)
    }
}

/// Refuses an `input` list over [`MAX_INPUT_ITEMS`] from its count alone.
pub fn check_item_count(count: ItemCount) -> Result<(), GatewayError> {
    if count.0 > MAX_INPUT_ITEMS {
        return Err(too_many_items(count.0));
    }
    Ok(())
}

fn check_input_items(items: &[Value]) -> Result<(), GatewayError> {
    if items.len() > MAX_INPUT_ITEMS {
        return Err(too_many_items(items.len()));
    }
    for (i, item) in items.iter().enumerate() {
        let param = format!("input[{i}]");
        let Value::Object(item) = item else {
            return expect_type(&param, item, false, "an input item object");
        };
        let kind = match item.get("type") {
            None | Some(Value::Null)
                if !item.contains_key("role") && !item.contains_key("content") && item.contains_key("id") =>
            {
                "item_reference"
            }
            None | Some(Value::Null) => "message",
            Some(Value::String(kind)) => kind.as_str(),
            Some(other) => return expect_type(&format!("{param}.type"), other, false, "a string"),
        };
        match kind {
            "item_reference" => require_string(&param, item, "id")?,
            "message" => check_message(&param, item)?,
            "function_call" => {
                for field in ["call_id", "name", "arguments"] {
                    require_string(&param, item, field)?;
                }
            }
            "function_call_output" => {
                require_string(&param, item, "call_id")?;
                match item.get("output") {
                    Some(Value::String(_) | Value::Array(_)) => {}
                    Some(other) => expect_type(&format!("{param}.output"), other, false, "a string")?,
                    None => {
                        return Err(GatewayError::invalid(
                            "missing_required_parameter",
                            format!("{param}.output"),
                            format!("Missing required parameter: `{param}.output`."),
                        ))
                    }
                }
            }
            // Other item types (reasoning, item_reference, built-in tool calls) are forwarded.
            _ => {}
        }
    }
    Ok(())
}

pub(crate) fn require_string(param: &str, item: &Map<String, Value>, field: &str) -> Result<(), GatewayError> {
    match item.get(field) {
        Some(Value::String(_)) => Ok(()),
        Some(other) => expect_type(&format!("{param}.{field}"), other, false, "a string"),
        None => Err(GatewayError::invalid(
            "missing_required_parameter",
            format!("{param}.{field}"),
            format!("Missing required parameter: `{param}.{field}`."),
        )),
    }
}

fn check_message(param: &str, item: &Map<String, Value>) -> Result<(), GatewayError> {
    match item.get("role") {
        Some(Value::String(role)) if MESSAGE_ROLES.contains(&role.as_str()) => {}
        Some(Value::String(role)) => {
            return Err(invalid_value(
                &format!("{param}.role"),
                format!("Invalid role `{role}`: expected one of user, assistant, system, developer."),
            ))
        }
        Some(other) => return expect_type(&format!("{param}.role"), other, false, "a string"),
        None => {
            return Err(GatewayError::invalid(
                "missing_required_parameter",
                format!("{param}.role"),
                format!("Missing required parameter: `{param}.role`."),
            ))
        }
    }
    match item.get("content") {
        Some(Value::String(_)) => Ok(()),
        Some(Value::Array(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                let part_param = format!("{param}.content[{j}]");
                let Value::Object(part) = part else {
                    return expect_type(&part_param, part, false, "a content part object");
                };
                match part.get("type").and_then(Value::as_str) {
                    Some("input_text" | "output_text") => require_string(&part_param, part, "text")?,
                    Some("refusal") => require_string(&part_param, part, "refusal")?,
                    Some("input_image" | "input_file" | "input_audio") => {}
                    Some(other) => {
                        return Err(invalid_value(
                            &format!("{part_param}.type"),
                            format!("Invalid content part type `{other}`: expected input_text, input_image, input_file, output_text or refusal."),
                        ))
                    }
                    None => {
                        return Err(GatewayError::invalid(
                            "missing_required_parameter",
                            format!("{part_param}.type"),
                            format!("Missing required parameter: `{part_param}.type`."),
                        ))
                    }
                }
            }
            Ok(())
        }
        Some(other) => expect_type(&format!("{param}.content"), other, false, "a string or an array of content parts"),
        None => Err(GatewayError::invalid(
            "missing_required_parameter",
            format!("{param}.content"),
            format!("Missing required parameter: `{param}.content`."),
        )),
    }
}

pub(crate) fn check_metadata(body: &Map<String, Value>) -> Result<(), GatewayError> {
    match body.get("metadata") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(map)) => {
            if map.len() > 16 {
                return Err(invalid_value("metadata", "`metadata` may hold at most 16 pairs.".to_owned()));
            }
            for (key, value) in map {
                if key.chars().count() > 64 {
                    return Err(invalid_value(
                        "metadata",
                        format!("metadata key `{key}` is longer than 64 characters."),
                    ));
                }
                match value {
                    Value::String(text) if text.chars().count() <= 512 => {}
                    Value::String(_) => {
                        return Err(invalid_value(
                            &format!("metadata.{key}"),
                            "metadata values must be at most 512 characters.".to_owned(),
                        ))
                    }
                    other => expect_type(&format!("metadata.{key}"), other, false, "a string")?,
                }
            }
            Ok(())
        }
        Some(other) => expect_type("metadata", other, false, "an object"),
    }
}

fn check_reasoning(body: &Map<String, Value>) -> Result<(), GatewayError> {
    match body.get("reasoning") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(reasoning)) => {
            match reasoning.get("effort") {
                None | Some(Value::Null) => {}
                Some(Value::String(e)) if REASONING_EFFORTS.contains(&e.as_str()) => {}
                Some(Value::String(e)) => {
                    return Err(invalid_value(
                        "reasoning.effort",
                        format!("Invalid `reasoning.effort` `{e}`: expected one of {}.", REASONING_EFFORTS.join(", ")),
                    ))
                }
                Some(other) => expect_type("reasoning.effort", other, false, "a string")?,
            }
            match reasoning.get("summary") {
                None | Some(Value::Null) => Ok(()),
                Some(Value::String(s)) if ["auto", "concise", "detailed"].contains(&s.as_str()) => Ok(()),
                Some(Value::String(s)) => Err(invalid_value(
                    "reasoning.summary",
                    format!("Invalid `reasoning.summary` `{s}`: expected auto, concise or detailed."),
                )),
                Some(other) => expect_type("reasoning.summary", other, false, "a string"),
            }
        }
        Some(other) => expect_type("reasoning", other, false, "an object"),
    }
}

pub(crate) fn valid_function_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
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
        let kind = match tool.get("type") {
            Some(Value::String(kind)) => kind.as_str(),
            Some(other) => return expect_type(&format!("{param}.type"), other, false, "a string"),
            None => {
                return Err(GatewayError::invalid(
                    "missing_required_parameter",
                    format!("{param}.type"),
                    format!("Missing required parameter: `{param}.type`."),
                ))
            }
        };
        if kind == "function" {
            match tool.get("name") {
                Some(Value::String(name)) if valid_function_name(name) => {}
                Some(Value::String(name)) => {
                    return Err(invalid_value(
                        &format!("{param}.name"),
                        format!("Invalid function name `{name}`: use 1-64 letters, digits, `_` or `-`."),
                    ))
                }
                Some(other) => expect_type(&format!("{param}.name"), other, false, "a string")?,
                None if tool.get("function").is_some() => {
                    return Err(invalid_value(
                        &param,
                        "Function tools are flat in the Responses API: put `name`, `parameters` and `description` on the tool, not under `function`.".to_owned(),
                    ))
                }
                None => {
                    return Err(GatewayError::invalid(
                        "missing_required_parameter",
                        format!("{param}.name"),
                        format!("Missing required parameter: `{param}.name`."),
                    ))
                }
            }
            if let Some(parameters) = tool.get("parameters") {
                expect_type(
                    &format!("{param}.parameters"),
                    parameters,
                    parameters.is_object() || parameters.is_null(),
                    "a JSON Schema object",
                )?;
            }
            optional_bool(tool, "strict").map_err(|_| invalid_type(&format!("{param}.strict"), "a boolean"))?;
        } else if !BUILTIN_TOOLS.contains(&kind) {
            return Err(GatewayError::invalid(
                "unsupported_tool",
                format!("{param}.type"),
                format!("Unsupported tool type `{kind}`: expected `function` or one of {}.", BUILTIN_TOOLS.join(", ")),
            ));
        }
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
            Some("function") => match choice.get("name") {
                Some(Value::String(_)) => Ok(()),
                _ => Err(GatewayError::invalid(
                    "missing_required_parameter",
                    "tool_choice.name",
                    "`tool_choice` of type `function` needs a `name`.",
                )),
            },
            Some(_) => Ok(()),
            None => Err(GatewayError::invalid(
                "missing_required_parameter",
                "tool_choice.type",
                "Missing required parameter: `tool_choice.type`.",
            )),
        },
        Some(other) => expect_type("tool_choice", other, false, "a string or an object"),
    }
}

pub(crate) fn check_format(param: &str, format: &Value, chat_style: bool) -> Result<(), GatewayError> {
    let Value::Object(format) = format else { return expect_type(param, format, false, "an object") };
    match format.get("type").and_then(Value::as_str) {
        Some("text" | "json_object") => Ok(()),
        Some("json_schema") => {
            let schema_holder = if chat_style {
                match format.get("json_schema") {
                    Some(Value::Object(inner)) => inner,
                    _ => {
                        return Err(GatewayError::invalid(
                            "missing_required_parameter",
                            format!("{param}.json_schema"),
                            format!("`{param}` of type json_schema needs a `json_schema` object."),
                        ))
                    }
                }
            } else {
                format
            };
            let prefix = if chat_style { format!("{param}.json_schema") } else { param.to_owned() };
            require_string(&prefix, schema_holder, "name")?;
            match schema_holder.get("schema") {
                Some(Value::Object(_)) => Ok(()),
                Some(other) => expect_type(&format!("{prefix}.schema"), other, false, "a JSON Schema object"),
                None => Err(GatewayError::invalid(
                    "missing_required_parameter",
                    format!("{prefix}.schema"),
                    format!("Missing required parameter: `{prefix}.schema`."),
                )),
            }
        }
        Some(other) => Err(invalid_value(
            &format!("{param}.type"),
            format!("Invalid format type `{other}`: expected text, json_object or json_schema."),
        )),
        None => Err(GatewayError::invalid(
            "missing_required_parameter",
            format!("{param}.type"),
            format!("Missing required parameter: `{param}.type`."),
        )),
    }
}

pub(crate) fn check_plugins(body: &Map<String, Value>) -> Result<(), GatewayError> {
    match body.get("plugins") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Array(plugins)) => {
            for (i, plugin) in plugins.iter().enumerate() {
                let param = format!("plugins[{i}]");
                match plugin {
                    Value::Object(p) => require_string(&param, p, "id")?,
                    other => expect_type(&param, other, false, "an object with an `id`")?,
                }
            }
            Ok(())
        }
        Some(other) => expect_type("plugins", other, false, "an array"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(body: Value) -> Result<ResponsesRequest, GatewayError> {
        parse(body.to_string().as_bytes())
    }

    fn code_and_param(err: &GatewayError) -> (String, Option<String>) {
        let body = err.body();
        (body["code"].as_str().unwrap_or_default().to_owned(), body["param"].as_str().map(str::to_owned))
    }

    #[test]
    fn table_of_bad_inputs() {
        let cases: Vec<(Value, &str, Option<&str>)> = vec![
            (json!({"model": "a/b"}), "missing_required_parameter", Some("input")),
            (json!({"input": 5}), "invalid_type", Some("input")),
            (json!({"input": "x", "temperature": 3}), "invalid_value", Some("temperature")),
            (json!({"input": "x", "temperature": "hot"}), "invalid_type", Some("temperature")),
            (json!({"input": "x", "top_p": 1.5}), "invalid_value", Some("top_p")),
            (json!({"input": "x", "max_output_tokens": 0}), "invalid_value", Some("max_output_tokens")),
            (json!({"input": "x", "max_output_tokens": 1.5}), "invalid_type", Some("max_output_tokens")),
            (json!({"input": "x", "stream": "yes"}), "invalid_type", Some("stream")),
            (json!({"input": "x", "tools": [{"type": "teleport"}]}), "unsupported_tool", Some("tools[0].type")),
            (
                json!({"input": "x", "tools": [{"type": "function"}]}),
                "missing_required_parameter",
                Some("tools[0].name"),
            ),
            (json!({"input": "x", "user": "u".repeat(257)}), "invalid_value", Some("user")),
            (json!({"input": [{"role": "wizard", "content": "x"}]}), "invalid_value", Some("input[0].role")),
            (
                json!({"input": [{"type": "function_call_output", "output": "x"}]}),
                "missing_required_parameter",
                Some("input[0].call_id"),
            ),
            (json!({"input": "x", "reasoning": {"effort": "maximal"}}), "invalid_value", Some("reasoning.effort")),
            (json!({"input": "x", "tool_choice": "sometimes"}), "invalid_value", Some("tool_choice")),
            (
                json!({"input": "x", "response_format": {"type": "json_schema"}}),
                "missing_required_parameter",
                Some("response_format.json_schema"),
            ),
            (json!({"input": "x", "text": {"format": {"type": "yaml"}}}), "invalid_value", Some("text.format.type")),
            (json!({"input": "x", "plugins": [{"name": "x"}]}), "missing_required_parameter", Some("plugins[0].id")),
            (json!({"input": "x", "model": 7}), "invalid_type", Some("model")),
            (json!({"input": vec![json!("x"); MAX_INPUT_ITEMS + 1]}), "invalid_value", Some("input")),
        ];
        for (body, code, param) in cases {
            let err = check(body.clone()).expect_err(&body.to_string());
            assert_eq!(code_and_param(&err), (code.to_owned(), param.map(str::to_owned)), "{body}");
            assert_eq!(err.status(), 400);
        }
    }

    #[test]
    fn bad_json_and_non_objects() {
        let err = parse(b"{not json").unwrap_err();
        assert_eq!(code_and_param(&err).0, "invalid_json");
        let err = parse(b"[1,2]").unwrap_err();
        assert_eq!(code_and_param(&err).0, "invalid_type");
    }

    #[test]
    fn accepts_the_wider_surface_and_keeps_unknown_fields() {
        let request = check(json!({
            "model": "openai/gpt-4o", "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": "ok"}],
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}, {"type": "web_search_preview"}],
            "tool_choice": {"type": "function", "name": "f"}, "stream": true, "session_id": "s1",
            "some_future_field": {"x": 1}, "metadata": {"a": "b"}, "truncation": "auto"
        }))
        .unwrap();
        assert!(request.stream);
        assert_eq!(request.session_id.as_deref(), Some("s1"));
        assert_eq!(request.body["some_future_field"], json!({"x": 1}));
    }

    #[test]
    fn every_sdk_reasoning_effort_is_accepted() {
        for effort in ["none", "minimal", "low", "medium", "high", "xhigh", "max"] {
            assert!(check(json!({"input": "x", "reasoning": {"effort": effort}})).is_ok(), "{effort}");
        }
    }

    #[test]
    fn input_may_hold_up_to_the_item_cap() {
        let items = vec![json!({"role": "user", "content": "hi"}); MAX_INPUT_ITEMS];
        assert!(check(json!({"input": items})).is_ok());
    }

    #[test]
    fn template_makes_input_optional() {
        assert!(check(json!({"template": "greet", "variables": {"name": "Ada"}})).is_ok());
    }
}
