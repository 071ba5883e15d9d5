//! Property tests of the money path: exact cost against a 256-bit oracle over random counts and
//! prices, settlement charging once under any replay order (the real embedded store), and the
//! hard cap holding over random reserve / settle / release interleavings, plus the findings of
//! the money fuzz targets as regression tests.
#![allow(clippy::unwrap_used, clippy::panic)]

use mesh::domain::{ApiKey, CapMode, Charge, KeyStatus, UsageRecord, UsageStatus};
use mesh::money::{Nanos, PriceSheet, TokenUsage, UsdPerMtok};
use mesh::store::local::LocalStore;
use mesh::store::{KeyStore, Reservation, UsageStore};
use mesh_tests::fuzz::driver::{run, Budget};
use mesh_tests::fuzz::rng::Rng;
use mesh_tests::fuzz::{by_name, targets::money};

fn random_inputs(target: &str, count: u64, seed: u64) {
    let target = by_name(target).unwrap();
    let report = run(&target, Budget::Inputs(count), seed, None);
    if let Some(failure) = report.failures.first() {
        panic!("{}\ninput: {:?}", failure.message, failure.input);
    }
}

#[test]
fn cost_is_the_exact_decimal_sum_rounded_up_once() {
    random_inputs("money_cost", 5_000, 1);
    // Plain random sheets and counts too, not only mutants of the seeds.
    let mut rng = Rng::new(2);
    for _ in 0..5_000 {
        let pick = |rng: &mut Rng| match rng.below(4) {
            0 => rng.next_u64(),
            1 => rng.next_u64() >> rng.below(64),
            2 => u64::MAX - rng.below(3) as u64,
            _ => rng.below(1_000_000) as u64,
        };
        let sheet = PriceSheet {
            input: UsdPerMtok(pick(&mut rng)),
            output: UsdPerMtok(pick(&mut rng)),
            cached_input: rng.one_in(2).then(|| UsdPerMtok(pick(&mut rng))),
            is_free: rng.one_in(10),
        };
        let usage = TokenUsage {
            input_tokens: pick(&mut rng),
            cached_input_tokens: pick(&mut rng),
            output_tokens: pick(&mut rng),
            reasoning_tokens: pick(&mut rng),
            ..TokenUsage::default()
        };
        assert_eq!(sheet.cost(&usage), money::oracle(&sheet, &usage), "{sheet:?} {usage:?}");
        assert!(sheet.cost(&usage) <= sheet.worst_case(usage.input_tokens, usage.output_tokens));
    }
}

#[test]
fn hard_caps_hold_over_random_interleavings() {
    random_inputs("money_settlement", 400, 3);
}

fn key(id: &str, cap: Option<u64>) -> ApiKey {
    ApiKey {
        id: id.into(),
        key_hash: format!("hash_{id}"),
        name: id.into(),
        owner: "team".into(),
        status: KeyStatus::Active,
        rpm: None,
        rpd: None,
        spend_cap: cap.map(Nanos),
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

fn record(key: &ApiKey, id: &str, cost: u64) -> (UsageRecord, Charge) {
    let record = UsageRecord {
        request_id: id.into(),
        key_id: key.id.clone(),
        owner: key.owner.clone(),
        model: "acme/m".into(),
        provider: "acme".into(),
        session_id: None,
        template_id: None,
        tokens: TokenUsage::default(),
        cost: Nanos(cost),
        status: UsageStatus::Success,
        latency_ms: 1,
        created_at_ms: 0,
    };
    let charge =
        Charge { key_hash: key.key_hash.clone(), cost: Nanos(cost), release: None, debit_owner_balance: false };
    (record, charge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settlement_charges_once_under_any_replay_order_and_concurrency() {
    let dir = std::env::temp_dir().join(format!("mesh-money-props-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = std::sync::Arc::new(LocalStore::open(&dir).unwrap());
    let mut rng = Rng::new(4);
    for round in 0..20 {
        let key = key(&format!("key_{round}"), None);
        store.insert_key(&key).await.unwrap();
        let costs: Vec<u64> = (0..8).map(|_| rng.below(1_000_000) as u64).collect();
        let mut replays: Vec<usize> = (0..costs.len()).flat_map(|i| std::iter::repeat_n(i, 1 + rng.below(4))).collect();
        rng.shuffle(&mut replays);
        // Replays run concurrently, in a shuffled order.
        let mut tasks = Vec::new();
        for i in replays {
            let (store, (record, charge)) = (store.clone(), record(&key, &format!("req_{round}_{i}"), costs[i]));
            tasks.push(tokio::spawn(async move { (i, store.record_usage(&record, &charge).await.unwrap()) }));
        }
        let mut fresh = vec![0; costs.len()];
        for task in tasks {
            let (i, written) = task.await.unwrap();
            fresh[i] += usize::from(written);
        }
        assert!(fresh.iter().all(|n| *n == 1), "each request charged exactly once: {fresh:?}");
        let stored = store.key_by_hash(&key.key_hash).await.unwrap().unwrap();
        assert_eq!(stored.spent, Nanos(costs.iter().sum()));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_key_stays_readable_after_absurd_costs_and_reservations() {
    // Found by the money_settlement fuzz target: SQLite turns an overflowing integer sum into a
    // REAL, after which the key could no longer be read (every request of it failed), and its
    // SUM over reservations failed with "integer overflow".
    let dir = std::env::temp_dir().join(format!("mesh-money-absurd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = LocalStore::open(&dir).unwrap();
    let key = key("key_absurd", Some(u64::MAX));
    store.insert_key(&key).await.unwrap();
    for i in 0..2 {
        let (record, charge) = record(&key, &format!("req_absurd_{i}"), u64::MAX);
        assert!(store.record_usage(&record, &charge).await.unwrap());
    }
    for i in 0..2 {
        let reservation = Reservation { id: format!("res_{i}"), amount: Nanos(u64::MAX / 2), expires_at: 10 };
        store.reserve(&key.key_hash, &reservation).await.unwrap();
    }
    let stored = store.key_by_hash(&key.key_hash).await.unwrap().unwrap();
    assert_eq!(stored.spent, Nanos(i64::MAX as u64));
    assert_eq!(store.release_expired(&key.key_hash, 11).await.unwrap(), 2);
    let stored = store.key_by_hash(&key.key_hash).await.unwrap().unwrap();
    assert_eq!(stored.reserved, Nanos::ZERO);
    let _ = std::fs::remove_dir_all(&dir);
}
