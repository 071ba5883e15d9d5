//! The one place that writes Responses output: translated providers decode their wire format
//! into [`Delta`]s, and the [`Assembler`] turns them into the exact Responses event sequence
//! (with output indexes, item ids and sequence numbers) and the final Responses object, with
//! usage captured once at the end. Non-streaming answers go through the same assembler.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Value};

use crate::ids::new_id;
use crate::money::TokenUsage;

/// Why a provider stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    /// Natural end (including tool use: the function calls are the output).
    Stop,
    /// The output token limit was reached.
    Length,
    /// The provider's safety system cut the output.
    ContentFilter,
    /// The provider reported an error mid-answer.
    Error(String),
}

/// One step of a provider's answer, in provider-neutral terms.
#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    /// Visible text of the assistant message.
    Text(String),
    /// A refusal (instead of text).
    Refusal(String),
    /// Reasoning summary text the provider exposes (thinking).
    Reasoning(String),
    /// Opaque reasoning state the provider wants back on the next turn (signature, encrypted).
    ReasoningState(String),
    /// A function call starts. `index` is the provider's own index of the call.
    ToolCallStart { index: u64, call_id: String, name: String },
    /// A fragment of the JSON arguments of call `index`.
    ToolCallArguments { index: u64, fragment: String },
    /// Token counts; later values replace earlier non-zero ones field by field.
    Usage(TokenUsage),
    /// The provider finished.
    Finish(FinishReason),
}

/// The fields the official SDKs declare required on a Response (nullable or not): written in
/// every state, `response.created` included.
pub const REQUIRED_RESPONSE_FIELDS: [&str; 14] = [
    "id",
    "object",
    "created_at",
    "model",
    "output",
    "error",
    "incomplete_details",
    "instructions",
    "metadata",
    "parallel_tool_calls",
    "temperature",
    "tool_choice",
    "tools",
    "top_p",
];

/// The request fields a Responses object echoes.
const ECHOED_FIELDS: [&str; 14] = [
    "instructions",
    "max_output_tokens",
    "parallel_tool_calls",
    "previous_response_id",
    "reasoning",
    "store",
    "temperature",
    "text",
    "tool_choice",
    "tools",
    "top_p",
    "truncation",
    "user",
    "metadata",
];

/// Optional Response fields echoed only when the request set them.
const OPTIONAL_ECHOES: [&str; 7] = [
    "background",
    "max_tool_calls",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
    "service_tier",
    "top_logprobs",
];

/// Fields the gateway changes on the way to the provider (it rebuilds the conversation itself,
/// keeps state in its own store and tags the owner): a response echoes the client's own.
const CLIENT_OWNED: [&str; 4] = ["previous_response_id", "store", "user", "safety_identifier"];

/// The request fields a Responses object echoes back, and its identity.
#[derive(Debug, Clone)]
pub struct ResponseContext {
    pub response_id: String,
    pub created_at: i64,
    pub catalog_model: String,
    pub request: Map<String, Value>,
}

impl ResponseContext {
    /// The context of a request: only the fields a Responses object echoes are kept (never the
    /// input, which may be large).
    pub fn new(catalog_model: &str, request: &Map<String, Value>) -> Self {
        let echoed = ECHOED_FIELDS
            .iter()
            .chain(&OPTIONAL_ECHOES)
            .filter_map(|name| Some(((*name).to_owned(), request.get(*name)?.clone())));
        ResponseContext {
            response_id: new_id("resp_"),
            created_at: crate::domain::now_unix(),
            catalog_model: catalog_model.to_owned(),
            request: echoed.collect(),
        }
    }

    /// The context of one client request answered as `response_id`: the effective parameters of
    /// the provider body (defaults and template filled in), but the client's own
    /// `previous_response_id`, `store`, `user` and `safety_identifier`.
    pub fn for_request(
        response_id: &str,
        catalog_model: &str,
        provider_body: &Map<String, Value>,
        client_body: &Map<String, Value>,
    ) -> Self {
        let mut ctx = Self::new(catalog_model, provider_body);
        ctx.response_id = response_id.to_owned();
        for field in CLIENT_OWNED {
            match client_body.get(field) {
                Some(value) => ctx.request.insert(field.to_owned(), value.clone()),
                None => ctx.request.remove(field),
            };
        }
        ctx
    }

