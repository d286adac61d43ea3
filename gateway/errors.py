"""Every error the gateway raises on purpose derives from `GatewayError`.

GatewayError
├── ConfigError       a setting is wrong; the message names the key and the value
├── AlertError        an alert cannot be read; carries the HTTP status to answer with
├── SpoolUnusable     spool_dir cannot be used (a ValueError too: config names the setting)
├── SpoolFull         the spool cannot take an alert now: refused (HTTP 503, gRPC held back)
│   └── SpoolDiskError    its disk refused the write (full, I/O error)
├── StreamError       the JetStream stream is missing (creation off) or cannot be used
├── LinkDown          the connection to NATS is gone; what was not sent is sent again
└── NatsPyMismatch    the installed nats-py is not the one the gateway knows how to drive

Not here, because they never leave the module that raises them: `Refused` and
`AckProblem` (gateway.sinks.nats: NATS will never take an alert; why JetStream
did not store one), `StreamCheckFailed` (gateway.sinks.stream: a passing
problem, asked again later) and the private `_Disconnected`, `_Corrupt`,
`_TooDeep` and `_NeverRaised` of the HTTP source, the gRPC wire reader, the
normalizer and the spool.
"""

from __future__ import annotations

from typing import Literal

# Why an alert was not taken: the `reason` label of
# falco_nats_gateway_alerts_rejected_by_reason_total, a closed set that mypy checks
# wherever a reason is given (AlertError.kind, Pipeline.rejected, Telemetry.rejected).
RejectionKind = Literal[
    # What an alert's bytes hold (AlertError, from the normalizer and the wire readers).
    "invalid",
    "empty_body",
    "text_plain",
    "not_utf8",
    "malformed_json",
    "not_an_object",
    "missing_field",
    "empty_field",
    "wrong_type",
    "unknown_priority",
    "bad_time",
    "too_long",
    "too_many_fields",
    "field_too_long",
    "too_deep",
    "corrupt_message",
    "unsupported_encoding",
    "bad_encoding",
    # How an HTTP request came (the HTTP source).
    "too_large",
    "read_timeout",
    "busy",
    "unauthorized",
    # Anything no code expected (counted as well in unexpected_errors_total).
    "unexpected_error",
]
# What was mended in an alert that went out anyway: the `reason` label of
# falco_nats_gateway_alerts_repaired_total.
RepairKind = Literal["not_utf8"]


class GatewayError(Exception):
    """Base of the gateway's own errors."""


class ConfigError(GatewayError):
    """A setting is missing, unknown or has a bad value; raised before start-up completes."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


class AlertError(GatewayError):
    """An alert that cannot be turned into an event.

    `status` is the HTTP answer (4xx); `kind` a short fixed label of the problem
    for metrics, one of `RejectionKind` (the reason itself has values in it and
    would explode label sets).
    """

    def __init__(self, reason: str, status: int = 400, kind: RejectionKind = "invalid") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.kind = kind


class SpoolFull(GatewayError):
    """The spool holds `spool_max_bytes` already; the message says how much."""


class SpoolUnusable(GatewayError, ValueError):
    """The spool's folder cannot be used: not creatable, held by another gateway,
    damaged beyond what can be moved aside. Raised by the spool, which does not know
    settings; where it is opened, config.naming("spool_dir") names the setting."""


class SpoolDiskError(SpoolFull):
    """The spool's disk refused to store an alert (disk full, I/O error).

    A SpoolFull, so every source refuses it as it refuses a full spool (HTTP 503
    with this message, gRPC holds Falco's stream back) and the pipeline forgets
    the alert's id: the sender's retry is a new alert, not a duplicate.
    """


class StreamError(GatewayError):
    """The JetStream stream is missing (and creation is off) or cannot be used."""


class LinkDown(GatewayError):
    """The connection to NATS is gone (or never came); nats-py's errors become this
    where the gateway calls it (gateway.sinks.natspy)."""


class NatsPyMismatch(GatewayError):
    """The installed nats-py is not the one gateway.sinks.natspy knows how to drive."""
