//! Exact money: decimal USD prices per million tokens and integer nano-USD amounts (no floats).
//!
//! A price is held as an integer count of nano-USD per million tokens, so any published price with
//! up to nine decimal places is represented exactly. A request's cost is the exact sum of
//! `tokens × price` over its token classes, rounded up once to the next whole nano-USD.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Nano-USD in one USD.
pub const NANOS_PER_USD: u64 = 1_000_000_000;
const TOKENS_PER_MTOK: u128 = 1_000_000;

/// An exact amount of money in nano-USD (1e-9 USD). Balances and spend use this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Nanos(pub u64);

/// A price in USD per million tokens, held as nano-USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UsdPerMtok(pub u64);

/// Why a decimal amount could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a non-negative decimal USD amount with at most 9 decimal places")]
pub struct BadAmount(pub String);

/// Parses a non-negative decimal such as `"2.50"` or `"0.000000075"` into nano units, exactly.
pub fn parse_decimal_nanos(text: &str) -> Result<u64, BadAmount> {
    let bad = || BadAmount(text.to_owned());
    let trimmed = text.trim();
    let (whole, frac) = match trimmed.split_once('.') {
        Some((w, f)) => (w, f),
        None => (trimmed, ""),
    };
    if whole.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    if !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > 9 {
        return Err(bad());
    }
    let whole_value: u64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad())? };
    let mut frac_value: u64 = 0;
    for (i, b) in frac.bytes().enumerate() {
        frac_value += u64::from(b - b'0') * 10u64.pow(8 - i as u32);
    }
    whole_value.checked_mul(NANOS_PER_USD).and_then(|w| w.checked_add(frac_value)).ok_or_else(bad)
}

/// Formats nano units as the shortest exact decimal string (`2500000000` → `"2.5"`).
pub fn format_decimal_nanos(nanos: u64) -> String {
    let whole = nanos / NANOS_PER_USD;
    let frac = nanos % NANOS_PER_USD;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:09}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

impl Nanos {
    pub const ZERO: Nanos = Nanos(0);

    pub fn from_usd_str(text: &str) -> Result<Self, BadAmount> {
        parse_decimal_nanos(text).map(Nanos)
    }

    pub fn saturating_add(self, other: Nanos) -> Nanos {
        Nanos(self.0.saturating_add(other.0))
    }

    pub fn saturating_sub(self, other: Nanos) -> Nanos {
        Nanos(self.0.saturating_sub(other.0))
    }
}

impl fmt::Display for Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_decimal_nanos(self.0))
    }
}

impl UsdPerMtok {
    pub fn from_usd_str(text: &str) -> Result<Self, BadAmount> {
        parse_decimal_nanos(text).map(UsdPerMtok)
    }

    /// Price of one thousand tokens, as a decimal string (the catalog shows both units).
    pub fn per_ktok_string(self) -> String {
        // nano-USD per Mtok / 1000 = nano-USD per Ktok; keep exactness with 12 decimals.
        let pico_per_ktok = u128::from(self.0); // 1e-12 USD per Ktok
        let whole = pico_per_ktok / 1_000_000_000_000;
        let frac = pico_per_ktok % 1_000_000_000_000;
        if frac == 0 {
            return whole.to_string();
        }
        let digits = format!("{frac:012}");
        format!("{whole}.{}", digits.trim_end_matches('0'))
    }
}

impl fmt::Display for UsdPerMtok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_decimal_nanos(self.0))
    }
}

macro_rules! decimal_string_serde {
    ($ty:ident) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&format_decimal_nanos(self.0))
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let value = serde_json::Value::deserialize(d)?;
                let text = match &value {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Number(n) => n.to_string(),
                    _ => return Err(serde::de::Error::custom("expected a decimal string")),
                };
                parse_decimal_nanos(&text).map($ty).map_err(serde::de::Error::custom)
            }
        }
    };
}
decimal_string_serde!(Nanos);
decimal_string_serde!(UsdPerMtok);

