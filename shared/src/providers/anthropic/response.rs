//! Response in: a complete answer and the stream decoder, as deltas.

use super::*;

pub(super) fn finish_reason(stop_reason: Option<&str>) -> FinishReason {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => FinishReason::Length,
        Some("refusal") => FinishReason::ContentFilter,
        // end_turn, stop_sequence, tool_use (the calls are the output), pause_turn.
        _ => FinishReason::Stop,
    }
}

/// An error message saying the prompt does not fit the model's context window.
pub(super) fn is_context_overflow(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("prompt is too long") || message.contains("exceed context limit")
}

// ---------------------------------------------------------------------------------------------
// Stream in

/// Decodes one Messages stream. Usage: the input side comes with `message_start`, the output
/// count (cumulative) with `message_delta`; each event's counts replace the ones before.
#[derive(Debug, Default)]
pub(super) struct AnthropicDecoder {
    pub(super) usage: AnthropicUsage,
    pub(super) stop_reason: Option<String>,
    /// Open tool blocks by index: the input given at their start, and whether deltas followed.
    pub(super) tools: BTreeMap<u64, (Value, bool)>,
}

impl DeltaDecoder for AnthropicDecoder {
    fn decode(&mut self, event: SseEvent) -> Result<Vec<Delta>, StreamFault> {
        let mut value: Value = serde_json::from_str(&event.data)
            .map_err(|_| StreamFault::Malformed("anthropic event data is not JSON".to_owned()))?;
        if let (Value::Object(object), Some(name)) = (&mut value, event.event) {
            object.entry("type").or_insert(Value::String(name));
        }
        let parsed: AnthropicEvent = serde_json::from_value(value)
            .map_err(|e| StreamFault::Malformed(format!("anthropic event does not fit its type: {e}")))?;
        Ok(self.event(parsed))
    }
}

impl AnthropicDecoder {
    pub(super) fn event(&mut self, event: AnthropicEvent) -> Vec<Delta> {
        match event {
            AnthropicEvent::MessageStart { message } => {
                self.usage.absorb(&message.usage);
                vec![Delta::Usage(self.usage.tokens())]
            }
            AnthropicEvent::ContentBlockStart { index, content_block } => match content_block {
                AnthropicContent::Text { text } => vec![Delta::Text(text)],
                AnthropicContent::Thinking { thinking, signature } => {
                    let mut deltas = Vec::new();
                    if !thinking.is_empty() {
                        deltas.push(Delta::Reasoning(thinking));
                    }
                    if !signature.is_empty() {
                        deltas.push(Delta::ReasoningState(signature));
                    }
                    deltas
                }
                AnthropicContent::RedactedThinking { data } => {
                    vec![Delta::ReasoningState(format!("{REDACTED_PREFIX}{data}"))]
                }
                AnthropicContent::ToolUse { id, name, input } => {
                    self.tools.insert(index, (input, false));
                    vec![Delta::ToolCallStart { index, call_id: id, name }]
                }
                AnthropicContent::Other => Vec::new(),
            },
            AnthropicEvent::ContentBlockDelta { index, delta } => match delta {
                AnthropicBlockDelta::TextDelta { text } => vec![Delta::Text(text)],
                AnthropicBlockDelta::InputJsonDelta { partial_json } => {
                    if let Some((_, streamed)) = self.tools.get_mut(&index) {
                        *streamed = true;
                    }
                    vec![Delta::ToolCallArguments { index, fragment: partial_json }]
                }
                AnthropicBlockDelta::ThinkingDelta { thinking } => vec![Delta::Reasoning(thinking)],
                AnthropicBlockDelta::SignatureDelta { signature } => vec![Delta::ReasoningState(signature)],
                AnthropicBlockDelta::Other => Vec::new(),
            },
            AnthropicEvent::ContentBlockStop { index } => match self.tools.remove(&index) {
                // A tool block whose input came whole at its start (no deltas followed).
                Some((Value::Object(input), false)) if !input.is_empty() => {
                    vec![Delta::ToolCallArguments { index, fragment: Value::Object(input).to_string() }]
                }
                _ => Vec::new(),
            },
            AnthropicEvent::MessageDelta { delta, usage } => {
                if delta.stop_reason.is_some() {
                    self.stop_reason = delta.stop_reason;
                }
                self.usage.absorb(&usage);
                vec![Delta::Usage(self.usage.tokens())]
            }
            AnthropicEvent::MessageStop => vec![Delta::Finish(finish_reason(self.stop_reason.as_deref()))],
            AnthropicEvent::Error { error } => {
                vec![Delta::Finish(FinishReason::Error(format!("{} ({})", error.message, error.kind)))]
            }
            // `ping` keeps the connection alive; new event types may appear and are skipped.
            AnthropicEvent::Ping | AnthropicEvent::Other => Vec::new(),
        }
    }
}
