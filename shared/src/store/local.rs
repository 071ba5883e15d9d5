//! The embedded store: one SQLite file under `MESH_LOCAL_DIR`, shared safely with `mesh-admin`.
//!
//! SQLite gives the embedded mode the same guarantees as DynamoDB's conditional writes and
//! transactions (atomic charge + record, idempotent by request id, hard-cap reservations),
//! survives restarts, and lets `mesh-admin` write while the server runs (WAL, busy timeout).

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::{BalanceStore, KeyStore, PriceStore, Reservation, ResponseStore, StoreHealth, TemplateStore, UsageStore};
use crate::domain::{ApiKey, Charge, KeyUpdate, ModelPrice, StoredResponse, Template, UsageFilter, UsageRecord};
use crate::error::StoreError;
use crate::money::Nanos;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS keys (
    key_hash TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    spent INTEGER NOT NULL DEFAULT 0,
    reserved INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS reservations (
    id TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL,
    amount INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS reservations_by_key ON reservations (key_hash, expires_at);
CREATE TABLE IF NOT EXISTS model_prices (
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (model, provider)
);
CREATE TABLE IF NOT EXISTS usage (
    request_id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_by_key ON usage (key_id, created_at_ms);
CREATE TABLE IF NOT EXISTS balances (
    owner TEXT PRIMARY KEY,
    nanos INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS templates (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (owner, name)
);
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL,
    body TEXT NOT NULL
);
";

/// Most store calls one group commit carries.
const BATCH_LIMIT: usize = 512;
/// Store calls waiting for the writer; past it callers wait for room (settlement slows, and
/// admission answers 503 once the settlement backlog is full) rather than memory growing.
const QUEUE_LIMIT: usize = 4096;

/// The embedded adapter. One thread owns the connection and runs every call; the calls that
/// arrive while it is busy are run together in one transaction, each in its own savepoint (so a
/// call that fails undoes only its own writes), and committed once: a burst of settlements
/// costs one WAL write and one lock round, not one per request. A call is answered only after
/// the commit that holds it.
#[derive(Clone)]
pub struct LocalStore {
    jobs: tokio::sync::mpsc::Sender<Box<dyn Job>>,
    path: PathBuf,
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore").field("path", &self.path).finish()
    }
}

fn unavailable(err: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(err.to_string())
}

fn corrupt(err: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(err.to_string())
}

fn to_i64(nanos: Nanos) -> i64 {
    i64::try_from(nanos.0).unwrap_or(i64::MAX)
}

/// SQL for `column + amount` that stops at `i64::MAX`: SQLite turns an overflowing integer sum
/// into a REAL, and a key whose `spent` or `reserved` is a REAL can no longer be read.
fn saturating_add(column: &str, amount: &str) -> String {
    format!("{column} + MIN({amount}, 9223372036854775807 - {column})")
}

fn to_nanos(value: i64) -> Nanos {
    Nanos(u64::try_from(value).unwrap_or(0))
}

/// One store call as the writer thread sees it: run inside the group's transaction, then
/// answered once the group's commit is known.
trait Job: Send {
    fn run(&mut self, conn: &Connection);
    fn finish(self: Box<Self>, committed: Result<(), StoreError>);
}

struct Call<T, F> {
    work: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: tokio::sync::oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for Call<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, conn: &Connection) {
        let Some(work) = self.work.take() else { return };
        if let Err(error) = exec(conn, "SAVEPOINT call") {
            self.result = Some(Err(unavailable(error)));
            return;
        }
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(conn)))
            .unwrap_or_else(|_| Err(StoreError::Unavailable("store call panicked".to_owned())));
        let rolled_back = if result.is_ok() { Ok(()) } else { exec(conn, "ROLLBACK TO call") };
        self.result = Some(match rolled_back.and_then(|()| exec(conn, "RELEASE call")) {
            Ok(()) => result,
            Err(error) => Err(unavailable(error)),
        });
    }

    fn finish(self: Box<Self>, committed: Result<(), StoreError>) {
        let answer = match committed {
            Err(error) => Err(error),
            Ok(()) => self.result.unwrap_or_else(|| Err(StoreError::Unavailable("store call not run".to_owned()))),
        };
        let _ = self.reply.send(answer);
    }
}

