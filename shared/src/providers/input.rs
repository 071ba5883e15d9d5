//! Request-side helpers shared by the translators of message-style provider APIs (Anthropic
//! Messages, Bedrock Converse): reading sampling fields, stop sequences, data URLs, function call
//! arguments and reasoning summaries out of a Responses request.

use serde_json::{json, Map, Number, Value};

use super::unsupported;
use crate::error::GatewayError;

/// A number field of the request, as given.
pub(crate) fn number(body: &Map<String, Value>, field: &str) -> Option<Number> {
    match body.get(field) {
        Some(Value::Number(n)) => Some(n.clone()),
        _ => None,
    }
}

/// `stop` (a string or a list of strings, as Chat Completions takes it) → `stop_sequences`.
pub(crate) fn stop_sequences(body: &Map<String, Value>) -> Result<Vec<String>, GatewayError> {
    match body.get("stop") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(stop)) => Ok(vec![stop.clone()]),
        Some(Value::Array(list)) => {
            list.iter().map(|s| s.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>().ok_or_else(stop_type_error)
        }
        Some(_) => Err(stop_type_error()),
    }
}

pub(crate) fn stop_type_error() -> GatewayError {
    GatewayError::invalid("invalid_type", "stop", "Invalid type for `stop`: expected a string or an array of strings.")
}

/// The summary text of a reasoning item (the thinking text it was made from).
pub(crate) fn summary_text(item: &Value) -> String {
    item.get("summary")
        .and_then(Value::as_array)
        .map(|parts| parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect())
        .unwrap_or_default()
}

/// A function call's `arguments` (a JSON string) → the tool input object the provider wants.
pub(crate) fn arguments_object(param: &str, arguments: Option<&Value>) -> Result<Value, GatewayError> {
    let text = arguments.and_then(Value::as_str).unwrap_or_default();
    if text.trim().is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(object @ Value::Object(_)) => Ok(object),
        _ => Err(GatewayError::invalid(
            "invalid_value",
            format!("{param}.arguments"),
            format!("`{param}.arguments` must be a JSON object encoded as a string."),
        )),
    }
}

/// Splits a `data:` URL into its media type and base64 payload.
pub(crate) fn data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media_type = meta.strip_suffix(";base64")?;
    Some((media_type, data))
}

/// A tool input object as the Responses `arguments` string.
pub(crate) fn tool_arguments(input: &Value) -> String {
    match input {
        Value::Null => "{}".to_owned(),
        other => other.to_string(),
    }
}

/// A Responses `tool_choice`, read once for the translators that map it onto their own shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ToolChoice {
    /// Not given (or null).
    Unset,
    Auto,
    Required,
    None,
    /// `{"type": "function", "name": ...}`.
    Function(String),
}

/// Parses `tool_choice`; `allowed_tools` choices and built-in tools are refused naming the
/// provider, anything else malformed is an invalid value.
pub(crate) fn tool_choice(provider: &str, body: &Map<String, Value>) -> Result<ToolChoice, GatewayError> {
    let invalid = || {
        GatewayError::invalid(
            "invalid_value",
            "tool_choice",
            "Invalid `tool_choice`: expected `auto`, `required`, `none` or {\"type\": \"function\", \"name\": ...}.",
        )
    };
    match body.get("tool_choice") {
        None | Some(Value::Null) => Ok(ToolChoice::Unset),
        Some(Value::String(mode)) => match mode.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "required" => Ok(ToolChoice::Required),
            "none" => Ok(ToolChoice::None),
            _ => Err(invalid()),
        },
        Some(Value::Object(object)) => match object.get("type").and_then(Value::as_str) {
            Some("function") => {
                let name = object.get("name").and_then(Value::as_str).ok_or_else(invalid)?;
                Ok(ToolChoice::Function(name.to_owned()))
            }
            Some("allowed_tools") => {
                Err(unsupported("unsupported_parameter", "tool_choice", provider, "`allowed_tools` choices"))
            }
            Some(kind) => {
                Err(unsupported("unsupported_tool", "tool_choice", provider, &format!("the built-in tool `{kind}`")))
            }
            None => Err(invalid()),
        },
        Some(_) => Err(invalid()),
    }
}
