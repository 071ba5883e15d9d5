//! The `keys` table: keys by hash (by id through the id-to-hash lookup), update, reservations under
//! a hard cap and their expiry.

use super::*;

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
            .transact_items(self.reserve_item(key_hash, amount, Some("headroom_nanos >= :reserve"))?)
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
                .transact_items(self.release_item(key_hash, id)?)
                .transact_items(self.reserve_item(key_hash, -amount, None)?)
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
