//! The body a Chat Completions provider gets: the client's own body, unknown fields included,
//! minus Mesh's fields, plus what Mesh adds. Mesh adds, in order of precedence below the
//! request's own fields: the key's `default_params`, then the template's `params` (named the
//! Responses way and renamed here: `max_output_tokens` → `max_tokens`, or
//! `max_completion_tokens` for OpenAI; `reasoning.effort` → `reasoning_effort`); a hashed
//! `safety_identifier` of the owner for OpenAI when the client set neither `user` nor
//! `safety_identifier` (other Chat-compatible servers get no field they might refuse); the template's system text and messages before the request's
//! `messages`; foreign `plugins` (OpenRouter only). Gateway plugins (`pii-redaction`,
//! `context-compression`) run on the messages as they run on Responses input. The upstream
//! model id and the streaming options are written when the call is built
//! (`providers::completions::relay`).

use serde_json::{json, Map, Value};

use super::ChatRequest;
use crate::config::{ProviderApi, ProviderConfig};
use crate::domain::{ApiKey, ModelPrice};
use crate::error::GatewayError;
use crate::pipeline::plan::Plan;
use crate::plugins::PluginContext;
use crate::request::GATEWAY_FIELDS;

/// Responses-only defaults, which have no Chat Completions meaning.
const RESPONSES_ONLY: [&str; 10] = [
    "instructions",
    "input",
    "text",
    "truncation",
    "include",
    "store",
    "previous_response_id",
    "background",
    "max_tool_calls",
    "conversation",
];

/// The forwarded body for one catalog row and its provider.
pub(super) fn body(
    request: &ChatRequest,
    plan: &Plan,
    key: &ApiKey,
    row: &ModelPrice,
    provider: &ProviderConfig,
) -> Result<Map<String, Value>, GatewayError> {
    plan.check_foreign_plugins(provider)?;
    let mut body = request.body.clone();
    for field in GATEWAY_FIELDS {
        body.remove(field);
    }
    if !plan.plugins.foreign.is_empty() {
        body.insert("plugins".to_owned(), Value::Array(plan.plugins.foreign.clone()));
    }
    let template_params = plan.template.as_ref().map(|t| &t.params);
    for params in [Some(&key.default_params), template_params].into_iter().flatten() {
        for (name, value) in params {
            fill_default(&mut body, name, value, provider.api);
        }
    }
    crate::pipeline::body::tag_owner(&mut body, &key.owner, provider.api);
    if let Some(rendered) = &plan.rendered {
        let mut messages = Vec::with_capacity(rendered.messages.len() + 1);
        if let Some(system) = &rendered.system {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages.extend(rendered.messages.iter().map(chat_message));
        if let Some(Value::Array(own)) = body.remove("messages") {
            messages.extend(own);
        }
        body.insert("messages".to_owned(), Value::Array(messages));
    }
    if !plan.plugins.gateway.is_empty() {
        let ctx = PluginContext {
            context_length: row.context_length,
            max_output_tokens: request.internal.max_output_tokens.or(row.max_output_tokens),
            stream: request.internal.stream,
        };
        // The plugins read and rewrite `input` (and count `tools`): the messages are their input.
        let mut view = Map::new();
        view.insert("input".to_owned(), body.remove("messages").unwrap_or_else(|| Value::Array(Vec::new())));
        if let Some(tools) = body.get("tools") {
            view.insert("tools".to_owned(), tools.clone());
        }
        plan.plugins.before(&ctx, &mut view);
        body.insert("messages".to_owned(), view.remove("input").unwrap_or_else(|| Value::Array(Vec::new())));
    }
    Ok(body)
}

/// Fills one default (named the Responses way) unless the request set it.
fn fill_default(body: &mut Map<String, Value>, name: &str, value: &Value, api: ProviderApi) {
    let (name, value) = match name {
        _ if RESPONSES_ONLY.contains(&name) => return,
        "max_output_tokens" => {
            let set = |field: &str| body.get(field).is_some_and(|v| !v.is_null());
            if set("max_tokens") || set("max_completion_tokens") {
                return;
            }
            // OpenAI's reasoning models only take `max_completion_tokens`; most compatible
            // providers only know `max_tokens`.
            (if api == ProviderApi::Responses { "max_completion_tokens" } else { "max_tokens" }, value)
        }
        "reasoning" => match value.get("effort") {
            Some(effort) if !effort.is_null() => ("reasoning_effort", effort),
            _ => return,
        },
        other => (other, value),
    };
    if body.get(name).is_none_or(Value::is_null) {
        body.insert(name.to_owned(), value.clone());
    }
}

/// A template message (`{role, content}`, content a string or Responses parts) as a Chat
/// Completions message.
fn chat_message(message: &Value) -> Value {
    let role = message.get("role").cloned().unwrap_or_else(|| json!("user"));
    let content = match message.get("content") {
        Some(Value::Array(parts)) => Value::Array(
            parts
                .iter()
                .map(|part| match part.get("type").and_then(Value::as_str) {
                    Some("input_text" | "output_text") => json!({"type": "text", "text": part["text"]}),
                    Some("input_image") => json!({"type": "image_url", "image_url": {"url": part["image_url"]}}),
                    _ => part.clone(),
                })
                .collect(),
        ),
        Some(content) => content.clone(),
        None => json!(""),
    };
    json!({"role": role, "content": content})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_renamed_and_never_override_the_request() {
        let mut body = json!({"temperature": 0.2, "max_tokens": 5}).as_object().cloned().unwrap();
        for (name, value) in [
            ("temperature", json!(1.5)),
            ("max_output_tokens", json!(100)),
            ("reasoning", json!({"effort": "low"})),
            ("top_p", json!(0.9)),
            ("text", json!({"verbosity": "low"})),
        ] {
            fill_default(&mut body, name, &value, ProviderApi::Chat);
        }
        assert_eq!(
            Value::Object(body),
            json!({"temperature": 0.2, "max_tokens": 5, "reasoning_effort": "low", "top_p": 0.9})
        );
        for (api, name) in [(ProviderApi::Responses, "max_completion_tokens"), (ProviderApi::Chat, "max_tokens")] {
            let mut body = Map::new();
            fill_default(&mut body, "max_output_tokens", &json!(100), api);
            assert_eq!(Value::Object(body), json!({name: 100}), "{api:?}");
        }
    }

    #[test]
    fn template_messages_become_chat_messages() {
        assert_eq!(chat_message(&json!({"role": "user", "content": "hi"})), json!({"role": "user", "content": "hi"}));
        assert_eq!(
            chat_message(&json!({"type": "message", "role": "assistant",
                "content": [{"type": "output_text", "text": "ok"}, {"type": "input_image", "image_url": "https://x/y.png"}]})),
            json!({"role": "assistant", "content": [{"type": "text", "text": "ok"},
                {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]})
        );
    }
}
