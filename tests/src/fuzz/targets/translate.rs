//! Each translated provider's decoders (`Translator::response`, `decoder().decode`, `error`)
//! and the Responses pass-through (`parse_response`, `PassThrough`), fed arbitrary JSON in
//! arbitrary chunkings. Answers must become a well-formed Responses event sequence, the same
//! under any split, with output bounded by the input; errors must be clean gateway errors.

use http::HeaderMap;
use mesh::providers::assemble::{Assembler, Delta, FinishReason, ResponseContext};
use mesh::providers::responses::{parse_response, PassThrough};
use mesh::providers::{assemble_complete, check_event, StreamMapper, Translator};
use mesh::sse::{encode, SseEvent};
use serde_json::{Map, Value};

use crate::fuzz::check::responses_events;
use crate::fuzz::mutate::{chunking, coarse_chunking, hash, one_piece};
use crate::fuzz::rng::Rng;
use crate::fuzz::targets::{eventstream, sse};

/// Bedrock's translator, allowing image sources in one bucket.
static BEDROCK: std::sync::LazyLock<mesh::providers::bedrock::Bedrock> =
    std::sync::LazyLock::new(|| mesh::providers::bedrock::Bedrock::with_s3_buckets(vec!["allowed-bucket".to_owned()]));

/// The translated provider APIs.
pub fn translator(name: &str) -> &'static dyn Translator {
    match name {
        "chat" => &mesh::providers::chat::Chat,
        "anthropic" => &mesh::providers::anthropic::Anthropic,
        "gemini" => &mesh::providers::gemini::Gemini,
        _ => &*BEDROCK,
    }
}

fn text_bytes(deltas: &[Delta]) -> usize {
    deltas
        .iter()
        .map(|d| match d {
            Delta::Text(t) | Delta::Refusal(t) | Delta::Reasoning(t) | Delta::ReasoningState(t) => t.len(),
            Delta::ToolCallStart { call_id, name, .. } => call_id.len() + name.len(),
            Delta::ToolCallArguments { fragment, .. } => fragment.len(),
            Delta::Finish(FinishReason::Error(m)) => m.len(),
            Delta::Usage(_) | Delta::Finish(_) => 0,
        })
        .sum()
}

/// Generated call ids differ run to run: compare deltas without them.
fn blank_ids(deltas: &[Delta]) -> Vec<Delta> {
    deltas
        .iter()
        .map(|d| match d {
            Delta::ToolCallStart { index, name, .. } => {
                Delta::ToolCallStart { index: *index, call_id: String::new(), name: name.clone() }
            }
            other => other.clone(),
        })
        .collect()
}

/// Runs deltas through an assembler as a stream would, ending it the way the pump does.
pub fn assemble(deltas: &[Delta], fault: bool) -> Vec<Value> {
    let mut assembler = Assembler::new(ResponseContext::new("acme/model", &Map::new()));
    let mut events = Vec::new();
    for delta in deltas {
        events.extend(assembler.push(delta.clone()));
    }
    if !assembler.is_done() {
        let reason = if fault { "malformed" } else { "ended early" };
        events.extend(assembler.finish(FinishReason::Error(reason.to_owned())));
    }
    assert!(assembler.push(Delta::Text("late".into())).is_empty(), "events after the terminal one");
    events
}

fn check_events(deltas: &[Delta], events: &[Value], input_len: usize) {
    if let Err(problem) = responses_events(events) {
        panic!("{problem}\ndeltas: {deltas:?}");
    }
    for event in events {
        if let Err(fault) = check_event(event) {
            panic!("the gateway would refuse its own event: {fault}\n{event}");
        }
    }
    let text = text_bytes(deltas);
    assert!(events.len() <= 8 * deltas.len() + 8, "{} events from {} deltas", events.len(), deltas.len());
    assert!(text <= 2 * input_len + 64 * deltas.len() + 64, "{text} bytes of text from {input_len} input bytes");
}