/// Runs a statement, prepared once per connection.
fn execute(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// Runs a statement without parameters, prepared once per connection.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// The writer thread: waits for a call, takes every call already queued behind it (up to
/// [`BATCH_LIMIT`]), runs them in one transaction and commits once.
fn write_loop(conn: Connection, mut jobs: tokio::sync::mpsc::Receiver<Box<dyn Job>>) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(BATCH_LIMIT);
    while let Some(job) = jobs.blocking_recv() {
        batch.push(job);
        while batch.len() < BATCH_LIMIT {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let committed = match exec(&conn, "BEGIN IMMEDIATE") {
            Err(error) => Err(unavailable(error)),
            Ok(()) => {
                for job in &mut batch {
                    job.run(&conn);
                }
                exec(&conn, "COMMIT").map_err(|error| {
                    let _ = exec(&conn, "ROLLBACK");
                    unavailable(error)
                })
            }
        };
        for job in batch.drain(..) {
            job.finish(committed.clone());
        }
    }
}

impl LocalStore {
    /// Opens (and creates) `<dir>/mesh.db` and starts its writer thread.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(unavailable)?;
        let path = dir.join("mesh.db");
        let conn = Connection::open(&path).map_err(unavailable)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(unavailable)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(unavailable)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(unavailable)?;
        conn.execute_batch(SCHEMA).map_err(unavailable)?;
        let (jobs, queue) = tokio::sync::mpsc::channel(QUEUE_LIMIT);
        std::thread::Builder::new()
            .name("mesh-store".to_owned())
            .spawn(move || write_loop(conn, queue))
            .map_err(unavailable)?;
        Ok(LocalStore { jobs, path })
    }

    /// Runs `work` on the writer thread, in the next group commit; answers after that commit.
    async fn with<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let call = Call { work: Some(work), result: None, reply };
        self.jobs.send(Box::new(call)).await.map_err(|_| StoreError::Unavailable("store writer stopped".to_owned()))?;
        answer.await.map_err(|_| StoreError::Unavailable("store writer stopped".to_owned()))?
    }
}

fn key_from_row(body: &str, spent: i64, reserved: i64) -> Result<ApiKey, StoreError> {
    let mut key: ApiKey = serde_json::from_str(body).map_err(corrupt)?;
    key.spent = to_nanos(spent);
    key.reserved = to_nanos(reserved);
    Ok(key)
}

fn read_key(conn: &Connection, column: &str, value: &str) -> Result<Option<ApiKey>, StoreError> {
    let sql = format!("SELECT body, spent, reserved FROM keys WHERE {column} = ?1");
    let row = conn
        .query_row(&sql, [value], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))
        .optional()
        .map_err(unavailable)?;
    row.map(|(body, spent, reserved)| key_from_row(&body, spent, reserved)).transpose()
}

