"""A plain `pip install .` from a clean checkout gives a package whose stubs import."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def clean_checkout(target: Path) -> Path:
    """The project's files as a fresh clone would have them: no generated stubs."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in listed:
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    assert not list((target / "gateway" / "falco_pb").glob("*_pb2.py")), (
        "stubs must not be committed"
    )
    return target


def test_wheel_from_clean_checkout_has_importable_typed_stubs(tmp_path: Path) -> None:
    source = clean_checkout(tmp_path / "src")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "-w",
            str(tmp_path / "dist"),
            ".",
        ],
        cwd=source,
        check=True,
        timeout=600,
    )
    (wheel,) = (tmp_path / "dist").glob("falco_nats_gateway-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for stem in ("outputs", "schema", "version"):
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi"):
            assert f"gateway/falco_pb/{stem}{suffix}" in names
    assert "gateway/py.typed" in names
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(wheel).extractall(unpacked)
    probe = (
        "import gateway.falco_pb.outputs_pb2 as o, gateway.falco_pb.outputs_pb2_grpc as g;"
        "print(o.response.DESCRIPTOR.full_name, g.serviceStub.__name__, o.__file__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={"PYTHONPATH": str(unpacked), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    name, stub, module_file = out.split()
    assert (name, stub) == ("falco.outputs.response", "serviceStub")
    assert Path(module_file).is_relative_to(unpacked), "imported the checkout, not the wheel"


def test_generated_stubs_match_the_protos(tmp_path: Path) -> None:
    """The stubs in this checkout are what `make proto` produces from proto/ now."""
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), str(tmp_path)], check=True
    )
    for fresh in (tmp_path / "gateway" / "falco_pb").glob("*_pb2*.py*"):
        current = ROOT / "gateway" / "falco_pb" / fresh.name
        assert current.read_bytes() == fresh.read_bytes(), (
            f"{current.name} is stale: run make proto"
        )