    /// The id of output item `output_index` (see [`crate::ids::item_id`]).
    pub fn item_id(&self, prefix: &str, output_index: usize) -> String {
        crate::ids::item_id(prefix, &self.response_id, &format!("o{output_index}"))
    }

    /// Adds the optional fields the request set to a Response object.
    fn echo_optional(&self, response: &mut Value) {
        for name in OPTIONAL_ECHOES {
            if let Some(value) = self.request.get(name) {
                response[name] = value.clone();
            }
        }
    }
}

/// How an output item ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ItemStatus {
    Completed,
    Incomplete,
}

impl ItemStatus {
    fn as_str(self) -> &'static str {
        match self {
            ItemStatus::Completed => "completed",
            ItemStatus::Incomplete => "incomplete",
        }
    }
}

#[derive(Debug)]
enum OpenItem {
    Message { id: String, text: String, refusal: bool },
    Reasoning { id: String, text: String, state: Option<String> },
    Call { id: String, call_id: String, name: String, arguments: String },
}

/// Builds the Responses event stream and object from deltas.
#[derive(Debug)]
pub struct Assembler {
    ctx: ResponseContext,
    sequence: u64,
    started: bool,
    done: bool,
    /// Finished items by output index (they may finish out of order: calls stay open to the end).
    output: BTreeMap<usize, Value>,
    /// The open message or reasoning item (at most one), with its output index.
    prose: Option<(usize, OpenItem)>,
    /// Open function calls with their output index, in the order they were opened.
    calls: Vec<(usize, OpenItem)>,
    /// Position in `calls` of the first call with each provider index.
    call_slots: HashMap<u64, usize>,
    usage: TokenUsage,
    /// Open items inspected so far: the fuzz targets check it stays linear in the deltas.
    work: u64,
}

/// The Responses `usage` object. Every count is always present (the SDKs declare each one a
/// required integer, `cache_write_tokens` included): 0 when the provider did not say.
pub fn usage_json(usage: &TokenUsage) -> Value {
    json!({
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_input_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.input_tokens.saturating_add(usage.output_tokens),
    })
}

impl Assembler {
    pub fn new(ctx: ResponseContext) -> Self {
        Assembler {
            ctx,
            sequence: 0,
            started: false,
            done: false,
            output: BTreeMap::new(),
            prose: None,
            calls: Vec::new(),
            call_slots: HashMap::new(),
            usage: TokenUsage::default(),
            work: 0,
        }
    }

    pub fn usage(&self) -> TokenUsage {
        self.usage
    }

    /// Open items inspected so far (lookups and closes), a deterministic measure of work.
    pub fn work(&self) -> u64 {
        self.work
    }

