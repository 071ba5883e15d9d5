//! `POST /v1/chat/completions`: the same stages as `/v1/responses` (key, body, model, limits,
//! template, plugins, balance and spend cap in [`admit`](super::responses::admit); failover,
//! retries and breakers in [`route_via`]; settlement), answered as Chat Completions: a
//! `chat.completion` object, or `chat.completion.chunk`s streamed by [`super::chat_stream`].
//! Chat completions are not stored.

use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;

use super::chat_stream::stream_response;
use super::responses::{admit, complete_response, serve, Admitted, Endpoint, Incoming, Meta};
use super::AppState;
use crate::accounting::settle;
use crate::chat_completions::{self, ChatSurface};
use crate::domain::UsageStatus;
use crate::error::GatewayError;
use crate::pipeline::failover::{route_via, Served};
use crate::providers::completions::ChatReply;
use crate::routing::Deadline;

/// The handler.
pub async fn create(State(state): State<AppState>, incoming: Incoming) -> Response {
    serve(state, incoming, Endpoint::ChatCompletions).await
}

/// The pipeline for one Chat Completions request.
pub(super) async fn handle(
    state: &AppState,
    incoming: Incoming,
    deadline: Deadline,
    meta: &mut Meta,
) -> Result<Response, GatewayError> {
    let Admitted { ids, key, request, plan, trace, mut pending } =
        admit(state, incoming, meta, chat_completions::parse).await?;
    let surface = ChatSurface::new(&request, &plan);
    let routed = route_via(state, &plan, &surface, &key, &trace, deadline, &mut meta.routing).await;
    let served = pending.routed(routed, &meta.routing)?;
    tracing::debug!(request_id = %ids.request_id, key_id = %key.id, provider = %served.provider.name, "served");
    let Served { reply, body: sent, .. } = served;
    drop(sent);
    let ticket = pending.take().ok_or_else(|| GatewayError::Internal("request settled twice".to_owned()))?;
    match reply {
        ChatReply::Complete(mut done) => {
            if let Some(error) = done.error.take() {
                // The provider failed mid-answer: what it reported is billed, the client gets a 502.
                state.tasks.spawn(settle(state.cached.clone(), ticket, done.usage, UsageStatus::Failed));
                return Err(GatewayError::UpstreamFailure(format!("the provider failed mid-answer: {error}")));
            }
            if let Err(err) = chat_completions::after(&plan, &request, &mut done.completion) {
                state.tasks.spawn(settle(state.cached.clone(), ticket, done.usage, UsageStatus::Error));
                return Err(err);
            }
            drop((plan, request));
            let body =
                Bytes::from(serde_json::to_vec(&done.completion).map_err(|e| GatewayError::Internal(e.to_string()))?);
            Ok(complete_response(state, body, None, ticket, done.usage, done.status))
        }
        ChatReply::Stream(source) => {
            let include_usage = request.include_usage;
            drop((plan, request));
            Ok(stream_response(state, source, ticket, include_usage))
        }
    }
}
