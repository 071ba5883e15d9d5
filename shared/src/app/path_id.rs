//! Ids in paths (`/v1/responses/{id}`, `/v1/templates/{id}`): a malformed or over-long id names
//! nothing and is answered 404 before anything else runs (no key lookup, no store read).

use std::marker::PhantomData;

use axum::extract::{FromRequestParts, Path};
use axum::response::{IntoResponse, Response};
use http::request::Parts;

use crate::error::GatewayError;
use crate::ids::well_formed_id;

/// A kind of stored thing addressed by id.
pub trait Resource {
    /// The prefix of its ids (`resp_`, `tpl_`).
    const PREFIX: &'static str;
    /// The `code` of its 404.
    const CODE: &'static str;
    /// The 404 message for a malformed id.
    const MALFORMED: &'static str;

    /// The 404 message for a well-formed id.
    fn missing(id: &str) -> String;

    /// The 404 for `id`: only ids that could exist are echoed (a malformed one may be long or
    /// anything at all).
    fn not_found(id: &str) -> GatewayError {
        let message = if well_formed_id(Self::PREFIX, id) { Self::missing(id) } else { Self::MALFORMED.to_owned() };
        GatewayError::NotFound { code: Self::CODE, message, param: None }
    }
}

/// The `{id}` of the path, well formed for `R`.
#[derive(Debug)]
pub struct PathId<R> {
    pub id: String,
    resource: PhantomData<fn() -> R>,
}

impl<S: Send + Sync, R: Resource> FromRequestParts<S> for PathId<R> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(id) = Path::<String>::from_request_parts(parts, state).await.map_err(IntoResponse::into_response)?;
        if !well_formed_id(R::PREFIX, &id) {
            return Err(R::not_found(&id).into_response());
        }
        Ok(PathId { id, resource: PhantomData })
    }
}
