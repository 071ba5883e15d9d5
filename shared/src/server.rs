//! The standalone front door: the app over HTTP/1.1 (hyper), with bounds on slow clients and
//! graceful shutdown that waits for in-flight requests and accounting.
//!
//! Bounds per connection (request bodies are bounded by the app itself, see
//! [`crate::app::body`]: 10 s idle, 30 s in all, then 408):
//! - a request head (request line and headers) must be complete within
//!   [`ServerLimits::header_read`] (10 s) of its first byte, and a new connection must send one
//!   within that time of being accepted; else the connection is closed;
//! - between two requests a keep-alive connection may stay idle for
//!   [`ServerLimits::keep_alive_idle`] (75 s, longer than the 60 s idle timeout of an AWS load
//!   balancer in front, so the balancer never reuses a connection the server just closed).
//!
//! hyper's `header_read_timeout` runs from the moment it starts waiting for a head, idle time
//! included; [`HeadTimer`] gives it this connection's deadline instead, from what [`Watched`]
//! saw on the socket.
//!
//! Closing is lingering: after the end of the last answer the server reads and discards what
//! the client still sends for up to [`LINGER`] (the rest of a body refused with 413). Closing a
//! socket with unread data resets it, which can destroy the answer before the client reads it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::app::{router, AppState};

/// Longest time a closing connection reads (and discards) what its client still sends.
pub const LINGER: Duration = Duration::from_secs(5);

/// Time bounds on the connections of the standalone server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Longest time from the first byte of a request head (or from accepting the connection) to
    /// its end.
    pub header_read: Duration,
    /// Longest wait for the next request on a keep-alive connection.
    pub keep_alive_idle: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits { header_read: Duration::from_secs(10), keep_alive_idle: Duration::from_secs(75) }
    }
}

/// Serves until SIGINT/SIGTERM with the default limits, then drains settlement tasks.
pub async fn serve(state: AppState, listener: TcpListener) -> io::Result<()> {
    serve_with(state, listener, ServerLimits::default()).await
}

/// Serves until SIGINT/SIGTERM, then stops accepting, lets open requests finish and drains
/// settlement tasks.
pub async fn serve_with(state: AppState, listener: TcpListener, limits: ServerLimits) -> io::Result<()> {
    let tasks = state.tasks.clone();
    let cached = state.cached.clone();
    let drainer = tokio::spawn(crate::accounting::drain_outbox(cached.clone(), Duration::from_secs(1)));
    let app = router(state);
    let connections = GracefulShutdown::new();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    pause_after_accept_error(&err).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small SSE frames must leave at once, not wait for Nagle's algorithm and delayed ACKs.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "TCP_NODELAY not set");
        }
        let activity = Arc::new(Activity::default());
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(HeadTimer { activity: activity.clone(), limits }).header_read_timeout(limits.header_read);
        let io = TokioIo::new(Watched { stream, activity, linger: None });
        let connection = connections.watch(builder.serve_connection(io, TowerToHyperService::new(app.clone())));
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection closed");
            }
        });
    }
    drop(listener);
    connections.shutdown().await;
    tasks.close();
    tasks.wait().await;
    // Cancelled, not merely asked to stop: a flush of its own in progress must end before the
    // last one (an interrupted flush keeps its records in the outbox).
    drainer.abort();
    let _ = drainer.await;
    crate::accounting::flush_outbox(&cached).await;
    if !cached.outbox.is_empty() {
        tracing::error!(pending = cached.outbox.len(), "shutting down with unwritten usage records");
    }
    Ok(())
}

