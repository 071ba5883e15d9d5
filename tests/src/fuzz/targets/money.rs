//! The money path. `cost`: any token counts at any prices cost exactly the decimal sum
//! (a 256-bit oracle here) rounded up once to the nano-USD, saturating instead of overflowing,
//! never more than the worst case reserved for it; decimal prices round-trip. `settlement`: the
//! embedded store's reserve / settle / release protocol, run against a model over random
//! interleavings and replays: settling is idempotent by request id, the store's spent and
//! reserved always equal the model's, and spent + reserved never pass a hard cap except by
//! settlements whose reservation had already expired.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use mesh::domain::{ApiKey, CapMode, Charge, KeyStatus, UsageRecord, UsageStatus};
use mesh::money::{format_decimal_nanos, parse_decimal_nanos, Nanos, PriceSheet, TokenUsage, UsdPerMtok};
use mesh::store::local::LocalStore;
use mesh::store::{KeyStore, Reservation, UsageStore};

use crate::fuzz::rng::{Bytes, Rng};

fn extreme_u64(input: &mut Bytes<'_>) -> u64 {
    match input.u8() % 8 {
        0 => 0,
        1 => u64::MAX,
        2 => u64::MAX - u64::from(input.u8()),
        3 => 1 + u64::from(input.u8()),
        4 => 1_000_000 * u64::from(input.u8()),
        _ => input.u64() >> (input.u8() % 64),
    }
}

/// `a × b` as a 256-bit number (four little-endian 64-bit limbs).
fn mul(a: u64, b: u64) -> [u64; 4] {
    let p = u128::from(a) * u128::from(b);
    [p as u64, (p >> 64) as u64, 0, 0]
}

fn add(a: [u64; 4], b: [u64; 4]) -> [u64; 4] {
    let mut out = [0u64; 4];
    let mut carry = 0u128;
    for i in 0..4 {
        let sum = u128::from(a[i]) + u128::from(b[i]) + carry;
        out[i] = sum as u64;
        carry = sum >> 64;
    }
    out
}

/// `ceil(n / 1_000_000)`, saturated to `u64`.
fn ceil_div_mtok_saturating(n: [u64; 4]) -> u64 {
    let mut rem = 0u128;
    let mut q = [0u64; 4];
    for i in (0..4).rev() {
        let cur = (rem << 64) | u128::from(n[i]);
        q[i] = (cur / 1_000_000) as u64;
        rem = cur % 1_000_000;
    }
    if rem > 0 {
        q = add(q, [1, 0, 0, 0]);
    }
    if q[1] != 0 || q[2] != 0 || q[3] != 0 {
        u64::MAX
    } else {
        q[0]
    }
}

/// The exact cost, computed independently of `PriceSheet::cost`.
pub fn oracle(sheet: &PriceSheet, usage: &TokenUsage) -> Nanos {
    if sheet.is_free {
        return Nanos::ZERO;
    }
    let cached = usage.cached_input_tokens.min(usage.input_tokens);
    let uncached = usage.input_tokens - cached;
    let cached_price = sheet.cached_input.unwrap_or(sheet.input);
    let total =
        add(add(mul(uncached, sheet.input.0), mul(cached, cached_price.0)), mul(usage.output_tokens, sheet.output.0));
    Nanos(ceil_div_mtok_saturating(total))
}

pub fn cost_target(data: &[u8]) {
    let mut input = Bytes::new(data);
    let flags = input.u8();
    let sheet = PriceSheet {
        input: UsdPerMtok(extreme_u64(&mut input)),
        output: UsdPerMtok(extreme_u64(&mut input)),
        cached_input: (flags & 1 == 1).then(|| UsdPerMtok(extreme_u64(&mut input))),
        is_free: flags & 2 == 2 && flags & 4 == 4,
    };
    let usage = TokenUsage {
        input_tokens: extreme_u64(&mut input),
        cached_input_tokens: extreme_u64(&mut input),
        output_tokens: extreme_u64(&mut input),
        reasoning_tokens: extreme_u64(&mut input),
        cache_write_tokens: 0,
    };
    let cost = sheet.cost(&usage);
    assert_eq!(cost, oracle(&sheet, &usage), "{sheet:?} {usage:?}");
    // Reasoning tokens are part of the output count: they never add to the bill.
    assert_eq!(sheet.cost(&TokenUsage { reasoning_tokens: 0, ..usage }), cost);
    // Cache writes are part of the input count, priced as input: reporting them changes nothing.
    let writes = usage.input_tokens ^ usage.output_tokens.rotate_left(7);
    assert_eq!(sheet.cost(&TokenUsage { cache_write_tokens: writes, ..usage }), cost);
    // More tokens never cost less.
    let more = TokenUsage { output_tokens: usage.output_tokens.saturating_add(1), ..usage };
    assert!(sheet.cost(&more) >= cost);
    // The worst case reserved for a request bounds what it can cost.
    let bound = sheet.worst_case(usage.input_tokens, usage.output_tokens);
    assert!(cost <= bound, "cost {cost:?} above the reserved worst case {bound:?} for {sheet:?} {usage:?}");
    // Prices and amounts round-trip through their decimal form.
    for nanos in [sheet.input.0, sheet.output.0, cost.0] {
        let text = format_decimal_nanos(nanos);
        assert_eq!(parse_decimal_nanos(&text), Ok(nanos), "{text}");
        let json = serde_json::to_string(&Nanos(nanos)).unwrap_or_default();
        assert_eq!(serde_json::from_str::<Nanos>(&json).ok(), Some(Nanos(nanos)));
    }
    let text = String::from_utf8_lossy(input.remaining());
    if let Ok(nanos) = parse_decimal_nanos(&text) {
        let digits = text.trim();
        assert!(digits.bytes().all(|b| b.is_ascii_digit() || b == b'.'), "{text:?} parsed");
        assert_eq!(parse_decimal_nanos(&format_decimal_nanos(nanos)), Ok(nanos));
    }
}

