//! Provider dispatch: one HTTP client, credentials and timeouts for every provider API, and one
//! module of pure translations per API (request out, response in, stream in, error in).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde_json::{Map, Value};

use http::HeaderMap;

use crate::config::{ProviderApi, ProviderConfig, UpstreamTimeouts};
use crate::domain::ModelPrice;
use crate::error::{GatewayError, UpstreamFault};
use crate::money::TokenUsage;
use crate::sse::{SseError, SseEvent, SseParser};

pub mod anthropic;
pub mod assemble;
mod aws;
pub mod bedrock;
pub mod chat;
pub mod completions;
pub mod echo;
mod exchange;
pub mod gemini;
mod input;
mod local;
pub mod responses;
mod walk;

use assemble::{Assembler, Delta, FinishReason, ResponseContext};
pub use local::DeltaSink;

/// A provider API translated to and from the Responses API: pure functions, no I/O.
pub trait Translator: Send + Sync {
    /// The provider request for a Responses request body (gateway fields already removed,
    /// defaults applied). Refuses what the provider cannot honour (400 `unsupported_tool` /
    /// `unsupported_parameter` naming the provider) instead of dropping it.
    fn request(
        &self,
        provider: &ProviderConfig,
        row: &ModelPrice,
        body: &Map<String, Value>,
        stream: bool,
    ) -> Result<UpstreamRequest, GatewayError>;
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

/// How a provider frames its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Server-sent events.
    Sse,
    /// AWS event stream (`application/vnd.amazon.eventstream`), as Bedrock's ConverseStream sends.
    EventStream,
}

/// A stream's frame parser.
#[derive(Debug)]
enum Frames {
    Sse(SseParser),
    EventStream(bedrock::EventStreamParser),
}

impl Frames {
    fn new(framing: Framing) -> Self {
        match framing {
            Framing::Sse => Frames::Sse(SseParser::with_max_line(MAX_UPSTREAM_BODY)),
            Framing::EventStream => Frames::EventStream(bedrock::EventStreamParser::default()),
        }
    }

    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, StreamFault> {
        match self {
            Frames::Sse(parser) => Ok(parser.feed(chunk)?),
            Frames::EventStream(parser) => parser.feed(chunk),
        }
    }

    fn buffered_len(&self) -> usize {
        match self {
            Frames::Sse(parser) => parser.buffered_len(),
            Frames::EventStream(parser) => parser.buffered_len(),
        }
    }

    fn finish(&mut self) -> Result<Option<SseEvent>, StreamFault> {
        match self {
            Frames::Sse(parser) => Ok(parser.finish()?),
            Frames::EventStream(parser) => parser.finish().map(|()| None),
        }
    }
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

/// A translated stream: provider events → deltas → Responses events.
struct Translated {
    decoder: Box<dyn DeltaDecoder>,
    assembler: Assembler,
}

impl StreamMapper for Translated {
    fn map(&mut self, event: SseEvent) -> Result<Vec<Value>, StreamFault> {
        let mut events = Vec::new();
        for delta in self.decoder.decode(event)? {
            events.extend(self.assembler.push(delta));
        }
        Ok(events)
    }

    /// The provider's stream ended: what its decoder still holds, and, if the provider never
    /// said it was done, the answer closed as failed with everything streamed so far.
    fn finish(&mut self) -> Vec<Value> {
        let mut events = Vec::new();
        for delta in self.decoder.finish() {
            events.extend(self.assembler.push(delta));
        }
        if !self.assembler.is_done() {
            events.extend(self.assembler.finish(FinishReason::Error(EARLY_END.to_owned())));
        }
        events
    }

