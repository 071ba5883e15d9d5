//! `template.yaml` checks that linters cannot make: streaming is really on for both front
//! doors, the function's IAM policy names exactly the tables and actions the code uses, and
//! only the provider secrets the function reads.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};

use mesh::store::dynamo::FUNCTION_ACCESS;
use serde_yaml_ng::Value;

fn template() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A tagged scalar (`!GetAtt X.Arn`, `!Sub ...`, `!Ref X`) as "tag value".
fn tagged(value: &Value) -> Option<(String, String)> {
    match value {
        Value::Tagged(t) => Some((t.tag.to_string(), t.value.as_str().unwrap_or_default().to_owned())),
        _ => None,
    }
}

fn resources(doc: &Value) -> &serde_yaml_ng::Mapping {
    doc["Resources"].as_mapping().unwrap()
}

#[test]
fn both_front_doors_stream() {
    let doc = template();
    let function = &doc["Resources"]["ResponsesFunction"]["Properties"];
    assert_eq!(function["FunctionUrlConfig"]["InvokeMode"].as_str(), Some("RESPONSE_STREAM"));
    let events = function["Events"].as_mapping().unwrap();
    let api_events: Vec<&Value> = events.values().filter(|e| e["Type"].as_str() == Some("Api")).collect();
    assert!(!api_events.is_empty(), "an API Gateway REST event");
    for event in api_events {
        assert_eq!(
            event["Properties"]["ResponseTransferMode"].as_str(),
            Some("RESPONSE_STREAM"),
            "SAM's property value"
        );
    }
    assert_eq!(doc["Resources"]["ResponsesFunction"]["Properties"]["Runtime"].as_str(), Some("provided.al2023"));
    let env = &function["Environment"]["Variables"];
    assert_eq!(env["AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH"].as_str(), Some("true"));
    assert_eq!(env["MESH_STORE"].as_str(), Some("dynamodb"));
    for (name, value) in env.as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        assert!(
            !name.ends_with("_API_KEY"),
            "{name}: provider keys live in Secrets Manager, never in plain environment variables"
        );
        let _ = value;
    }
}

#[test]
fn iam_policy_names_exactly_what_the_code_uses() {
    let doc = template();
    let all = resources(&doc);
    // Logical table id → table name suffix (TableName: !Sub ${TablePrefix}<name>).
    let mut tables = BTreeMap::new();
    for (id, resource) in all {
        if resource["Type"].as_str() == Some("AWS::DynamoDB::Table") {
            let (_, sub) = tagged(&resource["Properties"]["TableName"]).unwrap();
            tables.insert(id.as_str().unwrap().to_owned(), sub.trim_start_matches("${TablePrefix}").to_owned());
        }
    }
    let expected: BTreeMap<String, (BTreeSet<String>, bool)> = FUNCTION_ACCESS
        .iter()
        .map(|(table, actions, index)| {
            ((*table).to_owned(), (actions.iter().map(|a| format!("dynamodb:{a}")).collect(), *index))
        })
        .collect();
    assert_eq!(
        tables.values().cloned().collect::<BTreeSet<_>>(),
        expected.keys().cloned().collect::<BTreeSet<_>>(),
        "the template creates the tables the code uses"
    );

    let role = &all[&Value::from("ResponsesFunctionRole")]["Properties"]["Policies"];
    let mut granted: BTreeMap<String, (BTreeSet<String>, bool)> = BTreeMap::new();
    let mut secrets = BTreeSet::new();
    for policy in role.as_sequence().unwrap() {
        let Some(statements) = policy["PolicyDocument"]["Statement"].as_sequence() else { continue };
        for statement in statements {
            let actions: BTreeSet<String> = match &statement["Action"] {
                Value::String(one) => [one.clone()].into(),
                Value::Sequence(many) => many.iter().map(|a| a.as_str().unwrap().to_owned()).collect(),
                other => panic!("action {other:?}"),
            };
            let targets: Vec<Value> = match &statement["Resource"] {
                Value::Sequence(many) => many.clone(),
                one => vec![one.clone()],
            };
            for target in targets {
                if actions.iter().any(|a| a.starts_with("dynamodb:")) {
                    let (tag, text) = tagged(&target).expect("table ARNs by reference, never wildcards");
                    let (logical, index) = match tag.as_str() {
                        "!GetAtt" => (text.trim_end_matches(".Arn").to_owned(), false),
                        "!Sub" => (
                            text.trim_start_matches("${").split('.').next().unwrap().to_owned(),
                            text.ends_with("/index/*"),
                        ),
                        other => panic!("unexpected {other}"),
                    };
                    let table =
                        tables.get(&logical).unwrap_or_else(|| panic!("{logical} is not a table of this template"));
                    let entry = granted.entry(table.clone()).or_default();
                    entry.0.extend(actions.iter().cloned());
                    entry.1 |= index;
                }
                if actions.contains("secretsmanager:GetSecretValue") {
                    secrets.insert(format!("{target:?}"));
                }
            }
        }
    }
    assert_eq!(granted, expected, "IAM grants exactly the DynamoDB actions the function performs");
    let env = &all[&Value::from("ResponsesFunction")]["Properties"]["Environment"]["Variables"];
    let read: BTreeSet<String> = env
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(name, _)| name.as_str().unwrap().ends_with("_API_KEY_SECRET_ARN"))
        .map(|(_, value)| format!("{value:?}"))
        .collect();
    assert!(!read.is_empty());
    assert_eq!(secrets, read, "GetSecretValue only on the secrets the function is told to read");
}
