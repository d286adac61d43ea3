"""The Helm chart, rendered by Helm's engine for each mode and notable values, then checked
against the Kubernetes schemas and for what each mode promises."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import fields
from typing import Any

import helm_python as helm
import pytest
import yaml

from gateway import config as gateway_config
from gateway.errors import ConfigError
from tests.k8s.support import (
    CHART,
    NAMESPACE,
    RELEASE,
    Rendered,
    render,
    restricted_violations,
    schema_problems,
    semantic_problems,
)

DEPLOYMENT: dict[str, Any] = {"mode": "deployment"}
SOCKET_DIR = "/run/falco"


def chart_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    return values


def load_gateway_settings(rendered: Rendered) -> gateway_config.Settings:
    """The settings the gateway would start with in that pod: the chart's environment read by
    the gateway's own loader (which refuses unknown keys and bad values)."""
    return gateway_config.load(environ=rendered.env_values())


# --- the two modes ----------------------------------------------------------------------------


def test_default_is_a_daemonset_with_a_service_and_no_disruption_budget() -> None:
    rendered = render()
    assert rendered.kinds() == ["DaemonSet", "Service", "ServiceAccount"]
    assert rendered.workload["metadata"]["name"] == RELEASE
    assert rendered.workload["metadata"]["namespace"] == NAMESPACE


def test_daemonset_mounts_the_hosts_falco_socket_folder_read_only() -> None:
    rendered = render()
    volume = rendered.volume("falco-socket")
    assert volume["hostPath"] == {"path": SOCKET_DIR, "type": "DirectoryOrCreate"}
    mount = rendered.mount("falco-socket")
    assert mount["mountPath"] == SOCKET_DIR
    assert mount["readOnly"] is True
    assert rendered.env_values()["GATEWAY_FALCO_GRPC"] == "unix:///run/falco/falco.sock"
    assert load_gateway_settings(rendered).falco_grpc == "unix:///run/falco/falco.sock"


def test_daemonset_reads_the_socket_as_root_without_any_privilege() -> None:
    rendered = render()
    pod_ctx = rendered.pod["securityContext"]
    assert (pod_ctx["runAsUser"], pod_ctx["runAsGroup"], pod_ctx["runAsNonRoot"]) == (0, 0, False)
    ctx = rendered.container["securityContext"]
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["privileged"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert pod_ctx["seccompProfile"] == {"type": "RuntimeDefault"}


def test_daemonset_without_the_socket_is_http_only_and_non_root() -> None:
    rendered = render({"daemonset": {"falcoGrpcSocket": ""}})
    assert "GATEWAY_FALCO_GRPC" not in rendered.env()
    assert "falco-socket" not in [v["name"] for v in rendered.pod["volumes"]]
    assert rendered.pod["securityContext"]["runAsNonRoot"] is True
    assert rendered.pod["securityContext"]["runAsUser"] == 10001


def test_daemonset_can_run_non_root_where_falcos_socket_allows_it() -> None:
    rendered = render({"daemonset": {"socketAccessAsRoot": False}})
    assert rendered.pod["securityContext"]["runAsUser"] == 10001
    assert rendered.mount("falco-socket")["readOnly"] is True


def test_falco_grpc_over_tcp_uses_mutual_tls_files_and_no_host_socket() -> None:
    client_files = {
        key: {"name": "falco-grpc-client", "key": item}
        for key, item in (
            ("grpc_client_cert", "tls.crt"),
            ("grpc_client_key", "tls.key"),
            ("grpc_ca_cert", "ca.crt"),
        )
    }
    rendered = render(
        {"config": {"falco_grpc": "falco-grpc.falco.svc:5060"}, "secretFiles": client_files}
    )
    env = rendered.env_values()
    assert env["GATEWAY_FALCO_GRPC"] == "falco-grpc.falco.svc:5060"
    assert env["GATEWAY_GRPC_CA_CERT"] == "/etc/falco-nats-gateway/secrets/grpc_ca_cert"
    assert "falco-socket" not in [v["name"] for v in rendered.pod["volumes"]]
    assert rendered.pod["securityContext"]["runAsNonRoot"] is True


def test_daemonset_runs_where_falco_runs_including_control_plane_nodes() -> None:
    rendered = render({"tolerations": [{"key": "dedicated", "operator": "Exists"}]})
    keys = [t["key"] for t in rendered.pod["tolerations"]]
    assert keys == [
        "node-role.kubernetes.io/master",
        "node-role.kubernetes.io/control-plane",
        "dedicated",
    ]


def test_daemonset_service_keeps_falcos_http_copy_on_its_own_node() -> None:
    # Deduplication is per gateway process: the HTTP copy must reach the gateway that reads the
    # same Falco's gRPC copy.
    assert render().one("Service")["spec"]["internalTrafficPolicy"] == "Local"
    assert render(DEPLOYMENT).one("Service")["spec"]["internalTrafficPolicy"] == "Cluster"
    override = {"service": {"internalTrafficPolicy": "Cluster"}}
    assert render(override).one("Service")["spec"]["internalTrafficPolicy"] == "Cluster"


def test_service_is_where_falcos_http_output_posts() -> None:
    service = render().one("Service")
    assert service["metadata"]["name"] == RELEASE
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 2801, "targetPort": "http", "protocol": "TCP"}
    ]