    fn abort(&mut self, fault: &StreamFault) -> Vec<Value> {
        self.assembler.finish(FinishReason::Error(fault.to_string()))
    }
}

/// Why a translated answer failed when its provider stream ended without a finish.
const EARLY_END: &str = "The provider ended the stream early.";

/// Runs a complete answer through the assembler.
pub fn assemble_complete(deltas: Vec<Delta>, ctx: ResponseContext) -> Completed {
    let mut assembler = Assembler::new(ctx);
    let mut last = Vec::new();
    for delta in deltas {
        last = assembler.push(delta);
    }
    if !assembler.is_done() {
        last = assembler.finish(FinishReason::Stop);
    }
    let terminal = last.pop().unwrap_or(Value::Null);
    let response = terminal.get("response").cloned().unwrap_or(Value::Null);
    let status = response.get("status").and_then(Value::as_str).unwrap_or("completed").to_owned();
    Completed { response, usage: assembler.usage(), status }
}

fn translator_for(api: ProviderApi, bedrock: &bedrock::Bedrock) -> Option<&dyn Translator> {
    match api {
        ProviderApi::Chat => Some(&chat::Chat),
        ProviderApi::Anthropic => Some(&anthropic::Anthropic),
        ProviderApi::Gemini => Some(&gemini::Gemini),
        ProviderApi::Bedrock => Some(bedrock),
        ProviderApi::Responses | ProviderApi::Echo => None,
    }
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

/// A provider stream, read one Responses event at a time with an idle timeout.
pub struct EventSource {
    input: StreamInput,
    pending: std::collections::VecDeque<Value>,
    idle: Duration,
    deadline: tokio::time::Instant,
    ended: bool,
    /// What broke the stream, reported once the events before it are taken.
    fault: Option<StreamFault>,
    /// What every event must pass before it is queued ([`check_event`] for Responses events).
    check: fn(&Value) -> Result<(), StreamFault>,
}

/// Deltas produced in process (the `echo` provider), paced as a provider would send them.
pub type LocalDeltas = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Delta, StreamFault>> + Send>>;

/// Where a stream's events come from.
enum StreamInput {
    /// A provider's HTTP body: frames parsed, then mapped to Responses events.
    Upstream { response: reqwest::Response, parser: Frames, mapper: Box<dyn StreamMapper> },
    /// Deltas made in process, assembled into the client's events.
    Local { deltas: LocalDeltas, assembler: Box<dyn DeltaSink> },
}

impl std::fmt::Debug for EventSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSource").field("pending", &self.pending.len()).finish_non_exhaustive()
    }
}

impl EventSource {
    /// A stream of deltas made in process, with the same idle and total bounds as a provider's.
    pub fn local(deltas: LocalDeltas, assembler: Assembler, timeouts: UpstreamTimeouts, deadline: Instant) -> Self {
        EventSource {
            input: StreamInput::Local { deltas, assembler: Box::new(assembler) },
            pending: std::collections::VecDeque::new(),
            idle: timeouts.stream_idle,
            deadline: tokio::time::Instant::from_std(deadline),
            ended: false,
            fault: None,
            check: check_event,
        }
    }

