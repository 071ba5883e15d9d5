//! `POST/GET /v1/templates`, `GET/PATCH/DELETE /v1/templates/{id}`: the caller owner's prompt
//! templates; global templates are listed and readable but read-only here.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::Extension;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Map, Value};

use super::{authenticate, error_response, json_response, AppState, RequestId};
use crate::domain::{now_unix, Template, GLOBAL_OWNER};
use crate::error::{GatewayError, StoreError};
use crate::ids::{new_id, well_formed_id, TEMPLATE_ID_PREFIX};

/// Largest template body (`POST`/`PATCH`, and `mesh-admin templates put` files): a template is
/// stored as one item, and a DynamoDB item holds at most 400 KB. Larger bodies get 413
/// `request_too_large`.
pub const MAX_TEMPLATE_BYTES: usize = 256 * 1024;

/// The API view of a template.
pub fn view(template: &Template) -> Value {
    json!({
        "id": template.id,
        "object": "template",
        "name": template.name,
        "global": template.is_global(),
        "description": template.description,
        "system": template.system,
        "messages": template.messages,
        "model": template.model,
        "params": template.params,
        "variables": template.variables,
        "created_at": template.created_at,
        "updated_at": template.updated_at,
    })
}

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

fn invalid_type(param: &str, expected: &str) -> GatewayError {
    GatewayError::invalid("invalid_type", param, format!("Invalid type for `{param}`: expected {expected}."))
}

fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, GatewayError> {
    if bytes.len() > MAX_TEMPLATE_BYTES {
        return Err(GatewayError::RequestTooLarge { limit_bytes: MAX_TEMPLATE_BYTES });
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(GatewayError::InvalidRequest {
            code: "invalid_type",
            message: "The request body must be a JSON object.".to_owned(),
            param: None,
        }),
        Err(err) => Err(GatewayError::InvalidRequest {
            code: "invalid_json",
            message: format!("The request body is not valid JSON: {err}."),
            param: None,
        }),
    }
}

/// Applies the fields of `patch` to `template`: absent fields stay, `null` clears.
fn apply(template: &mut Template, patch: &Map<String, Value>) -> Result<(), GatewayError> {
    for (field, value) in patch {
        let clear = value.is_null();
        match field.as_str() {
            "name" => match value {
                Value::String(name)
                    if !name.is_empty()
                        && name.len() <= 128
                        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)) =>
                {
                    template.name.clone_from(name)
                }
                Value::String(_) => {
                    return Err(GatewayError::invalid(
                        "invalid_value",
                        "name",
                        "`name` must be 1-128 letters, digits, `_`, `-` or `.`.",
                    ))
                }
                _ => return Err(invalid_type("name", "a string")),
            },
            "description" | "system" | "model" => {
                let text = match value {
                    Value::Null => None,
                    Value::String(text) => Some(text.clone()),
                    _ => return Err(invalid_type(field, "a string or null")),
                };
                match field.as_str() {
                    "description" => template.description = text,
                    "system" => template.system = text,
                    _ => template.model = text,
                }
            }
            "messages" => {
                template.messages = match value {
                    Value::Null => Vec::new(),
                    Value::Array(messages) => {
                        for (i, message) in messages.iter().enumerate() {
                            let role = message.get("role").and_then(Value::as_str);
                            if !matches!(role, Some("user" | "assistant" | "system" | "developer"))
                                || message.get("content").is_none()
                            {
                                return Err(GatewayError::invalid(
                                    "invalid_value",
                                    format!("messages[{i}]"),
                                    "Each message needs a `role` (user, assistant, system, developer) and `content`.",
                                ));
                            }
                        }
                        messages.clone()
                    }
                    _ => return Err(invalid_type("messages", "an array of messages")),
                }
            }
            "params" => {
                template.params = match value {
                    Value::Null => Map::new(),
                    Value::Object(params) => params.clone(),
                    _ => return Err(invalid_type("params", "an object")),
                }
            }
            "variables" => {
                template.variables = match value {
                    Value::Null => Vec::new(),
                    Value::Array(names) => names.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
                    _ => return Err(invalid_type("variables", "an array of names")),
                }
            }
            "id" | "object" | "global" | "created_at" | "updated_at" | "owner" => {}
            other => {
                return Err(GatewayError::invalid(
                    "invalid_value",
                    other,
                    format!("Unknown template field `{other}`: expected name, description, system, messages, model, params, variables."),
                ))
            }
        }
        if clear && field == "name" {
            return Err(GatewayError::invalid("invalid_value", "name", "`name` cannot be cleared."));
        }
    }
    if template.variables.is_empty() {
        template.variables = crate::templates::placeholders(template);
    }
    Ok(())
}

/// Builds a new template of `owner` from a JSON object (also used by `mesh-admin`).
pub fn new_template(owner: &str, fields: &Map<String, Value>) -> Result<Template, GatewayError> {
    if !matches!(fields.get("name"), Some(Value::String(_))) {
        return Err(GatewayError::invalid("missing_required_parameter", "name", "Missing required parameter: `name`."));
    }
    let now = now_unix();
    let mut template = Template {
        id: new_id(TEMPLATE_ID_PREFIX),
        name: String::new(),
        owner: owner.to_owned(),
        description: None,
        system: None,
        messages: Vec::new(),
        model: None,
        params: Map::new(),
        variables: Vec::new(),
        created_at: now,
        updated_at: now,
    };
    apply(&mut template, fields)?;
    Ok(template)
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
        let fields = parse_object(&body)?;
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
        let patch = parse_object(&body)?;
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
