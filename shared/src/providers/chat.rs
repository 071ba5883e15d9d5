//! The `chat` provider API (placeholder until its translation lands).

use http::HeaderMap;
use serde_json::{Map, Value};

use super::assemble::Delta;
use super::{DeltaDecoder, StreamFault, Translator, UpstreamRequest};
use crate::config::ProviderConfig;
use crate::domain::ModelPrice;
use crate::error::GatewayError;
use crate::sse::SseEvent;

/// The `chat` translator.
#[derive(Debug, Clone, Copy)]
pub struct Chat;

struct Nothing;

impl DeltaDecoder for Nothing {
    fn decode(&mut self, _event: SseEvent) -> Result<Vec<Delta>, StreamFault> {
        Ok(Vec::new())
    }
}

impl Translator for Chat {
    fn request(
        &self,
        provider: &ProviderConfig,
        _row: &ModelPrice,
        _body: &Map<String, Value>,
        _stream: bool,
    ) -> Result<UpstreamRequest, GatewayError> {
        Err(GatewayError::ProviderNotAvailable(provider.name.clone()))
    }

    fn response(&self, _bytes: &[u8]) -> Result<Vec<Delta>, GatewayError> {
        Ok(Vec::new())
    }

    fn decoder(&self) -> Box<dyn DeltaDecoder> {
        Box::new(Nothing)
    }

    fn error(&self, provider: &str, status: u16, headers: &HeaderMap, _bytes: &[u8]) -> GatewayError {
        super::provider_fault(provider, status, headers, None, None, None, None)
    }
}
