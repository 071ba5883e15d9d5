//! The rate-limit policy: the key's windows checked in one round trip (with the key's shared
//! spend for soft caps), and what to do when the limiter cannot answer (`MESH_RATE_LIMIT_FAIL_MODE`).

use std::sync::atomic::Ordering;

use crate::config::FailMode;
use crate::error::GatewayError;
use crate::limits::LimitDecision;
use crate::state::AppState;

/// Checks the key's windows, applying the configured fail mode when the limiter cannot answer.
/// The decision (for the `x-ratelimit-*` headers) is left in `decision`, refusals included. For
/// a key with a soft spend cap, the same round trip returns the key's spend as every instance
/// sees it (`None` when the backend keeps no shared view or cannot answer).
pub async fn check_limits(
    state: &AppState,
    key: &crate::domain::ApiKey,
    decision: &mut Option<LimitDecision>,
) -> Result<Option<crate::money::Nanos>, GatewayError> {
    let shared_spend = key.spend_cap.is_some() && key.spend_cap_mode == crate::domain::CapMode::Soft;
    if !key.is_rate_limited() && !shared_spend {
        return Ok(None);
    }
    let spent = if shared_spend { Some(state.cached.spent(key).await) } else { None };
    match state.limiter.check_with_spend(&key.id, key.rpm, key.rpd, spent).await {
        Ok((checked, shared)) => {
            if !key.is_rate_limited() {
                return Ok(shared);
            }
            *decision = Some(checked);
            crate::metrics::limiter(if checked.refused_by.is_some() { "refused" } else { "allowed" });
            match checked.refused_by {
                Some(window) => {
                    let limit = if window == crate::limits::Window::Minute { key.rpm } else { key.rpd };
                    Err(GatewayError::RateLimited {
                        window,
                        limit: limit.unwrap_or(0),
                        retry_after_seconds: checked.retry_after(),
                    })
                }
                None => Ok(shared),
            }
        }
        // Without limits, only the shared spend view is missing: this instance's is used.
        Err(err) if !key.is_rate_limited() => {
            tracing::warn!(key_id = %key.id, error = %err, "shared spend unavailable; using this instance's view");
            Ok(None)
        }
        Err(err) => match state.config.rate_limit_fail_mode {
            FailMode::Open => {
                let total = state.counters.limiter_fail_open.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(key_id = %key.id, error = %err, limiter_fail_open_total = total, "rate limiter unavailable; serving (fail open)");
                crate::metrics::limiter("fail_open");
                Ok(None)
            }
            FailMode::Closed => {
                crate::metrics::limiter("fail_closed");
                Err(GatewayError::StoreUnavailable(format!("rate limiter: {err}")))
            }
        },
    }
}