thread_local! {
    static STORE: RefCell<Option<(tokio::runtime::Runtime, LocalStore, u64)>> = const { RefCell::new(None) };
}

/// Runs `work` with this thread's embedded store (a fresh key per call keeps inputs apart).
fn with_store(work: impl FnOnce(&tokio::runtime::Runtime, &LocalStore, u64)) {
    STORE.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            // In memory where the machine has a tmpfs: the target is about the protocol, not the disk.
            let shm = std::path::Path::new("/dev/shm");
            let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
            let dir = base.join(format!("mesh-fuzz-{}-{:?}", std::process::id(), std::thread::current().id()));
            let _ = std::fs::remove_dir_all(&dir);
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            let store = LocalStore::open(&dir).expect("embedded store");
            *slot = Some((runtime, store, 0));
        }
        if let Some((runtime, store, counter)) = slot.as_mut() {
            *counter += 1;
            work(runtime, store, *counter);
        }
    });
}

#[derive(Debug, Default)]
struct Model {
    /// Amounts near `u64::MAX`: the store saturates at `i64::MAX`, so only readability,
    /// idempotence and the cap are checked, not exact equality.
    big: bool,
    cap: u64,
    spent: u64,
    held: BTreeMap<String, (u64, i64)>,
    settled: BTreeSet<String>,
    /// Costs settled after their reservation was released: the only way past the cap.
    late: u64,
}

impl Model {
    fn reserved(&self) -> u64 {
        self.held.values().map(|(amount, _)| *amount).fold(0, u64::saturating_add)
    }
}

fn key(n: u64, cap: u64) -> ApiKey {
    ApiKey {
        id: format!("key_fuzz_{n}"),
        key_hash: format!("hash_fuzz_{n}"),
        name: "fuzz".into(),
        owner: "fuzz".into(),
        status: KeyStatus::Active,
        rpm: None,
        rpd: None,
        spend_cap: Some(Nanos(cap)),
        spend_cap_mode: CapMode::Hard,
        spent: Nanos::ZERO,
        reserved: Nanos::ZERO,
        default_model: None,
        default_params: serde_json::Map::new(),
        allowed_models: vec![],
        expires_at: None,
        created_at: 0,
    }
}

fn record(key: &ApiKey, id: &str, cost: u64) -> UsageRecord {
    UsageRecord {
        request_id: id.to_owned(),
        key_id: key.id.clone(),
        owner: key.owner.clone(),
        model: "acme/model".into(),
        provider: "acme".into(),
        session_id: None,
        template_id: None,
        tokens: TokenUsage::default(),
        cost: Nanos(cost),
        status: UsageStatus::Success,
        latency_ms: 1,
        created_at_ms: 0,
    }
}

pub fn settlement_target(data: &[u8]) {
    with_store(|runtime, store, n| runtime.block_on(settlement(store, n, data)));
}

