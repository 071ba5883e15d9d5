//! `POST/GET /v1/templates`, `GET/PATCH/DELETE /v1/templates/{id}`: the caller owner's prompt
//! templates; global templates are listed and readable but read-only here. Templates are built,
//! changed and shown by [`crate::templates`].

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::Extension;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use super::{authenticate, error_response, json_response, AppState, RequestId};
use crate::domain::{now_unix, Template, GLOBAL_OWNER};
use crate::error::{GatewayError, StoreError};
use crate::ids::{well_formed_id, TEMPLATE_ID_PREFIX};
use crate::templates::{apply, new_template, parse_fields, view};

fn not_found(id: &str) -> GatewayError {
    // Only ids that could exist are echoed (a malformed one may be long or anything at all).
    let message = if well_formed_id(TEMPLATE_ID_PREFIX, id) {
        format!("No template `{id}` was found.")
    } else {
        "No template with this id was found: template ids are `tpl_` and letters, digits, `_` or `-`.".to_owned()
    };
    GatewayError::NotFound { code: "template_not_found", message, param: None }
}

/// A malformed or over-long id in a path names nothing: answered before any store read.
fn check_id(id: &str) -> Result<(), GatewayError> {
    if well_formed_id(TEMPLATE_ID_PREFIX, id) {
        Ok(())
    } else {
        Err(not_found(id))
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

fn respond(result: Result<(StatusCode, Value), GatewayError>, request_id: &RequestId) -> Response {
    match result {
        Ok((status, body)) => json_response(status, Bytes::from(body.to_string())),
        Err(err) => error_response(&err, &request_id.0),
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
        _ => Err(not_found(id)),
    }
}

pub async fn create(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let key = authenticate(&state.cached, &headers).await?;
        let fields = parse_fields(&body)?;
        let template = new_template(&key.owner, &fields)?;
        state.cached.stores.templates.insert_template(&template).await.map_err(|e| conflict(e, &template.name))?;
        Ok((StatusCode::CREATED, view(&template)))
    }
    .await;
    respond(result, &request_id)
}

pub async fn list(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let key = authenticate(&state.cached, &headers).await?;
        let mut all = state.cached.stores.templates.templates_of(&key.owner).await?;
        all.extend(state.cached.stores.templates.templates_of(GLOBAL_OWNER).await?);
        let data: Vec<Value> = all.iter().map(view).collect();
        Ok((StatusCode::OK, json!({"object": "list", "data": data})))
    }
    .await;
    respond(result, &request_id)
}

pub async fn show(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        check_id(&id)?;
        let key = authenticate(&state.cached, &headers).await?;
        match state.cached.stores.templates.template(&id).await? {
            Some(t) if t.owner == key.owner || t.is_global() => Ok((StatusCode::OK, view(&t))),
            _ => Err(not_found(&id)),
        }
    }
    .await;
    respond(result, &request_id)
}

pub async fn update(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        check_id(&id)?;
        let key = authenticate(&state.cached, &headers).await?;
        let patch = parse_fields(&body)?;
        let mut template = own(&state, &key.owner, &id).await?;
        apply(&mut template, &patch)?;
        template.updated_at = now_unix();
        state.cached.stores.templates.replace_template(&template).await.map_err(|e| conflict(e, &template.name))?;
        Ok((StatusCode::OK, view(&template)))
    }
    .await;
    respond(result, &request_id)
}

pub async fn remove(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        check_id(&id)?;
        let key = authenticate(&state.cached, &headers).await?;
        own(&state, &key.owner, &id).await?;
        state.cached.stores.templates.delete_template(&id).await?;
        Ok((StatusCode::OK, json!({"id": id, "object": "template", "deleted": true})))
    }
    .await;
    respond(result, &request_id)
}
