"""The in-memory inference engine: continuous batching over a paged KV cache erased on free."""
