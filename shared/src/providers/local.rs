//! Where deltas made in process (the built-in `echo` provider) go: a [`DeltaSink`] turns them
//! into the events the client is sent, Responses events ([`Assembler`]) or Chat Completions
//! chunks (`completions::ChatAssembler`).

use serde_json::Value;

use super::assemble::{Assembler, Delta, FinishReason};
use super::StreamFault;

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
