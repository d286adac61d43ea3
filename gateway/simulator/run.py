"""`falco-nats-gateway simulate`: emit realistic alerts over Falco's gRPC API and/or http_output."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
import time

from gateway.simulator.alerts import stream
from gateway.simulator.falco_server import FalcoServer
from gateway.simulator.http_client import HttpClient
from gateway.simulator.wire import to_falco_json, to_grpc_response

MODES = ("alternate", "grpc", "http", "both")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="falco-nats-gateway simulate",
        description=(
            "A Falco stand-in: serves Falco 0.43's gRPC outputs API (with Falco's queue "
            "semantics) and posts alerts as Falco's http_output does, so the gateway "
            "can be tried without Falco."
        ),
    )
    parser.add_argument(
        "--grpc-listen",
        default="",
        metavar="ADDRESS",
        help="serve Falco's gRPC API here, e.g. unix:///tmp/falco.sock (unix sockets only)",
    )
    parser.add_argument(
        "--http-url",
        default="",
        metavar="URL",
        help="post alerts here, e.g. http://127.0.0.1:2801/",
    )
    parser.add_argument("--count", type=int, default=16, help="alerts to emit (default 16)")
    parser.add_argument(
        "--interval", type=float, default=0.1, help="seconds between alerts (default 0.1)"
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="alternate",
        help="alternate: one path then the other; both: every alert on both paths (as a Falco "
        "with gRPC and http_output both on); grpc or http: one path only",
    )
    parser.add_argument(
        "--both-every",
        type=int,
        default=0,
        metavar="N",
        help="with --mode alternate, send every Nth alert on both paths too (shows deduplication)",
    )
    parser.add_argument(
        "--hostname", default=socket.gethostname(), help="hostname written into alerts"
    )
    parser.add_argument(
        "--linger",
        type=float,
        default=30.0,
        help="seconds to wait for a gRPC client to take every queued alert before exiting",
    )
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if not args.grpc_listen and not args.http_url:
        print("simulate: give --grpc-listen, --http-url or both", file=sys.stderr)
        return 2
    if args.grpc_listen and not args.grpc_listen.startswith("unix://"):
        print("simulate: --grpc-listen must be a unix:// address", file=sys.stderr)
        return 2
    return asyncio.run(simulate(args))


def _paths(
    mode: str, index: int, grpc_on: bool, http_on: bool, both_every: int = 0
) -> tuple[str, ...]:
    if not grpc_on:
        return ("http",)
    if not http_on:
        return ("grpc",)
    if mode == "alternate":
        if both_every and (index + 1) % both_every == 0:
            return ("grpc", "http")
        return ("grpc",) if index % 2 == 0 else ("http",)
    if mode == "both":
        return ("grpc", "http")
    return (mode,)


async def simulate(args: argparse.Namespace) -> int:
    server = await FalcoServer(args.grpc_listen).start() if args.grpc_listen else None
    client = HttpClient(args.http_url) if args.http_url else None
    failures = 0
    try:
        for index, event in enumerate(stream(args.hostname, args.count)):
            paths = _paths(
                args.mode, index, server is not None, client is not None, args.both_every
            )
            for path in paths:
                if path == "grpc" and server is not None:
                    # A Falco that posts JSON runs with json_output: true, and then
                    # its gRPC output is the same JSON document; alone, Falco's default.
                    server.emit(to_grpc_response(event, json_output=client is not None))
                    note = "queued"
                elif client is not None:
                    try:
                        response = await client.post(to_falco_json(event))
                        note = f"HTTP {response.status}"
                        failures += response.status >= 300
                    except OSError as exc:
                        note = f"failed: {exc}"
                        failures += 1
                print(
                    f"sent via {path:<4} {event.priority.canonical:<13} {event.rule} ({note})",
                    flush=True,
                )
            await asyncio.sleep(args.interval)
        if server is not None:
            deadline = time.monotonic() + args.linger
            # Falco's queue has no "emptied" signal; poll it as Falco's own clients would.
            while len(server.queue) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            if len(server.queue):
                print(
                    f"{len(server.queue)} alerts still queued: no gRPC client took them",
                    file=sys.stderr,
                )
                failures += 1
    finally:
        if client is not None:
            await client.close()
        if server is not None:
            with contextlib.suppress(Exception):
                await server.stop(grace=1.0)
    return 1 if failures else 0
