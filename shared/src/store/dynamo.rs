//! The DynamoDB adapter (production). Tables are `<prefix><name>`; the endpoint comes from
//! `AWS_ENDPOINT_URL_DYNAMODB` when set (emulators), through the SDK's standard configuration.
//!
//! Table design:
//! - `keys`: partition `key_hash`; GSI `by_id` on `id`. Money as integer nano-USD numbers:
//!   `spent_nanos`, `reserved_nanos`, and `headroom_nanos` (= cap − spent − reserved, kept by
//!   every write because condition expressions cannot do arithmetic).
//! - `reservations`: partition `key_hash`, sort `id`; TTL on `expires_at`.
//! - `model_prices`: partition `model`, sort `provider`.
//! - `usage`: partition `request_id` (idempotent writes); GSIs `by_key` and `by_owner` on
//!   (`key_id` | `owner`, `created_at_ms`).
//! - `balances`: partition `owner`, `nanos`.
//! - `templates`: partition `id`; GSI `by_owner_name` on (`owner`, `name`). Name uniqueness per
//!   owner is held by a lock item `name#<owner>#<name>` written in the same transaction.
//! - `responses`: partition `id`, the stored response as one JSON `body`; TTL on `expires_at`.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, Delete, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    Projection, ProjectionType, Put, ScalarAttributeType, TimeToLiveSpecification, TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;
use serde_json::{Map, Number, Value};

use super::{BalanceStore, KeyStore, PriceStore, Reservation, ResponseStore, StoreHealth, TemplateStore, UsageStore};
use crate::domain::{ApiKey, Charge, KeyUpdate, ModelPrice, StoredResponse, Template, UsageFilter, UsageRecord};
use crate::error::StoreError;
use crate::money::Nanos;

type Item = HashMap<String, AttributeValue>;

/// The DynamoDB actions the gateway function performs, per table, and whether it queries the
/// table's indexes. Its IAM policy in `template.yaml` must grant exactly these (a test checks);
/// `mesh-admin` needs more and runs with operator credentials.
pub const FUNCTION_ACCESS: [(&str, &[&str], bool); 7] = [
    // key_by_hash; reserve, release_expired and settlement update it; `/readyz` describes it.
    ("keys", &["GetItem", "UpdateItem", "DescribeTable", "ConditionCheckItem"], false),
    // reserve puts, release_expired queries, settlement deletes.
    ("reservations", &["Query", "PutItem", "DeleteItem", "ConditionCheckItem"], false),
    // prices_for queries; `/v1/models` scans.
    ("model_prices", &["Query", "Scan"], false),
    // settlement puts under a condition (idempotent by request id).
    ("usage", &["PutItem", "ConditionCheckItem"], false),
    ("balances", &["GetItem", "UpdateItem"], false),
    // the templates API: by id, by owner and name (index), name locks in transactions.
    ("templates", &["GetItem", "Query", "PutItem", "UpdateItem", "DeleteItem"], true),
    ("responses", &["GetItem", "PutItem", "DeleteItem"], false),
];

/// The DynamoDB adapter.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    keys: String,
    reservations: String,
    prices: String,
    usage: String,
    balances: String,
    templates: String,
    responses: String,
}

fn unavailable<E: ProvideErrorMetadata + std::fmt::Debug, R>(err: SdkError<E, R>) -> StoreError {
    let code = err.code().unwrap_or("unknown").to_owned();
    let message = err.message().unwrap_or_default().to_owned();
    StoreError::Unavailable(format!("dynamodb {code}: {message}"))
}

fn corrupt(err: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(err.to_string())
}

fn build_error(err: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("request build: {err}"))
}

