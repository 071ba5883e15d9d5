//! cargo-fuzz entry for the `lambda_event` target of `mesh_tests::fuzz`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mesh_tests::fuzz::run_target("lambda_event", data));
