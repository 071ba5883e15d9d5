//! Test harness: a stub OpenAI Responses server that records what it receives, the DynamoDB
//! emulator (moto) and Redis, and a gateway started in process on a loopback port.
//!
//! This crate only supports tests: a harness that cannot start must fail the test loudly.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

pub mod answers;
pub mod anthropic_stub;
pub mod bedrock_stub;
pub mod bench;
pub mod chat_client;
pub mod chat_stub;
pub mod faults;
pub mod fuzz;
pub mod gateway;
pub mod gemini_stub;
pub mod process;
pub mod services;
pub mod stub;
pub mod stub_models;
pub mod wait;

pub use gateway::{Gateway, GatewayOptions, StoreKind};
pub use stub::{Stub, StubRequest};
pub use wait::{eventually, wait_for, PATIENCE};
