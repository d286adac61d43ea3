"""Settings: precedence of sources, falcosidekick's names, the typed table's checks and ranges."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import SETTINGS, About, Settings, load, metavar, redact
from gateway.errors import ConfigError
from gateway.event import Priority


def test_defaults_are_falcosidekick_compatible() -> None:
    settings = load(environ={})
    assert settings.listen == "0.0.0.0:2801"
    assert settings.subject_template == "falco.<priority>.<rule>"
    assert settings.falco_grpc == ""
    assert settings.max_body_bytes == 16 * 1024 * 1024
    assert settings.grpc_poll_interval <= 0.1


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "nats_url: nats://from-file:4222\nminimum_priority: error\nlisten: 0.0.0.0:9000\n"
    )
    env = {"GATEWAY_MINIMUM_PRIORITY": "warning", "GATEWAY_LISTEN": "127.0.0.1:9001"}
    settings = load({"listen": "127.0.0.1:9002"}, str(config), env)
    assert settings.nats_url == "nats://from-file:4222"
    assert settings.minimum is Priority.WARNING
    assert settings.listen == "127.0.0.1:9002"


def test_falcosidekick_environment_names() -> None:
    env = {
        "NATS_HOSTPORT": "nats://nats.nats:4222",
        "NATS_SUBJECTTEMPLATE": "security.<priority>.<rule>",
        "NATS_MINIMUMPRIORITY": "info",
        "LISTENADDRESS": "127.0.0.1",
        "LISTENPORT": "2802",
    }
    settings = load(environ=env)
    assert settings.nats_url == "nats://nats.nats:4222"
    assert settings.subject_template == "security.<priority>.<rule>"
    assert settings.minimum is Priority.INFORMATIONAL
    assert settings.listen == "127.0.0.1:2802"


def test_gateway_names_win_over_falcosidekick_names() -> None:
    env = {"NATS_HOSTPORT": "nats://old:4222", "GATEWAY_NATS_URL": "nats://new:4222"}
    assert load(environ=env).nats_url == "nats://new:4222"


def test_falcosidekick_yaml_shape(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "listenport: 2803\nnats:\n  hostport: nats://nats:4222\n  minimumpriority: notice\n"
    )
    settings = load(config_file=str(config), environ={})
    assert settings.listen == "0.0.0.0:2803"
    assert settings.nats_url == "nats://nats:4222"
    assert settings.minimum is Priority.NOTICE


def test_comma_separated_servers() -> None:
    settings = load({"nats_url": "nats://a:4222, nats://b:4222,nats://c:4222"}, environ={})
    assert settings.nats_servers == ["nats://a:4222", "nats://b:4222", "nats://c:4222"]


@pytest.mark.parametrize(
    ("flags", "key", "problem"),
    [
        ({"listen": "2801"}, "listen", "HOST:PORT"),
        ({"listen": "0.0.0.0:http"}, "listen", "HOST:PORT"),
        ({"nats_url": "http://nats:4222"}, "nats_url", "scheme"),
        ({"nats_url": "nats://nats:99999"}, "nats_url", "invalid port"),
        ({"nats_url": " , "}, "nats_url", "no NATS server"),
        ({"minimum_priority": "severe"}, "minimum_priority", "unknown priority"),
        ({"subject_template": "falco.<prio>"}, "subject_template", "unknown placeholder"),
        ({"max_body_bytes": "lots"}, "max_body_bytes", "whole number"),
        ({"max_body_bytes": "10"}, "max_body_bytes", "10 is not within 1024..67108864 bytes"),
        ({"max_body_bytes": str(64 * 1024 * 1024 + 1)}, "max_body_bytes", "within 1024..67108864"),
        ({"grpc_poll_interval": "0"}, "grpc_poll_interval", "not within"),
        ({"grpc_poll_interval": "fast"}, "grpc_poll_interval", "expected a number"),
        ({"log_level": "loud"}, "log_level", "not one of"),
        ({"falco_grpc": "http://falco:5060"}, "falco_grpc", "unix:///"),
        ({"falco_grpc": "unix://"}, "falco_grpc", "no socket path"),
        ({"falco_grpc": "falco:5060"}, "grpc_client_cert", "mutual TLS"),
        ({"falco_grpc": "falco"}, "falco_grpc", "HOST:PORT"),
    ],
)
def test_bad_values_name_the_key(flags: dict[str, str], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(flags, environ={})
    assert caught.value.key == key
    assert problem in str(caught.value)


def test_tcp_grpc_cert_files_must_be_readable(tmp_path: Path) -> None:
    flags = {
        "falco_grpc": "falco:5060",
        "grpc_client_cert": str(tmp_path / "missing.crt"),
        "grpc_client_key": str(tmp_path / "missing.key"),
        "grpc_ca_cert": str(tmp_path / "missing-ca.crt"),
    }
    with pytest.raises(ConfigError, match=r"grpc_client_cert: cannot read .*missing\.crt"):
        load(flags, environ={})


def test_unknown_yaml_key_stops_start_up(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("nats_url: nats://a:4222\nnats_ulr: nats://typo:4222\n")
    with pytest.raises(ConfigError) as caught:
        load(config_file=str(config), environ={})
    assert caught.value.key == "nats_ulr"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("nats_url: [unclosed", "not valid YAML"),
        ("- a\n- b\n", "mapping"),
        ("max_body_bytes: true", "boolean"),
    ],
)
def test_bad_yaml_files(tmp_path: Path, text: str, problem: str) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=problem):
        load(config_file=str(config), environ={})


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config: cannot read .*nope\.yaml"):
        load(config_file=str(tmp_path / "nope.yaml"), environ={})


def test_unknown_gateway_variable_stops_start_up() -> None:
    with pytest.raises(ConfigError) as caught:
        load(environ={"GATEWAY_NATS_ULR": "nats://x:4222"})
    assert caught.value.key == "GATEWAY_NATS_ULR"


def test_kubernetes_service_links_are_not_mistaken_for_settings() -> None:
    env = {
        "GATEWAY_SERVICE_HOST": "10.96.0.12",
        "GATEWAY_SERVICE_PORT": "2801",
        "GATEWAY_SERVICE_PORT_HTTP": "2801",
        "GATEWAY_PORT": "tcp://10.96.0.12:2801",
        "GATEWAY_PORT_2801_TCP": "tcp://10.96.0.12:2801",
        "GATEWAY_PORT_2801_TCP_ADDR": "10.96.0.12",
    }
    assert load(environ=env) == Settings()


def test_redact_hides_credentials_in_urls() -> None:
    assert redact("nats://user:s3cret@a:4222,nats://b:4222") == "nats://***@a:4222,nats://b:4222"
    assert "tok3n" not in redact("nats://tok3n@a:4222")


@pytest.mark.parametrize(
    ("flags", "key", "problem"),
    [
        ({"jetstream": "maybe"}, "jetstream", "true or false"),
        ({"jetstream": "true", "stream_name": "falco.alerts"}, "stream_name", "not a valid"),
        ({"jetstream": "true", "stream_storage": "tape"}, "stream_storage", "file or memory"),
        ({"jetstream": "true", "stream_replicas": "7"}, "stream_replicas", "1..5"),
        (
            {"jetstream": "true", "stream_create": "true", "stream_subjects": "alerts.>"},
            "stream_subjects",
            "does not capture 'falco.emergency.rule'",
        ),
        ({"spool_sync": "sometimes"}, "spool_sync", "normal or full"),
        ({"spool_max_bytes": "1000"}, "spool_max_bytes", "below 65536"),
        ({"dedup_window": "-1"}, "dedup_window", "negative"),
        ({"publish_batch": "0"}, "publish_batch", "1..10000"),
    ],
)
def test_bad_delivery_settings_name_the_key(flags: dict[str, str], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(flags, environ={})
    assert caught.value.key == key
    assert problem in str(caught.value)


def test_jetstream_settings_from_yaml(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "jetstream: true\nstream_create: yes\nstream_replicas: 3\n"
        "stream_subjects: falco.>, audit.>\nspool_dir: /var/spool/fng\n"
    )
    settings = load(config_file=str(config), environ={})
    assert settings.jetstream is True
    assert settings.stream_create is True
    assert settings.stream_replicas == 3
    assert settings.stream_subject_list == ("falco.>", "audit.>")
    assert settings.spool_dir == "/var/spool/fng"


def test_custom_fields_and_tags_from_falcosidekick_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLUSTER_NAME", "prod-eu")
    env = {"CUSTOMFIELDS": "cluster:%CLUSTER_NAME,team:sec,url:http://x:1", "CUSTOMTAGS": "b, a"}
    settings = load(environ=env)
    assert settings.custom_field_map == {
        "cluster": "prod-eu",
        "team": "sec",
        "url": "http://x:1",  # falcosidekick skips an entry with a second ':'
    }
    assert settings.custom_tag_list == ("b", "a")


def test_custom_fields_and_tags_from_falcosidekick_yaml(tmp_path: Path) -> None:
    config = tmp_path / "falcosidekick.yaml"
    config.write_text("customfields:\n  cluster: prod\n  zone: eu-1\ncustomtags: [k8s, prod]\n")
    settings = load(config_file=str(config), environ={})
    assert settings.custom_field_map == {"cluster": "prod", "zone": "eu-1"}
    assert settings.custom_tag_list == ("k8s", "prod")


def test_custom_settings_under_gateway_names() -> None:
    settings = load({"custom_fields": "a:1", "custom_tags": "x"}, environ={})
    assert (settings.custom_field_map, settings.custom_tag_list) == ({"a": "1"}, ("x",))
    settings = load(environ={"GATEWAY_CUSTOM_FIELDS": "b:2"})
    assert settings.custom_field_map == {"b": "2"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("cluster", "'cluster' is not key:value"),
        (":prod", "is not key:value"),
        ("cluster:%NO_SUCH_VARIABLE_FOR_TEST", "'NO_SUCH_VARIABLE_FOR_TEST' is unset or empty"),
    ],
)
def test_bad_custom_fields_name_the_entry(text: str, problem: str) -> None:
    with pytest.raises(ConfigError, match="custom_fields") as info:
        load(environ={"CUSTOMFIELDS": text})
    assert problem in str(info.value)


@pytest.mark.parametrize(
    ("yaml_text", "key", "instead"),
    [
        ("templatedfields:\n  a: '{{.b}}'\n", "templatedfields.a", "custom_fields adds"),
        ("outputfieldformat: '<timestamp>'\n", "outputfieldformat", "reformat it"),
        ("nats:\n  hostport: nats://n:4222\n  mutualtls: true\n", "nats.mutualtls", "nats_cert"),
        ("nats:\n  checkcert: false\n", "nats.checkcert", "nats_ca"),
        ("tlsserver:\n  deploy: true\n", "tlsserver.deploy", "tls_cert"),
        ("stan:\n  hostport: nats://n:4222\n", "stan.hostport", "jetstream"),
    ],
)
def test_unimplemented_falcosidekick_yaml_settings_stop_start_up(
    tmp_path: Path, yaml_text: str, key: str, instead: str
) -> None:
    config = tmp_path / "falcosidekick.yaml"
    config.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load(config_file=str(config), environ={})
    assert str(info.value).startswith(key)
    assert "falcosidekick setting not supported" in str(info.value)
    assert instead in str(info.value)


def test_closed_sets_are_read_in_any_case() -> None:
    env = {
        "GATEWAY_LOG_LEVEL": "WARNING",
        "GATEWAY_LOG_FORMAT": "JSON",
        "GATEWAY_SPOOL_SYNC": "Full",
        "GATEWAY_STREAM_STORAGE": "Memory",
    }
    settings = load(environ=env)
    assert (settings.log_level, settings.log_format) == ("warning", "json")
    assert (settings.spool_sync, settings.stream_storage) == ("full", "memory")


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("log_level", "not one of debug, info, warning, error"),
        ("log_format", "not logfmt or json"),
        ("spool_sync", "not normal or full"),
        # Checked whether or not JetStream is on: a bad value is never silently kept.
        ("stream_storage", "not file or memory"),
    ],
)
def test_values_outside_a_closed_set_name_the_key(key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load({key: "sometimes"}, environ={})
    assert caught.value.key == key
    assert problem in str(caught.value)


def ranged() -> list[tuple[str, About]]:
    return [(k, a) for k, a in SETTINGS.items() if a.low is not None or a.high is not None]


@pytest.mark.parametrize(("key", "about"), ranged(), ids=[k for k, _ in ranged()])
def test_every_range_in_the_table_is_enforced_at_both_ends(key: str, about: About) -> None:
    is_int = isinstance(getattr(Settings(), key), int)
    step = 1 if is_int else 0.0005
    for inside in (about.low, about.high):
        if inside is not None:
            assert getattr(load({key: str(inside)}, environ={}), key) == inside
    outside = [
        bound + sign * step
        for bound, sign in ((about.low, -1), (about.high, 1))
        if bound is not None
    ]
    for value in outside:
        with pytest.raises(ConfigError) as caught:
            load({key: str(int(value) if is_int else value)}, environ={})
        assert caught.value.key == key


def test_every_setting_has_help_and_a_flag_with_its_metavar() -> None:
    from gateway.cli import build_parser

    text = build_parser().format_help()
    for key, about in SETTINGS.items():
        assert about.help, key
        assert f"--{key.replace('_', '-')} {metavar(key)}" in text or key in {
            "jetstream",
            "stream_create",
            "metrics_rule_labels",
        }, key
    assert "--spool-sync normal|full" in text
    assert "--log-level debug|info|warning|error" in text
