//! Stub of the anthropic provider API (filled in with its translation).
