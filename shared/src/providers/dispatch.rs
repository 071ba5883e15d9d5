//! The provider dispatcher: one pooled HTTP client, the providers' credentials and the upstream
//! timeouts for every provider API. A call is built by the API's own module, sent (with the
//! caller's trace context and the provider's credential), its error answers mapped by that
//! module, and its answer read whole or as a stream within the request's deadline.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;

use super::assemble::{Assembler, ResponseContext};
use super::auth::{Auth, AwsSigner};
use super::echo::{self, Played};
use super::sink::{Assembly, Translating};
use super::{
    anthropic, bedrock, chat, gemini, responses, Answer, Body, Completed, EventSource, Reply, Route, UpstreamRequest,
    Wire, MAX_UPSTREAM_BODY,
};
use crate::config::{ProviderApi, ProviderConfig, UpstreamTimeouts};
use crate::error::GatewayError;

/// Owns the pooled HTTP client, the providers' credentials and the timeouts.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    http: reqwest::Client,
    providers: Arc<BTreeMap<String, Arc<ProviderConfig>>>,
    timeouts: UpstreamTimeouts,
    /// AWS credentials and region for SigV4-signed providers, loaded on first use.
    aws: Arc<AwsSigner>,
    /// The `bedrock` translator, with the S3 buckets it may name.
    bedrock: Arc<bedrock::Bedrock>,
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

    /// The `bedrock` translator.
    pub(super) fn bedrock(&self) -> &bedrock::Bedrock {
        &self.bedrock
    }

    /// The provider of a catalog row, refusing one without the credential its API needs.
    pub fn provider(&self, name: &str) -> Result<Arc<ProviderConfig>, GatewayError> {
        match self.providers.get(name) {
            Some(p) if p.api_key.is_some() || Auth::of(p.api).keyless() => Ok(p.clone()),
            _ => Err(GatewayError::ProviderNotAvailable(name.to_owned())),
        }
    }

    /// Sends the request and returns the answer in the Responses API. Nothing may outlast
    /// `deadline` (the request's budget).
    pub async fn call(
        &self,
        route: &Route,
        body: &Body,
        stream: bool,
        ctx: ResponseContext,
        deadline: Instant,
    ) -> Result<Reply, GatewayError> {
        let wire: Box<dyn Wire<Answer = Completed> + '_> = match route.provider.api {
            ProviderApi::Responses => Box::new(responses::PassThrough::new(ctx)),
            ProviderApi::Chat => Translating::boxed(&chat::Chat, Assembler::new(ctx)),
            ProviderApi::Anthropic => Translating::boxed(&anthropic::Anthropic, Assembler::new(ctx)),
            ProviderApi::Gemini => Translating::boxed(&gemini::Gemini, Assembler::new(ctx)),
            ProviderApi::Bedrock => Translating::boxed(self.bedrock(), Assembler::new(ctx)),
            ProviderApi::Echo => return self.play(route, body, stream, deadline, Assembler::new(ctx)).await,
        };
        self.run(route, wire, body, stream, deadline).await
    }

    /// The one path of a provider call over HTTP, for every provider API and endpoint: `wire`'s
    /// request, sent with the provider's credential, its error answer mapped by `wire`, its
    /// answer read whole or as a stream of the client's events.
    pub(super) async fn run<A: Answer>(
        &self,
        route: &Route,
        wire: Box<dyn Wire<Answer = A> + '_>,
        body: &Body,
        stream: bool,
        deadline: Instant,
    ) -> Result<Reply<A>, GatewayError> {
        let request = wire.request(&route.provider, &route.row, body, stream)?;
        let name = route.provider.name.as_str();
        let response = self
            .exchange(route, request, deadline, |status, headers, bytes| wire.error(name, status, headers, bytes))
            .await?;
        let deadline = deadline.min(Instant::now() + self.timeouts.total);
        if stream {
            let framing = wire.framing();
            let idle = self.timeouts.stream_idle;
            return Ok(Reply::Stream(EventSource::upstream(
                response,
                framing,
                wire.stream(),
                idle,
                deadline,
                A::check,
            )));
        }
        let bytes = self.read_body(response, deadline).await?;
        wire.complete(&bytes).map(Reply::Complete)
    }

    /// A call to the in-process `echo` provider, its deltas made into the client's answer by
    /// `sink`, paced within the same bounds as a provider's stream.
    pub(super) async fn play<S: Assembly>(
        &self,
        route: &Route,
        body: &Body,
        stream: bool,
        deadline: Instant,
        sink: S,
    ) -> Result<Reply<S::Complete>, GatewayError> {
        Ok(match echo::play(route, body, stream, deadline, self.timeouts).await? {
            Played::Complete(deltas) => Reply::Complete(sink.complete(deltas)),
            Played::Stream(deltas, deadline) => {
                let idle = self.timeouts.stream_idle;
                Reply::Stream(EventSource::local(
                    deltas,
                    Box::new(sink),
                    idle,
                    deadline,
                    <S::Complete as Answer>::check,
                ))
            }
        })
    }

    /// Sends a built provider request with the caller's trace context and the provider's
    /// credential (as its API's [`Auth`] says) and returns the provider's response once its
    /// status is a success. An error answer is read and mapped by `error` (status, headers, body).
    async fn exchange(
        &self,
        route: &Route,
        mut request: UpstreamRequest,
        deadline: Instant,
        error: impl FnOnce(u16, &HeaderMap, &[u8]) -> GatewayError,
    ) -> Result<reqwest::Response, GatewayError> {
        request.headers.extend(route.trace.iter().cloned());
        Auth::of(route.provider.api).apply(&route.provider, &mut request, &self.aws).await?;
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

    async fn read_body(&self, mut response: reqwest::Response, deadline: Instant) -> Result<Bytes, GatewayError> {
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
