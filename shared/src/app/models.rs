//! `GET /v1/models`: the catalog in OpenAI's list shape, with Mesh's pricing fields.

use std::collections::BTreeMap;

use axum::extract::State;
use serde_json::{json, Value};

use super::{AppState, Authenticated, JsonReply};
use crate::domain::ModelPrice;
use crate::error::GatewayError;
use crate::money::UsdPerMtok;

fn price_fields(price: Option<UsdPerMtok>, name: &str, pricing: &mut serde_json::Map<String, Value>) {
    if let Some(price) = price {
        pricing.insert(format!("{name}_usd_per_mtok"), Value::String(price.to_string()));
        pricing.insert(format!("{name}_usd_per_ktok"), Value::String(price.per_ktok_string()));
    }
}

/// The catalog entry of one model (its default row, else its first enabled row).
pub fn entry(rows: &[&ModelPrice]) -> Option<Value> {
    let row = rows.iter().find(|r| r.is_default).or_else(|| rows.first())?;
    let mut pricing = serde_json::Map::new();
    price_fields(row.input_usd_per_mtok, "input", &mut pricing);
    price_fields(row.output_usd_per_mtok, "output", &mut pricing);
    price_fields(row.cached_input_usd_per_mtok, "cached_input", &mut pricing);
    let owned_by = row.model.split_once('/').map_or(row.provider.as_str(), |(brand, _)| brand);
    Some(json!({
        "id": row.model,
        "object": "model",
        "created": 0,
        "owned_by": owned_by,
        "provider": row.provider,
        "providers": rows.iter().map(|r| r.provider.as_str()).collect::<Vec<_>>(),
        "context_length": row.context_length,
        "max_output_tokens": row.max_output_tokens,
        "pricing": pricing,
        "is_free": row.is_free,
    }))
}

pub async fn list(State(state): State<AppState>, Authenticated(key): Authenticated) -> Result<JsonReply, GatewayError> {
    let rows = state.cached.stores.prices.list_prices().await?;
    let mut by_model: BTreeMap<&str, Vec<&ModelPrice>> = BTreeMap::new();
    for row in rows.iter().filter(|r| r.enabled && r.sheet().is_some()) {
        by_model.entry(row.model.as_str()).or_default().push(row);
    }
    let data: Vec<Value> = by_model
        .into_iter()
        .filter(|(model, _)| key.allows_model(model))
        .filter_map(|(_, rows)| entry(&rows))
        .collect();
    Ok(JsonReply::ok(json!({"object": "list", "data": data})))
}