/// Token counts of one request, as the Responses API reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TokenUsage {
    /// All input tokens, cached ones included.
    pub input_tokens: u64,
    /// The part of `input_tokens` served from the provider's prompt cache.
    pub cached_input_tokens: u64,
    /// The part of `input_tokens` written to the provider's prompt cache (0 when unknown).
    /// Reported only: it is priced as input, like any uncached input token.
    #[serde(default)]
    pub cache_write_tokens: u64,
    /// All output tokens, reasoning included.
    pub output_tokens: u64,
    /// The part of `output_tokens` spent on reasoning.
    pub reasoning_tokens: u64,
}

impl TokenUsage {
    /// Takes a later report's counts: each non-zero count replaces the earlier one, field by
    /// field (providers report some counts at the start of a stream and others at its end).
    pub fn merge(&mut self, newer: &TokenUsage) {
        let pick = |old: u64, new: u64| if new > 0 { new } else { old };
        self.input_tokens = pick(self.input_tokens, newer.input_tokens);
        self.cached_input_tokens = pick(self.cached_input_tokens, newer.cached_input_tokens);
        self.cache_write_tokens = pick(self.cache_write_tokens, newer.cache_write_tokens);
        self.output_tokens = pick(self.output_tokens, newer.output_tokens);
        self.reasoning_tokens = pick(self.reasoning_tokens, newer.reasoning_tokens);
    }
}

/// The prices that apply to one (model, provider) row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriceSheet {
    pub input: UsdPerMtok,
    pub output: UsdPerMtok,
    /// Cached input price; when absent, cached tokens are billed at the input price.
    pub cached_input: Option<UsdPerMtok>,
    pub is_free: bool,
}

