//! A provider stream read one client event at a time: frames parsed (SSE or the AWS event
//! stream), mapped to the client's events, each checked before it is queued, with idle and total
//! time bounds; or deltas made in process, assembled the same way.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::assemble::Delta;
use super::{bedrock, DeltaSink, Framing, StreamFault, StreamMapper, MAX_UPSTREAM_BODY};
use crate::sse::{SseEvent, SseParser};

/// What every event of a stream must pass before it is queued for the client.
pub(super) type Check = fn(&Value) -> Result<(), StreamFault>;

/// A stream's frame parser.
#[derive(Debug)]
enum Frames {
    Sse(SseParser),
    EventStream(bedrock::EventStreamParser),
}

impl Frames {
    fn new(framing: Framing) -> Self {
        match framing {
            Framing::Sse => Frames::Sse(SseParser::with_max_line(MAX_UPSTREAM_BODY)),
            Framing::EventStream => Frames::EventStream(bedrock::EventStreamParser::default()),
        }
    }

    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, StreamFault> {
        match self {
            Frames::Sse(parser) => Ok(parser.feed(chunk)?),
            Frames::EventStream(parser) => parser.feed(chunk),
        }
    }

    fn buffered_len(&self) -> usize {
        match self {
            Frames::Sse(parser) => parser.buffered_len(),
            Frames::EventStream(parser) => parser.buffered_len(),
        }
    }

    fn finish(&mut self) -> Result<Option<SseEvent>, StreamFault> {
        match self {
            Frames::Sse(parser) => Ok(parser.finish()?),
            Frames::EventStream(parser) => parser.finish().map(|()| None),
        }
    }
}

/// A provider stream, read one Responses event at a time with an idle timeout.
pub struct EventSource {
    input: StreamInput,
    pending: VecDeque<Value>,
    idle: Duration,
    deadline: tokio::time::Instant,
    ended: bool,
    /// What broke the stream, reported once the events before it are taken.
    fault: Option<StreamFault>,
    /// What every event must pass before it is queued ([`super::check_event`] for Responses events).
    check: Check,
}

/// Deltas produced in process (the `echo` provider), paced as a provider would send them.
pub type LocalDeltas = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Delta, StreamFault>> + Send>>;

/// Where a stream's events come from.
enum StreamInput {
    /// A provider's HTTP body: frames parsed, then mapped to Responses events.
    Upstream { response: reqwest::Response, parser: Frames, mapper: Box<dyn StreamMapper> },
    /// Deltas made in process, assembled into the client's events.
    Local { deltas: LocalDeltas, assembler: Box<dyn DeltaSink> },
}

impl std::fmt::Debug for EventSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSource").field("pending", &self.pending.len()).finish_non_exhaustive()
    }
}

impl EventSource {
    /// A provider's stream (`response`, framed as `framing`), mapped by `mapper` into events that
    /// each pass `check`; nothing for `idle` or past `deadline` fails it.
    pub(super) fn upstream(
        response: reqwest::Response,
        framing: Framing,
        mapper: Box<dyn StreamMapper>,
        idle: Duration,
        deadline: Instant,
        check: Check,
    ) -> Self {
        Self::new(StreamInput::Upstream { response, parser: Frames::new(framing), mapper }, idle, deadline, check)
    }

    /// A stream of deltas made in process, made into events by `sink`, with the same idle and
    /// total bounds as a provider's.
    pub(super) fn local(
        deltas: LocalDeltas,
        sink: Box<dyn DeltaSink>,
        idle: Duration,
        deadline: Instant,
        check: Check,
    ) -> Self {
        Self::new(StreamInput::Local { deltas, assembler: sink }, idle, deadline, check)
    }

    fn new(input: StreamInput, idle: Duration, deadline: Instant, check: Check) -> Self {
        EventSource {
            input,
            pending: VecDeque::new(),
            idle,
            deadline: tokio::time::Instant::from_std(deadline),
            ended: false,
            fault: None,
            check,
        }
    }

