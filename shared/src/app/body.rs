//! Request bodies: one reader for every route, bounded in size and in time, run as middleware
//! before any handler so no route reads a body on its own terms.
//!
//! - Size: at most [`MAX_BODY_BYTES`]; a larger declared `content-length` is refused before
//!   reading, a longer body as soon as it passes the cap: 413 `request_too_large`.
//! - Time: at most [`BODY_IDLE_TIMEOUT`] between two pieces of the body and
//!   [`BODY_TOTAL_TIMEOUT`] for all of it: 408 `request_timeout`. (Under Lambda the body is
//!   already in memory and these never fire.)
//!
//! Refusals are answered in the JSON error envelope with `connection: close`, since the rest of
//! the body is left unread.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use http_body_util::BodyExt;
use tokio::time::Instant;

use crate::error::GatewayError;
use crate::request::MAX_BODY_BYTES;

/// Longest wait for the next piece of a request body.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest time for a whole request body to arrive.
pub const BODY_TOTAL_TIMEOUT: Duration = Duration::from_secs(30);

/// Middleware: reads the whole body within the bounds, then runs the handler with it in memory.
pub async fn bounded(request: Request, next: Next) -> Response {
    // `POST /v1/responses` and `POST /v1/chat/completions` authenticate from the headers first
    // and read their bodies themselves, with [`read`] and the same bounds: a refused key costs
    // no body read.
    if request.method() == http::Method::POST && SELF_READING.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    match read(&parts.headers, body, BODY_IDLE_TIMEOUT, BODY_TOTAL_TIMEOUT).await {
        Ok(bytes) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Err(err) => ([(http::header::CONNECTION, HeaderValue::from_static("close"))], err).into_response(),
    }
}

/// Routes whose handlers read their own bodies (after authenticating).
const SELF_READING: [&str; 2] = ["/v1/responses", "/v1/chat/completions"];

fn too_large() -> GatewayError {
    GatewayError::RequestTooLarge { limit_bytes: MAX_BODY_BYTES }
}

/// Reads a body of at most [`MAX_BODY_BYTES`], waiting at most `idle` for each piece and `total`
/// for all of them.
pub async fn read(headers: &HeaderMap, mut body: Body, idle: Duration, total: Duration) -> Result<Bytes, GatewayError> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(too_large());
    }
    let deadline = Instant::now() + total;
    // One piece (the usual case, and always under Lambda) is passed on without a copy.
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    let mut length = 0usize;
    loop {
        let wait = idle.min(deadline.saturating_duration_since(Instant::now()));
        let frame = match tokio::time::timeout(wait, body.frame()).await {
            Err(_) => return Err(GatewayError::RequestTimeout { idle, total }),
            Ok(None) => break,
            Ok(Some(Err(_))) => {
                return Err(GatewayError::InvalidRequest {
                    code: "invalid_json",
                    message: "The request body could not be read.".to_owned(),
                    param: None,
                })
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        length = length.saturating_add(data.len());
        if length > MAX_BODY_BYTES {
            return Err(too_large());
        }
        if let Some(buffer) = joined.as_mut() {
            buffer.extend_from_slice(&data);
        } else if let Some(previous) = first.take() {
            let mut buffer = BytesMut::with_capacity(declared.unwrap_or(length).max(length));
            buffer.extend_from_slice(&previous);
            buffer.extend_from_slice(&data);
            joined = Some(buffer);
        } else {
            first = Some(data);
        }
    }
    Ok(match joined {
        Some(buffer) => buffer.freeze(),
        None => first.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    /// A body that sends `pieces` with a pause of `gap` before each.
    fn trickle(pieces: usize, gap: Duration) -> Body {
        let stream = futures_util::stream::iter(0..pieces).then(move |_| async move {
            tokio::time::sleep(gap).await;
            Ok::<Bytes, std::io::Error>(Bytes::from_static(b"ab"))
        });
        Body::from_stream(stream)
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_keeps_trickling_is_cut_at_the_total_bound() {
        // Every piece comes within the idle bound, but together they pass the total one.
        let err = read(&HeaderMap::new(), trickle(100, Duration::from_secs(9)), BODY_IDLE_TIMEOUT, BODY_TOTAL_TIMEOUT)
            .await
            .unwrap_err();
        assert_eq!((err.status().as_u16(), err.kind()), (408, "request_timeout"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_is_cut_at_the_idle_bound() {
        let started = Instant::now();
        let err = read(&HeaderMap::new(), trickle(2, Duration::from_secs(11)), BODY_IDLE_TIMEOUT, BODY_TOTAL_TIMEOUT)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "request_timeout");
        let elapsed = started.elapsed();
        assert!((BODY_IDLE_TIMEOUT..Duration::from_secs(11)).contains(&elapsed), "at the idle bound: {elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn pieces_within_both_bounds_are_joined() {
        let bytes = read(&HeaderMap::new(), trickle(3, Duration::from_secs(9)), BODY_IDLE_TIMEOUT, BODY_TOTAL_TIMEOUT)
            .await
            .unwrap();
        assert_eq!(&bytes[..], b"ababab");
    }

    #[tokio::test]
    async fn size_is_bounded_by_declaration_and_by_content() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(MAX_BODY_BYTES + 1));
        let err = read(&headers, Body::empty(), BODY_IDLE_TIMEOUT, BODY_TOTAL_TIMEOUT).await.unwrap_err();
        assert_eq!((err.status().as_u16(), err.kind()), (413, "request_too_large"));
        let pieces = futures_util::stream::iter([vec![b'a'; MAX_BODY_BYTES], vec![b'b']])
            .map(|piece| Ok::<Bytes, std::io::Error>(Bytes::from(piece)));
        let err = read(&HeaderMap::new(), Body::from_stream(pieces), BODY_IDLE_TIMEOUT, BODY_TOTAL_TIMEOUT)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "request_too_large", "undeclared (chunked) bodies too");
        let exact =
            read(&HeaderMap::new(), Body::from(vec![b'a'; MAX_BODY_BYTES]), BODY_IDLE_TIMEOUT, BODY_TOTAL_TIMEOUT)
                .await
                .unwrap();
        assert_eq!(exact.len(), MAX_BODY_BYTES);
    }
}
