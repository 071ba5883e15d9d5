//! The pipeline's internal form of a Chat Completions request: the Responses request that the
//! translators (Anthropic, Gemini, Bedrock, echo), the plugins and the spend rules already take.
//! One internal form, with translations in and out of it: no second set of provider
//! translators.
//!
//! What maps where:
//! - `messages` → `input` items: `system`/`developer`/`user` messages keep their role (text parts
//!   become `input_text`, `image_url` parts `input_image`, `file` parts `input_file`,
//!   `input_audio` parts `input_audio`); an assistant message becomes its text (and refusal)
//!   as a message, then one `function_call` item per tool call; a `tool` message becomes a
//!   `function_call_output`.
//! - nested function `tools` → flat ones; `tool_choice` `{type: function, function: {name}}` →
//!   `{type: function, name}`; `max_completion_tokens` (else `max_tokens`) →
//!   `max_output_tokens`; `reasoning_effort` → `reasoning.effort`; `response_format`,
//!   `temperature`, `top_p`, `seed`, `stop`, `user`, `safety_identifier` (the translators map
//!   it to the provider's user tag), `parallel_tool_calls`, `metadata` and
//!   Mesh's own fields as they are; `frequency_penalty` and `presence_penalty` as they are (only
//!   Gemini takes them).
//! - Accepted and not sent (OpenAI-only hints, no effect on the answer): `store: false`,
//!   `stream_options` (Mesh always asks for usage), `prompt_cache_key`,
//!   `prompt_cache_retention`, `service_tier` `auto`/`default`.
//! - Everything else that would change the answer is a [`Refusal`]: `n` > 1, `logprobs`,
//!   `top_logprobs`, `logit_bias`, non-text `modalities`, `audio`, `prediction`,
//!   `web_search_options`, `verbosity`, other service tiers, the legacy `functions` /
//!   `function_call` / `function` role, `custom` tools, message `name`s, and fields Mesh does
//!   not know. Provider-specific refusals (`seed` on Anthropic, images by URL on Bedrock, ...)
//!   come from the translators themselves.

use serde_json::{json, Map, Value};

use crate::config::ProviderApi;

/// A field a translated provider cannot honour: refused with a 400 naming the provider and the
/// parameter, unless the serving provider's API is one of `honoured_by`.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub param: String,
    pub what: String,
    pub honoured_by: &'static [ProviderApi],
}

/// Where an internal `input` item came from: the message, and the tool call of that message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub message: usize,
    pub tool_call: Option<usize>,
}

/// A Chat Completions body in the internal form.
#[derive(Debug, Default)]
pub struct Converted {
    pub body: Map<String, Value>,
    pub refusals: Vec<Refusal>,
    /// The origin of each `input` item, in order.
    pub origins: Vec<Origin>,
}

/// Fields copied as they are.
const SAME: [&str; 15] = [
    "model",
    "stream",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "user",
    "safety_identifier",
    "parallel_tool_calls",
    "metadata",
    "response_format",
    "template",
    "variables",
    "session_id",
    "plugins",
];

/// OpenAI-only hints: accepted, not sent to translated providers.
const HINTS: [&str; 4] = ["store", "stream_options", "prompt_cache_key", "prompt_cache_retention"];

impl Converted {
    fn refuse(&mut self, param: impl Into<String>, what: impl Into<String>) {
        self.refusals.push(Refusal { param: param.into(), what: what.into(), honoured_by: &[] });
    }

    fn item(&mut self, item: Value, origin: Origin) {
        if let Some(Value::Array(items)) = self.body.get_mut("input") {
            items.push(item);
            self.origins.push(origin);
        }
    }
}

