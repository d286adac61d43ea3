"""A Falco stand-in that speaks both of Falco's exits, for demos and for users' own tests.

- `falco_server.py`: Falco 0.43's gRPC outputs and version services, with
  Falco's queue semantics (one shared queue; `sub` writes only after each
  client request until the queue is empty; `get` drains and ends).
- `wire.py`: an alert in Falco's two wire formats (gRPC response, JSON body).
- `http_client.py`: a keep-alive HTTP/1.1 client that posts like Falco's libcurl.
- `alerts.py`: a catalog of realistic alerts built from Falco's stock rules.
- `run.py`: `falco-nats-gateway simulate`, putting them together.
"""
