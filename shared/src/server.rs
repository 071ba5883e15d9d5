//! The standalone front door: the app over plain HTTP, with graceful shutdown that waits for
//! in-flight accounting.

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::app::{router, AppState};

/// Serves until SIGINT/SIGTERM, then drains settlement tasks.
pub async fn serve(state: AppState, listener: TcpListener) -> std::io::Result<()> {
    let tasks = state.tasks.clone();
    let cached = state.cached.clone();
    let drainer = tokio::spawn(crate::accounting::drain_outbox(cached.clone(), std::time::Duration::from_secs(1)));
    // Small SSE frames must leave at once, not wait for Nagle's algorithm and delayed ACKs.
    let listener = listener.tap_io(|stream| {
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "TCP_NODELAY not set");
        }
    });
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown_signal()).await?;
    tasks.close();
    tasks.wait().await;
    // Cancelled, not merely asked to stop: a flush of its own in progress must end before the
    // last one (an interrupted flush keeps its records in the outbox).
    drainer.abort();
    let _ = drainer.await;
    cached.outbox.flush(&cached).await;
    if !cached.outbox.is_empty() {
        tracing::error!(pending = cached.outbox.len(), "shutting down with unwritten usage records");
    }
    Ok(())
}

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
