"""The fault-injection suite: the real gateway, both paths under Falco-shaped load,
a seeded schedule of faults, and a verdict read back from the JetStream stream.

`python -m tests.chaos --seed N --minutes M --faults a,b,c` (`make chaos`); a short
seeded run is part of `make test` (test_short_run.py).
"""
