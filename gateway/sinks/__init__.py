"""Where events go. Today: NATS (core)."""
