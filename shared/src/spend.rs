//! This instance's spend not yet in the store: a request's cost is held here as soon as its
//! answer is complete (before the last byte reaches the client) and released once settlement
//! has written it, so soft caps and owner balances hold exactly for back-to-back requests on one
//! instance even though settlement runs after the answer.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::money::Nanos;

/// A cost counted before it is in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub key_hash: String,
    pub owner: String,
    pub cost: Nanos,
    /// The cost is also debited from the owner's prepaid balance.
    pub debit: bool,
}

#[derive(Debug, Default)]
struct Ledger {
    by_request: HashMap<String, Held>,
    by_key: HashMap<String, u64>,
    by_owner: HashMap<String, u64>,
}

/// Held costs by request, with running totals per key and per owner.
#[derive(Debug, Default)]
pub struct SpendView {
    ledger: Mutex<Ledger>,
}

fn add(totals: &mut HashMap<String, u64>, name: &str, amount: u64) {
    let total = totals.entry(name.to_owned()).or_default();
    *total = total.saturating_add(amount);
}

fn subtract(totals: &mut HashMap<String, u64>, name: &str, amount: u64) {
    if let Some(total) = totals.get_mut(name) {
        *total = total.saturating_sub(amount);
        if *total == 0 {
            totals.remove(name);
        }
    }
}

impl SpendView {
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        // Plain counters: consistent even if a holder panicked.
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Holds the cost of `request_id` (once: holding it again changes nothing). Returns whether
    /// it was newly held.
    pub fn hold(&self, request_id: &str, held: Held) -> bool {
        if held.cost == Nanos::ZERO {
            return false;
        }
        let mut ledger = self.ledger();
        if ledger.by_request.contains_key(request_id) {
            return false;
        }
        add(&mut ledger.by_key, &held.key_hash, held.cost.0);
        if held.debit {
            add(&mut ledger.by_owner, &held.owner, held.cost.0);
        }
        ledger.by_request.insert(request_id.to_owned(), held);
        true
    }

    /// Releases the hold of `request_id` (its cost is in the store now).
    pub fn release(&self, request_id: &str) -> Option<Held> {
        let mut ledger = self.ledger();
        let held = ledger.by_request.remove(request_id)?;
        subtract(&mut ledger.by_key, &held.key_hash, held.cost.0);
        if held.debit {
            subtract(&mut ledger.by_owner, &held.owner, held.cost.0);
        }
        Some(held)
    }

    /// Costs of a key held and not yet in the store.
    pub fn pending_for_key(&self, key_hash: &str) -> Nanos {
        Nanos(self.ledger().by_key.get(key_hash).copied().unwrap_or(0))
    }

    /// Debits of an owner's balance held and not yet in the store.
    pub fn pending_for_owner(&self, owner: &str) -> Nanos {
        Nanos(self.ledger().by_owner.get(owner).copied().unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(key: &str, cost: u64, debit: bool) -> Held {
        Held { key_hash: key.into(), owner: "o".into(), cost: Nanos(cost), debit }
    }

    #[test]
    fn holds_once_and_releases_once() {
        let view = SpendView::default();
        assert!(view.hold("r1", held("k", 10, true)));
        assert!(!view.hold("r1", held("k", 10, true)), "a second hold of the same request is ignored");
        assert!(view.hold("r2", held("k", 5, false)));
        assert!(!view.hold("r3", held("k", 0, true)), "nothing to hold");
        assert_eq!(view.pending_for_key("k"), Nanos(15));
        assert_eq!(view.pending_for_owner("o"), Nanos(10));
        assert_eq!(view.release("r1").map(|h| h.cost), Some(Nanos(10)));
        assert_eq!(view.release("r1"), None);
        assert_eq!(view.pending_for_key("k"), Nanos(5));
        assert_eq!(view.pending_for_owner("o"), Nanos::ZERO);
        view.release("r2");
        assert_eq!(view.pending_for_key("k"), Nanos::ZERO);
    }
}
