"""Certificate files, checked at start-up so a bad one is named before any handshake fails.

OpenSSL's own errors ("PEM lib", "KEY_VALUES_MISMATCH") name neither the file
nor the setting; these checks read each file on its own first, so the error
says which setting and which file is wrong.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from gateway.errors import ConfigError


def read_file(key: str, path: str) -> bytes:
    """The bytes of the file a setting names; ConfigError naming both when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror or exc}") from None


def check_ca(key: str, path: str) -> None:
    """`path` holds at least one PEM certificate usable as a trust anchor."""
    data = read_file(key, path)
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise ConfigError(key, f"{path} holds no PEM certificate")
    try:
        ssl.create_default_context().load_verify_locations(cadata=data.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(key, f"{path} is not a valid PEM certificate: {_reason(exc)}") from None


def check_pair(cert_key: str, cert: str, key_key: str, key: str) -> None:
    """A certificate (chain) and its private key: both readable, PEM, and of one key pair."""
    check_ca(cert_key, cert)
    key_data = read_file(key_key, key)
    if b"PRIVATE KEY-----" not in key_data:
        raise ConfigError(key_key, f"{key} holds no PEM private key")
    if b"ENCRYPTED" in key_data:
        raise ConfigError(key_key, f"{key} is encrypted; give the key without a passphrase")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        # An empty password: an encrypted key fails here instead of prompting on a TTY.
        context.load_cert_chain(cert, key, password=b"")
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(
                key_key, f"{key} is not the private key of the certificate {cert} ({cert_key})"
            ) from None
        raise ConfigError(key_key, f"{key} cannot be used with {cert}: {_reason(exc)}") from None


def check_readable(key: str, path: str) -> None:
    if not Path(path).is_file() or not os.access(path, os.R_OK):
        raise ConfigError(key, f"cannot read {path}")


def client_context(ca: str = "", cert: str = "", key: str = "") -> ssl.SSLContext:
    """A client context that verifies the server (with `ca`, else the system's CAs) and,
    given `cert` and `key`, presents a client certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert:
        context.load_cert_chain(cert, key, password=b"")
    return context


def _reason(exc: Exception) -> str:
    return str(getattr(exc, "reason", None) or exc)
