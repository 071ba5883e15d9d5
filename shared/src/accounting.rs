//! Settlement: price a request's usage exactly, write its usage record and charge the key (and
//! the owner's balance) in one atomic, idempotent store write.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::domain::{now_unix_ms, Charge, UsageRecord, UsageStatus};
use crate::money::{Nanos, PriceSheet, TokenUsage};
use crate::spend::Held;
use crate::store::cache::Cached;

/// Everything settlement needs to know about a request, fixed before the provider is called.
#[derive(Debug, Clone)]
pub struct Ticket {
    /// The gateway's own id (`req_<ULID>`): the usage record's key.
    pub request_id: String,
    /// The caller's `x-request-id`, logged beside ours.
    pub client_request_id: Option<String>,
    pub key_id: String,
    pub key_hash: String,
    pub owner: String,
    pub model: String,
    pub provider: String,
    pub session_id: Option<String>,
    pub template_id: Option<String>,
    pub sheet: PriceSheet,
    /// Hard-cap reservation held for this request.
    pub reservation: Option<Nanos>,
    pub debit_owner_balance: bool,
    /// The key's spend is also kept in the limiter's shared view (soft caps across instances).
    pub share_spend: bool,
    pub started: Instant,
}

impl Ticket {
    /// The usage record and charge for an outcome.
    pub fn bill(&self, usage: &TokenUsage, status: UsageStatus) -> (UsageRecord, Charge) {
        let cost = self.sheet.cost(usage);
        let record = UsageRecord {
            request_id: self.request_id.clone(),
            key_id: self.key_id.clone(),
            owner: self.owner.clone(),
            model: self.model.clone(),
            provider: self.provider.clone(),
            session_id: self.session_id.clone(),
            template_id: self.template_id.clone(),
            tokens: *usage,
            cost,
            status,
            latency_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            created_at_ms: now_unix_ms(),
        };
        let charge = Charge {
            key_hash: self.key_hash.clone(),
            cost,
            release: self.reservation.map(|amount| (self.request_id.clone(), amount)),
            debit_owner_balance: self.debit_owner_balance && cost > Nanos::ZERO,
        };
        (record, charge)
    }
}

/// Tries to write every settlement in the outbox once; returns how many were written (0 when
/// another flush is already in progress).
pub async fn flush_outbox(cached: &Cached) -> usize {
    let Some(flush) = cached.outbox.begin_flush() else { return 0 };
    let mut written = 0;
    for (record, charge) in &flush.batch {
        let began = Instant::now();
        if cached.stores.usage.record_usage(record, charge).await.is_ok() {
            cached.confirm_spend(&record.request_id, began, Instant::now());
            cached.outbox.written(&record.request_id);
            written += 1;
            tracing::info!(request_id = %record.request_id, "buffered usage record written");
        }
    }
    written
}

fn held(charge: &Charge, owner: &str) -> Held {
    Held {
        key_hash: charge.key_hash.clone(),
        owner: owner.to_owned(),
        cost: charge.cost,
        debit: charge.debit_owner_balance,
    }
}

/// Counts the cost of `usage` in this instance's spend view at once (before the answer's last
/// byte), so the key's next request sees it although settlement runs later. Returns the cost.
pub fn hold(cached: &Cached, ticket: &Ticket, usage: &TokenUsage) -> Nanos {
    let cost = ticket.sheet.cost(usage);
    let charge = Charge {
        key_hash: ticket.key_hash.clone(),
        cost,
        release: None,
        debit_owner_balance: ticket.debit_owner_balance && cost > Nanos::ZERO,
    };
    cached.hold_spend(&ticket.request_id, held(&charge, &ticket.owner));
    cost
}

/// Writes the usage record and charge, retrying transient store failures briefly; what still
/// fails goes to the outbox, which keeps retrying. Returns the record once written.
///
/// The settlement counts in the backlog from this call (not from its first poll) until it
/// ends, so settlements spawned faster than they run refuse admissions once the backlog is full.
pub fn settle(
    cached: Arc<Cached>,
    ticket: Ticket,
    usage: TokenUsage,
    status: UsageStatus,
) -> impl std::future::Future<Output = Option<UsageRecord>> + Send + 'static {
    let running = cached.backlog.track();
    let span = tracing::info_span!(
        "settle",
        request_id = %ticket.request_id,
        key_id = %ticket.key_id,
        model = %ticket.model,
        provider = %ticket.provider,
    );
    async move {
        let written = write_settlement(cached, ticket, usage, status).await;
        drop(running);
        written
    }
    .instrument(span)
}

async fn write_settlement(
    cached: Arc<Cached>,
    ticket: Ticket,
    usage: TokenUsage,
    status: UsageStatus,
) -> Option<UsageRecord> {
    let (record, charge) = ticket.bill(&usage, status);
    let ticket_client = ticket.client_request_id;
    // Counted in this instance's view until written (usually already, when the answer ended).
    cached.hold_spend(&record.request_id, held(&charge, &record.owner));
    // Earlier failures first, while the store answers (this is also how a Lambda instance
    // drains its outbox: on its next invocation).
    if !cached.outbox.is_empty() {
        flush_outbox(&cached).await;
    }
    let mut delay = Duration::from_millis(25);
    for attempt in 1..=3 {
        let began = Instant::now();
        match cached.stores.usage.record_usage(&record, &charge).await {
            Ok(_) => {
                cached.confirm_spend(&record.request_id, began, Instant::now());
                crate::metrics::request(&record);
                tracing::info!(
                    request_id = %record.request_id,
                    client_request_id = ticket_client.as_deref().unwrap_or_default(),
                    key_id = %record.key_id,
                    model = %record.model,
                    provider = %record.provider,
                    status = record.status.as_str(),
                    input_tokens = record.tokens.input_tokens,
                    output_tokens = record.tokens.output_tokens,
                    cost_usd = %record.cost,
                    latency_ms = record.latency_ms,
                    "settled"
                );
                return Some(record);
            }
            Err(err) => {
                tracing::warn!(request_id = %record.request_id, attempt, error = %err, "usage write failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    // The record carries no prompt text: logged whole, it can be replayed should this instance
    // be retired before the outbox drains.
    tracing::error!(
        request_id = %record.request_id,
        record = %serde_json::to_string(&record).unwrap_or_default(),
        "usage write failed; kept in the usage outbox for retry"
    );
    crate::metrics::request(&record);
    cached.outbox.push(record, charge);
    None
}

/// Retries the outbox every `interval` (standalone server: a background task).
pub async fn drain_outbox(cached: Arc<Cached>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        if !cached.outbox.is_empty() {
            flush_outbox(&cached).await;
        }
    }
}
