//! `mesh-admin`: operator commands against the configured store (DESIGN §7).

use std::collections::BTreeMap;
use std::io::Write;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::config::{Config, StoreConfig};
use crate::domain::{
    check_owner, now_unix, ApiKey, CapMode, KeyStatus, KeyUpdate, ModelPrice, UsageFilter, GLOBAL_OWNER,
};
use crate::ids::new_key_secret;
use crate::money::{format_decimal_nanos, Nanos, UsdPerMtok};
use crate::store::Stores;

#[derive(Debug, Parser)]
#[command(name = "mesh-admin", about = "Administer Mesh keys, prices, balances and usage")]
pub struct Cli {
    /// Print JSON on read commands.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Tables: `tables create`.
    Tables {
        #[command(subcommand)]
        command: TablesCommand,
    },
    /// API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The model catalog.
    Prices {
        #[command(subcommand)]
        command: PricesCommand,
    },
    /// Prepaid owner balances.
    Balance {
        #[command(subcommand)]
        command: BalanceCommand,
    },
    /// Prompt templates (global, or per owner with --owner).
    Templates {
        #[command(subcommand)]
        command: TemplatesCommand,
    },
    /// Usage totals per key and model.
    Usage {
        #[arg(long)]
        key: Option<String>,
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        session: Option<String>,
        /// RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TablesCommand {
    /// Create the tables (idempotent).
    Create,
}

#[derive(Debug, Args, Default)]
pub struct KeyFields {
    #[arg(long)]
    pub rpm: Option<u64>,
    #[arg(long)]
    pub rpd: Option<u64>,
    #[arg(long = "spend-cap-usd")]
    pub spend_cap_usd: Option<String>,
    #[arg(long = "spend-cap-mode")]
    pub spend_cap_mode: Option<String>,
    #[arg(long = "default-model")]
    pub default_model: Option<String>,
    /// JSON object of default sampling parameters.
    #[arg(long = "default-params")]
    pub default_params: Option<String>,
    #[arg(long = "expires-at")]
    pub expires_at: Option<String>,
    /// Comma-separated catalog ids the key may use.
    #[arg(long)]
    pub models: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; prints the secret alone on stdout (shown once).
    Create {
        #[arg(long)]
        name: String,
        /// The account the key belongs to; without it the key is its own account (owner = its id).
        #[arg(long)]
        owner: Option<String>,
        /// Import an existing secret (`rsk_<ULID>`, e.g. the one in `events/*.json`) instead of
        /// minting a new one; it is stored hashed like any other.
        #[arg(long)]
        secret: Option<String>,
        #[command(flatten)]
        fields: KeyFields,
    },
    List,
    Show {
        id: String,
    },
    /// Change a key; `none` clears rpm, rpd, spend cap, default model and expiry.
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        /// Move the key to another account.
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        fields: KeyFields,
    },
    Suspend {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PricesCommand {
    Put {
        model: String,
        #[arg(long)]
        provider: String,
        #[arg(long = "upstream-model")]
        upstream_model: Option<String>,
        #[arg(long = "input-usd-per-mtok")]
        input: Option<String>,
        #[arg(long = "output-usd-per-mtok")]
        output: Option<String>,
        #[arg(long = "cached-input-usd-per-mtok")]
        cached_input: Option<String>,
        #[arg(long = "context-length")]
        context_length: Option<u64>,
        #[arg(long = "max-output-tokens")]
        max_output_tokens: Option<u64>,
        #[arg(long)]
        priority: Option<i64>,
        #[arg(long)]
        default: bool,
        #[arg(long)]
        free: bool,
        #[arg(long)]
        disabled: bool,
    },
    /// Import a catalog file (`infra/prices.json` format).
    Import {
        file: std::path::PathBuf,
    },
    List,
}

#[derive(Debug, Subcommand)]
pub enum TemplatesCommand {
    /// Create or replace the template NAME from a JSON or YAML file (`system`, `messages`,
    /// `model`, `params`, `description`, `variables`).
    Put {
        name: String,
        #[arg(long)]
        file: std::path::PathBuf,
        /// Owner of the template; without it the template is global.
        #[arg(long)]
        owner: Option<String>,
    },
    List {
        #[arg(long)]
        owner: Option<String>,
    },
    Show {
        name: String,
        #[arg(long)]
        owner: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum BalanceCommand {
    Add { owner: String, usd: String },
    Show { owner: String },
}

/// A failed admin command, with a message for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AdminError(pub String);

fn fail(message: impl Into<String>) -> AdminError {
    AdminError(message.into())
}

impl From<crate::error::StoreError> for AdminError {
    fn from(err: crate::error::StoreError) -> Self {
        AdminError(err.to_string())
    }
}

impl From<std::io::Error> for AdminError {
    fn from(err: std::io::Error) -> Self {
        AdminError(format!("output: {err}"))
    }
}

/// The catalog file format.
#[derive(Debug, Deserialize)]
pub struct PriceFile {
    #[serde(default)]
    pub taken_at: Option<String>,
    pub models: Vec<ModelPrice>,
}

fn parse_time(text: &str) -> Result<i64, AdminError> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| fail(format!("`{text}` is not an RFC 3339 time (e.g. 2026-12-31T00:00:00Z)")))
}

fn format_time(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// An owner given on the command line (as `what`), refused when reserved or malformed.
fn owner_arg<'a>(what: &str, owner: &'a str) -> Result<&'a str, AdminError> {
    check_owner(owner).map(|()| owner).map_err(|problem| fail(format!("{what}: {problem}")))
}

fn is_none(text: &str) -> bool {
    text.eq_ignore_ascii_case("none")
}

fn key_update(fields: &KeyFields) -> Result<KeyUpdate, AdminError> {
    let mut update = KeyUpdate { rpm: fields.rpm.map(Some), rpd: fields.rpd.map(Some), ..KeyUpdate::default() };
    if let Some(cap) = &fields.spend_cap_usd {
        update.spend_cap =
            Some(if is_none(cap) { None } else { Some(Nanos::from_usd_str(cap).map_err(|e| fail(e.to_string()))?) });
    }
    if let Some(mode) = &fields.spend_cap_mode {
        update.spend_cap_mode = Some(match mode.as_str() {
            "soft" => CapMode::Soft,
            "hard" => CapMode::Hard,
            other => return Err(fail(format!("--spend-cap-mode must be soft or hard, got `{other}`"))),
        });
    }
    if let Some(model) = &fields.default_model {
        update.default_model = Some((!is_none(model)).then(|| model.clone()));
    }
    if let Some(params) = &fields.default_params {
        let value: Value = serde_json::from_str(params).map_err(|e| fail(format!("--default-params: {e}")))?;
        let Value::Object(map) = value else { return Err(fail("--default-params must be a JSON object")) };
        update.default_params = Some(map);
    }
    if let Some(at) = &fields.expires_at {
        update.expires_at = Some(if is_none(at) { None } else { Some(parse_time(at)?) });
    }
    if let Some(models) = &fields.models {
        update.allowed_models =
            Some(models.split(',').map(str::trim).filter(|m| !m.is_empty()).map(str::to_owned).collect());
    }
    Ok(update)
}

/// The stable JSON view of a key.
pub fn key_json(key: &ApiKey) -> Value {
    json!({
        "id": key.id,
        "name": key.name,
        "owner": key.owner,
        "status": key.status.as_str(),
        "rpm": key.rpm,
        "rpd": key.rpd,
        "spend_cap_usd": key.spend_cap.map(|c| c.to_string()),
        "spend_cap_mode": key.spend_cap_mode.as_str(),
        "spent_usd": key.spent.to_string(),
        "reserved_usd": key.reserved.to_string(),
        "remaining_cap_usd": key.remaining_cap().map(|c| c.to_string()),
        "default_model": key.default_model,
        "default_params": key.default_params,
        "allowed_models": key.allowed_models,
        "expires_at": key.expires_at.map(format_time),
        "created_at": format_time(key.created_at),
    })
}

fn print_value(out: &mut dyn Write, value: &Value) -> Result<(), AdminError> {
    writeln!(out, "{}", serde_json::to_string_pretty(value).unwrap_or_default())?;
    Ok(())
}

fn print_key_line(out: &mut dyn Write, key: &ApiKey) -> Result<(), AdminError> {
    let cap = key.spend_cap.map_or_else(|| "-".to_owned(), |c| format!("${c} {}", key.spend_cap_mode.as_str()));
    let limit = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    writeln!(
        out,
        "{}  {}  owner={}  status={}  rpm={}  rpd={}  cap={}  spent=${}  remaining={}",
        key.id,
        key.name,
        key.owner,
        key.status.as_str(),
        limit(key.rpm),
        limit(key.rpd),
        cap,
        key.spent,
        key.remaining_cap().map_or_else(|| "-".to_owned(), |r| format!("${r}")),
    )?;
    Ok(())
}

/// Runs one command against `stores`, writing its output to `out`.
pub async fn run(cli: Cli, config: &Config, stores: &Stores, out: &mut dyn Write) -> Result<(), AdminError> {
    let as_json = cli.json;
    match cli.command {
        Command::Tables { command: TablesCommand::Create } => match &config.store {
            StoreConfig::Dynamo { table_prefix } => {
                let store = crate::store::dynamo::DynamoStore::from_env(table_prefix).await;
                let created = store.create_tables().await?;
                writeln!(out, "tables ready: {} (created now: {})", store.table_names().join(", "), created.len())?;
            }
            StoreConfig::Local { dir } => {
                writeln!(out, "embedded store ready at {}", dir.join("mesh.db").display())?;
            }
        },
        Command::Keys { command } => keys(command, stores, as_json, out).await?,
        Command::Prices { command } => prices(command, stores, as_json, out).await?,
        Command::Templates { command } => templates(command, stores, as_json, out).await?,
        Command::Balance { command } => match command {
            BalanceCommand::Add { owner, usd } => {
                owner_arg("OWNER", &owner)?;
                let (negative, amount) = match usd.strip_prefix('-') {
                    Some(rest) => (true, rest),
                    None => (false, usd.as_str()),
                };
                let nanos = Nanos::from_usd_str(amount).map_err(|e| fail(e.to_string()))?;
                let delta = i64::try_from(nanos.0).map_err(|_| fail("amount too large"))?;
                let balance = stores.balances.add_balance(&owner, if negative { -delta } else { delta }).await?;
                writeln!(out, "{owner}: balance ${}", signed_usd(balance))?;
            }
            BalanceCommand::Show { owner } => {
                owner_arg("OWNER", &owner)?;
                let balance = stores.balances.balance(&owner).await?;
                if as_json {
                    print_value(out, &json!({"owner": owner, "balance_usd": balance.map(signed_usd)}))?;
                } else {
                    match balance {
                        Some(b) => writeln!(out, "{owner}: balance ${}", signed_usd(b))?,
                        None => writeln!(out, "{owner}: no prepaid balance")?,
                    }
                }
            }
        },
        Command::Usage { key, owner, session, since } => {
            if let Some(owner) = &owner {
                owner_arg("--owner", owner)?;
            }
            let filter = UsageFilter {
                key_id: key,
                owner,
                session_id: session,
                since_ms: since.as_deref().map(parse_time).transpose()?.map(|s| s * 1000),
            };
            let records = stores.usage.query_usage(&filter).await?;
            let mut totals: BTreeMap<(String, String), [u64; 6]> = BTreeMap::new();
            for r in &records {
                let t = totals.entry((r.key_id.clone(), r.model.clone())).or_default();
                t[0] += 1;
                t[1] += r.tokens.input_tokens;
                t[2] += r.tokens.cached_input_tokens;
                t[3] += r.tokens.output_tokens;
                t[4] += r.tokens.reasoning_tokens;
                t[5] += r.cost.0;
            }
            let rows: Vec<Value> = totals
                .iter()
                .map(|((key_id, model), t)| {
                    json!({"key_id": key_id, "model": model, "requests": t[0], "input_tokens": t[1],
                        "cached_input_tokens": t[2], "output_tokens": t[3], "reasoning_tokens": t[4],
                        "cost_usd": format_decimal_nanos(t[5])})
                })
                .collect();
            if as_json {
                print_value(out, &Value::Array(rows))?;
            } else {
                for ((key_id, model), t) in &totals {
                    writeln!(
                        out,
                        "{key_id}  {model}  requests={}  input={}  cached={}  output={}  reasoning={}  cost=${}",
                        t[0],
                        t[1],
                        t[2],
                        t[3],
                        t[4],
                        format_decimal_nanos(t[5])
                    )?;
                }
            }
        }
    }
    Ok(())
}

fn signed_usd(nanos: i64) -> String {
    let text = format_decimal_nanos(nanos.unsigned_abs());
    if nanos < 0 {
        format!("-{text}")
    } else {
        text
    }
}

async fn keys(command: KeysCommand, stores: &Stores, as_json: bool, out: &mut dyn Write) -> Result<(), AdminError> {
    match command {
        KeysCommand::Create { name, owner, secret: given, fields } => {
            if let Some(owner) = &owner {
                owner_arg("--owner", owner)?;
            }
            let mut secret = new_key_secret().map_err(|e| fail(format!("random source: {e}")))?;
            if let Some(given) = given {
                if !crate::ids::well_formed_secret(&given) {
                    return Err(fail("--secret must have the shape rsk_<ULID> (26 Crockford base32 characters)"));
                }
                if stores.keys.key_by_hash(&crate::ids::hash_secret(&given)).await?.is_some() {
                    return Err(fail("a key with this secret already exists"));
                }
                secret.hash = crate::ids::hash_secret(&given);
                secret.secret = given;
            }
            // A key created without an owner is an account of its own, never one shared by default.
            let owner = owner.unwrap_or_else(|| secret.id.clone());
            let mut key = ApiKey {
                id: secret.id,
                key_hash: secret.hash,
                name,
                owner,
                status: KeyStatus::Active,
                rpm: None,
                rpd: None,
                spend_cap: None,
                spend_cap_mode: CapMode::Soft,
                spent: Nanos::ZERO,
                reserved: Nanos::ZERO,
                default_model: None,
                default_params: Map::new(),
                allowed_models: Vec::new(),
                expires_at: None,
                created_at: now_unix(),
            };
            key_update(&fields)?.apply(&mut key);
            stores.keys.insert_key(&key).await?;
            writeln!(out, "{}", secret.secret)?;
        }
        KeysCommand::List => {
            let keys = stores.keys.list_keys().await?;
            if as_json {
                print_value(out, &Value::Array(keys.iter().map(key_json).collect()))?;
            } else {
                for key in &keys {
                    print_key_line(out, key)?;
                }
            }
        }
        KeysCommand::Show { id } => {
            let key = stores.keys.key_by_id(&id).await?.ok_or_else(|| fail(format!("no key `{id}`")))?;
            if as_json {
                print_value(out, &key_json(&key))?;
            } else {
                print_key_line(out, &key)?;
            }
        }
        KeysCommand::Update { id, name, owner, status, fields } => {
            let mut update = key_update(&fields)?;
            update.name = name;
            update.owner = owner.as_deref().map(|o| owner_arg("--owner", o)).transpose()?.map(str::to_owned);
            if let Some(status) = status {
                update.status = Some(match status.as_str() {
                    "active" => KeyStatus::Active,
                    "suspended" => KeyStatus::Suspended,
                    other => return Err(fail(format!("--status must be active or suspended, got `{other}`"))),
                });
            }
            let key = stores.keys.update_key(&id, &update).await?.ok_or_else(|| fail(format!("no key `{id}`")))?;
            print_key_line(out, &key)?;
        }
        KeysCommand::Suspend { id } => {
            let update = KeyUpdate { status: Some(KeyStatus::Suspended), ..KeyUpdate::default() };
            let key = stores.keys.update_key(&id, &update).await?.ok_or_else(|| fail(format!("no key `{id}`")))?;
            print_key_line(out, &key)?;
        }
    }
    Ok(())
}

fn price(text: Option<&str>, flag: &str) -> Result<Option<UsdPerMtok>, AdminError> {
    text.map(|t| UsdPerMtok::from_usd_str(t).map_err(|e| fail(format!("{flag}: {e}")))).transpose()
}

async fn prices(command: PricesCommand, stores: &Stores, as_json: bool, out: &mut dyn Write) -> Result<(), AdminError> {
    match command {
        PricesCommand::Put {
            model,
            provider,
            upstream_model,
            input,
            output,
            cached_input,
            context_length,
            max_output_tokens,
            priority,
            default,
            free,
            disabled,
        } => {
            let upstream_model =
                upstream_model.unwrap_or_else(|| model.split_once('/').map_or(model.as_str(), |(_, m)| m).to_owned());
            let row = ModelPrice {
                model,
                provider,
                upstream_model,
                input_usd_per_mtok: price(input.as_deref(), "--input-usd-per-mtok")?,
                output_usd_per_mtok: price(output.as_deref(), "--output-usd-per-mtok")?,
                cached_input_usd_per_mtok: price(cached_input.as_deref(), "--cached-input-usd-per-mtok")?,
                context_length,
                max_output_tokens,
                is_free: free,
                is_default: default,
                enabled: !disabled,
                priority,
            };
            if row.sheet().is_none() {
                return Err(fail("a priced row needs --input-usd-per-mtok and --output-usd-per-mtok (or --free)"));
            }
            stores.prices.put_price(&row).await?;
            writeln!(out, "{} via {}: saved", row.model, row.provider)?;
        }
        PricesCommand::Import { file } => {
            let text = std::fs::read_to_string(&file).map_err(|e| fail(format!("{}: {e}", file.display())))?;
            let catalog: PriceFile =
                serde_json::from_str(&text).map_err(|e| fail(format!("{}: {e}", file.display())))?;
            for row in &catalog.models {
                stores.prices.put_price(row).await?;
            }
            writeln!(
                out,
                "imported {} catalog rows{}",
                catalog.models.len(),
                catalog.taken_at.map(|t| format!(" (prices taken {t})")).unwrap_or_default()
            )?;
        }
        PricesCommand::List => {
            let rows = stores.prices.list_prices().await?;
            if as_json {
                print_value(out, &serde_json::to_value(&rows).unwrap_or_default())?;
            } else {
                for r in &rows {
                    let p = |v: Option<UsdPerMtok>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
                    writeln!(
                        out,
                        "{}  {}{}  upstream={}  in=${}  cached=${}  out=${}  per Mtok{}{}",
                        r.model,
                        r.provider,
                        if r.is_default { " (default)" } else { "" },
                        r.upstream_model,
                        p(r.input_usd_per_mtok),
                        p(r.cached_input_usd_per_mtok),
                        p(r.output_usd_per_mtok),
                        if r.is_free { "  free" } else { "" },
                        if r.enabled { "" } else { "  disabled" },
                    )?;
                }
            }
        }
    }
    Ok(())
}

fn read_template_file(path: &std::path::Path) -> Result<Map<String, Value>, AdminError> {
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    if text.len() > crate::templates::MAX_TEMPLATE_BYTES {
        return Err(fail(format!(
            "{}: a template file may hold at most {} bytes",
            path.display(),
            crate::templates::MAX_TEMPLATE_BYTES
        )));
    }
    let value: Value = match serde_json::from_str(&text) {
        Ok(value) => value,
        Err(_) => serde_yaml_ng::from_str(&text)
            .map_err(|e| fail(format!("{}: neither JSON nor YAML: {e}", path.display())))?,
    };
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(fail(format!("{}: expected an object", path.display()))),
    }
}

