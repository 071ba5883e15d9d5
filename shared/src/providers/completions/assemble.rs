//! The Chat Completions assembler: the deltas of a translated provider (Anthropic, Gemini,
//! Bedrock, the built-in echo) become `chat.completion.chunk`s, or one `chat.completion` for a
//! whole answer, in OpenAI's shape (<https://platform.openai.com/docs/api-reference/chat/object>,
//! <https://platform.openai.com/docs/api-reference/chat-streaming>).
//!
//! Streams: a first chunk with the `assistant` role, one chunk per text, refusal or reasoning
//! delta and per tool call piece (a call's first piece carries its id, type and name), a chunk
//! with the `finish_reason`, then the usage chunk (`choices: []`) and the end marker (`null`, sent
//! as `data: [DONE]`). The usage chunk is always made: the client gets it only when it asked
//! with `stream_options.include_usage`. A provider error mid-answer becomes one chunk with an
//! `error` member (carrying the usage known so far, for billing only).
//!
//! `finish_reason`: `tool_calls` when the answer holds function calls, else `stop`, `length` or
//! `content_filter`. Reasoning text the provider exposes goes in `reasoning_content` (the name
//! DeepSeek, vLLM and most compatible servers use); opaque reasoning state has no place in Chat
//! Completions and is not returned.

use serde_json::{json, Map, Value};

use super::ChatCompleted;
use crate::domain::UsageStatus;
use crate::ids::new_id;
use crate::money::TokenUsage;
use crate::providers::assemble::{Delta, FinishReason};
use crate::providers::sink::Assembly;
use crate::providers::DeltaSink;

/// The Chat Completions `usage` object.
pub fn usage_json(usage: &TokenUsage) -> Value {
    json!({
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0
        },
    })
}

/// A fresh completion id, `chatcmpl-<ULID>`.
pub fn completion_id() -> String {
    new_id("chatcmpl-")
}

/// One function call of the answer.
#[derive(Debug)]
struct Call {
    /// The provider's index of the call (the deltas' `index`).
    index: u64,
    id: String,
    name: String,
    arguments: String,
}

/// Builds chunks (or a whole completion) from deltas.
#[derive(Debug)]
pub struct ChatAssembler {
    id: String,
    created: i64,
    model: String,
    started: bool,
    done: bool,
    text: String,
    refusal: String,
    reasoning: String,
    calls: Vec<Call>,
    usage: TokenUsage,
}

impl ChatAssembler {
    /// An assembler for an answer shown as the catalog model `model`.
    pub fn new(model: &str) -> Self {
        ChatAssembler {
            id: completion_id(),
            created: crate::domain::now_unix(),
            model: model.to_owned(),
            started: false,
            done: false,
            text: String::new(),
            refusal: String::new(),
            reasoning: String::new(),
            calls: Vec::new(),
            usage: TokenUsage::default(),
        }
    }

