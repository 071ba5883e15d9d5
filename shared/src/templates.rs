//! Prompt templates (DESIGN §5): `{{ name }}` placeholders substituted literally (no recursion)
//! into `system` and string message contents, every missing variable named at once; and a
//! template built from, changed by and shown as its JSON fields (the `/v1/templates` routes and
//! `mesh-admin templates`).

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use crate::domain::{now_unix, Template};
use crate::error::GatewayError;
use crate::ids::{new_id, TEMPLATE_ID_PREFIX};

/// A rendered template: what goes before the request's instructions and input.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub system: Option<String>,
    pub messages: Vec<Value>,
}

/// Largest rendered template: the texts of `system` and every message together may hold at most
/// this many bytes (the request body cap: a template cannot make a request larger than a client
/// could send). Checked before anything is allocated.
pub const MAX_RENDERED_BYTES: usize = crate::request::MAX_BODY_BYTES;

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Where substituted text goes: a string, or a counter that only measures.
trait Sink {
    fn push(&mut self, text: &str);
}

impl Sink for String {
    fn push(&mut self, text: &str) {
        self.push_str(text);
    }
}

/// Counts the bytes a rendering would produce, without producing them.
#[derive(Debug, Default)]
struct Measure(usize);

impl Sink for Measure {
    fn push(&mut self, text: &str) {
        self.0 = self.0.saturating_add(text.len());
    }
}

/// Substitutes placeholders in one text into `out`, noting missing names.
fn substitute(text: &str, variables: &Map<String, Value>, missing: &mut BTreeSet<String>, out: &mut impl Sink) {
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push(&rest[start..]);
            return;
        };
        let name = after[..end].trim();
        if !name.is_empty() && name.bytes().all(is_name_byte) {
            match variables.get(name) {
                Some(Value::String(value)) => out.push(value),
                Some(Value::Number(n)) => out.push(&n.to_string()),
                Some(Value::Bool(b)) => out.push(if *b { "true" } else { "false" }),
                _ => {
                    missing.insert(name.to_owned());
                }
            }
        } else {
            // Not a placeholder: keep the text as written.
            out.push(&rest[start..start + 2 + end + 2]);
        }
        rest = &after[end + 2..];
    }
    out.push(rest);
}

/// One text rendered into a string of exactly the right size (sizes were checked before).
fn render_text(text: &str, variables: &Map<String, Value>) -> String {
    let mut ignored = BTreeSet::new();
    let mut size = Measure::default();
    substitute(text, variables, &mut ignored, &mut size);
    let mut out = String::with_capacity(size.0);
    substitute(text, variables, &mut ignored, &mut out);
    out
}

/// Every text of a template that placeholders are substituted in, in order.
fn texts(template: &Template) -> impl Iterator<Item = &str> {
    let message_texts = template.messages.iter().filter_map(|m| m.get("content")).flat_map(|content| {
        let texts: Vec<&str> = match content {
            Value::String(text) => vec![text.as_str()],
            Value::Array(parts) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect(),
            _ => Vec::new(),
        };
        texts
    });
    template.system.as_deref().into_iter().chain(message_texts)
}

