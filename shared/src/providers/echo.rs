//! The `echo` provider API: a built-in offline provider for trying Mesh, client integration
//! tests and load tests without a provider account or spending tokens. It is enabled only where
//! an operator configures it (`MESH_PROVIDER_<NAME>_API=echo`).
//!
//! Answers are computed from the request, deterministically:
//! - **Text**: the text of the last input item (a user message, or a function call's output),
//!   unchanged. An empty input answers `(empty input)`.
//! - **Function calls**: when function tools are offered, `tool_choice` is not `none` and the
//!   last input item is not a function call output, the answer is one call of the tool named by
//!   `tool_choice` (else the first tool) with arguments generated from its JSON schema.
//! - **Structured output**: with `text.format` of type `json_schema`, the text is a JSON value
//!   generated from the schema; with `json_object`, `{"echo": <text>}`.
//! - **Tokens**: input tokens are the UTF-8 bytes of the instructions, every input text, call
//!   arguments and outputs, divided by 4 and rounded up (at least 1). Output text is cut after
//!   each run of whitespace; each piece is one output token (a function call counts its
//!   arguments' bytes divided by 4, rounded up). `max_output_tokens` cuts the text (status
//!   `incomplete`).
//! - **Streaming**: one delta per output token, `MESH_PROVIDER_<NAME>_TOKEN_DELAY_MS` apart
//!   (default 0), or `metadata.echo_token_delay_ms` for one request (at most 10 000).
//! - **Faults**, by the upstream model id `echo:<fault>` or `metadata.echo_fault`:
//!   `rate_limit` (429 with `retry-after: 1`), `server_error` (500), `stream_cut` (a stream
//!   that breaks after half its tokens; a non-streaming call answers 502) and `slow_first_byte`
//!   (the answer starts after 3 s, or the provider first-byte timeout when that is shorter).

use std::time::{Duration, Instant};

use http::HeaderMap;
use serde_json::{json, Map, Value};

use super::assemble::{Delta, FinishReason};
use super::{LocalDeltas, Route, StreamFault};
use crate::config::UpstreamTimeouts;
use crate::error::GatewayError;
use crate::ids::new_id;
use crate::money::TokenUsage;

/// Longest per-token delay a request may ask for.
const MAX_TOKEN_DELAY: Duration = Duration::from_secs(10);
/// How late a `slow_first_byte` answer starts.
const SLOW_FIRST_BYTE: Duration = Duration::from_secs(3);
/// Deepest schema nesting the argument generator follows.
const MAX_SCHEMA_DEPTH: usize = 24;
/// Longest string value the generator writes.
const MAX_SAMPLE_CHARS: usize = 200;

/// A failure the echo provider can play.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    RateLimit,
    ServerError,
    StreamCut,
    SlowFirstByte,
}

impl Fault {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "rate_limit" => Fault::RateLimit,
            "server_error" => Fault::ServerError,
            "stream_cut" => Fault::StreamCut,
            "slow_first_byte" => Fault::SlowFirstByte,
            _ => return None,
        })
    }
}

/// The fault a request asks for: `metadata.echo_fault`, else the upstream model's `:<fault>`.
pub fn fault(upstream_model: &str, body: &Map<String, Value>) -> Option<Fault> {
    let requested = body.get("metadata").and_then(|m| m.get("echo_fault")).and_then(Value::as_str);
    requested.or_else(|| upstream_model.split_once(':').map(|(_, fault)| fault)).and_then(Fault::parse)
}

/// The per-token delay for a request.
fn token_delay(default: Duration, body: &Map<String, Value>) -> Duration {
    body.get("metadata")
        .and_then(|m| m.get("echo_token_delay_ms"))
        .and_then(|v| v.as_str().and_then(|s| s.trim().parse::<u64>().ok()).or_else(|| v.as_u64()))
        .map_or(default, Duration::from_millis)
        .min(MAX_TOKEN_DELAY)
}

/// What the echo provider answers one call with, before it is shaped for the client.
pub enum Played {
    /// The whole answer.
    Complete(Vec<Delta>),
    /// The answer paced as a stream, to be read by the deadline.
    Stream(LocalDeltas, Instant),
}

