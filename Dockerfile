# One image for all three skiplock services; docker-compose.yml picks the service by its command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Workers run every command as `bash -c COMMAND`; bash is part of the Debian base, so fail the
# build loudly if a future base image ever drops it.
RUN command -v bash

WORKDIR /app

# Dependencies first so code edits do not reinstall them.
COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY . .

# Generated gRPC code is never committed (and .dockerignore keeps stale local copies out).
RUN python -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. proto/skiplock.proto \
    && python -c "import proto.skiplock_pb2, proto.skiplock_pb2_grpc"

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

# Numeric so runtimes can verify non-root (e.g. Kubernetes runAsNonRoot).
USER ${SKIPLOCK_UID}:${SKIPLOCK_GID}

EXPOSE 8000 8080 8081

# docker-compose.yml overrides this per service.
CMD ["python", "-m", "scheduler_svc", "--scheduler_port=:8081"]
