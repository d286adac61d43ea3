"""scripts/minikube-demo.sh without a cluster: shellcheck, its --dry-run plan (order of steps,
values files, the subject it waits on), its prerequisite messages, and a run against stand-ins
for minikube, kubectl and helm that proves the plan is what a run executes and that the run
judges the alert correctly."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.k8s.support import DEPLOY, ROOT, SCRIPT, dev_tool

BASH = shutil.which("bash") or "/bin/bash"
SUBJECT = "falco.notice.terminal_shell_in_container"
# The NATS chart the demo installs, the one deploy/nats-values.yaml is checked against.
NATS_CHART_VERSION = "2.14.2"
CLUSTER_TOOLS = ("minikube", "kubectl", "helm")

Command = list[str]


def run_demo(
    *args: str, path: str | None = None, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    # A clean environment: a developer's MINIKUBE_PROFILE or KEEP must not change the plan.
    env = {
        "PATH": path if path is not None else os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "LC_ALL": "C",
        **(extra_env or {}),
    }
    return subprocess.run(
        [BASH, str(SCRIPT), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )


def planned_commands(output: str) -> list[Command]:
    """The `+ ...` lines of the script's output, as argument lists. A pipe to grep (a readiness
    check) and a trailing `&` (the background subscriber) are dropped; a command given to
    script(1) for a terminal is unwrapped."""
    commands: list[Command] = []
    for line in output.splitlines():
        if not line.startswith("+ "):
            continue
        words = shlex.split(line[2:])
        if "|" in words:
            words = words[: words.index("|")]
        if words[-1:] == ["&"]:
            words = words[:-1]
        if words[:3] == ["env", "SHELL=/bin/sh", "script"]:
            words = shlex.split(words[words.index("-c") + 1])
        commands.append(words)
    return commands


def cluster_commands(commands: list[Command]) -> list[Command]:
    return [c for c in commands if c[0] in CLUSTER_TOOLS]


def index_of(commands: list[Command], *words: str) -> int:
    """Index of the first command holding all `words` (in any position)."""
    for i, command in enumerate(commands):
        if all(w in command for w in words):
            return i
    raise AssertionError(f"no command with {words}:\n" + "\n".join(map(shlex.join, commands)))


def helm_install(commands: list[Command], release: str) -> Command:
    for command in commands:
        installs = command[0] == "helm" and "--install" in command
        if installs and command[command.index("--install") + 1] == release:
            return command
    raise AssertionError(f"no helm upgrade --install {release}")


def option(command: Command, name: str) -> str:
    return command[command.index(name) + 1]


def set_values(command: Command) -> dict[str, str]:
    pairs = [command[i + 1] for i, word in enumerate(command) if word == "--set"]
    return dict(pair.split("=", 1) for pair in pairs)


# --- static checks ----------------------------------------------------------------------------


def test_shellcheck_passes() -> None:
    result = subprocess.run(
        [dev_tool("shellcheck"), "--severity=style", str(SCRIPT)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_script_is_executable_and_strict() -> None:
    assert os.access(SCRIPT, os.X_OK)
    assert "set -euo pipefail" in SCRIPT.read_text(encoding="utf-8")


# --- the dry-run plan -------------------------------------------------------------------------


@pytest.mark.parametrize("generation", ["0.43", "0.44"])
def test_dry_run_plans_the_whole_chain_in_order(generation: str) -> None:
    result = run_demo("--dry-run", "--falco", generation)
    assert result.returncode == 0, result.stderr
    commands = planned_commands(result.stdout)
    steps = [
        index_of(commands, "minikube", "start"),
        index_of(commands, "minikube", "image", "build"),
        index_of(commands, "helm", "repo", "add", "falcosecurity"),
        index_of(commands, "helm", "upgrade", "nats"),
        index_of(commands, "helm", "upgrade", "falco-nats-gateway"),
        index_of(commands, "helm", "upgrade", "falcosecurity/falco"),
        index_of(commands, "kubectl", "rollout", "status"),
        index_of(commands, "kubectl", "exec", "--", "python"),  # GET /healthz
        index_of(commands, "kubectl", "deploy/nats-box", "nats", "sub"),
        index_of(commands, "kubectl", "apply", "-f", str(DEPLOY / "demo-nginx.yaml")),
        index_of(commands, "kubectl", "exec", "-it", "nginx"),
        index_of(commands, "minikube", "delete"),
    ]
    assert steps == sorted(steps), "\n".join(map(shlex.join, commands))
    # The subscriber starts before the trigger, and listens on the seed's subject, once.
    subscriber = commands[index_of(commands, "nats", "sub")]
    assert subscriber[subscriber.index("sub") + 1 :] == [SUBJECT, "--count=1"]
    assert subscriber[subscriber.index("timeout") + 1] == "120"
    assert f"alert expected on {SUBJECT}" in result.stdout
    assert result.stdout.rstrip().endswith("+ minikube delete -p falco-nats-demo")


def test_dry_run_043_installs_chart_8_0_5_with_grpc_and_waits_for_the_grpc_link() -> None:
    result = run_demo("--dry-run", "--falco", "0.43")
    commands = planned_commands(result.stdout)
    falco = helm_install(commands, "falco")
    assert option(falco, "--version") == "8.0.5"
    assert option(falco, "--values") == str(DEPLOY / "falco-0.43-values.yaml")
    gateway = helm_install(commands, "falco-nats-gateway")
    assert option(gateway, "--values") == str(DEPLOY / "gateway-0.43-values.yaml")
    assert "falco-grpc connected" in result.stdout
    assert index_of(commands, "rollout", "status", "daemonset/falco-nats-gateway") >= 0


def test_dry_run_044_installs_chart_9_http_only() -> None:
    result = run_demo("--dry-run", "--falco=0.44")
    commands = planned_commands(result.stdout)
    falco = helm_install(commands, "falco")
    assert option(falco, "--version").lstrip("^~").split(".")[0] == "9"
    assert option(falco, "--values") == str(DEPLOY / "falco-0.44-values.yaml")
    gateway = helm_install(commands, "falco-nats-gateway")
    assert option(gateway, "--values") == str(DEPLOY / "gateway-0.44-values.yaml")
    assert "falco-grpc connected" not in result.stdout
    assert index_of(commands, "rollout", "status", "deployment/falco-nats-gateway") >= 0


def test_dry_run_installs_nats_with_its_values_and_waits_on_every_release() -> None:
    commands = planned_commands(run_demo("--dry-run").stdout)
    nats = helm_install(commands, "nats")
    assert option(nats, "--values") == str(DEPLOY / "nats-values.yaml")
    assert option(nats, "--namespace") == "nats"
    for release in ("nats", "falco-nats-gateway", "falco"):
        assert "--wait" in helm_install(commands, release)


def test_the_gateway_runs_the_image_built_inside_minikube() -> None:
    commands = planned_commands(run_demo("--dry-run").stdout)
    build = commands[index_of(commands, "minikube", "image", "build")]
    assert build[-1] == str(ROOT)
    settings = set_values(helm_install(commands, "falco-nats-gateway"))
    assert option(build, "-t") == f"{settings['image.repository']}:{settings['image.tag']}"
    assert settings["image.pullPolicy"] == "Never"


def test_every_cluster_command_names_the_demo_profile() -> None:
    result = run_demo("--dry-run", "--profile", "demo-x", "--driver", "virtualbox")
    commands = planned_commands(result.stdout)
    start = commands[index_of(commands, "minikube", "start")]
    assert "--driver=virtualbox" in start
    for command in cluster_commands(commands):
        if command[:3] == ["helm", "repo", "add"] or command[:3] == ["helm", "repo", "update"]:
            continue  # local repository list, no cluster
        if command[:2] == ["minikube", "version"]:
            continue  # the binary's own version, no cluster
        context = {"kubectl": "--context", "helm": "--kube-context", "minikube": "-p"}
        assert option(command, context[command[0]]) == "demo-x", shlex.join(command)


def test_keep_leaves_the_cluster_alone() -> None:
    result = run_demo("--dry-run", extra_env={"KEEP": "1"})
    assert not [c for c in planned_commands(result.stdout) if c[:2] == ["minikube", "delete"]]
    assert "KEEP=1" in result.stdout


def test_dry_run_runs_nothing(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in (*CLUSTER_TOOLS, "script"):
        stub = fake / tool
        stub.write_text(f'#!/bin/sh\necho "$0 $*" >> {log}\n', encoding="utf-8")
        stub.chmod(0o755)
    result = run_demo("--dry-run", path=f"{fake}{os.pathsep}{os.environ['PATH']}")
    assert result.returncode == 0, result.stderr
    assert not log.exists(), log.read_text(encoding="utf-8")
    assert "going on without them" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--falco", "0.45"], "use 0.43 (gRPC + HTTP) or 0.44 (HTTP only)"),
        (["--bogus"], "unknown argument"),
        (["--timeout", "soon"], "not a whole number of seconds"),
    ],
)
def test_bad_arguments_stop_before_anything_runs(args: list[str], message: str) -> None:
    result = run_demo(*args, "--dry-run")
    assert result.returncode == 2
    assert message in result.stderr
    assert "+ " not in result.stdout


def test_missing_prerequisites_are_named_one_by_one(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_demo(path=str(empty))
    assert result.returncode == 1
    for tool in CLUSTER_TOOLS:
        assert f"minikube-demo: {tool} is required: http" in result.stderr
    # Without a terminal the shell in the pod needs script(1) for one.
    assert "minikube-demo: script is required" in result.stderr
    assert "+ " not in result.stdout


# --- a run against stand-ins ------------------------------------------------------------------

ALERT = {
    "uuid": "7c308ccb-c498-5dd7-aead-a26ff1b65fc8",
    "output": "Notice A shell was spawned in a container with an attached terminal",
    "priority": "Notice",
    "rule": "Terminal shell in container",
    "time": "2026-11-27T03:00:00.000000000Z",
    "output_fields": {"k8s.pod.name": "nginx", "proc.tty": 34816},
    "source": "syscall",
    "hostname": "falco-nats-demo",
}

# Stands in for minikube, kubectl, helm and script(1): logs its argv (NUL-separated, one call
# per line), answers the few questions the script asks, and runs what script(1) is given.
STUB = r"""#!/bin/sh
{ printf '%s\0' "${0##*/}" "$@"; printf '\n'; } >>"$FAKE_LOG"
case "${0##*/} $*" in
    script*)
        while [ "$1" != -c ]; do shift; done
        exec /bin/sh -c "$2" ;;
    "minikube version"*) echo "${FAKE_MINIKUBE_VERSION:-v1.38.0}" ;;
    "minikube status"*)  # no such profile, unless the test says which state it is in
        [ -n "${FAKE_HOST:-}" ] || exit 7
        echo "$FAKE_HOST" ;;
    kubectl*" nats sub "*) cat "$FAKE_SUB_OUTPUT" ;;
    kubectl*" python "*) echo '{"status": "ok"}' ;;
    kubectl*" logs "*) echo 'level=info logger=gateway.grpc msg="falco-grpc connected"' ;;
