//! The stream pump both SSE writers share: `super::stream` (Responses events) and
//! `super::chat_stream` (Chat Completions chunks) each keep their own wire format ([`Wire`]) and
//! their own reading of the provider's events, on top of the same mechanics.
//!
//! A started stream is read by a pump in its own task and forwarded frame by frame as it
//! arrives. A client that leaves (or stops reading for the idle timeout) no longer gets frames,
//! but the provider is still read, for at most the drain timeout, to learn the real usage. The
//! stream's cost counts in the spend view once, before its last frame. Should the pump die (a
//! panic), the task watching it ends the client's stream with the format's failure frames
//! (unless its last frame already went out) and settles with the usage known so far, so no
//! hard-cap reservation is left held.

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderName, HeaderValue};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::{AppState, SettleMode};
use crate::accounting::{settle, Ticket};
use crate::domain::UsageStatus;
use crate::money::TokenUsage;
use crate::providers::EventSource;

/// Frames buffered toward a slow client before the gateway stops reading the provider.
const STREAM_BUFFER_FRAMES: usize = 64;

static X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// A wire format's own record of what the client was sent.
pub(super) trait Wire: Default + Send + 'static {
    /// The stream's name in logs.
    const LABEL: &'static str;
    /// The `code` a stream ends with when the provider broke it or ended it early.
    const UPSTREAM_CODE: &'static str;
    /// The `code` a stream ends with when its pump died.
    const DIED_CODE: &'static str;

    /// The usage known so far.
    fn usage(&self) -> TokenUsage;

    /// The frames that end a broken stream.
    fn failure(&mut self, code: &str, message: &str) -> Vec<Bytes>;
}

/// How a stream ended, for settlement.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct StreamEnd {
    pub(super) usage: TokenUsage,
    pub(super) status: UsageStatus,
}

/// What the client has been sent so far, shared by the pump and the task watching it.
#[derive(Debug, Default)]
pub(super) struct Progress<W> {
    pub(super) wire: W,
    /// How the stream ended, once its last frame was sent (or would have been, had the client
    /// stayed).
    pub(super) terminal: Option<UsageStatus>,
    pub(super) client_gone: bool,
}

impl<W: Wire> Progress<W> {
    /// The end of a stream that stopped on `status`.
    pub(super) fn end(&self, status: UsageStatus) -> StreamEnd {
        let status = if self.client_gone { UsageStatus::ClientDisconnected } else { status };
        StreamEnd { usage: self.wire.usage(), status }
    }
}

/// Counts the stream's cost in the spend view, once, before its last frame is sent.
type OnEnd = Box<dyn FnOnce(&TokenUsage) + Send>;

/// The client's side of a stream: where frames go, and what it was sent.
pub(super) struct Client<W> {
    sender: mpsc::Sender<Bytes>,
    progress: Arc<Mutex<Progress<W>>>,
    idle: Duration,
}

impl<W> Clone for Client<W> {
    fn clone(&self) -> Self {
        Client { sender: self.sender.clone(), progress: self.progress.clone(), idle: self.idle }
    }
}

impl<W: Wire> Client<W> {
    /// A client sent frames through `sender`, each waited on for at most `idle`.
    pub(super) fn new(sender: mpsc::Sender<Bytes>, idle: Duration) -> Self {
        Client { sender, progress: Arc::default(), idle }
    }

    /// The progress, even if a panicking pump held the lock (it is plain data, always consistent).
    pub(super) fn lock(&self) -> MutexGuard<'_, Progress<W>> {
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends the frame `frame` makes from the format's record, unless the client left; a closed
    /// channel or a client that stops reading for the idle timeout marks the client gone.
    pub(super) async fn deliver(&self, frame: impl FnOnce(&mut W) -> Bytes) {
        let frame = {
            let mut progress = self.lock();
            if progress.client_gone {
                return;
            }
            frame(&mut progress.wire)
        };
        match tokio::time::timeout(self.idle, self.sender.send(frame)).await {
            Ok(Ok(())) => {}
            _ => self.lock().client_gone = true,
        }
    }

    /// The stream is over on `status`, its last frame sent.
    pub(super) fn finish(&self, status: UsageStatus) -> StreamEnd {
        let mut progress = self.lock();
        progress.terminal = Some(status);
        progress.end(status)
    }

    /// Ends the stream with the format's failure frames.
    pub(super) async fn fail(&self, code: &str, message: &str) -> StreamEnd {
        let frames = self.lock().wire.failure(code, message);
        for frame in frames {
            self.deliver(|_| frame).await;
        }
        self.finish(UsageStatus::Failed)
    }
}