    /// The next event, `Ok(None)` at the end of the stream. Events that arrived before a fault
    /// are taken first, then the fault, then nothing more.
    pub async fn next(&mut self) -> Result<Option<Value>, StreamFault> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            if let Some(fault) = self.fault.take() {
                self.ended = true;
                let ending = self.abort(&fault);
                if ending.is_empty() {
                    return Err(fault);
                }
                // The answer was ended with what came before the fault: the caller sees a
                // complete sequence whose terminal event says it failed.
                tracing::warn!(error = %fault, "provider stream failed; the answer was closed as failed");
                self.pending.extend(ending);
                continue;
            }
            if self.ended {
                return Ok(None);
            }
            let wait = self.idle.min(self.deadline.saturating_duration_since(tokio::time::Instant::now()));
            let timed_out = |deadline: tokio::time::Instant, idle: Duration| {
                if tokio::time::Instant::now() >= deadline {
                    StreamFault::Deadline
                } else {
                    StreamFault::Idle(idle)
                }
            };
            let taken = match &mut self.input {
                StreamInput::Upstream { response, .. } => match tokio::time::timeout(wait, response.chunk()).await {
                    Err(_) => Err(timed_out(self.deadline, self.idle)),
                    Ok(Err(_)) => Err(StreamFault::Network),
                    Ok(Ok(Some(bytes))) => self.take_chunk(&bytes),
                    Ok(Ok(None)) => {
                        self.ended = true;
                        self.take_end()
                    }
                },
                StreamInput::Local { deltas, assembler } => {
                    use futures_util::StreamExt;
                    match tokio::time::timeout(wait, deltas.next()).await {
                        Err(_) => Err(timed_out(self.deadline, self.idle)),
                        Ok(Some(Err(fault))) => Err(fault),
                        Ok(Some(Ok(delta))) => {
                            let events = assembler.push(delta);
                            self.push(events)
                        }
                        Ok(None) => {
                            self.ended = true;
                            let events = assembler.end();
                            self.push(events)
                        }
                    }
                }
            };
            if let Err(fault) = taken {
                self.fault = Some(fault);
            }
        }
    }

    fn take_chunk(&mut self, bytes: &[u8]) -> Result<(), StreamFault> {
        let StreamInput::Upstream { parser, mapper, .. } = &mut self.input else { return Ok(()) };
        let mut mapped = Vec::new();
        let mut outcome = Ok(());
        for event in parser.feed(bytes)? {
            match mapper.map(event) {
                Ok(events) => mapped.extend(events),
                Err(fault) => {
                    outcome = Err(fault);
                    break;
                }
            }
        }
        if outcome.is_ok() && parser.buffered_len() > MAX_UPSTREAM_BODY {
            outcome = Err(StreamFault::TooLarge);
        }
        self.push(mapped)?;
        outcome
    }

    /// The events ending the answer after `fault`, from whatever builds it (none if it cannot).
    /// Each passes the source's check; one that does not is dropped with the rest, and the
    /// caller ends the stream itself.
    fn abort(&mut self, fault: &StreamFault) -> Vec<Value> {
        let events = match &mut self.input {
            StreamInput::Upstream { mapper, .. } => mapper.abort(fault),
            StreamInput::Local { assembler, .. } => assembler.abort(fault),
        };
        if events.iter().all(|event| (self.check)(event).is_ok()) {
            events
        } else {
            Vec::new()
        }
    }

    fn take_end(&mut self) -> Result<(), StreamFault> {
        let StreamInput::Upstream { parser, mapper, .. } = &mut self.input else { return Ok(()) };
        let mut mapped = Vec::new();
        if let Some(event) = parser.finish()? {
            mapped.extend(mapper.map(event)?);
        }
        mapped.extend(mapper.finish());
        self.push(mapped)
    }

    /// Queues mapped events once each passes the source's check (Responses: [`super::check_event`]).
    fn push(&mut self, events: Vec<Value>) -> Result<(), StreamFault> {
        for event in events {
            (self.check)(&event)?;
            self.pending.push_back(event);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::assemble::{Assembler, ResponseContext};
    use crate::providers::sink::Translated;
    use crate::providers::{chat, check_event, responses, Translator};
    use serde_json::Map;

    /// A stream over a fixed body, mapped by `mapper` and read by `parser`.
    fn source(body: &'static str, parser: Frames, mapper: Box<dyn StreamMapper>) -> EventSource {
        let response = reqwest::Response::from(http::Response::new(body));
        let input = StreamInput::Upstream { response, parser, mapper };
        EventSource::new(input, Duration::from_secs(5), Instant::now() + Duration::from_secs(5), check_event)
    }

    /// A pass-through stream over a fixed body.
    fn passed(body: &'static str, parser: Frames) -> EventSource {
        let ctx = ResponseContext::new("openai/gpt-4o", &Map::new());
        source(body, parser, Box::new(responses::PassThrough::new(ctx)))
    }

    #[tokio::test]
    async fn hostile_events_fail_the_stream_instead_of_reaching_the_client() {
        let created = "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"r\",\"model\":\"m\"}}\n\n";
        for hostile in [
            "event: response.in_progress\ndata: {\"type\":\"response.in_progress\",\"response\":42}\n\n",
            "event: response.in_progress\ndata: {\"type\":\"response.in_progress\",\"response\":\"x\"}\n\n",
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\\n\\nevent: response.completed\"}\n\n",
            // No `type` in the data: the `event:` name is used, and checked the same way.
            "event: Response.Completed\ndata: {\"delta\":\"x\"}\n\n",
        ] {
            let body: &'static str = format!("{created}{hostile}").leak();
            let mut source = passed(body, Frames::new(Framing::Sse));
            let first = source.next().await.unwrap().unwrap();
            assert_eq!(first["response"]["model"], "openai/gpt-4o");
            assert!(matches!(source.next().await, Err(StreamFault::Malformed(_))), "{hostile}");
        }
    }

    /// A Chat Completions stream over a fixed body, translated.
    fn translated(body: &'static str) -> EventSource {
        let mapper = Translated {
            decoder: chat::Chat.decoder(),
            sink: Assembler::new(ResponseContext::new("acme/m", &Map::new())),
        };
        source(body, Frames::new(Framing::Sse), Box::new(mapper))
    }

    async fn drain(mut source: EventSource) -> Vec<Value> {
        let mut events = Vec::new();
        while let Some(event) = source.next().await.unwrap() {
            events.push(event);
        }
        events
    }

    #[tokio::test]
    async fn a_broken_translated_stream_ends_failed_with_its_output() {
        let text = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n";
        for (body, why) in [(text.to_owned(), "ended early"), (format!("{text}data: {{not json\n\n"), "malformed")] {
            let events = drain(translated(body.leak())).await;
            let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap_or_default()).collect();
            assert_eq!(kinds.first(), Some(&"response.created"), "{why}");
            assert_eq!(kinds.last(), Some(&"response.failed"), "{why}");
            let done = events.iter().find(|e| e["type"] == "response.output_item.done").unwrap();
            assert_eq!(done["item"]["status"], "incomplete", "{why}");
            let failed = events.last().unwrap();
            assert_eq!(failed["response"]["output"][0]["content"][0]["text"], "Hel", "{why}");
            assert_eq!(failed["response"]["error"]["code"], "server_error", "{why}");
        }
    }

    #[tokio::test]
    async fn an_overlong_line_fails_the_stream_as_too_large() {
        let body: &'static str = format!("data: {}\n\n", "a".repeat(100)).leak();
        let mut source = passed(body, Frames::Sse(SseParser::with_max_line(64)));
        assert!(matches!(source.next().await, Err(StreamFault::TooLarge)));
    }
}