fn num(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn signed(nanos: Nanos) -> i128 {
    i128::from(nanos.0)
}

/// JSON → DynamoDB attribute (nulls are dropped by the caller).
fn to_attr(value: &Value) -> AttributeValue {
    match value {
        Value::Null => AttributeValue::Null(true),
        Value::Bool(b) => AttributeValue::Bool(*b),
        Value::Number(n) => AttributeValue::N(n.to_string()),
        Value::String(text) => AttributeValue::S(text.clone()),
        Value::Array(items) => AttributeValue::L(items.iter().map(to_attr).collect()),
        Value::Object(map) => AttributeValue::M(map.iter().map(|(k, v)| (k.clone(), to_attr(v))).collect()),
    }
}

/// DynamoDB attribute → JSON.
fn from_attr(attr: &AttributeValue) -> Value {
    match attr {
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::N(text) => text
            .parse::<i64>()
            .map(Value::from)
            .ok()
            .or_else(|| text.parse::<u64>().ok().map(Value::from))
            .or_else(|| text.parse::<f64>().ok().and_then(Number::from_f64).map(Value::Number))
            .unwrap_or(Value::Null),
        AttributeValue::S(text) => Value::String(text.clone()),
        AttributeValue::L(items) => Value::Array(items.iter().map(from_attr).collect()),
        AttributeValue::M(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), from_attr(v))).collect()),
        AttributeValue::Ss(items) => Value::Array(items.iter().cloned().map(Value::String).collect()),
        _ => Value::Null,
    }
}

fn to_item<T: serde::Serialize>(value: &T) -> Result<Item, StoreError> {
    let Value::Object(map) = serde_json::to_value(value).map_err(corrupt)? else {
        return Err(corrupt("record is not an object"));
    };
    Ok(map.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), to_attr(v))).collect())
}

fn from_item<T: serde::de::DeserializeOwned>(item: &Item) -> Result<T, StoreError> {
    let map: Map<String, Value> = item.iter().map(|(k, v)| (k.clone(), from_attr(v))).collect();
    serde_json::from_value(Value::Object(map)).map_err(corrupt)
}

fn nanos_attr(item: &Item, name: &str) -> i128 {
    item.get(name).and_then(|a| a.as_n().ok()).and_then(|n| n.parse().ok()).unwrap_or(0)
}

fn key_to_item(key: &ApiKey) -> Result<Item, StoreError> {
    let mut item = to_item(key)?;
    item.remove("spent");
    item.remove("reserved");
    item.insert("spent_nanos".to_owned(), num(key.spent.0));
    item.insert("reserved_nanos".to_owned(), num(key.reserved.0));
    item.insert("headroom_nanos".to_owned(), num(headroom(key)));
    if key.default_params.is_empty() {
        item.remove("default_params");
    }
    Ok(item)
}

fn headroom(key: &ApiKey) -> i128 {
    key.spend_cap.map_or(0, |cap| signed(cap) - signed(key.spent) - signed(key.reserved))
}

fn key_from_item(item: &Item) -> Result<ApiKey, StoreError> {
    let mut key: ApiKey = from_item(item)?;
    key.spent = Nanos(u64::try_from(nanos_attr(item, "spent_nanos")).unwrap_or(0));
    key.reserved = Nanos(u64::try_from(nanos_attr(item, "reserved_nanos")).unwrap_or(0));
    Ok(key)
}

fn key_schema(name: &str, kind: KeyType) -> Result<KeySchemaElement, StoreError> {
    KeySchemaElement::builder().attribute_name(name).key_type(kind).build().map_err(build_error)
}

fn attribute(name: &str, kind: ScalarAttributeType) -> Result<AttributeDefinition, StoreError> {
    AttributeDefinition::builder().attribute_name(name).attribute_type(kind).build().map_err(build_error)
}

