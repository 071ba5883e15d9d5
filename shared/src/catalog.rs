//! Model resolution: which model a request means, and which catalog row serves it.

use crate::domain::{ApiKey, ModelPrice};
use crate::error::GatewayError;

/// The catalog id of the request: the request's, else the key's default, else the template's,
/// else the gateway's.
pub fn choose_model(
    requested: Option<&str>,
    key: &ApiKey,
    template_model: Option<&str>,
    gateway_default: Option<&str>,
) -> Result<String, GatewayError> {
    requested.or(key.default_model.as_deref()).or(template_model).or(gateway_default).map(str::to_owned).ok_or_else(
        || {
            GatewayError::invalid(
                "missing_required_parameter",
                "model",
                "Missing required parameter: `model` (no default model is set for this key or gateway).",
            )
        },
    )
}

fn model_not_found(model: &str, why: &str) -> GatewayError {
    GatewayError::NotFound {
        code: "model_not_found",
        message: format!("The model `{model}` {why}."),
        param: Some("model".to_owned()),
    }
}

/// The rows that may serve `model`, in the order to try them: the default row first, then by
/// `priority`, then by price. Disabled and unpriced rows are left out.
pub fn serving_rows(model: &str, rows: &[ModelPrice]) -> Result<Vec<ModelPrice>, GatewayError> {
    if rows.is_empty() {
        return Err(model_not_found(model, "does not exist in the catalog"));
    }
    let mut enabled: Vec<ModelPrice> = rows.iter().filter(|r| r.enabled).cloned().collect();
    if enabled.is_empty() {
        return Err(model_not_found(model, "is disabled"));
    }
    enabled.retain(|r| r.sheet().is_some());
    if enabled.is_empty() {
        return Err(model_not_found(model, "has no price in the catalog"));
    }
    enabled.sort_by(|a, b| {
        let price = |r: &ModelPrice| r.input_usd_per_mtok.map_or(0, |p| p.0) + r.output_usd_per_mtok.map_or(0, |p| p.0);
        b.is_default
            .cmp(&a.is_default)
            .then(a.priority.unwrap_or(i64::MAX).cmp(&b.priority.unwrap_or(i64::MAX)))
            .then(price(a).cmp(&price(b)))
            .then(a.provider.cmp(&b.provider))
    });
    Ok(enabled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::UsdPerMtok;

    fn row(provider: &str, default: bool, price: u64) -> ModelPrice {
        ModelPrice {
            model: "a/b".into(),
            provider: provider.into(),
            upstream_model: "b".into(),
            input_usd_per_mtok: Some(UsdPerMtok(price)),
            output_usd_per_mtok: Some(UsdPerMtok(price)),
            cached_input_usd_per_mtok: None,
            context_length: None,
            max_output_tokens: None,
            is_free: false,
            is_default: default,
            enabled: true,
            priority: None,
        }
    }

    #[test]
    fn default_first_then_cheapest_and_refusals() {
        let rows = vec![row("x", false, 5), row("y", true, 9), row("z", false, 1)];
        let order: Vec<String> = serving_rows("a/b", &rows).unwrap().into_iter().map(|r| r.provider).collect();
        assert_eq!(order, ["y", "z", "x"]);
        assert_eq!(serving_rows("a/b", &[]).unwrap_err().kind(), "model_not_found");
        let mut disabled = row("x", true, 1);
        disabled.enabled = false;
        assert_eq!(serving_rows("a/b", &[disabled]).unwrap_err().kind(), "model_not_found");
        let mut unpriced = row("x", true, 1);
        unpriced.output_usd_per_mtok = None;
        assert_eq!(serving_rows("a/b", &[unpriced]).unwrap_err().kind(), "model_not_found");
    }
}