    /// The next event, `Ok(None)` at the end of the stream. Events that arrived before a fault
    /// are taken first, then the fault, then nothing more.
    pub async fn next(&mut self) -> Result<Option<Value>, StreamFault> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            if let Some(fault) = self.fault.take() {
                self.ended = true;
                let ending = self.abort(&fault);
                if ending.is_empty() {
                    return Err(fault);
                }
                // The answer was ended with what came before the fault: the caller sees a
                // complete sequence whose terminal event says it failed.
                tracing::warn!(error = %fault, "provider stream failed; the answer was closed as failed");
                self.pending.extend(ending);
                continue;
            }
            if self.ended {
                return Ok(None);
            }
            let wait = self.idle.min(self.deadline.saturating_duration_since(tokio::time::Instant::now()));
            let timed_out = |deadline: tokio::time::Instant, idle: Duration| {
                if tokio::time::Instant::now() >= deadline {
                    StreamFault::Deadline
                } else {
                    StreamFault::Idle(idle)
                }
            };
            let taken = match &mut self.input {
                StreamInput::Upstream { response, .. } => match tokio::time::timeout(wait, response.chunk()).await {
                    Err(_) => Err(timed_out(self.deadline, self.idle)),
                    Ok(Err(_)) => Err(StreamFault::Network),
                    Ok(Ok(Some(bytes))) => self.take_chunk(&bytes),
                    Ok(Ok(None)) => {
                        self.ended = true;
                        self.take_end()
                    }
                },
                StreamInput::Local { deltas, assembler } => {
                    use futures_util::StreamExt;
                    match tokio::time::timeout(wait, deltas.next()).await {
                        Err(_) => Err(timed_out(self.deadline, self.idle)),
                        Ok(Some(Err(fault))) => Err(fault),
                        Ok(Some(Ok(delta))) => {
                            let events = assembler.push(delta);
                            self.push(events)
                        }
                        Ok(None) => {
                            self.ended = true;
                            let events = assembler.end();
                            self.push(events)
                        }
                    }
                }
            };
            if let Err(fault) = taken {
                self.fault = Some(fault);
            }
        }
    }

    fn take_chunk(&mut self, bytes: &[u8]) -> Result<(), StreamFault> {
        let StreamInput::Upstream { parser, mapper, .. } = &mut self.input else { return Ok(()) };
        let mut mapped = Vec::new();
        let mut outcome = Ok(());
        for event in parser.feed(bytes)? {
            match mapper.map(event) {
                Ok(events) => mapped.extend(events),
                Err(fault) => {
                    outcome = Err(fault);
                    break;
                }
            }
        }
        if outcome.is_ok() && parser.buffered_len() > MAX_UPSTREAM_BODY {
            outcome = Err(StreamFault::TooLarge);
        }
        self.push(mapped)?;
        outcome
    }

    /// The events ending the answer after `fault`, from whatever builds it (none if it cannot).
    /// Each passes the source's check; one that does not is dropped with the rest, and the
    /// caller ends the stream itself.
    fn abort(&mut self, fault: &StreamFault) -> Vec<Value> {
        let events = match &mut self.input {
            StreamInput::Upstream { mapper, .. } => mapper.abort(fault),
            StreamInput::Local { assembler, .. } => assembler.abort(fault),
        };
        if events.iter().all(|event| (self.check)(event).is_ok()) {
            events
        } else {
            Vec::new()
        }
    }

    fn take_end(&mut self) -> Result<(), StreamFault> {
        let StreamInput::Upstream { parser, mapper, .. } = &mut self.input else { return Ok(()) };
        let mut mapped = Vec::new();
        if let Some(event) = parser.finish()? {
            mapped.extend(mapper.map(event)?);
        }
        mapped.extend(mapper.finish());
        self.push(mapped)
    }

    /// Queues mapped events once each passes the source's check (Responses: [`check_event`]).
    fn push(&mut self, events: Vec<Value>) -> Result<(), StreamFault> {
        for event in events {
            (self.check)(&event)?;
            self.pending.push_back(event);
        }
        Ok(())
    }
}

/// What a provider call produced.
#[derive(Debug)]
pub enum Reply {
    Complete(Completed),
    Stream(EventSource),
}

/// Owns the pooled HTTP client, the providers' credentials and the timeouts.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    http: reqwest::Client,
    providers: Arc<BTreeMap<String, Arc<ProviderConfig>>>,
    timeouts: UpstreamTimeouts,
    /// AWS credentials and region for SigV4-signed providers, loaded on first use.
    aws: Arc<tokio::sync::OnceCell<AwsAuth>>,
    /// The `bedrock` translator, with the S3 buckets it may name.
    bedrock: Arc<bedrock::Bedrock>,
}

/// What signing a Bedrock call needs from the AWS SDK's configuration.
#[derive(Debug)]
struct AwsAuth {
    credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
    region: Option<String>,
    cached: tokio::sync::RwLock<Option<aws_credential_types::Credentials>>,
}

