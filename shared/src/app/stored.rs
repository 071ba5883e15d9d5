//! `GET/DELETE /v1/responses/{id}` and `GET /v1/responses/{id}/input_items`: the caller
//! owner's stored responses, in OpenAI's shapes (another owner's do not exist for the caller).

use std::collections::HashMap;

use axum::extract::{Query, State};
use serde_json::{json, Value};

use super::path_id::{PathId, Resource};
use super::{AppState, Authenticated, JsonReply};
use crate::archive;
use crate::conversation;
use crate::domain::StoredResponse;
use crate::error::GatewayError;
use crate::ids::RESPONSE_ID_PREFIX;

/// Stored responses, by `resp_` id.
#[derive(Debug)]
pub enum Responses {}

impl Resource for Responses {
    const PREFIX: &'static str = RESPONSE_ID_PREFIX;
    const CODE: &'static str = "response_not_found";
    const MALFORMED: &'static str =
        "No response with this id was found: response ids are `resp_` and letters, digits, `_` or `-`.";

    fn missing(id: &str) -> String {
        format!("No response with id `{id}` was found.")
    }
}

/// The caller owner's stored response (waiting briefly for one just minted).
async fn load(state: &AppState, owner: &str, id: &str) -> Result<StoredResponse, GatewayError> {
    archive::owned_or_wait(&state.cached.stores, owner, id).await?.ok_or_else(|| Responses::not_found(id))
}

pub async fn show(
    State(state): State<AppState>,
    PathId { id, .. }: PathId<Responses>,
    Authenticated(key): Authenticated,
) -> Result<JsonReply, GatewayError> {
    Ok(JsonReply::ok(load(&state, &key.owner, &id).await?.response))
}

pub async fn remove(
    State(state): State<AppState>,
    PathId { id, .. }: PathId<Responses>,
    Authenticated(key): Authenticated,
) -> Result<JsonReply, GatewayError> {
    load(&state, &key.owner, &id).await?;
    state.cached.stores.responses.delete_response(&id).await?;
    Ok(JsonReply::ok(json!({"id": id, "object": "response", "deleted": true})))
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
    Query(params): Query<Vec<(String, String)>>,
    PathId { id, .. }: PathId<Responses>,
    Authenticated(key): Authenticated,
) -> Result<JsonReply, GatewayError> {
    let stored = load(&state, &key.owner, &id).await?;
    page(&stored.input_items, &params).map(JsonReply::ok)
}
