//! cargo-fuzz entry for the `chat_response` target of `mesh_tests::fuzz`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mesh_tests::fuzz::run_target("chat_response", data));