#[async_trait]
impl KeyStore for LocalStore {
    async fn insert_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        let body = serde_json::to_string(key).map_err(corrupt)?;
        let (hash, id, spent) = (key.key_hash.clone(), key.id.clone(), to_i64(key.spent));
        self.with(move |conn| {
            execute(
                conn,
                "INSERT INTO keys (key_hash, id, body, spent, reserved) VALUES (?1, ?2, ?3, ?4, 0)",
                params![hash, id, body, spent],
            )
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                    StoreError::Conflict("key exists".to_owned())
                }
                other => unavailable(other),
            })?;
            Ok(())
        })
        .await
    }

    async fn key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError> {
        let hash = key_hash.to_owned();
        self.with(move |conn| read_key(conn, "key_hash", &hash)).await
    }

    async fn key_by_id(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        let id = id.to_owned();
        self.with(move |conn| read_key(conn, "id", &id)).await
    }

    async fn list_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare("SELECT body, spent, reserved FROM keys ORDER BY id").map_err(unavailable)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))
                .map_err(unavailable)?;
            let mut keys = Vec::new();
            for row in rows {
                let (body, spent, reserved) = row.map_err(unavailable)?;
                keys.push(key_from_row(&body, spent, reserved)?);
            }
            Ok(keys)
        })
        .await
    }

    async fn update_key(&self, id: &str, update: &KeyUpdate) -> Result<Option<ApiKey>, StoreError> {
        let (id, update) = (id.to_owned(), update.clone());
        self.with(move |conn| {
            let Some(mut key) = read_key(conn, "id", &id)? else { return Ok(None) };
            update.apply(&mut key);
            let body = serde_json::to_string(&key).map_err(corrupt)?;
            execute(conn, "UPDATE keys SET body = ?1 WHERE id = ?2", params![body, id]).map_err(unavailable)?;
            Ok(Some(key))
        })
        .await
    }

    async fn reserve(&self, key_hash: &str, reservation: &Reservation) -> Result<bool, StoreError> {
        let (hash, reservation) = (key_hash.to_owned(), reservation.clone());
        self.with(move |conn| {
            let Some(key) = read_key(conn, "key_hash", &hash)? else { return Ok(false) };
            let Some(cap) = key.spend_cap else { return Ok(true) };
            let fits = key.spent.0.saturating_add(key.reserved.0).saturating_add(reservation.amount.0) <= cap.0;
            if !fits {
                return Ok(false);
            }
            let amount = to_i64(reservation.amount);
            execute(
                conn,
                &format!("UPDATE keys SET reserved = {} WHERE key_hash = ?2", saturating_add("reserved", "?1")),
                params![amount, hash],
            )
            .map_err(unavailable)?;
            execute(
                conn,
                "INSERT INTO reservations (id, key_hash, amount, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![reservation.id, hash, amount, reservation.expires_at],
            )
            .map_err(unavailable)?;
            Ok(true)
        })
        .await
    }

    async fn release_expired(&self, key_hash: &str, now_unix: i64) -> Result<usize, StoreError> {
        let hash = key_hash.to_owned();
        self.with(move |conn| {
            // Summed here, saturating: SQLite's SUM fails with "integer overflow" past i64::MAX.
            let total: i64 = {
                let mut stmt = conn
                    .prepare("SELECT amount FROM reservations WHERE key_hash = ?1 AND expires_at <= ?2")
                    .map_err(unavailable)?;
                let amounts = stmt.query_map(params![hash, now_unix], |r| r.get::<_, i64>(0)).map_err(unavailable)?;
                let mut total = 0i64;
                for amount in amounts {
                    total = total.saturating_add(amount.map_err(unavailable)?);
                }
                total
            };
            let released = conn
                .execute("DELETE FROM reservations WHERE key_hash = ?1 AND expires_at <= ?2", params![hash, now_unix])
                .map_err(unavailable)?;
            execute(conn, "UPDATE keys SET reserved = MAX(reserved - ?1, 0) WHERE key_hash = ?2", params![total, hash])
                .map_err(unavailable)?;
            Ok(released)
        })
        .await
    }
}

