"""Operator commands beside the gateway itself: `tail` and `check`."""