/// Converts a validated Chat Completions body.
pub fn internal(body: &Map<String, Value>) -> Converted {
    let mut out = Converted::default();
    for (name, value) in body {
        if value.is_null() {
            continue;
        }
        let field = name.as_str();
        match field {
            _ if SAME.contains(&field) => {
                out.body.insert(name.clone(), value.clone());
            }
            _ if HINTS.contains(&field) => {}
            "messages" => {
                out.body.insert("input".to_owned(), Value::Array(Vec::new()));
                for (i, message) in value.as_array().into_iter().flatten().enumerate() {
                    convert_message(&mut out, i, message);
                }
            }
            "max_completion_tokens" => {
                out.body.insert("max_output_tokens".to_owned(), value.clone());
            }
            "max_tokens" => {
                out.body.entry("max_output_tokens").or_insert_with(|| value.clone());
            }
            "reasoning_effort" => {
                out.body.insert("reasoning".to_owned(), json!({"effort": value}));
            }
            "tools" => {
                let tools = tools(&mut out, value);
                out.body.insert("tools".to_owned(), Value::Array(tools));
            }
            "tool_choice" => {
                out.body.insert("tool_choice".to_owned(), tool_choice(value));
            }
            "frequency_penalty" | "presence_penalty" => {
                if value.as_f64() != Some(0.0) {
                    out.body.insert(name.clone(), value.clone());
                    out.refusals.push(Refusal {
                        param: name.clone(),
                        what: format!("`{name}`"),
                        honoured_by: &[ProviderApi::Gemini],
                    });
                }
            }
            "n" if value.as_u64().is_some_and(|n| n > 1) => {
                // Kept for the hard-cap worst case (each choice may use the whole output limit).
                out.body.insert("n".to_owned(), value.clone());
                out.refuse("n", "several choices (`n` greater than 1)");
            }
            "logprobs" if value.as_bool() == Some(true) => out.refuse("logprobs", "log probabilities (`logprobs`)"),
            "top_logprobs" if value.as_u64() != Some(0) => {
                out.refuse("top_logprobs", "log probabilities (`top_logprobs`)");
            }
            "logit_bias" if value.as_object().is_some_and(|bias| !bias.is_empty()) => {
                out.refuse("logit_bias", "`logit_bias`");
            }
            "modalities" if value != &json!(["text"]) => {
                out.refuse("modalities", "output modalities other than text (`modalities`)");
            }
            "service_tier" if !matches!(value.as_str(), Some("auto" | "default")) => {
                out.refuse("service_tier", "`service_tier`");
            }
            "n" | "logprobs" | "top_logprobs" | "logit_bias" | "modalities" | "service_tier" => {}
            "functions" | "function_call" => {
                out.refuse(field, "the legacy `functions` and `function_call` (send `tools` and `tool_choice`)");
            }
            "audio" | "prediction" | "web_search_options" | "verbosity" => out.refuse(field, format!("`{field}`")),
            _ => out.refuse(field, format!("the field `{field}`")),
        }
    }
    out
}

fn convert_message(out: &mut Converted, i: usize, message: &Value) {
    let param = format!("messages[{i}]");
    let origin = Origin { message: i, tool_call: None };
    let role = message.get("role").and_then(Value::as_str).unwrap_or("user");
    if role != "function" && message.get("name").is_some_and(|n| !n.is_null()) {
        out.refuse(format!("{param}.name"), "participant names on messages (`name`)");
    }
    let content = message.get("content").filter(|c| !c.is_null());
    match role {
        role @ ("system" | "developer" | "user") => {
            let content = content.map_or(json!(""), input_content);
            out.item(json!({"type": "message", "role": role, "content": content}), origin);
        }
        "assistant" => {
            for field in ["audio", "function_call"] {
                if message.get(field).is_some_and(|v| !v.is_null()) {
                    out.refuse(format!("{param}.{field}"), format!("assistant `{field}` in the conversation"));
                }
            }
            let mut parts = match content {
                Some(Value::String(text)) if !text.is_empty() => vec![json!({"type": "output_text", "text": text})],
                Some(Value::Array(parts)) => parts.iter().map(output_part).collect(),
                _ => Vec::new(),
            };
            if let Some(refusal) = message.get("refusal").and_then(Value::as_str).filter(|r| !r.is_empty()) {
                parts.push(json!({"type": "refusal", "refusal": refusal}));
            }
            if !parts.is_empty() {
                out.item(json!({"type": "message", "role": "assistant", "content": parts}), origin);
            }
            for (k, call) in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten().enumerate() {
                let function = &call["function"];
                let item = json!({"type": "function_call", "call_id": call["id"], "name": function["name"],
                    "arguments": function["arguments"]});
                out.item(item, Origin { message: i, tool_call: Some(k) });
            }
        }
        "tool" => {
            let output = match content {
                Some(Value::String(text)) => text.clone(),
                Some(Value::Array(parts)) => {
                    parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n")
                }
                _ => String::new(),
            };
            let item = json!({"type": "function_call_output", "call_id": message["tool_call_id"], "output": output});
            out.item(item, origin);
        }
        _ => out.refuse(format!("{param}.role"), "the legacy `function` role (send `tool` messages)"),
    }
}

