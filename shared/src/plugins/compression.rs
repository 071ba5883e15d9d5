//! `context-compression` (middle-out): when the input exceeds the model's context window, drop
//! whole middle turns until it fits, keeping the instructions, the first turn and the latest
//! turns. Turns keep function calls with their outputs.

use serde_json::{Map, Value};

use super::{Plugin, PluginContext};
use crate::conversation::{estimate_tokens, turns};

pub struct ContextCompression;

impl Plugin for ContextCompression {
    fn id(&self) -> &'static str {
        "context-compression"
    }

    fn before(&self, _options: &Map<String, Value>, ctx: &PluginContext, body: &mut Map<String, Value>) {
        let Some(context) = ctx.context_length else { return };
        let Some(Value::Array(items)) = body.get("input") else { return };
        let budget = context.saturating_sub(ctx.max_output_tokens.unwrap_or(0));
        let fixed = body.get("instructions").map_or(0, estimate_tokens) + body.get("tools").map_or(0, estimate_tokens);
        let mut turns = turns(items);
        let cost = |t: &Vec<Value>| t.iter().map(estimate_tokens).sum::<u64>();
        let mut total = fixed + turns.iter().map(cost).sum::<u64>();
        let mut dropped = 0;
        // Remove the turn just before the latest ones, working outward from the middle.
        while total > budget && turns.len() > 2 {
            let middle = turns.len() / 2;
            let turn = turns.remove(middle);
            total -= cost(&turn);
            dropped += 1;
        }
        if dropped > 0 {
            tracing::info!(dropped_turns = dropped, "context-compression dropped middle turns");
            body.insert("input".to_owned(), Value::Array(turns.into_iter().flatten().collect()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn drops_middle_turns_only_when_needed() {
        let items: Vec<Value> = (0..10)
            .flat_map(|i| {
                vec![
                    json!({"role": "user", "content": format!("question {i} {}", "x".repeat(400))}),
                    json!({"role": "assistant", "content": format!("answer {i}")}),
                ]
            })
            .collect();
        let mut body = Map::from_iter([("input".to_owned(), Value::Array(items.clone()))]);
        let roomy = PluginContext { context_length: Some(1_000_000), max_output_tokens: None, stream: false };
        ContextCompression.before(&Map::new(), &roomy, &mut body);
        assert_eq!(body["input"].as_array().map(Vec::len), Some(20));
        let tight = PluginContext { context_length: Some(600), max_output_tokens: Some(100), stream: false };
        ContextCompression.before(&Map::new(), &tight, &mut body);
        let kept = body["input"].as_array().cloned().unwrap_or_default();
        assert!(kept.len() < 20 && kept.len() >= 4);
        assert!(kept[0]["content"].as_str().unwrap_or_default().starts_with("question 0"), "first turn kept");
        assert!(kept[kept.len() - 2]["content"].as_str().unwrap_or_default().starts_with("question 9"), "latest kept");
        assert_eq!(kept.len() % 2, 0, "whole turns only");
    }
}
