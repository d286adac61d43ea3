#!/usr/bin/env python3
"""Regenerate gateway/field_types.py: the JSON kind of every Falco output field.

Falco's gRPC API sends every output field as text, its http_output as typed JSON.
The kind of each field is fixed by its definition, which this script reads from
the sources Falco 0.43.1 is built from:

- falcosecurity/libs (tag 0.23.2, the version falco's cmake pins):
  userspace/libsinsp/sinsp_filtercheck_*.cpp, each field's
  `{PT_<type>, <flags>, PF_<print format>, "<name>", ...}`, turned into a JSON
  kind the way sinsp_filter_check::rawval_to_json does, and the fields whose
  class overrides extract_as_js (their `case TYPE_...:` labels, mapped to names
  through the enum in the matching .h);
- falcosecurity/plugins: the field tables of the plugins' READMEs
  (`| \\`name\\` | \\`type\\` | ...`): container (tag plugins/container/v0.6.4, which
  Falco 0.43.1 bundles: it defines container.* and k8s.*), cloudtrail, k8saudit;
- falcosecurity/falco (tag 0.43.1): the fields of Falco's own internal alert
  (userspace/falco/event_drops.cpp), all text (`std::to_string`).

Usage (three local clones; `git show` reads each file at the given ref):

    python scripts/gen_field_types.py --libs ~/src/libs --plugins ~/src/plugins \\
        --falco ~/src/falco > gateway/field_types.py
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

LIBS_REF = "0.23.2"
FALCO_REF = "0.43.1"
PLUGINS = {
    "container": "plugins/container/v0.6.4",
    "cloudtrail": "plugins/cloudtrail/v0.17.1",
    "k8saudit": "plugins/k8saudit/v0.18.0",
}

_FIELD = re.compile(
    r"\{\s*(PT_[A-Z0-9_]+)\s*,\s*([A-Z_|()\s]+?)\s*,\s*(PF_[A-Z0-9_]+)\s*,\s*\"([^\"]+)\""
)
_INTS = {
    "PT_INT8", "PT_INT16", "PT_INT32", "PT_INT64", "PT_PID", "PT_FD", "PT_L4PROTO",
    "PT_UINT8", "PT_FLAGS8", "PT_ENUMFLAGS8", "PT_PORT", "PT_UINT16", "PT_FLAGS16",
    "PT_ENUMFLAGS16", "PT_UINT32", "PT_FLAGS32", "PT_ENUMFLAGS32", "PT_UID", "PT_GID",
    "PT_UINT64", "PT_RELTIME", "PT_ABSTIME",
}  # fmt: skip
_STRINGS = {
    "PT_CHARBUF", "PT_FSPATH", "PT_BYTEBUF", "PT_IPV4ADDR", "PT_IPV6ADDR", "PT_IPADDR",
    "PT_IPNET", "PT_FSRELPATH",
}  # fmt: skip
_PLUGIN_KINDS = {
    "string": "str", "uint64": "int", "bool": "bool", "abstime": "int", "reltime": "int",
    "ipaddr": "str", "ipnet": "str",
}  # fmt: skip


def git_show(repo: Path, ref: str, path: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "show", f"{ref}:{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def libs_kind(ptype: str, flags: str, pformat: str) -> str | None:
    """rawval_to_json's JSON kind, or None where it has none (Falco writes null)."""
    if ptype in _INTS:
        # Decimal and id formats are JSON numbers; hex, octal, padded text are strings.
        kind = "int" if pformat in {"PF_DEC", "PF_ID"} else "str" if pformat != "PF_NA" else None
    elif ptype == "PT_DOUBLE":
        kind = "int" if pformat == "PF_DEC" else "float"
    elif ptype == "PT_BOOL":
        kind = "bool"
    elif ptype in _STRINGS:
        kind = "str"
    else:
        return None
    if kind is not None and "EPF_IS_LIST" in flags:
        kind = "list:" + kind
    return kind


