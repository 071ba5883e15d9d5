//! Request-side helpers shared by the translators of message-style provider APIs (Anthropic
//! Messages, Bedrock Converse): reading sampling fields, stop sequences, data URLs, function call
//! arguments and reasoning summaries out of a Responses request.

use serde_json::{json, Map, Number, Value};

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
