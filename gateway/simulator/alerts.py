"""Realistic alerts, shaped after Falco's stock rules as Falco 0.43 emits them.

The first entry is the seed demo's alert: `kubectl exec -ti nginx -- /bin/bash`
firing `Terminal shell in container` at Notice.

`render` gives each alert as Falco's JSON describes it (formats.cpp): typed
`output_fields`, null for a field with no value, and the prefix field
`evt.time` beside the rule's fields (every source but `internal`, whose
messages Falco builds without a prefix: falco_outputs.cpp handle_msg).
gateway.simulator.wire writes it in Falco's two wire forms.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import orjson

from gateway.event import FalcoEvent, FieldValue, Priority

# Falco field names contain dots, which str.format would read as attribute access.
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


@dataclass(frozen=True)
class AlertTemplate:
    rule: str
    priority: Priority
    message: str  # Falco's output text after the time and priority; {field} is filled in
    fields: dict[str, FieldValue]
    tags: tuple[str, ...]
    source: str = "syscall"


_CONTAINER = {
    "container.id": "5c85dc0ee531",
    "container.image.repository": "docker.io/library/nginx",
    "k8s.ns.name": "default",
    "k8s.pod.name": "nginx",
}
# A container whose id and pod name are all digits: text fields that look like
# numbers (a gRPC value is text, and only the field's type says it is a string).
_DIGITS_CONTAINER = {
    "container.id": "123456789012",
    "container.image.repository": "registry.example/12345",
    "k8s.ns.name": "default",
    "k8s.pod.name": "12345",
}

CATALOG: tuple[AlertTemplate, ...] = (
    AlertTemplate(
        rule="Terminal shell in container",
        priority=Priority.NOTICE,
        message=(
            "A shell was spawned in a container with an attached terminal "
            "(evt_type=execve user={user.name} user_uid=0 user_loginuid={user.loginuid} "
            "process={proc.name} proc_exepath=/usr/bin/bash parent={proc.pname} "
            "command={proc.cmdline} terminal={proc.tty} exe_flags=EXE_WRITABLE "
            "container_id={container.id} container_image={container.image.repository} "
            "k8s_ns={k8s.ns.name} k8s_pod_name={k8s.pod.name})"
        ),
        fields={
            **_CONTAINER,
            "proc.cmdline": "bash",
            "proc.name": "bash",
            "proc.pname": "runc",
            "proc.tty": 34816,
            "user.loginuid": -1,
            "user.name": "root",
        },
        tags=("T1059", "container", "maturity_stable", "mitre_execution", "shell"),
    ),
    AlertTemplate(
        rule="Read sensitive file untrusted",
        priority=Priority.WARNING,
        message=(
            "Sensitive file opened for reading by non-trusted program "
            "(file={fd.name} gparent=runc ggparent=containerd-shim evt_type=openat "
            "user={user.name} process={proc.name} command={proc.cmdline} "
            "container_id={container.id} k8s_pod_name={k8s.pod.name})"
        ),
        fields={
            **_CONTAINER,
            "fd.name": "/etc/shadow",
            "proc.cmdline": "cat /etc/shadow",
            "proc.name": "cat",
            "user.name": "root",
        },
        tags=(
            "T1555",
            "container",
            "filesystem",
            "host",
            "maturity_stable",
            "mitre_credential_access",
        ),
    ),
    AlertTemplate(
        rule="Drop and execute new binary in container",
        priority=Priority.CRITICAL,
        message=(
            "Executing binary not part of base image (proc_exe={proc.exe} "
            "user={user.name} command={proc.cmdline} container_id={container.id} "
            "k8s_pod_name={k8s.pod.name})"
        ),
        fields={
            **_CONTAINER,
            "proc.cmdline": "xmrig --donate-level 1",
            "proc.exe": "/tmp/xmrig",  # noqa: S108 - a simulated alert's text
            "proc.is_exe_upper_layer": True,
            "user.name": "root",
        },
        tags=(
            "PCI_DSS_11.5.1",
            "TA0003",
            "container",
            "maturity_stable",
            "mitre_persistence",
            "process",
        ),
    ),
    AlertTemplate(
        rule="Contact K8S API Server From Container",
        priority=Priority.NOTICE,
        message=(
            "Unexpected connection to K8s API Server from container "
            "(connection={fd.name} lport=43210 rport={fd.rport} command={proc.cmdline} "
            "container_id={container.id} k8s_pod_name={k8s.pod.name})"
        ),
        fields={
            **_DIGITS_CONTAINER,
            "fd.name": "10.244.0.12:43210->10.96.0.1:443",
            "fd.rport": 443,
            "proc.cmdline": "curl -k https://kubernetes.default",
        },
        tags=("T1565", "container", "k8s", "maturity_stable", "mitre_discovery", "network"),
    ),
    AlertTemplate(
        rule="Clear Log Activities",
        priority=Priority.WARNING,
        message="Log files were tampered (file={fd.name} evt_type=openat command={proc.cmdline})",
        fields={"fd.name": "/var/log/auth.log", "proc.cmdline": "truncate -s 0 /var/log/auth.log"},
        tags=(
            "NIST_800-53_AU-10",
            "T1070",
            "filesystem",
            "host",
            "maturity_stable",
            "mitre_defense_evasion",
        ),
    ),
    AlertTemplate(
        rule="Launch Privileged Container",
        priority=Priority.INFORMATIONAL,
        message=(
            "Privileged container started (user={user.name} container_id={container.id} "
            "image={container.image.repository} privileged={container.privileged} "
            "k8s_pod_name={k8s.pod.name})"
        ),
        # No k8s metadata yet (the container plugin has not resolved it): no value.
        fields={
            **_CONTAINER,
            "container.privileged": True,
            "k8s.pod.name": None,
            "user.name": "root",
        },
        tags=(
            "PCI_DSS_10.2.5",
            "T1611",
            "container",
            "cis",
            "maturity_incubating",
            "mitre_execution",
        ),
    ),
    AlertTemplate(
        rule="Falco internal: syscall event drop",
        priority=Priority.DEBUG,
        # event_drops.cpp: the message has no time prefix, every field is text.
        message=(
            "Falco internal: syscall event drop. {n_drops} system calls dropped in last second."
        ),
        fields={"n_drops": "1832", "n_evts": "214500", "ebpf_enabled": "1"},
        tags=(),
        source="internal",
    ),
    AlertTemplate(
        rule="Console Login Without MFA",
        priority=Priority.CRITICAL,
        message=(
            "Detected a console login without MFA (requesting user={ct.user}, "
            "requesting IP={ct.srcip}, AWS region={ct.region})"
        ),
        fields={
            "ct.region": "eu-west-1",
            "ct.srcip": "203.0.113.7",
            "ct.user": "alice",
            "ct.user.mfa": None,
        },
        tags=("aws", "aws_console", "aws_iam"),
        source="aws_cloudtrail",
    ),
)


def render(template: AlertTemplate, time_ns: int, hostname: str) -> FalcoEvent:
    """The alert as Falco would emit it at `time_ns` on `hostname`."""
    fields = dict(template.fields)
    # Falco writes values into the output text as text: JSON spelling for
    # booleans and numbers, <NA> for a missing value.
    values = {k: _as_text(v) for k, v in fields.items()}
    text = _PLACEHOLDER.sub(lambda m: values.get(m.group(1), "<NA>"), template.message)
    if template.source == "internal":
        output = text
    else:
        fields["evt.time"] = time_ns
        clock = time.strftime("%H:%M:%S", time.gmtime(time_ns // 1_000_000_000))
        output = f"{clock}.{time_ns % 1_000_000_000:09d}: {template.priority.canonical} {text}"
    return FalcoEvent(
        time_ns=time_ns,
        priority=template.priority,
        rule=template.rule,
        output=output,
        source=template.source,
        hostname=hostname,
        tags=tuple(sorted(template.tags)),  # Falco's tags are a std::set
        output_fields={k: fields[k] for k in sorted(fields)},
    )


def _as_text(value: FieldValue) -> str:
    if value is None:
        return "<NA>"
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def stream(hostname: str, count: int) -> Iterator[FalcoEvent]:
    """`count` alerts cycling through the catalog, each with a fresh, increasing time."""
    last = 0
    for template in itertools.islice(itertools.cycle(CATALOG), count):
        now = max(time.time_ns(), last + 1)
        last = now
        yield render(template, now, hostname)