/// A complete answer body: deltas ending in `Finish`, a Responses object; else a 502.
pub fn response_target(api: &str, data: &[u8]) {
    let translator = translator(api);
    match translator.response(data) {
        Ok(deltas) => {
            assert!(matches!(deltas.last(), Some(Delta::Finish(_))), "answer does not finish: {deltas:?}");
            let events = assemble(&deltas, false);
            check_events(&deltas, &events, data.len());
            let completed = assemble_complete(deltas, ResponseContext::new("acme/model", &Map::new()));
            assert!(completed.response.is_object());
            assert!(["completed", "incomplete", "failed"].contains(&completed.status.as_str()));
        }
        Err(err) => assert_eq!(err.status().as_u16(), 502, "a bad provider body is an upstream fault: {err:?}"),
    }
    // The same bytes as an error answer: a 4xx keeps its status (or becomes a gateway 5xx, as
    // Bedrock's model timeout and model error do); a 5xx is never blamed on the client.
    let status = 400 + (hash(data) % 200) as u16;
    let err = translator.error(api, status, &HeaderMap::new(), data);
    let answered = err.status().as_u16();
    if (400..500).contains(&status) {
        assert!(answered == status || [502, 504].contains(&answered), "{status} became {err:?}");
    } else {
        assert!([502, 503, 504].contains(&answered), "{status} became {err:?}");
    }
    assert!(err.body()["message"].is_string());
}

/// Decodes provider events with a fresh decoder; stops at the first fault.
fn decode(api: &str, events: Vec<SseEvent>) -> (Vec<Delta>, bool) {
    let mut decoder = translator(api).decoder();
    let mut deltas = Vec::new();
    for event in events {
        match decoder.decode(event) {
            Ok(more) => deltas.extend(more),
            Err(_) => return (deltas, true),
        }
    }
    deltas.extend(decoder.finish());
    (deltas, false)
}

/// A stream: SSE text (bedrock: `<event-type> <json>` lines, framed as AWS event stream).
pub fn stream_target(api: &str, data: &[u8]) {
    let mut rng = Rng::new(hash(data));
    let (bytes, whole, split) = if api == "bedrock" {
        let text = String::from_utf8_lossy(data);
        let mut bytes = Vec::new();
        let mut expected = Vec::new();
        for line in text.lines() {
            let (kind, payload) = line.split_once(' ').unwrap_or((line, ""));
            let frame = eventstream::frame(
                &[(":message-type", "event"), (":event-type", kind), (":content-type", "application/json")],
                payload.as_bytes(),
            );
            if frame.is_empty() {
                continue; // more than a frame can carry
            }
            bytes.extend(frame);
            expected.push(SseEvent { event: Some(kind.to_owned()), data: payload.to_owned(), id: None });
        }
        let whole = eventstream::parse(&bytes, &one_piece(bytes.len())).unwrap_or_else(|e| panic!("framing: {e}"));
        assert_eq!(whole, expected, "event stream round trip");
        let pieces =
            if rng.one_in(2) { chunking(&mut rng, bytes.len(), false) } else { coarse_chunking(&mut rng, bytes.len()) };
        let split = eventstream::parse(&bytes, &pieces).unwrap_or_else(|e| panic!("framing: {e}"));
        (bytes, whole, split)
    } else {
        let whole = sse::parse_whole(data);
        // Non-empty pieces, small ones only for small inputs: the SSE target owns the parser's
        // own cases (empty pieces, long lines in tiny pieces).
        let pieces = if data.len() <= 4096 {
            chunking(&mut rng, data.len(), false)
        } else {
            coarse_chunking(&mut rng, data.len())
        };
        let split = sse::parse(data, &pieces);
        (data.to_vec(), whole, split)
    };
    let (deltas, fault) = decode(api, whole);
    let (split_deltas, split_fault) = decode(api, split);
    assert_eq!((blank_ids(&deltas), fault), (blank_ids(&split_deltas), split_fault), "chunking changed the answer");
    let events = assemble(&deltas, fault);
    check_events(&deltas, &events, bytes.len());
}

