//! The provider port: what a provider API's module gives the dispatcher ([`Translator`],
//! [`DeltaDecoder`], [`StreamMapper`], [`Framing`]) and the types they share; one module of pure
//! translations per API (request out, response in, stream in, error in), the Responses
//! pass-through, and the [`Dispatcher`] that sends them all.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use serde_json::{Map, Value};

use crate::config::ProviderConfig;
use crate::domain::ModelPrice;
use crate::error::{GatewayError, UpstreamFault};
use crate::money::TokenUsage;
use crate::sse::{SseError, SseEvent};

pub mod anthropic;
pub mod assemble;
mod auth;
mod aws;
pub mod bedrock;
pub mod chat;
pub mod completions;
mod dispatch;
pub mod echo;
pub mod gemini;
mod input;
pub mod responses;
mod sink;
mod source;
mod walk;

use assemble::Delta;
pub use auth::Auth;
pub use dispatch::Dispatcher;
pub use sink::{assemble_complete, DeltaSink};
pub use source::{EventSource, LocalDeltas};

/// A request body: the pipeline's Responses form for a translator or the pass-through, the
/// client's Chat Completions body for the relay.
pub type Body = Map<String, Value>;

/// A provider request ready to send, or why it cannot be made.
pub type Built = Result<UpstreamRequest, GatewayError>;

/// A provider API translated to and from the Responses API: pure functions, no I/O.
pub trait Translator: Send + Sync {
    /// The provider request for a Responses request body (gateway fields already removed,
    /// defaults applied). Refuses what the provider cannot honour (400 `unsupported_tool` /
    /// `unsupported_parameter` naming the provider) instead of dropping it.
    fn request(&self, provider: &ProviderConfig, row: &ModelPrice, body: &Body, stream: bool) -> Built;
    /// A complete provider answer as deltas (ending with `Delta::Finish`).
    fn response(&self, bytes: &[u8]) -> Result<Vec<Delta>, GatewayError>;
    /// A fresh decoder for one provider stream.
    fn decoder(&self) -> Box<dyn DeltaDecoder>;
    /// A provider error answer mapped into the gateway's envelope.
    fn error(&self, provider: &str, status: u16, headers: &HeaderMap, bytes: &[u8]) -> GatewayError;
    /// How the provider frames a stream.
    fn framing(&self) -> Framing {
        Framing::Sse
    }
}

/// One provider call as the dispatcher drives it, whatever the provider API and the client's
/// endpoint: the request to send, an error answer mapped, and the answer, whole or streamed, in
/// the client's shape. A translator with an assembler is one (`sink::Translating`); so are the
/// forwarders, which pass a provider's answers on in the client's own API with Mesh's ids: the
/// Responses pass-through ([`responses::PassThrough`]) and the Chat Completions relay
/// ([`completions::relay::Relay`]). The credential is not theirs to add: [`Auth`] says how
/// each API authenticates, and the dispatcher applies it.
pub trait Wire: Send + Sync {
    /// A whole answer in the client's API.
    type Answer: Answer;
    /// The provider request (see [`Translator::request`]).
    fn request(&self, provider: &ProviderConfig, row: &ModelPrice, body: &Body, stream: bool) -> Built;
    /// A provider error answer mapped into the gateway's envelope.
    fn error(&self, provider: &str, status: u16, headers: &HeaderMap, bytes: &[u8]) -> GatewayError;
    /// How the provider frames a stream.
    fn framing(&self) -> Framing {
        Framing::Sse
    }
    /// A whole provider answer, in the client's API.
    fn complete(self: Box<Self>, bytes: &[u8]) -> Result<Self::Answer, GatewayError>;
    /// What maps the provider's stream events to the client's.
    fn stream(self: Box<Self>) -> Box<dyn StreamMapper>;
}

/// A whole answer in a client's API, whose stream events pass [`Answer::check`] before they are
/// queued for the client.
pub trait Answer: Send {
    /// Checks a stream event of this API ([`check_event`] for the Responses API).
    fn check(event: &Value) -> Result<(), StreamFault>;
}

impl Answer for Completed {
    fn check(event: &Value) -> Result<(), StreamFault> {
        check_event(event)
    }
}

