//! The `model_prices` table: catalog rows by model.

use super::*;

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
