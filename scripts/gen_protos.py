"""Generate the Python stubs of Falco's gRPC API from proto/.

Run by `make proto` and by setup.py during any `pip install`, so a clean
checkout never needs committed generated code. Writes into gateway/falco_pb/:
`*_pb2.py`, `*_pb2_grpc.py`, and typed `.pyi` stubs from mypy-protobuf.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE_DIR = "gateway/falco_pb"


def generate(out_root: Path = ROOT) -> list[Path]:
    """Run protoc on every Falco proto; return the files it wrote."""
    # Imported here so that importing this module (setup.py does) is cheap and
    # only fails where generation is actually attempted without grpcio-tools.
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted((PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    if not protos:
        raise SystemExit(f"no .proto files under {PROTO_ROOT / PACKAGE_DIR}")
    out_dir = out_root / PACKAGE_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*_pb2*.py*"):
        stale.unlink()
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    plugins = [f"--plugin=protoc-gen-{name}={_find_plugin(name)}" for name in ("mypy", "mypy_grpc")]
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        *plugins,
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *(str(p.relative_to(PROTO_ROOT)) for p in protos),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the messages above")
    init = out_dir / "__init__.py"
    if not init.exists():
        init.write_text('"""Generated from proto/ by scripts/gen_protos.py. Do not edit."""\n')
    return sorted(out_dir.glob("*_pb2*.py*"))


def _find_plugin(name: str) -> str:
    # The plugins are console scripts of mypy-protobuf: next to this Python in
    # a virtualenv, elsewhere on PATH in pip's isolated build environment.
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which(f"protoc-gen-{name}", path=search)
    if found is None:
        raise SystemExit(f"protoc-gen-{name} not found: install mypy-protobuf")
    return found


if __name__ == "__main__":
    written = generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
    for path in written:
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