def libs_fields(repo: Path, ref: str) -> dict[str, str]:
    listing = subprocess.run(
        ["git", "-C", str(repo), "ls-tree", "--name-only", ref, "userspace/libsinsp/"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    table: dict[str, str] = {}
    for path in sorted(p for p in listing if re.search(r"sinsp_filtercheck_\w+\.cpp$", p)):
        source = git_show(repo, ref, path)
        names: list[str] = []
        for ptype, flags, pformat, name in _FIELD.findall(source):
            names.append(name)
            kind = libs_kind(ptype, flags, pformat)
            # rawstring's "NA" is the internal holder of literal text, not a field.
            if kind is not None and "." in name:
                table[name] = kind
        table.update(_js_overrides(repo, ref, path, source, names))
    return table


def _js_overrides(repo: Path, ref: str, path: str, source: str, names: list[str]) -> dict[str, str]:
    """Fields whose extract_as_js replaces rawval_to_json: the event time (`get_ts()`)
    or a number."""
    body = re.search(r"::extract_as_js\([^)]*\)\s*\{(.*?)\n\}", source, re.S)
    if body is None:
        return {}
    header = git_show(repo, ref, path.removesuffix(".cpp") + ".h")
    enum = {m[0]: int(m[1]) for m in re.findall(r"\b(TYPE_\w+)\s*=\s*(\d+)", header)}
    found: dict[str, str] = {}
    pending: list[str] = []
    for case, ret in re.findall(r"case (TYPE_\w+):|return ([^;]+);", body.group(1)):
        if case:
            pending.append(case)
            continue
        if "nullValue" not in ret:
            for label in pending:
                found[names[enum[label]]] = "ts" if "get_ts()" in ret else "int"
        pending = []
    return found


def plugin_fields(repo: Path, ref: str, plugin: str) -> dict[str, str]:
    table: dict[str, str] = {}
    readme = git_show(repo, ref, f"plugins/{plugin}/README.md")
    for name, ftype in re.findall(r"^\|\s*`([^`]+)`\s*\|\s*`([^`]+)`", readme, re.M):
        base, _, suffix = ftype.partition(" ")
        kind = _PLUGIN_KINDS.get(base)
        if kind is not None:
            table[name] = ("list:" + kind) if suffix == "(list)" else kind
    return table


def falco_internal_fields(repo: Path, ref: str) -> dict[str, str]:
    source = git_show(repo, ref, "userspace/falco/event_drops.cpp")
    assignment = r'output_fields\["(\w+)"\]\s*=\s*std::to_string'
    return dict.fromkeys(re.findall(assignment, source), "str")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--libs", type=Path, required=True, help="clone of falcosecurity/libs")
    parser.add_argument(
        "--plugins", type=Path, required=True, help="clone of falcosecurity/plugins"
    )
    parser.add_argument("--falco", type=Path, required=True, help="clone of falcosecurity/falco")
    args = parser.parse_args(argv)
    table = falco_internal_fields(args.falco, FALCO_REF)
    table.update(libs_fields(args.libs, LIBS_REF))
    for plugin, ref in PLUGINS.items():
        table.update(plugin_fields(args.plugins, ref, plugin))
    origin = ", ".join(f"{ref}" for ref in PLUGINS.values())
    out = [
        '"""The JSON kind of each Falco output field, by name. GENERATED: do not edit.',
        "",
        "Regenerate with scripts/gen_field_types.py (its docstring says how) from",
        f"falcosecurity/libs {LIBS_REF} userspace/libsinsp/sinsp_filtercheck_*.cpp and the",
        "field tables (README.md) of falcosecurity/plugins at",
        f"{origin};",
        "and the fields of Falco's internal alert (falcosecurity/falco",
        f"{FALCO_REF} userspace/falco/event_drops.cpp).",
        "",
        "Kinds: str, int, float, bool, ts (the event time in nanoseconds, whatever the",
        "text form), and list:<kind>.",
        '"""',
        "",
        "FIELD_KINDS: dict[str, str] = {",
        *(f'    "{name}": "{kind}",' for name, kind in sorted(table.items())),
        "}",
    ]
    sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