/// An attribute of a key schema.
type KeyAttribute = (&'static str, ScalarAttributeType);

/// Description of one table for `tables create`.
struct TableSpec {
    name: String,
    hash: KeyAttribute,
    range: Option<KeyAttribute>,
    indexes: Vec<(&'static str, KeyAttribute, Option<KeyAttribute>)>,
    ttl: Option<&'static str>,
}

impl DynamoStore {
    pub fn new(client: Client, table_prefix: &str) -> Self {
        DynamoStore {
            client,
            keys: format!("{table_prefix}keys"),
            reservations: format!("{table_prefix}reservations"),
            prices: format!("{table_prefix}model_prices"),
            usage: format!("{table_prefix}usage"),
            balances: format!("{table_prefix}balances"),
            templates: format!("{table_prefix}templates"),
            responses: format!("{table_prefix}responses"),
        }
    }

    /// Builds a client from the standard AWS configuration chain.
    pub async fn from_env(table_prefix: &str) -> Self {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        DynamoStore::new(Client::new(&config), table_prefix)
    }

    /// The table names this adapter uses (the IAM policy must name exactly these).
    pub fn table_names(&self) -> Vec<String> {
        vec![
            self.keys.clone(),
            self.reservations.clone(),
            self.prices.clone(),
            self.usage.clone(),
            self.balances.clone(),
            self.templates.clone(),
            self.responses.clone(),
        ]
    }

    fn specs(&self) -> Vec<TableSpec> {
        use ScalarAttributeType::{N, S};
        vec![
            TableSpec {
                name: self.keys.clone(),
                hash: ("key_hash", S),
                range: None,
                indexes: vec![("by_id", ("id", S), None)],
                ttl: None,
            },
            TableSpec {
                name: self.reservations.clone(),
                hash: ("key_hash", S),
                range: Some(("id", S)),
                indexes: vec![],
                ttl: Some("expires_at"),
            },
            TableSpec {
                name: self.prices.clone(),
                hash: ("model", S),
                range: Some(("provider", S)),
                indexes: vec![],
                ttl: None,
            },
            TableSpec {
                name: self.usage.clone(),
                hash: ("request_id", S),
                range: None,
                indexes: vec![
                    ("by_key", ("key_id", S), Some(("created_at_ms", N))),
                    ("by_owner", ("owner", S), Some(("created_at_ms", N))),
                ],
                ttl: None,
            },
            TableSpec { name: self.balances.clone(), hash: ("owner", S), range: None, indexes: vec![], ttl: None },
            TableSpec {
                name: self.templates.clone(),
                hash: ("id", S),
                range: None,
                indexes: vec![("by_owner_name", ("owner", S), Some(("name", S)))],
                ttl: None,
            },
            TableSpec {
                name: self.responses.clone(),
                hash: ("id", S),
                range: None,
                indexes: vec![],
                ttl: Some("expires_at"),
            },
        ]
    }

    /// Creates any missing table (on-demand billing) and enables TTL where used. Idempotent.
    pub async fn create_tables(&self) -> Result<Vec<String>, StoreError> {
        let mut created = Vec::new();
        for spec in self.specs() {
            let mut attributes = vec![attribute(spec.hash.0, spec.hash.1.clone())?];
            let mut schema = vec![key_schema(spec.hash.0, KeyType::Hash)?];
            if let Some((name, kind)) = &spec.range {
                attributes.push(attribute(name, kind.clone())?);
                schema.push(key_schema(name, KeyType::Range)?);
            }
            let mut request = self
                .client
                .create_table()
                .table_name(&spec.name)
                .billing_mode(BillingMode::PayPerRequest)
                .set_key_schema(Some(schema));
            for (index, hash, range) in &spec.indexes {
                if !attributes.iter().any(|a| a.attribute_name() == hash.0) {
                    attributes.push(attribute(hash.0, hash.1.clone())?);
                }
                let mut index_schema = vec![key_schema(hash.0, KeyType::Hash)?];
                if let Some((name, kind)) = range {
                    if !attributes.iter().any(|a| a.attribute_name() == *name) {
                        attributes.push(attribute(name, kind.clone())?);
                    }
                    index_schema.push(key_schema(name, KeyType::Range)?);
                }
                request = request.global_secondary_indexes(
                    GlobalSecondaryIndex::builder()
                        .index_name(*index)
                        .set_key_schema(Some(index_schema))
                        .projection(Projection::builder().projection_type(ProjectionType::All).build())
                        .build()
                        .map_err(build_error)?,
                );
            }
            match request.set_attribute_definitions(Some(attributes)).send().await {
                Ok(_) => created.push(spec.name.clone()),
                Err(err) if err.code() == Some("ResourceInUseException") => {}
                Err(err) => return Err(unavailable(err)),
            }
            if let Some(ttl) = spec.ttl {
                let result = self
                    .client
                    .update_time_to_live()
                    .table_name(&spec.name)
                    .time_to_live_specification(
                        TimeToLiveSpecification::builder()
                            .enabled(true)
                            .attribute_name(ttl)
                            .build()
                            .map_err(build_error)?,
                    )
                    .send()
                    .await;
                if let Err(err) = result {
                    // Enabling TTL twice is refused; anything else is a real failure.
                    if err.code() != Some("ValidationException") {
                        return Err(unavailable(err));
                    }
                }
            }
        }
        Ok(created)
    }

    async fn hash_for_id(&self, id: &str) -> Result<Option<String>, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.keys)
            .index_name("by_id")
            .key_condition_expression("id = :id")
            .expression_attribute_values(":id", s(id))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(output.items().first().and_then(|item| item.get("key_hash")).and_then(|a| a.as_s().ok()).cloned())
    }

    async fn read_key(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.keys)
            .key("key_hash", s(key_hash))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        output.item().map(key_from_item).transpose()
    }

    async fn scan_all(&self, table: &str) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .scan()
                .table_name(table)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(unavailable)?;
            items.extend(output.items().iter().cloned());
            match output.last_evaluated_key() {
                Some(last) if !last.is_empty() => start = Some(last.clone()),
                _ => return Ok(items),
            }
        }
    }

    fn charge_items(
        &self,
        record: &UsageRecord,
        charge: &Charge,
        with_release: bool,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let mut items = Vec::new();
        let usage_item = to_item(record)?;
        items.push(
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&self.usage)
                        .set_item(Some(usage_item))
                        .condition_expression("attribute_not_exists(request_id)")
                        .build()
                        .map_err(build_error)?,
                )
                .build(),
        );
        let release = match (&charge.release, with_release) {
            (Some((id, amount)), true) => {
                items.push(
                    TransactWriteItem::builder()
                        .delete(
                            Delete::builder()
                                .table_name(&self.reservations)
                                .key("key_hash", s(&charge.key_hash))
                                .key("id", s(id))
                                .condition_expression("attribute_exists(id)")
                                .build()
                                .map_err(build_error)?,
                        )
                        .build(),
                );
                signed(*amount)
            }
            _ => 0,
        };
        let cost = signed(charge.cost);
        items.push(
            TransactWriteItem::builder()
                .update(
                    Update::builder()
                        .table_name(&self.keys)
                        .key("key_hash", s(&charge.key_hash))
                        .update_expression("ADD spent_nanos :cost, reserved_nanos :unreserve, headroom_nanos :headroom")
                        .condition_expression("attribute_exists(key_hash)")
                        .expression_attribute_values(":cost", num(cost))
                        .expression_attribute_values(":unreserve", num(-release))
                        .expression_attribute_values(":headroom", num(release - cost))
                        .build()
                        .map_err(build_error)?,
                )
                .build(),
        );
        if charge.debit_owner_balance {
            items.push(
                TransactWriteItem::builder()
                    .update(
                        Update::builder()
                            .table_name(&self.balances)
                            .key("owner", s(&record.owner))
                            .update_expression("ADD nanos :debit")
                            .expression_attribute_values(":debit", num(-cost))
                            .build()
                            .map_err(build_error)?,
                    )
                    .build(),
            );
        }
        Ok(items)
    }
}

