//! Properties shared by several targets: the well-formedness of a Responses event sequence.

use std::collections::HashMap;

use mesh::providers::assemble::REQUIRED_RESPONSE_FIELDS;
use serde_json::Value;

const TERMINAL: [&str; 3] = ["response.completed", "response.incomplete", "response.failed"];
const LIFECYCLE: [&str; 3] = ["response.created", "response.in_progress", "response.queued"];

/// Checks a Responses event sequence as the official SDKs rely on it: `response.created`
/// first, exactly one terminal event and it last, sequence numbers 0, 1, 2, … without gaps,
/// items added at output indexes 0, 1, 2, … in order, every event naming an `item_id` refers
/// to an item added before at the same `output_index`, every added item done exactly once
/// before the end, deltas adding up to the done texts, and the final `output` listing the items
/// at their output indexes. Also as openai-node's stream accumulator enforces (and the SDK
/// types declare): every lifecycle event's response carries the required fields, ids are
/// non-empty, function calls have a call id, `output_item.done` keeps the type and call id of
/// the item added, item-scoped events fit their item's type (`function_call_arguments.done`
/// naming its function), part indexes start at 0, text events carry `logprobs`, only `error`
/// events carry a top-level `error`, a cut answer's output holds no item still in progress,
/// and usage details include `cache_write_tokens`.
pub fn responses_events(events: &[Value]) -> Result<(), String> {
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap_or("")).collect();
    if kinds.first() != Some(&"response.created") {
        return Err(format!("first event is {:?}, not response.created", kinds.first()));
    }
    let terminals = kinds.iter().filter(|k| TERMINAL.contains(k)).count();
    if terminals != 1 || !TERMINAL.contains(kinds.last().unwrap_or(&"")) {
        return Err(format!("{terminals} terminal events; last is {:?}", kinds.last()));
    }
    let mut added: HashMap<String, u64> = HashMap::new();
    let mut added_order: Vec<String> = Vec::new();
    let mut done: HashMap<String, Value> = HashMap::new();
    let mut text: HashMap<String, String> = HashMap::new();
    // Each item as added, for the checks on its events and its `output_item.done`.
    let mut items: HashMap<String, Value> = HashMap::new();
    for (i, event) in events.iter().enumerate() {
        if TERMINAL.contains(&kinds[i]) || LIFECYCLE.contains(&kinds[i]) {
            let response = &event["response"];
            if let Some(missing) = REQUIRED_RESPONSE_FIELDS.iter().find(|f| response.get(**f).is_none()) {
                return Err(format!("{} without the required response field `{missing}`", kinds[i]));
            }
        }
        if event.get("error").is_some() && kinds[i] != "error" {
            return Err(format!("{} carries a top-level error key", kinds[i]));
        }
        let text_event = kinds[i] == "response.output_text.delta" || kinds[i] == "response.output_text.done";
        if text_event && !event["logprobs"].is_array() {
            return Err(format!("{} without a logprobs list", kinds[i]));
        }
        for (field, index) in [("content_index", &event["content_index"]), ("summary_index", &event["summary_index"])] {
            if !index.is_null() && index.as_u64() != Some(0) {
                return Err(format!("{} with {field} {index}: each item has one part", kinds[i]));
            }
        }
        if event["sequence_number"].as_u64() != Some(i as u64) {
            return Err(format!("event {i} has sequence_number {}", event["sequence_number"]));
        }
        let kind = kinds[i];
        if kind == "response.output_item.added" {
            let id = event["item"]["id"].as_str().unwrap_or("").to_owned();
            let index = event["output_index"].as_u64();
            if index != Some(added_order.len() as u64) {
                return Err(format!("item {id} added at output_index {index:?}, expected {}", added_order.len()));
            }
            if id.is_empty() {
                return Err(format!("an item without an id added at {index:?}"));
            }
            if added.insert(id.clone(), added_order.len() as u64).is_some() {
                return Err(format!("item {id} added twice"));
            }
            if event["item"]["type"] == "function_call" && event["item"]["call_id"].as_str().unwrap_or("").is_empty() {
                return Err(format!("function call {id} without a call_id"));
            }
            items.insert(id.clone(), event["item"].clone());
            added_order.push(id);
        }
        if kind == "response.output_item.done" {
            let id = event["item"]["id"].as_str().unwrap_or("").to_owned();
            if added.get(&id).copied() != event["output_index"].as_u64() {
                return Err(format!("{kind} for {id} at {} not added there", event["output_index"]));
            }
            if let Some(opened) = items.get(&id) {
                for field in ["type", "call_id"] {
                    if opened.get(field) != event["item"].get(field) {
                        return Err(format!("{kind} for {id} changes its {field}"));
                    }
                }
            }
            if done.insert(id.clone(), event["item"].clone()).is_some() {
                return Err(format!("item {id} done twice"));
            }
        }
        if let Some(id) = event.get("item_id").and_then(Value::as_str) {
            if added.get(id).copied() != event["output_index"].as_u64() {
                return Err(format!("{kind} names item {id} at {}, not added there before", event["output_index"]));
            }
            if done.contains_key(id) {
                return Err(format!("{kind} names item {id} after it was done"));
            }
            if let Some(delta) = event.get("delta").and_then(Value::as_str) {
                text.entry(id.to_owned()).or_default().push_str(delta);
            }
            let item = items.get(id).cloned().unwrap_or(Value::Null);
            let fits = match kind {
                k if k.starts_with("response.output_text.")
                    || k.starts_with("response.refusal.")
                    || k.starts_with("response.content_part.") =>
                {
                    item["type"] == "message"
                }
                k if k.starts_with("response.function_call_arguments.") => item["type"] == "function_call",
                k if k.starts_with("response.reasoning_summary_") => item["type"] == "reasoning",
                _ => true,
            };
            if !fits {
                return Err(format!("{kind} names item {id} of type {}", item["type"]));
            }
            if kind == "response.function_call_arguments.done" && event["name"] != item["name"] {
                return Err(format!("{kind} of {id} names {} for the function {}", event["name"], item["name"]));
            }
            for (done_kind, field) in [
                ("response.output_text.done", "text"),
                ("response.refusal.done", "refusal"),
                ("response.reasoning_summary_text.done", "text"),
                ("response.function_call_arguments.done", "arguments"),
            ] {
                if kind == done_kind {
                    let streamed = text.get(id).map(String::as_str).unwrap_or("");
                    let full = event[field].as_str().unwrap_or("");
                    let empty_call = done_kind.contains("arguments") && streamed.is_empty() && full == "{}";
                    if streamed != full && !empty_call {
                        return Err(format!("{kind} of {id}: deltas {streamed:?} but done {full:?}"));
                    }
                }
            }
        }
    }
    if let Some(open) = added_order.iter().find(|id| !done.contains_key(*id)) {
        return Err(format!("item {open} never done"));
    }
    let last = &events[events.len() - 1];
    let status = last["response"]["status"].as_str().unwrap_or("");
    let expected = match kinds[kinds.len() - 1] {
        "response.completed" => "completed",
        "response.incomplete" => "incomplete",
        _ => "failed",
    };
    if status != expected {
        return Err(format!("terminal {} with status {status}", kinds[kinds.len() - 1]));
    }
    let output = last["response"]["output"].as_array().cloned().unwrap_or_default();
    // A cut answer keeps its items: whatever was added is in the terminal output, the ones
    // still open when it was cut marked `incomplete` (never `completed`).
    if expected != "completed" {
        if let Some(item) = output.iter().find(|item| item["status"] == "in_progress") {
            return Err(format!("{} output keeps item {} in progress", kinds[kinds.len() - 1], item["id"]));
        }
    }
    let input_details = &last["response"]["usage"]["input_tokens_details"];
    if !input_details["cached_tokens"].is_u64() || !input_details["cache_write_tokens"].is_u64() {
        return Err(format!("usage input details incomplete: {input_details}"));
    }
    let ids: Vec<&str> = output.iter().map(|o| o["id"].as_str().unwrap_or("")).collect();
    if ids != added_order.iter().map(String::as_str).collect::<Vec<_>>() {
        return Err(format!("final output order {ids:?} differs from output indexes {added_order:?}"));
    }
    for item in &output {
        let id = item["id"].as_str().unwrap_or("");
        if done.get(id) != Some(item) {
            return Err(format!("final output item {id} differs from its output_item.done"));
        }
    }
    let usage = &last["response"]["usage"];
    let (input, output_tokens, total) =
        (usage["input_tokens"].as_u64(), usage["output_tokens"].as_u64(), usage["total_tokens"].as_u64());
    match (input, output_tokens, total) {
        (Some(i), Some(o), Some(t)) if t == i.saturating_add(o) => {}
        _ => return Err(format!("usage totals do not add up: {usage}")),
    }
    Ok(())
}
