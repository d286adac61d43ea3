"""Tests against real servers: nats-server, a Falco gRPC endpoint, the gateway's HTTP server."""