#[async_trait]
impl PriceStore for LocalStore {
    async fn put_price(&self, price: &ModelPrice) -> Result<(), StoreError> {
        let body = serde_json::to_string(price).map_err(corrupt)?;
        let (model, provider, is_default) = (price.model.clone(), price.provider.clone(), price.is_default);
        self.with(move |conn| {
            if is_default {
                // At most one default row per model: demote the others.
                let others: Vec<(String, String)> = {
                    let mut stmt = conn
                        .prepare("SELECT provider, body FROM model_prices WHERE model = ?1 AND provider <> ?2")
                        .map_err(unavailable)?;
                    let rows = stmt
                        .query_map(params![model, provider], |r| Ok((r.get(0)?, r.get(1)?)))
                        .map_err(unavailable)?;
                    rows.collect::<Result<_, _>>().map_err(unavailable)?
                };
                for (other, other_body) in others {
                    let mut row: ModelPrice = serde_json::from_str(&other_body).map_err(corrupt)?;
                    if row.is_default {
                        row.is_default = false;
                        let text = serde_json::to_string(&row).map_err(corrupt)?;
                        execute(
                            conn,
                            "UPDATE model_prices SET body = ?1 WHERE model = ?2 AND provider = ?3",
                            params![text, model, other],
                        )
                        .map_err(unavailable)?;
                    }
                }
            }
            execute(
                conn,
                "INSERT INTO model_prices (model, provider, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT (model, provider) DO UPDATE SET body = excluded.body",
                params![model, provider, body],
            )
            .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn prices_for(&self, model: &str) -> Result<Vec<ModelPrice>, StoreError> {
        let model = model.to_owned();
        self.with(move |conn| query_bodies(conn, "SELECT body FROM model_prices WHERE model = ?1", &[&model])).await
    }

    async fn list_prices(&self) -> Result<Vec<ModelPrice>, StoreError> {
        self.with(|conn| query_bodies(conn, "SELECT body FROM model_prices ORDER BY model, provider", &[])).await
    }
}

/// The records a query selects as their JSON `body` column.
fn query_bodies<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    sql: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare(sql).map_err(unavailable)?;
    let rows = stmt.query_map(args, |r| r.get::<_, String>(0)).map_err(unavailable)?;
    let mut records = Vec::new();
    for row in rows {
        records.push(serde_json::from_str(&row.map_err(unavailable)?).map_err(corrupt)?);
    }
    Ok(records)
}

#[async_trait]
impl UsageStore for LocalStore {
    async fn record_usage(&self, record: &UsageRecord, charge: &Charge) -> Result<bool, StoreError> {
        let body = serde_json::to_string(record).map_err(corrupt)?;
        let (record, charge) = (record.clone(), charge.clone());
        self.with(move |conn| {
            let inserted = conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO usage (request_id, key_id, owner, created_at_ms, body) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(unavailable)?
                .execute(params![record.request_id, record.key_id, record.owner, record.created_at_ms, body],
                )
                .map_err(unavailable)?;
            if inserted == 0 {
                return Ok(false);
            }
            let cost = to_i64(charge.cost);
            let release = charge.release.as_ref().map_or(0, |(_, amount)| to_i64(*amount));
            if let Some((reservation_id, _)) = &charge.release {
                // Release only what is still held: an expired reservation was already released.
                let held = conn
                    .execute("DELETE FROM reservations WHERE id = ?1", params![reservation_id])
                    .map_err(unavailable)?;
                let release = if held == 0 { 0 } else { release };
                execute(conn,
                    &format!(
                        "UPDATE keys SET spent = {}, reserved = MAX(reserved - ?2, 0) WHERE key_hash = ?3",
                        saturating_add("spent", "?1")
                    ),
                    params![cost, release, charge.key_hash],
                )
                .map_err(unavailable)?;
            } else {
                execute(conn, &format!("UPDATE keys SET spent = {} WHERE key_hash = ?2", saturating_add("spent", "?1")), params![cost, charge.key_hash])
                    .map_err(unavailable)?;
            }
            if charge.debit_owner_balance {
                execute(conn,
                    "UPDATE balances SET nanos = CASE WHEN nanos < ?1 - 9223372036854775807 - 1 \
                     THEN -9223372036854775807 - 1 ELSE nanos - ?1 END WHERE owner = ?2",
                    params![cost, record.owner],
                )
                    .map_err(unavailable)?;
            }
            Ok(true)
        })
        .await
    }

    async fn query_usage(&self, filter: &UsageFilter) -> Result<Vec<UsageRecord>, StoreError> {
        let filter = filter.clone();
        self.with(move |conn| {
            let since = filter.since_ms.unwrap_or(0);
            let sql = "SELECT body FROM usage WHERE created_at_ms >= ?1 ORDER BY created_at_ms";
            let mut records: Vec<UsageRecord> = query_bodies(conn, sql, &[&since])?;
            records.retain(|record| filter.matches(record));
            Ok(records)
        })
        .await
    }
}

#[async_trait]
impl BalanceStore for LocalStore {
    async fn add_balance(&self, owner: &str, delta: i64) -> Result<i64, StoreError> {
        let owner = owner.to_owned();
        self.with(move |conn| {
            conn.query_row(
                "INSERT INTO balances (owner, nanos) VALUES (?1, ?2)
                 ON CONFLICT (owner) DO UPDATE SET nanos = nanos + excluded.nanos RETURNING nanos",
                params![owner, delta],
                |r| r.get(0),
            )
            .map_err(unavailable)
        })
        .await
    }

    async fn balance(&self, owner: &str) -> Result<Option<i64>, StoreError> {
        let owner = owner.to_owned();
        self.with(move |conn| {
            conn.query_row("SELECT nanos FROM balances WHERE owner = ?1", [owner], |r| r.get(0))
                .optional()
                .map_err(unavailable)
        })
        .await
    }
}

#[async_trait]
impl StoreHealth for LocalStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.with(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(unavailable)).await
    }
}

