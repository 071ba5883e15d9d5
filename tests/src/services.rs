//! The real services tests run against: the DynamoDB emulator and Redis.
//!
//! The test command (`tests/run.sh`) starts the emulator (`tests/dynamodb_emulator.py`: moto's
//! server, one request at a time) and exports `MESH_TEST_DYNAMODB_ENDPOINT`; when it is unset
//! the harness starts its own.

use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

struct Moto {
    endpoint: String,
    _child: Option<Child>,
}

static MOTO: OnceLock<Moto> = OnceLock::new();

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

fn start_moto() -> Moto {
    if let Ok(endpoint) = std::env::var("MESH_TEST_DYNAMODB_ENDPOINT") {
        return Moto { endpoint, _child: None };
    }
    let port = free_port();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dynamodb_emulator.py");
    let child = Command::new("python3")
        .arg(script)
        .args(["127.0.0.1", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 with moto is installed (pip install 'moto[server]'); tests/run.sh installs it");
    let endpoint = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Moto { endpoint, _child: Some(child) }
}

/// The DynamoDB emulator's endpoint.
pub fn dynamodb_endpoint() -> String {
    MOTO.get_or_init(start_moto).endpoint.clone()
}

/// A DynamoDB client pointed at the emulator.
pub async fn dynamodb_client() -> aws_sdk_dynamodb::Client {
    dynamodb_client_at(&dynamodb_endpoint()).await
}

/// A DynamoDB client pointed at `endpoint` (the emulator, or a proxy in front of it).
pub async fn dynamodb_client_at(endpoint: &str) -> aws_sdk_dynamodb::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "tests"))
        .load()
        .await;
    aws_sdk_dynamodb::Client::new(&config)
}

/// The Redis URL tests use (Redis on 127.0.0.1:6379 unless `MESH_TEST_REDIS_URL` says otherwise).
pub fn redis_url() -> String {
    std::env::var("MESH_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A unique name prefix for one test's tables and Redis keys.
pub fn unique_prefix() -> String {
    format!("t{}-", ulid::Ulid::new().to_string().to_ascii_lowercase())
}
