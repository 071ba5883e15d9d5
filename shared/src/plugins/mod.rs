//! Gateway plugins (DESIGN §6): one small trait, registered in one place. Plugins run before
//! the provider call (on the request) and after the answer (on a complete response). Entries
//! the gateway does not implement are forwarded to providers that accept `plugins` and refused
//! elsewhere.

use serde_json::{Map, Value};

use crate::error::GatewayError;

mod compression;
mod healing;
mod pii;

/// What a plugin may know about the request's model.
#[derive(Debug, Clone, Copy, Default)]
pub struct PluginContext {
    pub context_length: Option<u64>,
    pub max_output_tokens: Option<u64>,
    pub stream: bool,
}

/// A gateway plugin.
pub trait Plugin: Send + Sync {
    fn id(&self) -> &'static str;
    /// Checks the plugin's options and whether it can run on this request.
    fn check(&self, _options: &Map<String, Value>, _ctx: &PluginContext) -> Result<(), GatewayError> {
        Ok(())
    }
    /// Rewrites the request before the provider sees it.
    fn before(&self, _options: &Map<String, Value>, _ctx: &PluginContext, _body: &mut Map<String, Value>) {}
    /// Rewrites a complete (non-streaming) response.
    fn after(
        &self,
        _options: &Map<String, Value>,
        _body: &Map<String, Value>,
        _response: &mut Value,
    ) -> Result<(), GatewayError> {
        Ok(())
    }
}

static PLUGINS: [&dyn Plugin; 3] = [&pii::PiiRedaction, &healing::ResponseHealing, &compression::ContextCompression];

/// The gateway plugin with this id.
pub fn find(id: &str) -> Option<&'static dyn Plugin> {
    PLUGINS.iter().copied().find(|p| p.id() == id)
}

/// The plugins a request asked for: gateway ones (with their options) and foreign entries.
#[derive(Default)]
pub struct Selection {
    pub gateway: Vec<(&'static dyn Plugin, Map<String, Value>)>,
    pub foreign: Vec<Value>,
}

impl std::fmt::Debug for Selection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Selection")
            .field("gateway", &self.gateway.iter().map(|(p, _)| p.id()).collect::<Vec<_>>())
            .field("foreign", &self.foreign.len())
            .finish()
    }
}

impl Selection {
    /// Sorts the request's `plugins` entries; options are the entry's other fields.
    pub fn from_request(plugins: Option<&Value>, ctx: &PluginContext) -> Result<Self, GatewayError> {
        let mut selection = Selection::default();
        let Some(Value::Array(entries)) = plugins else { return Ok(selection) };
        for entry in entries {
            let Some(object) = entry.as_object() else { continue };
            let id = object.get("id").and_then(Value::as_str).unwrap_or_default();
            match find(id) {
                Some(plugin) => {
                    let mut options = object.clone();
                    options.remove("id");
                    plugin.check(&options, ctx)?;
                    selection.gateway.push((plugin, options));
                }
                None => selection.foreign.push(entry.clone()),
            }
        }
        Ok(selection)
    }

    pub fn before(&self, ctx: &PluginContext, body: &mut Map<String, Value>) {
        for (plugin, options) in &self.gateway {
            plugin.before(options, ctx, body);
        }
    }

    pub fn after(&self, body: &Map<String, Value>, response: &mut Value) -> Result<(), GatewayError> {
        for (plugin, options) in &self.gateway {
            plugin.after(options, body, response)?;
        }
        Ok(())
    }
}

/// Applies `change` to every text the model will read in a request: instructions, string
/// inputs, message contents and text parts, and function call outputs.
pub fn for_each_input_text(body: &mut Map<String, Value>, change: &mut dyn FnMut(&mut String)) {
    if let Some(Value::String(text)) = body.get_mut("instructions") {
        change(text);
    }
    match body.get_mut("input") {
        Some(Value::String(text)) => change(text),
        Some(Value::Array(items)) => {
            for item in items {
                match item.get_mut("content") {
                    Some(Value::String(text)) => change(text),
                    Some(Value::Array(parts)) => {
                        for part in parts {
                            if let Some(Value::String(text)) = part.get_mut("text") {
                                change(text);
                            }
                        }
                    }
                    _ => {}
                }
                if let Some(Value::String(text)) = item.get_mut("output") {
                    change(text);
                }
            }
        }
        _ => {}
    }
}
