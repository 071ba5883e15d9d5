//! Stored responses: each answered turn (its input items and the response) is kept for the
//! owner with a TTL, so `previous_response_id` can rebuild the conversation on any provider.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use crate::conversation;
use crate::domain::{now_unix, StoredResponse};
use crate::error::GatewayError;
use crate::store::Stores;

/// Longest chain followed through `previous_response_id`.
const MAX_CHAIN: usize = 1_000;

/// What to store once a turn is answered.
#[derive(Debug, Clone)]
pub struct Archive {
    pub owner: String,
    pub previous_response_id: Option<String>,
    /// The turn's own input items (template messages and the request's input), with ids.
    pub input_items: Vec<Value>,
    pub model: String,
    pub provider: String,
    pub ttl: Duration,
}

impl Archive {
    /// Stores the final response object (one write: never visible half-written). Takes both
    /// by value: the input items and the response move into the record, never copied.
    pub async fn save(self, stores: &Stores, response: Value) {
        let Some(id) = response.get("id").and_then(Value::as_str).map(str::to_owned) else { return };
        let now = now_unix();
        let stored = StoredResponse {
            id,
            owner: self.owner,
            previous_response_id: self.previous_response_id,
            input_items: self.input_items,
            response,
            model: self.model,
            provider: self.provider,
            created_at: now,
            expires_at: now + i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2),
        };
        if let Err(err) = stores.responses.put_response(&stored).await {
            tracing::warn!(response_id = %stored.id, error = %err, "response could not be stored");
        }
    }
}

fn not_found(id: &str) -> GatewayError {
    GatewayError::NotFound {
        code: "response_not_found",
        message: format!("No response with id `{id}` was found."),
        param: Some("previous_response_id".to_owned()),
    }
}

/// A response of `owner` (another owner's, or an expired one, does not exist for the caller).
pub async fn owned(stores: &Stores, owner: &str, id: &str) -> Result<Option<StoredResponse>, GatewayError> {
    Ok(stores.responses.response(id, now_unix()).await?.filter(|r| r.owner == owner))
}

/// How long a continuation waits for a just-answered response whose store write is in flight.
const JUST_ANSWERED_WAIT: std::time::Duration = std::time::Duration::from_millis(1_500);

/// How recent a response id must be for a continuation to wait for it.
const JUST_ANSWERED_AGE: std::time::Duration = std::time::Duration::from_secs(30);

/// Longest response id accepted anywhere (Mesh's are `resp_` and 26 characters).
pub const MAX_RESPONSE_ID_LEN: usize = 64;

