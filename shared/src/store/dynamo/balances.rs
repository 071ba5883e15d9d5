//! The `balances` table: owners' prepaid balances.

use super::*;

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
        let item = self.get_item(&self.balances, "owner", owner).await?;
        Ok(item.map(|item| i64::try_from(nanos_attr(&item, "nanos")).unwrap_or(i64::MAX)))
    }
}
