//! Request-side helpers shared by the translators of message-style provider APIs: sampling
//! fields, stop sequences, data URLs, tool choice, the end-user tag and the newer Responses
//! fields every translator decides the same way. The `input` itself is walked in `walk`.

use serde_json::{Map, Number, Value};

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

/// The tag naming the end user for the provider's abuse tracking: the client's `user` when it
/// gave one, else its `safety_identifier` (OpenAI's successor to `user`, which Mesh also sets,
/// hashed, when the client sent neither).
pub(crate) fn end_user(body: &Map<String, Value>) -> Option<&str> {
    let text = |field: &str| body.get(field).and_then(Value::as_str).filter(|s| !s.is_empty());
    text("user").or_else(|| text("safety_identifier"))
}

/// `include` values and what a translated provider does with each: encrypted reasoning is
/// returned wherever the provider has reasoning state (and there is nothing to return where it
/// has none), the results of built-in tools are moot (those tools are refused), and the
/// image URLs of input items concern Mesh's stored input, not the provider. Logprobs cannot be
/// returned. Any other value is refused rather than silently dropped.
const INCLUDES_HONOURED: [&str; 7] = [
    "reasoning.encrypted_content",
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "code_interpreter_call.outputs",
    "message.input_image.image_url",
    "computer_call_output.output.image_url",
];

/// Refuses the newer Responses fields no translated provider can honour, and accepts the
/// values whose omission is exact. Shared by every translator (each documents the rest in its
/// own table):
///
/// | field | decision |
/// | --- | --- |
/// | `max_tool_calls` | refused: one provider turn cannot be bounded in tool calls |
/// | `top_logprobs` | `0` is exact to ignore; more is refused (Mesh returns no logprobs) |
/// | `truncation` | `disabled` (the default: the provider errs on overflow) is exact; `auto` is refused |
/// | `include` | see [`INCLUDES_HONOURED`]; `message.output_text.logprobs` and unknown values are refused |
/// | `stream_options` | ignored: its one option, `include_obfuscation`, only pads events, and Mesh never does |
pub(crate) fn newer_fields(provider: &str, body: &Map<String, Value>) -> Result<(), GatewayError> {
    let refuse = |param: &str, what: &str| Err(unsupported("unsupported_parameter", param, provider, what));
    if body.get("max_tool_calls").is_some_and(|v| !v.is_null()) {
        return refuse("max_tool_calls", "a limit on tool calls (`max_tool_calls`)");
    }
    if body.get("top_logprobs").is_some_and(|v| !v.is_null() && v.as_f64() != Some(0.0)) {
        return refuse("top_logprobs", "returning logprobs (`top_logprobs`)");
    }
    if body.get("truncation").and_then(Value::as_str) == Some("auto") {
        return refuse("truncation", "`truncation: \"auto\"` (it never drops input to fit the context)");
    }
    if let Some(Value::Array(include)) = body.get("include") {
        for (i, entry) in include.iter().enumerate() {
            match entry.as_str() {
                Some(value) if INCLUDES_HONOURED.contains(&value) => {}
                Some("message.output_text.logprobs") => {
                    return refuse(&format!("include[{i}]"), "returning logprobs (`message.output_text.logprobs`)");
                }
                Some(value) => return refuse(&format!("include[{i}]"), &format!("`include` of `{value}`")),
                None => return refuse(&format!("include[{i}]"), "an `include` entry that is not a string"),
            }
        }
    }
    Ok(())
}

/// `text.verbosity` for a provider with no verbosity setting: `medium` (OpenAI's default, and
/// so what the provider's own default stands for) is exact to leave out; `low` and `high` are
/// refused.
pub(crate) fn default_verbosity_only(provider: &str, body: &Map<String, Value>) -> Result<(), GatewayError> {
    match body.get("text").and_then(|t| t.get("verbosity")).and_then(Value::as_str) {
        None | Some("medium") => Ok(()),
        Some(other) => Err(unsupported(
            "unsupported_parameter",
            "text.verbosity",
            provider,
            &format!("`text.verbosity: \"{other}\"` (only the default, `medium`)"),
        )),
    }
}

/// `service_tier` for a provider with one standard tier: `auto` and `default` are what it
/// serves anyway; any other tier is refused.
pub(crate) fn standard_tier_only(provider: &str, body: &Map<String, Value>) -> Result<(), GatewayError> {
    match body.get("service_tier").and_then(Value::as_str) {
        None | Some("auto" | "default") => Ok(()),
        Some(other) => Err(unsupported(
            "unsupported_parameter",
            "service_tier",
            provider,
            &format!("`service_tier: \"{other}\"` (only `auto` or `default`)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    fn refused_param(result: Result<impl std::fmt::Debug, GatewayError>) -> Option<String> {
        let err = result.err()?;
        let body = err.body();
        assert_eq!(body["code"], "unsupported_parameter", "{body}");
        assert!(body["message"].as_str().unwrap_or_default().contains("`acme`"), "names the provider: {body}");
        body["param"].as_str().map(str::to_owned)
    }

    #[test]
    fn user_is_preferred_to_safety_identifier() {
        assert_eq!(end_user(&body(json!({"user": "u", "safety_identifier": "s"}))), Some("u"));
        assert_eq!(end_user(&body(json!({"safety_identifier": "s"}))), Some("s"));
        assert_eq!(end_user(&body(json!({"user": "", "safety_identifier": "s"}))), Some("s"));
        assert_eq!(end_user(&body(json!({}))), None);
    }

    #[test]
    fn newer_fields_are_honoured_or_refused_by_name() {
        for accepted in [
            json!({"truncation": "disabled", "top_logprobs": 0, "stream_options": {"include_obfuscation": true},
                "include": ["reasoning.encrypted_content", "web_search_call.results"], "max_tool_calls": null}),
            json!({"include": []}),
        ] {
            assert!(newer_fields("acme", &body(accepted.clone())).is_ok(), "{accepted}");
        }
        for (refused, param) in [
            (json!({"max_tool_calls": 3}), "max_tool_calls"),
            (json!({"top_logprobs": 2}), "top_logprobs"),
            (json!({"truncation": "auto"}), "truncation"),
            (json!({"include": ["reasoning.encrypted_content", "message.output_text.logprobs"]}), "include[1]"),
            (json!({"include": ["something.new"]}), "include[0]"),
        ] {
            assert_eq!(
                refused_param(newer_fields("acme", &body(refused.clone()))).as_deref(),
                Some(param),
                "{refused}"
            );
        }
        assert!(default_verbosity_only("acme", &body(json!({"text": {"verbosity": "medium"}}))).is_ok());
        assert_eq!(
            refused_param(default_verbosity_only("acme", &body(json!({"text": {"verbosity": "low"}})))).as_deref(),
            Some("text.verbosity")
        );
        for tier in ["auto", "default"] {
            assert!(standard_tier_only("acme", &body(json!({"service_tier": tier}))).is_ok());
        }
        assert_eq!(
            refused_param(standard_tier_only("acme", &body(json!({"service_tier": "flex"})))).as_deref(),
            Some("service_tier")
        );
    }
}