fn conflict_or_unavailable(err: rusqlite::Error, what: &str) -> StoreError {
    match err {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            StoreError::Conflict(what.to_owned())
        }
        other => unavailable(other),
    }
}

#[async_trait]
impl TemplateStore for LocalStore {
    async fn insert_template(&self, template: &Template) -> Result<(), StoreError> {
        let body = serde_json::to_string(template).map_err(corrupt)?;
        let (id, owner, name) = (template.id.clone(), template.owner.clone(), template.name.clone());
        self.with(move |conn| {
            execute(
                conn,
                "INSERT INTO templates (id, owner, name, body) VALUES (?1, ?2, ?3, ?4)",
                params![id, owner, name, body],
            )
            .map_err(|e| conflict_or_unavailable(e, "template name taken"))?;
            Ok(())
        })
        .await
    }

    async fn template(&self, id: &str) -> Result<Option<Template>, StoreError> {
        let id = id.to_owned();
        self.with(move |conn| {
            Ok(query_bodies(conn, "SELECT body FROM templates WHERE id = ?1", &[&id])?.into_iter().next())
        })
        .await
    }

    async fn template_by_name(&self, owner: &str, name: &str) -> Result<Option<Template>, StoreError> {
        let (owner, name) = (owner.to_owned(), name.to_owned());
        self.with(move |conn| {
            Ok(query_bodies(conn, "SELECT body FROM templates WHERE owner = ?1 AND name = ?2", &[&owner, &name])?
                .into_iter()
                .next())
        })
        .await
    }

    async fn templates_of(&self, owner: &str) -> Result<Vec<Template>, StoreError> {
        let owner = owner.to_owned();
        self.with(move |conn| {
            query_bodies(conn, "SELECT body FROM templates WHERE owner = ?1 ORDER BY name", &[&owner])
        })
        .await
    }

    async fn replace_template(&self, template: &Template) -> Result<(), StoreError> {
        let body = serde_json::to_string(template).map_err(corrupt)?;
        let (id, name) = (template.id.clone(), template.name.clone());
        self.with(move |conn| {
            execute(conn, "UPDATE templates SET name = ?1, body = ?2 WHERE id = ?3", params![name, body, id])
                .map_err(|e| conflict_or_unavailable(e, "template name taken"))?;
            Ok(())
        })
        .await
    }

    async fn delete_template(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.with(move |conn| Ok(execute(conn, "DELETE FROM templates WHERE id = ?1", [id]).map_err(unavailable)? > 0))
            .await
    }
}

#[async_trait]
impl ResponseStore for LocalStore {
    async fn put_response(&self, response: &StoredResponse) -> Result<(), StoreError> {
        let body = serde_json::to_string(response).map_err(corrupt)?;
        let (id, expires_at, now) = (response.id.clone(), response.expires_at, crate::domain::now_unix());
        self.with(move |conn| {
            // Never replaces another owner's live response.
            let changed = conn
                .execute(
                    "INSERT INTO responses (id, expires_at, body) VALUES (?1, ?2, ?3)
                     ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at, body = excluded.body
                     WHERE json_extract(responses.body, '$.owner') = json_extract(excluded.body, '$.owner')
                        OR responses.expires_at <= ?4",
                    params![id, expires_at, body, now],
                )
                .map_err(unavailable)?;
            if changed == 0 {
                return Err(StoreError::Conflict(format!("response {id} belongs to another owner")));
            }
            Ok(())
        })
        .await
    }

