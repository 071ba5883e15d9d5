//! Input mutation for the stable driver: byte-level edits (bit flips, inserts, deletes,
//! repeats, splices, truncations, dictionary tokens) and structured JSON edits (a value
//! swapped for an extreme one, a type changed, a key dropped or a node repeated), applied to the
//! whole input or to one of its lines when that line (less an SSE `data:` prefix) is JSON.

use serde_json::{json, Map, Value};

use super::rng::Rng;

/// Largest input the driver builds (the bodies Mesh accepts are bounded similarly).
pub const MAX_INPUT: usize = 1 << 18;

/// Tokens worth inserting into any input: separators, escapes, extremes.
pub const COMMON_TOKENS: &[&str] = &[
    "\n",
    "\r",
    "\r\n",
    "\n\n",
    ":",
    "\"",
    "\\",
    "{",
    "}",
    "[",
    "]",
    ",",
    "\u{0}",
    "\u{feff}",
    "é",
    "😀",
    "\\u0000",
    "\\ud800",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "-1",
    "1e308",
    "-0",
    "0.5",
    "null",
    "true",
    "{}",
    "[]",
    "\"\"",
];

/// Extreme JSON values swapped in by the structured mutator.
fn extreme(rng: &mut Rng, keys: &[String]) -> Value {
    match rng.below(18) {
        0 => json!(u64::MAX),
        1 => json!(i64::MIN),
        2 => json!(-1),
        3 => json!(1.5e300),
        4 => json!(0),
        5 => Value::Null,
        6 => json!(true),
        7 => json!(""),
        8 => json!("x".repeat(rng.small(4096))),
        9 => json!([]),
        10 => json!({}),
        11 => {
            let mut v = json!(1);
            for _ in 0..rng.small(200) {
                v = json!([v]);
            }
            v
        }
        12 => json!("{{ name }}\n\r\ndata: x\n\n"),
        13 => json!("\u{0}\u{7f}\u{fffd}😀"),
        14 => json!(rng.next_u64()),
        15 => json!(u64::MAX / 2 + rng.next_u64() % 1000),
        16 => {
            let key = keys.get(rng.below(keys.len())).cloned().unwrap_or_else(|| "type".to_owned());
            json!({ key: extreme(rng, &[]) })
        }
        _ => json!(rng.next_u64() % 1_000_000),
    }
}

fn collect_keys(value: &Value, keys: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if keys.len() < 256 && !keys.contains(k) {
                    keys.push(k.clone());
                }
                collect_keys(v, keys);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_keys(v, keys)),
        _ => {}
    }
}

fn count_nodes(value: &Value) -> usize {
    1 + match value {
        Value::Object(map) => map.values().map(count_nodes).sum(),
        Value::Array(items) => items.iter().map(count_nodes).sum(),
        _ => 0,
    }
}

/// Applies one structural edit to a JSON document.
pub fn mutate_json(rng: &mut Rng, value: &mut Value) {
    let mut keys = Vec::new();
    collect_keys(value, &mut keys);
    let mut index = rng.below(count_nodes(value));
    let Some(target) = find_node(value, &mut index) else { return };
    match rng.below(7) {
        0 | 1 => *target = extreme(rng, &keys),
        2 => {
            if let Value::Object(map) = target {
                if !map.is_empty() {
                    let i = rng.below(map.len());
                    let key = map.keys().nth(i).cloned().unwrap_or_default();
                    map.remove(&key);
                }
            }
        }
        3 => {
            if let Value::Object(map) = target {
                let key = keys.get(rng.below(keys.len())).cloned().unwrap_or_else(|| "type".to_owned());
                map.insert(key, extreme(rng, &keys));
            }
        }
        4 => {
            // Repeat an element: many items, many calls, long lists.
            if let Value::Array(items) = target {
                if let Some(item) = items.get(rng.below(items.len())).cloned() {
                    for _ in 0..rng.small(64) {
                        items.push(item.clone());
                    }
                }
            }
        }
        5 => {
            // Change the type while keeping the content.
            let text = target.to_string();
            *target = match target {
                Value::String(s) => json!([s.clone()]),
                Value::Number(n) => json!(n.to_string()),
                _ => Value::String(text),
            };
        }
        _ => {
            if let Value::String(s) = target {
                let s2 = s.clone();
                for _ in 0..rng.small(16) {
                    s.push_str(&s2);
                }
            } else {
                *target = extreme(rng, &keys);
            }
        }
    }
}

fn find_node<'a>(value: &'a mut Value, n: &mut usize) -> Option<&'a mut Value> {
    if *n == 0 {
        return Some(value);
    }
    *n -= 1;
    match value {
        Value::Object(map) => {
            for v in map.values_mut() {
                let size = count_nodes(v);
                if *n < size {
                    return find_node(v, n);
                }
                *n -= size;
            }
            None
        }
        Value::Array(items) => {
            for v in items.iter_mut() {
                let size = count_nodes(v);
                if *n < size {
                    return find_node(v, n);
                }
                *n -= size;
            }
            None
        }
        _ => None,
    }
}