esac
"""


def fake_tools(tmp_path: Path, subscriber_output: str) -> dict[str, str]:
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in (*CLUSTER_TOOLS, "script"):
        stub = fake / tool
        stub.write_text(STUB, encoding="utf-8")
        stub.chmod(0o755)
    sub_output = tmp_path / "sub.out"
    sub_output.write_text(subscriber_output, encoding="utf-8")
    return {
        "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}",
        "FAKE_LOG": str(tmp_path / "calls.log"),
        "FAKE_SUB_OUTPUT": str(sub_output),
    }


def logged_calls(env: dict[str, str]) -> list[Command]:
    text = Path(env["FAKE_LOG"]).read_text(encoding="utf-8")
    return [record.split("\0") for record in text.split("\0\n") if record]


def nats_sub_output(path: str, alert: dict[str, Any]) -> str:
    # What `nats sub` prints: its log line, then each message with its headers.
    return (
        f"03:00:00 Subscribing on {SUBJECT}\n"
        f'[#1] Received on "{SUBJECT}"\n'
        f"Nats-Msg-Id: {alert['uuid']}\n"
        f"Falco-Gateway-Path: {path}\n\n"
        f"{json.dumps(alert, separators=(',', ':'))}\n\n"
    )


def test_a_run_executes_exactly_the_dry_run_plan_and_reports_the_path(tmp_path: Path) -> None:
    env = fake_tools(tmp_path, nats_sub_output("grpc", ALERT))
    result = run_demo("--falco", "0.43", path=env.pop("PATH"), extra_env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"rule":"Terminal shell in container"' in result.stdout
    assert "delivered by Falco's gRPC outputs API" in result.stdout
    executed = cluster_commands(logged_calls(env))
    planned = cluster_commands(planned_commands(run_demo("--dry-run", "--falco", "0.43").stdout))
    assert executed == planned
    assert executed[-1] == ["minikube", "delete", "-p", "falco-nats-demo"]


def test_a_run_reports_the_http_path_and_keeps_the_cluster(tmp_path: Path) -> None:
    env = fake_tools(tmp_path, nats_sub_output("http", ALERT))
    result = run_demo("--falco", "0.44", path=env.pop("PATH"), extra_env={**env, "KEEP": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "delivered by Falco's http_output" in result.stdout
    assert not [c for c in logged_calls(env) if c[:2] == ["minikube", "delete"]]


def test_a_run_fails_when_the_alert_does_not_arrive(tmp_path: Path) -> None:
    other = {**ALERT, "rule": "Read sensitive file untrusted"}
    env = fake_tools(tmp_path, nats_sub_output("http", other))
    result = run_demo("--falco", "0.44", path=env.pop("PATH"), extra_env=env)
    assert result.returncode == 1
    assert f'FAILED: no "Terminal shell in container" alert on {SUBJECT}' in result.stderr
    # The clean-up runs on failure too.
    assert logged_calls(env)[-1] == ["minikube", "delete", "-p", "falco-nats-demo"]


def test_a_running_profile_is_reused_and_only_the_demos_releases_removed(tmp_path: Path) -> None:
    env = fake_tools(tmp_path, nats_sub_output("http", ALERT))
    result = run_demo(
        "--falco", "0.44", path=env.pop("PATH"), extra_env={**env, "FAKE_HOST": "Running"}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    calls = logged_calls(env)
    assert not [c for c in calls if c[0] == "minikube" and c[1] in {"start", "delete"}]
    uninstalled = [c[c.index("uninstall") + 1] for c in calls if "uninstall" in c]
    assert sorted(uninstalled) == ["falco", "falco-nats-gateway", "nats"]
    assert [c for c in calls if c[-4:-2] == ["namespace", "falco-nats-demo"]]


def test_minikube_137_with_a_vm_driver_stops_before_starting_and_says_what_to_do(
    tmp_path: Path,
) -> None:
    env = fake_tools(tmp_path, nats_sub_output("grpc", ALERT))
    result = run_demo(
        "--driver",
        "kvm2",
        path=env.pop("PATH"),
        extra_env={**env, "FAKE_MINIKUBE_VERSION": "v1.37.0"},
    )
    assert result.returncode == 1
    assert "minikube v1.37.0 boots the kvm2 VM from an ISO whose kernel has no BTF" in result.stderr
    assert "kubernetes/minikube issue 21788" in result.stderr
    assert "Upgrade minikube to 1.38 or later" in result.stderr
    assert "--driver docker" in result.stderr
    calls = logged_calls(env)
    # Nothing started, so nothing deleted.
    assert not [c for c in calls if c[0] == "minikube" and c[1] in {"start", "delete"}]


def test_minikube_137_on_the_hosts_kernel_or_138_goes_ahead(tmp_path: Path) -> None:
    for args, version in ((["--driver", "docker"], "v1.37.0"), (["--driver", "kvm2"], "v1.38.1")):
        run_dir = tmp_path / version / args[1]
        run_dir.mkdir(parents=True)
        env = fake_tools(run_dir, nats_sub_output("grpc", ALERT))
        result = run_demo(
            *args, path=env.pop("PATH"), extra_env={**env, "FAKE_MINIKUBE_VERSION": version}
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert [c for c in logged_calls(env) if c[:2] == ["minikube", "start"]]


def test_the_minikube_version_is_asked_before_a_profile_is_started() -> None:
    commands = planned_commands(run_demo("--dry-run").stdout)
    assert index_of(commands, "minikube", "version") < index_of(commands, "minikube", "start")


def test_nats_is_installed_from_the_pinned_2x_chart() -> None:
    nats = helm_install(planned_commands(run_demo("--dry-run").stdout), "nats")
    assert option(nats, "--version") == NATS_CHART_VERSION
