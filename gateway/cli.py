"""Command line: `falco-nats-gateway [run] [flags]` and `falco-nats-gateway simulate`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Coroutine
from typing import Any

from gateway import __version__, config
from gateway.errors import ConfigError, NatsPyMismatch, StreamError
from gateway.logs import log, setup_logging

LOG = logging.getLogger("gateway")

_EPILOG = """\
Every setting can also come from a YAML file (--config, keys as in the table
below without the dashes: nats_url, listen, ...) and from an environment
variable GATEWAY_<KEY> (GATEWAY_NATS_URL, GATEWAY_LISTEN, ...). falcosidekick's
names are accepted too: NATS_HOSTPORT, NATS_SUBJECTTEMPLATE, NATS_MINIMUMPRIORITY,
LISTENADDRESS, LISTENPORT, CUSTOMFIELDS, CUSTOMTAGS; a falcosidekick setting the
gateway does not implement (TEMPLATEDFIELDS, NATS_MUTUALTLS, ...) stops start-up
with what to use instead. Flags win over the environment, which wins over the file.

examples:
  falco-nats-gateway --nats-url nats://nats:4222
  falco-nats-gateway --falco-grpc unix:///run/falco/falco.sock --minimum-priority notice
  falco-nats-gateway simulate --http-url http://127.0.0.1:2801/ --count 5

other commands:
  tail        print alerts as they arrive on NATS (tail --help)
  check       validate the configuration and try every link (takes the flags above)
  simulate    a Falco stand-in that emits alerts over gRPC and HTTP (simulate --help)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="falco-nats-gateway",
        description=(
            "Carries Falco alerts onto NATS subjects (falco.<priority>.<rule>, falcosidekick's "
            "names and payload), from Falco's gRPC outputs API and from its http_output."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE", help="YAML file of settings")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    defaults = config.Settings()
    for key, about in config.SETTINGS.items():
        default = getattr(defaults, key)
        is_bool = isinstance(default, bool)
        bounds = "" if about.low is None and about.high is None else f"; {_bounds(about)}"
        parser.add_argument(
            "--" + key.replace("_", "-"),
            dest=key,
            # A bare `--jetstream` means true; `--jetstream false` also works.
            nargs="?" if is_bool else None,
            const="true" if is_bool else None,
            metavar=config.metavar(key),
            # argparse formats help with %: a literal one (custom_fields' %VAR) is doubled.
            help=f"{about.help} (default: {default!r}{bounds}; env {config.env_name(key)})".replace(
                "%", "%%"
            ),
        )
    return parser


def _bounds(about: config.About) -> str:
    if about.high is None:
        return f"at least {about.low}"
    if about.low is None:
        return f"at most {about.high}"
    return f"{about.low} to {about.high}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv and argv[0] in {"run", "simulate", "tail", "check"} else "run"
    if argv[:1] == [command]:
        argv = argv[1:]
    if command in {"simulate", "tail"}:
        return _SUBCOMMANDS[command](argv)
    parser = build_parser()
    if command == "check":
        parser.prog = "falco-nats-gateway check"
        parser.description = (
            "Validate the configuration and try every link; non-zero exit on a problem."
        )
    args = parser.parse_args(argv)
    settings = _settings(args)
    if settings is None:
        return 2
    if command == "check":
        from gateway.commands.check import run_checks

        return asyncio.run(run_checks(settings))
    return _serve(settings)


def _serve(settings: config.Settings) -> int:
    """Run the gateway until SIGTERM or SIGINT; the exit code."""
    setup_logging(settings.log_level, settings.log_format)
    from gateway.app import Gateway

    async def serve() -> None:
        gateway = Gateway(settings)
        gateway.install_signal_handlers()
        await gateway.run()

    try:
        _run(serve())
    except ConfigError as exc:
        print(f"falco-nats-gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    except (StreamError, NatsPyMismatch) as exc:
        print(f"falco-nats-gateway: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        log(logging.ERROR, "cannot start", LOG, error=str(exc))
        return 1
    return 0


def _settings(args: argparse.Namespace) -> config.Settings | None:
    flags = {k: v for k, v in vars(args).items() if k in config.SETTINGS}
    try:
        return config.load(flags, args.config)
    except ConfigError as exc:
        print(f"falco-nats-gateway: configuration error: {exc}", file=sys.stderr)
        return None


def _tail(argv: list[str]) -> int:
    from gateway.commands import tail

    parser = argparse.ArgumentParser(
        prog="falco-nats-gateway tail",
        description="Print alerts as they arrive on NATS, one readable line each.",
    )
    parser.add_argument(
        "--config", metavar="FILE", help="YAML file of settings (for the NATS options)"
    )
    parser.add_argument(
        "--nats-url", dest="nats_url", metavar="URL[,URL...]", help=config.SETTINGS["nats_url"].help
    )
    tail.add_arguments(parser)
    args = parser.parse_args(argv)
    settings = _settings(args)
    if settings is None:
        return 2
    try:
        return asyncio.run(tail.tail(settings, args))
    except KeyboardInterrupt:
        return 0


def _simulate(argv: list[str]) -> int:
    from gateway.simulator.run import main as simulate_main

    return simulate_main(argv)


_SUBCOMMANDS = {"simulate": _simulate, "tail": _tail}


def _run(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        asyncio.run(main)
        return
    uvloop.run(main)
