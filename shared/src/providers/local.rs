//! Where deltas made in process (the built-in `echo` provider) go: a [`DeltaSink`] turns them
//! into the events the client is sent, Responses events ([`Assembler`]) or Chat Completions
//! chunks (`completions::ChatAssembler`).

use serde_json::Value;

use super::assemble::{Assembler, Delta, FinishReason};

/// Turns deltas made in process into the events a client is sent.
pub trait DeltaSink: Send {
    fn push(&mut self, delta: Delta) -> Vec<Value>;
    /// The deltas ran out: the events that end the answer, unless it already ended.
    fn end(&mut self) -> Vec<Value>;
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
}
