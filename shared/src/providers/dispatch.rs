//! The provider dispatcher: one pooled HTTP client, the providers' credentials and the upstream
//! timeouts for every provider API. A call is built by the API's own module, sent (with the
//! caller's trace context and the provider's credential), its error answers mapped by that
//! module, and its answer read whole or as a stream within the request's deadline.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use serde_json::{Map, Value};

use super::assemble::{Assembler, ResponseContext};
use super::auth::AwsSigner;
use super::sink::{assemble_complete, Translated};
use super::source::Check;
use super::{
    anthropic, bedrock, chat, check_event, echo, gemini, responses, EventSource, Framing, Reply, Route, StreamMapper,
    Translator, UpstreamRequest, MAX_UPSTREAM_BODY,
};
use crate::config::{ProviderApi, ProviderConfig, UpstreamTimeouts};
use crate::error::GatewayError;

/// Owns the pooled HTTP client, the providers' credentials and the timeouts.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    pub(super) http: reqwest::Client,
    pub(super) providers: Arc<BTreeMap<String, Arc<ProviderConfig>>>,
    pub(super) timeouts: UpstreamTimeouts,
    /// AWS credentials and region for SigV4-signed providers, loaded on first use.
    pub(super) aws: Arc<AwsSigner>,
    /// The `bedrock` translator, with the S3 buckets it may name.
    pub(super) bedrock: Arc<bedrock::Bedrock>,
}

