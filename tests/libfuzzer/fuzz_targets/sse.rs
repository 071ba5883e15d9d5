//! cargo-fuzz entry for the `sse` target of `mesh_tests::fuzz`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mesh_tests::fuzz::run_target("sse", data));
