//! Conversation state: the items of a request's input, turns, and the history rebuilt from
//! stored responses for `previous_response_id` (on every provider), cut to fit the context.

use serde_json::{json, Value};

use crate::domain::StoredResponse;

/// The request's `input` as a list of items (a string becomes one user message).
pub fn input_items(input: Option<&Value>) -> Vec<Value> {
    match input {
        Some(Value::String(text)) => vec![json!({"type": "message", "role": "user", "content": text})],
        Some(Value::Array(items)) => items.clone(),
        _ => Vec::new(),
    }
}

/// Whether an input item refers to a stored item by id: `{"type": "item_reference", "id"}`, or
/// only an `id` (the SDK's `type` is optional there).
pub fn is_reference(item: &Value) -> bool {
    match item.get("type") {
        Some(Value::String(kind)) => kind == "item_reference",
        None | Some(Value::Null) => {
            item.get("id").is_some() && item.get("role").is_none() && item.get("content").is_none()
        }
        Some(_) => false,
    }
}

/// Gives every input item of the response `response_id` an id (as OpenAI lists them in
/// `input_items`); ids name their response (see [`crate::ids::item_id`]).
pub fn with_ids(response_id: &str, items: Vec<Value>) -> Vec<Value> {
    items
        .into_iter()
        .enumerate()
        .map(|(index, mut item)| {
            if item.get("id").is_none_or(Value::is_null) && item.is_object() {
                let prefix = match item.get("type").and_then(Value::as_str) {
                    None | Some("message") => "msg_",
                    Some("function_call") => "fc_",
                    Some("function_call_output") => "fco_",
                    Some(_) => "item_",
                };
                item["id"] = json!(crate::ids::item_id(prefix, response_id, &format!("i{index}")));
            }
            item
        })
        .collect()
}

/// A stored item as OpenAI lists it (`input_items`): a `message` with `type`, `status` and
/// content parts (`input_text` for a string, `output_text` with `annotations` for an assistant),
/// every other item with a `status`.
pub fn response_item(item: &Value) -> Value {
    let mut item = item.clone();
    let Some(object) = item.as_object_mut() else { return item };
    let kind = object.get("type").and_then(Value::as_str).unwrap_or("message").to_owned();
    if kind == "message" {
        object.insert("type".to_owned(), json!("message"));
        let assistant = object.get("role").and_then(Value::as_str) == Some("assistant");
        let text_type = if assistant { "output_text" } else { "input_text" };
        let part = |text: &str| {
            if assistant {
                json!({"type": "output_text", "text": text, "annotations": []})
            } else {
                json!({"type": text_type, "text": text})
            }
        };
        match object.get_mut("content") {
            Some(Value::String(text)) => {
                let parts = json!([part(text)]);
                object.insert("content".to_owned(), parts);
            }
            Some(Value::Array(parts)) => {
                for part in parts.iter_mut().filter_map(Value::as_object_mut) {
                    if part.get("type").and_then(Value::as_str) == Some("output_text")
                        && !part.contains_key("annotations")
                    {
                        part.insert("annotations".to_owned(), json!([]));
                    }
                }
            }
            _ => {}
        }
    }
    if matches!(kind.as_str(), "message" | "function_call" | "function_call_output" | "reasoning") {
        object.entry("status").or_insert_with(|| json!("completed"));
    }
    item
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

/// A stored item prepared for resending: item ids are the gateway's (providers keep no state:
/// Mesh sends `store: false`), so they are removed with the status; reasoning goes back only to
/// the provider that made it, and only with its encrypted state (an id alone names nothing).
pub fn resend(mut item: Value, same_provider: bool) -> Option<Value> {
    let reasoning = item.get("type").and_then(Value::as_str) == Some("reasoning");
    if reasoning && !(same_provider && item.get("encrypted_content").is_some_and(Value::is_string)) {
        return None;
    }
    if let Some(object) = item.as_object_mut() {
        object.remove("id");
        object.remove("status");
    }
    Some(item)
}

fn resendable(items: Vec<Value>, same_provider: bool) -> Vec<Value> {
    items.into_iter().filter_map(|item| resend(item, same_provider)).collect()
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
        let response_id = crate::ids::new_id("resp_");
        let items = with_ids(&response_id, input_items(Some(&json!("hi"))));
        assert_eq!(items[0]["role"], "user");
        let id = items[0]["id"].as_str().unwrap();
        assert!(id.starts_with("msg_"));
        assert_eq!(crate::ids::response_of_item(id), Some(response_id));
    }

    #[test]
    fn references_are_told_from_messages() {
        assert!(is_reference(&json!({"type": "item_reference", "id": "msg_1"})));
        assert!(is_reference(&json!({"id": "msg_1"})));
        assert!(is_reference(&json!({"type": null, "id": "msg_1"})));
        assert!(!is_reference(&json!({"id": "msg_1", "role": "user", "content": "x"})));
        assert!(!is_reference(&json!({"type": "message", "id": "msg_1"})));
    }

    #[test]
    fn stored_items_list_as_response_items() {
        assert_eq!(
            response_item(&json!({"role": "user", "content": "hi", "id": "msg_1"})),
            json!({"type": "message", "role": "user", "id": "msg_1", "status": "completed",
                "content": [{"type": "input_text", "text": "hi"}]})
        );
        assert_eq!(
            response_item(&json!({"role": "assistant", "content": [{"type": "output_text", "text": "a"}], "id": "m"})),
            json!({"type": "message", "role": "assistant", "id": "m", "status": "completed",
                "content": [{"type": "output_text", "text": "a", "annotations": []}]})
        );
        let call = json!({"type": "function_call", "id": "fc_1", "call_id": "c", "name": "f", "arguments": "{}", "status": "in_progress"});
        assert_eq!(response_item(&call), call, "a status given is kept");
        assert_eq!(
            response_item(&json!({"type": "function_call_output", "call_id": "c", "output": "x"}))["status"],
            "completed"
        );
    }

    #[test]
    fn resent_items_lose_gateway_ids_and_foreign_reasoning() {
        let reasoning = json!({"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "e"});
        assert_eq!(
            resend(reasoning.clone(), true),
            Some(json!({"type": "reasoning", "summary": [], "encrypted_content": "e"}))
        );
        assert_eq!(resend(reasoning, false), None, "another provider cannot read it");
        assert_eq!(
            resend(json!({"type": "reasoning", "id": "rs_1", "summary": []}), true),
            None,
            "an id alone names nothing"
        );
        assert_eq!(
            resend(json!({"role": "user", "content": "x", "id": "m", "status": "completed"}), false),
            Some(json!({"role": "user", "content": "x"}))
        );
    }
}
