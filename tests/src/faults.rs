//! A TCP proxy that can take a dependency down, or make it answer DynamoDB throttling errors,
//! while a test runs, then bring it back.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward to the target.
    Up,
    /// Drop every connection (and cut the open ones).
    Down,
    /// Answer every request with DynamoDB's `ProvisionedThroughputExceededException`.
    Throttle,
}

/// A running proxy.
#[derive(Debug)]
pub struct FaultProxy {
    pub url: String,
    mode: Arc<watch::Sender<Mode>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const THROTTLED: &str = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"The level of configured provisioned throughput for the table was exceeded. Consider increasing your provisioning level with the UpdateTable API."}"#;

async fn throttle(client: TcpStream, mut mode: watch::Receiver<Mode>) {
    tokio::select! {
        () = answer_throttled(client) => {}
        _ = mode.changed() => {}
    }
}

async fn answer_throttled(mut client: TcpStream) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        // Read one request: headers, then content-length bytes of body.
        let header_end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            match client.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let headers = String::from_utf8_lossy(&buffer[..header_end]).to_ascii_lowercase();
        let length: usize = headers
            .lines()
            .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
            .unwrap_or(0);
        while buffer.len() < header_end + length {
            match client.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        buffer.drain(..header_end + length);
        let response = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/x-amz-json-1.0\r\nx-amzn-requestid: throttled\r\ncontent-length: {}\r\n\r\n{THROTTLED}",
            THROTTLED.len()
        );
        if client.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn forward(mut client: TcpStream, target: String, mut mode: watch::Receiver<Mode>) {
    let Ok(mut upstream) = TcpStream::connect(&target).await else { return };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
        _ = mode.changed() => {}
    }
}

impl FaultProxy {
    /// Proxies to `target_url` (`http://host:port`).
    pub async fn start(target_url: &str) -> FaultProxy {
        let target = target_url.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (sender, _) = watch::channel(Mode::Up);
        let mode = Arc::new(sender);
        let watcher = mode.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let current = *watcher.borrow();
                match current {
                    Mode::Down => drop(client),
                    Mode::Throttle => {
                        tokio::spawn(throttle(client, watcher.subscribe()));
                    }
                    Mode::Up => {
                        tokio::spawn(forward(client, target.clone(), watcher.subscribe()));
                    }
                }
            }
        });
        FaultProxy { url, mode, task }
    }

    /// Switches the mode; open forwarded connections are cut.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}
