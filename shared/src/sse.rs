//! Server-sent events: an incremental parser for provider streams and the encoder for ours.
//!
//! The parser follows the WHATWG event-stream rules: events may be split across network chunks
//! or packed several to a chunk, lines end in LF, CRLF or CR, lines starting with `:` are
//! comments, and several `data:` lines join with `\n`. Its work is linear in its input: the
//! bytes of an unfinished line are searched once, however many chunks it arrives in, and a line
//! (or an event's data) longer than the parser's limit fails the stream.

use bytes::{Bytes, BytesMut};

/// Longest line, and longest data of one event, a parser accepts by default.
pub const DEFAULT_MAX_LINE: usize = 32 * 1024 * 1024;

/// Longest event type Mesh reads from a provider or writes to a client.
pub const MAX_EVENT_TYPE: usize = 128;

/// One parsed event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
    pub id: Option<String>,
}

/// Why a parser stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("a line or an event's data is longer than {limit} bytes")]
    TooLarge { limit: usize },
}

/// Incremental parser: feed chunks, take complete events.
#[derive(Debug)]
pub struct SseParser {
    buffer: BytesMut,
    /// Bytes at the front of `buffer` already searched for a line end, without finding one.
    scanned: usize,
    current: SseEvent,
    has_data: bool,
    /// A CR ended the last chunk: a LF starting the next one belongs to it.
    pending_cr: bool,
    /// Longest line, and longest data of one event.
    max_line: usize,
    /// Bytes searched for line ends so far (each byte of input is searched once).
    #[cfg(test)]
    searched: usize,
}

impl Default for SseParser {
    fn default() -> Self {
        SseParser::with_max_line(DEFAULT_MAX_LINE)
    }
}

impl SseParser {
    pub fn new() -> Self {
        SseParser::default()
    }

    /// A parser refusing lines (and event data) longer than `max_line` bytes.
    pub fn with_max_line(max_line: usize) -> Self {
        SseParser {
            buffer: BytesMut::new(),
            scanned: 0,
            current: SseEvent::default(),
            has_data: false,
            pending_cr: false,
            max_line,
            #[cfg(test)]
            searched: 0,
        }
    }

    /// Bytes held while waiting for the end of a line or of an event.
    pub fn buffered_len(&self) -> usize {
        self.buffer.len() + self.current.data.len()
    }

    /// Feeds one chunk and returns the events it completed. After an error the stream is to be
    /// abandoned.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let mut events = Vec::new();
        let mut chunk = chunk;
        if self.pending_cr {
            if chunk.is_empty() {
                // The LF that may complete the CR is still to come.
                return Ok(events);
            }
            self.pending_cr = false;
            if chunk.first() == Some(&b'\n') {
                chunk = &chunk[1..];
            }
        }
        self.buffer.extend_from_slice(chunk);
        loop {
            let unsearched = self.buffer.get(self.scanned..).unwrap_or_default();
            let found = unsearched.iter().position(|b| *b == b'\n' || *b == b'\r');
            #[cfg(test)]
            {
                self.searched += found.map_or(unsearched.len(), |at| at + 1);
            }
            let Some(offset) = found else {
                self.scanned = self.buffer.len();
                if self.scanned > self.max_line {
                    return Err(SseError::TooLarge { limit: self.max_line });
                }
                return Ok(events);
            };
            let end = self.scanned + offset;
            if end > self.max_line {
                return Err(SseError::TooLarge { limit: self.max_line });
            }
            self.scanned = 0;
            let line = self.buffer.split_to(end);
            let terminator = self.buffer.split_to(1);
            if terminator.first() == Some(&b'\r') {
                if self.buffer.first() == Some(&b'\n') {
                    let _ = self.buffer.split_to(1);
                } else if self.buffer.is_empty() {
                    self.pending_cr = true;
                }
            }
            if let Some(event) = self.line(&line)? {
                events.push(event);
            }
        }
    }

    /// Ends the stream: an event without its blank line is still delivered.
    pub fn finish(&mut self) -> Result<Option<SseEvent>, SseError> {
        if !self.buffer.is_empty() {
            let line = self.buffer.split();
            self.scanned = 0;
            if let Some(event) = self.line(&line)? {
                return Ok(Some(event));
            }
        }
        Ok(self.dispatch())
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let had_data = std::mem::take(&mut self.has_data);
        let event = std::mem::take(&mut self.current);
        had_data.then_some(event)
    }

    fn line(&mut self, line: &[u8]) -> Result<Option<SseEvent>, SseError> {
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        if line[0] == b':' {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (text.as_ref(), ""),
        };
        match field {
            "event" => self.current.event = Some(value.to_owned()),
            "data" => {
                if self.current.data.len() + value.len() + 1 > self.max_line {
                    return Err(SseError::TooLarge { limit: self.max_line });
                }
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            "id" => self.current.id = Some(value.to_owned()),
            _ => {}
        }
        Ok(None)
    }
}

/// Whether `name` may be a Responses stream event type: 1 to [`MAX_EVENT_TYPE`] bytes of
/// lowercase ASCII letters, digits, `_` and `.`, starting with a letter (`response.completed`,
/// `response.output_text.delta`, `error`). Anything else (a CR or LF above all, which would end
/// the `event:` line and let the rest forge frames) is refused.
pub fn is_event_type(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.first().is_some_and(u8::is_ascii_lowercase)
        && bytes.len() <= MAX_EVENT_TYPE
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'.')
}

