"""falcosidekick's NATS output, written down from its code (release 2.34).

Each case is what an operator sends falcosidekick and what its NATS output
publishes for it: the subject and the payload bytes. Sources:

- handlers.go newFalcoPayload: CUSTOMFIELDS set over output_fields, CUSTOMTAGS
  appended, rule `Test rule` gets source `internal`, empty source `syscalls`,
  tags sorted (sort.Strings); mainHandler serves every unrouted path (main.go
  registers `/` on an http.ServeMux, which matches every path);
- handlers.go forwardEvent: NATS gets an alert whose priority reaches
  NATS_MINIMUMPRIORITY, or whose rule is `Test rule`;
- types/types.go FalcoPayload: json.Marshal writes `uuid, output, priority,
  rule, time, output_fields, source, tags, hostname` (tags and hostname
  omitempty), `time` a time.Time (RFC3339Nano), output_fields a map (keys
  sorted), strings HTML-escaped (`<` as \\u003c ...);
- types/priority.go: the priority written Capitalised;
- outputs/nats.go: subject `falco.<priority>.<rule>`, priority lower-cased,
  rule lower-cased with each run outside [a-z0-9] one `_`, trimmed.

`uuid` is random in falcosidekick (uuid.New) and the alert's id here; the cases
take it from the message, and check it is the message's Nats-Msg-Id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

PAYLOAD_KEYS = ("uuid", "output", "priority", "rule", "time", "output_fields", "source")


def go_json(payload: dict[str, Any]) -> bytes:
    """json.Marshal of a types.FalcoPayload holding `payload`, byte for byte."""
    ordered: dict[str, Any] = {key: payload[key] for key in PAYLOAD_KEYS}
    ordered["output_fields"] = dict(sorted(payload["output_fields"].items()))
    if payload.get("tags"):
        ordered["tags"] = payload["tags"]
    if payload.get("hostname"):
        ordered["hostname"] = payload["hostname"]
    text = json.dumps(ordered, ensure_ascii=False, separators=(",", ":"))
    for raw, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, escaped)
    return text.encode()


def alert(**changes: Any) -> dict[str, Any]:
    """A Falco JSON alert as http_output posts it (Falco's docs' example)."""
    body: dict[str, Any] = {
        "hostname": "falco-xczjd",
        "output": "13:44:05.478445995: Critical A shell was spawned in a container with an "
        "attached terminal (user=root user_loginuid=-1 k8s.pod=<NA> container=ee97d9c4186f "
        "shell=sh parent=runc cmdline=sh -c clear; (bash || ash || sh) terminal=34816)",
        "priority": "Critical",
        "rule": "Terminal shell in container",
        "source": "syscall",
        "tags": ["container", "mitre_execution", "shell"],
        "time": "2023-05-25T13:44:05.478445995Z",
        "output_fields": {
            "container.id": "ee97d9c4186f",
            "evt.time": 1685022245478445995,
            "k8s.pod.name": None,
            "proc.cmdline": "sh -c clear; (bash || ash || sh)",
            "proc.name": "sh",
            "proc.pname": "runc",
            "proc.tty": 34816,
            "user.loginuid": -1,
            "user.name": "root",
        },
    }
    body.update(changes)
    return body


def published(body: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """What falcosidekick publishes for `body` with no setting changed."""
    payload = {
        "output": body.get("output", ""),
        "priority": body["priority"].capitalize(),
        "rule": body["rule"],
        "time": body["time"],
        "output_fields": body.get("output_fields", {}),
        "source": body.get("source") or "syscalls",
        "tags": sorted(body.get("tags") or []),
        "hostname": body.get("hostname", ""),
    }
    payload.update(changes)
    return payload


@dataclass(frozen=True)
class Case:
    """One input to falcosidekick and what its NATS output publishes for it."""

    point: str
    body: dict[str, Any]
    subject: str
    payload: dict[str, Any]
    path: str = "/"
    settings: dict[str, Any] = field(default_factory=dict)


_DOCS = alert()
_TEST_RULE = {
    "output": "This is a test from falcosidekick",
    "source": "debug",
    "priority": "Debug",
    "hostname": "falcosidekick",
    "rule": "Test rule",
    "time": "2026-01-02T03:04:05Z",
    "output_fields": {"proc.name": "falcosidekick", "user.name": "falcosidekick"},
    "tags": ["test", "example"],
}

CASES = (
    Case(
        "a Falco alert: subject, key order, sorted fields, Go's escaping of <NA>",
        _DOCS,
        "falco.critical.terminal_shell_in_container",
        published(_DOCS),
    ),
    Case(
        "5: time in RFC3339Nano, trailing zeros trimmed",
        alert(time="2021-02-08T20:19:15.325119960Z"),
        "falco.critical.terminal_shell_in_container",
        published(_DOCS, time="2021-02-08T20:19:15.32511996Z"),
    ),
    Case(
        "5: time in RFC3339Nano, no fraction at a whole second",
        alert(time="2021-02-08T20:19:41.000000000Z"),
        "falco.critical.terminal_shell_in_container",
        published(_DOCS, time="2021-02-08T20:19:41Z"),
    ),
    Case(
        "6: Test rule passes every minimum priority, with source internal",
        _TEST_RULE,
        "falco.debug.test_rule",
        published(_TEST_RULE, source="internal", time="2026-01-02T03:04:05Z"),
        settings={"minimum_priority": "critical"},
    ),
    Case(
        "7: CUSTOMFIELDS replace and add output fields, CUSTOMTAGS join the sorted tags",
        _DOCS,
        "falco.critical.terminal_shell_in_container",
        published(
            _DOCS,
            output_fields={**_DOCS["output_fields"], "cluster": "prod", "proc.name": "custom"},
            tags=["a-team", "container", "mitre_execution", "shell", "zone-1"],
        ),
        settings={"custom_fields": "cluster:prod,proc.name:custom", "custom_tags": "zone-1,a-team"},
    ),
    Case(
        "8: tags sorted, whoever sent them",
        alert(tags=["shell", "container", "mitre_execution", "T1059"]),
        "falco.critical.terminal_shell_in_container",
        published(_DOCS, tags=["T1059", "container", "mitre_execution", "shell"]),
    ),
    Case(
        "9: an alert POSTed to any path that is not a named route",
        _DOCS,
        "falco.critical.terminal_shell_in_container",
        published(_DOCS),
        path="/falco",
    ),
    Case(
        "9: ... at any depth",
        _DOCS,
        "falco.critical.terminal_shell_in_container",
        published(_DOCS),
        path="/api/v1/falco/",
    ),
)
