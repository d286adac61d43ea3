"""The values files the demo hands to the Falco, NATS and gateway charts (deploy/), checked
against each other and against what the gateway chart renders: the names that must agree
across three charts are where a real cluster would fail without saying why."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import helm_python as helm
import pytest
import yaml

from gateway import config as gateway_config
from tests.k8s.support import (
    CHART,
    DEPLOY,
    NAMESPACE,
    RELEASE,
    SCRIPT,
    load_yaml_documents,
    render,
    schema_problems,
)

YAMLLINT_CONFIG = Path(__file__).with_name("yamllint.yaml")
GENERATIONS = ("0.43", "0.44")


def values(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / name).read_text(encoding="utf-8"))
    return loaded


def gateway_values(generation: str) -> dict[str, Any]:
    return values(f"gateway-{generation}-values.yaml")


def falco_values(generation: str) -> dict[str, Any]:
    return values(f"falco-{generation}-values.yaml")


def test_yamllint_passes_on_every_values_file() -> None:
    files = [CHART / "values.yaml", CHART / "Chart.yaml", *sorted(DEPLOY.glob("*.yaml"))]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "yamllint",
            "--strict",
            "-c",
            str(YAMLLINT_CONFIG),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_yamllint_is_not_vacuous(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("falco:\n  json_output: yes\n  json_output: true\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "yamllint", "--strict", "-c", str(YAMLLINT_CONFIG), str(bad)],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "truthy" in result.stdout
    assert "key-duplicates" in result.stdout


@pytest.mark.parametrize("generation", GENERATIONS)
def test_falco_posts_json_to_the_gateway_service(generation: str) -> None:
    falco = falco_values(generation)["falco"]
    assert falco["json_output"] is True
    assert falco["json_include_output_property"] is True
    assert falco["http_output"]["enabled"] is True
    # The URL must name the Service the gateway chart renders for the demo's release.
    url = urlsplit(falco["http_output"]["url"])
    service = render(gateway_values(generation)).one("Service")
    name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    assert (name, namespace) == (RELEASE, NAMESPACE)
    assert url.scheme == "http"
    assert url.hostname == f"{name}.{namespace}.svc"
    assert url.port == service["spec"]["ports"][0]["port"]
    assert url.path == "/"


@pytest.mark.parametrize("generation", GENERATIONS)
def test_falco_on_minikube_uses_modern_ebpf_and_a_tty(generation: str) -> None:
    falco = falco_values(generation)
    assert falco["driver"]["kind"] == "modern_ebpf"
    assert falco["tty"] is True


def test_falco_043_serves_grpc_where_the_gateway_daemonset_reads_it() -> None:
    falco = falco_values("0.43")["falco"]
    assert falco["grpc"]["enabled"] is True
    assert falco["grpc_output"]["enabled"] is True
    socket = falco["grpc"]["bind_address"]
    assert socket == "unix:///run/falco/falco.sock"
    gateway = gateway_values("0.43")
    assert gateway["mode"] == "daemonset"
    rendered = render(gateway)
    assert rendered.env_values()["GATEWAY_FALCO_GRPC"] == socket
    socket_dir = socket.removeprefix("unix://").rsplit("/", 1)[0]
    assert rendered.volume("falco-socket")["hostPath"]["path"] == socket_dir
    assert rendered.mount("falco-socket") == {
        "name": "falco-socket",
        "mountPath": socket_dir,
        "readOnly": True,
    }


def test_falco_044_values_have_no_grpc_keys_chart_9_would_refuse() -> None:
    falco = falco_values("0.44")["falco"]
    assert not [key for key in falco if key.startswith("grpc")]
    assert gateway_values("0.44")["mode"] == "deployment"


def test_043_keeps_both_copies_apart_and_drops_the_second() -> None:
    gateway = gateway_values("0.43")
    assert gateway["config"]["dedup_window"] > 0
    # Deduplication is per gateway: the node's Falco must post to its own node's gateway.
    assert render(gateway).one("Service")["spec"]["internalTrafficPolicy"] == "Local"


def test_nats_has_jetstream_and_nats_box_where_the_gateway_looks() -> None:
    nats = values("nats-values.yaml")
    assert nats["config"]["jetstream"]["enabled"] is True
    assert nats["natsBox"]["enabled"] is True
    for generation in GENERATIONS:
        url = urlsplit(gateway_values(generation)["config"]["nats_url"])
        # The NATS chart's Service is named after its release (`nats`, namespace `nats`).
        assert (url.hostname, url.port) == ("nats.nats.svc", 4222)


@pytest.mark.parametrize("generation", GENERATIONS)
def test_gateway_demo_values_render_and_the_gateway_accepts_them(generation: str) -> None:
    rendered = render(gateway_values(generation))
    settings = gateway_config.load(environ=rendered.env_values())
    assert settings.jetstream is True
    assert settings.stream_create is True
    assert settings.spool_dir == "/var/spool/falco-nats-gateway"
    assert rendered.mount("spool")["mountPath"] == settings.spool_dir
    # The subject the demo waits on is in the stream the gateway creates.
    assert "falco.>" in settings.stream_subject_list


def test_demo_trigger_pod_is_valid() -> None:
    documents = load_yaml_documents(DEPLOY / "demo-nginx.yaml")
    assert [d["kind"] for d in documents] == ["Namespace", "Pod"]
    for document in documents:
        assert schema_problems(document) == []
    pod = documents[1]
    assert (pod["metadata"]["namespace"], pod["metadata"]["name"]) == ("falco-nats-demo", "nginx")


def pinned_nats_chart_version() -> str:
    match = re.search(r"NATS_CHART_VERSION=\$\{NATS_CHART_VERSION:-([^}]+)\}", SCRIPT.read_text())
    assert match, "scripts/minikube-demo.sh pins no NATS chart version"
    return match[1]


def test_nats_values_render_on_the_chart_the_demo_installs() -> None:
    """deploy/nats-values.yaml through the NATS chart itself, the version the demo pins. The
    chart is not in this repository: NATS_CHART_DIR names an unpacked copy, e.g.
    `helm pull nats --repo https://nats-io.github.io/k8s/helm/charts/ --version 2.14.2 --untar`."""
    directory = os.environ.get("NATS_CHART_DIR")
    version = pinned_nats_chart_version()
    if not directory:
        pytest.skip(
            f"NATS_CHART_DIR is not set: unpack nats/nats {version} (helm pull nats --repo "
            f"https://nats-io.github.io/k8s/helm/charts/ --version {version} --untar) and name it"
        )
    chart = helm.Chart.load(Path(directory))
    assert yaml.safe_load((Path(directory) / "Chart.yaml").read_text())["version"] == version
    output = chart.render(
        values("nats-values.yaml"), name="nats", namespace="nats", is_install=True
    )
    objects = {
        (doc["kind"], doc["metadata"]["name"]): doc
        for text in output.values()
        for doc in yaml.safe_load_all(text)
        if doc
    }
    # What the gateway's nats_url and the demo script count on.
    service = objects[("Service", "nats")]
    assert {"name": "nats", "port": 4222} in [
        {"name": p["name"], "port": p["port"]} for p in service["spec"]["ports"]
    ]
    assert ("StatefulSet", "nats") in objects
    assert ("Deployment", "nats-box") in objects
    config = objects[("ConfigMap", "nats-config")]["data"]["nats.conf"]
    assert '"jetstream"' in config
    assert '"max_file_store": 1Gi' in config
