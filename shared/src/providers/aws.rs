//! AWS plumbing for the `bedrock` provider API, apart from its translation: SigV4 signing of
//! a request (the AWS SDK's signer) and the AWS event stream framing of ConverseStream answers
//! (`application/vnd.amazon.eventstream`, decoded by the SDK into [`SseEvent`]s so one stream
//! loop serves every provider).

use std::time::SystemTime;

use bytes::{Buf, BytesMut};
use serde_json::json;

use super::{StreamFault, UpstreamRequest};
use crate::error::GatewayError;
use crate::sse::SseEvent;

/// The SigV4 service name of the Bedrock runtime.
pub const SIGNING_SERVICE: &str = "bedrock";

/// Adds SigV4 headers (`authorization`, `x-amz-date`, and `x-amz-security-token` for temporary
/// credentials) to a request. Every header already on the request is signed.
pub fn sign(
    request: &mut UpstreamRequest,
    credentials: &aws_credential_types::Credentials,
    region: &str,
    time: SystemTime,
) -> Result<(), GatewayError> {
    use aws_sigv4::http_request::{sign as sigv4, SignableBody, SignableRequest, SigningSettings};
    let failed = |e: &dyn std::fmt::Display| GatewayError::Internal(format!("sigv4: {e}"));
    let identity = credentials.clone().into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SIGNING_SERVICE)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| failed(&e))?
        .into();
    let mut signed: Vec<(&str, &str)> = vec![("content-type", "application/json")];
    signed.extend(request.headers.iter().map(|(name, value)| (*name, value.as_str())));
    let signable = SignableRequest::new("POST", &request.url, signed.into_iter(), SignableBody::Bytes(&request.body))
        .map_err(|e| failed(&e))?;
    let (instructions, _) = sigv4(signable, &params).map_err(|e| failed(&e))?.into_parts();
    for (name, value) in instructions.headers() {
        let name = match name {
            "authorization" => "authorization",
            "x-amz-date" => "x-amz-date",
            "x-amz-security-token" => "x-amz-security-token",
            "x-amz-content-sha256" => "x-amz-content-sha256",
            other => return Err(GatewayError::Internal(format!("sigv4: unexpected header `{other}`"))),
        };
        request.headers.push((name, value.to_owned()));
    }
    Ok(())
}

/// The signing region of a Bedrock runtime endpoint (`bedrock-runtime[-fips].REGION.amazonaws.com`),
/// `None` for other hosts (a VPC endpoint or a local stub: the SDK's region applies).
pub fn endpoint_region(base_url: &str) -> Option<String> {
    let host = base_url.split("://").nth(1)?.split(['/', ':']).next()?;
    let mut labels = host.split('.');
    let service = labels.next()?;
    let region = labels.next()?;
    (service.starts_with("bedrock-runtime") && host.ends_with(".amazonaws.com") && !region.is_empty())
        .then(|| region.to_owned())
}

/// Decodes an AWS event stream (`application/vnd.amazon.eventstream`) into events: the
/// `:event-type` header names an event, `exception:<:exception-type>` an exception and
/// `error:<:error-code>` an error; the payload is the data.
///
/// Each frame states its total length in its first four bytes: a length under the smallest
/// frame is malformed and one over the limit fails at once (before any of it is buffered), and
/// a frame is decoded (CRCs checked by the SDK) only once whole, so a frame arriving in many
/// chunks costs one 4-byte look per chunk, not a rescan.
#[derive(Debug)]
pub struct EventStreamParser {
    buffer: BytesMut,
    max_frame: usize,
}

/// The smallest frame: a 12-byte prelude and a 4-byte message CRC.
const MIN_FRAME: usize = 16;

impl Default for EventStreamParser {
    fn default() -> Self {
        EventStreamParser::with_max_frame(super::MAX_UPSTREAM_BODY)
    }
}

impl EventStreamParser {
    /// A parser refusing frames longer than `max_frame` bytes.
    pub fn with_max_frame(max_frame: usize) -> Self {
        EventStreamParser { buffer: BytesMut::new(), max_frame }
    }

    pub fn buffered_len(&self) -> usize {
        self.buffer.len()
    }

    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, StreamFault> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(prefix) = self.buffer.first_chunk::<4>() {
            let declared = usize::try_from(u32::from_be_bytes(*prefix)).unwrap_or(usize::MAX);
            if declared < MIN_FRAME {
                return Err(StreamFault::Malformed(format!("bedrock event stream frame of {declared} bytes")));
            }
            if declared > self.max_frame {
                return Err(StreamFault::TooLarge);
            }
            if self.buffer.len() < declared {
                break;
            }
            let frame = self.buffer.split_to(declared).freeze();
            let message = aws_smithy_eventstream::frame::read_message_from(frame)
                .map_err(|e| StreamFault::Malformed(format!("bedrock event stream frame: {e}")))?;
            events.push(frame_event(&message));
        }
        Ok(events)
    }

    /// Bytes left over at the end of the stream are a truncated frame.
    pub fn finish(&mut self) -> Result<(), StreamFault> {
        if self.buffer.has_remaining() {
            return Err(StreamFault::Malformed("bedrock event stream ended inside a frame".to_owned()));
        }
        Ok(())
    }
}

fn frame_event(message: &aws_smithy_types::event_stream::Message) -> SseEvent {
    let header = |name: &str| {
        message
            .headers()
            .iter()
            .find(|h| h.name().as_str() == name)
            .and_then(|h| h.value().as_string().ok())
            .map(|s| s.as_str().to_owned())
    };
    let payload = String::from_utf8_lossy(message.payload()).into_owned();
    let (event, data) = match header(":message-type").as_deref() {
        Some("exception") => (format!("exception:{}", header(":exception-type").unwrap_or_default()), payload),
        Some("error") => (
            format!("error:{}", header(":error-code").unwrap_or_default()),
            json!({"message": header(":error-message").unwrap_or_default()}).to_string(),
        ),
        _ => (header(":event-type").unwrap_or_default(), payload),
    };
    SseEvent { event: Some(event), data, id: None }
}
