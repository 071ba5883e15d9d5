//! cargo-fuzz entry for the `anthropic_response` target of `mesh_tests::fuzz`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mesh_tests::fuzz::run_target("anthropic_response", data));