/// A user, system or developer message's content in Responses terms (parts map one to one).
fn input_content(content: &Value) -> Value {
    let Value::Array(parts) = content else { return content.clone() };
    let parts = parts.iter().map(|part| {
        let field = |name: &str| part.get(name).cloned().unwrap_or(Value::Null);
        match part.get("type").and_then(Value::as_str).unwrap_or_default() {
            "text" => json!({"type": "input_text", "text": field("text")}),
            "image_url" => {
                let image = field("image_url");
                let mut out = json!({"type": "input_image", "image_url": image["url"]});
                if let Some(detail) = image.get("detail").filter(|d| !d.is_null()) {
                    out["detail"] = detail.clone();
                }
                out
            }
            "input_audio" => json!({"type": "input_audio", "input_audio": field("input_audio")}),
            "file" => {
                let mut out = Map::new();
                out.insert("type".to_owned(), json!("input_file"));
                if let Some(Value::Object(file)) = part.get("file") {
                    for (name, value) in file {
                        out.insert(name.clone(), value.clone());
                    }
                }
                Value::Object(out)
            }
            _ => part.clone(),
        }
    });
    Value::Array(parts.collect())
}

/// An assistant content part in Responses terms.
fn output_part(part: &Value) -> Value {
    match part.get("type").and_then(Value::as_str) {
        Some("refusal") => json!({"type": "refusal", "refusal": part["refusal"]}),
        _ => json!({"type": "output_text", "text": part["text"]}),
    }
}

/// Nested function tools → flat ones; `custom` tools are refused.
fn tools(out: &mut Converted, tools: &Value) -> Vec<Value> {
    let mut flat = Vec::new();
    for (i, tool) in tools.as_array().into_iter().flatten().enumerate() {
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            out.refuse(format!("tools[{i}].type"), "`custom` tools");
            continue;
        }
        let mut function = Map::new();
        function.insert("type".to_owned(), json!("function"));
        if let Some(Value::Object(nested)) = tool.get("function") {
            for (name, value) in nested {
                function.insert(name.clone(), value.clone());
            }
        }
        flat.push(Value::Object(function));
    }
    flat
}

