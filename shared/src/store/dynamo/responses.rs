//! The `responses` table: stored responses per owner, with a TTL.

use super::*;

/// Largest stored response body (DynamoDB items stop at 400 KB).
const MAX_RESPONSE_ITEM: usize = 380 * 1024;

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
        let Some(item) = self.get_item(&self.responses, "id", id).await? else { return Ok(None) };
        // DynamoDB deletes expired items lazily: an expired item is gone for us.
        if i64::try_from(nanos_attr(&item, "expires_at")).unwrap_or(0) <= now_unix {
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