    fn envelope(&self, object: &str) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert("id".to_owned(), json!(self.id));
        out.insert("object".to_owned(), json!(object));
        out.insert("created".to_owned(), json!(self.created));
        out.insert("model".to_owned(), json!(self.model));
        out
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        let mut chunk = self.envelope("chat.completion.chunk");
        chunk.insert(
            "choices".to_owned(),
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]),
        );
        Value::Object(chunk)
    }

    /// The role chunk, once, before the first content.
    fn start(&mut self, chunks: &mut Vec<Value>) {
        if !self.started {
            self.started = true;
            chunks.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
        }
    }

    /// Feeds one delta; returns the chunks it produces.
    pub fn push(&mut self, delta: Delta) -> Vec<Value> {
        let mut chunks = Vec::new();
        if self.done {
            return chunks;
        }
        match delta {
            Delta::Usage(usage) => self.usage.merge(&usage),
            Delta::Text(text) | Delta::Refusal(text) | Delta::Reasoning(text) if text.is_empty() => {}
            Delta::ReasoningState(_) => {}
            Delta::Text(text) => {
                self.start(&mut chunks);
                self.text.push_str(&text);
                chunks.push(self.chunk(json!({"content": text}), None));
            }
            Delta::Refusal(text) => {
                self.start(&mut chunks);
                self.refusal.push_str(&text);
                chunks.push(self.chunk(json!({"refusal": text}), None));
            }
            Delta::Reasoning(text) => {
                self.start(&mut chunks);
                self.reasoning.push_str(&text);
                chunks.push(self.chunk(json!({"reasoning_content": text}), None));
            }
            Delta::ToolCallStart { index, call_id, name } => {
                self.start(&mut chunks);
                let position = self.calls.len();
                let piece = json!([{"index": position, "id": call_id, "type": "function",
                    "function": {"name": name, "arguments": ""}}]);
                chunks.push(self.chunk(json!({"tool_calls": piece}), None));
                self.calls.push(Call { index, id: call_id, name, arguments: String::new() });
            }
            Delta::ToolCallArguments { index, fragment } => {
                let Some(position) = self.calls.iter().position(|c| c.index == index) else { return chunks };
                if fragment.is_empty() {
                    return chunks;
                }
                self.calls[position].arguments.push_str(&fragment);
                let piece = json!([{"index": position, "function": {"arguments": fragment}}]);
                chunks.push(self.chunk(json!({"tool_calls": piece}), None));
            }
            Delta::Finish(reason) => chunks.extend(self.finish(reason)),
        }
        chunks
    }

    fn finish_reason(&self, reason: &FinishReason) -> &'static str {
        match reason {
            FinishReason::Length => "length",
            FinishReason::ContentFilter => "content_filter",
            _ if !self.calls.is_empty() => "tool_calls",
            _ => "stop",
        }
    }

    /// Ends the answer: the `finish_reason` chunk, the usage chunk and the end marker; or, for a
    /// provider error, one error chunk.
    pub fn finish(&mut self, reason: FinishReason) -> Vec<Value> {
        let mut chunks = Vec::new();
        if self.done {
            return chunks;
        }
        self.done = true;
        if let FinishReason::Error(message) = &reason {
            chunks.push(json!({
                "error": {"message": crate::scrub::credentials(message), "type": "api_error",
                    "code": "upstream_error", "param": null},
                "usage": usage_json(&self.usage),
            }));
            return chunks;
        }
        self.start(&mut chunks);
        chunks.push(self.chunk(json!({}), Some(self.finish_reason(&reason))));
        let mut usage = self.envelope("chat.completion.chunk");
        usage.insert("choices".to_owned(), json!([]));
        usage.insert("usage".to_owned(), usage_json(&self.usage));
        chunks.push(Value::Object(usage));
        chunks.push(super::END);
        chunks
    }

    /// A whole answer as one `chat.completion`.
    pub fn complete(mut self, deltas: Vec<Delta>) -> ChatCompleted {
        let mut reason = None;
        for delta in deltas {
            match delta {
                Delta::Finish(finish) => {
                    reason = Some(finish);
                    break;
                }
                other => {
                    self.push(other);
                }
            }
        }
        let reason = reason.unwrap_or(FinishReason::Stop);
        let (status, error) = match &reason {
            FinishReason::Stop => (UsageStatus::Success, None),
            FinishReason::Length | FinishReason::ContentFilter => (UsageStatus::Incomplete, None),
            FinishReason::Error(message) => (UsageStatus::Failed, Some(message.clone())),
        };
        let content = if self.text.is_empty() && (!self.calls.is_empty() || !self.refusal.is_empty()) {
            Value::Null
        } else {
            json!(self.text)
        };
        let mut message = json!({
            "role": "assistant",
            "content": content,
            "refusal": if self.refusal.is_empty() { Value::Null } else { json!(self.refusal) },
            "annotations": [],
        });
        if !self.calls.is_empty() {
            message["tool_calls"] = self
                .calls
                .iter()
                .map(|call| {
                    let arguments = if call.arguments.is_empty() { "{}" } else { call.arguments.as_str() };
                    json!({"id": call.id, "type": "function", "function": {"name": call.name, "arguments": arguments}})
                })
                .collect();
        }
        if !self.reasoning.is_empty() {
            message["reasoning_content"] = json!(self.reasoning);
        }
        let mut completion = self.envelope("chat.completion");
        completion.insert(
            "choices".to_owned(),
            json!([{"index": 0, "message": message, "logprobs": null,
                "finish_reason": self.finish_reason(&reason)}]),
        );
        completion.insert("usage".to_owned(), usage_json(&self.usage));
        ChatCompleted { completion: Value::Object(completion), usage: self.usage, status, error }
    }
}

impl DeltaSink for ChatAssembler {
    fn push(&mut self, delta: Delta) -> Vec<Value> {
        ChatAssembler::push(self, delta)
    }

    fn end(&mut self) -> Vec<Value> {
        self.finish(FinishReason::Stop)
    }
}

/// A translated stream that ends without its finish is left as it is (no end marker: the
/// client's writer reports the stream as cut).
impl Assembly for ChatAssembler {
    type Complete = ChatCompleted;

