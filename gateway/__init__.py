"""falco-nats-gateway: Falco alerts from gRPC and http_output onto NATS subjects.

The pipeline, as the package lays it out:

    sources/grpc.py ─┐                  pipeline.py
                     ├─> normalize.py ─> filter, dedup, subject ─> spool.py
    sources/http.py ─┘   (FalcoEvent)                                 │
                                                                      v
    NATS (core or JetStream) <─ sinks/natspy.py <─ sinks/nats.py <─ publisher.py
                                (NatsLink)         (NatsSink)
                                                   sinks/stream.py checks the stream

A source answers Falco once the alert is in the spool; the publisher takes the
spooled alerts to NATS, oldest first, and the spool forgets each one only when
NATS has confirmed it. `app.py` wires these together and `supervisor.py` keeps
their tasks running.

`falco_pb/` holds the stubs generated from proto/ (never edited by hand);
`simulator/` is a Falco stand-in that speaks both of Falco's exits.
"""

__version__ = "0.1.0"