impl Dispatcher {
    pub fn new(
        providers: &BTreeMap<String, crate::config::ProviderConfig>,
        timeouts: UpstreamTimeouts,
    ) -> Result<Self, GatewayError> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| GatewayError::Internal(format!("http client: {e}")))?;
        let providers = providers.iter().map(|(name, p)| (name.clone(), Arc::new(p.clone()))).collect();
        Ok(Dispatcher { http, providers: Arc::new(providers), timeouts, aws: Arc::default(), bedrock: Arc::default() })
    }

    /// Lets Bedrock requests name images in these S3 buckets (`MESH_BEDROCK_S3_BUCKETS`).
    #[must_use]
    pub fn with_bedrock_s3_buckets(mut self, buckets: Vec<String>) -> Self {
        self.bedrock = Arc::new(bedrock::Bedrock::with_s3_buckets(buckets));
        self
    }

    pub fn timeouts(&self) -> UpstreamTimeouts {
        self.timeouts
    }

    /// The provider of a catalog row, refusing one without credentials.
    pub fn provider(&self, name: &str) -> Result<Arc<ProviderConfig>, GatewayError> {
        match self.providers.get(name) {
            Some(p) if p.api_key.is_some() || matches!(p.api, ProviderApi::Bedrock | ProviderApi::Echo) => {
                Ok(p.clone())
            }
            _ => Err(GatewayError::ProviderNotAvailable(name.to_owned())),
        }
    }

    /// Sends the request and returns the answer, translated to the Responses API. Nothing may
    /// outlast `deadline` (the request's budget).
    pub async fn call(
        &self,
        route: &Route,
        body: &Map<String, Value>,
        stream: bool,
        ctx: ResponseContext,
        deadline: Instant,
    ) -> Result<Reply, GatewayError> {
        if route.provider.api == ProviderApi::Echo {
            return echo::call(route, body, stream, ctx, deadline, self.timeouts).await;
        }
        let translator = translator_for(route.provider.api, &self.bedrock);
        let request = match translator {
            None if route.provider.api == ProviderApi::Responses => {
                responses::build_request(&route.provider, &route.row, body, stream)?
            }
            None => return Err(GatewayError::ProviderNotAvailable(route.provider.name.clone())),
            Some(translator) => translator.request(&route.provider, &route.row, body, stream)?,
        };
        let response = self
            .exchange(route, request, deadline, |status, headers, bytes| match translator {
                Some(translator) => translator.error(&route.provider.name, status, headers, bytes),
                None => responses::parse_error(&route.provider.name, status, headers, bytes),
            })
            .await?;
        let deadline = deadline.min(Instant::now() + self.timeouts.total);
        match (translator, stream) {
            (None, true) => {
                let mapper = Box::new(responses::PassThrough::new(ctx));
                Ok(Reply::Stream(self.event_source(response, Framing::Sse, mapper, deadline, check_event)))
            }
            (None, false) => {
                let bytes = self.read_body(response, deadline).await?;
                Ok(Reply::Complete(responses::parse_response(&bytes, ctx)?))
            }
            (Some(translator), true) => {
                let mapper = Translated { decoder: translator.decoder(), assembler: Assembler::new(ctx) };
                Ok(Reply::Stream(self.event_source(
                    response,
                    translator.framing(),
                    Box::new(mapper),
                    deadline,
                    check_event,
                )))
            }
            (Some(translator), false) => {
                let bytes = self.read_body(response, deadline).await?;
                Ok(Reply::Complete(assemble_complete(translator.response(&bytes)?, ctx)))
            }
        }
    }

    /// A provider's stream, its events checked by `check`, bounded by the stream timeouts.
    pub(super) fn event_source(
        &self,
        response: reqwest::Response,
        framing: Framing,
        mapper: Box<dyn StreamMapper>,
        deadline: Instant,
        check: Check,
    ) -> EventSource {
        EventSource::upstream(response, framing, mapper, self.timeouts.stream_idle, deadline, check)
    }

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
            self.aws.sign(&route.provider, &mut request).await?;
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

    async fn send(&self, request: UpstreamRequest, deadline: Instant) -> Result<reqwest::Response, GatewayError> {
        let mut builder = self.http.post(&request.url).header("content-type", "application/json").body(request.body);
        for (name, value) in request.headers {
            builder = builder.header(name, value);
        }
        let head_by = deadline.min(Instant::now() + self.timeouts.first_byte);
        match tokio::time::timeout_at(tokio::time::Instant::from_std(head_by), builder.send()).await {
            Err(_) => Err(GatewayError::GatewayTimeout("no response head in time".to_owned())),
            Ok(Err(err)) if err.is_timeout() => Err(GatewayError::GatewayTimeout(err.to_string())),
            Ok(Err(err)) => Err(GatewayError::UpstreamFailure(format!("send: {}", redact(&err)))),
            Ok(Ok(response)) => Ok(response),
        }
    }

    pub(super) async fn read_body(
        &self,
        mut response: reqwest::Response,
        deadline: Instant,
    ) -> Result<Bytes, GatewayError> {
        let mut body = BytesMut::new();
        let read = async {
            while let Some(chunk) = response.chunk().await.map_err(|e| GatewayError::UpstreamFailure(redact(&e)))? {
                if body.len() + chunk.len() > MAX_UPSTREAM_BODY {
                    return Err(GatewayError::UpstreamFailure("provider body exceeds the size limit".to_owned()));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(())
        };
        let by = deadline.min(Instant::now() + self.timeouts.total);
        match tokio::time::timeout_at(tokio::time::Instant::from_std(by), read).await {
            Err(_) => Err(GatewayError::GatewayTimeout("provider body not complete in time".to_owned())),
            Ok(result) => result.map(|()| body.freeze()),
        }
    }
}

pub(super) fn translator_for(api: ProviderApi, bedrock: &bedrock::Bedrock) -> Option<&dyn Translator> {
    match api {
        ProviderApi::Chat => Some(&chat::Chat),
        ProviderApi::Anthropic => Some(&anthropic::Anthropic),
        ProviderApi::Gemini => Some(&gemini::Gemini),
        ProviderApi::Bedrock => Some(bedrock),
        ProviderApi::Responses | ProviderApi::Echo => None,
    }
}

/// A transport error without the URL (which may carry credentials in a query).
fn redact(err: &reqwest::Error) -> String {
    let kind = if err.is_connect() {
        "connect"
    } else if err.is_timeout() {
        "timeout"
    } else if err.is_body() || err.is_decode() {
        "body"
    } else {
        "request"
    };
    format!("{kind} error")
}
