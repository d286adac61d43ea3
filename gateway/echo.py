"""How much of an input an error message or a log line may quote.

A sender controls what it sends: a 100 KB priority or time text quoted whole
would make every answer and log line about it 100 KB. Messages quote a bounded
prefix and say how long the whole was.
"""

from __future__ import annotations

ECHO_CHARS = 64


def echo(text: str, limit: int = ECHO_CHARS) -> str:
    """`repr(text)`, or the repr of its first `limit` characters and the full length."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"
