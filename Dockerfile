# One image for all five taskqueue services; the command picks the service:
#   docker run taskqueue python -m services.api        (default)
#   docker run taskqueue python -m services.worker     (also scheduler, notifier, dashboard)
#
# Build:  docker build -t taskqueue .
# Offline (no PyPI in the build, local base image), as scripts/ci-docker.sh does:
#   pip wheel . -w wheels/ && DOCKER_BUILDKIT=0 docker build --build-arg BASE_IMAGE=taskqueue-base:bookworm -t taskqueue .
# If wheels/ holds wheels, dependencies come only from there (--no-index); otherwise from PyPI.
# The wheels must match the base image's Python version (cp311 wheels for a 3.11 base).
ARG BASE_IMAGE=python:3.12-slim

# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS builder

# (Few instructions on purpose: each one is a full copy of the image under the vfs storage
# driver that scripts/ci-docker.sh has to use.)
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH

# Dependencies first, in their own layer (rebuilt only when pyproject.toml or wheels/ change):
# the project's, and its `otel` extra (OpenTelemetry's exporter, used when OTEL_* ask for it).
# `wheel[s]` is a glob so a missing wheels/ directory is not an error; its wheels land in
# /wheelhouse next to pyproject.toml. `python3` works on python:*-slim and on a plain Debian base.
COPY pyproject.toml wheel[s] /wheelhouse/
RUN set -eu; \
    python3 -m venv /opt/venv; \
    if ls /wheelhouse/*.whl >/dev/null 2>&1; then \
        echo "installing from the wheelhouse (offline)"; \
        set -- --no-index --find-links /wheelhouse; \
    else \
        echo "installing from the package index"; \
    fi; \
    python -c 'import sys, tomllib; p = tomllib.load(open("/wheelhouse/pyproject.toml", "rb"))["project"]; print("\n".join(p.get("dependencies", []) + p.get("optional-dependencies", {}).get("otel", [])))' \
        > /tmp/requirements.txt; \
    if [ -s /tmp/requirements.txt ]; then pip install "$@" -r /tmp/requirements.txt; fi

# The project itself, from source (its build backend also comes from the wheelhouse offline).
COPY . /src
RUN set -eu; \
    if ls /wheelhouse/*.whl >/dev/null 2>&1; then set -- --no-index --find-links /wheelhouse; fi; \
    pip install "$@" --no-deps /src; \
    pip check; \
    python -c 'import shared, services, opentelemetry.exporter.otlp.proto.http.trace_exporter'; \
    install -m 0755 /src/docker/healthcheck.py /opt/venv/bin/taskqueue-healthcheck; \
    pip uninstall -y -q pip setuptools wheel 2>/dev/null || true

# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BIND_HOST=0.0.0.0 \
    API_PORT=8080 \
    DASHBOARD_PORT=8081

# The venv holds the app, its dependencies and `taskqueue-healthcheck`; no compilers, no pip.
COPY --from=builder /opt/venv /opt/venv

# Non-root user (fixed uid/gid 10001, so volumes and Kubernetes runAsUser can rely on it).
RUN groupadd --system --gid 10001 taskqueue \
    && useradd --system --uid 10001 --gid taskqueue --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin taskqueue
USER 10001:10001
EXPOSE 8080 8081

# The api's liveness check by default (never Redis); compose sets one per service.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["taskqueue-healthcheck", "api", "--live"]

CMD ["python", "-m", "services.api"]