    fn event(&mut self, kind: &str, mut fields: Value) -> Value {
        fields["type"] = json!(kind);
        fields["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        fields
    }

    /// The Responses object in its current state.
    pub fn response(&self, status: &str, incomplete: Option<&str>, error: Option<&str>) -> Value {
        let r = &self.ctx.request;
        let get = |name: &str, default: Value| r.get(name).cloned().unwrap_or(default);
        // Every field the SDKs declare required (nullable or not) is written in every state,
        // `response.created` included; `completed_at` only once completed.
        let mut response = json!({
            "id": self.ctx.response_id,
            "object": "response",
            "created_at": self.ctx.created_at,
            "status": status,
            // `server_error`: the Response error codes are an enum in the SDKs (the HTTP envelope's
            // `upstream_error` is not one of them).
            "error": error.map(|m| json!({"code": "server_error", "message": crate::scrub::credentials(m)})),
            "incomplete_details": incomplete.map(|reason| json!({"reason": reason})),
            "instructions": get("instructions", Value::Null),
            "max_output_tokens": get("max_output_tokens", Value::Null),
            "model": self.ctx.catalog_model,
            "output": self.output.values().collect::<Vec<_>>(),
            "parallel_tool_calls": get("parallel_tool_calls", json!(true)),
            "previous_response_id": get("previous_response_id", Value::Null),
            "reasoning": get("reasoning", json!({"effort": null, "summary": null})),
            "store": get("store", json!(true)),
            "temperature": get("temperature", json!(1.0)),
            "text": get("text", json!({"format": {"type": "text"}})),
            "tool_choice": get("tool_choice", json!("auto")),
            "tools": get("tools", json!([])),
            "top_p": get("top_p", json!(1.0)),
            "truncation": get("truncation", json!("disabled")),
            "usage": if status == "in_progress" { Value::Null } else { usage_json(&self.usage) },
            "user": get("user", Value::Null),
            "metadata": get("metadata", json!({})),
        });
        self.ctx.echo_optional(&mut response);
        if status == "completed" {
            response["completed_at"] = json!(crate::domain::now_unix());
        }
        response
    }

    fn start(&mut self, events: &mut Vec<Value>) {
        if self.started {
            return;
        }
        self.started = true;
        let snapshot = self.response("in_progress", None, None);
        let created = self.event("response.created", json!({"response": snapshot.clone()}));
        events.push(created);
        let progress = self.event("response.in_progress", json!({"response": snapshot}));
        events.push(progress);
    }

    fn next_index(&self) -> usize {
        self.output.len() + self.calls.len() + usize::from(self.prose.is_some())
    }

    /// Closes open text and reasoning items (a new item begins, or the answer ends).
    fn close_prose(&mut self, events: &mut Vec<Value>) {
        self.close_prose_as(ItemStatus::Completed, events);
    }

    fn close_prose_as(&mut self, status: ItemStatus, events: &mut Vec<Value>) {
        self.work += 1;
        if let Some((index, item)) = self.prose.take() {
            self.close_item(index, item, status, events);
        }
    }

    /// Closes every open item in output index order (an open prose item follows the calls),
    /// `incomplete` when the answer was cut short.
    fn close_all(&mut self, status: ItemStatus, events: &mut Vec<Value>) {
        self.work += self.calls.len() as u64;
        self.call_slots.clear();
        for (index, item) in std::mem::take(&mut self.calls) {
            self.close_item(index, item, status, events);
        }
        self.close_prose_as(status, events);
    }

    /// Ends an item: its closing events, then `output_item.done` with the same type, id and
    /// call id as the `output_item.added` that opened it.
    fn close_item(&mut self, index: usize, item: OpenItem, status: ItemStatus, events: &mut Vec<Value>) {
        let status = status.as_str();
        let finished = match item {
            OpenItem::Message { id, text, refusal } => {
                let (part, done_kind, field) = if refusal {
                    (json!({"type": "refusal", "refusal": text}), "response.refusal.done", "refusal")
                } else {
                    (
                        json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []}),
                        "response.output_text.done",
                        "text",
                    )
                };
                let mut done = json!({"item_id": id, "output_index": index, "content_index": 0});
                done[field] = json!(text);
                if !refusal {
                    done["logprobs"] = json!([]);
                }
                let e = self.event(done_kind, done);
                events.push(e);
                let e = self.event(
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "part": part.clone()}),
                );
                events.push(e);
                json!({"type": "message", "id": id, "status": status, "role": "assistant", "content": [part]})
            }
            OpenItem::Reasoning { id, text, state } => {
                let part = json!({"type": "summary_text", "text": text});
                let e = self.event(
                    "response.reasoning_summary_text.done",
                    json!({"item_id": id, "output_index": index, "summary_index": 0, "text": text}),
                );
                events.push(e);
                let e = self.event(
                    "response.reasoning_summary_part.done",
                    json!({"item_id": id, "output_index": index, "summary_index": 0, "part": part.clone()}),
                );
                events.push(e);
                let mut item = json!({"type": "reasoning", "id": id, "summary": [part]});
                if let Some(state) = state {
                    item["encrypted_content"] = json!(state);
                }
                if status != "completed" {
                    item["status"] = json!(status);
                }
                item
            }
            OpenItem::Call { id, call_id, name, arguments, .. } => {
                let arguments = if arguments.is_empty() { "{}".to_owned() } else { arguments };
                let e = self.event(
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": index, "name": name, "arguments": arguments}),
                );
                events.push(e);
                json!({"type": "function_call", "id": id, "call_id": call_id, "name": name, "arguments": arguments, "status": status})
            }
        };
        let e = self.event("response.output_item.done", json!({"output_index": index, "item": finished.clone()}));
        events.push(e);
        self.output.insert(index, finished);
    }

    /// Feeds one delta; returns the Responses events it produces.
    pub fn push(&mut self, delta: Delta) -> Vec<Value> {
        let mut events = Vec::new();
        if self.done {
            return events;
        }
        if let Delta::Usage(usage) = &delta {
            self.usage.merge(usage);
            return events;
        }
        self.start(&mut events);
        match delta {
            Delta::Text(text) | Delta::Refusal(text) | Delta::Reasoning(text) if text.is_empty() => {}
            Delta::Text(text) => self.message_delta(text, false, &mut events),
            Delta::Refusal(text) => self.message_delta(text, true, &mut events),
            Delta::Reasoning(text) => self.reasoning_delta(Some(text), None, &mut events),
            Delta::ReasoningState(state) => self.reasoning_delta(None, Some(state), &mut events),
            Delta::ToolCallStart { index, call_id, name } => {
                // The SDKs refuse a function call without a call id: one is made if none came.
                let call_id = if call_id.is_empty() { new_id("call_") } else { call_id };
                self.close_prose(&mut events);
                let output_index = self.next_index();
                let id = self.ctx.item_id("fc_", output_index);
                let item = json!({"type": "function_call", "id": id, "call_id": call_id, "name": name, "arguments": "", "status": "in_progress"});
                let e = self.event("response.output_item.added", json!({"output_index": output_index, "item": item}));
                events.push(e);
                self.call_slots.entry(index).or_insert(self.calls.len());
                self.calls.push((output_index, OpenItem::Call { id, call_id, name, arguments: String::new() }));
            }
            Delta::ToolCallArguments { index, fragment } => {
                self.work += 1;
                let slot = self.call_slots.get(&index).copied();
                let found =
                    slot.and_then(|slot| self.calls.get_mut(slot)).and_then(|(output_index, item)| match item {
                        OpenItem::Call { id, arguments, .. } => {
                            arguments.push_str(&fragment);
                            Some((*output_index, id.clone()))
                        }
                        _ => None,
                    });
                if let Some((output_index, id)) = found {
                    if !fragment.is_empty() {
                        let e = self.event(
                            "response.function_call_arguments.delta",
                            json!({"item_id": id, "output_index": output_index, "delta": fragment}),
                        );
                        events.push(e);
                    }
                }
            }
            Delta::Finish(reason) => events.extend(self.finish(reason)),
            Delta::Usage(_) => {}
        }
        events
    }

    fn message_delta(&mut self, text: String, refusal: bool, events: &mut Vec<Value>) {
        self.work += 1;
        let open = matches!(&self.prose, Some((_, OpenItem::Message { refusal: r, .. })) if *r == refusal);
        if !open {
            self.close_prose(events);
            let output_index = self.next_index();
            let id = self.ctx.item_id("msg_", output_index);
            let item =
                json!({"type": "message", "id": id, "status": "in_progress", "role": "assistant", "content": []});
            let e = self.event("response.output_item.added", json!({"output_index": output_index, "item": item}));
            events.push(e);
            let part = if refusal {
                json!({"type": "refusal", "refusal": ""})
            } else {
                json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []})
            };
            let e = self.event(
                "response.content_part.added",
                json!({"item_id": id, "output_index": output_index, "content_index": 0, "part": part}),
            );
            events.push(e);
            self.prose = Some((output_index, OpenItem::Message { id, text: String::new(), refusal }));
        }
        let (output_index, id) = match &mut self.prose {
            Some((index, OpenItem::Message { id, text: buffer, .. })) => {
                buffer.push_str(&text);
                (*index, id.clone())
            }
            _ => return,
        };
        let e = if refusal {
            let fields = json!({"item_id": id, "output_index": output_index, "content_index": 0, "delta": text});
            self.event("response.refusal.delta", fields)
        } else {
            let fields = json!({"item_id": id, "output_index": output_index, "content_index": 0, "delta": text,
                "logprobs": []});
            self.event("response.output_text.delta", fields)
        };
        events.push(e);
    }

    fn reasoning_delta(&mut self, text: Option<String>, state: Option<String>, events: &mut Vec<Value>) {
        // A reasoning block whose state (signature) has arrived is complete: more reasoning
        // starts a new item, so each item carries exactly one block's state back.
        self.work += 1;
        let sealed = matches!(&self.prose, Some((_, OpenItem::Reasoning { state: Some(_), .. })));
        if sealed {
            self.close_prose(events);
        }
        let open = matches!(&self.prose, Some((_, OpenItem::Reasoning { .. })));
        if !open {
            self.close_prose(events);
            let output_index = self.next_index();
            let id = self.ctx.item_id("rs_", output_index);
            let e = self.event(
                "response.output_item.added",
                json!({"output_index": output_index, "item": {"type": "reasoning", "id": id, "summary": []}}),
            );
            events.push(e);
            let e = self.event(
                "response.reasoning_summary_part.added",
                json!({"item_id": id, "output_index": output_index, "summary_index": 0, "part": {"type": "summary_text", "text": ""}}),
            );
            events.push(e);
            self.prose = Some((output_index, OpenItem::Reasoning { id, text: String::new(), state: None }));
        }
        if let Some((output_index, OpenItem::Reasoning { id, text: buffer, state: held })) = &mut self.prose {
            let (output_index, id) = (*output_index, id.clone());
            if let Some(state) = state {
                held.get_or_insert_with(String::new).push_str(&state);
            }
            if let Some(text) = text {
                buffer.push_str(&text);
                let e = self.event(
                    "response.reasoning_summary_text.delta",
                    json!({"item_id": id, "output_index": output_index, "summary_index": 0, "delta": text}),
                );
                events.push(e);
            }
        }
    }

    /// Ends the answer: closes open items and emits the terminal event.
    pub fn finish(&mut self, reason: FinishReason) -> Vec<Value> {
        let mut events = Vec::new();
        if self.done {
            return events;
        }
        self.start(&mut events);
        // Items still open when the answer is cut short (length, filter, error) are unfinished:
        // they are closed as `incomplete` and kept in the output, never dropped.
        let status = if reason == FinishReason::Stop { ItemStatus::Completed } else { ItemStatus::Incomplete };
        self.close_all(status, &mut events);
        self.done = true;
        let (kind, response) = match &reason {
            FinishReason::Stop => ("response.completed", self.response("completed", None, None)),
            FinishReason::Length => {
                ("response.incomplete", self.response("incomplete", Some("max_output_tokens"), None))
            }
            FinishReason::ContentFilter => {
                ("response.incomplete", self.response("incomplete", Some("content_filter"), None))
            }
            FinishReason::Error(message) => ("response.failed", self.response("failed", None, Some(message))),
        };
        let e = self.event(kind, json!({"response": response}));
        events.push(e);
        events
    }

    /// Whether the terminal event was emitted.
    pub fn is_done(&self) -> bool {
        self.done
    }
}