async fn settlement(store: &LocalStore, n: u64, data: &[u8]) {
    let mut input = Bytes::new(data);
    let big = input.u8().is_multiple_of(16);
    let scale = |v: u64| if big { v.saturating_mul(1 << 56) } else { v };
    let cap = scale(u64::from(input.u8()) * 4 + 1);
    let key = key(n, cap);
    store.insert_key(&key).await.expect("insert key");
    let mut model = Model { big, cap, ..Model::default() };
    // Accepted requests: id → (reserved amount, cost when settled).
    let mut accepted: Vec<(String, u64, u64)> = Vec::new();
    let mut now: i64 = 1_000;
    let mut next = 0;
    // At most 256 steps per input: long mutants add little over more, shorter ones.
    for _ in 0..256 {
        if input.is_empty() {
            break;
        }
        match input.u8() % 5 {
            0 | 1 => {
                let amount = scale(u64::from(input.u8()));
                let cost = if amount == 0 { 0 } else { u64::from(input.u8()) % (amount + 1) };
                let id = format!("req_{n}_{next}");
                next += 1;
                let expires_at = now + i64::from(input.u8() % 8);
                let reservation = Reservation { id: id.clone(), amount: Nanos(amount), expires_at };
                let fits = model.spent.saturating_add(model.reserved()).saturating_add(amount) <= model.cap;
                let ok = store.reserve(&key.key_hash, &reservation).await.expect("reserve");
                if !big {
                    assert_eq!(ok, fits, "reserve {amount} with {model:?}");
                }
                if ok {
                    model.held.insert(id.clone(), (amount, expires_at));
                    accepted.push((id, amount, cost));
                }
            }
            2 if !accepted.is_empty() => {
                let (id, amount, cost) = accepted[usize::from(input.u8()) % accepted.len()].clone();
                settle(store, &key, &mut model, &id, amount, cost).await;
            }
            3 => {
                now += i64::from(input.u8() % 4);
                let released = store.release_expired(&key.key_hash, now).await.expect("release");
                let before = model.held.len();
                model.held.retain(|_, (_, expires)| *expires > now);
                assert_eq!(released, before - model.held.len());
            }
            _ => now += 1,
        }
        check(store, &key, &model).await;
    }
    // Replays of everything, in a shuffled order, then the rest settled: each charged once.
    let mut rng = Rng::new(n ^ data.len() as u64);
    let mut all = accepted.clone();
    all.extend(accepted.iter().cloned());
    rng.shuffle(&mut all);
    for (id, amount, cost) in &all {
        settle(store, &key, &mut model, id, *amount, *cost).await;
    }
    check(store, &key, &model).await;
    let total: u64 = accepted.iter().map(|(_, _, cost)| *cost).fold(0, u64::saturating_add);
    assert_eq!(model.spent, total.min(i64::MAX as u64));
}

async fn settle(store: &LocalStore, key: &ApiKey, model: &mut Model, id: &str, amount: u64, cost: u64) {
    let charge = Charge {
        key_hash: key.key_hash.clone(),
        cost: Nanos(cost),
        release: Some((id.to_owned(), Nanos(amount))),
        debit_owner_balance: false,
    };
    let fresh = store.record_usage(&record(key, id, cost), &charge).await.expect("record usage");
    assert_eq!(fresh, model.settled.insert(id.to_owned()), "settling {id} twice charged twice");
    if fresh {
        model.spent = model.spent.saturating_add(cost).min(i64::MAX as u64);
        if model.held.remove(id).is_none() {
            model.late = model.late.saturating_add(cost);
        }
    }
}

async fn check(store: &LocalStore, key: &ApiKey, model: &Model) {
    let stored = store.key_by_hash(&key.key_hash).await.expect("read key").expect("key exists");
    if model.big {
        assert!(stored.spent.0 <= model.spent && stored.reserved.0 <= model.reserved());
        return;
    }
    assert_eq!(
        (stored.spent.0, stored.reserved.0),
        (model.spent, model.reserved()),
        "store differs from the model {model:?}"
    );
    let total = model.spent.saturating_add(model.reserved());
    assert!(total <= model.cap.saturating_add(model.late), "spent + reserved {total} past the hard cap: {model:?}");
}

pub fn cost_seeds() -> Vec<Vec<u8>> {
    vec![
        b"\x01\x05\x01\x05\x02\x05\x03\x05\x04\x05\x05\x05\x062.50".to_vec(),
        vec![0x07, 1, 1, 1, 1, 1, 1, 1],
        b"\x00\x06\x05\x06\x07\x05\x05\x05\x050.000000075".to_vec(),
    ]
}

pub fn settlement_seeds() -> Vec<Vec<u8>> {
    vec![
        vec![1, 50, 0, 100, 40, 3, 0, 90, 10, 2, 2, 0, 2, 1, 3, 3, 4, 4, 0, 100, 100, 0],
        vec![0, 10, 0, 5, 5, 0, 0, 5, 5, 7, 3, 3, 2, 1, 2, 0],
        vec![1, 255, 1, 200, 200, 1, 3, 3, 3, 3, 2, 0, 0, 200, 10, 1],
    ]
}