/// Whether `id` can name a response at all: `resp_` and a bounded run of `[A-Za-z0-9_-]`.
pub fn plausible_id(id: &str) -> bool {
    id.len() <= MAX_RESPONSE_ID_LEN
        && id.strip_prefix("resp_").is_some_and(|rest| {
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

/// Whether `id` is one this gateway minted in the last seconds (its ULID's time says so), so its
/// store write may still be in flight.
pub fn just_minted(id: &str) -> bool {
    let Some(ulid) = id.strip_prefix("resp_").and_then(|rest| ulid::Ulid::from_string(rest).ok()) else {
        return false;
    };
    let minted = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ulid.timestamp_ms());
    std::time::SystemTime::now().duration_since(minted).is_ok_and(|age| age <= JUST_ANSWERED_AGE)
}

/// The response `id` of `owner`, waiting briefly if it is not there yet: responses are stored
/// right after they are sent, so a client continuing at once may arrive first. Only ids this
/// gateway minted seconds ago are waited for; anything else is answered at once.
pub async fn owned_or_wait(stores: &Stores, owner: &str, id: &str) -> Result<Option<StoredResponse>, GatewayError> {
    if !plausible_id(id) {
        return Ok(None);
    }
    if !just_minted(id) {
        return owned(stores, owner, id).await;
    }
    // Reads back off (25, 50, 100 ... ms): at most 7 store reads for an id that never appears.
    let give_up = tokio::time::Instant::now() + JUST_ANSWERED_WAIT;
    let mut pause = std::time::Duration::from_millis(25);
    loop {
        if let Some(found) = owned(stores, owner, id).await? {
            return Ok(Some(found));
        }
        let now = tokio::time::Instant::now();
        if now >= give_up {
            return Ok(None);
        }
        tokio::time::sleep(pause.min(give_up - now)).await;
        pause *= 2;
    }
}

/// Most stored responses one request's `item_reference`s may load.
pub const MAX_REFERENCED_RESPONSES: usize = 256;

/// Replaces each `item_reference` in `items` (a request's `input`) with the stored item it names,
/// from the caller owner's stored responses; returns the provider that made each resolved item.
/// An id that is unknown, expired or another owner's is 404 `item_not_found` naming the item
/// (`input[i]`) and never reaches a provider.
pub async fn resolve_references(
    stores: &Stores,
    owner: &str,
    items: &mut [Value],
) -> Result<HashMap<String, String>, GatewayError> {
    let mut loaded: HashMap<String, Option<StoredResponse>> = HashMap::new();
    let mut origins = HashMap::new();
    for (index, item) in items.iter_mut().enumerate() {
        if !conversation::is_reference(item) {
            continue;
        }
        let id = item.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
        let missing = || item_not_found(&id, index);
        let response_id = crate::ids::response_of_item(&id).ok_or_else(missing)?;
        if !loaded.contains_key(&response_id) {
            if loaded.len() >= MAX_REFERENCED_RESPONSES {
                return Err(GatewayError::invalid(
                    "invalid_value",
                    format!("input[{index}]"),
                    format!(
                        "The input refers to items of more than {MAX_REFERENCED_RESPONSES} stored responses; \
                         send `previous_response_id` (or the items themselves) instead."
                    ),
                ));
            }
            let stored = owned_or_wait(stores, owner, &response_id).await?;
            loaded.insert(response_id.clone(), stored);
        }
        let stored = loaded.get(&response_id).and_then(Option::as_ref).ok_or_else(missing)?;
        let same_id = |candidate: &&Value| candidate.get("id").and_then(Value::as_str) == Some(id.as_str());
        let output = stored.response.get("output").and_then(Value::as_array);
        let found = stored.input_items.iter().chain(output.into_iter().flatten()).find(same_id).ok_or_else(missing)?;
        *item = found.clone();
        origins.insert(id, stored.provider.clone());
    }
    Ok(origins)
}

fn item_not_found(id: &str, index: usize) -> GatewayError {
    let message = if crate::ids::response_of_item(id).is_some() {
        format!("No item with id `{id}` was found.")
    } else {
        "No item with this id was found: `item_reference` names an item of a response stored by this gateway."
            .to_owned()
    };
    GatewayError::NotFound { code: "item_not_found", message, param: Some(format!("input[{index}]")) }
}

/// The chain ending at `id`, oldest first; unknown or foreign ids are 404 `response_not_found`.
pub async fn chain(stores: &Stores, owner: &str, id: &str) -> Result<Vec<StoredResponse>, GatewayError> {
    let Some(latest) = owned_or_wait(stores, owner, id).await? else {
        return Err(not_found(id));
    };
    let mut next = latest.previous_response_id.clone();
    let mut chain = vec![latest];
    while let Some(current) = next {
        if chain.len() >= MAX_CHAIN {
            break;
        }
        // An older turn that expired (or was deleted) starts the conversation after it.
        let Some(turn) = owned(stores, owner, &current).await? else { break };
        next = turn.previous_response_id.clone();
        chain.push(turn);
    }
    chain.reverse();
    Ok(chain)
}

/// The input items of a chain for a provider, cut from the oldest turns to fit `budget` tokens.
pub fn history_for(chain: &[StoredResponse], provider: &str, rest_tokens: u64, budget: Option<u64>) -> Vec<Value> {
    let items = conversation::history(chain, provider);
    match budget {
        Some(budget) => conversation::fit_history(items, rest_tokens, budget),
        None => items,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fresh_gateway_ids_are_waited_for() {
        let fresh = crate::ids::new_id("resp_");
        assert!(plausible_id(&fresh) && just_minted(&fresh));
        assert!(!just_minted("resp_01arz3ndektsv4rrffq69g5fav"), "minted in 2016");
        assert!(!just_minted("resp_abc"));
        assert!(!plausible_id(&format!("resp_{}", "a".repeat(10_000))));
        assert!(!plausible_id("msg_01arz3ndektsv4rrffq69g5fav"));
        assert!(!plausible_id("resp_../../x"));
        assert!(plausible_id("resp_67cb71b351908190a308f3859487620d06981a8637e6bc44"), "provider-style ids");
    }
}
