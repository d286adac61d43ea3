"""The benchmark as a whole: its phases in order, each isolated from the others'
failures, and how busy the rest of the machine was while each ran.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import nats
import nats.errors

from bench.procs import ChildFailed, MachineClock
from bench.scenarios.gateway_on_nats import GatewayOnNats
from bench.scenarios.memory import Memory
from bench.scenarios.profiling import Profiling

PHASES = ("http-ceilings", "grpc-ceiling", "core", "jetstream", "memory")
# Not run unless asked for: they answer questions about the figures, and take time.
EXTRA_PHASES = ("memory-nodedup", "profile")
# Other work on the machine above this share of its CPU makes a phase's figures suspect.
BACKGROUND_WARNING = 0.03


class Bench(GatewayOnNats, Memory, Profiling):
    """Every phase, run in the order asked for."""

    async def run(self, phases: Sequence[str]) -> None:
        steps = {
            "http-ceilings": self.http_ceilings,
            "grpc-ceiling": self.grpc_ceiling,
            "core": self.core,
            "jetstream": self.jetstream,
            "memory": self.memory,
            "memory-nodedup": self.memory_nodedup,
            "profile": self.profile,
        }
        background: dict[str, dict[str, float]] = self.results.meta.setdefault("background", {})
        for phase in phases:
            if self.wait_quiet:
                await self._until_quiet()
            before = MachineClock.now()
            try:
                await steps[phase]()
            except (ChildFailed, TimeoutError, OSError, RuntimeError, nats.errors.Error) as exc:
                # One broken phase should not cost the figures of the others.
                error = f"phase {phase}: {type(exc).__name__}: {exc}"
                self.errors.append(error)
                self.say(f"failed: {error}")
            finally:
                # Every child of the phase has been reaped here, so its CPU counts as ours.
                foreign, share, stolen = MachineClock.now().others_since(before)
                background[phase] = {"cpu_s": foreign, "share": share, "steal_share": stolen}
                if share > BACKGROUND_WARNING or stolen > BACKGROUND_WARNING:
                    self.warnings.append(
                        f"phase {phase}: other processes used {share:.0%} of the machine's CPU "
                        f"and the hypervisor took {stolen:.0%}; its figures are disturbed"
                    )

    async def _until_quiet(self) -> None:
        """On a shared machine: wait (up to `wait_quiet` s) until others leave the CPU."""
        deadline = time.monotonic() + self.wait_quiet
        while True:
            before = MachineClock.now()
            await asyncio.sleep(1)
            _, share, stolen = MachineClock.now().others_since(before)
            if share + stolen <= BACKGROUND_WARNING:
                return
            if time.monotonic() > deadline:
                self.say(f"the machine is still busy ({share + stolen:.0%}); measuring anyway")
                return
            self.say(f"waiting for a quiet machine: other processes use {share + stolen:.0%}")
