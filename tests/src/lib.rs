//! Test harness: a stub OpenAI Responses server that records what it receives, the DynamoDB
//! emulator (moto) and Redis, and a gateway started in process on a loopback port.

pub mod gateway;
pub mod services;
pub mod stub;

pub use gateway::{Gateway, GatewayOptions, StoreKind};
pub use stub::{Stub, StubRequest};