/// Plays one call: its fault, if it asks for one, else its answer (whole or paced).
pub async fn play(
    route: &Route,
    body: &Map<String, Value>,
    stream: bool,
    deadline: Instant,
    timeouts: UpstreamTimeouts,
) -> Result<Played, GatewayError> {
    let provider = route.provider.name.as_str();
    let fault = fault(&route.row.upstream_model, body);
    match fault {
        Some(Fault::RateLimit) => {
            let mut headers = HeaderMap::new();
            headers.insert("retry-after", http::HeaderValue::from_static("1"));
            return Err(super::provider_fault(
                provider,
                429,
                &headers,
                Some("rate_limit_error".to_owned()),
                Some("rate_limit_exceeded".to_owned()),
                Some("The echo provider plays a rate limit (fault `rate_limit`).".to_owned()),
                None,
            ));
        }
        Some(Fault::ServerError) => {
            return Err(GatewayError::UpstreamFailure(format!("{provider} answered 500 (fault `server_error`)")))
        }
        Some(Fault::StreamCut) if !stream => {
            return Err(GatewayError::UpstreamFailure(format!("{provider} broke the connection (fault `stream_cut`)")))
        }
        Some(Fault::SlowFirstByte) => {
            let head_by = deadline.min(Instant::now() + timeouts.first_byte);
            let ready = Instant::now() + SLOW_FIRST_BYTE;
            tokio::time::sleep_until(tokio::time::Instant::from_std(ready.min(head_by))).await;
            if ready > head_by {
                return Err(GatewayError::GatewayTimeout("no response head in time".to_owned()));
            }
        }
        _ => {}
    }
    let deltas = answer(body);
    if !stream {
        return Ok(Played::Complete(deltas));
    }
    let delay = token_delay(route.provider.token_delay, body);
    let cut_after = (fault == Some(Fault::StreamCut)).then(|| {
        let tokens = deltas.iter().filter(|d| !matches!(d, Delta::Usage(_) | Delta::Finish(_))).count();
        tokens / 2
    });
    let deadline = deadline.min(Instant::now() + timeouts.total);
    Ok(Played::Stream(paced(deltas, delay, cut_after), deadline))
}