/// A provider call ready to send.
#[derive(Debug)]
pub struct UpstreamRequest {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

impl Dispatcher {
    pub fn new(
        providers: &BTreeMap<String, crate::config::ProviderConfig>,
        timeouts: UpstreamTimeouts,
    ) -> Result<Self, GatewayError> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| GatewayError::Internal(format!("http client: {e}")))?;
        let providers = providers.iter().map(|(name, p)| (name.clone(), Arc::new(p.clone()))).collect();
        Ok(Dispatcher { http, providers: Arc::new(providers), timeouts, aws: Arc::default(), bedrock: Arc::default() })
    }

    /// Lets Bedrock requests name images in these S3 buckets (`MESH_BEDROCK_S3_BUCKETS`).
    #[must_use]
    pub fn with_bedrock_s3_buckets(mut self, buckets: Vec<String>) -> Self {
        self.bedrock = Arc::new(bedrock::Bedrock::with_s3_buckets(buckets));
        self
    }

    pub fn timeouts(&self) -> UpstreamTimeouts {
        self.timeouts
    }

    /// The provider of a catalog row, refusing one without credentials.
    pub fn provider(&self, name: &str) -> Result<Arc<ProviderConfig>, GatewayError> {
        match self.providers.get(name) {
            Some(p) if p.api_key.is_some() || matches!(p.api, ProviderApi::Bedrock | ProviderApi::Echo) => {
                Ok(p.clone())
            }
            _ => Err(GatewayError::ProviderNotAvailable(name.to_owned())),
        }
    }

    /// Sends the request and returns the answer, translated to the Responses API. Nothing may
    /// outlast `deadline` (the request's budget).
    pub async fn call(
        &self,
        route: &Route,
        body: &Map<String, Value>,
        stream: bool,
        ctx: ResponseContext,
        deadline: Instant,
    ) -> Result<Reply, GatewayError> {
        if route.provider.api == ProviderApi::Echo {
            return echo::call(route, body, stream, ctx, deadline, self.timeouts).await;
        }
        let translator = translator_for(route.provider.api, &self.bedrock);
        let request = match translator {
            None if route.provider.api == ProviderApi::Responses => {
                responses::build_request(&route.provider, &route.row, body, stream)?
            }
            None => return Err(GatewayError::ProviderNotAvailable(route.provider.name.clone())),
            Some(translator) => translator.request(&route.provider, &route.row, body, stream)?,
        };
        let response = self
            .exchange(route, request, deadline, |status, headers, bytes| match translator {
                Some(translator) => translator.error(&route.provider.name, status, headers, bytes),
                None => responses::parse_error(&route.provider.name, status, headers, bytes),
            })
            .await?;
        let deadline = deadline.min(Instant::now() + self.timeouts.total);
        match (translator, stream) {
            (None, true) => {
                let mapper = Box::new(responses::PassThrough::new(ctx));
                Ok(Reply::Stream(self.event_source(response, Framing::Sse, mapper, deadline)))
            }
            (None, false) => {
                let bytes = self.read_body(response, deadline).await?;
                Ok(Reply::Complete(responses::parse_response(&bytes, ctx)?))
            }
            (Some(translator), true) => {
                let mapper = Translated { decoder: translator.decoder(), assembler: Assembler::new(ctx) };
                Ok(Reply::Stream(self.event_source(response, translator.framing(), Box::new(mapper), deadline)))
            }
            (Some(translator), false) => {
                let bytes = self.read_body(response, deadline).await?;
                Ok(Reply::Complete(assemble_complete(translator.response(&bytes)?, ctx)))
            }
        }
    }

    fn event_source(
        &self,
        response: reqwest::Response,
        framing: Framing,
        mapper: Box<dyn StreamMapper>,
        deadline: Instant,
    ) -> EventSource {
        EventSource {
            input: StreamInput::Upstream { response, parser: Frames::new(framing), mapper },
            pending: std::collections::VecDeque::new(),
            idle: self.timeouts.stream_idle,
            deadline: tokio::time::Instant::from_std(deadline),
            ended: false,
            fault: None,
            check: check_event,
        }
    }

    /// Signs a Bedrock call with SigV4, with credentials from the AWS SDK's default chain (the
    /// function's role under Lambda), loaded once and refreshed by the SDK as they expire.
    async fn sign_for_bedrock(
        &self,
        provider: &ProviderConfig,
        request: &mut UpstreamRequest,
    ) -> Result<(), GatewayError> {
        use aws_credential_types::provider::ProvideCredentials;
        let aws = self
            .aws
            .get_or_init(|| async {
                let config = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
                AwsAuth {
                    credentials: config.credentials_provider(),
                    region: config.region().map(|r| r.as_ref().to_owned()),
                    cached: tokio::sync::RwLock::new(None),
                }
            })
            .await;
        let unavailable = |why: &str| {
            tracing::error!(provider = %provider.name, reason = why, "no AWS credentials for a bedrock call");
            GatewayError::ProviderNotAvailable(provider.name.clone())
        };
        let Some(provider_chain) = &aws.credentials else { return Err(unavailable("no credentials provider")) };
        // The chain itself does not cache (clients of the SDK cache in their identity cache):
        // credentials are kept here until five minutes before they expire, refreshed by one caller.
        let fresh = |c: &aws_credential_types::Credentials| {
            c.expiry().is_none_or(|at| at > std::time::SystemTime::now() + Duration::from_secs(300))
        };
        let cached = aws.cached.read().await.clone().filter(fresh);
        let credentials = match cached {
            Some(credentials) => credentials,
            None => {
                let mut slot = aws.cached.write().await;
                match slot.clone().filter(fresh) {
                    Some(credentials) => credentials,
                    None => {
                        let fetched =
                            tokio::time::timeout(Duration::from_secs(5), provider_chain.provide_credentials())
                                .await
                                .map_err(|_| unavailable("the credentials provider did not answer in 5 s"))?
                                .map_err(|e| unavailable(&e.to_string()))?;
                        *slot = Some(fetched.clone());
                        fetched
                    }
                }
            }
        };
        let region = bedrock::endpoint_region(&provider.base_url)
            .or_else(|| aws.region.clone())
            .ok_or_else(|| unavailable("no AWS region"))?;
        bedrock::sign(request, &credentials, &region, std::time::SystemTime::now())
    }

    async fn send(&self, request: UpstreamRequest, deadline: Instant) -> Result<reqwest::Response, GatewayError> {
        let mut builder = self.http.post(&request.url).header("content-type", "application/json").body(request.body);
        for (name, value) in request.headers {
            builder = builder.header(name, value);
        }
        let head_by = deadline.min(Instant::now() + self.timeouts.first_byte);
        match tokio::time::timeout_at(tokio::time::Instant::from_std(head_by), builder.send()).await {
            Err(_) => Err(GatewayError::GatewayTimeout("no response head in time".to_owned())),
            Ok(Err(err)) if err.is_timeout() => Err(GatewayError::GatewayTimeout(err.to_string())),
            Ok(Err(err)) => Err(GatewayError::UpstreamFailure(format!("send: {}", redact(&err)))),
            Ok(Ok(response)) => Ok(response),
        }
    }

    async fn read_body(&self, mut response: reqwest::Response, deadline: Instant) -> Result<Bytes, GatewayError> {
        let mut body = BytesMut::new();
        let read = async {
            while let Some(chunk) = response.chunk().await.map_err(|e| GatewayError::UpstreamFailure(redact(&e)))? {
                if body.len() + chunk.len() > MAX_UPSTREAM_BODY {
                    return Err(GatewayError::UpstreamFailure("provider body exceeds the size limit".to_owned()));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(())
        };
        let by = deadline.min(Instant::now() + self.timeouts.total);
        match tokio::time::timeout_at(tokio::time::Instant::from_std(by), read).await {
            Err(_) => Err(GatewayError::GatewayTimeout("provider body not complete in time".to_owned())),
            Ok(result) => result.map(|()| body.freeze()),
        }
    }
}

/// A transport error without the URL (which may carry credentials in a query).
fn redact(err: &reqwest::Error) -> String {
    let kind = if err.is_connect() {
        "connect"
    } else if err.is_timeout() {
        "timeout"
    } else if err.is_body() || err.is_decode() {
        "body"
    } else {
        "request"
    };
    format!("{kind} error")
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

    /// A pass-through stream over a fixed body.
    fn source(body: &'static str, parser: Frames) -> EventSource {
        EventSource {
            input: StreamInput::Upstream {
                response: reqwest::Response::from(http::Response::new(body)),
                parser,
                mapper: Box::new(responses::PassThrough::new(ResponseContext::new("openai/gpt-4o", &Map::new()))),
            },
            pending: std::collections::VecDeque::new(),
            idle: Duration::from_secs(5),
            deadline: tokio::time::Instant::now() + Duration::from_secs(5),
            ended: false,
            fault: None,
            check: check_event,
        }
    }

    #[tokio::test]
    async fn hostile_events_fail_the_stream_instead_of_reaching_the_client() {
        let created = "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"r\",\"model\":\"m\"}}\n\n";
        for hostile in [
            "event: response.in_progress\ndata: {\"type\":\"response.in_progress\",\"response\":42}\n\n",
            "event: response.in_progress\ndata: {\"type\":\"response.in_progress\",\"response\":\"x\"}\n\n",
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\\n\\nevent: response.completed\"}\n\n",
            // No `type` in the data: the `event:` name is used, and checked the same way.
            "event: Response.Completed\ndata: {\"delta\":\"x\"}\n\n",
        ] {
            let body: &'static str = format!("{created}{hostile}").leak();
            let mut source = source(body, Frames::new(Framing::Sse));
            let first = source.next().await.unwrap().unwrap();
            assert_eq!(first["response"]["model"], "openai/gpt-4o");
            assert!(matches!(source.next().await, Err(StreamFault::Malformed(_))), "{hostile}");
        }
    }

    /// A Chat Completions stream over a fixed body, translated.
    fn translated(body: &'static str) -> EventSource {
        let mapper = Translated {
            decoder: chat::Chat.decoder(),
            assembler: Assembler::new(ResponseContext::new("acme/m", &Map::new())),
        };
        EventSource {
            input: StreamInput::Upstream {
                response: reqwest::Response::from(http::Response::new(body)),
                parser: Frames::new(Framing::Sse),
                mapper: Box::new(mapper),
            },
            pending: std::collections::VecDeque::new(),
            idle: Duration::from_secs(5),
            deadline: tokio::time::Instant::now() + Duration::from_secs(5),
            ended: false,
            fault: None,
            check: check_event,
        }
    }

    async fn drain(mut source: EventSource) -> Vec<Value> {
        let mut events = Vec::new();
        while let Some(event) = source.next().await.unwrap() {
            events.push(event);
        }
        events
    }

    #[tokio::test]
    async fn a_broken_translated_stream_ends_failed_with_its_output() {
        let text = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n";
        for (body, why) in [(text.to_owned(), "ended early"), (format!("{text}data: {{not json\n\n"), "malformed")] {
            let events = drain(translated(body.leak())).await;
            let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap_or_default()).collect();
            assert_eq!(kinds.first(), Some(&"response.created"), "{why}");
            assert_eq!(kinds.last(), Some(&"response.failed"), "{why}");
            let done = events.iter().find(|e| e["type"] == "response.output_item.done").unwrap();
            assert_eq!(done["item"]["status"], "incomplete", "{why}");
            let failed = events.last().unwrap();
            assert_eq!(failed["response"]["output"][0]["content"][0]["text"], "Hel", "{why}");
            assert_eq!(failed["response"]["error"]["code"], "server_error", "{why}");
        }
    }

    #[tokio::test]
    async fn an_overlong_line_fails_the_stream_as_too_large() {
        let body: &'static str = format!("data: {}\n\n", "a".repeat(100)).leak();
        let mut source = source(body, Frames::Sse(SseParser::with_max_line(64)));
        assert!(matches!(source.next().await, Err(StreamFault::TooLarge)));
    }
}
