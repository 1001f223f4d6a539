# syntax=docker/dockerfile:1
#
# The pssync worker image.
#
#   docker build -t pssync .
#   docker run --rm -e PSSYNC_KAFKA_BOOTSTRAP=kafka:9092 \
#       -e PSSYNC_SCHEMA_REGISTRY_URL=http://registry:8080/apis/ccompat/v7 pssync
#
# Two stages: the builder installs pssync and its dependencies into a virtualenv
# (/opt/pssync); the runtime stage is the same slim Python base with only that
# virtualenv, running as an unprivileged user. RocksDB state lives under
# PSSYNC_DATA_DIR=/var/lib/pssync: mount a volume there.
# Both stages use the same pinned base, so the virtualenv's interpreter links stay valid.

FROM python:3.11.13-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN python -m venv /opt/pssync

WORKDIR /src

# Dependencies first, read from pyproject.toml alone: a code change does not
# reinstall them (every dependency ships manylinux wheels; no compiler needed).
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && /opt/pssync/bin/pip install --no-cache-dir --requirement requirements.txt

# Then pssync itself (the build context is narrowed by .dockerignore to the package).
COPY . .
RUN /opt/pssync/bin/pip install --no-cache-dir --no-deps . \
    && /opt/pssync/bin/pssync --version


FROM python:3.11.13-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="pssync" \
      org.opencontainers.image.description="Streaming reconciliation of CRM, PSA, HR and ERP change streams" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric UID/GID, so Kubernetes' runAsNonRoot can verify it and
# volumes can be prepared with fsGroup 10001.
RUN groupadd --system --gid 10001 pssync \
    && useradd --system --uid 10001 --gid pssync --home-dir /var/lib/pssync \
       --no-create-home --shell /usr/sbin/nologin pssync \
    && install --directory --owner=pssync --group=pssync --mode=0750 /var/lib/pssync

COPY --from=builder /opt/pssync /opt/pssync

ENV PATH=/opt/pssync/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PSSYNC_DATA_DIR=/var/lib/pssync \
    PSSYNC_WEB_HOST=0.0.0.0 \
    PSSYNC_WEB_PORT=6066 \
    PSSYNC_LOG_FORMAT=json

USER 10001:10001
WORKDIR /var/lib/pssync
VOLUME ["/var/lib/pssync"]
EXPOSE 6066

# Liveness: the worker's web server answers. (Readiness, `/ready`, is for
# orchestrators that route or gate on it: compose's depends_on, Kubernetes.)
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PSSYNC_WEB_PORT', '6066'), timeout=4)"]

ENTRYPOINT ["pssync"]
CMD ["worker"]