/// The deltas as a stream, `delay` apart, optionally broken after `cut_after` content deltas.
fn paced(deltas: Vec<Delta>, delay: Duration, cut_after: Option<usize>) -> LocalDeltas {
    let state = (deltas.into_iter(), 0usize, false);
    Box::pin(futures_util::stream::unfold(state, move |(mut deltas, sent, broken)| async move {
        if broken {
            return None;
        }
        let delta = deltas.next()?;
        let content = !matches!(delta, Delta::Usage(_) | Delta::Finish(_));
        if content {
            if cut_after.is_some_and(|cut| sent >= cut) {
                return Some((Err(StreamFault::Network), (deltas, sent, true)));
            }
            if sent > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
        Some((Ok(delta), (deltas, sent + usize::from(content), false)))
    }))
}

/// The whole answer to a request, as deltas ending with usage and `Finish`.
pub fn answer(body: &Map<String, Value>) -> Vec<Delta> {
    let input = body.get("input");
    let input_tokens = tokens_of_bytes(request_bytes(body)).max(1);
    let last = last_text(input);
    let mut deltas = Vec::new();
    let mut output_tokens = 0u64;
    let mut finish = FinishReason::Stop;
    if let Some(tool) = tool_to_call(body, input) {
        let name = tool.get("name").and_then(Value::as_str).unwrap_or("tool").to_owned();
        let root = tool.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object"}));
        let arguments = sample(&root, &root, &last, 0).to_string();
        output_tokens = tokens_of_bytes(arguments.len()).max(1);
        deltas.push(Delta::ToolCallStart { index: 0, call_id: new_id("call_"), name });
        deltas.push(Delta::ToolCallArguments { index: 0, fragment: arguments });
    } else {
        let text = match structured_format(body) {
            Some(Structured::Schema(schema)) => sample(&schema, &schema, &last, 0).to_string(),
            Some(Structured::Object) => json!({"echo": last}).to_string(),
            None if last.is_empty() => "(empty input)".to_owned(),
            None => last,
        };
        let limit = body.get("max_output_tokens").and_then(Value::as_u64);
        for piece in pieces(&text) {
            if limit.is_some_and(|limit| output_tokens >= limit) {
                finish = FinishReason::Length;
                break;
            }
            output_tokens += 1;
            deltas.push(Delta::Text(piece.to_owned()));
        }
    }
    deltas.push(Delta::Usage(TokenUsage { input_tokens, output_tokens, ..TokenUsage::default() }));
    deltas.push(Delta::Finish(finish));
    deltas
}

/// Cuts text after each run of whitespace: `"a b  c"` → `["a ", "b  ", "c"]`.
pub fn pieces(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_space = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            in_space = true;
        } else if in_space {
            out.push(&text[start..i]);
            start = i;
            in_space = false;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

fn tokens_of_bytes(bytes: usize) -> u64 {
    u64::try_from(bytes.div_ceil(4)).unwrap_or(u64::MAX)
}

/// Bytes of every text the request carries (instructions, inputs, call arguments and outputs).
fn request_bytes(body: &Map<String, Value>) -> usize {
    let instructions = body.get("instructions").and_then(Value::as_str).map_or(0, str::len);
    let input = match body.get("input") {
        Some(Value::String(text)) => text.len(),
        Some(Value::Array(items)) => items.iter().map(|item| item_text(item).len()).sum(),
        _ => 0,
    };
    instructions + input
}

/// The text of one input item: a message's text parts, a call's arguments or output.
fn item_text(item: &Value) -> String {
    match item.get("type").and_then(Value::as_str) {
        Some("function_call") => item.get("arguments").and_then(Value::as_str).unwrap_or_default().to_owned(),
        Some("function_call_output") => match item.get("output") {
            Some(Value::String(text)) => text.clone(),
            Some(Value::Array(parts)) => parts_text(parts),
            _ => String::new(),
        },
        _ => match item.get("content") {
            Some(Value::String(text)) => text.clone(),
            Some(Value::Array(parts)) => parts_text(parts),
            _ => String::new(),
        },
    }
}

fn parts_text(parts: &[Value]) -> String {
    let texts: Vec<&str> = parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect();
    texts.join("\n")
}

/// The text to echo: the last input item's.
fn last_text(input: Option<&Value>) -> String {
    match input {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(items)) => items.last().map(item_text).unwrap_or_default(),
        _ => String::new(),
    }
}

/// The function tool to call, if the answer is a call.
fn tool_to_call<'a>(body: &'a Map<String, Value>, input: Option<&Value>) -> Option<&'a Value> {
    let tools = body.get("tools")?.as_array()?;
    let functions: Vec<&Value> =
        tools.iter().filter(|t| t.get("type").and_then(Value::as_str) == Some("function")).collect();
    let answered = match input {
        Some(Value::Array(items)) => items
            .last()
            .and_then(|item| item.get("type"))
            .and_then(Value::as_str)
            .is_some_and(|kind| kind == "function_call_output"),
        _ => false,
    };
    let choice = body.get("tool_choice");
    if answered || choice.and_then(Value::as_str) == Some("none") {
        return None;
    }
    let named = choice.and_then(|c| c.get("name")).and_then(Value::as_str);
    match named {
        Some(name) => functions.into_iter().find(|t| t.get("name").and_then(Value::as_str) == Some(name)),
        None => functions.into_iter().next(),
    }
}

enum Structured {
    Schema(Value),
    Object,
}

fn structured_format(body: &Map<String, Value>) -> Option<Structured> {
    let format = body.get("text")?.get("format")?;
    match format.get("type").and_then(Value::as_str)? {
        "json_schema" => Some(Structured::Schema(format.get("schema").cloned().unwrap_or_else(|| json!({})))),
        "json_object" => Some(Structured::Object),
        _ => None,
    }
}