/// `{type: function, function: {name}}` → `{type: function, name}`; the rest as it is.
fn tool_choice(choice: &Value) -> Value {
    match choice.get("function").and_then(|f| f.get("name")) {
        Some(name) if choice.get("type").and_then(Value::as_str) == Some("function") => {
            json!({"type": "function", "name": name})
        }
        _ => choice.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(body: Value) -> Converted {
        internal(body.as_object().unwrap())
    }

    fn refused(body: Value) -> Vec<String> {
        convert(body).refusals.into_iter().map(|r| r.param).collect()
    }

    #[test]
    fn a_conversation_becomes_input_items_in_order() {
        let out = convert(json!({
            "model": "a/b",
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA==", "detail": "low"}},
                    {"type": "file", "file": {"file_data": "data:application/pdf;base64,AA==", "filename": "a.pdf"}}]},
                {"role": "assistant", "content": "Let me look.", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "one"},
                {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "two"}]},
                {"role": "assistant", "content": null, "refusal": "I can't."}
            ]
        }));
        assert_eq!(
            out.body["input"],
            json!([
                {"type": "message", "role": "developer", "content": "Be brief."},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AA==", "detail": "low"},
                    {"type": "input_file", "file_data": "data:application/pdf;base64,AA==", "filename": "a.pdf"}]},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me look."}]},
                {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{\"x\":1}"},
                {"type": "function_call", "call_id": "call_2", "name": "g", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "one"},
                {"type": "function_call_output", "call_id": "call_2", "output": "two"},
                {"type": "message", "role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]}
            ])
        );
        let origin = |message, tool_call| Origin { message, tool_call };
        assert_eq!(
            out.origins,
            vec![
                origin(0, None),
                origin(1, None),
                origin(2, None),
                origin(2, Some(0)),
                origin(2, Some(1)),
                origin(3, None),
                origin(4, None),
                origin(5, None)
            ]
        );
        assert!(out.refusals.is_empty());
    }

    #[test]
    fn parameters_map_to_the_responses_form() {
        let out = convert(json!({
            "model": "a/b", "messages": [], "stream": true, "stream_options": {"include_usage": true},
            "max_tokens": 10, "max_completion_tokens": 20, "temperature": 0.5, "top_p": 0.9, "seed": 7,
            "stop": ["END"], "user": "u1", "safety_identifier": "s1", "parallel_tool_calls": false, "reasoning_effort": "low",
            "response_format": {"type": "json_object"}, "store": false, "n": 1, "logprobs": false,
            "logit_bias": {}, "frequency_penalty": 0, "presence_penalty": 0.5, "session_id": "s",
            "tools": [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}, "strict": true}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}}, "prompt_cache_key": "k",
            "service_tier": "auto", "modalities": ["text"], "seed_extra": null
        }));
        assert_eq!(
            Value::Object(out.body),
            json!({"model": "a/b", "input": [], "stream": true, "max_output_tokens": 20, "temperature": 0.5,
                "top_p": 0.9, "seed": 7, "stop": ["END"], "user": "u1", "safety_identifier": "s1", "parallel_tool_calls": false,
                "reasoning": {"effort": "low"}, "response_format": {"type": "json_object"},
                "presence_penalty": 0.5, "session_id": "s",
                "tools": [{"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"}, "strict": true}],
                "tool_choice": {"type": "function", "name": "f"}})
        );
        assert_eq!(out.refusals.len(), 1);
        assert_eq!(
            (out.refusals[0].param.as_str(), out.refusals[0].honoured_by),
            ("presence_penalty", &[ProviderApi::Gemini][..])
        );
        let out = convert(json!({"max_tokens": 10}));
        assert_eq!(out.body["max_output_tokens"], 10);
    }

    #[test]
    fn what_changes_the_answer_and_has_no_equivalent_is_refused() {
        let params = refused(json!({
            "n": 2, "logprobs": true, "top_logprobs": 2, "logit_bias": {"1": 5}, "modalities": ["text", "audio"],
            "audio": {"voice": "alloy"}, "prediction": {"type": "content"}, "web_search_options": {},
            "verbosity": "low", "service_tier": "flex", "functions": [], "top_k": 5,
            "tools": [{"type": "custom", "custom": {"name": "c"}}],
            "messages": [{"role": "user", "name": "ada", "content": "x"}, {"role": "function", "name": "f", "content": "x"},
                {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}}]
        }));
        assert_eq!(
            params,
            vec![
                "n",
                "logprobs",
                "top_logprobs",
                "logit_bias",
                "modalities",
                "audio",
                "prediction",
                "web_search_options",
                "verbosity",
                "service_tier",
                "functions",
                "top_k",
                "tools[0].type",
                "messages[0].name",
                "messages[1].role",
                "messages[2].function_call"
            ]
        );
    }
}