/// Encodes one event as `event: <type>\ndata: <json>\n\n`.
///
/// Never writes a line break the caller did not mean as framing: CR and LF are dropped from
/// the type, and a data value holding line breaks is written as several `data:` lines (which a
/// client joins back with `\n`). Callers validate types with [`is_event_type`]; this is the
/// last line of defence against a forged frame.
pub fn encode(event_type: &str, data: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(event_type.len() + data.len() + 16);
    out.extend_from_slice(b"event: ");
    out.extend(event_type.bytes().filter(|b| *b != b'\r' && *b != b'\n'));
    out.extend_from_slice(b"\n");
    let mut rest = data;
    loop {
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
        let (line, after) = rest.split_at(end);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\n");
        if after.is_empty() {
            break;
        }
        // A CRLF pair is one line break.
        rest = after.strip_prefix("\r\n").unwrap_or_else(|| after.get(1..).unwrap_or_default());
    }
    out.extend_from_slice(b"\n");
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        let mut events: Vec<SseEvent> = chunks.iter().flat_map(|c| parser.feed(c).unwrap()).collect();
        events.extend(parser.finish().unwrap());
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

    /// A 36 MB line in 1 KB chunks: each byte is searched for a line end exactly once (no
    /// rescanning of the unfinished line), and the chunk that takes the line past the limit fails.
    #[test]
    fn a_long_line_is_searched_once_and_fails_at_the_limit() {
        let mut parser = SseParser::new();
        let chunk = [b'a'; 1024];
        assert!(parser.feed(b"data: ").unwrap().is_empty());
        let mut fed = 6;
        let mut outcome = None;
        for _ in 0..(36 * 1024) {
            match parser.feed(&chunk) {
                Ok(events) => {
                    assert!(events.is_empty());
                    fed += chunk.len();
                    assert_eq!(parser.searched, fed, "every byte fed was searched once");
                    assert!(fed <= DEFAULT_MAX_LINE);
                }
                Err(err) => {
                    outcome = Some(err);
                    break;
                }
            }
        }
        assert_eq!(outcome, Some(SseError::TooLarge { limit: DEFAULT_MAX_LINE }));
        assert!(fed + chunk.len() > DEFAULT_MAX_LINE, "failed at the chunk crossing the limit, not before");
        assert_eq!(parser.searched, fed + chunk.len(), "the failing chunk was searched once too");
    }

    #[test]
    fn events_are_found_in_linear_work_however_they_are_cut() {
        let text = b"event: response.output_text.delta\r\ndata: {\"delta\":\"hello\"}\r\n\r\n".repeat(50);
        for size in [1, 7, 64, text.len()] {
            let mut parser = SseParser::new();
            let events: usize = text.chunks(size).map(|c| parser.feed(c).unwrap().len()).sum();
            assert_eq!(events, 50);
            assert!(parser.searched <= text.len(), "searched {} of {} bytes", parser.searched, text.len());
        }
    }

    #[test]
    fn lines_and_event_data_past_the_limit_fail() {
        let mut parser = SseParser::with_max_line(16);
        assert!(parser.feed(b"data: 0123456789\n").unwrap().is_empty(), "16 bytes is allowed");
        assert_eq!(parser.feed(b"data: 0123456789A\n"), Err(SseError::TooLarge { limit: 16 }));
        // Many short data lines of one event add up.
        let mut parser = SseParser::with_max_line(16);
        assert!(parser.feed(b"data: 12345\ndata: 12345\n").unwrap().is_empty());
        assert_eq!(parser.feed(b"data: 12345\n"), Err(SseError::TooLarge { limit: 16 }));
        // An unfinished line is refused as soon as it passes the limit.
        let mut parser = SseParser::with_max_line(16);
        assert!(parser.feed(b"data: 01234").unwrap().is_empty());
        assert_eq!(parser.feed(b"56789AB"), Err(SseError::TooLarge { limit: 16 }));
    }

    #[test]
    fn event_types_follow_the_responses_grammar() {
        for good in ["response.completed", "response.output_text.delta", "error", "response.mcp_call.in_progress", "a1"]
        {
            assert!(is_event_type(good), "{good}");
        }
        let long = "a".repeat(MAX_EVENT_TYPE + 1);
        for bad in [
            "",
            "response.output_text.delta\n\nevent: response.completed",
            "response.completed\r",
            "Response.completed",
            "response completed",
            "1response",
            ".response",
            "response-completed",
            "réponse",
            long.as_str(),
        ] {
            assert!(!is_event_type(bad), "{bad:?}");
        }
        assert!(is_event_type(&"a".repeat(MAX_EVENT_TYPE)));
    }

    #[test]
    fn encodes_frames() {
        assert_eq!(encode("x", "{}"), Bytes::from_static(b"event: x\ndata: {}\n\n"));
    }

    #[test]
    fn the_encoder_cannot_forge_frames() {
        let forged = "response.output_text.delta\n\nevent: response.completed\r\ndata: {}\n";
        let frame = encode(forged, "{\"a\":1}\n\nevent: response.completed\r\ndata: {}");
        let mut parser = SseParser::new();
        let mut events = parser.feed(&frame).unwrap();
        events.extend(parser.finish().unwrap());
        assert_eq!(events.len(), 1, "one frame in, one event out: {events:?}");
        assert_eq!(events[0].event.as_deref(), Some("response.output_text.deltaevent: response.completeddata: {}"));
        assert_eq!(events[0].data, "{\"a\":1}\n\nevent: response.completed\ndata: {}", "data lines join back");
        assert_eq!(encode("x", "a\nb"), Bytes::from_static(b"event: x\ndata: a\ndata: b\n\n"));
    }
}