/// A value that validates against `schema` (the subset of JSON Schema that tool parameters and
/// structured outputs use: types, `properties`, `items`, `enum`, `const`, `anyOf`/`oneOf`/
/// `allOf`, `$ref` into `$defs`/`definitions`, length and range bounds, common formats).
pub fn sample(schema: &Value, root: &Value, seed: &str, depth: usize) -> Value {
    if depth > MAX_SCHEMA_DEPTH {
        return Value::Null;
    }
    let Some(schema) = schema.as_object() else { return json!({}) };
    if let Some(value) = schema.get("const") {
        return value.clone();
    }
    if let Some(first) = schema.get("enum").and_then(Value::as_array).and_then(|e| e.first()) {
        return first.clone();
    }
    if let Some(target) = schema.get("$ref").and_then(Value::as_str).and_then(|r| resolve(root, r)) {
        return sample(target, root, seed, depth + 1);
    }
    for combinator in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = schema.get(combinator).and_then(Value::as_array).and_then(|alternatives| {
            alternatives.iter().find(|a| a.get("type").and_then(Value::as_str) != Some("null")).or(alternatives.first())
        }) {
            return sample(first, root, seed, depth + 1);
        }
    }
    let kind = match schema.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|k| *k != "null")
            .or_else(|| kinds.first()?.as_str())
            .unwrap_or("null"),
        _ if schema.contains_key("properties") => "object",
        _ if schema.contains_key("items") => "array",
        _ => "string",
    };
    match kind {
        "object" => {
            let mut out = Map::new();
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (name, property) in properties {
                    out.insert(name.clone(), sample(property, root, seed, depth + 1));
                }
            }
            Value::Object(out)
        }
        "array" => {
            let min = schema.get("minItems").and_then(Value::as_u64).unwrap_or(1);
            let max = schema.get("maxItems").and_then(Value::as_u64).unwrap_or(u64::MAX);
            let count = min.max(1).min(max).min(16);
            let items = schema.get("items").cloned().unwrap_or_else(|| json!({}));
            Value::Array((0..count).map(|_| sample(&items, root, seed, depth + 1)).collect())
        }
        "integer" => json!(number(schema, true) as i64),
        "number" => json!(number(schema, false)),
        "boolean" => Value::Bool(true),
        "null" => Value::Null,
        _ => Value::String(string(schema, seed)),
    }
}

fn resolve<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    let path = reference.strip_prefix('#')?;
    if path.is_empty() {
        return Some(root);
    }
    root.pointer(path)
}

fn number(schema: &Map<String, Value>, integer: bool) -> f64 {
    let get = |name: &str| schema.get(name).and_then(Value::as_f64);
    let step = if integer { 1.0 } else { 0.5 };
    let low = get("minimum").or_else(|| get("exclusiveMinimum").map(|m| m + step));
    let high = get("maximum").or_else(|| get("exclusiveMaximum").map(|m| m - step));
    let mut value = low.unwrap_or(0.0).max(0.0_f64.min(high.unwrap_or(f64::MAX)));
    if let Some(low) = low {
        value = value.max(low);
    }
    if let Some(high) = high {
        value = value.min(high);
    }
    if integer {
        value = value.ceil();
    }
    value
}