    fn complete(self, deltas: Vec<Delta>) -> ChatCompleted {
        ChatAssembler::complete(self, deltas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::providers::assemble::usage;

    fn deltas(chunks: &[Value]) -> Vec<Value> {
        chunks.iter().filter(|c| !c.is_null()).map(|c| c["choices"][0]["delta"].clone()).collect()
    }

    #[test]
    fn text_streams_as_openai_chunks_then_usage_then_the_end_marker() {
        let mut a = ChatAssembler::new("acme/m");
        let mut chunks = Vec::new();
        for delta in
            [Delta::Text("Hel".into()), Delta::Text("lo".into()), usage(10, 4, 2, 1), Delta::Finish(FinishReason::Stop)]
        {
            chunks.extend(a.push(delta));
        }
        assert_eq!(chunks.len(), 6, "{chunks:?}");
        let id = chunks[0]["id"].as_str().unwrap();
        assert!(id.starts_with("chatcmpl-"));
        for chunk in &chunks[..5] {
            assert_eq!((chunk["id"].as_str(), chunk["object"].as_str()), (Some(id), Some("chat.completion.chunk")));
            assert_eq!(chunk["model"], "acme/m");
        }
        assert_eq!(
            deltas(&chunks[..4]),
            vec![
                json!({"role": "assistant", "content": ""}),
                json!({"content": "Hel"}),
                json!({"content": "lo"}),
                json!({})
            ]
        );
        assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
        assert_eq!(chunks[4]["choices"], json!([]));
        assert_eq!(chunks[4]["usage"]["prompt_tokens"], 10);
        assert_eq!(chunks[4]["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
        assert_eq!(chunks[4]["usage"]["completion_tokens_details"]["reasoning_tokens"], 1);
        assert_eq!(chunks[4]["usage"]["total_tokens"], 12);
        assert!(chunks[5].is_null(), "the end marker");
        assert!(a.push(Delta::Text("late".into())).is_empty(), "nothing after the end");
    }

    #[test]
    fn parallel_calls_get_chat_indexes_and_finish_with_tool_calls() {
        let mut a = ChatAssembler::new("acme/m");
        let mut chunks = Vec::new();
        for delta in [
            Delta::ToolCallStart { index: 3, call_id: "call_a".into(), name: "f".into() },
            Delta::ToolCallStart { index: 7, call_id: "call_b".into(), name: "g".into() },
            Delta::ToolCallArguments { index: 7, fragment: "{}".into() },
            Delta::ToolCallArguments { index: 3, fragment: "{\"x\":1}".into() },
            Delta::ToolCallArguments { index: 9, fragment: "lost".into() },
            Delta::Finish(FinishReason::Stop),
        ] {
            chunks.extend(a.push(delta));
        }
        let d = deltas(&chunks);
        assert_eq!(
            d[1]["tool_calls"][0],
            json!({"index": 0, "id": "call_a", "type": "function", "function": {"name": "f", "arguments": ""}})
        );
        assert_eq!(d[2]["tool_calls"][0]["index"], 1);
        assert_eq!(d[3]["tool_calls"][0], json!({"index": 1, "function": {"arguments": "{}"}}));
        assert_eq!(d[4]["tool_calls"][0], json!({"index": 0, "function": {"arguments": "{\"x\":1}"}}));
        assert_eq!(chunks[5]["choices"][0]["finish_reason"], "tool_calls");
    }

    #[test]
    fn whole_answers_become_one_completion() {
        let done = ChatAssembler::new("acme/m").complete(vec![
            Delta::Reasoning("think".into()),
            Delta::ReasoningState("sig".into()),
            Delta::ToolCallStart { index: 0, call_id: "call_a".into(), name: "f".into() },
            usage(5, 0, 3, 0),
            Delta::Finish(FinishReason::Stop),
        ]);
        let c = &done.completion;
        assert_eq!(c["object"], "chat.completion");
        let message = &c["choices"][0]["message"];
        assert_eq!(message["content"], Value::Null, "calls only: no content");
        assert_eq!(message["tool_calls"][0]["function"], json!({"name": "f", "arguments": "{}"}));
        assert_eq!(message["reasoning_content"], "think");
        assert_eq!(c["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(c["usage"]["completion_tokens"], 3);
        assert_eq!((done.status, done.usage.input_tokens), (UsageStatus::Success, 5));

        let cut =
            ChatAssembler::new("acme/m").complete(vec![Delta::Text("par".into()), Delta::Finish(FinishReason::Length)]);
        assert_eq!(cut.completion["choices"][0]["finish_reason"], "length");
        assert_eq!(cut.completion["choices"][0]["message"]["content"], "par");
        assert_eq!(cut.completion["choices"][0]["message"]["refusal"], Value::Null);
        assert_eq!(cut.status, UsageStatus::Incomplete);

        let refused = ChatAssembler::new("acme/m").complete(vec![Delta::Refusal("no".into())]);
        assert_eq!(refused.completion["choices"][0]["message"]["refusal"], "no");
        assert_eq!(refused.completion["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(refused.completion["choices"][0]["finish_reason"], "stop", "no Finish: a normal end");
    }

    #[test]
    fn provider_errors_become_an_error_chunk_or_a_failed_completion() {
        let mut a = ChatAssembler::new("acme/m");
        a.push(Delta::Text("x".into()));
        a.push(usage(4, 0, 1, 0));
        let chunks = a.push(Delta::Finish(FinishReason::Error("overloaded, key sk-abcdefghijklmnopqrstu".into())));
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0]["error"]["code"], "upstream_error");
        assert!(!chunks[0]["error"]["message"].as_str().unwrap().contains("abcdefgh"), "scrubbed");
        assert_eq!(chunks[0]["usage"]["prompt_tokens"], 4, "usage known so far, for billing");
        let failed = ChatAssembler::new("acme/m").complete(vec![Delta::Finish(FinishReason::Error("boom".into()))]);
        assert_eq!((failed.status, failed.error.as_deref()), (UsageStatus::Failed, Some("boom")));
    }
}