async fn templates(
    command: TemplatesCommand,
    stores: &Stores,
    as_json: bool,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    // No `--owner` means the global templates; `~global` itself is not accepted as an owner.
    let owner = match &command {
        TemplatesCommand::Put { owner, .. }
        | TemplatesCommand::List { owner }
        | TemplatesCommand::Show { owner, .. } => owner.as_deref(),
    };
    if let Some(owner) = owner {
        owner_arg("--owner", owner)?;
    }
    let scope = |owner: &Option<String>| owner.clone().unwrap_or_else(|| GLOBAL_OWNER.to_owned());
    match command {
        TemplatesCommand::Put { name, file, owner } => {
            let mut fields = read_template_file(&file)?;
            fields.insert("name".to_owned(), Value::String(name.clone()));
            let owner = scope(&owner);
            let fresh = crate::templates::new_template(&owner, &fields)
                .map_err(|e| fail(e.body()["message"].as_str().unwrap_or_default().to_owned()))?;
            match stores.templates.template_by_name(&owner, &name).await? {
                Some(existing) => {
                    let replaced =
                        crate::domain::Template { id: existing.id, created_at: existing.created_at, ..fresh };
                    stores.templates.replace_template(&replaced).await?;
                    writeln!(out, "{} {}: replaced", replaced.id, replaced.name)?;
                }
                None => {
                    stores.templates.insert_template(&fresh).await?;
                    writeln!(out, "{} {}: created", fresh.id, fresh.name)?;
                }
            }
        }
        TemplatesCommand::List { owner } => {
            let list = stores.templates.templates_of(&scope(&owner)).await?;
            if as_json {
                print_value(out, &Value::Array(list.iter().map(crate::templates::view).collect()))?;
            } else {
                for t in &list {
                    writeln!(
                        out,
                        "{}  {}  model={}  variables={}",
                        t.id,
                        t.name,
                        t.model.as_deref().unwrap_or("-"),
                        t.variables.join(",")
                    )?;
                }
            }
        }
        TemplatesCommand::Show { name, owner } => {
            let t = stores
                .templates
                .template_by_name(&scope(&owner), &name)
                .await?
                .ok_or_else(|| fail(format!("no template `{name}`")))?;
            print_value(out, &crate::templates::view(&t))?;
        }
    }
    Ok(())
}
