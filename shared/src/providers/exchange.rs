//! The wire step every provider call shares, whatever the endpoint: the request goes out with
//! the caller's trace context (SigV4-signed for Bedrock without an API key), and an error answer
//! comes back mapped by the provider API's own rules.

use std::time::Instant;

use http::HeaderMap;

use super::{Dispatcher, Route, UpstreamRequest};
use crate::config::ProviderApi;
use crate::error::GatewayError;

impl Dispatcher {
    /// Sends a built provider request (with the caller's trace context; SigV4-signed for Bedrock
    /// without an API key) and returns the provider's response once its status is a success. An
    /// error answer is read and mapped by `error` (status, headers, body).
    pub(super) async fn exchange(
        &self,
        route: &Route,
        mut request: UpstreamRequest,
        deadline: Instant,
        error: impl FnOnce(u16, &HeaderMap, &[u8]) -> GatewayError,
    ) -> Result<reqwest::Response, GatewayError> {
        request.headers.extend(route.trace.iter().cloned());
        if route.provider.api == ProviderApi::Bedrock && route.provider.api_key.is_none() {
            self.sign_for_bedrock(&route.provider, &mut request).await?;
        }
        let response = self.send(request, deadline).await?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = self.read_body(response, deadline).await.unwrap_or_default();
        Err(error(status, &headers, &bytes))
    }
}
