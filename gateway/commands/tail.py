"""`falco-nats-gateway tail [SUBJECT]`: watch alerts arrive, one readable line each.

What the seed demo did with `nats sub 'falco.>'`, made pleasant: time, priority
(coloured on a terminal), rule, hostname, the path it came by, and Falco's
output text. `--raw` prints each message's data as `nats sub --raw` does;
`--nats` prints each message as `nats sub` does, headers included.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from typing import Any, TextIO

import nats
import orjson
from nats.aio.msg import Msg

from gateway.config import Settings
from gateway.nats_options import connect_options

_COLOURS = {
    "Emergency": "\033[1;97;41m",
    "Alert": "\033[1;91m",
    "Critical": "\033[1;91m",
    "Error": "\033[91m",
    "Warning": "\033[93m",
    "Notice": "\033[96m",
    "Informational": "\033[92m",
    "Debug": "\033[2m",
}
_RESET = "\033[0m"
# Falco starts its output text with the time and the priority, which the line shows already.
_OUTPUT_PREFIX = re.compile(r"^\d{2}:\d{2}:\d{2}\.\d+: \w+ ")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "subject", nargs="?", default="falco.>", help="subject to watch (default falco.>)"
    )
    style = parser.add_mutually_exclusive_group()
    style.add_argument(
        "--raw", action="store_true", help="print each message's JSON, as `nats sub --raw`"
    )
    style.add_argument("--nats", action="store_true", help="print each message as `nats sub` does")
    parser.add_argument("--count", type=int, default=0, metavar="N", help="exit after N messages")
    parser.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour priorities (auto: when stdout is a terminal)",
    )


def format_line(msg: Msg, colour: bool) -> str:
    """One readable line for a message; falls back to the raw data if it is not an alert."""
    try:
        alert: dict[str, Any] = orjson.loads(msg.data)
        if not isinstance(alert, dict):
            raise TypeError
    except (orjson.JSONDecodeError, TypeError):
        return f"{msg.subject}: {msg.data.decode(errors='replace')}"
    priority = str(alert.get("priority", "?"))
    shown = f"{priority:<13}"
    if colour:
        shown = f"{_COLOURS.get(priority, '')}{shown}{_RESET}"
    when = str(alert.get("time", ""))
    when = when[:23].replace("T", " ") if len(when) >= 23 else when
    path = (msg.headers or {}).get("Falco-Gateway-Path", "")
    output = _OUTPUT_PREFIX.sub("", str(alert.get("output", "")))
    host = alert.get("hostname") or "-"
    via = f" [{path}]" if path else ""
    return f"{when} {shown} {alert.get('rule', '?')} @{host}{via}: {output}"


def format_nats_sub(number: int, msg: Msg) -> str:
    lines = [f'[#{number}] Received on "{msg.subject}"']
    lines += [f"{name}: {value}" for name, value in (msg.headers or {}).items()]
    return "\n".join([*lines, "", msg.data.decode(errors="replace"), ""])


async def tail(settings: Settings, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    colour = args.color == "always" or (args.color == "auto" and out.isatty())
    reported: set[str] = set()

    async def quietly(exc: Exception) -> None:
        # nats-py reports every failed attempt; say each kind of trouble once.
        text = f"{type(exc).__name__}: {exc}"
        if text not in reported:
            reported.add(text)
            print(f"tail: NATS: {text} (retrying)", file=sys.stderr)

    nc = await nats.connect(
        **connect_options(settings, "falco-nats-gateway-tail"),
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        error_cb=quietly,
    )
    done = asyncio.Event()
    seen = 0

    async def on_msg(msg: Msg) -> None:
        nonlocal seen
        seen += 1
        if args.raw:
            text = msg.data.decode(errors="replace")
        elif args.nats:
            text = format_nats_sub(seen, msg)
        else:
            text = format_line(msg, colour)
        print(text, file=out, flush=True)
        if args.count and seen >= args.count:
            done.set()

    await nc.subscribe(args.subject, cb=on_msg)
    await nc.flush()
    # As `nats sub` does; on stderr, so --raw output stays pure. Scripts wait for it.
    print(f"Subscribing on {args.subject}", file=sys.stderr, flush=True)
    try:
        await done.wait()
    finally:
        await nc.drain()
    return 0