def test_deployment_is_http_only_with_replicas_and_a_disruption_budget() -> None:
    rendered = render({**DEPLOYMENT, "deployment": {"replicas": 3}})
    assert rendered.kinds() == ["Deployment", "PodDisruptionBudget", "Service", "ServiceAccount"]
    deployment = rendered.workload
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert "GATEWAY_FALCO_GRPC" not in rendered.env()
    assert all("hostPath" not in v for v in rendered.pod["volumes"])
    pdb = rendered.one("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert rendered.pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"


def test_deployment_passes_the_restricted_pod_security_standard() -> None:
    rendered = render(
        {
            **DEPLOYMENT,
            "config": {"spool_dir": "/var/spool/falco-nats-gateway"},
            "secretFiles": {"nats_creds": {"name": "nats", "key": "gateway.creds"}},
        }
    )
    assert restricted_violations(rendered.pod) == []


def test_daemonset_is_not_restricted_and_the_checker_says_why() -> None:
    # The DaemonSet belongs in Falco's (privileged) namespace: a hostPath and UID 0. The checker
    # must see both, or its verdict on the Deployment above would mean nothing.
    problems = restricted_violations(render().pod)
    assert any("hostPath" in p for p in problems)
    assert any("UID 0" in p for p in problems)


def test_pod_never_talks_to_the_kubernetes_api() -> None:
    rendered = render()
    assert rendered.pod["automountServiceAccountToken"] is False
    assert rendered.one("ServiceAccount")["automountServiceAccountToken"] is False
    assert rendered.pod["enableServiceLinks"] is False


# --- settings ---------------------------------------------------------------------------------


def test_every_config_key_becomes_a_gateway_variable() -> None:
    config = {
        "nats_url": ["nats://a:4222", "nats://b:4222"],
        "spool_max_bytes": 134217728,
        "grpc_poll_interval": 0.25,
        "jetstream": True,
        "stream_create": False,
        "subject_template": "falco.<source>.<priority>.<rule>",
        "minimum_priority": "notice",
        "stream_subjects": ["falco.>", "audit.>"],
        # Not a setting of this gateway yet: the chart passes it on all the same.
        "some_future_setting": "on",
        "log_level": None,
        "spool_dir": "",
    }
    env = render({"config": config}).env_values()
    assert env["GATEWAY_NATS_URL"] == "nats://a:4222,nats://b:4222"
    assert env["GATEWAY_SPOOL_MAX_BYTES"] == "134217728"
    assert env["GATEWAY_GRPC_POLL_INTERVAL"] == "0.25"
    assert env["GATEWAY_JETSTREAM"] == "true"
    assert env["GATEWAY_STREAM_CREATE"] == "false"
    assert env["GATEWAY_SUBJECT_TEMPLATE"] == "falco.<source>.<priority>.<rule>"
    assert env["GATEWAY_MINIMUM_PRIORITY"] == "notice"
    assert env["GATEWAY_STREAM_SUBJECTS"] == "falco.>,audit.>"
    assert env["GATEWAY_SOME_FUTURE_SETTING"] == "on"
    # null and "" leave the gateway's default in force.
    assert "GATEWAY_LOG_LEVEL" not in env
    assert "GATEWAY_SPOOL_DIR" not in env
    # Every value the chart's defaults hold is there too, none lost on the way.
    for key in chart_values()["config"]:
        if key not in config:
            assert f"GATEWAY_{key.upper()}" in env or chart_values()["config"][key] in ("", None)


def test_gateway_accepts_the_environment_the_chart_writes() -> None:
    settings = load_gateway_settings(render())
    assert settings.nats_url == "nats://nats.nats.svc:4222"
    assert settings.listen_port == 2801
    settings = load_gateway_settings(render({**DEPLOYMENT, "config": {"spool_max_bytes": 1 << 30}}))
    assert settings.spool_max_bytes == 1 << 30
    assert settings.falco_grpc == ""


def test_custom_fields_and_tags_reach_the_gateway_as_map_list_or_text() -> None:
    config = {"custom_fields": {"zone": "eu-1", "cluster": "prod"}, "custom_tags": ["k8s", "prod"]}
    rendered = render({"config": config})
    env = rendered.env_values()
    assert env["GATEWAY_CUSTOM_FIELDS"] == "cluster:prod,zone:eu-1"
    assert env["GATEWAY_CUSTOM_TAGS"] == "k8s,prod"
    settings = load_gateway_settings(rendered)
    assert settings.custom_field_map == {"cluster": "prod", "zone": "eu-1"}
    assert settings.custom_tag_list == ("k8s", "prod")
    text = {"custom_fields": "cluster:prod", "custom_tags": "k8s"}
    settings = load_gateway_settings(render({"config": text}))
    assert (settings.custom_field_map, settings.custom_tag_list) == ({"cluster": "prod"}, ("k8s",))
    with pytest.raises(helm.HelmError, match="custom_tags"):
        render({"config": {"custom_tags": {"not": "a list"}}})


def test_gateway_refuses_what_the_chart_passes_through_unchecked() -> None:
    # The chart is deliberately open (new settings need no template change); the gateway is the
    # one that names a wrong key, at start-up.
    rendered = render({"config": {"nats_urll": "nats://x:4222"}})
    with pytest.raises(ConfigError, match="GATEWAY_NATS_URLL"):
        load_gateway_settings(rendered)


def test_values_list_every_gateway_setting_with_its_default() -> None:
    values_text = (CHART / "values.yaml").read_text(encoding="utf-8")
    missing = [f.name for f in fields(gateway_config.Settings) if f"{f.name}:" not in values_text]
    assert not missing, (
        f"gateway settings missing from charts/falco-nats-gateway/values.yaml: {missing}; "
        "add each under `config:` (set, or as a commented line `# <key>: <default>  <meaning>`)"
    )
    # The chart's own defaults start the gateway with the gateway's defaults, but for nats_url
    # (the NATS chart's Service, where the gateway's default is localhost) and spool_dir (on a
    # volume: durable, where the gateway's default is memory).
    started = load_gateway_settings(render())
    defaults = gateway_config.Settings()
    for key in chart_values()["config"]:
        assert key in gateway_config.SETTINGS, f"config.{key} is not a gateway setting"
        if key not in {"nats_url", "spool_dir"}:
            assert getattr(started, key) == getattr(defaults, key), key


def test_secret_env_reads_secrets_by_reference_only() -> None:
    rendered = render(
        {
            "secretEnv": {
                "nats_password": {"name": "nats-auth", "key": "password"},
                "nats_token": {"name": "nats-auth", "key": "token", "optional": True},
            }
        }
    )
    env = rendered.env()
    assert env["GATEWAY_NATS_PASSWORD"] == {
        "name": "GATEWAY_NATS_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "nats-auth", "key": "password"}},
    }
    assert env["GATEWAY_NATS_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    rendered_text = yaml.safe_dump(rendered.manifests)
    assert "kind: Secret\n" not in rendered_text


def test_secret_files_are_mounted_and_named_by_their_setting() -> None:
    rendered = render(
        {
            "secretFiles": {
                "nats_creds": {"name": "nats-user", "key": "gateway.creds"},
                "tls_cert": {"name": "gateway-tls", "key": "tls.crt"},
                "tls_key": {"name": "gateway-tls", "key": "tls.key"},
            }
        }
    )
    secrets_dir = "/etc/falco-nats-gateway/secrets"
    env = rendered.env_values()
    assert env["GATEWAY_NATS_CREDS"] == f"{secrets_dir}/nats_creds"
    assert env["GATEWAY_TLS_CERT"] == f"{secrets_dir}/tls_cert"
    assert env["GATEWAY_TLS_KEY"] == f"{secrets_dir}/tls_key"
    mount = rendered.mount("secret-files")
    assert (mount["mountPath"], mount["readOnly"]) == (secrets_dir, True)
    projected = rendered.volume("secret-files")["projected"]
    assert projected["defaultMode"] == 0o440
    assert {
        (s["secret"]["name"], s["secret"]["items"][0]["key"], s["secret"]["items"][0]["path"])
        for s in projected["sources"]
    } == {
        ("nats-user", "gateway.creds", "nats_creds"),
        ("gateway-tls", "tls.crt", "tls_cert"),
        ("gateway-tls", "tls.key", "tls_key"),
    }


# --- probes, ports, metrics -------------------------------------------------------------------


def test_probes_use_the_gateways_health_endpoints_on_the_http_port() -> None:
    container = render().container
    probes = {
        name: container[f"{name}Probe"]["httpGet"] for name in ("startup", "liveness", "readiness")
    }
    assert probes["startup"] == {"path": "/ping", "port": "http", "scheme": "HTTP"}
    assert probes["liveness"] == {"path": "/ping", "port": "http", "scheme": "HTTP"}
    assert probes["readiness"] == {"path": "/readyz", "port": "http", "scheme": "HTTP"}
    assert container["ports"] == [{"name": "http", "containerPort": 2801, "protocol": "TCP"}]


def test_a_probe_can_require_nats_via_healthz_or_be_switched_off() -> None:
    values: dict[str, Any] = {"probes": {"liveness": {"path": "/healthz"}, "startup": None}}
    merged = copy.deepcopy(chart_values()["probes"])
    merged["liveness"]["path"] = "/healthz"
    values["probes"]["liveness"] = merged["liveness"]
    container = render(values).container
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "startupProbe" not in container


def test_https_once_the_gateway_has_a_certificate() -> None:
    rendered = render(
        {
            "secretFiles": {
                "tls_cert": {"name": "gateway-tls", "key": "tls.crt"},
                "tls_key": {"name": "gateway-tls", "key": "tls.key"},
            },
            "metrics": {"serviceMonitor": {"enabled": True}},
        }
    )
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert rendered.container[probe]["httpGet"]["scheme"] == "HTTPS"
    annotations = rendered.workload["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scheme"] == "https"
    assert rendered.one("ServiceMonitor")["spec"]["endpoints"][0]["scheme"] == "https"


def test_the_listen_port_is_the_container_port_probes_and_metrics_follow() -> None:
    rendered = render({"config": {"listen": "[::]:9000"}})
    assert rendered.container["ports"][0]["containerPort"] == 9000
    annotations = rendered.workload["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "9000"
    assert rendered.one("Service")["spec"]["ports"][0]["targetPort"] == "http"
    assert load_gateway_settings(rendered).listen_port == 9000


def test_prometheus_scrape_annotations_on_the_pods() -> None:
    annotations = render().workload["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "2801",
        "prometheus.io/path": "/metrics",
        "prometheus.io/scheme": "http",
    }
    plain = render({"metrics": {"podAnnotations": False}})
    assert "annotations" not in plain.workload["spec"]["template"]["metadata"]


@pytest.mark.parametrize("mode", ["daemonset", "deployment"])
def test_optional_service_monitor_scrapes_metrics_on_the_http_port(mode: str) -> None:
    assert render({"mode": mode}).all("ServiceMonitor") == []
    rendered = render(
        {
            "mode": mode,
            "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
        }
    )
    monitor = rendered.one("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"] == [
        {"port": "http", "path": "/metrics", "scheme": "http", "interval": "30s"}
    ]


MUTUAL_TLS: dict[str, Any] = {
    "tls_cert": {"name": "gateway-tls", "key": "tls.crt"},
    "tls_key": {"name": "gateway-tls", "key": "tls.key"},
    "tls_client_ca": {"name": "gateway-tls", "key": "ca.crt"},
}


@pytest.mark.parametrize("mode", ["daemonset", "deployment"])
def test_with_client_certificates_probes_and_metrics_use_the_health_port_over_http(
    mode: str,
) -> None:
    # The kubelet and Prometheus present no client certificate: everything that only reads
    # health or metrics moves to health_listen's plain-HTTP port.
    rendered = render(
        {
            "mode": mode,
            "config": {"health_listen": "0.0.0.0:2802"},
            "secretFiles": MUTUAL_TLS,
            "metrics": {"serviceMonitor": {"enabled": True}},
        }
    )
    container = rendered.container
    assert container["ports"] == [
        {"name": "http", "containerPort": 2801, "protocol": "TCP"},
        {"name": "health", "containerPort": 2802, "protocol": "TCP"},
    ]
    probes = {
        name: container[f"{name}Probe"]["httpGet"] for name in ("startup", "liveness", "readiness")
    }
    assert probes == {
        "startup": {"path": "/ping", "port": "health", "scheme": "HTTP"},
        "liveness": {"path": "/ping", "port": "health", "scheme": "HTTP"},
        "readiness": {"path": "/readyz", "port": "health", "scheme": "HTTP"},
    }
    annotations = rendered.workload["spec"]["template"]["metadata"]["annotations"]
    assert (annotations["prometheus.io/port"], annotations["prometheus.io/scheme"]) == (
        "2802",
        "http",
    )
    assert rendered.one("ServiceMonitor")["spec"]["endpoints"] == [
        {"port": "health", "path": "/metrics", "scheme": "http", "interval": "30s"}
    ]
    # Falco still posts to the HTTPS port; the Service also names the health port, which the
    # ServiceMonitor selects by name.
    ports = {p["name"]: p for p in rendered.one("Service")["spec"]["ports"]}
    assert ports["http"]["targetPort"] == "http"
    assert (ports["health"]["port"], ports["health"]["targetPort"]) == (2802, "health")
    assert rendered.env_values()["GATEWAY_HEALTH_LISTEN"] == "0.0.0.0:2802"


def test_health_port_is_the_one_the_gateway_opens() -> None:
    # Without TLS too: set, health_listen is where the probes go, and the gateway's own
    # loader reads the same port from the chart's environment.
    rendered = render({"config": {"health_listen": "[::]:9102", "listen": "[::]:9000"}})
    settings = load_gateway_settings(rendered)
    declared = {p["name"]: p["containerPort"] for p in rendered.container["ports"]}
    assert declared == {"http": 9000, "health": 9102}
    assert gateway_config.split_listen(settings.health_listen)[1] == declared["health"]
    assert rendered.container["livenessProbe"]["httpGet"]["port"] == "health"
    assert rendered.container["readinessProbe"]["httpGet"]["scheme"] == "HTTP"


def test_without_health_listen_there_is_no_health_port() -> None:
    rendered = render({"config": {"health_listen": None}})
    assert [p["name"] for p in rendered.container["ports"]] == ["http"]
    assert [p["name"] for p in rendered.one("Service")["spec"]["ports"]] == ["http"]
    assert "GATEWAY_HEALTH_LISTEN" not in rendered.env()


# --- the spool volume -------------------------------------------------------------------------

SPOOL_DIR = "/var/spool/falco-nats-gateway"


def test_spool_is_durable_by_default_in_both_modes() -> None:
    # DaemonSet: a folder on the node under /var/lib, so a replaced pod sends what it held.
    daemonset = render()
    assert daemonset.volume("spool")["hostPath"]["path"].startswith("/var/lib/")
    assert daemonset.mount("spool")["mountPath"] == SPOOL_DIR
    assert load_gateway_settings(daemonset).spool_dir == SPOOL_DIR
    # Deployment: the volume spool.volume chooses, emptyDir unless told otherwise.
    deployment = render(DEPLOYMENT)
    assert "emptyDir" in deployment.volume("spool")
    assert load_gateway_settings(deployment).spool_dir == SPOOL_DIR


def test_no_spool_volume_while_the_spool_is_in_memory() -> None:
    for values in ({}, DEPLOYMENT):
        rendered = render({**values, "config": {"spool_dir": ""}})
        assert "spool" not in [v["name"] for v in rendered.pod["volumes"]]
        assert "GATEWAY_SPOOL_DIR" not in rendered.env()
        assert "initContainers" not in rendered.pod


def test_non_root_daemonset_is_given_its_host_spool_folder() -> None:
    # The kubelet creates the hostPath folder owned by root: an init container with CHOWN only.
    for values in (
        {"daemonset": {"socketAccessAsRoot": False}},
        {"daemonset": {"falcoGrpcSocket": ""}},
    ):
        rendered = render(values)
        (init,) = rendered.pod["initContainers"]
        assert init["command"] == ["chown", "-R", "10001:10001", "/spool"]
        assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
        assert init["securityContext"]["allowPrivilegeEscalation"] is False
        assert init["volumeMounts"] == [{"name": "spool", "mountPath": "/spool"}]
    # Running as root (Falco's socket), or told not to, or in Deployment mode: none.
    for values in (
        {},
        {"daemonset": {"socketAccessAsRoot": False}, "spool": {"chownHostPath": False}},
        DEPLOYMENT,
    ):
        assert "initContainers" not in render(values).pod


def test_daemonset_spool_is_a_host_folder_per_release() -> None:
    rendered = render({"config": {"spool_dir": SPOOL_DIR}})
    assert rendered.volume("spool")["hostPath"] == {
        "path": f"/var/lib/falco-nats-gateway/{NAMESPACE}/{RELEASE}",
        "type": "DirectoryOrCreate",
    }
    mount = rendered.mount("spool")
    assert mount["mountPath"] == SPOOL_DIR
    assert not mount.get("readOnly")
    assert rendered.env_values()["GATEWAY_SPOOL_DIR"] == SPOOL_DIR


def test_deployment_spool_is_an_empty_dir_by_default() -> None:
    rendered = render({**DEPLOYMENT, "config": {"spool_dir": SPOOL_DIR}})
    assert rendered.volume("spool")["emptyDir"] == {"sizeLimit": "512Mi"}
    assert rendered.mount("spool")["mountPath"] == SPOOL_DIR
    assert rendered.all("PersistentVolumeClaim") == []


def test_deployment_spool_on_a_claim_runs_one_replica_recreated() -> None:
    values = {
        **DEPLOYMENT,
        "deployment": {"replicas": 1},
        "config": {"spool_dir": SPOOL_DIR},
        "spool": {"volume": "pvc", "pvc": {"size": "2Gi", "storageClassName": "fast"}},
    }
    rendered = render(values)
    claim = rendered.one("PersistentVolumeClaim")
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert claim["spec"]["storageClassName"] == "fast"
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    volume = rendered.volume("spool")["persistentVolumeClaim"]
    assert volume == {"claimName": claim["metadata"]["name"]}
    assert rendered.workload["spec"]["strategy"] == {"type": "Recreate"}


def test_deployment_spool_on_an_existing_claim() -> None:
    values = {
        **DEPLOYMENT,
        "deployment": {"replicas": 1},
        "config": {"spool_dir": SPOOL_DIR},
        "spool": {"volume": "pvc", "pvc": {"existingClaim": "gateway-spool"}},
    }
    rendered = render(values)
    assert rendered.all("PersistentVolumeClaim") == []
    assert rendered.volume("spool")["persistentVolumeClaim"] == {"claimName": "gateway-spool"}


def test_read_only_root_gets_a_writable_tmp() -> None:
    rendered = render()
    assert rendered.mount("tmp")["mountPath"] == "/tmp"
    assert "emptyDir" in rendered.volume("tmp")


def test_shutdown_fits_in_the_grace_period() -> None:
    rendered = render()
    settings = load_gateway_settings(rendered)
    pre_stop = rendered.container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop == ["sleep", "5"]
    grace = rendered.pod["terminationGracePeriodSeconds"]
    assert grace > settings.shutdown_timeout + 5


# --- what the chart refuses -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"mode": "statefulset"}, "/mode"),
        ({"replica": 3}, "replica"),
        ({"config": {"NATS-URL": "x"}}, "NATS-URL"),
        ({"config": {"listen": "2801"}}, "/config/listen"),
        ({"secretEnv": {"nats_password": {"name": "nats-auth"}}}, "key"),
        ({"service": {"internalTrafficPolicy": "Nearby"}}, "internalTrafficPolicy"),
        ({"probes": {"readiness": {"path": "readyz"}}}, "/probes/readiness"),
        (
            {"mode": "deployment", "config": {"falco_grpc": "unix:///run/falco/falco.sock"}},
            "a Deployment has no Falco socket",
        ),
        (
            {"config": {"falco_grpc": "unix:///var/run/falco.sock"}},
            "set Falco's unix socket as daemonset.falcoGrpcSocket",
        ),
        ({"config": {"spool_dir": "spool"}}, "must be an absolute path"),
        (
            {
                "mode": "deployment",
                "config": {"spool_dir": SPOOL_DIR},
                "spool": {"volume": "pvc"},
            },
            "with deployment.replicas above 1",
        ),
        ({"terminationGracePeriodSeconds": 12}, "leaves no time to drain"),
        ({"config": {"shutdown_timeout": 60}}, "leaves no time to drain"),
        (
            {
                "config": {"nats_password": "in-clear"},
                "secretEnv": {"nats_password": {"name": "nats-auth", "key": "password"}},
            },
            "give each setting once",
        ),
        ({"daemonset": {"falcoGrpcSocket": "/run/falco/falco.sock"}}, "falcoGrpcSocket"),
        ({"config": {"nats_url": {"host": "nats"}}}, "nats_url"),
        (
            {"secretFiles": MUTUAL_TLS},
            "tls_client_ca: client certificates on the HTTP port would fail every probe",
        ),
        (
            {
                "config": {
                    "tls_cert": "/etc/tls/tls.crt",
                    "tls_key": "/etc/tls/tls.key",
                    "tls_client_ca": "/etc/tls/ca.crt",
                    "health_listen": "",
                }
            },
            "set config.health_listen",
        ),
        (
            {"config": {"health_listen": "0.0.0.0:2801"}},
            "port 2801 is already the port of config.listen",
        ),
        ({"config": {"health_listen": "0.0.0.0:0"}}, "the port must be 1 to 65535"),
        ({"config": {"health_listen": "2802"}}, "/config/health_listen"),
    ],
)
def test_refused_values_name_the_problem(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        render(values)


# --- the checks themselves --------------------------------------------------------------------


def test_schema_validation_rejects_a_broken_manifest() -> None:
    # The schema layer must be able to fail: a misspelt field (strict mode), a wrong type.
    misspelt = copy.deepcopy(render().workload)
    misspelt["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["readonly"] = True
    assert any("'readonly' was unexpected" in p for p in schema_problems(misspelt))
    mistyped = copy.deepcopy(render().workload)
    mistyped["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "2801"
    assert any("containerPort" in p for p in schema_problems(mistyped))


def test_semantic_checks_reject_dangling_references() -> None:
    rendered = render()
    manifests = copy.deepcopy(rendered.manifests)
    daemonset = next(m for m in manifests if m["kind"] == "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] != "falco-socket"]
    pod["containers"][0]["readinessProbe"]["httpGet"]["port"] = "metrics"
    service = next(m for m in manifests if m["kind"] == "Service")
    service["spec"]["selector"] = {"app": "elsewhere"}
    problems = semantic_problems(manifests)
    assert any("'falco-socket' names no volume" in p for p in problems)
    assert any("undeclared port 'metrics'" in p for p in problems)
    assert any("selects no rendered pod" in p for p in problems)


def test_helm_lint_finds_nothing_in_either_mode() -> None:
    for values in ({}, DEPLOYMENT):
        report = helm.lint(CHART, dict(values), strict=True, kube_version="v1.26.0")
        findings = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        assert findings == []


# --- alert rules and dashboard (metrics.prometheusRule, metrics.grafanaDashboard) ---------------

FILES = CHART / "files"


def test_prometheus_rule_carries_the_shipped_rules_unchanged() -> None:
    rendered = render(
        {"metrics": {"prometheusRule": {"enabled": True, "labels": {"release": "kps"}}}}
    )
    rule = rendered.one("PrometheusRule")
    shipped = yaml.safe_load((FILES / "prometheus-rules.yaml").read_text(encoding="utf-8"))
    assert rule["spec"] == shipped
    assert rule["metadata"]["labels"]["release"] == "kps"
    assert rule["metadata"]["namespace"] == NAMESPACE
    # Prometheus's own templates pass through Helm untouched.
    summaries = [r["annotations"]["summary"] for r in rule["spec"]["groups"][0]["rules"]]
    assert all("{{ $labels.instance }}" in s for s in summaries)


def test_dashboard_config_map_is_labelled_for_grafanas_sidecar() -> None:
    rendered = render(
        {
            **DEPLOYMENT,
            "metrics": {
                "grafanaDashboard": {
                    "enabled": True,
                    "annotations": {"grafana_folder": "Falco"},
                    "namespace": "monitoring",
                }
            },
        }
    )
    config_map = rendered.one("ConfigMap")
    meta = config_map["metadata"]
    assert meta["labels"]["grafana_dashboard"] == "1"
    assert meta["annotations"] == {"grafana_folder": "Falco"}
    assert meta["namespace"] == "monitoring"
    shipped = json.loads((FILES / "grafana-dashboard.json").read_text(encoding="utf-8"))
    assert json.loads(config_map["data"]["falco-nats-gateway.json"]) == shipped
    default_namespace = render({"metrics": {"grafanaDashboard": {"enabled": True}}})
    assert default_namespace.one("ConfigMap")["metadata"]["namespace"] == NAMESPACE


def test_rules_and_dashboard_are_off_by_default() -> None:
    for values in ({}, DEPLOYMENT):
        kinds = render(values).kinds()
        assert "PrometheusRule" not in kinds
        assert "ConfigMap" not in kinds


def test_prometheus_rule_schema_rejects_a_broken_rule() -> None:
    rendered = render({"metrics": {"prometheusRule": {"enabled": True}}})
    rule = copy.deepcopy(rendered.one("PrometheusRule"))
    del rule["spec"]["groups"][0]["rules"][0]["expr"]
    rule["spec"]["groups"][0]["rules"][1]["for"] = "five minutes"
    problems = schema_problems(rule)
    assert any("'expr' is a required property" in p for p in problems), problems
    assert any("five minutes" in p for p in problems), problems


# --- NOTES.txt: what `helm install` prints ------------------------------------------------------


def notes(values: dict[str, Any]) -> str:
    output = helm.Chart.load(CHART).render(
        values, name=RELEASE, namespace=NAMESPACE, is_install=True
    )
    return next(text for name, text in output.items() if name.endswith("/NOTES.txt"))


TLS_FILES = {
    "tls_cert": {"name": "gw-tls", "key": "tls.crt"},
    "tls_key": {"name": "gw-tls", "key": "tls.key"},
}
HOST = f"{RELEASE}.{NAMESPACE}.svc"


def test_notes_use_plain_http_without_tls() -> None:
    text = notes({})
    assert f"  http://{HOST}:2801/" in text
    assert "curl -s http://127.0.0.1:2801/healthz" in text
    assert "https" not in text
    assert "/var/lib/falco-nats-gateway/falco/falco-nats-gateway" in text


def test_notes_use_https_with_the_ca_once_tls_is_on() -> None:
    text = notes({"secretFiles": TLS_FILES})
    assert f"  https://{HOST}:2801/" in text
    # The certificate names the Service, not 127.0.0.1: curl resolves the name to the tunnel.
    assert (
        f"curl -s --cacert ca.crt --resolve {HOST}:2801:127.0.0.1 https://{HOST}:2801/healthz"
    ) in text
    assert "Secret gw-tls" in text
    assert "http://127.0.0.1" not in text


def test_notes_use_the_plain_health_port_and_name_mtls_with_client_certificates() -> None:
    files = {**TLS_FILES, "tls_client_ca": {"name": "gw-tls", "key": "ca.crt"}}
    text = notes({**DEPLOYMENT, "config": {"health_listen": "0.0.0.0:2802"}, "secretFiles": files})
    assert f"  https://{HOST}:2801/" in text
    assert "http_output.mtls: true" in text
    assert "port-forward svc/falco-nats-gateway 2802" in text
    assert "curl -s http://127.0.0.1:2802/healthz" in text
    assert "--cacert" not in text


def test_notes_say_where_the_spool_is_and_what_monitoring_is_on() -> None:
    assert "an emptyDir" in notes(DEPLOYMENT)
    assert "in memory" in notes({"config": {"spool_dir": ""}})
    assert "Monitoring" not in notes({})
    text = notes({"metrics": {"prometheusRule": {"enabled": True}}})
    assert "PrometheusRule falco-nats-gateway" in text
    assert "http_user" not in text
    assert f"<http_user>:<http_password>@{HOST}" in notes({"config": {"http_user": "falco"}})
