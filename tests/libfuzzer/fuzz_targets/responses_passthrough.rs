//! cargo-fuzz entry for the `responses_passthrough` target of `mesh_tests::fuzz`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mesh_tests::fuzz::run_target("responses_passthrough", data));
