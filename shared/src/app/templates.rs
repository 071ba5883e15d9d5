//! `POST/GET /v1/templates`, `GET/PATCH/DELETE /v1/templates/{id}`: the caller owner's prompt
//! templates; global templates are listed and readable but read-only here. Templates are built,
//! changed and shown by [`crate::templates`].

use axum::body::Bytes;
use axum::extract::State;
use http::StatusCode;
use serde_json::{json, Value};

use super::path_id::{PathId, Resource};
use super::{AppState, Authenticated, JsonReply};
use crate::domain::{now_unix, Template, GLOBAL_OWNER};
use crate::error::{GatewayError, StoreError};
use crate::ids::TEMPLATE_ID_PREFIX;
use crate::templates::{apply, new_template, parse_fields, view};

/// Templates, by `tpl_` id.
#[derive(Debug)]
pub enum Templates {}

impl Resource for Templates {
    const PREFIX: &'static str = TEMPLATE_ID_PREFIX;
    const CODE: &'static str = "template_not_found";
    const MALFORMED: &'static str =
        "No template with this id was found: template ids are `tpl_` and letters, digits, `_` or `-`.";

    fn missing(id: &str) -> String {
        format!("No template `{id}` was found.")
    }
}

fn conflict(err: StoreError, name: &str) -> GatewayError {
    match err {
        StoreError::Conflict(_) => GatewayError::Conflict {
            code: "template_exists",
            message: format!("A template named `{name}` already exists for this owner."),
        },
        other => other.into(),
    }
}

/// The owner's own template (global ones are read-only here).
async fn own(state: &AppState, owner: &str, id: &str) -> Result<Template, GatewayError> {
    match state.cached.stores.templates.template(id).await? {
        Some(t) if t.owner == owner => Ok(t),
        Some(t) if t.is_global() => Err(GatewayError::Forbidden {
            code: "template_read_only",
            message: "Global templates are read-only; operators change them with mesh-admin.".to_owned(),
        }),
        _ => Err(Templates::not_found(id)),
    }
}

pub async fn create(
    State(state): State<AppState>,
    Authenticated(key): Authenticated,
    body: Bytes,
) -> Result<JsonReply, GatewayError> {
    let fields = parse_fields(&body)?;
    let template = new_template(&key.owner, &fields)?;
    state.cached.stores.templates.insert_template(&template).await.map_err(|e| conflict(e, &template.name))?;
    Ok(JsonReply(StatusCode::CREATED, view(&template)))
}

pub async fn list(State(state): State<AppState>, Authenticated(key): Authenticated) -> Result<JsonReply, GatewayError> {
    let mut all = state.cached.stores.templates.templates_of(&key.owner).await?;
    all.extend(state.cached.stores.templates.templates_of(GLOBAL_OWNER).await?);
    let data: Vec<Value> = all.iter().map(view).collect();
    Ok(JsonReply::ok(json!({"object": "list", "data": data})))
}

pub async fn show(
    State(state): State<AppState>,
    PathId { id, .. }: PathId<Templates>,
    Authenticated(key): Authenticated,
) -> Result<JsonReply, GatewayError> {
    match state.cached.stores.templates.template(&id).await? {
        Some(t) if t.owner == key.owner || t.is_global() => Ok(JsonReply::ok(view(&t))),
        _ => Err(Templates::not_found(&id)),
    }
}

pub async fn update(
    State(state): State<AppState>,
    PathId { id, .. }: PathId<Templates>,
    Authenticated(key): Authenticated,
    body: Bytes,
) -> Result<JsonReply, GatewayError> {
    let patch = parse_fields(&body)?;
    let mut template = own(&state, &key.owner, &id).await?;
    apply(&mut template, &patch)?;
    template.updated_at = now_unix();
    state.cached.stores.templates.replace_template(&template).await.map_err(|e| conflict(e, &template.name))?;
    Ok(JsonReply::ok(view(&template)))
}

pub async fn remove(
    State(state): State<AppState>,
    PathId { id, .. }: PathId<Templates>,
    Authenticated(key): Authenticated,
) -> Result<JsonReply, GatewayError> {
    own(&state, &key.owner, &id).await?;
    state.cached.stores.templates.delete_template(&id).await?;
    Ok(JsonReply::ok(json!({"id": id, "object": "template", "deleted": true})))
}
