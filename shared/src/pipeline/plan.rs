//! What a request resolves to before a provider is chosen: the model and its catalog rows in
//! failover order, the template (by id, else by name: the owner's, then global), the stored
//! conversation and the plugins; and the body each row's provider gets.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::body::base_body;
use crate::archive::{self, Archive};
use crate::catalog::{choose_model, serving_rows};
use crate::config::ProviderConfig;
use crate::conversation::{self, estimate_tokens, input_items, json_len, with_ids};
use crate::domain::{ApiKey, ModelPrice, StoredResponse, Template, GLOBAL_OWNER};
use crate::error::GatewayError;
use crate::plugins::{PluginContext, Selection};
use crate::request::ResponsesRequest;
use crate::state::AppState;
use crate::templates::{self, Rendered};

/// Providers whose API takes a `plugins` list (entries the gateway does not implement go there).
const PLUGIN_PROVIDERS: [&str; 1] = ["openrouter"];

/// The model of a request and the catalog rows that may serve it, in failover order.
pub struct Resolved {
    pub model: String,
    pub rows: Vec<ModelPrice>,
}

/// What a request resolved to before choosing a provider: model, candidate rows in failover
/// order, template, conversation and plugins. Each row gets its own provider body.
pub struct Plan {
    /// The id the answer gets (on every provider and attempt), minted once for the request.
    pub response_id: String,
    pub model: String,
    pub rows: Vec<ModelPrice>,
    pub template: Option<Template>,
    pub rendered: Option<Rendered>,
    pub chain: Vec<StoredResponse>,
    pub turn_items: Vec<Value>,
    /// The provider that made each item an `item_reference` resolved to, by item id.
    pub origins: HashMap<String, String>,
    pub plugins: Selection,
}

impl Plan {
    /// The body for one catalog row and its provider.
    pub fn body_for(
        &self,
        request: &ResponsesRequest,
        key: &ApiKey,
        row: &ModelPrice,
        provider: &ProviderConfig,
    ) -> Result<Map<String, Value>, GatewayError> {
        self.check_foreign_plugins(provider)?;
        let max_output_tokens = request.max_output_tokens.or(row.max_output_tokens);
        let ctx = PluginContext { context_length: row.context_length, max_output_tokens, stream: request.stream };
        let mut body = base_body(request, key, self.template.as_ref(), self.rendered.as_ref(), &self.plugins)?;
        super::body::tag_owner(&mut body, &key.owner, provider.api);
        if request.previous_response_id.is_some() || self.rendered.is_some() || !self.origins.is_empty() {
            let rest = self.turn_items.iter().map(estimate_tokens).sum::<u64>()
                + body.get("instructions").map_or(0, estimate_tokens)
                + body.get("tools").map_or(0, estimate_tokens);
            let budget = row.context_length.map(|c| c.saturating_sub(max_output_tokens.unwrap_or(0)));
            let mut input = archive::history_for(&self.chain, &provider.name, rest, budget);
            input.extend(self.turn_items.iter().filter_map(|item| {
                let origin = item.get("id").and_then(Value::as_str).and_then(|id| self.origins.get(id));
                match origin {
                    Some(origin) => conversation::resend(item.clone(), *origin == provider.name),
                    None => Some(item.clone()),
                }
            }));
            body.insert("input".to_owned(), Value::Array(input));
            body.remove("previous_response_id");
        }
        self.plugins.before(&ctx, &mut body);
        Ok(body)
    }

