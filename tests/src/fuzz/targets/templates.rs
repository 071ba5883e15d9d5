//! Template rendering (`mesh::templates`) with caller variables: every missing name is
//! reported at once, substitution is literal (a value's own `{{ x }}` stays as written), and the
//! rendered text is bounded (`MAX_RENDERED_BYTES`, else a 400) whatever the variables.

use mesh::domain::Template;
use mesh::templates::{placeholders, render, MAX_RENDERED_BYTES};
use serde_json::{json, Map, Value};

use crate::fuzz::mutate::object;

fn rendered_size(system: Option<&str>, messages: &[Value]) -> usize {
    system.map_or(0, str::len) + messages.iter().map(|m| m.to_string().len()).sum::<usize>()
}

pub fn target(data: &[u8]) {
    // The input is `{"template": {...}, "variables": {...}}`, or else a template text with
    // a fixed set of variables.
    let (template, variables) = match serde_json::from_slice::<Value>(data) {
        Ok(Value::Object(mut doc)) => {
            let mut template = object(doc.remove("template").unwrap_or_default());
            for (field, value) in [
                ("id", json!("tpl_1")),
                ("name", json!("t")),
                ("owner", json!("o")),
                ("created_at", json!(0)),
                ("updated_at", json!(0)),
            ] {
                template.insert(field.to_owned(), value);
            }
            let Ok(template) = serde_json::from_value::<Template>(Value::Object(template)) else { return };
            (template, object(doc.remove("variables").unwrap_or_default()))
        }
        _ => {
            let text = String::from_utf8_lossy(data).into_owned();
            let template = Template {
                id: "tpl_1".into(),
                name: "t".into(),
                owner: "o".into(),
                description: None,
                system: Some(text.clone()),
                messages: vec![json!({"role": "user", "content": [{"type": "input_text", "text": text}]})],
                model: None,
                params: Map::new(),
                variables: Vec::new(),
                created_at: 0,
                updated_at: 0,
            };
            let vars = Map::from_iter([
                ("name".to_owned(), json!("Ada")),
                ("x".to_owned(), json!("{{ name }}")),
                ("n".to_owned(), json!(1.5)),
            ]);
            (template, vars)
        }
    };
    let names = placeholders(&template);
    let usable = |v: &Value| matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_));
    let missing: Vec<&String> = names.iter().filter(|n| !variables.get(*n).is_some_and(usable)).collect();
    match render(&template, &variables) {
        Ok(rendered) => {
            assert!(missing.is_empty(), "rendered although {missing:?} are missing");
            // Measured as JSON text here (escapes included), hence the slack over the bound.
            let size = rendered_size(rendered.system.as_deref(), &rendered.messages);
            let own = rendered_size(template.system.as_deref(), &template.messages);
            assert!(size <= 2 * (MAX_RENDERED_BYTES + own), "rendered {size} bytes from a {own}-byte template");
            assert_eq!(rendered.messages.len(), template.messages.len());
            // Literal: rendering again with no variables only reports what the values brought in.
            if names.is_empty() {
                assert_eq!(rendered.system, template.system);
            }
        }
        Err(err) => {
            let body = err.body();
            if body["code"] == "missing_template_variables" {
                let message = body["message"].as_str().unwrap_or("");
                let listed: Vec<String> = missing.iter().map(|s| (*s).clone()).collect();
                assert!(!listed.is_empty(), "missing reported, none missing: {message}");
                assert!(message.contains(&listed.join(", ")), "{message} does not name {listed:?}");
            } else {
                assert!(err.status().is_client_error(), "{err:?}");
            }
        }
    }
}

pub fn seeds() -> Vec<Vec<u8>> {
    let many = "{{ v }}".repeat(1000);
    [
        json!({"template": {"system": "You help {{ name }} with {{topic}}.", "messages": [{"role": "user", "content": "About {{ topic }}: {{ q }}"}]},
            "variables": {"name": "Ada", "topic": "{{ q }}", "q": 42, "extra": true}}),
        json!({"template": {"system": "JSON like {{ \"a\": 1 }} and {{unclosed", "messages": [{"role": "user", "content": [{"type": "input_text", "text": "{{a}}{{b}}"}]}]}, "variables": {"a": 1}}),
        json!({"template": {"system": many, "messages": []}, "variables": {"v": "x".repeat(8192)}}),
    ]
    .iter()
    .map(|v| v.to_string().into_bytes())
    .chain([b"{{ name }} {{x}} {{ n }} {{ missing }} {{".to_vec()])
    .collect()
}

pub const TOKENS: &[&str] = &["{{", "}}", "{{ name }}", "{{x}}", "{{ }}", "{{{{", "}}}}"];