/// How a provider frames its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Server-sent events.
    Sse,
    /// AWS event stream (`application/vnd.amazon.eventstream`), as Bedrock's ConverseStream sends.
    EventStream,
}

/// Decodes one provider stream into deltas.
pub trait DeltaDecoder: Send {
    fn decode(&mut self, event: SseEvent) -> Result<Vec<Delta>, StreamFault>;
    /// Called when the provider stream ends.
    fn finish(&mut self) -> Vec<Delta> {
        Vec::new()
    }
}

/// Maps a provider's error answer: 4xx keep their status and the provider's words, with
/// anything credential-like scrubbed (429 keeps `retry-after`); 401 and 403 (the provider refused
/// Mesh's own credential or access: the gateway's fault, not the caller's) and 5xx (and 529
/// overloaded) become 502 `upstream_error`, with the provider's words only in the logs.
pub fn provider_fault(
    provider: &str,
    status: u16,
    headers: &HeaderMap,
    error_type: Option<String>,
    code: Option<String>,
    message: Option<String>,
    param: Option<String>,
) -> GatewayError {
    let retry_after_seconds = retry_after(headers);
    let message = message.map(|m| crate::scrub::credentials(&m).into_owned());
    if status == 401 || status == 403 {
        tracing::error!(
            provider,
            status,
            code = code.as_deref().unwrap_or(""),
            detail = message.as_deref().unwrap_or(""),
            "the provider refused the gateway's credential"
        );
        return GatewayError::UpstreamCredential(format!("{provider} refused the gateway's credential ({status})"));
    }
    if !(400..500).contains(&status) {
        let detail = format!("{provider} answered {status}: {}", message.unwrap_or_default());
        return match retry_after_seconds {
            Some(retry_after_seconds) => GatewayError::UpstreamBusy { detail, retry_after_seconds },
            None => GatewayError::UpstreamFailure(detail),
        };
    }
    let error_type = error_type.unwrap_or_else(|| {
        match status {
            429 => "rate_limit_error",
            _ => "invalid_request_error",
        }
        .to_owned()
    });
    GatewayError::UpstreamClient(UpstreamFault {
        status,
        error_type,
        code,
        message: message.unwrap_or_else(|| format!("The provider `{provider}` refused the request ({status}).")),
        param,
        retry_after_seconds,
    })
}

/// The `retry-after` header in seconds, when it is a number.
pub fn retry_after(headers: &HeaderMap) -> Option<u64> {
    headers.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok())
}

/// The request's function tools, in order; a built-in tool is refused with 400
/// `unsupported_tool` naming the provider (translated providers only take function tools).
pub fn function_tools<'a>(provider: &str, body: &'a Map<String, Value>) -> Result<Vec<&'a Value>, GatewayError> {
    let Some(Value::Array(tools)) = body.get("tools") else { return Ok(Vec::new()) };
    for (i, tool) in tools.iter().enumerate() {
        let kind = tool.get("type").and_then(Value::as_str).unwrap_or_default();
        if kind != "function" {
            return Err(unsupported(
                "unsupported_tool",
                &format!("tools[{i}].type"),
                provider,
                &format!("the built-in tool `{kind}` (only function tools)"),
            ));
        }
    }
    Ok(tools.iter().collect())
}

/// A 400 for something a provider cannot do.
pub fn unsupported(code: &'static str, param: &str, provider: &str, what: &str) -> GatewayError {
    GatewayError::invalid(code, param, format!("The provider `{provider}` does not support {what}."))
}

/// Largest provider body (or single stream line) Mesh accepts before failing the call.
pub const MAX_UPSTREAM_BODY: usize = 32 * 1024 * 1024;

/// Where one request goes: a catalog row and its provider.
#[derive(Debug, Clone)]
pub struct Route {
    pub row: ModelPrice,
    pub provider: Arc<ProviderConfig>,
    /// Trace context of the incoming request (`traceparent`, `tracestate`, `x-amzn-trace-id`),
    /// passed on to the provider.
    pub trace: Vec<(&'static str, String)>,
}

/// Trace headers forwarded to providers when the caller (or Lambda) sent them.
pub const TRACE_HEADERS: [&str; 3] = ["traceparent", "tracestate", "x-amzn-trace-id"];

/// A complete (non-streaming) answer, already in the Responses shape.
#[derive(Debug, Clone)]
pub struct Completed {
    pub response: Value,
    pub usage: TokenUsage,
    pub status: String,
}

/// Why a stream stopped early.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StreamFault {
    #[error("the provider sent nothing for {0:?}")]
    Idle(Duration),
    #[error("the provider connection failed mid-stream")]
    Network,
    #[error("the provider sent a malformed event: {0}")]
    Malformed(String),
    #[error("the provider sent an oversized event")]
    TooLarge,
    #[error("the stream exceeded its total time")]
    Deadline,
}

