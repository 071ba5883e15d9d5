//! The AWS event-stream decoder Bedrock's ConverseStream goes through
//! (`mesh::providers::bedrock::EventStreamParser`): chunking invariance, frames encoded by the
//! AWS SDK decode back, and any corrupted byte gives an error (prelude and message CRCs), never
//! a panic or a silent event.

use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use bytes::Bytes;
use mesh::providers::bedrock::EventStreamParser;
use mesh::sse::SseEvent;

use crate::fuzz::mutate::{chunking, hash, one_piece};
use crate::fuzz::rng::{Bytes as Input, Rng};

/// Feeds the pieces; `Err` when the parser refused the stream (or it ended inside a frame).
pub fn parse(data: &[u8], pieces: &[std::ops::Range<usize>]) -> Result<Vec<SseEvent>, String> {
    let mut parser = EventStreamParser::default();
    let mut events = Vec::new();
    for piece in pieces {
        events.extend(parser.feed(&data[piece.clone()]).map_err(|e| e.to_string())?);
        assert!(parser.buffered_len() <= data.len(), "buffers more than it was fed");
    }
    parser.finish().map_err(|e| e.to_string())?;
    Ok(events)
}

/// One frame as the AWS SDK writes it.
pub fn frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let headers = headers
        .iter()
        .map(|(name, value)| Header::new((*name).to_owned(), HeaderValue::String((*value).to_owned().into())))
        .collect();
    let message = Message::new_from_parts(headers, Bytes::copy_from_slice(payload));
    let mut out = Vec::new();
    match aws_smithy_eventstream::frame::write_message_to(&message, &mut out) {
        Ok(()) => out,
        Err(_) => Vec::new(),
    }
}

pub fn target(data: &[u8]) {
    let mut input = Input::new(data);
    if input.u8().is_multiple_of(2) {
        raw(input.remaining());
    } else {
        structured(&mut input);
    }
}

/// Arbitrary bytes: no panic, the same outcome under any split, bounded output.
fn raw(data: &[u8]) {
    let whole = parse(data, &one_piece(data.len()));
    if let Ok(events) = &whole {
        // A frame has a 16-byte envelope at least.
        assert!(events.len() <= data.len() / 16);
        let text: usize = events.iter().map(|e| e.data.len() + e.event.as_ref().map_or(0, String::len)).sum();
        assert!(text <= 3 * data.len() + 64 * events.len());
    }
    let mut rng = Rng::new(hash(data));
    let pieces = chunking(&mut rng, data.len(), true);
    let split = parse(data, &pieces);
    match (&whole, &split) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        _ => panic!("whole {whole:?} but split {split:?}"),
    }
}

/// Frames built from the input: they decode back exactly; one corrupted byte is an error.
fn structured(input: &mut Input<'_>) {
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    let count = input.u8() % 8;
    for _ in 0..count {
        let kind = input.string(64);
        let payload = input.take(4096).to_vec();
        let message_type = ["event", "exception", "error"][usize::from(input.u8() % 3)];
        let headers: Vec<(&str, &str)> = match message_type {
            "event" => vec![(":message-type", "event"), (":event-type", &kind), (":content-type", "application/json")],
            "exception" => vec![(":message-type", "exception"), (":exception-type", &kind)],
            _ => vec![(":message-type", "error"), (":error-code", &kind), (":error-message", "m")],
        };
        let encoded = frame(&headers, &payload);
        if encoded.is_empty() {
            return;
        }
        bytes.extend_from_slice(&encoded);
        let lossy = String::from_utf8_lossy(&payload).into_owned();
        expected.push(match message_type {
            "event" => (kind.clone(), Some(lossy)),
            "exception" => (format!("exception:{kind}"), Some(lossy)),
            _ => (format!("error:{kind}"), None),
        });
    }
    let mut rng = Rng::new(hash(&bytes) ^ input.u64());
    let pieces = chunking(&mut rng, bytes.len(), true);
    let events = match parse(&bytes, &pieces) {
        Ok(events) => events,
        Err(e) => panic!("SDK-encoded frames refused: {e}"),
    };
    assert_eq!(events.len(), expected.len());
    for (event, (kind, data)) in events.iter().zip(&expected) {
        assert_eq!(event.event.as_deref(), Some(kind.as_str()));
        if let Some(data) = data {
            assert_eq!(&event.data, data);
        }
    }
    if !bytes.is_empty() {
        let at = rng.below(bytes.len());
        bytes[at] ^= 1 << rng.below(8);
        let corrupted = parse(&bytes, &one_piece(bytes.len()));
        assert!(corrupted.is_err(), "a flipped bit at {at} of {} went unnoticed", bytes.len());
    }
}

pub fn seeds() -> Vec<Vec<u8>> {
    let mut raw: Vec<u8> = vec![0];
    for frame in crate::bedrock_stub::stream_frames(
        &[
            serde_json::json!({"text": "Hi there"}),
            serde_json::json!({"toolUse": {"toolUseId": "t1", "name": "f", "input": {"a": 1}}}),
        ],
        "tool_use",
        false,
    ) {
        raw.extend_from_slice(&frame);
    }
    let mut structured = vec![1, 3];
    for (kind, payload) in [
        ("messageStart", "{\"role\":\"assistant\"}"),
        ("contentBlockDelta", "{\"delta\":{\"text\":\"hi\"}}"),
        ("x", ""),
    ] {
        structured.extend_from_slice(&[kind.len() as u8, 0]);
        structured.extend_from_slice(kind.as_bytes());
        structured.extend_from_slice(&[payload.len() as u8, 0]);
        structured.extend_from_slice(payload.as_bytes());
        structured.push(0);
    }
    vec![raw, structured]
}

pub const TOKENS: &[&str] =
    &[":event-type", ":message-type", "exception", "contentBlockDelta", "messageStop", "metadata"];
