"""Subject templates: falcosidekick's slugs, placeholders, and the templates refused."""

from __future__ import annotations

import re

import pytest

from gateway.config import load
from gateway.errors import ConfigError
from gateway.event import FalcoEvent, Priority
from gateway.subject import SubjectTemplate, slug


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        # Falco rule names, slugged as falcosidekick's outputs/nats.go does.
        ("Terminal shell in container", "terminal_shell_in_container"),
        ("Read sensitive file untrusted", "read_sensitive_file_untrusted"),
        ("Contact K8S API Server From Container", "contact_k8s_api_server_from_container"),
        ("Falco internal: syscall event drop", "falco_internal_syscall_event_drop"),
        (
            "Redirect STDOUT/STDIN to Network Connection in Container",
            "redirect_stdout_stdin_to_network_connection_in_container",
        ),
        ("  --Leading and trailing!!  ", "leading_and_trailing"),
        ("a...b___c", "a_b_c"),
        ("Write below /etc (rpm)", "write_below_etc_rpm"),
        ("CVE-2024-3094 xz backdoor", "cve_2024_3094_xz_backdoor"),
        # Non-ASCII letters lower-case to letters outside [a-z0-9]: each run is one _.
        ("Exécution suspecte", "ex_cution_suspecte"),
        ("Überwachung Prozess", "berwachung_prozess"),
        ("Доступ к файлу", "_"),
        ("シェル shell 起動", "shell"),
        # Go's ToLower maps U+0130 to "i" and the Kelvin sign to "k".
        ("\u0130stanbul", "istanbul"),
        ("10\u212a", "10k"),
        ("!!!", "_"),
        ("", "_"),
    ],
)
def test_slug_matches_falcosidekick(rule: str, expected: str) -> None:
    assert slug(rule) == expected


def event(**overrides: object) -> FalcoEvent:
    fields: dict[str, object] = {
        "time_ns": 1,
        "priority": Priority.NOTICE,
        "rule": "Terminal shell in container",
        "source": "syscall",
        "hostname": "ip-10-0-0-1.eu-west-1.compute.internal",
    }
    fields.update(overrides)
    return FalcoEvent(**fields)  # type: ignore[arg-type]


def test_default_template_is_falcosidekicks() -> None:
    assert SubjectTemplate("falco.<priority>.<rule>").render(event()) == (
        "falco.notice.terminal_shell_in_container"
    )


@pytest.mark.parametrize("priority", list(Priority))
def test_priority_token_is_the_lowercased_name(priority: Priority) -> None:
    subject = SubjectTemplate("falco.<priority>.<rule>").render(event(priority=priority))
    assert subject == f"falco.{priority.canonical.lower()}.terminal_shell_in_container"


def test_source_and_hostname_tokens_are_sanitised() -> None:
    template = SubjectTemplate("alerts.<hostname>.<source>.<priority>.<rule>")
    assert template.render(event(source="k8s_audit")) == (
        "alerts.ip_10_0_0_1_eu_west_1_compute_internal.k8s_audit.notice.terminal_shell_in_container"
    )
    assert (
        template.render(event(hostname="", source=""))
        == "alerts._._.notice.terminal_shell_in_container"
    )


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("falco.<severity>.<rule>", "unknown placeholder <severity>"),
        ("falco.*.<rule>", "wildcards"),
        ("falco.>", "wildcards"),
        ("falco <rule>", "spaces"),
        ("falco..<rule>", "empty subject token"),
        (".falco.<rule>", "empty subject token"),
        ("falco.<rule>.", "empty subject token"),
        ("falco.<rule", "stray"),
        ("", "empty subject token"),
    ],
)
def test_bad_templates_are_config_errors(template: str, problem: str) -> None:
    # The template says what is wrong; the configuration names the setting.
    with pytest.raises(ValueError, match=re.escape(problem)):
        SubjectTemplate(template)
    with pytest.raises(ConfigError) as caught:
        load({"subject_template": template}, environ={})
    assert caught.value.key == "subject_template"
    assert problem in str(caught.value)