/// Outcome of a transaction that DynamoDB cancelled: which of its items failed their condition.
fn cancelled_conditions<R>(
    err: &SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError, R>,
) -> Option<Vec<bool>> {
    let service = err.as_service_error()?;
    let aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(
        cancelled,
    ) = service
    else {
        return None;
    };
    Some(cancelled.cancellation_reasons().iter().map(|r| r.code() == Some("ConditionalCheckFailed")).collect())
}

#[async_trait]
impl KeyStore for DynamoStore {
    async fn insert_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.keys)
            .set_item(Some(key_to_item(key)?))
            .condition_expression("attribute_not_exists(key_hash)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if err.code() == Some("ConditionalCheckFailedException") => {
                Err(StoreError::Conflict("key exists".to_owned()))
            }
            Err(err) => Err(unavailable(err)),
        }
    }

    async fn key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError> {
        self.read_key(key_hash).await
    }

    async fn key_by_id(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        match self.hash_for_id(id).await? {
            Some(hash) => self.read_key(&hash).await,
            None => Ok(None),
        }
    }

    async fn list_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let mut keys = self.scan_all(&self.keys).await?.iter().map(key_from_item).collect::<Result<Vec<_>, _>>()?;
        keys.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(keys)
    }

    async fn update_key(&self, id: &str, update: &KeyUpdate) -> Result<Option<ApiKey>, StoreError> {
        let Some(hash) = self.hash_for_id(id).await? else { return Ok(None) };
        // Optimistic concurrency: rewrite the static fields and the headroom only if spend and
        // reservations did not move since the read (a concurrent charge makes us retry).
        for _ in 0..20 {
            let Some(mut key) = self.read_key(&hash).await? else { return Ok(None) };
            let (spent, reserved) = (key.spent, key.reserved);
            update.apply(&mut key);
            let item = key_to_item(&key)?;
            let result = self
                .client
                .put_item()
                .table_name(&self.keys)
                .set_item(Some(item))
                .condition_expression("spent_nanos = :spent AND reserved_nanos = :reserved")
                .expression_attribute_values(":spent", num(spent.0))
                .expression_attribute_values(":reserved", num(reserved.0))
                .send()
                .await;
            match result {
                Ok(_) => return Ok(Some(key)),
                Err(err) if err.code() == Some("ConditionalCheckFailedException") => continue,
                Err(err) => return Err(unavailable(err)),
            }
        }
        Err(StoreError::Conflict("key kept changing during the update".to_owned()))
    }

    async fn reserve(&self, key_hash: &str, reservation: &Reservation) -> Result<bool, StoreError> {
        let amount = signed(reservation.amount);
        let result = self
            .client
            .transact_write_items()
            .transact_items(
                TransactWriteItem::builder()
                    .update(
                        Update::builder()
                            .table_name(&self.keys)
                            .key("key_hash", s(key_hash))
                            .update_expression("ADD reserved_nanos :amount, headroom_nanos :minus")
                            .condition_expression("headroom_nanos >= :amount")
                            .expression_attribute_values(":amount", num(amount))
                            .expression_attribute_values(":minus", num(-amount))
                            .build()
                            .map_err(build_error)?,
                    )
                    .build(),
            )
            .transact_items(
                TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(&self.reservations)
                            .item("key_hash", s(key_hash))
                            .item("id", s(&reservation.id))
                            .item("amount_nanos", num(amount))
                            .item("expires_at", num(reservation.expires_at))
                            .build()
                            .map_err(build_error)?,
                    )
                    .build(),
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) => match cancelled_conditions(&err) {
                Some(failed) if failed.first() == Some(&true) => Ok(false),
                _ => Err(unavailable(err)),
            },
        }
    }

    async fn release_expired(&self, key_hash: &str, now_unix: i64) -> Result<usize, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.reservations)
            .key_condition_expression("key_hash = :hash")
            .filter_expression("expires_at <= :now")
            .expression_attribute_values(":hash", s(key_hash))
            .expression_attribute_values(":now", num(now_unix))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        let mut released = 0;
        for item in output.items() {
            let Some(id) = item.get("id").and_then(|a| a.as_s().ok()) else { continue };
            let amount = nanos_attr(item, "amount_nanos");
            let result = self
                .client
                .transact_write_items()
                .transact_items(
                    TransactWriteItem::builder()
                        .delete(
                            Delete::builder()
                                .table_name(&self.reservations)
                                .key("key_hash", s(key_hash))
                                .key("id", s(id))
                                .condition_expression("attribute_exists(id)")
                                .build()
                                .map_err(build_error)?,
                        )
                        .build(),
                )
                .transact_items(
                    TransactWriteItem::builder()
                        .update(
                            Update::builder()
                                .table_name(&self.keys)
                                .key("key_hash", s(key_hash))
                                .update_expression("ADD reserved_nanos :minus, headroom_nanos :amount")
                                .expression_attribute_values(":amount", num(amount))
                                .expression_attribute_values(":minus", num(-amount))
                                .build()
                                .map_err(build_error)?,
                        )
                        .build(),
                )
                .send()
                .await;
            match result {
                Ok(_) => released += 1,
                // Settled or released by someone else in the meantime.
                Err(err) if cancelled_conditions(&err).is_some() => {}
                Err(err) => return Err(unavailable(err)),
            }
        }
        Ok(released)
    }
}

