//! Per-key RPM and RPD limits: fixed windows aligned to the UTC minute and day.
//!
//! [`RateLimiter`] is the port; [`redis::RedisLimiter`] is the production adapter (one script,
//! one round trip, time from Redis) and [`memory::MemoryLimiter`] the embedded one. Both check
//! both windows and count a request in both only when both allow it.
//!
//! [`redis::RedisBreakerBoard`], routing's [`crate::routing::BreakerBoard`] over Redis, sits
//! beside the Redis limiter: it shares its connection, timeout and availability breaker.

use async_trait::async_trait;

use crate::money::Nanos;

pub mod memory;
pub mod redis;

/// Seconds in the minute and day windows.
pub const MINUTE: u64 = 60;
pub const DAY: u64 = 86_400;

/// Which fixed window refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Minute,
    Day,
}

impl Window {
    pub fn label(self) -> &'static str {
        match self {
            Window::Minute => "RPM",
            Window::Day => "RPD",
        }
    }
}

/// The state of one window after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowState {
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the window resets.
    pub reset_seconds: u64,
}

/// The outcome of a limit check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitDecision {
    /// The window that refused the request, if any.
    pub refused_by: Option<Window>,
    pub minute: Option<WindowState>,
    pub day: Option<WindowState>,
}

impl LimitDecision {
    /// A decision with no windows (key without limits, or limiter unavailable in open mode).
    pub const UNLIMITED: LimitDecision = LimitDecision { refused_by: None, minute: None, day: None };

    /// Builds a decision from window counts (after the increment when allowed).
    pub fn from_counts(
        refused: Option<Window>,
        rpm: Option<u64>,
        rpd: Option<u64>,
        counts: (u64, u64),
        now_unix: u64,
    ) -> Self {
        let state = |limit: u64, count: u64, length: u64| WindowState {
            limit,
            remaining: limit.saturating_sub(count),
            reset_seconds: length - (now_unix % length),
        };
        LimitDecision {
            refused_by: refused,
            minute: rpm.map(|limit| state(limit, counts.0, MINUTE)),
            day: rpd.map(|limit| state(limit, counts.1, DAY)),
        }
    }

    /// Seconds until the refusing window resets.
    pub fn retry_after(&self) -> u64 {
        let window = match self.refused_by {
            Some(Window::Minute) => self.minute,
            Some(Window::Day) => self.day,
            None => None,
        };
        window.map_or(1, |w| w.reset_seconds.max(1))
    }
}

/// Why the limiter could not decide.
#[derive(Debug, thiserror::Error)]
pub enum LimiterError {
    #[error("rate limiter timed out")]
    Timeout,
    #[error("rate limiter unavailable: {0}")]
    Unavailable(String),
    #[error("rate limiter circuit open")]
    CircuitOpen,
}

/// The limits port.
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Checks both windows of `key_id` and counts the request in both if both allow it.
    async fn check(&self, key_id: &str, rpm: Option<u64>, rpd: Option<u64>) -> Result<LimitDecision, LimiterError>;
    /// [`RateLimiter::check`], and in the same round trip the key's spend as the shared backend
    /// knows it (for soft caps across instances): `spent` is this instance's view, which raises
    /// the shared one if it is behind. Backends without a shared view answer `None`.
    async fn check_with_spend(
        &self,
        key_id: &str,
        rpm: Option<u64>,
        rpd: Option<u64>,
        _spent: Option<Nanos>,
    ) -> Result<(LimitDecision, Option<Nanos>), LimiterError> {
        if rpm.is_none() && rpd.is_none() {
            return Ok((LimitDecision::UNLIMITED, None));
        }
        Ok((self.check(key_id, rpm, rpd).await?, None))
    }
    /// Adds a request's cost to the key's shared spend.
    async fn add_spend(&self, _key_id: &str, _cost: Nanos) {}
    /// Whether the limiter's backend answers (for `/readyz`).
    async fn ping(&self) -> Result<(), LimiterError>;
}
