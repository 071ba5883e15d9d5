//! `response-healing`: when JSON output was asked for (`text.format` json_schema / json_object)
//! and the model's text is not valid JSON, repair what is commonly broken (code fences, prose
//! around the JSON, trailing commas, truncation) or fail clearly with 502. Non-streaming only.

use serde_json::{Map, Value};

use super::{Plugin, PluginContext};
use crate::error::GatewayError;

pub struct ResponseHealing;

fn wants_json(body: &Map<String, Value>) -> bool {
    let kind = body.get("text").and_then(|t| t.get("format")).and_then(|f| f.get("type")).and_then(Value::as_str);
    matches!(kind, Some("json_schema" | "json_object"))
}

/// Where a scan of JSON text stands with respect to strings.
#[derive(Default)]
struct Strings {
    /// Inside a string (its opening quote seen, its closing one not yet).
    open: bool,
    /// The previous character inside the string was an unescaped backslash.
    escaped: bool,
}

impl Strings {
    /// Takes the next character; whether it belongs to a string (its quotes included).
    fn inside(&mut self, c: char) -> bool {
        if !self.open {
            self.open = c == '"';
            return self.open;
        }
        match (self.escaped, c) {
            (true, _) => self.escaped = false,
            (false, '\\') => self.escaped = true,
            (false, '"') => self.open = false,
            _ => {}
        }
        true
    }
}

/// Removes commas that directly precede `}` or `]` (outside strings).
fn drop_trailing_commas(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut strings = Strings::default();
    for (i, c) in chars.iter().enumerate() {
        if strings.inside(*c) {
            out.push(*c);
            continue;
        }
        if *c == ',' {
            let next = chars[i + 1..].iter().find(|n| !n.is_whitespace());
            if matches!(next, Some('}' | ']')) {
                continue;
            }
        }
        out.push(*c);
    }
    out
}

/// Closes an unterminated string and open brackets of truncated JSON.
fn close_truncated(text: &str) -> String {
    let mut stack = Vec::new();
    let mut strings = Strings::default();
    for c in text.chars() {
        if strings.inside(c) {
            continue;
        }
        match c {
            '{' => stack.push('}'),
            '[' => stack.push(']'),
            '}' | ']' => {
                stack.pop();
            }
            _ => {}
        }
    }
    let mut out = text.trim_end().to_owned();
    if strings.open {
        out.push('"');
    }
    let trimmed = out.trim_end();
    if trimmed.ends_with(',') || trimmed.ends_with(':') {
        out = trimmed[..trimmed.len() - 1].to_owned();
    }
    while let Some(close) = stack.pop() {
        out.push(close);
    }
    out
}

/// Tries to turn `text` into valid JSON.
pub fn heal(text: &str) -> Option<String> {
    if serde_json::from_str::<Value>(text).is_ok() {
        return Some(text.to_owned());
    }
    let mut candidate = text.trim().to_owned();
    if let Some(start) = candidate.find("```") {
        let after = &candidate[start + 3..];
        let after = after.strip_prefix("json").unwrap_or(after);
        let inner = after.find("```").map_or(after, |end| &after[..end]);
        candidate = inner.trim().to_owned();
    }
    if let Some(start) = candidate.find(['{', '[']) {
        let end = candidate.rfind(['}', ']']).map_or(candidate.len(), |e| e + 1).max(start + 1);
        let sliced = if end > start { candidate[start..end].to_owned() } else { candidate[start..].to_owned() };
        let repaired = drop_trailing_commas(&sliced);
        if serde_json::from_str::<Value>(&repaired).is_ok() {
            return Some(repaired);
        }
        let closed = close_truncated(&drop_trailing_commas(&candidate[start..]));
        if serde_json::from_str::<Value>(&closed).is_ok() {
            return Some(closed);
        }
    }
    None
}

impl Plugin for ResponseHealing {
    fn id(&self) -> &'static str {
        "response-healing"
    }

    fn check(&self, _options: &Map<String, Value>, ctx: &PluginContext) -> Result<(), GatewayError> {
        if ctx.stream {
            return Err(GatewayError::invalid(
                "unsupported_plugin",
                "plugins",
                "The plugin `response-healing` works on complete responses: use it without `stream: true`.",
            ));
        }
        Ok(())
    }

    fn after(
        &self,
        _options: &Map<String, Value>,
        body: &Map<String, Value>,
        response: &mut Value,
    ) -> Result<(), GatewayError> {
        if !wants_json(body) {
            return Ok(());
        }
        let Some(output) = response.get_mut("output").and_then(Value::as_array_mut) else { return Ok(()) };
        for item in output.iter_mut().filter(|i| i.get("type").and_then(Value::as_str) == Some("message")) {
            let Some(parts) = item.get_mut("content").and_then(Value::as_array_mut) else { continue };
            for part in parts.iter_mut().filter(|p| p.get("type").and_then(Value::as_str) == Some("output_text")) {
                let Some(text) = part.get("text").and_then(Value::as_str) else { continue };
                match heal(text) {
                    Some(healed) => part["text"] = Value::String(healed),
                    None => {
                        return Err(GatewayError::UpstreamFailure(
                            "the model's output is not valid JSON and could not be repaired".to_owned(),
                        ))
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repairs_common_breakage() {
        assert_eq!(heal("{\"a\":1}").as_deref(), Some("{\"a\":1}"));
        assert_eq!(heal("```json\n{\"a\": [1, 2,],}\n```").as_deref(), Some("{\"a\": [1, 2]}"));
        assert_eq!(heal("Here you go: {\"a\": 1} Hope it helps").as_deref(), Some("{\"a\": 1}"));
        assert_eq!(heal("{\"a\": {\"b\": \"trunc").as_deref(), Some("{\"a\": {\"b\": \"trunc\"}}"));
        assert_eq!(heal("{\"a\": [1, 2").as_deref(), Some("{\"a\": [1, 2]}"));
        assert_eq!(heal("no json at all"), None);
    }
}