/// The Responses pass-through: bodies and events keep every field but the ones Mesh owns (the
/// response `id` and `model`, the client's `previous_response_id`, `store` and
/// `safety_identifier`, item ids); each provider item id becomes one Mesh id that names the
/// response; an event the gateway would stream (one passing `check_event`) stays exactly one SSE
/// frame when Mesh writes it.
pub fn passthrough_target(data: &[u8]) {
    let ctx = || ResponseContext::new("acme/model", &Map::new());
    let mut ids = IdMap::default();
    match parse_response(data, ctx()) {
        Ok(done) => {
            assert_eq!(done.response["model"], "acme/model");
            let response_id = done.response["id"].as_str().unwrap_or_default().to_owned();
            assert!(response_id.starts_with("resp_"));
            let mut original: Value = serde_json::from_slice(data).unwrap_or_default();
            ids.check(&original, &done.response, &response_id, false);
            let mut got = done.response.clone();
            blank_owned(&mut original, false);
            blank_owned(&mut got, false);
            assert_eq!(got, original, "pass-through changed more than the fields Mesh owns");
        }
        Err(err) => assert_eq!(err.status().as_u16(), 502),
    }
    let context = ctx();
    let response_id = context.response_id.clone();
    let mut mapper = PassThrough::new(context);
    let mut ids = IdMap::default();
    for event in sse::parse_whole(data) {
        let name = event.event.clone();
        let original: Option<Value> = serde_json::from_str(&event.data).ok();
        let Ok(mapped) = mapper.map(event) else { continue };
        for value in mapped {
            let mut expected = original.clone().unwrap_or_default();
            if expected.get("type").is_none() {
                expected["type"] = name.clone().unwrap_or_default().into();
            }
            ids.check(&expected, &value, &response_id, true);
            let mut got = value.clone();
            blank_owned(&mut expected, true);
            blank_owned(&mut got, true);
            assert_eq!(got, expected, "pass-through changed more than the fields Mesh owns");
            if check_event(&value).is_err() {
                continue; // the stream fails there: nothing of it is written
            }
            let kind = value["type"].as_str().unwrap_or_default();
            let frame = encode(kind, &value.to_string());
            let back = sse::parse_whole(&frame);
            assert_eq!(back.len(), 1, "event type {kind:?} breaks the SSE frame");
            assert_eq!(back[0].event.as_deref(), Some(kind));
            // Textually: re-parsing large numbers is not exact without serde_json's
            // `float_roundtrip`, and the frame carries the text.
            assert_eq!(back[0].data, value.to_string());
        }
    }
    let _ = mapper.finish();
}

/// The item ids of a Response object or event, where Mesh rewrites them, with their places.
fn item_ids(value: &Value, event: bool) -> Vec<(String, Option<String>)> {
    let mut found = Vec::new();
    let mut push = |place: &str, id: Option<&Value>| {
        if let Some(Value::String(id)) = id {
            found.push((place.to_owned(), Some(id.clone())));
        }
    };
    let response = if event { value.get("response") } else { Some(value) };
    if let Some(Value::Array(output)) = response.filter(|r| r.is_object()).and_then(|r| r.get("output")) {
        for (i, item) in output.iter().enumerate() {
            push(&format!("output[{i}]"), item.get("id"));
        }
    }
    if event {
        push("item", value.get("item").and_then(|i| i.get("id")));
        push("item_id", value.get("item_id"));
    }
    found
}

/// Provider item id to Mesh item id, one to one within a stream or body.
#[derive(Default)]
struct IdMap(std::collections::HashMap<String, String>);

impl IdMap {
    fn check(&mut self, original: &Value, got: &Value, response_id: &str, event: bool) {
        let before = item_ids(original, event);
        let after = item_ids(got, event);
        assert_eq!(before.len(), after.len(), "item ids appeared or vanished: {before:?} {after:?}");
        for ((place, upstream), (_, mine)) in before.into_iter().zip(after) {
            let (Some(upstream), Some(mine)) = (upstream, mine) else { continue };
            assert_eq!(
                mesh::ids::response_of_item(&mine).as_deref(),
                Some(response_id),
                "{place}: item id {mine} does not name its response"
            );
            let first = self.0.entry(upstream.clone()).or_insert_with(|| mine.clone());
            assert_eq!(first, &mine, "{place}: provider item {upstream} got two Mesh ids");
        }
    }
}

