"""NATS subjects from a template, named exactly as falcosidekick names them.

falcosidekick publishes on `falco.<priority>.<rule>` where `<priority>` is the
lower-cased priority and `<rule>` is the rule lower-cased, each run of
characters outside [a-z0-9] replaced by one `_`, and `_` trimmed at both ends
(outputs/nats.go). `<source>` and `<hostname>` get the same treatment, which
also keeps a hostname's dots from splitting it into several subject tokens.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence

from gateway.event import FalcoEvent, Priority

DEFAULT_TEMPLATE = "falco.<priority>.<rule>"

_SLUG_RUN = re.compile(r"[^a-z0-9]+")
_PLACEHOLDER = re.compile(r"<([^<>]*)>")
# Characters NATS forbids in a published subject: whitespace and the wildcards.
_FORBIDDEN = re.compile(r"[\s*>]")


@functools.lru_cache(maxsize=4096)
def slug(text: str) -> str:
    """falcosidekick's slug; an empty result becomes `_` so the subject stays valid.

    Go's strings.ToLower maps U+0130 (dotted capital I) to a plain `i`, where
    Python's str.lower gives `i` plus a combining dot; map it first to match.
    """
    return _SLUG_RUN.sub("_", text.replace("\u0130", "i").lower()).strip("_") or "_"


_TOKENS: dict[str, Callable[[FalcoEvent], str]] = {
    "priority": lambda e: e.priority.name.lower(),
    "rule": lambda e: slug(e.rule),
    "source": lambda e: slug(e.source),
    "hostname": lambda e: slug(e.hostname),
}


class SubjectTemplate:
    """A parsed subject template such as `falco.<priority>.<rule>`."""

    def __init__(self, template: str) -> None:
        """ValueError saying what is wrong with `template` (the caller names the setting)."""
        self.template = template
        parts: list[str | Callable[[FalcoEvent], str]] = []
        position = 0
        for match in _PLACEHOLDER.finditer(template):
            parts.append(template[position : match.start()])
            name = match.group(1)
            if name not in _TOKENS:
                known = ", ".join(f"<{t}>" for t in _TOKENS)
                raise ValueError(f"unknown placeholder <{name}> in {template!r}; known: {known}")
            parts.append(_TOKENS[name])
            position = match.end()
        parts.append(template[position:])
        literal = _PLACEHOLDER.sub("x", template)
        if "<" in literal or ">" in literal or _FORBIDDEN.search(literal):
            raise ValueError(f"{template!r} has spaces, wildcards or a stray '<' or '>'")
        if any(token == "" for token in literal.split(".")):
            raise ValueError(f"{template!r} has an empty subject token (leading, trailing or '..')")
        self._parts = tuple(p for p in parts if p != "")

    def render(self, event: FalcoEvent) -> str:
        return "".join(p if isinstance(p, str) else p(event) for p in self._parts)

    def uncaptured(self, patterns: Sequence[str]) -> str | None:
        """A subject this template renders that none of `patterns` (a stream's
        subjects) captures, or None: JetStream would have no stream to take it."""
        for priority in Priority:
            sample = self.render(FalcoEvent(0, priority, "rule", source="syscall", hostname="host"))
            if not any(subject_matches(pattern, sample) for pattern in patterns):
                return sample
        return None

    def __repr__(self) -> str:
        return f"SubjectTemplate({self.template!r})"


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` matches one token, a final `>` one or more."""
    want, have = pattern.split("."), subject.split(".")
    for index, part in enumerate(want):
        if part == ">":
            return len(have) > index
        if index >= len(have) or (part != "*" and part != have[index]):
            return False
    return len(want) == len(have)
