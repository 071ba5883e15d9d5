//! The provider SSE parser (`mesh::sse`): chunking invariance (the same events, or the same
//! refusal, under any split, empty pieces included), the per-line cap, the encode → parse round
//! trip (no data or type ever forges a second frame) and bounded output. Every parser call goes
//! through [`parse`], the one place to adapt when the parser's signature changes. Quadratic
//! work (a long line fed in tiny pieces) shows as a hang in the driver.

use mesh::sse::{encode, is_event_type, SseError, SseEvent, SseParser};

use crate::fuzz::mutate::{chunking, hash, one_piece};
use crate::fuzz::rng::Rng;

/// Parses `data` fed as the given pieces with a line cap, then ends the stream.
pub fn parse_capped(
    data: &[u8],
    pieces: &[std::ops::Range<usize>],
    max_line: usize,
) -> Result<Vec<SseEvent>, SseError> {
    let mut parser = SseParser::with_max_line(max_line);
    let mut events = Vec::new();
    for piece in pieces {
        events.extend(parser.feed(&data[piece.clone()])?);
        assert!(parser.buffered_len() <= 2 * max_line + piece.len() + 2, "holds {} bytes", parser.buffered_len());
    }
    events.extend(parser.finish()?);
    Ok(events)
}

/// Parses `data` fed as the given pieces; a refused stream gives the events before the refusal.
pub fn parse(data: &[u8], pieces: &[std::ops::Range<usize>]) -> Vec<SseEvent> {
    parse_capped(data, pieces, mesh::sse::DEFAULT_MAX_LINE).unwrap_or_default()
}

/// Parses `data` fed whole.
pub fn parse_whole(data: &[u8]) -> Vec<SseEvent> {
    parse(data, &one_piece(data.len()))
}

fn size(events: &[SseEvent]) -> usize {
    events
        .iter()
        .map(|e| e.data.len() + e.event.as_ref().map_or(0, String::len) + e.id.as_ref().map_or(0, String::len))
        .sum()
}

pub fn target(data: &[u8]) {
    let max_line = 16 + (hash(data) % 512) as usize;
    let capped = parse_capped(data, &one_piece(data.len()), max_line);
    if let Ok(events) = &capped {
        assert!(events.iter().all(|e| e.data.len() <= max_line), "event data past the {max_line}-byte cap");
    }
    let whole = parse_whole(data);
    // Bounded output: at most one event per 5 input bytes (`data` + a line end), and no more
    // text than the input (tripled for the U+FFFD of invalid UTF-8).
    assert!(whole.len() <= data.len() / 5 + 1, "{} events from {} bytes", whole.len(), data.len());
    assert!(size(&whole) <= 3 * data.len(), "{} bytes of events from {} bytes", size(&whole), data.len());
    // Chunking invariance: any split, empty pieces included, gives the same events.
    let mut rng = Rng::new(hash(data));
    for _ in 0..3 {
        let pieces = chunking(&mut rng, data.len(), true);
        let sizes: Vec<usize> = pieces.iter().map(|r| r.len()).collect();
        let split = parse(data, &pieces);
        assert_eq!(split, whole, "pieces {sizes:?}");
        let split_capped = parse_capped(data, &pieces, max_line);
        assert_eq!(split_capped.is_ok(), capped.is_ok(), "the {max_line}-byte cap depends on the split {sizes:?}");
        if let (Ok(a), Ok(b)) = (&split_capped, &capped) {
            assert_eq!(a, b);
        }
    }
    // Round trip: every event, encoded the way Mesh writes its own stream, parses back alone,
    // whatever its type and data hold (line breaks in the data come back as `\n`).
    for event in &whole {
        let raw_kind = event.event.clone().unwrap_or_default();
        let kind: String = raw_kind.replace(['\r', '\n'], "");
        let frame = encode(&raw_kind, &event.data);
        let back = parse_whole(&frame);
        let data = event.data.replace("\r\n", "\n").replace('\r', "\n");
        assert_eq!(back, vec![SseEvent { event: Some(kind.clone()), data, id: None }], "{frame:?}");
        if is_event_type(&raw_kind) {
            assert_eq!(kind, raw_kind);
        }
        // Mesh's data is always JSON text: any string, as JSON, round-trips too.
        let json = serde_json::Value::String(event.data.clone()).to_string();
        let back = parse_whole(&encode(&kind, &json));
        assert_eq!(back, vec![SseEvent { event: Some(kind), data: json, id: None }]);
    }
}

pub fn seeds() -> Vec<Vec<u8>> {
    let mut seeds = crate::fuzz::fixtures("sse");
    seeds.extend(
        [
            &b"event: a\r\ndata: {\"x\":1}\r\n\r\n: keep-alive\n\nevent: b\ndata: l1\ndata: l2\n\n"[..],
            b"data: tail",
            b"data: x\rdata: y\r\r",
            b"id: 1\nretry: 5\ndata\n\n",
            b":\n:\n\n\n\ndata:no-space\n\n",
        ]
        .iter()
        .map(|s| s.to_vec()),
    );
    seeds
}

pub const TOKENS: &[&str] = &["data: ", "event: ", "id: ", ": comment", "data:", "\r\n\r\n", "\n\n", "[DONE]"];
