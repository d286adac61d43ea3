"""The container image, checked without a Docker engine: the Dockerfile parsed for what the
image must be (multi-stage, slim, stubs generated in the build, non-root, nothing of the build
in the final stage, a health check on /healthz), hadolint, and the build context that
.dockerignore leaves."""

from __future__ import annotations

import fnmatch
import json
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.k8s.support import CHART, ROOT, dev_tool

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass
class Stage:
    base: str
    name: str = ""
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base}: no {keyword}"
        return found[-1]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, each a list of (KEYWORD, arguments); continuation
    lines are joined and comments dropped, as Docker's parser does."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if logical and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        keyword, _, rest = logical.partition(" ")
        keyword, rest = keyword.upper(), " ".join(rest.split())
        logical = ""
        if keyword == "FROM":
            base, _, name = rest.partition(" AS ")
            for arg, default in args.items():
                base = base.replace(f"${{{arg}}}", default)
            stages.append(Stage(base=base, name=name.strip().lower()))
        elif not stages and keyword == "ARG":
            key, _, default = rest.partition("=")
            args[key] = default
        else:
            assert stages, f"{keyword} before any FROM"
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))[1]


def test_multi_stage_on_a_slim_python_base() -> None:
    build, final = stages()
    assert build.name == "build"
    assert build.base == final.base
    assert final.base.startswith("python:3.11-slim")


def test_build_stage_installs_the_gateway_generating_its_stubs() -> None:
    build = stages()[0]
    copied = " ".join(build.all("COPY"))
    for needed in ("pyproject.toml", "setup.py", "proto/", "scripts/gen_protos.py", "gateway/"):
        assert needed in copied
    run = " ".join(build.all("RUN"))
    assert "pip install ." in run
    # The generated stubs must import in the image (they are never copied from the host).
    assert "gateway.falco_pb.outputs_pb2_grpc" in run


def test_final_stage_holds_only_the_built_virtualenv() -> None:
    final = stages()[1]
    copies = final.all("COPY")
    assert copies, "the final stage copies the virtualenv"
    assert all(c.startswith("--from=build ") for c in copies)
    for command in final.all("RUN"):
        for tool in ("pip", "apt-get", "apk", "gcc", "make", "protoc", "grpc_tools"):
            assert tool not in command.split(), f"{tool} in the final stage: {command}"
    # protoc is needed to make the stubs, not to run them: it is a build requirement of the
    # package (pyproject's [build-system]), never a dependency installed into the virtualenv.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert not any(d.startswith("grpcio-tools") for d in pyproject["project"]["dependencies"])
    assert any(d.startswith("grpcio-tools") for d in pyproject["build-system"]["requires"])


def test_runs_as_a_numeric_non_root_user_matching_the_chart() -> None:
    final = stages()[1]
    user = final.last("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit()
    assert int(uid) != 0
    assert gid.isdigit()
    assert int(gid) != 0
    user_index = final.instructions.index(("USER", user))
    entry_index = final.instructions.index(("ENTRYPOINT", final.last("ENTRYPOINT")))
    assert user_index < entry_index
    chart = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert chart["podSecurityContext"]["runAsUser"] == int(uid)
    assert chart["podSecurityContext"]["runAsGroup"] == int(gid)


def test_healthcheck_asks_healthz_and_entrypoint_is_the_gateway() -> None:
    final = stages()[1]
    healthcheck = final.last("HEALTHCHECK")
    assert "CMD" in healthcheck
    assert "/healthz" in healthcheck
    assert "GATEWAY_LISTEN" in healthcheck  # follows the configured port
    assert json.loads(final.last("ENTRYPOINT")) == ["falco-nats-gateway"]
    assert final.last("EXPOSE") == "2801"


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run([dev_tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_hadolint_is_not_vacuous(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n", encoding="utf-8")
    result = subprocess.run([dev_tool("hadolint"), str(bad)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # latest tag


# --- the build context ------------------------------------------------------------------------


def in_context(relative: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps `relative` in the context: the last matching pattern wins,
    `!` lets back in, a pattern that matches a folder covers what is under it."""
    kept = True
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.rstrip("/")
        regex_body = body.replace("**/", "*")
        if any(fnmatch.fnmatchcase(p, regex_body) for p in prefixes):
            kept = negate
    return kept


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_context_holds_what_the_build_copies_and_nothing_generated() -> None:
    patterns = dockerignore_patterns()
    for needed in (
        "pyproject.toml",
        "setup.py",
        "README.md",
        "proto/gateway/falco_pb/outputs.proto",
        "scripts/gen_protos.py",
        "gateway/cli.py",
        "gateway/falco_pb/__init__.py",
    ):
        assert in_context(needed, patterns), needed
    for left_out in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/integration/test_cli.py",
        "charts/falco-nats-gateway/values.yaml",
        "gateway/falco_pb/outputs_pb2.py",
        "gateway/falco_pb/outputs_pb2_grpc.pyi",
        "gateway/__pycache__/cli.cpython-311.pyc",
    ):
        assert not in_context(left_out, patterns), left_out
    # Every file the build stage copies exists in the repository.
    for copy in stages()[0].all("COPY"):
        *sources, _destination = copy.split()
        for source in sources:
            assert (ROOT / source).exists(), source