#[async_trait]
impl PriceStore for DynamoStore {
    async fn put_price(&self, price: &ModelPrice) -> Result<(), StoreError> {
        if price.is_default {
            for mut other in self.prices_for(&price.model).await? {
                if other.is_default && other.provider != price.provider {
                    other.is_default = false;
                    self.client
                        .put_item()
                        .table_name(&self.prices)
                        .set_item(Some(to_item(&other)?))
                        .send()
                        .await
                        .map_err(unavailable)?;
                }
            }
        }
        self.client
            .put_item()
            .table_name(&self.prices)
            .set_item(Some(to_item(price)?))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn prices_for(&self, model: &str) -> Result<Vec<ModelPrice>, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.prices)
            .key_condition_expression("model = :model")
            .expression_attribute_values(":model", s(model))
            .send()
            .await
            .map_err(unavailable)?;
        output.items().iter().map(from_item).collect()
    }

    async fn list_prices(&self) -> Result<Vec<ModelPrice>, StoreError> {
        let mut prices: Vec<ModelPrice> =
            self.scan_all(&self.prices).await?.iter().map(from_item).collect::<Result<_, _>>()?;
        prices.sort_by(|a, b| (&a.model, &a.provider).cmp(&(&b.model, &b.provider)));
        Ok(prices)
    }
}