/// A failed accept: one client's trouble passes at once; the listener's own (out of file
/// descriptors) gets a pause instead of a busy loop.
async fn pause_after_accept_error(err: &io::Error) {
    if matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %err, "accepting a connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// What one connection's socket did lately, as its header timer needs to know.
#[derive(Debug, Default)]
struct Activity(Mutex<Phase>);

#[derive(Debug, Default, Clone, Copy)]
struct Phase {
    /// When the first byte after the last response (or since accept) arrived.
    head_started: Option<Instant>,
    /// Whether a response has been written: waiting is then keep-alive idling.
    answered: bool,
}

impl Activity {
    fn phase(&self) -> Phase {
        self.0.lock().map(|phase| *phase).unwrap_or_default()
    }

    fn bytes_read(&self) {
        if let Ok(mut phase) = self.0.lock() {
            phase.head_started.get_or_insert_with(Instant::now);
        }
    }

    fn bytes_written(&self) {
        if let Ok(mut phase) = self.0.lock() {
            phase.head_started = None;
            phase.answered = true;
        }
    }

    /// When a wait for a request head that began at `armed` must end.
    fn head_deadline(&self, armed: Instant, limits: ServerLimits) -> Instant {
        match self.phase() {
            Phase { head_started: Some(started), .. } => started + limits.header_read,
            Phase { answered: true, .. } => armed + limits.keep_alive_idle,
            Phase { answered: false, .. } => armed + limits.header_read,
        }
    }
}

/// The socket of one connection, noting reads and writes in its [`Activity`], and closing with
/// a linger.
#[derive(Debug)]
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
    /// Set once the write side is shut: the end of the linger.
    linger: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.bytes_written();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.bytes_written();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    /// Shuts the write side (the client sees the end of the answer), then reads and discards
    /// until the client closes its side, fails, or [`LINGER`] has passed.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.linger.is_none() {
            ready!(Pin::new(&mut this.stream).poll_shutdown(cx))?;
            this.linger = Some(Box::pin(tokio::time::sleep(LINGER)));
        }
        let mut scratch = [0u8; 8192];
        // A bounded number of reads per poll: a fast sender must not hold the worker thread.
        for _ in 0..64 {
            if this.linger.as_mut().is_some_and(|linger| linger.as_mut().poll(cx).is_ready()) {
                return Poll::Ready(Ok(()));
            }
            let mut discard = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.stream).poll_read(cx, &mut discard) {
                Poll::Ready(Ok(())) if discard.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// hyper's timer for one connection. hyper uses it only for its header read timeout, which it
/// arms whenever it starts waiting for a request head; the sleeps given back end at this
/// connection's own deadline ([`Activity::head_deadline`]), not a fixed time after arming.
#[derive(Debug)]
struct HeadTimer {
    activity: Arc<Activity>,
    limits: ServerLimits,
}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, _duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.head_wait()
    }

    fn sleep_until(&self, _deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.head_wait()
    }
}

impl HeadTimer {
    fn head_wait(&self) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let armed = Instant::now();
        let deadline = self.activity.head_deadline(armed, self.limits);
        Box::pin(HeadWait {
            activity: self.activity.clone(),
            limits: self.limits,
            armed,
            sleep: Box::pin(tokio::time::sleep_until(deadline.into())),
        })
    }
}

/// A wait for a request head that moves its deadline as the connection's phase changes (hyper
/// polls it each time the socket wakes the connection, so a first byte is seen at once).
struct HeadWait {
    activity: Arc<Activity>,
    limits: ServerLimits,
    armed: Instant,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Future for HeadWait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let deadline = tokio::time::Instant::from_std(this.activity.head_deadline(this.armed, this.limits));
        if this.sleep.deadline() != deadline {
            this.sleep.as_mut().reset(deadline);
        }
        this.sleep.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for HeadWait {}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = interrupt => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_deadlines_follow_the_connection_phase() {
        let limits = ServerLimits::default();
        let activity = Activity::default();
        let armed = Instant::now();
        assert_eq!(activity.head_deadline(armed, limits), armed + limits.header_read, "a new connection");
        activity.bytes_read();
        let started = activity.phase().head_started.unwrap();
        activity.bytes_read();
        assert_eq!(activity.phase().head_started, Some(started), "the first byte counts");
        assert_eq!(activity.head_deadline(armed, limits), started + limits.header_read);
        activity.bytes_written();
        let idle = Instant::now();
        assert_eq!(activity.head_deadline(idle, limits), idle + limits.keep_alive_idle, "keep-alive idling");
        activity.bytes_read();
        let next = activity.phase().head_started.unwrap();
        assert_eq!(activity.head_deadline(idle, limits), next + limits.header_read, "the next head");
    }
}