impl PriceSheet {
    /// The exact cost of `usage`, rounded up to the next nano-USD.
    pub fn cost(&self, usage: &TokenUsage) -> Nanos {
        if self.is_free {
            return Nanos::ZERO;
        }
        let cached = usage.cached_input_tokens.min(usage.input_tokens);
        let uncached = usage.input_tokens - cached;
        let cached_price = self.cached_input.unwrap_or(self.input);
        // Units: tokens × nano-USD per Mtok = 1e-6 nano-USD. Each product fits in a u128; their
        // sum may not, and a sum past u128 is far past u64::MAX nano-USD once divided: saturate.
        let micro_nanos = [
            u128::from(uncached) * u128::from(self.input.0),
            u128::from(cached) * u128::from(cached_price.0),
            u128::from(usage.output_tokens) * u128::from(self.output.0),
        ]
        .into_iter()
        .try_fold(0u128, u128::checked_add);
        let nanos = micro_nanos.map_or(u128::MAX, |n| n.div_ceil(TOKENS_PER_MTOK));
        Nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// The most a request can cost: `input_tokens` all at the dearer of the input and cached
    /// input prices, and `max_output_tokens` of output.
    pub fn worst_case(&self, input_tokens: u64, max_output_tokens: u64) -> Nanos {
        let dearest_input = self.cached_input.map_or(self.input, |cached| cached.max(self.input));
        let sheet = PriceSheet { input: dearest_input, cached_input: None, ..*self };
        sheet.cost(&TokenUsage { input_tokens, output_tokens: max_output_tokens, ..TokenUsage::default() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_decimals_exactly() {
        assert_eq!(parse_decimal_nanos("2.50"), Ok(2_500_000_000));
        assert_eq!(parse_decimal_nanos("0.000000075"), Ok(75));
        assert_eq!(parse_decimal_nanos("15"), Ok(15_000_000_000));
        assert_eq!(parse_decimal_nanos(".5"), Ok(500_000_000));
        assert!(parse_decimal_nanos("0.0000000001").is_err());
        assert!(parse_decimal_nanos("-1").is_err());
        assert!(parse_decimal_nanos("1e3").is_err());
        assert!(parse_decimal_nanos("").is_err());
        assert_eq!(format_decimal_nanos(93_750), "0.00009375");
        assert_eq!(format_decimal_nanos(2_500_000_000), "2.5");
        assert_eq!(format_decimal_nanos(0), "0");
    }

    #[test]
    fn cost_is_exact_and_rounds_up_once() {
        // gpt-4o: $2.50 in, $1.25 cached, $10 out per Mtok.
        let sheet = PriceSheet {
            input: UsdPerMtok::from_usd_str("2.50").unwrap(),
            output: UsdPerMtok::from_usd_str("10").unwrap(),
            cached_input: Some(UsdPerMtok::from_usd_str("1.25").unwrap()),
            is_free: false,
        };
        let usage = TokenUsage {
            input_tokens: 1000,
            cached_input_tokens: 200,
            output_tokens: 500,
            reasoning_tokens: 100,
            ..TokenUsage::default()
        };
        // 800 × 2.5 + 200 × 1.25 + 500 × 10 = 2000 + 250 + 5000 = 7250 µUSD... per Mtok → 0.00725 USD
        assert_eq!(sheet.cost(&usage), Nanos(7_250_000));
        // Cache writes are part of the input and priced as input: reporting them costs nothing more.
        assert_eq!(sheet.cost(&TokenUsage { cache_write_tokens: 300, ..usage }), Nanos(7_250_000));
        // One cached token of a cheap model: 0.0075 USD/Mtok → 7.5 nano-USD → rounds up to 8.
        let cheap = PriceSheet {
            input: UsdPerMtok::from_usd_str("0.075").unwrap(),
            output: UsdPerMtok::from_usd_str("0.3").unwrap(),
            cached_input: Some(UsdPerMtok::from_usd_str("0.0075").unwrap()),
            is_free: false,
        };
        let one_cached = TokenUsage { input_tokens: 1, cached_input_tokens: 1, ..TokenUsage::default() };
        assert_eq!(cheap.cost(&one_cached), Nanos(8));
        let free = PriceSheet { is_free: true, ..cheap };
        assert_eq!(free.cost(&usage), Nanos::ZERO);
    }

    #[test]
    fn largest_counts_at_largest_prices_saturate() {
        let max = UsdPerMtok(u64::MAX);
        let sheet = PriceSheet { input: max, output: max, cached_input: Some(max), is_free: false };
        let usage = TokenUsage {
            input_tokens: u64::MAX,
            cached_input_tokens: 1,
            output_tokens: u64::MAX,
            reasoning_tokens: u64::MAX,
            cache_write_tokens: u64::MAX,
        };
        assert_eq!(sheet.cost(&usage), Nanos(u64::MAX));
        assert_eq!(sheet.worst_case(u64::MAX, u64::MAX), Nanos(u64::MAX));
    }

    #[test]
    fn worst_case_covers_cached_input_dearer_than_input() {
        // Found by the money_cost fuzz target: a cached price above the input price made the
        // reservation smaller than the request's cost.
        let sheet = PriceSheet {
            input: UsdPerMtok(0),
            output: UsdPerMtok(52_000_000),
            cached_input: Some(UsdPerMtok(48_000_000)),
            is_free: false,
        };
        let usage = TokenUsage { input_tokens: 24, cached_input_tokens: 53, ..TokenUsage::default() };
        assert_eq!(sheet.cost(&usage), Nanos(1152));
        assert!(sheet.worst_case(24, 0) >= sheet.cost(&usage));
    }

    #[test]
    fn usage_recorded_before_cache_writes_were_counted_still_reads() {
        let old: TokenUsage = serde_json::from_str(
            r#"{"input_tokens": 5, "cached_input_tokens": 1, "output_tokens": 2, "reasoning_tokens": 0}"#,
        )
        .unwrap();
        assert_eq!(
            old,
            TokenUsage { input_tokens: 5, cached_input_tokens: 1, output_tokens: 2, ..TokenUsage::default() }
        );
    }

    #[test]
    fn per_ktok_is_exact() {
        assert_eq!(UsdPerMtok::from_usd_str("2.5").unwrap().per_ktok_string(), "0.0025");
        assert_eq!(UsdPerMtok::from_usd_str("0.075").unwrap().per_ktok_string(), "0.000075");
    }
}
