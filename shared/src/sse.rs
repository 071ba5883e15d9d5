//! Server-sent events: an incremental parser for provider streams and the encoder for ours.
//!
//! The parser follows the WHATWG event-stream rules: events may be split across network chunks
//! or packed several to a chunk, lines end in LF, CRLF or CR, lines starting with `:` are
//! comments, and several `data:` lines join with `\n`.

use bytes::{Bytes, BytesMut};

/// One parsed event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
    pub id: Option<String>,
}

/// Incremental parser: feed chunks, take complete events.
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: BytesMut,
    current: SseEvent,
    has_data: bool,
    /// A CR ended the last chunk: a LF starting the next one belongs to it.
    pending_cr: bool,
}

impl SseParser {
    pub fn new() -> Self {
        SseParser::default()
    }

    /// Bytes held while waiting for the end of a line (bounded by the caller's chunk checks).
    pub fn buffered_len(&self) -> usize {
        self.buffer.len() + self.current.data.len()
    }

    /// Feeds one chunk and returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        let mut chunk = chunk;
        if self.pending_cr {
            self.pending_cr = false;
            if chunk.first() == Some(&b'\n') {
                chunk = &chunk[1..];
            }
        }
        self.buffer.extend_from_slice(chunk);
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n' || *b == b'\r') {
            let line = self.buffer.split_to(end);
            let terminator = self.buffer.split_to(1);
            if terminator[0] == b'\r' {
                if self.buffer.first() == Some(&b'\n') {
                    let _ = self.buffer.split_to(1);
                } else if self.buffer.is_empty() {
                    self.pending_cr = true;
                }
            }
            if let Some(event) = self.line(&line) {
                events.push(event);
            }
        }
        events
    }

    /// Ends the stream: an event without its blank line is still delivered.
    pub fn finish(&mut self) -> Option<SseEvent> {
        if !self.buffer.is_empty() {
            let line = self.buffer.split();
            if let Some(event) = self.line(&line) {
                return Some(event);
            }
        }
        self.dispatch()
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let had_data = std::mem::take(&mut self.has_data);
        let event = std::mem::take(&mut self.current);
        had_data.then_some(event)
    }

    fn line(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line[0] == b':' {
            return None;
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (text.as_ref(), ""),
        };
        match field {
            "event" => self.current.event = Some(value.to_owned()),
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            "id" => self.current.id = Some(value.to_owned()),
            _ => {}
        }
        None
    }
}

/// Encodes one event as `event: <type>\ndata: <json>\n\n`.
pub fn encode(event_type: &str, data: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(event_type.len() + data.len() + 16);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event_type.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(b"\n\n");
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        let mut events: Vec<SseEvent> = chunks.iter().flat_map(|c| parser.feed(c)).collect();
        events.extend(parser.finish());
        events
    }

    #[test]
    fn handles_splits_packing_crlf_comments_and_multiline_data() {
        let events = parse_all(&[
            b"event: a\r\nda",
            b"ta: {\"x\":1}\r",
            b"\n\r\n: keep-alive\n\nevent: b\ndata: l1\ndata: l2\n\nevent: c\ndata: 3\n\n",
        ]);
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].event.as_deref(), Some("a"));
        assert_eq!(events[0].data, "{\"x\":1}");
        assert_eq!(events[1].data, "l1\nl2");
        assert_eq!(events[2].event.as_deref(), Some("c"));
    }

    #[test]
    fn byte_by_byte_equals_whole() {
        let text = b"event: response.created\ndata: {\"a\":\"b\"}\n\ndata: [DONE]\n\n";
        let whole = parse_all(&[text]);
        let split: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(parse_all(&split), whole);
        assert_eq!(whole[1].data, "[DONE]");
    }

    #[test]
    fn unterminated_last_event_is_delivered_on_finish() {
        let events = parse_all(&[b"data: tail"]);
        assert_eq!(events, vec![SseEvent { event: None, data: "tail".into(), id: None }]);
    }

    #[test]
    fn encodes_frames() {
        assert_eq!(encode("x", "{}"), Bytes::from_static(b"event: x\ndata: {}\n\n"));
    }
}
