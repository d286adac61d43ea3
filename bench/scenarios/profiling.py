"""The `profile` phase: py-spy samples of the gateway under HTTP and gRPC load,
summarised for the report, the collapsed stacks kept in the results folder.
"""

from __future__ import annotations

import asyncio
import signal

from bench.procs import Child
from bench.profile import py_spy, summarise
from bench.profile import render as render_profile
from bench.scenarios.parts import Parts


class Profiling(Parts):
    """Phase `profile`."""

    async def profile(self) -> None:
        """py-spy samples of the gateway while it takes HTTP at 1 and at 16 connections,
        then a gRPC burst; the collapsed stacks go to the results folder, a summary to
        the report."""
        tool = py_spy()
        if tool is None:
            self.warnings.append(
                "profile: py-spy is not installed (pip install 'py-spy>=0.4,<0.5')"
            )
            return
        s = self.sizes
        self.out_dir.mkdir(parents=True, exist_ok=True)
        texts: list[str] = self.results.meta.setdefault("profile_text", [])
        async with (
            self.nats_server("nats-profile") as server,
            self.feed() as feed,
            self.loadgen() as load,
            self.gateway("gateway-profile", server.url, feed, jetstream=False) as gw,
            self.collector(server.url) as col,
        ):
            for name, what in (
                ("http1", "gateway, HTTP, 1 connection"),
                ("http16", "gateway, HTTP, 16 connections"),
                ("grpc", "gateway, gRPC burst"),
            ):
                raw = self.out_dir / f"gateway-{name}.collapsed.txt"
                argv = [tool, "record", "--pid", str(gw.child.pid), "--rate", "250",
                        "--format", "raw", "--output", str(raw), "--nonblocking"]  # fmt: skip
                spy = await Child(f"py-spy-{name}", argv, self.workdir).start()
                await asyncio.sleep(1)  # py-spy attaches
                col.reset()
                if name.startswith("http"):
                    connections = int(name.removeprefix("http"))
                    count = s.http_requests * 2
                    await load.run(gw.port, connections, count)
                else:
                    count = s.grpc_alerts
                    await feed.burst(count)
                await col.wait_for(count, self._timeout(count))
                assert spy.proc is not None
                spy.proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
                await spy.wait(60)
                if not raw.exists():
                    self.warnings.append(f"profile {name}: py-spy wrote nothing\n{spy.log_tail()}")
                    continue
                summary = summarise(raw.read_text().splitlines())
                texts.append(render_profile(summary, f"Profile: {what}; stacks in {raw}"))
                self.say(f"profile {name}: {summary.samples:,} samples in {raw}")
