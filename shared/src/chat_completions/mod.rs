//! `POST /v1/chat/completions` requests on the same pipeline as `/v1/responses`: a Chat
//! Completions body is validated with its own names ([`validate`]), kept as sent for providers
//! that speak Chat Completions ([`forward`]), and converted once into the pipeline's internal
//! (Responses) form ([`convert`]), which the model resolution, templates, plugins, spend caps and
//! the translated providers (Anthropic, Gemini, Bedrock, echo) take. [`ChatSurface`] tells the
//! failover loop which body each catalog row gets and calls its provider for Chat Completions
//! answers; translated providers' errors are renamed into Chat Completions terms.

use serde_json::{json, Map, Value};

use crate::config::ProviderConfig;
use crate::domain::ApiKey;
use crate::error::GatewayError;
use crate::pipeline::failover::{Attempt, Surface};
use crate::pipeline::plan::Plan;
use crate::providers::completions::{forwards, ChatReply};
use crate::providers::{Body, Route};
use crate::request::ResponsesRequest;

pub mod convert;
mod forward;
mod validate;

use convert::{Converted, Origin, Refusal};

/// A validated Chat Completions request.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The body as the client sent it.
    pub body: Map<String, Value>,
    /// The same request in the pipeline's internal (Responses) form.
    pub internal: ResponsesRequest,
    /// Whether the client asked for the usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
    refusals: Vec<Refusal>,
    origins: Vec<Origin>,
    /// The client's name for the output limit.
    limit_param: &'static str,
}

impl AsRef<ResponsesRequest> for ChatRequest {
    fn as_ref(&self) -> &ResponsesRequest {
        &self.internal
    }
}

/// Parses and validates a body.
pub fn parse(bytes: &[u8]) -> Result<ChatRequest, GatewayError> {
    let body = crate::request::parse_object(bytes)?;
    validate::check(&body)?;
    let Converted { body: internal, refusals, origins } = convert::internal(&body);
    let text = |field: &str| body.get(field).and_then(Value::as_str).map(str::to_owned);
    let internal = ResponsesRequest {
        model: text("model"),
        stream: body.get("stream") == Some(&Value::Bool(true)),
        session_id: text("session_id"),
        template: text("template"),
        previous_response_id: None,
        max_output_tokens: internal.get("max_output_tokens").and_then(Value::as_u64),
        body: internal,
    };
    let set = |field: &str| body.get(field).is_some_and(|v| !v.is_null());
    let limit_param =
        if set("max_tokens") && !set("max_completion_tokens") { "max_tokens" } else { "max_completion_tokens" };
    Ok(ChatRequest {
        include_usage: body.get("stream_options").and_then(|o| o.get("include_usage")) == Some(&Value::Bool(true)),
        body,
        internal,
        refusals,
        origins,
        limit_param,
    })
}

impl ChatRequest {
    /// Refuses what the provider (which translates) cannot honour.
    fn refuse_for(&self, provider: &ProviderConfig) -> Result<(), GatewayError> {
        match self.refusals.iter().find(|r| !r.honoured_by.contains(&provider.api)) {
            Some(refusal) => Err(crate::providers::unsupported(
                "unsupported_parameter",
                &refusal.param,
                &provider.name,
                &refusal.what,
            )),
            None => Ok(()),
        }
    }

