//! Stub of the gemini provider API (filled in with its translation).
