//! The provider-bound body of a request: the client's body minus Mesh's own fields, with
//! defaults filled in (request > key > template) and Chat-style `response_format` turned into
//! `text.format`.

use serde_json::{json, Map, Value};

use crate::config::ProviderApi;
use crate::domain::{ApiKey, Template};
use crate::error::GatewayError;
use crate::plugins::Selection;
use crate::request::{ResponsesRequest, GATEWAY_FIELDS};
use crate::templates::Rendered;

/// The client's body minus gateway fields, with defaults filled in (request > key > template)
/// and the template's system text before the request's instructions.
pub fn base_body(
    request: &ResponsesRequest,
    key: &ApiKey,
    template: Option<&Template>,
    rendered: Option<&Rendered>,
    plugins: &Selection,
) -> Result<Map<String, Value>, GatewayError> {
    let mut body = request.body.clone();
    for field in GATEWAY_FIELDS {
        body.remove(field);
    }
    if !plugins.foreign.is_empty() {
        body.insert("plugins".to_owned(), Value::Array(plugins.foreign.clone()));
    }
    if let Some(format) = body.remove("response_format") {
        let text = body.entry("text").or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(text) = text {
            if !text.contains_key("format") {
                text.insert("format".to_owned(), text_format(format));
            }
        }
    }
    let template_params = template.map(|t| &t.params);
    for params in [Some(&key.default_params), template_params].into_iter().flatten() {
        for (name, value) in params {
            if !body.contains_key(name) || body[name].is_null() {
                body.insert(name.clone(), value.clone());
            }
        }
    }
    if let Some(system) = rendered.and_then(|r| r.system.as_deref()) {
        let instructions = match body.get("instructions").and_then(Value::as_str) {
            Some(own) if !own.is_empty() => format!("{system}\n\n{own}"),
            _ => system.to_owned(),
        };
        body.insert("instructions".to_owned(), Value::String(instructions));
    }
    Ok(body)
}

/// Tags a provider body for the provider's abuse monitoring when the client did not: a hashed
/// `safety_identifier` (never the owner's name), for the APIs documented to take one (OpenAI's
/// Responses and Chat endpoints as `safety_identifier`, Anthropic's `metadata.user_id`, Bedrock's
/// `requestMetadata`). Other Chat-compatible providers get no field they might refuse; Gemini
/// has none. The client never sees it: responses echo the client's own fields.
pub(crate) fn tag_owner(body: &mut Map<String, Value>, owner: &str, api: ProviderApi) {
    if !matches!(api, ProviderApi::Responses | ProviderApi::Anthropic | ProviderApi::Bedrock) {
        return;
    }
    let untagged = |field: &str| body.get(field).is_none_or(Value::is_null);
    if untagged("user") && untagged("safety_identifier") {
        body.insert("safety_identifier".to_owned(), Value::String(crate::ids::safety_identifier(owner)));
    }
}

/// Chat-style `response_format` → Responses `text.format`.
pub(crate) fn text_format(format: Value) -> Value {
    match format.get("type").and_then(Value::as_str) {
        Some("json_schema") => {
            let inner = &format["json_schema"];
            let mut out = Map::new();
            out.insert("type".to_owned(), json!("json_schema"));
            for field in ["name", "schema", "strict", "description"] {
                if let Some(value) = inner.get(field) {
                    out.insert(field.to_owned(), value.clone());
                }
            }
            Value::Object(out)
        }
        _ => format,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in_after_the_request_and_gateway_fields_stay_home() {
        let request = crate::request::parse(
            br#"{"input":"x","temperature":0.5,"session_id":"s","plugins":[],"response_format":{"type":"json_object"}}"#,
        )
        .unwrap();
        let key: ApiKey = serde_json::from_value(json!({
            "id": "key_1", "key_hash": "h", "name": "n", "owner": "team-a", "created_at": 0,
            "default_params": {"temperature": 1.5, "top_p": 0.9}
        }))
        .unwrap();
        let body = base_body(&request, &key, None, None, &Selection::default()).unwrap();
        assert_eq!(body["temperature"], json!(0.5), "the request wins");
        assert_eq!(body["top_p"], json!(0.9), "then the key's defaults");
        assert_eq!(body["text"], json!({"format": {"type": "json_object"}}));
        for field in ["session_id", "plugins", "response_format", "user"] {
            assert!(!body.contains_key(field), "{field}");
        }
    }

    #[test]
    fn owners_are_tagged_hashed_where_the_api_takes_a_tag() {
        for api in [ProviderApi::Responses, ProviderApi::Anthropic, ProviderApi::Bedrock] {
            let mut body = Map::new();
            tag_owner(&mut body, "team-a", api);
            let tag = body["safety_identifier"].as_str().unwrap();
            assert!(!tag.contains("team-a"), "the provider never learns the owner's name: {tag}");
        }
        for api in [ProviderApi::Chat, ProviderApi::Gemini, ProviderApi::Echo] {
            let mut body = Map::new();
            tag_owner(&mut body, "team-a", api);
            assert!(body.is_empty(), "{api:?}: no field a compatible server might refuse");
        }
    }

    #[test]
    fn the_clients_own_tag_wins() {
        for (field, value) in [("user", "u-1"), ("safety_identifier", "s-1")] {
            let mut body = Map::new();
            body.insert(field.to_owned(), json!(value));
            tag_owner(&mut body, "team-a", ProviderApi::Responses);
            assert_eq!(body.len(), 1, "{field}: {body:?}");
        }
    }

    #[test]
    fn chat_response_format_becomes_text_format() {
        let format = json!({"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object"}, "strict": true, "extra": 1}});
        assert_eq!(
            text_format(format),
            json!({"type": "json_schema", "name": "r", "schema": {"type": "object"}, "strict": true})
        );
        assert_eq!(text_format(json!({"type": "json_object"})), json!({"type": "json_object"}));
    }
}
