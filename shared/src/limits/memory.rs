//! In-process fixed-window limiter for the embedded mode without Redis (one process).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{LimitDecision, LimiterError, RateLimiter, Window, DAY, MINUTE};

#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    minute_start: u64,
    minute_count: u64,
    day_start: u64,
    day_count: u64,
}

/// Windows kept in process memory, aligned to the UTC minute and day of the system clock.
#[derive(Debug, Default)]
pub struct MemoryLimiter {
    counters: Mutex<HashMap<String, Counters>>,
}

impl MemoryLimiter {
    pub fn new() -> Self {
        MemoryLimiter::default()
    }

    /// The check at a given time (seconds since the epoch), for tests of window alignment.
    pub fn check_at(&self, key_id: &str, rpm: Option<u64>, rpd: Option<u64>, now: u64) -> LimitDecision {
        let Ok(mut counters) = self.counters.lock() else {
            return LimitDecision::UNLIMITED;
        };
        // Forget keys whose windows are all over, so the map cannot grow without bound.
        if counters.len() > 100_000 {
            counters.retain(|_, c| c.day_start == now - now % DAY);
        }
        let entry = counters.entry(key_id.to_owned()).or_default();
        let (minute_start, day_start) = (now - now % MINUTE, now - now % DAY);
        if entry.minute_start != minute_start {
            entry.minute_start = minute_start;
            entry.minute_count = 0;
        }
        if entry.day_start != day_start {
            entry.day_start = day_start;
            entry.day_count = 0;
        }
        let refused = if rpm.is_some_and(|l| entry.minute_count >= l) {
            Some(Window::Minute)
        } else if rpd.is_some_and(|l| entry.day_count >= l) {
            Some(Window::Day)
        } else {
            None
        };
        if refused.is_none() {
            if rpm.is_some() {
                entry.minute_count += 1;
            }
            if rpd.is_some() {
                entry.day_count += 1;
            }
        }
        LimitDecision::from_counts(refused, rpm, rpd, (entry.minute_count, entry.day_count), now)
    }
}

#[async_trait]
impl RateLimiter for MemoryLimiter {
    async fn check(&self, key_id: &str, rpm: Option<u64>, rpd: Option<u64>) -> Result<LimitDecision, LimiterError> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        Ok(self.check_at(key_id, rpm, rpd, now))
    }

    async fn ping(&self) -> Result<(), LimiterError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_align_to_the_clock_and_refusals_consume_nothing() {
        let limiter = MemoryLimiter::new();
        let t = 1_700_000_080; // 40 s into a minute
        assert!(limiter.check_at("k", Some(2), Some(3), t).refused_by.is_none());
        assert!(limiter.check_at("k", Some(2), Some(3), t + 1).refused_by.is_none());
        let refused = limiter.check_at("k", Some(2), Some(3), t + 2);
        assert_eq!(refused.refused_by, Some(Window::Minute));
        assert_eq!(refused.retry_after(), 18);
        // Next minute: the minute window resets; the day has one slot left (the refusal took none).
        let next = limiter.check_at("k", Some(2), Some(3), t + 20);
        assert!(next.refused_by.is_none());
        assert_eq!(next.day.map(|d| d.remaining), Some(0));
        let day = limiter.check_at("k", Some(2), Some(3), t + 21);
        assert_eq!(day.refused_by, Some(Window::Day));
        assert_eq!(day.minute.map(|m| m.remaining), Some(1), "a day refusal must not consume the minute");
    }
}
