//! Bounded waits for work the gateway finishes after it has answered: settlement and usage
//! records, stored responses, the usage outbox, breaker announcements through Redis. A test
//! that asserts on such work right after the response races it; it waits for the condition
//! instead, and fails with what it waited for (and what it last saw) when the bound passes.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is checked again.
const POLL: Duration = Duration::from_millis(20);

/// The usual bound: generous, since it is only reached when something is wrong (and a loaded
/// machine or the DynamoDB emulator can be slow).
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Waits until `probe` gives `Ok(value)` and returns it; `Err(state)` says what it saw instead.
/// Panics with `what` and the last state seen once `timeout` has passed.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        let last = match probe().await {
            Ok(value) => return value,
            Err(state) => state,
        };
        assert!(started.elapsed() < timeout, "not within {timeout:?}: {what} (last seen: {last})");
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until `condition` holds; panics with `what` once `timeout` has passed.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(what, timeout, || {
        let check = condition();
        async move {
            if check.await {
                Ok(())
            } else {
                Err("condition false".to_owned())
            }
        }
    })
    .await;
}
