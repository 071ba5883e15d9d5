//! CloudWatch metrics through the Embedded Metric Format: one JSON line on stdout per event,
//! which Lambda's log pipeline turns into metrics (namespace `Mesh`) with no API calls. On
//! when running in Lambda or with `MESH_METRICS=emf`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{json, Value};

use crate::domain::{now_unix_ms, UsageRecord, UsageStatus};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns emission on for this process.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

fn emit(dimensions: &[&str], metrics: &[(&str, &str)], mut fields: Value) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    fields["_aws"] = json!({
        "Timestamp": now_unix_ms(),
        "CloudWatchMetrics": [{
            "Namespace": "Mesh",
            "Dimensions": [dimensions],
            "Metrics": metrics.iter().map(|(name, unit)| json!({"Name": name, "Unit": unit})).collect::<Vec<_>>(),
        }],
    });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{fields}");
}

/// The EMF document of a settled request (exposed for tests).
pub fn request_fields(record: &UsageRecord) -> Value {
    let failed = matches!(record.status, UsageStatus::Error | UsageStatus::Failed);
    json!({
        "model": record.model,
        "provider": record.provider,
        "status": record.status.as_str(),
        "request_id": record.request_id,
        "Requests": 1,
        "Errors": u8::from(failed),
        "LatencyMs": record.latency_ms,
        "InputTokens": record.tokens.input_tokens,
        "CachedInputTokens": record.tokens.cached_input_tokens,
        "OutputTokens": record.tokens.output_tokens,
        "CostNanoUsd": record.cost.0,
    })
}

/// Requests, errors, latency, tokens and cost of one settled request, per model and provider.
pub fn request(record: &UsageRecord) {
    // Checked before the document is built: off, a request costs nothing here.
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    emit(
        &["model", "provider"],
        &[
            ("Requests", "Count"),
            ("Errors", "Count"),
            ("LatencyMs", "Milliseconds"),
            ("InputTokens", "Count"),
            ("CachedInputTokens", "Count"),
            ("OutputTokens", "Count"),
            ("CostNanoUsd", "None"),
        ],
        request_fields(record),
    );
}

/// A rate-limiter decision: `allowed`, `refused` or `fail_open` / `fail_closed`.
pub fn limiter(decision: &str) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    emit(&["decision"], &[("LimiterDecisions", "Count")], json!({"decision": decision, "LimiterDecisions": 1}));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::{Nanos, TokenUsage};

    #[test]
    fn request_document_names_dimensions_and_values() {
        let record = UsageRecord {
            request_id: "req_1".into(),
            key_id: "key_1".into(),
            owner: "o".into(),
            model: "a/b".into(),
            provider: "p".into(),
            session_id: None,
            template_id: None,
            tokens: TokenUsage { input_tokens: 3, cached_input_tokens: 1, output_tokens: 2, ..TokenUsage::default() },
            cost: Nanos(42),
            status: UsageStatus::Error,
            latency_ms: 7,
            created_at_ms: 0,
        };
        let fields = request_fields(&record);
        assert_eq!((fields["Errors"].as_u64(), fields["CostNanoUsd"].as_u64()), (Some(1), Some(42)));
        assert!(fields.get("key_id").is_none() && fields.get("owner").is_none(), "no identities in metrics");
    }
}