/// The pump's side of a stream: the provider's events, the client, the drain bound and the
/// spend count.
pub(super) struct Pump<W> {
    source: EventSource,
    pub(super) client: Client<W>,
    drain: Duration,
    drain_deadline: Option<tokio::time::Instant>,
    on_end: Option<OnEnd>,
}

impl<W: Wire> Pump<W> {
    /// The provider's next event (`None`: its stream is over). A stream that broke is ended here
    /// with the failure frames, and one read past the drain time of a client that left is
    /// over: both are the `Err` of how the stream ended.
    pub(super) async fn next(&mut self) -> Result<Option<Value>, StreamEnd> {
        let next = match self.drain_deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, self.source.next()).await {
                Ok(next) => next,
                Err(_) => return Err(self.client.lock().end(UsageStatus::ClientDisconnected)),
            },
            None => self.source.next().await,
        };
        match next {
            Ok(event) => Ok(event),
            Err(fault) => {
                tracing::warn!(error = %fault, "provider stream failed");
                Err(self.fail(W::UPSTREAM_CODE, &fault.to_string()).await)
            }
        }
    }

    /// Counts the stream's cost in the spend view, the first time only.
    pub(super) fn count_spend(&mut self) {
        if let Some(count) = self.on_end.take() {
            let usage = self.client.lock().wire.usage();
            count(&usage);
        }
    }

    /// Sends a frame to a client still there; one that leaves now starts the drain time.
    pub(super) async fn forward(&mut self, frame: impl FnOnce(&mut W) -> Bytes) {
        if self.client.lock().client_gone {
            return;
        }
        self.client.deliver(frame).await;
        if self.client.lock().client_gone {
            self.drain_deadline = Some(tokio::time::Instant::now() + self.drain);
        }
    }

    /// Counts the cost and ends the stream with the failure frames.
    pub(super) async fn fail(&mut self, code: &str, message: &str) -> StreamEnd {
        self.count_spend();
        self.client.fail(code, message).await
    }
}

/// Streams `W` frames to the client while a task runs `pump` over the provider's events (in a
/// `stream` span); the task settles once the pump is done, before the body ends when the front
/// door asks for that.
pub(super) fn stream_response<W, F, Fut>(state: &AppState, source: EventSource, ticket: Ticket, pump: F) -> Response
where
    W: Wire,
    F: FnOnce(Pump<W>) -> Fut + Send + 'static,
    Fut: Future<Output = StreamEnd> + Send + 'static,
{
    let (sender, receiver) = mpsc::channel::<Bytes>(STREAM_BUFFER_FRAMES);
    let cached = state.cached.clone();
    let settle_mode = state.settle_mode;
    let timeouts = state.dispatcher.timeouts();
    let tasks = state.tasks.clone();
    let on_end: OnEnd = {
        let (state, ticket) = (state.clone(), ticket.clone());
        Box::new(move |usage: &TokenUsage| crate::pipeline::caps::hold_spend(&state, &ticket, usage))
    };
    let request_span = tracing::Span::current();
    let streaming = async move {
        let client = Client::<W>::new(sender, timeouts.stream_idle);
        let pumped =
            Pump { source, client: client.clone(), drain: timeouts.drain, drain_deadline: None, on_end: Some(on_end) };
        let pumping = tokio::spawn(pump(pumped).instrument(tracing::info_span!("stream")));
        let end = watch(pumping, &client, &ticket.request_id).await;
        let settlement = settle(cached, ticket, end.usage, end.status);
        match settle_mode {
            SettleMode::BeforeBodyEnds => {
                settlement.await;
            }
            SettleMode::Background => {
                tasks.spawn(settlement);
            }
        }
        // The body ends once the last sender is gone: after the settlement it waited for.
        drop(client);
    };
    state.tasks.spawn(streaming.instrument(request_span));
    let stream = tokio_stream::wrappers::ReceiverStream::new(receiver).map(Ok::<Bytes, Infallible>);
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(X_ACCEL_BUFFERING.clone(), HeaderValue::from_static("no"));
    response
}

/// Waits for the pump. One that died (panicked, or was cancelled) still ends the client's
/// stream with the failure frames, unless its last frame went out, and yields the usage known
/// so far for settlement.
pub(super) async fn watch<W: Wire>(pumping: JoinHandle<StreamEnd>, client: &Client<W>, request_id: &str) -> StreamEnd {
    let failure = match pumping.await {
        Ok(end) => return end,
        Err(failure) => failure,
    };
    tracing::error!(request_id, panicked = failure.is_panic(), "the {} pump died; closing the stream", W::LABEL);
    let delivered = client.lock().terminal;
    match delivered {
        Some(status) => client.lock().end(status),
        None => client.fail(W::DIED_CODE, "The gateway failed while streaming the response.").await,
    }
}
