//! The `templates` table: templates by id, with a name lock per owner.

use super::*;

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
        self.get_item(&self.templates, "id", id).await?.as_ref().map(from_item).transpose()
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
