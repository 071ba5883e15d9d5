//! Where deltas go: a [`DeltaSink`] turns them into the events the client is sent, Responses
//! events ([`Assembler`]) or Chat Completions chunks (`completions::ChatAssembler`), whether a
//! translated provider's stream decoded them or the built-in `echo` provider made them in process.

use serde_json::Value;

use super::assemble::{Assembler, Delta, FinishReason, ResponseContext};
use super::{Completed, DeltaDecoder, StreamFault, StreamMapper};
use crate::sse::SseEvent;

/// Turns deltas made in process into the events a client is sent.
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

/// A translated stream: provider events → deltas → Responses events.
pub(super) struct Translated {
    pub(super) decoder: Box<dyn DeltaDecoder>,
    pub(super) assembler: Assembler,
}

impl StreamMapper for Translated {
    fn map(&mut self, event: SseEvent) -> Result<Vec<Value>, StreamFault> {
        let mut events = Vec::new();
        for delta in self.decoder.decode(event)? {
            events.extend(self.assembler.push(delta));
        }
        Ok(events)
    }

    /// The provider's stream ended: what its decoder still holds, and, if the provider never
    /// said it was done, the answer closed as failed with everything streamed so far.
    fn finish(&mut self) -> Vec<Value> {
        let mut events = Vec::new();
        for delta in self.decoder.finish() {
            events.extend(self.assembler.push(delta));
        }
        if !self.assembler.is_done() {
            events.extend(self.assembler.finish(FinishReason::Error(EARLY_END.to_owned())));
        }
        events
    }

    fn abort(&mut self, fault: &StreamFault) -> Vec<Value> {
        self.assembler.finish(FinishReason::Error(fault.to_string()))
    }
}

/// Why a translated answer failed when its provider stream ended without a finish.
const EARLY_END: &str = "The provider ended the stream early.";

/// Runs a complete answer through the assembler.
pub fn assemble_complete(deltas: Vec<Delta>, ctx: ResponseContext) -> Completed {
    let mut assembler = Assembler::new(ctx);
    let mut last = Vec::new();
    for delta in deltas {
        last = assembler.push(delta);
    }
    if !assembler.is_done() {
        last = assembler.finish(FinishReason::Stop);
    }
    let terminal = last.pop().unwrap_or(Value::Null);
    let response = terminal.get("response").cloned().unwrap_or(Value::Null);
    let status = response.get("status").and_then(Value::as_str).unwrap_or("completed").to_owned();
    Completed { response, usage: assembler.usage(), status }
}
