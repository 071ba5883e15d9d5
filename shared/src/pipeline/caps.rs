//! Spend rules: prepaid owner balances, soft caps (this instance's view of the key's spend, or
//! the shared one, whichever knows more) and hard caps (a reservation of the request's worst
//! case against the key's headroom), and the counting of a finished request's cost before its
//! answer completes.

use serde_json::Value;

use crate::accounting::Ticket;
use crate::domain::{now_unix, ApiKey, CapMode, ModelPrice};
use crate::error::GatewayError;
use crate::money::{Nanos, TokenUsage};
use crate::request::ResponsesRequest;
use crate::state::AppState;
use crate::store::Reservation;

/// Refuses paid models when the owner's prepaid balance is used up; says whether to debit it.
pub async fn check_balance(state: &AppState, key: &ApiKey, is_free: bool) -> Result<bool, GatewayError> {
    if is_free {
        return Ok(false);
    }
    match state.cached.balance_left(&key.owner).await? {
        None => Ok(false),
        Some(balance) if balance > 0 => Ok(true),
        Some(_) => Err(GatewayError::SpendLimitExceeded {
            message: "The prepaid balance of this account is exhausted; add funds to continue.".to_owned(),
        }),
    }
}

/// Enforces the spend cap: soft caps refuse once spent ≥ cap; hard caps reserve the worst case.
pub async fn reserve(
    state: &AppState,
    key: &ApiKey,
    request_id: &str,
    request: &ResponsesRequest,
    rows: &[ModelPrice],
    input_bytes: usize,
    shared_spend: Option<Nanos>,
) -> Result<Option<Nanos>, GatewayError> {
    let Some(cap) = key.spend_cap else { return Ok(None) };
    let exhausted =
        || GatewayError::SpendLimitExceeded { message: format!("This API key has reached its spend cap of ${cap}.") };
    if key.spend_cap_mode == CapMode::Soft {
        return if soft_cap_reached(cap, state.cached.spent(key).await, shared_spend) {
            Err(exhausted())
        } else {
            Ok(None)
        };
    }
    let default_output = key.default_params.get("max_output_tokens").and_then(Value::as_u64);
    // Chat Completions' `n` asks for several answers, each bounded by the output limit.
    let choices = request.body.get("n").and_then(Value::as_u64).unwrap_or(1).max(1);
    let output = request.max_output_tokens.or(default_output);
    let amount = worst_case_of(rows, output, input_bytes, choices);
    if amount == Nanos::ZERO {
        return Ok(None);
    }
    let reservation = Reservation {
        id: request_id.to_owned(),
        amount,
        expires_at: now_unix() + i64::try_from(state.config.reservation_ttl.as_secs()).unwrap_or(900),
    };
    let stores = &state.cached.stores;
    if stores.keys.reserve(&key.key_hash, &reservation).await? {
        return Ok(Some(amount));
    }
    if stores.keys.release_expired(&key.key_hash, now_unix()).await? > 0
        && stores.keys.reserve(&key.key_hash, &reservation).await?
    {
        return Ok(Some(amount));
    }
    Err(GatewayError::SpendLimitExceeded {
        message: format!(
            "This API key's hard spend cap of ${cap} leaves too little for this request's worst case (${amount}); lower max_output_tokens or raise the cap."
        ),
    })
}

/// Counts a finished request's cost in this instance's spend view before its answer completes
/// (so the key's next request sees it), and in the key's shared spend when it has one.
pub fn hold_spend(state: &AppState, ticket: &Ticket, usage: &TokenUsage) {
    let cost = crate::accounting::hold(&state.cached, ticket, usage);
    if ticket.share_spend && cost > Nanos::ZERO {
        let limiter = state.limiter.clone();
        let key_id = ticket.key_id.clone();
        state.tasks.spawn(async move { limiter.add_spend(&key_id, cost).await });
    }
}

/// Whether a soft cap is reached: by this instance's view of the key's spend (stored spend and
/// costs not yet written) or by every instance's, whichever knows more.
pub fn soft_cap_reached(cap: Nanos, spent_here: Nanos, shared: Option<Nanos>) -> bool {
    spent_here.max(shared.unwrap_or(Nanos::ZERO)) >= cap
}

/// The most a request can cost on any of `rows` (failover may pick any): a token covers at
/// least one byte of what is sent (`input_bytes`: the body, the rendered template and the
/// rebuilt conversation), and output is bounded by `max_output_tokens`, else the row's limit,
/// else its context length, else 128 000.
pub fn worst_case(rows: &[ModelPrice], max_output_tokens: Option<u64>, input_bytes: usize) -> Nanos {
    worst_case_of(rows, max_output_tokens, input_bytes, 1)
}

/// [`worst_case`] for a request that asks for `choices` answers (Chat Completions' `n`), each
/// bounded by the output limit.
pub fn worst_case_of(rows: &[ModelPrice], max_output_tokens: Option<u64>, input_bytes: usize, choices: u64) -> Nanos {
    let input_bound = u64::try_from(input_bytes).unwrap_or(u64::MAX);
    rows.iter()
        .filter_map(|row| {
            let output_bound = max_output_tokens.or(row.max_output_tokens).or(row.context_length).unwrap_or(128_000);
            let output_bound = output_bound.saturating_mul(choices);
            row.sheet().map(|sheet| sheet.worst_case(input_bound, output_bound))
        })
        .max()
        .unwrap_or(Nanos::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::UsdPerMtok;

    fn row(input: &str, output: &str, max_output: Option<u64>) -> ModelPrice {
        ModelPrice {
            model: "a/b".into(),
            provider: "p".into(),
            upstream_model: "b".into(),
            input_usd_per_mtok: UsdPerMtok::from_usd_str(input).ok(),
            output_usd_per_mtok: UsdPerMtok::from_usd_str(output).ok(),
            cached_input_usd_per_mtok: None,
            context_length: Some(128_000),
            max_output_tokens: max_output,
            is_free: false,
            is_default: true,
            enabled: true,
            priority: None,
        }
    }

    #[test]
    fn worst_case_covers_the_dearest_row_and_every_byte_sent() {
        // 1 000 bytes at $2.50/Mtok + 10 output tokens at $10/Mtok.
        let rows = [row("2.50", "10", Some(100)), row("1", "1", None)];
        assert_eq!(worst_case(&rows, Some(10), 1_000), Nanos(1_000 * 2_500 + 10 * 10_000));
        // Without a request limit, the row's own bounds the output.
        assert_eq!(worst_case(&rows[..1], None, 0), Nanos(100 * 10_000));
        // Then the context length.
        assert_eq!(worst_case(&rows[1..], None, 0), Nanos(128_000 * 1_000));
        assert_eq!(worst_case(&[], Some(1), 1), Nanos::ZERO);
        // Several answers (`n`): each may use the whole output limit.
        assert_eq!(worst_case_of(&rows, Some(10), 1_000, 3), Nanos(1_000 * 2_500 + 3 * 10 * 10_000));
    }

    #[test]
    fn soft_caps_use_whichever_view_knows_more() {
        let cap = Nanos(100);
        assert!(!soft_cap_reached(cap, Nanos(99), None));
        assert!(soft_cap_reached(cap, Nanos(100), None));
        assert!(soft_cap_reached(cap, Nanos(10), Some(Nanos(150))), "another instance spent it");
        assert!(soft_cap_reached(cap, Nanos(150), Some(Nanos(10))), "the shared view lags");
    }
}
