//! `GET/DELETE /v1/responses/{id}` and `GET /v1/responses/{id}/input_items`: the caller
//! owner's stored responses, in OpenAI's shapes (another owner's do not exist for the caller).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Extension;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use super::{authenticate, error_response, json_response, AppState, RequestId};
use crate::archive;
use crate::conversation;
use crate::domain::StoredResponse;
use crate::error::GatewayError;
use crate::ids::{well_formed_id, RESPONSE_ID_PREFIX};

fn not_found(id: &str) -> GatewayError {
    // Only ids that could exist are echoed (a malformed one may be long or anything at all).
    let message = if well_formed_id(RESPONSE_ID_PREFIX, id) {
        format!("No response with id `{id}` was found.")
    } else {
        "No response with this id was found: response ids are `resp_` and letters, digits, `_` or `-`.".to_owned()
    };
    GatewayError::NotFound { code: "response_not_found", message, param: None }
}

async fn load(state: &AppState, headers: &HeaderMap, id: &str) -> Result<StoredResponse, GatewayError> {
    // A malformed or over-long id names nothing: answered before any store read.
    if !well_formed_id(RESPONSE_ID_PREFIX, id) {
        return Err(not_found(id));
    }
    let key = authenticate(&state.cached, headers).await?;
    archive::owned_or_wait(&state.cached.stores, &key.owner, id).await?.ok_or_else(|| not_found(id))
}

fn json_ok(value: &Value) -> Response {
    json_response(StatusCode::OK, Bytes::from(value.to_string()))
}

pub async fn show(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    match load(&state, &headers, &id).await {
        Ok(stored) => json_ok(&stored.response),
        Err(err) => error_response(&err, &request_id.0),
    }
}

pub async fn remove(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        load(&state, &headers, &id).await?;
        state.cached.stores.responses.delete_response(&id).await?;
        Ok::<_, GatewayError>(json!({"id": id, "object": "response", "deleted": true}))
    }
    .await;
    match result {
        Ok(body) => json_ok(&body),
        Err(err) => error_response(&err, &request_id.0),
    }
}

/// What `include` may ask for (OpenAI's `ResponseIncludable`). Stored items already carry what
/// Mesh keeps, so a valid value changes nothing.
const INCLUDABLE: [&str; 8] = [
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "message.input_image.image_url",
    "computer_call_output.output.image_url",
    "code_interpreter_call.outputs",
    "reasoning.encrypted_content",
    "message.output_text.logprobs",
];

/// A page of items as OpenAI lists them (`ResponseItem`s, see [`conversation::response_item`]):
/// `limit` (1-100, default 20), `order` (`asc` | `desc`, default `desc`), `after` (an item id)
/// and `include` (`include` or `include[]`, each an includable value).
fn page(items: &[Value], params: &[(String, String)]) -> Result<Value, GatewayError> {
    for (name, value) in params {
        if (name == "include" || name == "include[]") && !INCLUDABLE.contains(&value.as_str()) {
            return Err(GatewayError::invalid(
                "invalid_value",
                "include",
                format!("`include` values are {}; got an unknown one.", INCLUDABLE.join(", ")),
            ));
        }
    }
    let params: HashMap<String, String> = params.iter().cloned().collect();
    let limit = match params.get("limit") {
        None => 20,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => return Err(GatewayError::invalid("invalid_value", "limit", "`limit` must be between 1 and 100.")),
        },
    };
    let mut ordered: Vec<&Value> = items.iter().collect();
    match params.get("order").map(String::as_str) {
        None | Some("desc") => ordered.reverse(),
        Some("asc") => {}
        Some(_) => return Err(GatewayError::invalid("invalid_value", "order", "`order` must be `asc` or `desc`.")),
    }
    if let Some(after) = params.get("after") {
        let position =
            ordered.iter().position(|item| item.get("id").and_then(Value::as_str) == Some(after.as_str())).ok_or_else(
                || GatewayError::invalid("invalid_value", "after", format!("No item `{after}` in this list.")),
            )?;
        ordered.drain(..=position);
    }
    let has_more = ordered.len() > limit;
    ordered.truncate(limit);
    let id_of = |item: Option<&&Value>| item.and_then(|i| i.get("id")).cloned().unwrap_or(Value::Null);
    let data: Vec<Value> = ordered.iter().map(|item| conversation::response_item(item)).collect();
    Ok(json!({
        "object": "list",
        "data": data,
        "first_id": id_of(ordered.first()),
        "last_id": id_of(ordered.last()),
        "has_more": has_more,
    }))
}

pub async fn input_items(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Path(id): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let stored = load(&state, &headers, &id).await?;
        page(&stored.input_items, &params)
    }
    .await;
    match result {
        Ok(body) => json_ok(&body),
        Err(err) => error_response(&err, &request_id.0),
    }
}
