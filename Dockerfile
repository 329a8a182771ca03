# One image for all three skiplock services; docker-compose.yml picks the service by its command.
#
# Two stages: the build stage installs skiplock (`pip install .`, which generates the gRPC code
# with grpcio-tools in pip's isolated build environment) into a virtualenv; the runtime stage
# gets that virtualenv and nothing else: no grpcio-tools, no compilers, no embedded PostgreSQL,
# no source checkout.

FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY . .
RUN python -m venv /opt/skiplock \
    && /opt/skiplock/bin/pip install . \
    && /opt/skiplock/bin/python -c "import proto.skiplock_pb2, proto.skiplock_pb2_grpc"


FROM python:3.11-slim AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/skiplock/bin:$PATH

# tini is PID 1: it forwards SIGTERM to the service (workers drain on it) and reaps whatever a
# command left behind. Workers run every command as `bash -c COMMAND`; fail the build loudly if
# a future base image drops bash.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && command -v bash

COPY --from=build /opt/skiplock /opt/skiplock

# Code stays root-owned and read-only to the service user; only the output dir is writable.
# The uid defaults to 1000 so a bind-mounted ./worker_output owned by a typical host user is
# writable; build with --build-arg SKIPLOCK_UID=... to match another owner.
ARG SKIPLOCK_UID=1000
ARG SKIPLOCK_GID=1000
RUN groupadd --gid "${SKIPLOCK_GID}" skiplock \
    && useradd --uid "${SKIPLOCK_UID}" --gid skiplock --no-create-home --home-dir /app \
        --shell /bin/bash skiplock \
    && mkdir -p /app/output \
    && chown skiplock:skiplock /app/output

WORKDIR /app
# Numeric so runtimes can verify non-root (e.g. Kubernetes runAsNonRoot).
USER ${SKIPLOCK_UID}:${SKIPLOCK_GID}

EXPOSE 8000 8080 8081

ENTRYPOINT ["tini", "--"]
# Beyond loopback the scheduler needs API tokens (SKIPLOCK_API_TOKEN or a tokens file) and
# refuses to start without them; docker-compose.yml overrides this per service.
CMD ["skiplock-scheduler", "--host", "0.0.0.0"]