/// A usage delta, for tests.
#[cfg(test)]
pub(crate) fn usage(input: u64, cached: u64, output: u64, reasoning: u64) -> Delta {
    Delta::Usage(TokenUsage {
        input_tokens: input,
        cached_input_tokens: cached,
        output_tokens: output,
        reasoning_tokens: reasoning,
        ..TokenUsage::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(events: &[Value]) -> Vec<String> {
        events.iter().map(|e| e["type"].as_str().unwrap_or_default().to_owned()).collect()
    }

    #[test]
    fn text_then_two_tool_calls_in_order() {
        let request = Map::from_iter([("instructions".to_owned(), json!("be brief"))]);
        let mut a = Assembler::new(ResponseContext::new("acme/m", &request));
        let mut events = Vec::new();
        for delta in [
            Delta::Text("Hel".into()),
            Delta::Text("lo".into()),
            Delta::ToolCallStart { index: 0, call_id: "call_a".into(), name: "f".into() },
            Delta::ToolCallArguments { index: 0, fragment: "{\"x\":".into() },
            Delta::ToolCallStart { index: 1, call_id: "call_b".into(), name: "g".into() },
            Delta::ToolCallArguments { index: 0, fragment: "1}".into() },
            Delta::ToolCallArguments { index: 1, fragment: "{}".into() },
            Delta::Usage(TokenUsage {
                input_tokens: 10,
                cached_input_tokens: 0,
                output_tokens: 4,
                reasoning_tokens: 0,
                cache_write_tokens: 3,
            }),
            Delta::Finish(FinishReason::Stop),
        ] {
            events.extend(a.push(delta));
        }
        let k = kinds(&events);
        assert_eq!(k[0], "response.created");
        assert_eq!(k[1], "response.in_progress");
        assert_eq!(k.last().map(String::as_str), Some("response.completed"));
        let seq: Vec<u64> = events.iter().map(|e| e["sequence_number"].as_u64().unwrap_or(0)).collect();
        assert!(seq.windows(2).all(|w| w[1] == w[0] + 1));
        let done = events.last().cloned().unwrap_or_default();
        let output = done["response"]["output"].as_array().cloned().unwrap_or_default();
        assert_eq!(output.len(), 3);
        assert_eq!(output[0]["content"][0]["text"], "Hello");
        assert_eq!(output[1]["arguments"], "{\"x\":1}");
        assert_eq!(output[1]["call_id"], "call_a");
        assert_eq!(output[2]["name"], "g");
        assert_eq!(done["response"]["usage"]["input_tokens"], 10);
        assert_eq!(
            done["response"]["usage"]["input_tokens_details"],
            json!({"cached_tokens": 0, "cache_write_tokens": 3})
        );
        assert_eq!(done["response"]["instructions"], "be brief");
        assert_eq!(done["response"]["model"], "acme/m");
        // Every delta names an item that was added before it, at the same output index.
        let mut added = std::collections::HashMap::new();
        for e in &events {
            if e["type"] == "response.output_item.added" {
                added.insert(e["item"]["id"].as_str().unwrap_or_default().to_owned(), e["output_index"].clone());
            }
            if let Some(id) = e.get("item_id").and_then(Value::as_str) {
                assert_eq!(added.get(id), Some(&e["output_index"]), "{e}");
            }
        }
    }

    #[test]
    fn consecutive_reasoning_blocks_stay_separate() {
        let mut a = Assembler::new(ResponseContext::new("acme/m", &Map::new()));
        for delta in [
            Delta::Reasoning("first".into()),
            Delta::ReasoningState("sig1".into()),
            Delta::Reasoning("second".into()),
            Delta::ReasoningState("sig2".into()),
            Delta::Reasoning(String::new()),
        ] {
            a.push(delta);
        }
        let events = a.push(Delta::Finish(FinishReason::Stop));
        let output = events.last().cloned().unwrap_or_default()["response"]["output"].clone();
        assert_eq!(output.as_array().map(Vec::len), Some(2));
        assert_eq!(output[0]["encrypted_content"], "sig1");
        assert_eq!(output[1]["summary"][0]["text"], "second");
        assert_eq!(output[1]["encrypted_content"], "sig2");
    }

    #[test]
    fn length_is_incomplete_and_reasoning_is_kept() {
        let mut a = Assembler::new(ResponseContext::new("acme/m", &Map::new()));
        a.push(Delta::Reasoning("think".into()));
        a.push(Delta::ReasoningState("sig".into()));
        a.push(Delta::Text("partial".into()));
        let events = a.push(Delta::Finish(FinishReason::Length));
        let last = events.last().cloned().unwrap_or_default();
        assert_eq!(last["type"], "response.incomplete");
        assert_eq!(last["response"]["incomplete_details"]["reason"], "max_output_tokens");
        assert_eq!(last["response"]["output"][0]["type"], "reasoning");
        assert_eq!(last["response"]["output"][0]["summary"][0]["text"], "think");
        assert_eq!(last["response"]["output"][0]["encrypted_content"], "sig");
        assert_eq!(last["response"]["output"][1]["content"][0]["text"], "partial");
    }

    fn run(deltas: Vec<Delta>) -> Vec<Value> {
        let mut a = Assembler::new(ResponseContext::new("acme/m", &Map::new()));
        let mut events = Vec::new();
        for delta in deltas {
            events.extend(a.push(delta));
        }
        events
    }

    fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
        events.iter().filter(|e| e["type"] == kind).collect()
    }

    #[test]
    fn text_events_and_parts_carry_empty_logprobs() {
        let events = run(vec![Delta::Text("Hi".into()), Delta::Finish(FinishReason::Stop)]);
        for kind in ["response.output_text.delta", "response.output_text.done"] {
            let found = of_kind(&events, kind);
            assert_eq!(found.len(), 1, "{kind}");
            assert_eq!(found[0]["logprobs"], json!([]), "{kind}");
        }
        for kind in ["response.content_part.added", "response.content_part.done"] {
            assert_eq!(of_kind(&events, kind)[0]["part"]["logprobs"], json!([]), "{kind}");
            assert_eq!(of_kind(&events, kind)[0]["part"]["annotations"], json!([]), "{kind}");
        }
        let last = events.last().cloned().unwrap_or_default();
        assert_eq!(last["response"]["output"][0]["content"][0]["logprobs"], json!([]));
        // Refusals have no logprobs.
        let events = run(vec![Delta::Refusal("No.".into()), Delta::Finish(FinishReason::Stop)]);
        assert!(of_kind(&events, "response.refusal.delta")[0].get("logprobs").is_none());
    }

    #[test]
    fn function_call_arguments_done_names_the_function() {
        let events = run(vec![
            Delta::ToolCallStart { index: 0, call_id: "call_1".into(), name: "get_weather".into() },
            Delta::ToolCallArguments { index: 0, fragment: "{}".into() },
            Delta::Finish(FinishReason::Stop),
        ]);
        let done = of_kind(&events, "response.function_call_arguments.done");
        assert_eq!(done[0]["name"], "get_weather");
        assert_eq!(done[0]["arguments"], "{}");
    }

    #[test]
    fn every_lifecycle_event_carries_the_required_response_fields() {
        let events = run(vec![Delta::Text("Hi".into()), Delta::Finish(FinishReason::Stop)]);
        for kind in ["response.created", "response.in_progress", "response.completed"] {
            let response = &of_kind(&events, kind)[0]["response"];
            for field in REQUIRED_RESPONSE_FIELDS {
                assert!(response.get(field).is_some(), "{kind} lacks `{field}`");
            }
            assert!(response.get("error").is_some_and(Value::is_null), "{kind}");
        }
        assert_eq!(of_kind(&events, "response.created")[0]["response"]["usage"], Value::Null);
        assert!(of_kind(&events, "response.created")[0]["response"].get("completed_at").is_none());
        assert!(of_kind(&events, "response.completed")[0]["response"]["completed_at"].is_i64());
        let usage = &of_kind(&events, "response.completed")[0]["response"]["usage"];
        assert_eq!(usage["input_tokens_details"], json!({"cached_tokens": 0, "cache_write_tokens": 0}));
    }

    /// `output_item.done` repeats the type, id and call id of the `output_item.added` before it.
    fn assert_done_matches_added(events: &[Value]) {
        let added = of_kind(events, "response.output_item.added");
        let done = of_kind(events, "response.output_item.done");
        assert_eq!(added.len(), done.len());
        for a in added {
            let d = done.iter().find(|d| d["output_index"] == a["output_index"]).copied().unwrap_or(&Value::Null);
            for field in ["type", "id", "call_id"] {
                assert_eq!(a["item"].get(field), d["item"].get(field), "{field}");
            }
        }
    }

    #[test]
    fn a_cut_answer_keeps_its_open_items_as_incomplete() {
        for (reason, kind) in [
            (FinishReason::Length, "response.incomplete"),
            (FinishReason::ContentFilter, "response.incomplete"),
            (FinishReason::Error("boom".into()), "response.failed"),
        ] {
            let events = run(vec![
                Delta::Text("done before".into()),
                Delta::ToolCallStart { index: 0, call_id: "call_1".into(), name: "f".into() },
                Delta::ToolCallArguments { index: 0, fragment: "{\"x\":".into() },
                Delta::Reasoning("thinking".into()),
                Delta::Finish(reason),
            ]);
            let last = events.last().cloned().unwrap_or_default();
            assert_eq!(last["type"], kind);
            let output = last["response"]["output"].as_array().cloned().unwrap_or_default();
            assert_eq!(output.len(), 3, "{kind}: {output:?}");
            assert_eq!(
                (output[0]["type"].as_str(), output[0]["status"].as_str()),
                (Some("message"), Some("completed"))
            );
            assert_eq!(output[0]["content"][0]["text"], "done before");
            assert_eq!(output[1]["status"], "incomplete");
            assert_eq!(output[1]["call_id"], "call_1");
            assert_eq!(output[1]["arguments"], "{\"x\":");
            assert_eq!(output[2]["type"], "reasoning");
            assert_eq!(output[2]["status"], "incomplete");
            assert_done_matches_added(&events);
            for field in REQUIRED_RESPONSE_FIELDS {
                assert!(last["response"].get(field).is_some(), "{kind} lacks `{field}`");
            }
        }
        let events = run(vec![Delta::Text("cut".into()), Delta::Finish(FinishReason::Length)]);
        let last = events.last().cloned().unwrap_or_default();
        assert_eq!(last["response"]["output"][0]["status"], "incomplete");
        assert_eq!(last["response"]["output"][0]["content"][0]["text"], "cut");
    }
}
