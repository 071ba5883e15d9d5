//! The usage outbox: settlements whose store write failed, kept in process until written. This
//! is only the queue; settlement writes what it holds (and retries it).
//!
//! Writes are idempotent by request id, so a retried settlement never charges twice. An entry
//! leaves the outbox only once its record is written: a flush that is cut short (the drainer
//! aborted at shutdown) loses nothing, and `len` counts every record not yet written.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::domain::{Charge, UsageRecord};

/// Most settlements not yet written (running in the background, or waiting in the outbox):
/// past it an admission waits for one to finish, up to [`BACKLOG_WAIT`], then is refused with
/// 503 and `retry-after`. Memory stays bounded when the store falls behind or fails, and no
/// settlement is ever dropped.
pub const BACKLOG_LIMIT: usize = 256;

/// How long an admission waits for room in a full backlog before it is refused.
pub const BACKLOG_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Settlements running in the background, counted while they run, and the most settlements
/// not yet written that admissions allow.
#[derive(Debug)]
pub struct Backlog {
    running: AtomicUsize,
    pub limit: usize,
    /// Told whenever a settlement ends, for admissions waiting for room.
    pub finished: tokio::sync::Notify,
}

impl Default for Backlog {
    fn default() -> Self {
        Backlog::with_limit(BACKLOG_LIMIT)
    }
}

/// One background settlement, counted until dropped.
#[derive(Debug)]
pub struct Running(Arc<Backlog>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
        self.0.finished.notify_waiters();
    }
}

impl Backlog {
    /// Counts a settlement until the returned guard drops.
    pub fn track(self: &Arc<Self>) -> Running {
        self.running.fetch_add(1, Ordering::Relaxed);
        Running(self.clone())
    }

    pub fn with_limit(limit: usize) -> Self {
        Backlog { running: AtomicUsize::new(0), limit, finished: tokio::sync::Notify::new() }
    }

    pub fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }
}

/// Settlements waiting for the store to answer again.
#[derive(Debug, Default)]
pub struct Outbox {
    pending: Mutex<VecDeque<(UsageRecord, Charge)>>,
    /// Held by the one flush in progress; others skip rather than write the same records again.
    flushing: tokio::sync::Mutex<()>,
}

/// A flush in progress: the settlements pending when it began, oldest first. Another flush
/// cannot begin while it is held.
#[derive(Debug)]
pub struct Flush<'a> {
    pub batch: Vec<(UsageRecord, Charge)>,
    _flushing: tokio::sync::MutexGuard<'a, ()>,
}

impl Outbox {
    pub fn len(&self) -> usize {
        self.pending.lock().map_or(0, |p| p.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps a settlement whose write failed. Nothing is ever dropped: the outbox counts in the
    /// settlement backlog, which refuses new admissions once full.
    pub fn push(&self, record: UsageRecord, charge: Charge) {
        let Ok(mut pending) = self.pending.lock() else { return };
        pending.push_back((record, charge));
    }

    /// Begins a flush, unless another one is in progress.
    pub fn begin_flush(&self) -> Option<Flush<'_>> {
        let flushing = self.flushing.try_lock().ok()?;
        let batch = self.pending.lock().ok()?.iter().cloned().collect();
        Some(Flush { batch, _flushing: flushing })
    }

    /// Lets go of a settlement now written.
    pub fn written(&self, request_id: &str) {
        // Written in order, so it is at or near the front.
        if let Ok(mut pending) = self.pending.lock() {
            if let Some(at) = pending.iter().position(|(kept, _)| kept.request_id == request_id) {
                pending.remove(at);
            }
        }
    }
}
