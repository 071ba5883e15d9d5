//! Prompt templates (DESIGN §5): `{{ name }}` placeholders substituted literally (no recursion)
//! into `system` and string message contents, every missing variable named at once.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::domain::Template;
use crate::error::GatewayError;

/// A rendered template: what goes before the request's instructions and input.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub system: Option<String>,
    pub messages: Vec<Value>,
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Substitutes placeholders in one text, noting missing names.
fn substitute(text: &str, variables: &Map<String, Value>, missing: &mut BTreeSet<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = after[..end].trim();
        if !name.is_empty() && name.bytes().all(is_name_byte) {
            match variables.get(name) {
                Some(Value::String(value)) => out.push_str(value),
                Some(Value::Number(n)) => out.push_str(&n.to_string()),
                Some(Value::Bool(b)) => out.push_str(if *b { "true" } else { "false" }),
                _ => {
                    missing.insert(name.to_owned());
                }
            }
        } else {
            // Not a placeholder: keep the text as written.
            out.push_str(&rest[start..start + 2 + end + 2]);
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

fn render_content(content: &Value, variables: &Map<String, Value>, missing: &mut BTreeSet<String>) -> Value {
    match content {
        Value::String(text) => Value::String(substitute(text, variables, missing)),
        Value::Array(parts) => Value::Array(
            parts
                .iter()
                .map(|part| {
                    let mut part = part.clone();
                    if let Some(Value::String(text)) = part.get("text") {
                        let rendered = substitute(text, variables, missing);
                        part["text"] = Value::String(rendered);
                    }
                    part
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Renders a template with the request's variables; extra variables are ignored.
pub fn render(template: &Template, variables: &Map<String, Value>) -> Result<Rendered, GatewayError> {
    let mut missing = BTreeSet::new();
    let system = template.system.as_deref().map(|s| substitute(s, variables, &mut missing));
    let messages = template
        .messages
        .iter()
        .map(|message| {
            let mut message = message.clone();
            if let Some(content) = message.get("content") {
                let rendered = render_content(content, variables, &mut missing);
                message["content"] = rendered;
            }
            message
        })
        .collect();
    if !missing.is_empty() {
        let names: Vec<String> = missing.into_iter().collect();
        return Err(GatewayError::invalid(
            "missing_template_variables",
            "variables",
            format!("The template `{}` needs variables that were not given: {}.", template.name, names.join(", ")),
        ));
    }
    Ok(Rendered { system, messages })
}

/// The variables a template's texts use, in order of first use.
pub fn placeholders(template: &Template) -> Vec<String> {
    let mut names = BTreeSet::new();
    let empty = Map::new();
    if let Some(system) = &template.system {
        substitute(system, &empty, &mut names);
    }
    for message in &template.messages {
        if let Some(content) = message.get("content") {
            render_content(content, &empty, &mut names);
        }
    }
    names.into_iter().collect()
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
    fn leaves_non_placeholders_alone() {
        let t = template("JSON like {{ \"a\": 1 }} and {{unclosed", json!([]));
        assert_eq!(render(&t, &Map::new()).unwrap().system.as_deref(), Some("JSON like {{ \"a\": 1 }} and {{unclosed"));
    }
}
