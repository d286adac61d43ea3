# falco-nats-gateway's image. Two stages: `build` installs the gateway into a virtualenv (pip
# generates Falco's gRPC stubs with grpcio-tools' protoc on the way, see setup.py); the final
# stage is the same slim Python with that virtualenv and nothing else: no pip cache, no protoc,
# no sources.
#   make image            (docker build -t falco-nats-gateway:<version> .)
#   minikube image build  (scripts/minikube-demo.sh)
ARG PYTHON_IMAGE=python:3.11-slim-trixie

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/falco-nats-gateway
WORKDIR /src
# Only what `pip install .` reads (.dockerignore keeps the rest, and any stubs generated
# outside, out of the context): the stubs are always generated here, from proto/.
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY proto/ proto/
COPY scripts/gen_protos.py scripts/gen_protos.py
COPY gateway/ gateway/
# grpcio-tools (protoc) is a build requirement only: pip uses it in an isolated build
# environment, so the virtualenv gets grpcio and protobuf, which the import check proves.
RUN /opt/falco-nats-gateway/bin/pip install . \
    && /opt/falco-nats-gateway/bin/python -c "import gateway.app, gateway.sources.grpc, gateway.falco_pb.outputs_pb2_grpc" \
    && /opt/falco-nats-gateway/bin/falco-nats-gateway --version

FROM ${PYTHON_IMAGE}
# A fixed numeric UID, so Kubernetes' runAsNonRoot can check it; the Helm chart uses the same.
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin gateway
COPY --from=build /opt/falco-nats-gateway /opt/falco-nats-gateway
ENV PATH=/opt/falco-nats-gateway/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
# falcosidekick's port: Falco's http_output posts here; /healthz, /readyz, /ping, /metrics.
EXPOSE 2801
# Healthy means connected to NATS (/healthz answers 503 otherwise). Kubernetes ignores this and
# uses the chart's probes; it serves `docker run` and compose. Python, as the image has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('GATEWAY_LISTEN', ':2801').rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)"]
ENTRYPOINT ["falco-nats-gateway"]