    /// A parameter of the internal form in Chat Completions terms; `offset` is the number of
    /// template messages before the request's own.
    fn chat_param(&self, param: &str, offset: usize) -> String {
        if let Some(rest) = param.strip_prefix("input[") {
            let Some((index, rest)) = rest.split_once(']') else { return "messages".to_owned() };
            let origin =
                index.parse::<usize>().ok().and_then(|k| k.checked_sub(offset)).and_then(|k| self.origins.get(k));
            let Some(origin) = origin else { return "template".to_owned() };
            let message = format!("messages[{}]", origin.message);
            return match (origin.tool_call, rest) {
                (Some(call), ".call_id") => format!("{message}.tool_calls[{call}].id"),
                (Some(call), ".name" | ".arguments") => format!("{message}.tool_calls[{call}].function{rest}"),
                (Some(call), _) => format!("{message}.tool_calls[{call}]"),
                (None, ".call_id") => format!("{message}.tool_call_id"),
                (None, ".output") => format!("{message}.content"),
                (None, rest) => format!("{message}{rest}"),
            };
        }
        if let Some(rest) = param.strip_prefix("tools[") {
            if let Some((index, field)) = rest.split_once("].") {
                if ["name", "description", "parameters", "strict"].iter().any(|f| field.starts_with(f)) {
                    return format!("tools[{index}].function.{field}");
                }
            }
            return param.to_owned();
        }
        match param {
            "input" => "messages".to_owned(),
            "instructions" => "template".to_owned(),
            "max_output_tokens" => self.limit_param.to_owned(),
            "reasoning" | "reasoning.effort" => "reasoning_effort".to_owned(),
            p if p == "text" || p.starts_with("text.") => "response_format".to_owned(),
            p => p.to_owned(),
        }
    }

    /// An error about the internal form, in Chat Completions terms.
    fn rename(&self, err: GatewayError, offset: usize) -> GatewayError {
        match err {
            GatewayError::InvalidRequest { code, message, param: Some(param) } => {
                let chat = self.chat_param(&param, offset);
                let message = message.replace(&format!("`{param}`"), &format!("`{chat}`"));
                GatewayError::InvalidRequest { code, message, param: Some(chat) }
            }
            GatewayError::UpstreamClient(mut fault) => {
                fault.param = fault.param.map(|param| self.chat_param(&param, offset));
                GatewayError::UpstreamClient(fault)
            }
            other => other,
        }
    }
}

/// The Chat Completions endpoint's side of the failover loop.
pub struct ChatSurface<'a> {
    request: &'a ChatRequest,
    /// Template messages before the request's own in the internal `input`.
    offset: usize,
}

impl<'a> ChatSurface<'a> {
    pub fn new(request: &'a ChatRequest, plan: &Plan) -> Self {
        ChatSurface { request, offset: plan.rendered.as_ref().map_or(0, |r| r.messages.len()) }
    }
}

impl Surface for ChatSurface<'_> {
    type Reply = ChatReply;

    fn body_for(&self, plan: &Plan, key: &ApiKey, route: &Route) -> Result<Body, GatewayError> {
        let (row, provider) = (&route.row, route.provider.as_ref());
        if forwards(provider.api) {
            return forward::body(self.request, plan, key, row, provider);
        }
        self.request.refuse_for(provider)?;
        plan.body_for(&self.request.internal, key, row, provider).map_err(|e| self.request.rename(e, self.offset))
    }

    async fn call(&self, at: Attempt<'_>) -> Result<ChatReply, GatewayError> {
        let stream = self.request.internal.stream;
        let reply = at.dispatcher.call_chat(at.route, at.body, stream, at.catalog_model, at.deadline).await;
        if forwards(at.route.provider.api) {
            reply
        } else {
            reply.map_err(|e| self.request.rename(e, self.offset))
        }
    }
}

