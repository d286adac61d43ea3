"""Builds Falco's gRPC stubs from proto/ as part of every install.

All metadata lives in pyproject.toml; this file only hooks scripts/gen_protos.py
into build_py, so `pip install .` and `pip install -e .` from a clean checkout
give a package whose stubs import.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildWithProtos(build_py):
    def run(self) -> None:
        script = HERE / "scripts" / "gen_protos.py"
        spec = importlib.util.spec_from_file_location("gen_protos", script)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.generate(HERE)
        super().run()


cmdclass: dict[str, Any] = {"build_py": BuildWithProtos}
setup(cmdclass=cmdclass)
