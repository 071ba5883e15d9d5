//! The gateway's records: API keys, catalog rows, usage records and balances.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::money::{Nanos, PriceSheet, TokenUsage, UsdPerMtok};

/// Whether a key may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    #[default]
    Active,
    Suspended,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Suspended => "suspended",
        }
    }
}

/// How a key's spend cap is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CapMode {
    /// Refuse once spend has reached the cap; requests in flight may finish past it.
    #[default]
    Soft,
    /// Reserve each request's worst case before calling the provider; spend never passes the cap.
    Hard,
}

impl CapMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CapMode::Soft => "soft",
            CapMode::Hard => "hard",
        }
    }
}

/// An API key as stored (the secret itself is never stored, only its SHA-256).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub key_hash: String,
    pub name: String,
    pub owner: String,
    #[serde(default)]
    pub status: KeyStatus,
    #[serde(default)]
    pub rpm: Option<u64>,
    #[serde(default)]
    pub rpd: Option<u64>,
    #[serde(default)]
    pub spend_cap: Option<Nanos>,
    #[serde(default)]
    pub spend_cap_mode: CapMode,
    /// Spend so far (settled requests).
    #[serde(default)]
    pub spent: Nanos,
    /// Hard-cap reservations not yet settled.
    #[serde(default)]
    pub reserved: Nanos,
    #[serde(default)]
    pub default_model: Option<String>,
    #[serde(default)]
    pub default_params: Map<String, Value>,
    /// Catalog ids this key may use; empty means all.
    #[serde(default)]
    pub allowed_models: Vec<String>,
    /// Unix seconds after which the key no longer works.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Unix seconds.
    pub created_at: i64,
}

impl ApiKey {
    pub fn is_rate_limited(&self) -> bool {
        self.rpm.is_some() || self.rpd.is_some()
    }

    pub fn allows_model(&self, model: &str) -> bool {
        self.allowed_models.is_empty() || self.allowed_models.iter().any(|m| m == model)
    }

    /// What is left under the cap, if there is one.
    pub fn remaining_cap(&self) -> Option<Nanos> {
        self.spend_cap.map(|cap| cap.saturating_sub(self.spent).saturating_sub(self.reserved))
    }
}

/// A change to a key; `None` leaves a field as it is, `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyUpdate {
    pub name: Option<String>,
    /// A new owner (moves the key, and what it does from now on, to another account).
    pub owner: Option<String>,
    pub status: Option<KeyStatus>,
    pub rpm: Option<Option<u64>>,
    pub rpd: Option<Option<u64>>,
    pub spend_cap: Option<Option<Nanos>>,
    pub spend_cap_mode: Option<CapMode>,
    pub default_model: Option<Option<String>>,
    pub default_params: Option<Map<String, Value>>,
    pub allowed_models: Option<Vec<String>>,
    pub expires_at: Option<Option<i64>>,
}

impl KeyUpdate {
    pub fn apply(&self, key: &mut ApiKey) {
        if let Some(v) = &self.name {
            key.name.clone_from(v);
        }
        if let Some(v) = &self.owner {
            key.owner.clone_from(v);
        }
        if let Some(v) = self.status {
            key.status = v;
        }
        if let Some(v) = self.rpm {
            key.rpm = v;
        }
        if let Some(v) = self.rpd {
            key.rpd = v;
        }
        if let Some(v) = self.spend_cap {
            key.spend_cap = v;
        }
        if let Some(v) = self.spend_cap_mode {
            key.spend_cap_mode = v;
        }
        if let Some(v) = &self.default_model {
            key.default_model.clone_from(v);
        }
        if let Some(v) = &self.default_params {
            key.default_params.clone_from(v);
        }
        if let Some(v) = &self.allowed_models {
            key.allowed_models.clone_from(v);
        }
        if let Some(v) = self.expires_at {
            key.expires_at = v;
        }
    }
}

/// One row of `model_prices`: a model served by one provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelPrice {
    /// Catalog id, `<brand>/<model>`.
    pub model: String,
    pub provider: String,
    /// The provider's own id of the model.
    pub upstream_model: String,
    #[serde(default)]
    pub input_usd_per_mtok: Option<UsdPerMtok>,
    #[serde(default)]
    pub output_usd_per_mtok: Option<UsdPerMtok>,
    #[serde(default)]
    pub cached_input_usd_per_mtok: Option<UsdPerMtok>,
    #[serde(default)]
    pub context_length: Option<u64>,
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
    #[serde(default)]
    pub is_free: bool,
    #[serde(default)]
    pub is_default: bool,
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Failover order among a model's rows (lower first); absent rows follow by price.
    #[serde(default)]
    pub priority: Option<i64>,
}

fn default_true() -> bool {
    true
}

impl ModelPrice {
    /// The prices to bill with, or `None` when the row is neither free nor priced.
    pub fn sheet(&self) -> Option<PriceSheet> {
        if self.is_free {
            return Some(PriceSheet { input: UsdPerMtok(0), output: UsdPerMtok(0), cached_input: None, is_free: true });
        }
        Some(PriceSheet {
            input: self.input_usd_per_mtok?,
            output: self.output_usd_per_mtok?,
            cached_input: self.cached_input_usd_per_mtok,
            is_free: false,
        })
    }
}

/// How a request ended, for its usage record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageStatus {
    Success,
    Incomplete,
    Failed,
    Error,
    ClientDisconnected,
}