#[async_trait]
impl UsageStore for DynamoStore {
    async fn record_usage(&self, record: &UsageRecord, charge: &Charge) -> Result<bool, StoreError> {
        let mut with_release = charge.release.is_some();
        loop {
            let items = self.charge_items(record, charge, with_release)?;
            let result = self.client.transact_write_items().set_transact_items(Some(items)).send().await;
            let err = match result {
                Ok(_) => return Ok(true),
                Err(err) => err,
            };
            match cancelled_conditions(&err) {
                // The usage record exists: this request was already settled.
                Some(failed) if failed.first() == Some(&true) => return Ok(false),
                // The reservation expired and was released already: settle without it.
                Some(failed) if with_release && failed.get(1) == Some(&true) => with_release = false,
                _ => return Err(unavailable(err)),
            }
        }
    }

    async fn query_usage(&self, filter: &UsageFilter) -> Result<Vec<UsageRecord>, StoreError> {
        let since = filter.since_ms.unwrap_or(0);
        let index = match (&filter.key_id, &filter.owner) {
            (Some(key), _) => Some(("by_key", "key_id", key.clone())),
            (None, Some(owner)) => Some(("by_owner", "owner", owner.clone())),
            (None, None) => None,
        };
        let items = match index {
            None => self.scan_all(&self.usage).await?,
            Some((index, field, value)) => {
                let mut items = Vec::new();
                let mut start = None;
                loop {
                    let output = self
                        .client
                        .query()
                        .table_name(&self.usage)
                        .index_name(index)
                        .key_condition_expression("#f = :v AND created_at_ms >= :since")
                        .expression_attribute_names("#f", field)
                        .expression_attribute_values(":v", s(value.clone()))
                        .expression_attribute_values(":since", num(since))
                        .set_exclusive_start_key(start)
                        .send()
                        .await
                        .map_err(unavailable)?;
                    items.extend(output.items().iter().cloned());
                    match output.last_evaluated_key() {
                        Some(last) if !last.is_empty() => start = Some(last.clone()),
                        _ => break,
                    }
                }
                items
            }
        };
        let mut records = Vec::new();
        for item in &items {
            let record: UsageRecord = from_item(item)?;
            if filter.matches(&record) {
                records.push(record);
            }
        }
        records.sort_by_key(|r| r.created_at_ms);
        Ok(records)
    }
}

