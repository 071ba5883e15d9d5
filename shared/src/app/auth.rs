//! Authentication: `Authorization: Bearer rsk_<ULID>`, looked up by SHA-256 through the cache.

use std::sync::Arc;

use http::HeaderMap;

use crate::domain::{check_owner, now_unix, ApiKey, KeyStatus};
use crate::error::GatewayError;
use crate::ids::{hash_secret, well_formed_secret};
use crate::store::cache::Cached;

/// The key of the request, or the auth error to answer with.
pub async fn authenticate(cached: &Cached, headers: &HeaderMap) -> Result<Arc<ApiKey>, GatewayError> {
    let secret = bearer_secret(headers)?;
    let key = cached.key(&hash_secret(secret)).await?.ok_or(GatewayError::InvalidApiKey)?;
    if key.status == KeyStatus::Suspended {
        return Err(GatewayError::KeySuspended { message: "This API key has been suspended.".to_owned() });
    }
    if key.expires_at.is_some_and(|at| at <= now_unix()) {
        return Err(GatewayError::KeySuspended { message: "This API key has expired.".to_owned() });
    }
    // A key stored with a reserved owner (`~global`, written before owners were checked) would act
    // for the gateway itself, e.g. on every tenant's global templates: it is not served.
    if let Err(problem) = check_owner(&key.owner) {
        tracing::warn!(key_id = %key.id, problem, "key refused: its owner is not valid");
        return Err(GatewayError::KeySuspended {
            message: "This API key cannot be used: its account is not valid. An operator must assign it one."
                .to_owned(),
        });
    }
    Ok(key)
}

/// The well-formed secret of the `Authorization: Bearer` header, checked before any lookup.
pub fn bearer_secret(headers: &HeaderMap) -> Result<&str, GatewayError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Err(GatewayError::MissingApiKey);
    };
    let value = value.to_str().map_err(|_| GatewayError::InvalidApiKey)?.trim();
    let secret = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => return Err(GatewayError::InvalidApiKey),
    };
    if secret.is_empty() {
        return Err(GatewayError::MissingApiKey);
    }
    if !well_formed_secret(secret) {
        return Err(GatewayError::InvalidApiKey);
    }
    Ok(secret)
}
