"""falco-nats-gateway: Falco alerts from gRPC and http_output onto NATS subjects.

The pipeline, as the package lays it out:

    sources/grpc.py ─┐
                     ├─> normalize.py ─> FalcoEvent ─> pipeline.py ─> sinks/nats.py
    sources/http.py ─┘

`falco_pb/` holds the stubs generated from proto/ (never edited by hand);
`simulator/` is a Falco stand-in that speaks both of Falco's exits.
"""

__version__ = "0.1.0"
