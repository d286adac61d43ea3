"""A gateway without a JetStream mode, as it was before that mode existed: it refuses
the JetStream flags the way argparse does (exit code 2) and is the real gateway
otherwise."""

from __future__ import annotations

import sys

if "--jetstream" in sys.argv:
    print("falco-nats-gateway: error: unrecognized arguments: --jetstream", file=sys.stderr)
    raise SystemExit(2)

from gateway.cli import main

raise SystemExit(main(sys.argv[1:]))
