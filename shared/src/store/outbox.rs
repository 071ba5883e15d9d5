//! The usage outbox: settlements whose store write failed, kept in process until written. This
//! is only the queue; settlement writes what it holds (and retries it).
//!
//! Writes are idempotent by request id, so a retried settlement never charges twice. An entry
//! leaves the outbox only once its record is written: a flush that is cut short (the drainer
//! aborted at shutdown) loses nothing, and `len` counts every record not yet written.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::domain::{Charge, UsageRecord};

/// Most settlements an outbox holds; past it the oldest are logged whole and dropped.
const OUTBOX_LIMIT: usize = 100_000;

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

    /// Keeps a settlement whose write failed.
    pub fn push(&self, record: UsageRecord, charge: Charge) {
        let Ok(mut pending) = self.pending.lock() else { return };
        if pending.len() >= OUTBOX_LIMIT {
            if let Some((lost, _)) = pending.pop_front() {
                tracing::error!(record = %serde_json::to_string(&lost).unwrap_or_default(), "usage outbox full: record dropped");
            }
        }
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