fn string(schema: &Map<String, Value>, seed: &str) -> String {
    let fixed = match schema.get("format").and_then(Value::as_str) {
        Some("date-time") => Some("2026-01-01T00:00:00Z"),
        Some("date") => Some("2026-01-01"),
        Some("time") => Some("00:00:00Z"),
        Some("email") => Some("echo@example.com"),
        Some("uri" | "url") => Some("https://example.com/echo"),
        Some("uuid") => Some("00000000-0000-4000-8000-000000000000"),
        _ => None,
    };
    let base = fixed.unwrap_or(if seed.is_empty() { "echo" } else { seed });
    let min = schema.get("minLength").and_then(Value::as_u64).map_or(0, |n| usize::try_from(n).unwrap_or(0));
    let max = schema
        .get("maxLength")
        .and_then(Value::as_u64)
        .map_or(MAX_SAMPLE_CHARS, |n| usize::try_from(n).unwrap_or(MAX_SAMPLE_CHARS))
        .min(MAX_SAMPLE_CHARS.max(min));
    let mut text: String = base.chars().take(max).collect();
    let missing = min.saturating_sub(text.chars().count());
    text.extend(std::iter::repeat_n('x', missing.min(MAX_SAMPLE_CHARS * 8)));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    fn text_of(deltas: &[Delta]) -> String {
        deltas.iter().filter_map(|d| if let Delta::Text(t) = d { Some(t.as_str()) } else { None }).collect()
    }

    fn usage_of(deltas: &[Delta]) -> TokenUsage {
        deltas.iter().find_map(|d| if let Delta::Usage(u) = d { Some(*u) } else { None }).unwrap_or_default()
    }

    #[test]
    fn echoes_the_last_message_with_documented_counts() {
        let deltas = answer(&body(json!({"input": "What is the capital of France?"})));
        assert_eq!(text_of(&deltas), "What is the capital of France?");
        let usage = usage_of(&deltas);
        assert_eq!(usage.input_tokens, 8, "30 bytes / 4, rounded up");
        assert_eq!(usage.output_tokens, 6, "six words");
        assert_eq!(deltas.last(), Some(&Delta::Finish(FinishReason::Stop)));
        let deltas = answer(&body(json!({
            "instructions": "be brief",
            "input": [
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
                {"role": "user", "content": [{"type": "input_text", "text": "second one"}]}
            ]
        })));
        assert_eq!(text_of(&deltas), "second one");
        assert_eq!(usage_of(&deltas).input_tokens, (8 + 5 + 2 + 10_u64).div_ceil(4));
    }

    #[test]
    fn max_output_tokens_cuts_the_answer() {
        let deltas = answer(&body(json!({"input": "one two three four", "max_output_tokens": 2})));
        assert_eq!(text_of(&deltas), "one two ");
        assert_eq!(usage_of(&deltas).output_tokens, 2);
        assert_eq!(deltas.last(), Some(&Delta::Finish(FinishReason::Length)));
    }

    #[test]
    fn calls_the_offered_tool_with_valid_arguments() {
        let request = body(json!({
            "input": "weather in Paris",
            "tools": [{"type": "function", "name": "get_weather", "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 5},
                    "unit": {"type": "string", "enum": ["c", "f"]},
                    "days": {"type": "integer", "minimum": 1, "maximum": 7},
                    "when": {"$ref": "#/$defs/when"},
                    "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
                    "note": {"type": ["string", "null"], "minLength": 8}
                },
                "required": ["city", "unit", "days", "when", "tags", "note"],
                "additionalProperties": false,
                "$defs": {"when": {"type": "string", "format": "date"}}
            }}]
        }));
        let deltas = answer(&request);
        let Some(Delta::ToolCallStart { name, .. }) = deltas.first() else { panic!("{deltas:?}") };
        assert_eq!(name, "get_weather");
        let Some(Delta::ToolCallArguments { fragment, .. }) = deltas.get(1) else { panic!("{deltas:?}") };
        let arguments: Value = serde_json::from_str(fragment).unwrap();
        assert_eq!(
            arguments,
            json!({"city": "weath", "unit": "c", "days": 1, "when": "2026-01-01", "tags": ["weather in Paris", "weather in Paris"], "note": "weather in Paris"})
        );
        // Once the call is answered, the answer is text again.
        let mut answered = request.clone();
        answered
            .insert("input".into(), json!([{"type": "function_call_output", "call_id": "call_1", "output": "sunny"}]));
        assert_eq!(text_of(&answer(&answered)), "sunny");
        let mut none = request;
        none.insert("tool_choice".into(), json!("none"));
        assert_eq!(text_of(&answer(&none)), "weather in Paris");
    }

    #[test]
    fn structured_output_follows_the_schema() {
        let deltas = answer(&body(json!({
            "input": "Paris",
            "text": {"format": {"type": "json_schema", "name": "city", "strict": true, "schema": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "population": {"type": "number", "exclusiveMinimum": 0}},
                "required": ["name", "population"], "additionalProperties": false
            }}}
        })));
        let value: Value = serde_json::from_str(&text_of(&deltas)).unwrap();
        assert_eq!(value, json!({"name": "Paris", "population": 0.5}));
        let deltas = answer(&body(json!({"input": "hi", "text": {"format": {"type": "json_object"}}})));
        assert_eq!(text_of(&deltas), r#"{"echo":"hi"}"#);
    }

    #[test]
    fn faults_come_from_the_model_or_the_request() {
        assert_eq!(fault("echo:rate_limit", &Map::new()), Some(Fault::RateLimit));
        assert_eq!(fault("echo", &body(json!({"metadata": {"echo_fault": "stream_cut"}}))), Some(Fault::StreamCut));
        assert_eq!(fault("echo", &Map::new()), None);
        assert_eq!(fault("echo:bogus", &Map::new()), None);
    }

    #[test]
    fn pieces_keep_whitespace() {
        assert_eq!(pieces("a b  c"), vec!["a ", "b  ", "c"]);
        assert_eq!(pieces(" lead"), vec![" ", "lead"]);
        assert!(pieces("").is_empty());
    }
}
