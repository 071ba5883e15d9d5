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
        self.get_item(&self.keys, "key_hash", key_hash).await?.as_ref().map(key_from_item).transpose()
    }

    /// The item whose partition key `key` is `value` (a consistent read).
    async fn get_item(&self, table: &str, key: &str, value: &str) -> Result<Option<Item>, StoreError> {
        let output = self.client.get_item().table_name(table).key(key, s(value)).consistent_read(true).send().await;
        Ok(output.map_err(unavailable)?.item)
    }

    async fn scan_all(&self, table: &str) -> Result<Vec<Item>, StoreError> {
        all_pages(|start| async move {
            let output = self
                .client
                .scan()
                .table_name(table)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(unavailable)?;
            Ok((output.items().to_vec(), output.last_evaluated_key().cloned()))
        })
        .await
    }

    /// Moves `amount` from the key's headroom into its reservations (a negative amount moves it
    /// back), checking `condition` on the key.
    fn reserve_item(
        &self,
        key_hash: &str,
        amount: i128,
        condition: Option<&str>,
    ) -> Result<TransactWriteItem, StoreError> {
        let update = Update::builder()
            .table_name(&self.keys)
            .key("key_hash", s(key_hash))
            .update_expression("ADD reserved_nanos :reserve, headroom_nanos :headroom")
            .set_condition_expression(condition.map(str::to_owned))
            .expression_attribute_values(":reserve", num(amount))
            .expression_attribute_values(":headroom", num(-amount))
            .build()
            .map_err(build_error)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// Deletes a reservation of the key, which must still exist.
    fn release_item(&self, key_hash: &str, id: &str) -> Result<TransactWriteItem, StoreError> {
        let delete = Delete::builder()
            .table_name(&self.reservations)
            .key("key_hash", s(key_hash))
            .key("id", s(id))
            .condition_expression("attribute_exists(id)")
            .build()
            .map_err(build_error)?;
        Ok(TransactWriteItem::builder().delete(delete).build())
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
                items.push(self.release_item(&charge.key_hash, id)?);
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

/// Every item of a paged read: `page` reads the page that starts at a key (the first: `None`)
/// and answers its items and the key the next page starts at.
async fn all_pages<F, Fut>(mut page: F) -> Result<Vec<Item>, StoreError>
where
    F: FnMut(Option<Item>) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<Item>, Option<Item>), StoreError>>,
{
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let (read, next) = page(start).await?;
        items.extend(read);
        match next {
            Some(last) if !last.is_empty() => start = Some(last),
            _ => return Ok(items),
        }
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
impl StoreHealth for DynamoStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.client.describe_table().table_name(&self.keys).send().await.map_err(unavailable)?;
        Ok(())
    }
}

mod balances;
mod keys;
mod prices;
mod responses;
mod templates;
mod usage;
