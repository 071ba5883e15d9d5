//! The Responses assembler (`mesh::providers::assemble`) fed arbitrary `Delta` sequences: its
//! output is always a well-formed event sequence, usage merges field by field, nothing follows
//! the terminal event, and its work (items inspected) stays linear in the number of deltas.

use mesh::money::TokenUsage;
use mesh::providers::assemble::{Assembler, Delta, FinishReason, ResponseContext};
use serde_json::Map;

use crate::fuzz::check::responses_events;
use crate::fuzz::rng::Bytes;

fn count(input: &mut Bytes<'_>) -> u64 {
    match input.u8() % 6 {
        0 => 0,
        1 => u64::MAX,
        2 => u64::MAX - u64::from(input.u8()),
        3 => input.u64(),
        _ => u64::from(input.u8()),
    }
}

/// Reads a delta sequence out of fuzz bytes.
pub fn deltas(data: &[u8]) -> Vec<Delta> {
    let mut input = Bytes::new(data);
    let mut deltas = Vec::new();
    while !input.is_empty() {
        let op = input.u8();
        let short = |input: &mut Bytes<'_>| {
            let n = usize::from(input.u8() % 16);
            String::from_utf8_lossy(input.take_exact(n)).into_owned()
        };
        let delta = match op % 9 {
            0 => Delta::Text(short(&mut input)),
            1 => Delta::Refusal(short(&mut input)),
            2 => Delta::Reasoning(short(&mut input)),
            3 => Delta::ReasoningState(short(&mut input)),
            4 => {
                Delta::ToolCallStart { index: u64::from(op >> 4), call_id: short(&mut input), name: short(&mut input) }
            }
            5 | 6 => Delta::ToolCallArguments { index: u64::from(op >> 4), fragment: short(&mut input) },
            7 => Delta::Usage(TokenUsage {
                input_tokens: count(&mut input),
                cached_input_tokens: count(&mut input),
                output_tokens: count(&mut input),
                reasoning_tokens: count(&mut input),
                cache_write_tokens: count(&mut input),
            }),
            _ => Delta::Finish(match input.u8() % 4 {
                0 => FinishReason::Stop,
                1 => FinishReason::Length,
                2 => FinishReason::ContentFilter,
                _ => FinishReason::Error(short(&mut input)),
            }),
        };
        deltas.push(delta);
    }
    deltas
}

pub fn target(data: &[u8]) {
    let deltas = deltas(data);
    let mut assembler = Assembler::new(ResponseContext::new("acme/model", &Map::new()));
    let mut events = Vec::new();
    let mut usage = TokenUsage::default();
    let mut finished = false;
    for delta in &deltas {
        if let Delta::Usage(u) = delta {
            if !finished {
                let pick = |old: u64, new: u64| if new > 0 { new } else { old };
                usage.input_tokens = pick(usage.input_tokens, u.input_tokens);
                usage.cached_input_tokens = pick(usage.cached_input_tokens, u.cached_input_tokens);
                usage.output_tokens = pick(usage.output_tokens, u.output_tokens);
                usage.reasoning_tokens = pick(usage.reasoning_tokens, u.reasoning_tokens);
                usage.cache_write_tokens = pick(usage.cache_write_tokens, u.cache_write_tokens);
            }
        }
        let more = assembler.push(delta.clone());
        if finished {
            assert!(more.is_empty(), "events after the terminal one");
        }
        finished |= matches!(delta, Delta::Finish(_));
        events.extend(more);
    }
    if !assembler.is_done() {
        events.extend(assembler.finish(FinishReason::Stop));
    }
    assert!(assembler.finish(FinishReason::Stop).is_empty());
    if let Err(problem) = responses_events(&events) {
        panic!("{problem}\ndeltas: {deltas:?}");
    }
    for event in &events {
        if let Err(fault) = mesh::providers::check_event(event) {
            panic!("the gateway would refuse its own event: {fault}\n{event}");
        }
    }
    assert_eq!(assembler.usage(), usage);
    assert!(events.len() <= 8 * deltas.len() + 8, "{} events from {} deltas", events.len(), deltas.len());
    assert!(
        assembler.work() <= 4 * deltas.len() as u64 + 8,
        "{} items inspected for {} deltas",
        assembler.work(),
        deltas.len()
    );
}

pub fn seeds() -> Vec<Vec<u8>> {
    vec![
        b"\x00\x05Hello\x04\x03c_1\x01f\x05\x02{}\x07\x02\x0a\x03\x04\x00\x00\x08\x00".to_vec(),
        b"\x02\x04why?\x03\x03sig\x02\x03two\x00\x02ok\x08\x01".to_vec(),
        // Many calls (op % 9 == 4 starts one, op >> 4 is its index), each with arguments.
        (0..16u8)
            .filter_map(|i| (0..16).map(|r| (i << 4) | r).find(|op| op % 9 == 4))
            .flat_map(|op| [op, 0, 0, op + 1, 2, b'{', b'}'])
            .collect(),
        b"\x01\x02no\x00\x03yes\x01\x02no\x08\x03\x04boom".to_vec(),
    ]
}