/// Mutates the whole input as JSON, or one JSON line of it (SSE `data:` lines included).
fn mutate_json_somewhere(rng: &mut Rng, data: &[u8]) -> Option<Vec<u8>> {
    if let Ok(mut value) = serde_json::from_slice::<Value>(data) {
        mutate_json(rng, &mut value);
        return serde_json::to_vec(&value).ok();
    }
    let text = std::str::from_utf8(data).ok()?;
    let lines: Vec<&str> = text.split('\n').collect();
    let candidates: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.trim_start_matches("data:").trim_start().starts_with('{'))
        .map(|(i, _)| i)
        .collect();
    let line = *candidates.get(rng.below(candidates.len()))?;
    let body = lines[line].trim_start_matches("data:").trim_start();
    let mut value: Value = serde_json::from_str(body).ok()?;
    mutate_json(rng, &mut value);
    let prefix = if lines[line].starts_with("data:") { "data: " } else { "" };
    let replaced = format!("{prefix}{value}");
    let mut out: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    out[line] = replaced;
    Some(out.join("\n").into_bytes())
}

/// One random edit of `data`; `others` are splice partners, `tokens` the target's dictionary.
pub fn mutate(rng: &mut Rng, data: &[u8], others: &[Vec<u8>], tokens: &[&str]) -> Vec<u8> {
    let mut out = data.to_vec();
    let rounds = 1 + rng.small(4);
    for _ in 0..rounds {
        out = mutate_once(rng, &out, others, tokens);
        out.truncate(MAX_INPUT);
    }
    out
}

fn mutate_once(rng: &mut Rng, data: &[u8], others: &[Vec<u8>], tokens: &[&str]) -> Vec<u8> {
    let mut out = data.to_vec();
    let len = out.len();
    match rng.below(12) {
        0 if len > 0 => {
            let i = rng.below(len);
            out[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            out[i] = rng.byte();
        }
        2 => {
            let i = rng.below(len + 1);
            let n = 1 + rng.small(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
            out.splice(i..i, bytes);
        }
        3 if len > 0 => {
            let i = rng.below(len);
            let n = 1 + rng.small(len - i);
            out.drain(i..(i + n).min(len));
        }
        4 if len > 0 => {
            // Repeat a range many times: long lines, many events, deep nesting.
            let i = rng.below(len);
            let n = 1 + rng.small((len - i).min(256));
            let piece = out[i..(i + n).min(len)].to_vec();
            let times = 1 + rng.small(2048);
            let at = (i + n).min(len);
            let repeated: Vec<u8> = piece.iter().copied().cycle().take(piece.len() * times).collect();
            out.splice(at..at, repeated);
        }
        5 if !others.is_empty() => {
            let other = &others[rng.below(others.len())];
            let cut = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            out.truncate(cut);
            out.extend_from_slice(&other[from..]);
        }
        6 if len > 0 => out.truncate(rng.below(len)),
        7 | 8 => {
            let all: Vec<&str> = tokens.iter().chain(COMMON_TOKENS).copied().collect();
            let token = all[rng.below(all.len())];
            let i = rng.below(len + 1);
            out.splice(i..i, token.bytes());
        }
        _ => {
            if let Some(changed) = mutate_json_somewhere(rng, data) {
                return changed;
            }
            if len > 0 {
                let i = rng.below(len);
                out[i] = rng.byte();
            }
        }
    }
    out
}

/// Split points for feeding `len` bytes in pieces (empty pieces included sometimes).
pub fn chunking(rng: &mut Rng, len: usize, allow_empty: bool) -> Vec<std::ops::Range<usize>> {
    let mut pieces = Vec::new();
    let mut at = 0;
    let style = rng.below(4);
    while at < len {
        let n = match style {
            0 => 1,
            1 => 1 + rng.below(8),
            2 => 1 + rng.small(len),
            _ => 1 + rng.below(64),
        };
        if allow_empty && rng.one_in(8) {
            pieces.push(at..at);
        }
        let end = (at + n).min(len);
        pieces.push(at..end);
        at = end;
    }
    if allow_empty && rng.one_in(4) {
        pieces.push(len..len);
    }
    pieces
}

/// Split points for targets that test what sits behind a parser, not the parser's own cost:
/// pieces of at least 1/64 of the input (the SSE target itself tries every piece size).
pub fn coarse_chunking(rng: &mut Rng, len: usize) -> Vec<std::ops::Range<usize>> {
    let floor = (len / 64).max(1);
    let mut pieces = Vec::new();
    let mut at = 0;
    while at < len {
        let end = (at + floor + rng.below(floor.max(8))).min(len);
        pieces.push(at..end);
        at = end;
    }
    pieces
}

/// The input as one piece.
pub fn one_piece(len: usize) -> [std::ops::Range<usize>; 1] {
    std::array::from_fn(|_| 0..len)
}

/// FNV-1a of the input: a stable per-input seed for choices the input does not spell out.
pub fn hash(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// A JSON object's fields, or an empty map.
pub fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}
