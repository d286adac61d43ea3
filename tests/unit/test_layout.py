"""The tests' layout holds: every test sits in a kind's directory, so `pytest -m KIND`
(and `make unit`, `make integration`, `make k8s`) leaves none out unnoticed."""

from __future__ import annotations

import tomllib

from tests.conftest import KINDS, TESTS

ROOT = TESTS.parent


def test_no_test_module_outside_a_kind_directory() -> None:
    assert sorted(p.name for p in TESTS.glob("test_*.py")) == []


def test_every_kind_has_its_directory_and_a_registered_marker() -> None:
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    registered = {line.split(":", 1)[0] for line in options["markers"]}
    for directory, marker in KINDS.items():
        assert (TESTS / directory).is_dir(), directory
        assert marker in registered, marker
