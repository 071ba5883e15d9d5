//! Authentication: `Authorization: Bearer rsk_<ULID>`, looked up by SHA-256 through the cache;
//! handlers take the key as the [`Authenticated`] extractor.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use http::request::Parts;
use http::HeaderMap;
use tracing::Instrument;

use super::AppState;
use crate::domain::{check_owner, now_unix, ApiKey, KeyStatus};
use crate::error::GatewayError;
use crate::ids::{hash_secret, well_formed_secret};
use crate::store::cache::Cached;

/// The request's key, authenticated from its headers in an `auth` span; its id is recorded on
/// the request's span. Refused with the auth error (401/403, or 503 when the store is down).
#[derive(Debug, Clone)]
pub struct Authenticated(pub Arc<ApiKey>);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = GatewayError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let key = authenticate(&state.cached, &parts.headers).instrument(tracing::info_span!("auth")).await?;
        tracing::Span::current().record("key_id", key.id.as_str());
        Ok(Authenticated(key))
    }
}

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
