//! The `usage` table: one record per request, written with the key's charge in one transaction.

use super::*;

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
                all_pages(|start| {
                    let value = value.clone();
                    async move {
                        let output = self
                            .client
                            .query()
                            .table_name(&self.usage)
                            .index_name(index)
                            .key_condition_expression("#f = :v AND created_at_ms >= :since")
                            .expression_attribute_names("#f", field)
                            .expression_attribute_values(":v", s(value))
                            .expression_attribute_values(":since", num(since))
                            .set_exclusive_start_key(start)
                            .send()
                            .await
                            .map_err(unavailable)?;
                        Ok((output.items().to_vec(), output.last_evaluated_key().cloned()))
                    }
                })
                .await?
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