#[async_trait]
impl BalanceStore for DynamoStore {
    async fn add_balance(&self, owner: &str, delta: i64) -> Result<i64, StoreError> {
        let output = self
            .client
            .update_item()
            .table_name(&self.balances)
            .key("owner", s(owner))
            .update_expression("ADD nanos :delta")
            .expression_attribute_values(":delta", num(delta))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(unavailable)?;
        let value = output.attributes().map_or(0, |item| nanos_attr(item, "nanos"));
        Ok(i64::try_from(value).unwrap_or(i64::MAX))
    }

    async fn balance(&self, owner: &str) -> Result<Option<i64>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.balances)
            .key("owner", s(owner))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(output.item().map(|item| i64::try_from(nanos_attr(item, "nanos")).unwrap_or(i64::MAX)))
    }
}

#[async_trait]
impl StoreHealth for DynamoStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.client.describe_table().table_name(&self.keys).send().await.map_err(unavailable)?;
        Ok(())
    }
}

/// Largest stored response body (DynamoDB items stop at 400 KB).
const MAX_RESPONSE_ITEM: usize = 380 * 1024;

fn name_lock(owner: &str, name: &str) -> String {
    format!("name#{owner}#{name}")
}

impl DynamoStore {
    fn lock_put(&self, owner: &str, name: &str) -> Result<TransactWriteItem, StoreError> {
        Ok(TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name(&self.templates)
                    .item("id", s(name_lock(owner, name)))
                    .condition_expression("attribute_not_exists(id)")
                    .build()
                    .map_err(build_error)?,
            )
            .build())
    }

    fn lock_delete(&self, owner: &str, name: &str) -> Result<TransactWriteItem, StoreError> {
        Ok(TransactWriteItem::builder()
            .delete(
                Delete::builder()
                    .table_name(&self.templates)
                    .key("id", s(name_lock(owner, name)))
                    .build()
                    .map_err(build_error)?,
            )
            .build())
    }

    fn template_put(&self, template: &Template, condition: Option<&str>) -> Result<TransactWriteItem, StoreError> {
        let mut put = Put::builder().table_name(&self.templates).set_item(Some(to_item(template)?));
        if let Some(condition) = condition {
            put = put.condition_expression(condition);
        }
        Ok(TransactWriteItem::builder().put(put.build().map_err(build_error)?).build())
    }

    async fn query_templates(&self, owner: &str, name: Option<&str>) -> Result<Vec<Template>, StoreError> {
        let mut query = self
            .client
            .query()
            .table_name(&self.templates)
            .index_name("by_owner_name")
            .expression_attribute_names("#o", "owner")
            .expression_attribute_values(":o", s(owner));
        query = match name {
            Some(name) => query
                .key_condition_expression("#o = :o AND #n = :n")
                .expression_attribute_names("#n", "name")
                .expression_attribute_values(":n", s(name)),
            None => query.key_condition_expression("#o = :o"),
        };
        let output = query.send().await.map_err(unavailable)?;
        output.items().iter().map(from_item).collect()
    }
}