    /// Refuses plugins the gateway does not implement unless `provider` accepts `plugins`.
    pub fn check_foreign_plugins(&self, provider: &ProviderConfig) -> Result<(), GatewayError> {
        if let Some(first) = self.plugins.foreign.first() {
            if !PLUGIN_PROVIDERS.contains(&provider.name.as_str()) {
                return Err(GatewayError::invalid(
                    "unsupported_plugin",
                    "plugins",
                    format!(
                        "The plugin `{}` is not implemented by the gateway and the provider `{}` does not accept plugins.",
                        first["id"].as_str().unwrap_or_default(),
                        provider.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// What to store once the turn is answered by `provider` (unless `store: false`).
    pub fn archive(
        &self,
        state: &AppState,
        request: &ResponsesRequest,
        key: &ApiKey,
        provider: &str,
    ) -> Option<Archive> {
        (request.body.get("store") != Some(&Value::Bool(false))).then(|| Archive {
            owner: key.owner.clone(),
            previous_response_id: request.previous_response_id.clone(),
            input_items: with_ids(
                &self.response_id,
                if self.turn_items.is_empty() {
                    input_items(request.body.get("input"))
                } else {
                    self.turn_items.clone()
                },
            ),
            model: self.model.clone(),
            provider: provider.to_owned(),
            ttl: state.config.response_ttl,
        })
    }

    /// Bytes sent upstream besides the request body itself: the rendered template, the rebuilt
    /// conversation (an upper bound: history is only ever cut to fit) and the items
    /// `item_reference`s resolved to (a reference is a few bytes; its item may be large).
    pub fn added_bytes(&self) -> usize {
        let rendered = self
            .rendered
            .as_ref()
            .map_or(0, |r| r.system.as_deref().map_or(0, str::len) + r.messages.iter().map(json_len).sum::<usize>());
        let history: usize = self
            .chain
            .iter()
            .map(|turn| turn.input_items.iter().map(json_len).sum::<usize>() + json_len(&turn.response["output"]))
            .sum();
        let referenced: usize = self
            .turn_items
            .iter()
            .filter(|item| item.get("id").and_then(Value::as_str).is_some_and(|id| self.origins.contains_key(id)))
            .map(json_len)
            .sum();
        rendered + history + referenced
    }
}

/// The model's catalog rows, refusing a model the key may not use, an unknown model and a
/// primary provider that is not configured.
pub async fn resolve(state: &AppState, key: &ApiKey, model: &str) -> Result<Resolved, GatewayError> {
    if !key.allows_model(model) {
        return Err(GatewayError::ModelNotAllowed { model: model.to_owned() });
    }
    let rows = serving_rows(model, &state.cached.prices(model).await?)?;
    let primary = rows.first().ok_or_else(|| GatewayError::Internal("no row".to_owned()))?;
    // The primary provider must be configured; later rows are only failover targets.
    state.dispatcher.provider(&primary.provider)?;
    Ok(Resolved { model: model.to_owned(), rows })
}

/// Finds a template by id, else by name among the owner's, then the global ones.
pub async fn find_template(state: &AppState, owner: &str, reference: &str) -> Result<Template, GatewayError> {
    let stores = &state.cached.stores;
    if let Some(template) = stores.templates.template(reference).await? {
        if template.owner == owner || template.is_global() {
            return Ok(template);
        }
    }
    for scope in [owner, GLOBAL_OWNER] {
        if let Some(template) = stores.templates.template_by_name(scope, reference).await? {
            return Ok(template);
        }
    }
    Err(GatewayError::NotFound {
        code: "template_not_found",
        message: format!("No template `{reference}` was found."),
        param: Some("template".to_owned()),
    })
}

/// Resolves the template, model (unless `early` did), candidate rows, conversation and plugins.
pub async fn plan(
    state: &AppState,
    request: &ResponsesRequest,
    key: &ApiKey,
    early: Option<Resolved>,
) -> Result<Plan, GatewayError> {
    let template = match &request.template {
        Some(reference) => Some(find_template(state, &key.owner, reference).await?),
        None => None,
    };
    let variables = request.body.get("variables").and_then(Value::as_object).cloned().unwrap_or_default();
    let rendered = template.as_ref().map(|t| templates::render(t, &variables)).transpose()?;
    let Resolved { model, rows } = match early {
        Some(resolved) => resolved,
        None => {
            let model = choose_model(
                request.model.as_deref(),
                key,
                template.as_ref().and_then(|t| t.model.as_deref()),
                state.config.default_model.as_deref(),
            )?;
            resolve(state, key, &model).await?
        }
    };
    let primary = rows.first().ok_or_else(|| GatewayError::Internal("no row".to_owned()))?;
    let ctx = PluginContext {
        context_length: primary.context_length,
        max_output_tokens: request.max_output_tokens.or(primary.max_output_tokens),
        stream: request.stream,
    };
    let plugins = Selection::from_request(request.body.get("plugins"), &ctx)?;
    let chain = match &request.previous_response_id {
        Some(previous) => archive::chain(&state.cached.stores, &key.owner, previous).await?,
        None => Vec::new(),
    };
    let refers = match request.body.get("input") {
        Some(Value::Array(items)) => items.iter().any(conversation::is_reference),
        _ => false,
    };
    let (turn_items, origins) = if rendered.is_none() && request.previous_response_id.is_none() && !refers {
        (Vec::new(), HashMap::new())
    } else {
        let mut own = input_items(request.body.get("input"));
        let origins = archive::resolve_references(&state.cached.stores, &key.owner, &mut own).await?;
        let template_items = rendered.as_ref().map(|r| r.messages.clone()).unwrap_or_default();
        (template_items.into_iter().chain(own).collect(), origins)
    };
    let response_id = crate::ids::new_id(crate::ids::RESPONSE_ID_PREFIX);
    Ok(Plan { response_id, model, rows, template, rendered, chain, turn_items, origins, plugins })
}