impl UsageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageStatus::Success => "success",
            UsageStatus::Incomplete => "incomplete",
            UsageStatus::Failed => "failed",
            UsageStatus::Error => "error",
            UsageStatus::ClientDisconnected => "client_disconnected",
        }
    }
}

/// One request's usage: what was used and what it cost (never prompt or completion text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub request_id: String,
    pub key_id: String,
    pub owner: String,
    pub model: String,
    pub provider: String,
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub template_id: Option<String>,
    #[serde(flatten)]
    pub tokens: TokenUsage,
    pub cost: Nanos,
    pub status: UsageStatus,
    pub latency_ms: u64,
    /// Unix milliseconds.
    pub created_at_ms: i64,
}

/// What settling one request does to balances, besides writing its usage record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub key_hash: String,
    pub cost: Nanos,
    /// A hard-cap reservation this settlement releases (its id and amount).
    pub release: Option<(String, Nanos)>,
    /// Deduct the cost from the owner's prepaid balance.
    pub debit_owner_balance: bool,
}

/// Filter for usage reports.
#[derive(Debug, Clone, Default)]
pub struct UsageFilter {
    pub key_id: Option<String>,
    pub owner: Option<String>,
    pub session_id: Option<String>,
    pub since_ms: Option<i64>,
}

impl UsageFilter {
    pub fn matches(&self, record: &UsageRecord) -> bool {
        self.key_id.as_ref().is_none_or(|k| *k == record.key_id)
            && self.owner.as_ref().is_none_or(|o| *o == record.owner)
            && self.session_id.as_ref().is_none_or(|s| record.session_id.as_ref() == Some(s))
            && self.since_ms.is_none_or(|t| record.created_at_ms >= t)
    }
}

/// Unix seconds now.
pub fn now_unix() -> i64 {
    now_unix_ms() / 1000
}

/// Unix milliseconds now.
pub fn now_unix_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// Owner value of global templates (readable by every owner, writable by operators only).
pub const GLOBAL_OWNER: &str = "~global";

/// Owners starting with this are reserved for the gateway itself ([`GLOBAL_OWNER`]).
pub const RESERVED_OWNER_PREFIX: char = '~';

/// Longest owner name, in bytes.
pub const MAX_OWNER_LEN: usize = 128;

/// Checks an owner name that an operator or a stored key brings: 1 to [`MAX_OWNER_LEN`] bytes,
/// no control characters, no surrounding whitespace, and not reserved (nothing starting with
/// `~`: such owners, like [`GLOBAL_OWNER`], would reach every tenant's global templates).
/// The error says what is wrong, for the operator.
pub fn check_owner(owner: &str) -> Result<(), String> {
    if owner.is_empty() {
        return Err("the owner must not be empty".to_owned());
    }
    if owner.len() > MAX_OWNER_LEN {
        return Err(format!("the owner must be at most {MAX_OWNER_LEN} bytes, got {}", owner.len()));
    }
    if owner.starts_with(RESERVED_OWNER_PREFIX) {
        return Err(format!(
            "the owner `{owner}` is reserved: owners starting with `{RESERVED_OWNER_PREFIX}` belong to the gateway (`{GLOBAL_OWNER}` holds the global templates)"
        ));
    }
    if owner.chars().any(char::is_control) {
        return Err("the owner must not contain control characters".to_owned());
    }
    if owner.trim() != owner {
        return Err(format!("the owner `{owner}` must not start or end with whitespace"));
    }
    Ok(())
}

/// A prompt template (DESIGN §5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    pub id: String,
    pub name: String,
    /// The owning account, or [`GLOBAL_OWNER`].
    pub owner: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub system: Option<String>,
    /// Messages (`{role, content}`) placed before the request's input.
    #[serde(default)]
    pub messages: Vec<Value>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub params: Map<String, Value>,
    /// Informational list of the variables the template uses.
    #[serde(default)]
    pub variables: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Template {
    pub fn is_global(&self) -> bool {
        self.owner == GLOBAL_OWNER
    }
}

/// A stored response: what a turn sent and what it answered, for `previous_response_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub id: String,
    pub owner: String,
    /// The response this one continued, if any.
    #[serde(default)]
    pub previous_response_id: Option<String>,
    /// The turn's own input items (after template rendering), each with an `id`.
    pub input_items: Vec<Value>,
    /// The full Responses object returned to the client.
    pub response: Value,
    pub model: String,
    pub provider: String,
    pub created_at: i64,
    /// Unix seconds after which the response is gone.
    pub expires_at: i64,
}

impl StoredResponse {
    pub fn output_items(&self) -> Vec<Value> {
        self.response.get("output").and_then(Value::as_array).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_and_malformed_owners_are_refused() {
        for good in ["team-a", "acme corp", "key_01J0000000000000000000000", "Ünïcode", &"o".repeat(MAX_OWNER_LEN)] {
            assert_eq!(check_owner(good), Ok(()), "{good}");
        }
        for bad in [
            GLOBAL_OWNER,
            "~",
            "~team",
            "",
            " team",
            "team ",
            "a\u{0}b",
            "a\nb",
            "a\u{7f}",
            &"o".repeat(MAX_OWNER_LEN + 1),
        ] {
            assert!(check_owner(bad).is_err(), "{bad:?}");
        }
        assert!(check_owner(GLOBAL_OWNER).unwrap_err().contains("reserved"));
    }
}