#[async_trait]
impl TemplateStore for DynamoStore {
    async fn insert_template(&self, template: &Template) -> Result<(), StoreError> {
        let result = self
            .client
            .transact_write_items()
            .transact_items(self.lock_put(&template.owner, &template.name)?)
            .transact_items(self.template_put(template, Some("attribute_not_exists(id)"))?)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if cancelled_conditions(&err).is_some() => {
                Err(StoreError::Conflict("template name taken".to_owned()))
            }
            Err(err) => Err(unavailable(err)),
        }
    }

    async fn template(&self, id: &str) -> Result<Option<Template>, StoreError> {
        if id.starts_with("name#") {
            return Ok(None);
        }
        let output = self
            .client
            .get_item()
            .table_name(&self.templates)
            .key("id", s(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        output.item().map(from_item).transpose()
    }

    async fn template_by_name(&self, owner: &str, name: &str) -> Result<Option<Template>, StoreError> {
        Ok(self.query_templates(owner, Some(name)).await?.into_iter().next())
    }

    async fn templates_of(&self, owner: &str) -> Result<Vec<Template>, StoreError> {
        self.query_templates(owner, None).await
    }

    async fn replace_template(&self, template: &Template) -> Result<(), StoreError> {
        let Some(current) = self.template(&template.id).await? else {
            return Err(StoreError::Conflict("template was deleted".to_owned()));
        };
        let mut request = self.client.transact_write_items();
        if current.name != template.name {
            request = request
                .transact_items(self.lock_put(&template.owner, &template.name)?)
                .transact_items(self.lock_delete(&current.owner, &current.name)?);
        }
        let result = request.transact_items(self.template_put(template, Some("attribute_exists(id)"))?).send().await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if cancelled_conditions(&err).is_some() => {
                Err(StoreError::Conflict("template name taken".to_owned()))
            }
            Err(err) => Err(unavailable(err)),
        }
    }

    async fn delete_template(&self, id: &str) -> Result<bool, StoreError> {
        let Some(current) = self.template(id).await? else { return Ok(false) };
        let delete = TransactWriteItem::builder()
            .delete(
                Delete::builder()
                    .table_name(&self.templates)
                    .key("id", s(id))
                    .condition_expression("attribute_exists(id)")
                    .build()
                    .map_err(build_error)?,
            )
            .build();
        let result = self
            .client
            .transact_write_items()
            .transact_items(delete)
            .transact_items(self.lock_delete(&current.owner, &current.name)?)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) if cancelled_conditions(&err).is_some() => Ok(false),
            Err(err) => Err(unavailable(err)),
        }
    }
}

#[async_trait]
impl ResponseStore for DynamoStore {
    async fn put_response(&self, response: &StoredResponse) -> Result<(), StoreError> {
        let body = serde_json::to_string(response).map_err(corrupt)?;
        if body.len() > MAX_RESPONSE_ITEM {
            return Err(StoreError::Unavailable(format!(
                "response {} is too large to store ({} bytes)",
                response.id,
                body.len()
            )));
        }
        match self
            .client
            .put_item()
            .table_name(&self.responses)
            .item("id", s(&response.id))
            .item("owner", s(&response.owner))
            .item("expires_at", num(response.expires_at))
            .item("body", s(body))
            // Never replaces another owner's live response.
            .condition_expression("attribute_not_exists(id) OR #owner = :owner OR expires_at <= :now")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":owner", s(&response.owner))
            .expression_attribute_values(":now", num(crate::domain::now_unix()))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if err.code() == Some("ConditionalCheckFailedException") => {
                Err(StoreError::Conflict(format!("response {} belongs to another owner", response.id)))
            }
            Err(err) => Err(unavailable(err)),
        }
    }

    async fn response(&self, id: &str, now_unix: i64) -> Result<Option<StoredResponse>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.responses)
            .key("id", s(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        let Some(item) = output.item() else { return Ok(None) };
        // DynamoDB deletes expired items lazily: an expired item is gone for us.
        if i64::try_from(nanos_attr(item, "expires_at")).unwrap_or(0) <= now_unix {
            return Ok(None);
        }
        let body = item.get("body").and_then(|a| a.as_s().ok()).ok_or_else(|| corrupt("response without body"))?;
        serde_json::from_str(body).map(Some).map_err(corrupt)
    }

    async fn delete_response(&self, id: &str) -> Result<bool, StoreError> {
        let output = self
            .client
            .delete_item()
            .table_name(&self.responses)
            .key("id", s(id))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(output.attributes().is_some_and(|a| !a.is_empty()))
    }
}