    async fn response(&self, id: &str, now_unix: i64) -> Result<Option<StoredResponse>, StoreError> {
        let id = id.to_owned();
        self.with(move |conn| {
            let body: Option<String> = conn
                .query_row("SELECT body FROM responses WHERE id = ?1 AND expires_at > ?2", params![id, now_unix], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(unavailable)?;
            body.map(|b| serde_json::from_str(&b).map_err(corrupt)).transpose()
        })
        .await
    }

    async fn delete_response(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.with(move |conn| Ok(execute(conn, "DELETE FROM responses WHERE id = ?1", [id]).map_err(unavailable)? > 0))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CapMode, KeyStatus, UsageStatus};
    use crate::money::TokenUsage;

    fn store() -> LocalStore {
        let dir = std::env::temp_dir().join(format!("mesh-local-{}", ulid::Ulid::new()));
        LocalStore::open(&dir).unwrap()
    }

    fn key(id: &str) -> ApiKey {
        ApiKey {
            id: id.to_owned(),
            key_hash: format!("hash-{id}"),
            name: "k".to_owned(),
            owner: "team".to_owned(),
            status: KeyStatus::Active,
            rpm: None,
            rpd: None,
            spend_cap: None,
            spend_cap_mode: CapMode::Soft,
            spent: Nanos::ZERO,
            reserved: Nanos::ZERO,
            default_model: None,
            default_params: serde_json::Map::new(),
            allowed_models: Vec::new(),
            expires_at: None,
            created_at: 0,
        }
    }

    fn record(request_id: &str) -> (UsageRecord, Charge) {
        let record = UsageRecord {
            request_id: request_id.to_owned(),
            key_id: "key_a".to_owned(),
            owner: "team".to_owned(),
            model: "m".to_owned(),
            provider: "p".to_owned(),
            session_id: None,
            template_id: None,
            tokens: TokenUsage::default(),
            cost: Nanos(7),
            status: UsageStatus::Success,
            latency_ms: 1,
            created_at_ms: 1,
        };
        let charge =
            Charge { key_hash: "hash-key_a".to_owned(), cost: Nanos(7), release: None, debit_owner_balance: false };
        (record, charge)
    }

    /// Calls that queue up together share one commit, and each stays atomic on its own: a call
    /// that fails in the group undoes only its own writes, and a replay in the same group is
    /// still charged once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_commit_keeps_each_call_atomic_and_idempotent() {
        let store = store();
        store.insert_key(&key("key_a")).await.unwrap();
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..40 {
            let store = store.clone();
            calls.spawn(async move {
                // Every fourth call inserts a key that already exists; the others settle, and
                // every settlement is sent twice.
                if i % 4 == 0 {
                    store.insert_key(&key("key_a")).await.map(|()| false)
                } else {
                    let (record, charge) = record(&format!("req_{}", i / 2));
                    store.record_usage(&record, &charge).await
                }
            });
        }
        let mut conflicts = 0;
        let mut written = 0;
        while let Some(done) = calls.join_next().await {
            match done.unwrap() {
                Err(StoreError::Conflict(_)) => conflicts += 1,
                Ok(true) => written += 1,
                Ok(false) => {}
                Err(other) => panic!("{other}"),
            }
        }
        assert_eq!(conflicts, 10);
        let recorded = store.query_usage(&UsageFilter::default()).await.unwrap();
        let distinct: std::collections::BTreeSet<_> = recorded.iter().map(|r| r.request_id.clone()).collect();
        assert_eq!(recorded.len(), distinct.len(), "no request recorded twice");
        assert_eq!(written, recorded.len());
        let spent = store.key_by_id("key_a").await.unwrap().unwrap().spent;
        assert_eq!(spent, Nanos(7 * recorded.len() as u64), "each record charged once");
    }
}
