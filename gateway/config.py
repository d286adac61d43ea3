"""Settings: one table of keys, read from defaults, a YAML file, the environment and flags.

`Settings` is the table: each field is a key, with its type (a `Literal` where
the values are a closed set), default, help text, metavar and allowed range
(`About`, in the field's metadata). The command line, the range checks and the
conversions are all made from it.

Later sources win: defaults < `--config FILE` < falcosidekick's environment
names < `GATEWAY_*` variables < command-line flags. Every key has the same
name everywhere: `nats_url` in YAML, `GATEWAY_NATS_URL` in the environment,
`--nats-url` on the command line.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

from gateway.errors import ConfigError
from gateway.event import Priority
from gateway.subject import SubjectTemplate

ENV_PREFIX = "GATEWAY_"
# No setting takes max_body_bytes past this: a body is held whole while it is
# read (up to LARGE_BODIES_AT_ONCE of them past 1 MiB, see sources/http.py).
MAX_BODY_BYTES_CAP = 64 * 1024 * 1024

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["logfmt", "json"]
SpoolSync = Literal["normal", "full"]
StreamStorage = Literal["file", "memory"]

_T = TypeVar("_T")


@dataclass(frozen=True)
class About:
    """What the table says of one setting besides its type and default."""

    help: str
    # The flag's placeholder in --help; a closed set of values shows them (a|b).
    metavar: str = ""
    # Inclusive bounds of a number; None: unbounded on that side.
    low: float | None = None
    high: float | None = None
    unit: str = ""  # in messages about the range: "seconds", "bytes"
    note: str = ""  # added to an out-of-range message: what the low end means

    def out_of_range(self, value: float) -> str | None:
        """Why `value` is outside the range, or None."""
        low, high = self.low, self.high
        if (low is None or value >= low) and (high is None or value <= high):
            return None
        unit = f" {self.unit}" if self.unit else ""
        note = f" ({self.note})" if self.note else ""
        if high is not None:
            return f"{value} is not within {low}..{high}{unit}{note}"
        if low == 0:
            return f"must not be negative{note}"
        return f"{value} is below {low}{unit}{note}"


def setting(
    default: _T,
    help: str,
    metavar: str = "",
    *,
    low: float | None = None,
    high: float | None = None,
    unit: str = "",
    note: str = "",
    secret: bool = False,
) -> _T:
    """A field of `Settings`. A secret is kept out of repr(), so a settings object in
    a log or a traceback shows no password."""
    about = About(help, metavar, low, high, unit, note)
    made: _T = field(default=default, repr=not secret, metadata={"about": about})
    return made


# Kubernetes injects <SERVICE>_SERVICE_HOST, <SERVICE>_PORT... for every Service;
# a Service named "gateway" would otherwise look like unknown settings.
_K8S_SERVICE_ENV = re.compile(
    r"_(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT(_\d+_(TCP|UDP|SCTP)(_\w+)?)?)\Z"
)


@dataclass(frozen=True)
class Settings:
    """Every setting, with its default, help text, metavar and allowed range (`About`)."""

    nats_url: str = setting(
        "nats://127.0.0.1:4222",
        "NATS server URL; comma-separate several for a cluster",
        "URL[,URL...]",
    )
    listen: str = setting(
        "0.0.0.0:2801", "HOST:PORT of the HTTP listener for Falco's http_output", "HOST:PORT"
    )
    falco_grpc: str = setting(
        "",
        "Falco gRPC address (unix:///run/falco/falco.sock or HOST:PORT); empty: gRPC off",
        "ADDRESS",
    )
    grpc_poll_interval: float = setting(
        0.1,
        "seconds between the empty requests that keep Falco's sub stream flowing",
        "SECONDS",
        low=0.001,
        high=10,
        unit="seconds",
    )
    grpc_client_cert: str = setting(
        "", "client certificate (PEM) for Falco gRPC over TCP (mutual TLS)", "FILE"
    )
    grpc_client_key: str = setting("", "client private key (PEM) for Falco gRPC over TCP", "FILE")
    grpc_ca_cert: str = setting(
        "", "CA certificate (PEM) that signed Falco's gRPC server certificate", "FILE"
    )
    grpc_server_name: str = setting(
        "", "expected name in Falco's server certificate, if not the host"
    )
    subject_template: str = setting(
        "falco.<priority>.<rule>",
        "NATS subject; placeholders <priority>, <rule>, <source>, <hostname>",
        "TEMPLATE",
    )
    minimum_priority: str = setting(
        "debug", "drop alerts below this priority (debug keeps all; 'info' works)", "PRIORITY"
    )
    # Falco drops what it is refused: an over-long alert is taken and shortened
    # (max_field_bytes, then NATS's max_payload), not answered 413.
    max_body_bytes: int = setting(
        16 * 1024 * 1024,
        "largest accepted HTTP request body, in bytes",
        "BYTES",
        low=1024,
        high=MAX_BODY_BYTES_CAP,
        unit="bytes",
    )
    shutdown_timeout: float = setting(
        10.0, "seconds to finish in-flight alerts and drain NATS on SIGTERM", "SECONDS", low=0
    )
    log_level: LogLevel = setting("info", "the least severe log level written")
    jetstream: bool = setting(
        False, "publish to JetStream and wait for its acks (core NATS otherwise)", "BOOL"
    )
    stream_name: str = setting("FALCO", "JetStream stream the alerts must land in")
    stream_subjects: str = setting(
        "falco.>",
        "subjects of the stream, comma-separated (when the gateway creates it)",
        "SUBJECTS",
    )
    stream_create: bool = setting(
        False, "create the stream if missing, and update it to these settings", "BOOL"
    )
    stream_storage: StreamStorage = setting(
        "file", "where the stream keeps alerts (when the gateway creates the stream)"
    )
    stream_replicas: int = setting(
        1, "stream replicas (when the gateway creates the stream)", low=1, high=5
    )
    stream_max_age: float = setting(
        0.0,
        "seconds the stream keeps an alert, 0: no limit (if the gateway creates it)",
        "SECONDS",
        low=0,
        note="0: no limit",
    )
    dedup_window: float = setting(
        120.0,
        "seconds within which the second copy of an alert (gRPC and HTTP) is dropped",
        "SECONDS",
        low=0,
        note="0 turns deduplication off",
    )
    dedup_max_entries: int = setting(
        250_000, "most alert ids remembered for deduplication (bounds its memory)", "N", low=1000
    )
    spool_dir: str = setting(
        "", "folder of the durable spool; empty: alerts wait in memory only", "DIR"
    )
    spool_max_bytes: int = setting(
        128 * 1024 * 1024,
        "spool size past which alerts are refused (HTTP 503, gRPC held back)",
        "BYTES",
        low=64 * 1024,
        unit="bytes",
    )
    spool_max_age: float = setting(
        0.0,
        "seconds an undelivered alert may wait before it is dropped, 0: forever",
        "SECONDS",
        low=0,
        note="0 keeps alerts until delivered",
    )
    spool_sync: SpoolSync = setting(
        "normal", "normal (survives a killed gateway) or full (fsync each alert, power-cut safe)"
    )
    publish_batch: int = setting(
        256,
        "most alerts handed to NATS at once (JetStream acks in flight)",
        "N",
        low=1,
        high=10_000,
    )
    publish_timeout: float = setting(
        5.0,
        "seconds to wait for a JetStream ack or a core flush",
        "SECONDS",
        low=0.1,
        high=300,
        unit="seconds",
    )
    log_format: LogFormat = setting("logfmt", "log lines on stderr, one per event, in this format")
    metrics_rule_labels: bool = setting(
        False, "add a per-rule metric (one series per rule: watch cardinality)"
    )
    # Security: the HTTP listener (TLS, mutual TLS, basic auth, a plain probe port).
    tls_cert: str = setting(
        "", "server certificate (PEM) of the HTTP listener; set: HTTPS only", "FILE"
    )
    tls_key: str = setting("", "private key (PEM) of tls_cert", "FILE")
    tls_client_ca: str = setting(
        "", "CA (PEM) whose client certificates the HTTP listener requires (mutual TLS)", "FILE"
    )
    http_user: str = setting(
        "", "basic-auth user Falco must send on POST / (in http_output's URL)", "USER"
    )
    http_password: str = setting(
        "",
        "basic-auth password (prefer http_password_file or the environment)",
        "PASSWORD",
        secret=True,
    )
    http_password_file: str = setting("", "file holding the basic-auth password", "FILE")
    health_listen: str = setting(
        "",
        "HOST:PORT of a plain-HTTP port for /ping, /healthz, /readyz, /metrics only",
        "HOST:PORT",
    )
    # Limits against slow, flooding or hostile clients.
    http_read_timeout: float = setting(
        10.0,
        "seconds a client has to send a request body, and for the TLS handshake",
        "SECONDS",
        low=0.1,
        high=3600,
        unit="seconds",
    )
    http_max_in_flight: int = setting(
        256, "most requests handled at once; more are answered 503", "N", low=1, high=100_000
    )
    max_output_fields: int = setting(
        512,
        "most output_fields an alert may carry; more: the alert is rejected",
        "N",
        low=1,
        high=100_000,
    )
    max_field_bytes: int = setting(
        16384,
        "longest output field value in bytes; longer ones are truncated",
        "BYTES",
        low=64,
        high=64 * 1024 * 1024,
        unit="bytes",
    )
    grpc_max_message_bytes: int = setting(
        4 * 1024 * 1024,
        "largest gRPC message accepted from Falco",
        "BYTES",
        low=64 * 1024,
        high=1024**3,
        unit="bytes",
    )
    # Security: the NATS link.
    nats_ca: str = setting(
        "", "CA (PEM) that signed the NATS server's certificate (TLS to NATS)", "FILE"
    )
    nats_cert: str = setting("", "client certificate (PEM) for NATS (mutual TLS)", "FILE")
    nats_key: str = setting("", "private key (PEM) of nats_cert", "FILE")
    nats_token: str = setting(
        "", "NATS token (prefer nats_token_file or the environment)", "TOKEN", secret=True
    )
    nats_token_file: str = setting("", "file holding the NATS token", "FILE")
    nats_user: str = setting("", "NATS user name (with nats_password)", "USER")
    nats_password: str = setting(
        "", "NATS password (prefer nats_password_file or the environment)", "PASSWORD", secret=True
    )
    nats_password_file: str = setting("", "file holding the NATS password", "FILE")
    nats_nkey_seed: str = setting(
        "", "file holding the NKey seed (SU...) of the gateway's NATS user", "FILE"
    )
    nats_creds: str = setting("", "NATS credentials file (.creds: user JWT and NKey seed)", "FILE")
    # falcosidekick's CUSTOMFIELDS and CUSTOMTAGS: added to every alert's payload.
    custom_fields: str = setting(
        "",
        "key:value,... added to every alert's output_fields (value %VAR: from env)",
        "KEY:VALUE[,...]",
    )
    custom_tags: str = setting("", "tag,... added to every alert's tags", "TAG[,...]")

    @property
    def http_tls(self) -> bool:
        return bool(self.tls_cert)

    def secret(self, key: str) -> str:
        """A secret value: `<key>_file`'s content when that is set (one trailing newline
        dropped, as `echo` and Kubernetes Secrets leave one), else `<key>` itself."""
        path = getattr(self, key + "_file")
        if not path:
            return str(getattr(self, key))
        from gateway.tls import read_file

        data = read_file(key + "_file", path)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(key + "_file", f"{path} is not UTF-8 text") from None
        return text.removesuffix("\n").removesuffix("\r")

    @property
    def nats_servers(self) -> list[str]:
        return [s.strip() for s in self.nats_url.split(",") if s.strip()]

    @property
    def listen_host(self) -> str:
        return _split_listen(self.listen)[0]

    @property
    def listen_port(self) -> int:
        return _split_listen(self.listen)[1]

    @property
    def minimum(self) -> Priority:
        return Priority.parse(self.minimum_priority)

    @property
    def custom_field_map(self) -> dict[str, str]:
        """custom_fields as a mapping; `%NAME` values read from the environment."""
        return parse_custom_fields(self.custom_fields, os.environ)

    @property
    def custom_tag_list(self) -> tuple[str, ...]:
        # falcosidekick drops every space from CUSTOMTAGS; empty tags are dropped here too.
        return tuple(t for t in self.custom_tags.replace(" ", "").split(",") if t)

    @property
    def stream_subject_list(self) -> tuple[str, ...]:
        return tuple(s.strip() for s in self.stream_subjects.split(",") if s.strip())

    def validate(self) -> Settings:
        """Check every value; ConfigError names the first bad key."""
        if not self.nats_servers:
            raise ConfigError("nats_url", "no NATS server given")
        _check_nats_urls(self.nats_url)
        _split_listen(self.listen)
        self._validate_table()
        if self.falco_grpc:
            _check_grpc_address(self)
        # The domain code says what is wrong (ValueError); this layer names the key.
        try:
            SubjectTemplate(self.subject_template)
        except ValueError as exc:
            raise ConfigError("subject_template", str(exc)) from None
        try:
            Priority.parse(self.minimum_priority)
        except ValueError as exc:
            raise ConfigError("minimum_priority", str(exc)) from None
        if self.jetstream:
            _check_stream(self)
        self._validate_security()
        self.custom_field_map  # noqa: B018 - raises ConfigError naming a bad entry
        return self

    def _validate_table(self) -> None:
        """Every value of a closed set within it, every number within its range."""
        for key, about in SETTINGS.items():
            value = getattr(self, key)
            choices = CHOICES.get(key)
            if choices is not None and value not in choices:
                raise ConfigError(key, f"{value!r} is not {_one_of(choices)}")
            if about.low is not None or about.high is not None:
                problem = about.out_of_range(value)
                if problem is not None:
                    raise ConfigError(key, problem)

    def _validate_security(self) -> None:
        from gateway.tls import check_ca, check_pair, check_readable

        for key in SECRET_FILE_KEYS:
            if getattr(self, key) and getattr(self, key + "_file"):
                raise ConfigError(key + "_file", f"give {key} or {key}_file, not both")
            if getattr(self, key + "_file") and not self.secret(key):
                raise ConfigError(key + "_file", f"{getattr(self, key + '_file')} is empty")
        _check_http_security(self, check_ca, check_pair)
        self._validate_nats_security(check_ca, check_pair, check_readable)

    def _validate_nats_security(self, check_ca: Any, check_pair: Any, check_readable: Any) -> None:
        if self.nats_cert or self.nats_key:
            if not (self.nats_cert and self.nats_key):
                missing = "nats_key" if self.nats_cert else "nats_cert"
                raise ConfigError(missing, "a NATS client certificate needs nats_cert and nats_key")
            check_pair("nats_cert", self.nats_cert, "nats_key", self.nats_key)
        if self.nats_ca:
            check_ca("nats_ca", self.nats_ca)
        methods = [
            key
            for key, given in (
                ("nats_token", bool(self.nats_token or self.nats_token_file)),
                ("nats_user", bool(self.nats_user)),
                ("nats_nkey_seed", bool(self.nats_nkey_seed)),
                ("nats_creds", bool(self.nats_creds)),
            )
            if given
        ]
        if len(methods) > 1:
            raise ConfigError(
                methods[1], f"choose one NATS authentication, not {' and '.join(methods)}"
            )
        if bool(self.nats_user) != bool(self.nats_password or self.nats_password_file):
            key = "nats_password" if self.nats_user else "nats_user"
            raise ConfigError(key, "NATS user authentication needs nats_user and nats_password")
        if self.nats_nkey_seed:
            _check_nats_file("nats_nkey_seed", self.nats_nkey_seed, b"SU", check_readable)
        if self.nats_creds:
            _check_nats_file("nats_creds", self.nats_creds, b"BEGIN NATS USER JWT", check_readable)


# Secrets given as a value, each of which may come from a file instead (`<key>_file`).
SECRET_FILE_KEYS = ("http_password", "nats_token", "nats_password")

# falcosidekick's names for the same settings (environment, and YAML after flattening
# nested keys with dots), so its configuration can be reused unchanged.
FALCOSIDEKICK_ALIASES: dict[str, str] = {
    "nats.hostport": "nats_url",
    "nats.subjecttemplate": "subject_template",
    "nats.minimumpriority": "minimum_priority",
    "listenaddress": "listen_address",
    "listenport": "listen_port",
    "debug": "debug",
    "customfields": "custom_fields",
    "customtags": "custom_tags",
}

# falcosidekick settings this gateway does not implement, each with what to use
# instead: set in the environment or the YAML file, they stop start-up, so that no
# configured intent is dropped without a word.
FALCOSIDEKICK_REFUSED: dict[str, str] = {
    "templatedfields": "not implemented: derive such fields in the subscriber; "
    "custom_fields adds constant ones",
    "outputfieldformat": "not implemented: `output` is published as Falco wrote it; "
    "reformat it in the subscriber",
    "bracketreplacer": "not implemented: output_fields keys are published as Falco "
    "writes them (proc.aname[2])",
    "nats.mutualtls": "use nats_cert and nats_key (and nats_ca) for mutual TLS to NATS",
    "nats.checkcert": "the NATS server's certificate is always verified; give its CA with nats_ca",
    "nats.maxconcurrentrequests": "not needed: one NATS connection carries every alert "
    "(publish_batch bounds what is in flight)",
    "mutualtlsfilespath": "use nats_cert, nats_key, nats_ca (NATS) and tls_cert, tls_key, "
    "tls_client_ca (the HTTP listener)",
    "mutualtlsclient.certfile": "use nats_cert",
    "mutualtlsclient.keyfile": "use nats_key",
    "mutualtlsclient.cacertfile": "use nats_ca",
    "tlsclient.cacertfile": "use nats_ca",
    "tlsserver.deploy": "set tls_cert and tls_key to serve HTTPS",
    "tlsserver.certfile": "use tls_cert",
    "tlsserver.keyfile": "use tls_key",
    "tlsserver.mutualtls": "set tls_client_ca to require client certificates",
    "tlsserver.cacertfile": "use tls_client_ca",
    "tlsserver.notlsport": "use health_listen (plain HTTP for /ping, /healthz, /readyz, /metrics)",
    "tlsserver.notlspaths": "use health_listen (it serves /ping, /healthz, /readyz, /metrics)",
    "stan.hostport": "NATS Streaming is not supported: use jetstream: true",
    "stan.clusterid": "NATS Streaming is not supported: use jetstream: true",
    "stan.clientid": "NATS Streaming is not supported: use jetstream: true",
}
FALCOSIDEKICK_REFUSED_ENV = {key.replace(".", "_").upper(): key for key in FALCOSIDEKICK_REFUSED}
FALCOSIDEKICK_ENV = {
    key.replace(".", "_").upper(): name for key, name in FALCOSIDEKICK_ALIASES.items()
}

# The table, read once: each key's About, its resolved type, and the closed sets.
SETTINGS: dict[str, About] = {f.name: f.metadata["about"] for f in fields(Settings)}
_TYPES: dict[str, Any] = get_type_hints(Settings)
CHOICES: dict[str, tuple[str, ...]] = {
    key: get_args(kind) for key, kind in _TYPES.items() if get_origin(kind) is Literal
}


def metavar(key: str) -> str:
    """The placeholder of `key`'s flag in --help."""
    about = SETTINGS[key]
    if about.metavar:
        return about.metavar
    if key in CHOICES:
        return "|".join(CHOICES[key])
    return key.rsplit("_", maxsplit=1)[-1].upper()


