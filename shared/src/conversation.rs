//! Conversation state: the items of a request's input, turns, and the history rebuilt from
//! stored responses for `previous_response_id` (on every provider), cut to fit the context.

use serde_json::{json, Value};

use crate::domain::StoredResponse;
use crate::ids::new_id;

/// The request's `input` as a list of items (a string becomes one user message).
pub fn input_items(input: Option<&Value>) -> Vec<Value> {
    match input {
        Some(Value::String(text)) => vec![json!({"type": "message", "role": "user", "content": text})],
        Some(Value::Array(items)) => items.clone(),
        _ => Vec::new(),
    }
}

/// Gives every input item an id (as OpenAI lists them in `input_items`).
pub fn with_ids(items: Vec<Value>) -> Vec<Value> {
    items
        .into_iter()
        .map(|mut item| {
            if item.get("id").is_none() && item.is_object() {
                let prefix = match item.get("type").and_then(Value::as_str) {
                    None | Some("message") => "msg_",
                    Some("function_call") => "fc_",
                    Some("function_call_output") => "fco_",
                    Some(_) => "item_",
                };
                item["id"] = json!(new_id(prefix));
            }
            item
        })
        .collect()
}

/// A rough token count (4 bytes a token) used to fit the context window.
pub fn estimate_tokens(value: &Value) -> u64 {
    u64::try_from(json_len(value) / 4 + 1).unwrap_or(u64::MAX)
}

/// The length of `value` serialized as JSON, counted without building the text.
pub fn json_len(value: &impl serde::Serialize) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        Err(_) => 0,
    }
}

/// Splits items into turns: a turn starts at each user message. Function call outputs follow
/// their calls inside the same turn, so cutting between turns never separates them.
pub fn turns(items: &[Value]) -> Vec<Vec<Value>> {
    let mut turns: Vec<Vec<Value>> = Vec::new();
    for item in items {
        let is_type = |t: &str| item.get("type").and_then(Value::as_str).is_none_or(|k| k == t);
        let starts = is_type("message") && item.get("role").and_then(Value::as_str) == Some("user");
        if starts || turns.is_empty() {
            turns.push(Vec::new());
        }
        if let Some(turn) = turns.last_mut() {
            turn.push(item.clone());
        }
    }
    turns
}

/// Prepares a stored turn's items for resending: item ids are the gateway's (or another
/// provider's), so they are removed; reasoning items go back only to the provider that made them.
fn resendable(items: Vec<Value>, same_provider: bool) -> Vec<Value> {
    items
        .into_iter()
        .filter(|item| {
            item.get("type").and_then(Value::as_str) != Some("reasoning")
                || (same_provider && item.get("encrypted_content").is_some())
        })
        .map(|mut item| {
            if let Some(object) = item.as_object_mut() {
                if object.get("type").and_then(Value::as_str) != Some("reasoning") {
                    object.remove("id");
                }
                object.remove("status");
            }
            item
        })
        .collect()
}

/// The history of a chain (oldest first) as input items for `provider`.
pub fn history(chain: &[StoredResponse], provider: &str) -> Vec<Value> {
    let mut items = Vec::new();
    for turn in chain {
        let same = turn.provider == provider;
        items.extend(resendable(turn.input_items.clone(), same));
        items.extend(resendable(turn.output_items(), same));
    }
    items
}

/// Drops the oldest history turns until history plus the rest fits `budget` tokens.
pub fn fit_history(history: Vec<Value>, rest_tokens: u64, budget: u64) -> Vec<Value> {
    let mut turns = turns(&history);
    let mut total: u64 = rest_tokens + turns.iter().flatten().map(estimate_tokens).sum::<u64>();
    let mut dropped = 0;
    while total > budget && !turns.is_empty() {
        let turn = turns.remove(0);
        total -= turn.iter().map(estimate_tokens).sum::<u64>();
        dropped += 1;
    }
    if dropped > 0 {
        tracing::info!(dropped_turns = dropped, "history cut to fit the context window");
    }
    turns.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_keep_calls_with_outputs() {
        let items = vec![
            json!({"role": "user", "content": "a"}),
            json!({"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}),
            json!({"type": "function_call_output", "call_id": "c1", "output": "x"}),
            json!({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "b"}]}),
            json!({"role": "user", "content": "c"}),
        ];
        let t = turns(&items);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].len(), 4);
        let kept = fit_history(items.clone(), 0, estimate_tokens(&items[4]) + 1);
        assert_eq!(kept, vec![items[4].clone()], "the oldest turn goes whole, call and output together");
    }

    #[test]
    fn string_input_becomes_a_user_message() {
        let items = with_ids(input_items(Some(&json!("hi"))));
        assert_eq!(items[0]["role"], "user");
        assert!(items[0]["id"].as_str().unwrap().starts_with("msg_"));
    }
}
