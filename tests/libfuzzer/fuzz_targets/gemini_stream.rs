//! cargo-fuzz entry for the `gemini_stream` target of `mesh_tests::fuzz`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mesh_tests::fuzz::run_target("gemini_stream", data));
