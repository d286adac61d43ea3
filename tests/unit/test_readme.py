"""The falcosidekick compatibility table (docs/falcosidekick.md, linked from the README)
tells the truth about every falcosidekick setting the gateway knows, and about what differs
(issue 13, point 10)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import config

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
COMPATIBILITY = (ROOT / "docs" / "falcosidekick.md").read_text(encoding="utf-8")
HEADING = "## Compared with falcosidekick's NATS output"
SECTION = COMPATIBILITY.partition(HEADING)[2].partition("\n## ")[0]


def test_the_readme_links_the_table() -> None:
    assert HEADING in COMPATIBILITY
    assert "(docs/falcosidekick.md)" in README


@pytest.mark.parametrize(
    "name", sorted(config.FALCOSIDEKICK_ENV) + sorted(config.FALCOSIDEKICK_REFUSED_ENV)
)
def test_every_falcosidekick_setting_has_a_row(name: str) -> None:
    assert f"`{name}`" in SECTION


@pytest.mark.parametrize("name", sorted(config.FALCOSIDEKICK_REFUSED_ENV))
def test_every_refused_setting_is_marked_refused(name: str) -> None:
    row = next(line for line in SECTION.splitlines() if f"`{name}`" in line)
    assert "| refused: " in row


def test_truncation_is_described_as_it_is() -> None:
    # The gateway marks cut values `[truncated]`; falcosidekick cuts to 507 + `[...]`.
    assert "as falcosidekick does" not in README
    assert "as falcosidekick does" not in COMPATIBILITY
    row = next(line for line in SECTION.splitlines() if "`[...]`" in line)
    assert "507" in row
    assert "`[truncated]`" in row
    assert "differs" in row