fn render_content(content: &Value, variables: &Map<String, Value>) -> Value {
    match content {
        Value::String(text) => Value::String(render_text(text, variables)),
        Value::Array(parts) => Value::Array(
            parts
                .iter()
                .map(|part| {
                    let mut part = part.clone();
                    if let Some(Value::String(text)) = part.get("text") {
                        let rendered = render_text(text, variables);
                        part["text"] = Value::String(rendered);
                    }
                    part
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Renders a template with the request's variables; extra variables are ignored. Missing
/// variables are all named (400 `missing_template_variables`); an output over
/// [`MAX_RENDERED_BYTES`] is refused (400 `invalid_value`, param `variables`) after measuring,
/// before any of it is built.
pub fn render(template: &Template, variables: &Map<String, Value>) -> Result<Rendered, GatewayError> {
    let mut missing = BTreeSet::new();
    let mut size = Measure::default();
    for text in texts(template) {
        substitute(text, variables, &mut missing, &mut size);
    }
    if !missing.is_empty() {
        let names: Vec<String> = missing.into_iter().collect();
        return Err(GatewayError::invalid(
            "missing_template_variables",
            "variables",
            format!("The template `{}` needs variables that were not given: {}.", template.name, names.join(", ")),
        ));
    }
    if size.0 > MAX_RENDERED_BYTES {
        return Err(GatewayError::invalid(
            "invalid_value",
            "variables",
            format!(
                "The template `{}` rendered with these variables would be larger than {MAX_RENDERED_BYTES} bytes; send shorter variables.",
                template.name
            ),
        ));
    }
    let system = template.system.as_deref().map(|s| render_text(s, variables));
    let messages = template
        .messages
        .iter()
        .map(|message| {
            let mut message = message.clone();
            if let Some(content) = message.get("content") {
                let rendered = render_content(content, variables);
                message["content"] = rendered;
            }
            message
        })
        .collect();
    Ok(Rendered { system, messages })
}

/// The variables a template's texts use, by name.
pub fn placeholders(template: &Template) -> Vec<String> {
    let mut names = BTreeSet::new();
    let empty = Map::new();
    for text in texts(template) {
        substitute(text, &empty, &mut names, &mut Measure::default());
    }
    names.into_iter().collect()
}

/// Largest template body (`POST`/`PATCH`, and `mesh-admin templates put` files): a template is
/// stored as one item, and a DynamoDB item holds at most 400 KB. Larger bodies get 413
/// `request_too_large`.
pub const MAX_TEMPLATE_BYTES: usize = 256 * 1024;

/// The API view of a template.
pub fn view(template: &Template) -> Value {
    json!({
        "id": template.id,
        "object": "template",
        "name": template.name,
        "global": template.is_global(),
        "description": template.description,
        "system": template.system,
        "messages": template.messages,
        "model": template.model,
        "params": template.params,
        "variables": template.variables,
        "created_at": template.created_at,
        "updated_at": template.updated_at,
    })
}

fn invalid_type(param: &str, expected: &str) -> GatewayError {
    GatewayError::invalid("invalid_type", param, format!("Invalid type for `{param}`: expected {expected}."))
}

/// The fields of a template body (`POST`/`PATCH`): a JSON object of at most
/// [`MAX_TEMPLATE_BYTES`].
pub fn parse_fields(bytes: &[u8]) -> Result<Map<String, Value>, GatewayError> {
    if bytes.len() > MAX_TEMPLATE_BYTES {
        return Err(GatewayError::RequestTooLarge { limit_bytes: MAX_TEMPLATE_BYTES });
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(GatewayError::InvalidRequest {
            code: "invalid_type",
            message: "The request body must be a JSON object.".to_owned(),
            param: None,
        }),
        Err(err) => Err(GatewayError::InvalidRequest {
            code: "invalid_json",
            message: format!("The request body is not valid JSON: {err}."),
            param: None,
        }),
    }
}

/// Applies the fields of `patch` to `template`: absent fields stay, `null` clears; unknown fields
/// are refused and fields the gateway owns (`id`, `owner`, times) are ignored.
pub fn apply(template: &mut Template, patch: &Map<String, Value>) -> Result<(), GatewayError> {
    for (field, value) in patch {
        let clear = value.is_null();
        match field.as_str() {
            "name" => match value {
                Value::String(name)
                    if !name.is_empty()
                        && name.len() <= 128
                        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)) =>
                {
                    template.name.clone_from(name)
                }
                Value::String(_) => {
                    return Err(GatewayError::invalid(
                        "invalid_value",
                        "name",
                        "`name` must be 1-128 letters, digits, `_`, `-` or `.`.",
                    ))
                }
                _ => return Err(invalid_type("name", "a string")),
            },
            "description" | "system" | "model" => {
                let text = match value {
                    Value::Null => None,
                    Value::String(text) => Some(text.clone()),
                    _ => return Err(invalid_type(field, "a string or null")),
                };
                match field.as_str() {
                    "description" => template.description = text,
                    "system" => template.system = text,
                    _ => template.model = text,
                }
            }
            "messages" => {
                template.messages = match value {
                    Value::Null => Vec::new(),
                    Value::Array(messages) => {
                        for (i, message) in messages.iter().enumerate() {
                            let role = message.get("role").and_then(Value::as_str);
                            if !matches!(role, Some("user" | "assistant" | "system" | "developer"))
                                || message.get("content").is_none()
                            {
                                return Err(GatewayError::invalid(
                                    "invalid_value",
                                    format!("messages[{i}]"),
                                    "Each message needs a `role` (user, assistant, system, developer) and `content`.",
                                ));
                            }
                        }
                        messages.clone()
                    }
                    _ => return Err(invalid_type("messages", "an array of messages")),
                }
            }
            "params" => {
                template.params = match value {
                    Value::Null => Map::new(),
                    Value::Object(params) => params.clone(),
                    _ => return Err(invalid_type("params", "an object")),
                }
            }
            "variables" => {
                template.variables = match value {
                    Value::Null => Vec::new(),
                    Value::Array(names) => names.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
                    _ => return Err(invalid_type("variables", "an array of names")),
                }
            }
            "id" | "object" | "global" | "created_at" | "updated_at" | "owner" => {}
            other => {
                return Err(GatewayError::invalid(
                    "invalid_value",
                    other,
                    format!("Unknown template field `{other}`: expected name, description, system, messages, model, params, variables."),
                ))
            }
        }
        if clear && field == "name" {
            return Err(GatewayError::invalid("invalid_value", "name", "`name` cannot be cleared."));
        }
    }
    if template.variables.is_empty() {
        template.variables = placeholders(template);
    }
    Ok(())
}

/// Builds a new template of `owner` from a JSON object (also used by `mesh-admin`).
pub fn new_template(owner: &str, fields: &Map<String, Value>) -> Result<Template, GatewayError> {
    if !matches!(fields.get("name"), Some(Value::String(_))) {
        return Err(GatewayError::invalid("missing_required_parameter", "name", "Missing required parameter: `name`."));
    }
    let now = now_unix();
    let mut template = Template {
        id: new_id(TEMPLATE_ID_PREFIX),
        name: String::new(),
        owner: owner.to_owned(),
        description: None,
        system: None,
        messages: Vec::new(),
        model: None,
        params: Map::new(),
        variables: Vec::new(),
        created_at: now,
        updated_at: now,
    };
    apply(&mut template, fields)?;
    Ok(template)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(system: &str, messages: Value) -> Template {
        serde_json::from_value(json!({"id": "tpl_1", "name": "t", "owner": "o", "system": system,
            "messages": messages, "created_at": 0, "updated_at": 0}))
        .unwrap()
    }

    #[test]
    fn substitutes_literally_with_spaces_and_names_all_missing() {
        let t = template(
            "You help {{ name }} with {{topic}}.",
            json!([{"role": "user", "content": "About {{ topic }}: {{ q }}"}]),
        );
        let vars = Map::from_iter([
            ("name".to_owned(), json!("Ada")),
            ("topic".to_owned(), json!("{{ q }}")),
            ("q".to_owned(), json!(42)),
            ("extra".to_owned(), json!("ignored")),
        ]);
        let rendered = render(&t, &vars).unwrap();
        assert_eq!(rendered.system.as_deref(), Some("You help Ada with {{ q }}."), "no recursion");
        assert_eq!(rendered.messages[0]["content"], "About {{ q }}: 42");
        let err = render(&t, &Map::new()).unwrap_err();
        assert_eq!(err.body()["code"], "missing_template_variables");
        assert!(err.body()["message"].as_str().unwrap().contains("name, q, topic"));
        assert_eq!(placeholders(&t), ["name", "q", "topic"]);
    }

    #[test]
    fn refuses_an_output_over_the_cap_before_building_it() {
        // 3000 placeholders x 1 MiB would be about 3 GiB: measured, refused, never built.
        let t = template(
            &"{{a}}".repeat(3000),
            json!([{"role": "user", "content": [{"type": "input_text", "text": "{{a}}"}]}]),
        );
        let vars = Map::from_iter([("a".to_owned(), json!("x".repeat(1 << 20)))]);
        let err = render(&t, &vars).unwrap_err();
        assert_eq!((err.status().as_u16(), err.kind()), (400, "invalid_value"));
        assert_eq!(err.body()["param"], "variables");
        // Missing variables are still named first, whatever the size.
        let missing = template("{{a}} {{b}}", json!([]));
        assert_eq!(render(&missing, &vars).unwrap_err().kind(), "missing_template_variables");
    }

    #[test]
    fn the_cap_counts_every_text_and_is_inclusive() {
        let half = MAX_RENDERED_BYTES / 2;
        let t = template("{{a}}", json!([{"role": "user", "content": "{{a}}"}]));
        let exact = Map::from_iter([("a".to_owned(), json!("y".repeat(half)))]);
        let rendered = render(&t, &exact).unwrap();
        assert_eq!(rendered.system.as_deref().map(str::len), Some(half));
        let over = Map::from_iter([("a".to_owned(), json!("y".repeat(half + 1)))]);
        assert_eq!(render(&t, &over).unwrap_err().kind(), "invalid_value", "system and messages together");
    }

    #[test]
    fn leaves_non_placeholders_alone() {
        let t = template("JSON like {{ \"a\": 1 }} and {{unclosed", json!([]));
        assert_eq!(render(&t, &Map::new()).unwrap().system.as_deref(), Some("JSON like {{ \"a\": 1 }} and {{unclosed"));
    }
}
