"""The benchmark's phases: the ceilings, the gateway on core NATS and on JetStream,
and its memory over many alerts.

Every figure is repeated `Sizes.repeats` times after an untimed warm-up; the
gateway is one long-lived subprocess per phase (as deployed), its CPU and RSS
read from /proc. Alerts/s of the gateway are counted at a NATS subscriber;
every run checks that exactly what was sent arrived, once, by the right path.

One module per scenario (ceilings, gateway_on_nats, latency, drain, memory,
profiling) on the shared parts (parts); run puts them together as `Bench`.
"""

from bench.scenarios.latency import own_delays
from bench.scenarios.parts import Sizes
from bench.scenarios.run import EXTRA_PHASES, PHASES, Bench

__all__ = ["EXTRA_PHASES", "PHASES", "Bench", "Sizes", "own_delays"]