/// Runs the gateway plugins' `after` step (`response-healing`) on a complete chat completion:
/// each choice's text is shown to them as a Responses message, and written back.
pub fn after(plan: &Plan, request: &ChatRequest, completion: &mut Value) -> Result<(), GatewayError> {
    if plan.plugins.gateway.is_empty() {
        return Ok(());
    }
    let mut view_body = Map::new();
    if let Some(format) = request.body.get("response_format").filter(|f| !f.is_null()) {
        view_body.insert("text".to_owned(), json!({"format": crate::pipeline::body::text_format(format.clone())}));
    }
    let Some(choices) = completion.get_mut("choices").and_then(Value::as_array_mut) else { return Ok(()) };
    let output: Vec<Value> = choices
        .iter()
        .map(|choice| {
            let text = choice["message"]["content"].as_str().unwrap_or_default();
            json!({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]})
        })
        .collect();
    let mut view = json!({"output": output});
    plan.plugins.after(&view_body, &mut view)?;
    for (choice, item) in choices.iter_mut().zip(view["output"].as_array().into_iter().flatten()) {
        if let (Some(Value::String(text)), Some(content)) = (
            item["content"][0].get("text"),
            choice.get_mut("message").and_then(|m| m.get_mut("content")).filter(|c| c.is_string()),
        ) {
            *content = Value::String(text.clone());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> ChatRequest {
        parse(body.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn the_internal_form_carries_what_the_pipeline_acts_on() {
        let chat = request(json!({"model": "a/b", "messages": [{"role": "user", "content": "hi"}], "stream": true,
            "stream_options": {"include_usage": true}, "max_tokens": 9, "session_id": "s", "template": "t"}));
        let internal = &chat.internal;
        assert_eq!(
            (internal.model.as_deref(), internal.stream, internal.session_id.as_deref(), internal.template.as_deref()),
            (Some("a/b"), true, Some("s"), Some("t"))
        );
        assert_eq!((internal.max_output_tokens, chat.limit_param, chat.include_usage), (Some(9), "max_tokens", true));
        assert_eq!(internal.previous_response_id, None);
        let plain = request(json!({"messages": [], "stream": true}));
        assert!(!plain.include_usage && plain.internal.stream);
        assert_eq!(plain.limit_param, "max_completion_tokens");
        assert_eq!(parse(b"[]").unwrap_err().kind(), "invalid_type");
        assert_eq!(parse(b"{").unwrap_err().kind(), "invalid_json");
    }

    #[test]
    fn translated_errors_are_renamed_into_chat_terms() {
        let chat = request(json!({"max_tokens": 5, "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": "https://x"}}]},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "ok"}
        ]}));
        for (param, offset, expected) in [
            ("input[1].content[1].image_url", 0, "messages[1].content[1].image_url"),
            ("input[3].content[1]", 2, "messages[1].content[1]"),
            ("input[0]", 2, "template"),
            ("input[2].arguments", 0, "messages[2].tool_calls[0].function.arguments"),
            ("input[3].call_id", 0, "messages[3].tool_call_id"),
            ("input", 0, "messages"),
            ("tools[2].name", 0, "tools[2].function.name"),
            ("tools[2].type", 0, "tools[2].type"),
            ("text.format", 0, "response_format"),
            ("max_output_tokens", 0, "max_tokens"),
            ("reasoning.effort", 0, "reasoning_effort"),
            ("seed", 0, "seed"),
        ] {
            assert_eq!(chat.chat_param(param, offset), expected, "{param}");
        }
        let err = chat.rename(
            GatewayError::invalid(
                "unsupported_parameter",
                "input[1].content[1].image_url",
                "The provider `bedrock` does not support `input[1].content[1].image_url` URLs.",
            ),
            0,
        );
        let body = err.body();
        assert_eq!(body["param"], "messages[1].content[1].image_url");
        assert_eq!(body["message"], "The provider `bedrock` does not support `messages[1].content[1].image_url` URLs.");
    }

    #[test]
    fn refusals_name_the_provider_and_spare_those_that_honour_them() {
        let provider = |api| ProviderConfig {
            name: "p".into(),
            api,
            base_url: String::new(),
            api_key: None,
            api_key_secret_arn: None,
            token_delay: std::time::Duration::ZERO,
        };
        let chat = request(json!({"messages": [], "frequency_penalty": 1}));
        assert!(chat.refuse_for(&provider(crate::config::ProviderApi::Gemini)).is_ok());
        let err = chat.refuse_for(&provider(crate::config::ProviderApi::Anthropic)).unwrap_err();
        assert_eq!((err.kind(), err.body()["param"].as_str()), ("unsupported_parameter", Some("frequency_penalty")));
        assert!(err.body()["message"].as_str().unwrap().contains("`p`"));
    }
}
