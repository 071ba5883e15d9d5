//! Response in: a complete answer and the stream decoder, as deltas.

use super::*;

pub(super) fn finish_reason(reason: Option<&str>) -> FinishReason {
    match reason {
        Some("length" | "max_tokens") => FinishReason::Length,
        Some("content_filter") => FinishReason::ContentFilter,
        Some("error") => FinishReason::Error("The provider reported an error.".to_owned()),
        // stop, tool_calls, function_call, eos and whatever else a provider names a normal end.
        _ => FinishReason::Stop,
    }
}

/// Tool call arguments as text (a few providers send them as a JSON object).
pub(super) fn arguments_text(arguments: &Value) -> String {
    match arguments {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Reasoning, text and refusal of a message or a delta.
pub(super) fn prose_deltas(answer: &ChatAnswer, out: &mut Vec<Delta>) {
    pub(super) fn string(field: &Option<Value>) -> Option<&str> {
        field.as_ref().and_then(Value::as_str).filter(|t| !t.is_empty())
    }
    if let Some(reasoning) = string(&answer.reasoning_content).or_else(|| string(&answer.reasoning)) {
        out.push(Delta::Reasoning(reasoning.to_owned()));
    }
    match &answer.content {
        Some(Value::String(text)) if !text.is_empty() => out.push(Delta::Text(text.clone())),
        // Mistral's reasoning models send typed chunks: `text` and `thinking`.
        Some(Value::Array(parts)) => {
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(text) = part.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                            out.push(Delta::Text(text.to_owned()));
                        }
                    }
                    Some("thinking") => {
                        let thinking = match part.get("thinking") {
                            Some(Value::String(text)) => text.clone(),
                            Some(Value::Array(pieces)) => {
                                pieces.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect()
                            }
                            _ => String::new(),
                        };
                        if !thinking.is_empty() {
                            out.push(Delta::Reasoning(thinking));
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    if let Some(refusal) = string(&answer.refusal) {
        out.push(Delta::Refusal(refusal.to_owned()));
    }
}

/// A tool call being streamed, by the provider's index.
#[derive(Debug)]
pub(super) struct StreamedCall {
    pub(super) index: u64,
    pub(super) id: Option<String>,
    pub(super) started: bool,
    /// Argument fragments that came before the function name.
    pub(super) pending: String,
}

/// Decodes a Chat Completions stream.
#[derive(Debug, Default)]
pub(super) struct ChatDecoder {
    pub(super) calls: Vec<StreamedCall>,
    /// The `finish_reason` seen so far; reported when the stream ends, after the usage chunk.
    pub(super) finish: Option<FinishReason>,
    pub(super) done: bool,
}

impl ChatDecoder {
    pub(super) fn tool_call(&mut self, piece: &ChatToolCallPiece, out: &mut Vec<Delta>) {
        let id = piece.id.clone().filter(|id| !id.is_empty());
        let index = piece
            .index
            .or_else(|| {
                id.as_ref().and_then(|id| self.calls.iter().find(|c| c.id.as_ref() == Some(id))).map(|c| c.index)
            })
            .or_else(|| if id.is_some() { None } else { self.calls.last().map(|c| c.index) })
            .unwrap_or_else(|| self.calls.iter().map(|c| c.index + 1).max().unwrap_or(0));
        let position = match self.calls.iter().position(|c| c.index == index) {
            Some(position) => position,
            None => {
                self.calls.push(StreamedCall { index, id: None, started: false, pending: String::new() });
                self.calls.len() - 1
            }
        };
        let call = &mut self.calls[position];
        if call.id.is_none() {
            call.id = id;
        }
        let function = piece.function.as_ref();
        let fragment = function.and_then(|f| f.arguments.as_ref()).map(arguments_text).unwrap_or_default();
        if !call.started {
            let Some(name) = function.and_then(|f| f.name.clone()).filter(|n| !n.is_empty()) else {
                call.pending.push_str(&fragment);
                return;
            };
            call.started = true;
            let call_id = call.id.clone().unwrap_or_else(|| new_id("call_"));
            out.push(Delta::ToolCallStart { index, call_id, name });
            if !call.pending.is_empty() {
                out.push(Delta::ToolCallArguments { index, fragment: std::mem::take(&mut call.pending) });
            }
        }
        if !fragment.is_empty() {
            out.push(Delta::ToolCallArguments { index, fragment });
        }
    }
}

impl DeltaDecoder for ChatDecoder {
    fn decode(&mut self, event: SseEvent) -> Result<Vec<Delta>, StreamFault> {
        let data = event.data.trim();
        if self.done || data.is_empty() {
            return Ok(Vec::new());
        }
        if data == "[DONE]" {
            self.done = true;
            return Ok(vec![Delta::Finish(self.finish.take().unwrap_or(FinishReason::Stop))]);
        }
        let chunk: ChatCompletion = serde_json::from_str(data)
            .map_err(|_| StreamFault::Malformed("a chunk is not a Chat Completions chunk".to_owned()))?;
        let mut out = Vec::new();
        if let Some(error) = chunk.error.as_ref().filter(|e| !e.is_null()) {
            let message = ErrorWords::of(error).message.unwrap_or_else(|| "The provider reported an error.".into());
            if let Some(usage) = chunk.usage() {
                out.push(Delta::Usage(usage));
            }
            self.done = true;
            out.push(Delta::Finish(FinishReason::Error(message)));
            return Ok(out);
        }
        if let Some(choice) = chunk.first_choice() {
            if let Some(delta) = choice.delta.as_ref().or(choice.message.as_ref()) {
                prose_deltas(delta, &mut out);
                for piece in delta.tool_calls.iter().flatten() {
                    self.tool_call(piece, &mut out);
                }
            }
            if let Some(reason) = choice.finish_reason.as_deref() {
                self.finish = Some(finish_reason(Some(reason)));
            }
        }
        if let Some(usage) = chunk.usage() {
            out.push(Delta::Usage(usage));
        }
        Ok(out)
    }

    /// A stream that ended without `[DONE]` still finishes if the provider said why it stopped;
    /// without a `finish_reason` it stays unfinished and the gateway reports it broken.
    fn finish(&mut self) -> Vec<Delta> {
        if self.done {
            return Vec::new();
        }
        match self.finish.take() {
            Some(reason) => {
                self.done = true;
                vec![Delta::Finish(reason)]
            }
            None => Vec::new(),
        }
    }
}

/// What a provider said in an error: OpenAI's `{"error": {message, type, code, param}}`, or the
/// variants compatible providers send (`{"error": "text"}`, `{"message": ...}` at the top level,
/// `{"detail": ...}`, a plain-text body).
#[derive(Debug, Default, PartialEq)]
pub(super) struct ErrorWords {
    pub(super) error_type: Option<String>,
    pub(super) code: Option<String>,
    pub(super) message: Option<String>,
    pub(super) param: Option<String>,
}

impl ErrorWords {
    pub(super) fn parse(bytes: &[u8]) -> Self {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(body)) => match body.get("error") {
                Some(error @ Value::Object(_)) => ErrorWords::of(error),
                Some(Value::String(message)) => {
                    ErrorWords { message: Some(message.clone()), ..ErrorWords::of(&Value::Object(body.clone())) }
                }
                _ => ErrorWords::of(&Value::Object(body)),
            },
            Ok(Value::String(message)) => ErrorWords { message: Some(message), ..ErrorWords::default() },
            _ => {
                let text = String::from_utf8_lossy(bytes);
                let text = text.trim();
                let message = (!text.is_empty()).then(|| text.chars().take(500).collect());
                ErrorWords { message, ..ErrorWords::default() }
            }
        }
    }

    /// The words of one error object. Numeric codes only repeat the HTTP status: not kept.
    pub(super) fn of(error: &Value) -> Self {
        let text = |name: &str| error.get(name).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
        let message = text("message").or_else(|| match error.get("detail") {
            Some(Value::String(detail)) => Some(detail.clone()),
            Some(Value::Null) | None => None,
            Some(detail) => Some(detail.to_string()),
        });
        let message = message.or_else(|| error.as_str().map(str::to_owned));
        ErrorWords { error_type: text("type"), code: text("code"), message, param: text("param") }
    }

    /// Whether the prompt did not fit the model's context window.
    pub(super) fn is_context_length(&self) -> bool {
        if self.code.as_deref() == Some("context_length_exceeded") {
            return true;
        }
        let message = self.message.as_deref().unwrap_or_default().to_ascii_lowercase();
        ["context length", "context_length", "context window", "maximum context"].iter().any(|m| message.contains(m))
    }
}
