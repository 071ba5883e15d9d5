//! Provider credentials from AWS Secrets Manager: every `MESH_PROVIDER_<NAME>_API_KEY_SECRET_ARN`
//! is read once, at cold start, concurrently, and kept in the configuration (never in plain
//! environment variables). A secret still holding the template's placeholder counts as absent,
//! so that provider answers 503 `provider_not_available`.

use aws_sdk_secretsmanager::Client;
use serde_json::Value;

use crate::config::{Config, Secret};

/// The value `template.yaml` puts in a new secret until the operator fills it in.
pub const PLACEHOLDER: &str = "REPLACE_ME";

/// The credential in a secret string: the string itself, or the `api_key` field of a JSON object.
pub fn credential_of(secret_string: &str) -> Option<String> {
    let text = secret_string.trim();
    let value = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => map.get("api_key").and_then(Value::as_str).map(str::to_owned)?,
        _ => text.to_owned(),
    };
    (!value.is_empty() && value != PLACEHOLDER).then_some(value)
}

/// Fills in the credentials of providers configured with a secret ARN.
pub async fn resolve(config: &mut Config) {
    let wanted: Vec<(String, String)> = config
        .providers
        .values()
        .filter(|p| p.api_key.is_none())
        .filter_map(|p| p.api_key_secret_arn.clone().map(|arn| (p.name.clone(), arn)))
        .collect();
    if wanted.is_empty() {
        return;
    }
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let client = Client::new(&aws);
    let fetches = wanted.into_iter().map(|(name, arn)| {
        let client = client.clone();
        async move {
            let result = client.get_secret_value().secret_id(&arn).send().await;
            (name, result)
        }
    });
    for (name, result) in futures_util::future::join_all(fetches).await {
        match result {
            Ok(output) => match output.secret_string().and_then(credential_of) {
                Some(key) => {
                    if let Some(provider) = config.providers.get_mut(&name) {
                        provider.api_key = Some(Secret::new(key));
                    }
                }
                None => tracing::warn!(provider = %name, "provider secret is empty or a placeholder"),
            },
            Err(err) => {
                let code =
                    aws_sdk_secretsmanager::error::ProvideErrorMetadata::code(&err).unwrap_or("unknown").to_owned();
                tracing::error!(provider = %name, error = %code, "provider secret could not be read");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plain_and_json_secrets_and_ignores_placeholders() {
        assert_eq!(credential_of("sk-live"), Some("sk-live".to_owned()));
        assert_eq!(credential_of("{\"api_key\": \"sk-json\"}"), Some("sk-json".to_owned()));
        assert_eq!(credential_of("REPLACE_ME"), None);
        assert_eq!(credential_of("  "), None);
    }
}
