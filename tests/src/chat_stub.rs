//! Stub of the chat provider API (filled in with its translation).