impl From<SseError> for StreamFault {
    fn from(err: SseError) -> Self {
        match err {
            SseError::TooLarge { .. } => StreamFault::TooLarge,
        }
    }
}

/// Lifecycle events, which must carry the response object.
const RESPONSE_EVENTS: [&str; 6] = [
    "response.created",
    "response.in_progress",
    "response.queued",
    "response.completed",
    "response.incomplete",
    "response.failed",
];

/// Checks an event about to be streamed to the client, whichever path (pass-through or
/// translated) produced it: an object whose `type` follows the Responses event grammar (so it
/// cannot break out of the `event:` line), whose `response`, when present, is an object, and
/// which carries one when it is a lifecycle event.
pub fn check_event(event: &Value) -> Result<(), StreamFault> {
    let malformed = |why: &str| Err(StreamFault::Malformed(why.to_owned()));
    let Some(object) = event.as_object() else { return malformed("event is not an object") };
    let Some(kind) = object.get("type").and_then(Value::as_str) else {
        return malformed("event without a type");
    };
    if !crate::sse::is_event_type(kind) {
        return malformed("event type is not a Responses event type");
    }
    match object.get("response") {
        Some(Value::Object(_)) => Ok(()),
        Some(_) => malformed("event `response` is not an object"),
        None if RESPONSE_EVENTS.contains(&kind) => malformed("lifecycle event without its response"),
        None => Ok(()),
    }
}

/// Turns a provider's SSE events into Responses stream events.
pub trait StreamMapper: Send {
    fn map(&mut self, event: SseEvent) -> Result<Vec<Value>, StreamFault>;
    /// Called at the end of the provider stream.
    fn finish(&mut self) -> Vec<Value> {
        Vec::new()
    }
    /// Called once when the stream breaks (`fault`): the events that end the answer with what
    /// was streamed so far (a mapper that builds the answer closes its open items and sends its
    /// terminal event), or none, and the caller ends the stream itself.
    fn abort(&mut self, _fault: &StreamFault) -> Vec<Value> {
        Vec::new()
    }
}

/// What a provider call produced.
#[derive(Debug)]
pub enum Reply<A = Completed> {
    Complete(A),
    Stream(EventSource),
}

/// A provider call ready to send.
#[derive(Debug)]
pub struct UpstreamRequest {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

impl UpstreamRequest {
    /// A JSON body for `url`, asking for server-sent events when it is for a stream.
    pub fn json(url: String, body: Vec<u8>, stream: bool) -> Self {
        let headers = if stream { vec![("accept", "text/event-stream".to_owned())] } else { Vec::new() };
        UpstreamRequest { url, headers, body: Bytes::from(body) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_well_formed_events_pass() {
        let good = [
            json!({"type": "response.created", "sequence_number": 0, "response": {"id": "resp_1"}}),
            json!({"type": "response.output_text.delta", "delta": "hi"}),
            json!({"type": "error", "code": "server_error", "message": "boom"}),
        ];
        for event in good {
            assert!(check_event(&event).is_ok(), "{event}");
        }
        let bad = [
            json!(42),
            json!({"delta": "no type"}),
            json!({"type": 7}),
            json!({"type": "response.output_text.delta\n\nevent: response.completed\ndata: {}"}),
            json!({"type": "Response.Completed", "response": {}}),
            json!({"type": "response.in_progress", "response": 42}),
            json!({"type": "response.in_progress", "response": "x"}),
            json!({"type": "response.output_text.delta", "response": null}),
            json!({"type": "response.completed"}),
        ];
        for event in bad {
            assert!(matches!(check_event(&event), Err(StreamFault::Malformed(_))), "{event}");
        }
    }
}