/// Blanks what the pass-through owns: response `id`, `model`, `previous_response_id`, `store`,
/// `safety_identifier`, item ids.
fn blank_owned(value: &mut Value, event: bool) {
    fn response(object: &mut Value) {
        let Some(map) = object.as_object_mut() else { return };
        for field in ["id", "model", "previous_response_id", "store", "safety_identifier"] {
            map.remove(field);
        }
        if let Some(Value::Array(output)) = map.get_mut("output") {
            for item in output {
                if let Some(id @ Value::String(_)) = item.get_mut("id") {
                    *id = Value::Null;
                }
            }
        }
    }
    if event {
        if let Some(r @ Value::Object(_)) = value.get_mut("response") {
            response(r);
        }
        if let Some(id @ Value::String(_)) = value.get_mut("item").and_then(|i| i.get_mut("id")) {
            *id = Value::Null;
        }
        if let Some(id @ Value::String(_)) = value.get_mut("item_id") {
            *id = Value::Null;
        }
    } else {
        response(value);
    }
}

/// Complete answer bodies of each API.
pub fn response_seeds(api: &str) -> Vec<Vec<u8>> {
    let body = match api {
        "chat" => {
            r#"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hi","reasoning_content":"think","tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":10,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":2},"completion_tokens_details":{"reasoning_tokens":1}}}"#
        }
        "anthropic" => {
            r#"{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"thinking","thinking":"hmm","signature":"sig"},{"type":"redacted_thinking","data":"xyz"},{"type":"text","text":"Hi"},{"type":"tool_use","id":"toolu_1","name":"f","input":{"a":1}}],"stop_reason":"tool_use","usage":{"input_tokens":10,"cache_creation_input_tokens":1,"cache_read_input_tokens":2,"output_tokens":5}}"#
        }
        "gemini" => {
            r#"{"candidates":[{"content":{"parts":[{"text":"think","thought":true},{"text":"Hi"},{"functionCall":{"name":"f","args":{"a":1}}}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":5,"thoughtsTokenCount":2,"cachedContentTokenCount":1,"toolUsePromptTokenCount":1}}"#
        }
        _ => {
            r#"{"output":{"message":{"role":"assistant","content":[{"reasoningContent":{"reasoningText":{"text":"t","signature":"s"}}},{"text":"Hi"},{"toolUse":{"toolUseId":"t1","name":"f","input":{"a":1}}}]}},"stopReason":"tool_use","usage":{"inputTokens":10,"outputTokens":5,"totalTokens":15,"cacheReadInputTokens":2,"cacheWriteInputTokens":1}}"#
        }
    };
    let error =
        r#"{"error":{"message":"slow down","type":"rate_limit_error","code":"rate_limit_exceeded","param":"model"}}"#;
    vec![
        body.as_bytes().to_vec(),
        error.as_bytes().to_vec(),
        b"[{\"error\":{\"code\":429,\"message\":\"m\",\"status\":\"RESOURCE_EXHAUSTED\"}}]".to_vec(),
    ]
}

/// Recorded streams of each API (bedrock: the stub's frames as `<event-type> <json>` lines).
pub fn stream_seeds(api: &str) -> Vec<Vec<u8>> {
    if api != "bedrock" {
        return crate::fuzz::fixtures(api);
    }
    let content = [
        serde_json::json!({"reasoningContent": {"text": "Two cities.", "signature": "sig"}}),
        serde_json::json!({"text": "Hi there"}),
        serde_json::json!({"toolUse": {"toolUseId": "t1", "name": "f", "input": {"a": 1}}}),
    ];
    [false, true]
        .iter()
        .map(|break_off| {
            let frames: Vec<u8> = crate::bedrock_stub::stream_frames(&content, "tool_use", *break_off).concat();
            let mut parser = mesh::providers::bedrock::EventStreamParser::default();
            let events = parser.feed(&frames).unwrap_or_default();
            events
                .iter()
                .map(|e| format!("{} {}\n", e.event.as_deref().unwrap_or(""), e.data))
                .collect::<String>()
                .into_bytes()
        })
        .collect()
}

pub const TOKENS: &[&str] = &[
    "\"usage\"",
    "\"index\":",
    "\"tool_calls\"",
    "\"finish_reason\":\"length\"",
    "content_block_delta",
    "message_delta",
    "\"stop_reason\":\"max_tokens\"",
    "\"finishReason\":\"SAFETY\"",
    "contentBlockStart",
    "messageStop",
    "[DONE]",
    "response.completed",
    "\"response\":",
    "\"model\":",
];
