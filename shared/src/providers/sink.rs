//! Where deltas go: a [`DeltaSink`] turns them into the events the client is sent, Responses
//! events ([`Assembler`]) or Chat Completions chunks (`completions::ChatAssembler`), whether a
//! translated provider's stream decoded them or the built-in `echo` provider made them in process.
//! [`Translating`] puts a translator and an assembler behind the dispatcher's one [`Wire`].

use http::HeaderMap;
use serde_json::Value;

use super::assemble::{Assembler, Delta, FinishReason, ResponseContext};
use super::{Answer, Body, Built, Completed, DeltaDecoder, Framing, StreamFault, StreamMapper, Translator, Wire};
use crate::config::ProviderConfig;
use crate::domain::ModelPrice;
use crate::error::GatewayError;
use crate::sse::SseEvent;

/// Turns deltas into the events a client is sent.
pub trait DeltaSink: Send {
    fn push(&mut self, delta: Delta) -> Vec<Value>;
    /// The deltas ran out: the events that end the answer, unless it already ended.
    fn end(&mut self) -> Vec<Value>;
    /// The deltas broke off (`fault`): the events that end the answer as failed with what came
    /// before, or none, and the caller ends the stream itself.
    fn abort(&mut self, _fault: &StreamFault) -> Vec<Value> {
        Vec::new()
    }
}

/// A sink that also makes one whole answer of deltas, in its client's API.
pub trait Assembly: DeltaSink + Sync + 'static {
    /// The whole answer.
    type Complete: Answer;
    /// A complete answer's deltas as one answer.
    fn complete(self, deltas: Vec<Delta>) -> Self::Complete;
    /// A provider's stream ended without saying it was done: the events that close the answer,
    /// if this API closes it.
    fn cut(&mut self) -> Vec<Value> {
        Vec::new()
    }
}

impl DeltaSink for Assembler {
    fn push(&mut self, delta: Delta) -> Vec<Value> {
        Assembler::push(self, delta)
    }

    fn end(&mut self) -> Vec<Value> {
        if self.is_done() {
            Vec::new()
        } else {
            self.finish(FinishReason::Stop)
        }
    }

    fn abort(&mut self, fault: &StreamFault) -> Vec<Value> {
        self.finish(FinishReason::Error(fault.to_string()))
    }
}

impl Assembly for Assembler {
    type Complete = Completed;

    fn complete(mut self, deltas: Vec<Delta>) -> Completed {
        let mut last = Vec::new();
        for delta in deltas {
            last = self.push(delta);
        }
        if !self.is_done() {
            last = self.finish(FinishReason::Stop);
        }
        let terminal = last.pop().unwrap_or(Value::Null);
        let response = terminal.get("response").cloned().unwrap_or(Value::Null);
        let status = response.get("status").and_then(Value::as_str).unwrap_or("completed").to_owned();
        Completed { response, usage: self.usage(), status }
    }

    /// The answer closed as failed with everything streamed so far.
    fn cut(&mut self) -> Vec<Value> {
        if self.is_done() {
            Vec::new()
        } else {
            self.finish(FinishReason::Error(EARLY_END.to_owned()))
        }
    }
}

/// Why a translated answer failed when its provider stream ended without a finish.
const EARLY_END: &str = "The provider ended the stream early.";

/// Runs a complete answer through the Responses assembler.
pub fn assemble_complete(deltas: Vec<Delta>, ctx: ResponseContext) -> Completed {
    Assembler::new(ctx).complete(deltas)
}

/// A translated stream: provider events → deltas → the client's events.
pub(super) struct Translated<S> {
    pub(super) decoder: Box<dyn DeltaDecoder>,
    pub(super) sink: S,
}

impl<S: Assembly> StreamMapper for Translated<S> {
    fn map(&mut self, event: SseEvent) -> Result<Vec<Value>, StreamFault> {
        let mut events = Vec::new();
        for delta in self.decoder.decode(event)? {
            events.extend(self.sink.push(delta));
        }
        Ok(events)
    }

    /// The provider's stream ended: what its decoder still holds, and, if the provider never
    /// said it was done, what closes the answer ([`Assembly::cut`]).
    fn finish(&mut self) -> Vec<Value> {
        let mut events = Vec::new();
        for delta in self.decoder.finish() {
            events.extend(self.sink.push(delta));
        }
        events.extend(self.sink.cut());
        events
    }

    fn abort(&mut self, fault: &StreamFault) -> Vec<Value> {
        self.sink.abort(fault)
    }
}

/// A translated provider call: the translator's request and errors, its answers' deltas made
/// into the client's answer by `sink`.
pub(super) struct Translating<'a, S> {
    translator: &'a dyn Translator,
    sink: S,
}

impl<'a, S: Assembly> Translating<'a, S> {
    pub(super) fn boxed(translator: &'a dyn Translator, sink: S) -> Box<dyn Wire<Answer = S::Complete> + 'a> {
        Box::new(Translating { translator, sink })
    }
}

impl<S: Assembly> Wire for Translating<'_, S> {
    type Answer = S::Complete;

    fn request(&self, provider: &ProviderConfig, row: &ModelPrice, body: &Body, stream: bool) -> Built {
        self.translator.request(provider, row, body, stream)
    }

    fn error(&self, provider: &str, status: u16, headers: &HeaderMap, bytes: &[u8]) -> GatewayError {
        self.translator.error(provider, status, headers, bytes)
    }

    fn framing(&self) -> Framing {
        self.translator.framing()
    }

    fn complete(self: Box<Self>, bytes: &[u8]) -> Result<S::Complete, GatewayError> {
        Ok(self.sink.complete(self.translator.response(bytes)?))
    }

    fn stream(self: Box<Self>) -> Box<dyn StreamMapper> {
        Box::new(Translated { decoder: self.translator.decoder(), sink: self.sink })
    }
}