def _one_of(choices: tuple[str, ...]) -> str:
    if len(choices) == 2:
        return " or ".join(choices)
    return "one of " + ", ".join(choices)


def load(
    flags: Mapping[str, Any] | None = None,
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Settings from every source, validated."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    if config_file:
        values.update(_from_yaml(Path(config_file)))
    values.update(_from_env(environ))
    values.update({k: v for k, v in (flags or {}).items() if v is not None})
    return _build(values).validate()


def env_name(key: str) -> str:
    return ENV_PREFIX + key.upper()


def _build(values: Mapping[str, Any]) -> Settings:
    settings = Settings()
    values = dict(values)
    host, port = values.pop("listen_address", None), values.pop("listen_port", None)
    debug = values.pop("debug", None)
    converted: dict[str, Any] = {}
    for key, raw in values.items():
        if key not in SETTINGS:
            raise ConfigError(key, f"unknown setting; known: {', '.join(SETTINGS)}")
        converted[key] = _convert(key, raw)
    settings = replace(settings, **converted)
    if host is not None or port is not None:
        current_host, current_port = _split_listen(settings.listen)
        host_text = current_host if host is None else str(host)
        port_text = str(current_port) if port is None else str(port)
        settings = replace(settings, listen=f"{host_text}:{port_text}")
    if debug is not None and _convert_bool("debug", debug) and "log_level" not in values:
        settings = replace(settings, log_level="debug")
    return settings


def _convert(key: str, raw: Any) -> Any:
    if key in CHOICES:
        return _convert_choice(key, raw)
    converter: Callable[[str, Any], Any] = {
        str: _convert_str,
        int: _convert_int,
        float: _convert_float,
        bool: _convert_bool,
    }[_TYPES[key]]
    return converter(key, raw)


def _convert_choice(key: str, raw: Any) -> str:
    # In any case (INFO, Info); checked against the closed set in validate().
    return _convert_str(key, raw).lower()


def _convert_str(key: str, raw: Any) -> str:
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise ConfigError(key, f"expected text, got {type(raw).__name__}")
    return str(raw).strip()


def _convert_int(key: str, raw: Any) -> int:
    if isinstance(raw, bool):
        raise ConfigError(key, "expected a whole number, got a boolean")
    try:
        return int(str(raw).strip())
    except ValueError:
        raise ConfigError(key, f"expected a whole number, got {raw!r}") from None


def _convert_float(key: str, raw: Any) -> float:
    if isinstance(raw, bool):
        raise ConfigError(key, "expected a number, got a boolean")
    try:
        return float(str(raw).strip())
    except ValueError:
        raise ConfigError(key, f"expected a number, got {raw!r}") from None


def _convert_bool(key: str, raw: Any) -> bool:
    text = str(raw).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(key, f"expected true or false, got {raw!r}")


def _from_yaml(path: Path) -> dict[str, Any]:
    # Imported here: most gateways take their settings from the environment, and
    # PyYAML is ~1 MB of resident memory for the life of the process.
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError("config", f"{path} is not valid YAML: {exc}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError("config", f"{path} must hold a mapping of settings")
    values: dict[str, Any] = {}
    for key, value in _flatten(_custom_as_text(doc)).items():
        # templatedfields is a mapping in YAML: its entries flatten to templatedfields.<name>.
        refused = next(
            (k for k in (key.lower(), key.lower().split(".")[0]) if k in FALCOSIDEKICK_REFUSED),
            None,
        )
        if refused is not None:
            raise ConfigError(
                key, f"falcosidekick setting not supported: {FALCOSIDEKICK_REFUSED[refused]}"
            )
        name = FALCOSIDEKICK_ALIASES.get(key.lower(), key)
        if name not in SETTINGS and name not in {"listen_address", "listen_port", "debug"}:
            raise ConfigError(key, f"unknown setting in {path}; known: {', '.join(SETTINGS)}")
        values[name] = value
    return values


def _custom_as_text(doc: Mapping[str, Any]) -> dict[str, Any]:
    """falcosidekick's YAML form of custom fields (a mapping) and tags (a list), as
    the text form of custom_fields and custom_tags."""
    converted = dict(doc)
    for key, value in doc.items():
        name = FALCOSIDEKICK_ALIASES.get(str(key).lower(), str(key))
        if name == "custom_fields" and isinstance(value, dict):
            for field_name, field_value in value.items():
                if isinstance(field_value, dict | list) or field_value is None:
                    raise ConfigError(f"{key}.{field_name}", "expected a text value")
            converted[key] = ",".join(f"{k}:{v}" for k, v in value.items())
        elif name == "custom_tags" and isinstance(value, list):
            converted[key] = ",".join(str(tag) for tag in value)
    return converted


def parse_custom_fields(text: str, environ: Mapping[str, str]) -> dict[str, str]:
    """`key:value,key:%VAR` as falcosidekick reads CUSTOMFIELDS, except that a value
    may hold ':' (falcosidekick skips such an entry) and a bad entry or an unset
    variable is an error naming it (falcosidekick logs it and goes on)."""
    fields: dict[str, str] = {}
    for entry in text.split(","):
        if not entry.strip():
            continue
        key, sep, value = entry.partition(":")
        key = key.strip()
        if not sep or not key:
            raise ConfigError("custom_fields", f"{entry!r} is not key:value")
        if value.startswith("%"):
            variable = value[1:]
            value = environ.get(variable, "")
            if not value:
                raise ConfigError(
                    "custom_fields", f"{key}: environment variable {variable!r} is unset or empty"
                )
        fields[key] = value
    return fields


def _flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, key in FALCOSIDEKICK_REFUSED_ENV.items():
        if name in environ:
            raise ConfigError(
                name, f"falcosidekick setting not supported: {FALCOSIDEKICK_REFUSED[key]}"
            )
    for name, key in FALCOSIDEKICK_ENV.items():
        if name in environ:
            values[key] = environ[name]
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or _K8S_SERVICE_ENV.search(name):
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key not in SETTINGS:
            raise ConfigError(
                name, f"unknown setting; known: {', '.join(env_name(k) for k in SETTINGS)}"
            )
        values[key] = value
    return values


@contextlib.contextmanager
def naming(key: str) -> Iterator[None]:
    """Domain code raises ValueError about a value; here that becomes a ConfigError
    naming the setting the value came from."""
    try:
        yield
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None


def split_listen(listen: str, key: str = "listen") -> tuple[str, int]:
    """(host, port) of a HOST:PORT setting; ConfigError naming `key` otherwise."""
    return _split_listen(listen, key)


def _split_listen(listen: str, key: str = "listen") -> tuple[str, int]:
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(key, f"{listen!r} is not HOST:PORT (for example 0.0.0.0:2801)")
    return host.strip("[]") or "0.0.0.0", int(port_text)


def _check_nats_urls(nats_url: str) -> None:
    # nats-py reads each URL with urlparse and does not percent-decode, so user info
    # holding '/', '?' or '#' would be read as a path, query or fragment (a wrong
    # host, the password where a host is shown), and the gateway splits the list
    # at ','. Refused by name, before anything reads them as URLs.
    for start, end in _userinfo_spans(nats_url):
        if any(c in nats_url[start:end] for c in "/?#,"):
            raise ConfigError(
                "nats_url",
                f"{redact(nats_url)!r}: the user info holds '/', '?', '#' or ',', which "
                "a NATS URL cannot carry; set nats_user and nats_password (or nats_token)",
            )
    for server in (s.strip() for s in nats_url.split(",")):
        if server:
            _check_nats_url(server)


def _check_nats_url(server: str) -> None:
    try:
        parts = urlsplit(server if "://" in server else f"nats://{server}")
    except ValueError as exc:
        # urlsplit's messages ("Invalid IPv6 URL") name no part of the URL.
        raise ConfigError("nats_url", f"{redact(server)!r} is not a valid URL: {exc}") from None
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ConfigError("nats_url", f"{redact(server)!r} has an invalid port") from None
    if parts.scheme not in {"nats", "tls", "ws", "wss"}:
        raise ConfigError(
            "nats_url", f"{redact(server)!r}: scheme must be nats://, tls://, ws:// or wss://"
        )
    if not parts.hostname:
        raise ConfigError("nats_url", f"{redact(server)!r} has no host")


def _check_grpc_address(settings: Settings) -> None:
    address = settings.falco_grpc
    if address.startswith("unix://"):
        if not address.removeprefix("unix://"):
            raise ConfigError("falco_grpc", f"{address!r} names no socket path")
        return
    if "://" in address:
        raise ConfigError(
            "falco_grpc",
            f"{address!r}: use unix:///path/to/falco.sock or HOST:PORT (TCP with mutual TLS)",
        )
    _split_listen(address, "falco_grpc")
    missing = [
        key
        for key in ("grpc_client_cert", "grpc_client_key", "grpc_ca_cert")
        if not getattr(settings, key)
    ]
    if missing:
        raise ConfigError(
            missing[0],
            f"Falco serves gRPC over TCP ({address}) only with mutual TLS; "
            "set grpc_client_cert, grpc_client_key and grpc_ca_cert, or use its unix socket",
        )
    for key in ("grpc_client_cert", "grpc_client_key", "grpc_ca_cert"):
        path = Path(getattr(settings, key))
        if not path.is_file() or not os.access(path, os.R_OK):
            raise ConfigError(key, f"cannot read {path}")
    from gateway.tls import check_ca, check_pair

    check_pair(
        "grpc_client_cert", settings.grpc_client_cert, "grpc_client_key", settings.grpc_client_key
    )
    check_ca("grpc_ca_cert", settings.grpc_ca_cert)


def _check_http_security(settings: Settings, check_ca: Any, check_pair: Any) -> None:
    if settings.tls_cert or settings.tls_key:
        if not (settings.tls_cert and settings.tls_key):
            missing = "tls_key" if settings.tls_cert else "tls_cert"
            raise ConfigError(missing, "HTTPS needs tls_cert and tls_key")
        check_pair("tls_cert", settings.tls_cert, "tls_key", settings.tls_key)
    if settings.tls_client_ca:
        if not settings.tls_cert:
            raise ConfigError("tls_client_ca", "client certificates need HTTPS: set tls_cert")
        check_ca("tls_client_ca", settings.tls_client_ca)
    has_password = bool(settings.http_password or settings.http_password_file)
    if bool(settings.http_user) != has_password:
        key = "http_password" if settings.http_user else "http_user"
        raise ConfigError(key, "basic auth needs http_user and http_password")
    if ":" in settings.http_user:
        raise ConfigError("http_user", "a basic-auth user cannot contain ':'")
    if settings.health_listen:
        health = _split_listen(settings.health_listen, "health_listen")
        if health[1] == settings.listen_port and health[1] != 0:
            raise ConfigError("health_listen", f"port {health[1]} is already the listen port")


def _check_nats_file(key: str, path: str, marker: bytes, check_readable: Any) -> None:
    from gateway.tls import read_file

    check_readable(key, path)
    data = read_file(key, path)
    # A seed file is the seed alone; a .creds file has it after the user's JWT.
    if not (data.strip().startswith(marker) if marker == b"SU" else marker in data):
        what = "an NKey user seed (SU...)" if key == "nats_nkey_seed" else "a NATS .creds file"
        raise ConfigError(key, f"{path} is not {what}")
    import importlib.util

    # nats-py signs the server's nonce with nkeys, an optional dependency of it.
    if importlib.util.find_spec("nkeys") is None:
        raise ConfigError(key, "needs the Python package nkeys (pip install nkeys)")


def _check_stream(settings: Settings) -> None:
    if not settings.stream_name or any(c in settings.stream_name for c in " .*>"):
        raise ConfigError("stream_name", f"{settings.stream_name!r} is not a valid stream name")
    if not settings.stream_subject_list:
        raise ConfigError("stream_subjects", "no subject given")
    if settings.stream_create:
        # Every subject the template can produce must land in the stream, or
        # JetStream has no one to ack it and alerts would wait forever.
        sample = SubjectTemplate(settings.subject_template).uncaptured(settings.stream_subject_list)
        if sample is not None:
            raise ConfigError(
                "stream_subjects",
                f"{settings.stream_subjects!r} does not capture {sample!r}, "
                f"a subject of subject_template {settings.subject_template!r}",
            )


_NEXT_SERVER = re.compile(r",\s*[A-Za-z][A-Za-z0-9+.-]*://")


def _userinfo_spans(url: str) -> list[tuple[int, int]]:
    """Where the user info of each server in `url` (one URL or a comma-separated
    list) lies: (start, end) with url[end] its '@'.

    No URL parser is trusted with it: urlsplit ends the user info at the first
    '/', '?' or '#', and a password may hold those and '@' as well. The user info
    of a server ends at its last '@'; it starts after the server's '://' (or where
    the server starts, without a scheme). A server starts at the beginning, or
    after the first ',' that follows the previous server's '@' (a host holds no
    ','): an '@' with no ',' since the previous one belongs to the same user info.
    Where that is ambiguous more is masked, never less.
    """
    spans: list[tuple[int, int]] = []
    boundary = 0  # just after the previous '@'
    for at, char in enumerate(url):
        if char != "@":
            continue
        window = url[boundary:at]
        if boundary and "," not in window:
            spans[-1] = (spans[-1][0], at)  # a password holding '@'
        elif boundary:
            server = boundary + window.find(",") + 1
            scheme = url.find("://", server, at)
            spans.append((scheme + 3 if scheme >= 0 else server, at))
        else:
            # The first '@': its server starts after the last ', scheme://' before it
            # (a password may hold ',' but hardly that), else at the beginning.
            starts = [m.end() for m in _NEXT_SERVER.finditer(url, 0, at)]
            scheme = url.find("://", 0, at)
            spans.append((starts[-1] if starts else scheme + 3 if scheme >= 0 else 0, at))
        boundary = at + 1
    return spans


def redact(url: str) -> str:
    """`url` (one server or a comma-separated list) with every user info masked as
    `***`, for messages and logs."""
    out: list[str] = []
    done = 0
    for start, end in _userinfo_spans(url):
        out.append(url[done:start])
        out.append("***")
        done = end
    out.append(url[done:])
    return ",".join(part.strip() for part in "".join(out).split(","))
