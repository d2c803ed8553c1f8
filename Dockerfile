# pgcourier: the relay and its admin server (API, /metrics, console under /ui/) in one image.
#   docker build -t pgcourier .
#   docker run --rm pgcourier --help
# docker-compose.yml beside this file runs it with a Postgres (README, "Container").
# tests/unit/test_container_files.py checks this file against the CLI and the settings.

# The Python the test suite runs on (requires-python is >=3.11).
ARG PYTHON_VERSION=3.11

# -- build: a wheel of this project, nothing else -------------------------------------------------
FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
# src/pgcourier/sql is a symlink to ../../sql: both must be in the context (see .dockerignore).
COPY sql ./sql
COPY src ./src
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

# -- runtime: the wheel and its runtime dependencies, no dev extras, no build tools ---------------
FROM python:${PYTHON_VERSION}-slim

# A fixed numeric id, so that orchestrators can check "not root" (Kubernetes' runAsNonRoot needs a
# number) and volumes can be given to it.
RUN groupadd --system --gid 10001 pgcourier \
    && useradd --system --uid 10001 --gid pgcourier --home-dir /home/pgcourier --create-home \
       --shell /usr/sbin/nologin pgcourier \
    && install -d -o pgcourier -g pgcourier /var/lib/pgcourier

# The wheel is mounted for the one RUN, not copied: it leaves no layer behind.
RUN --mount=type=bind,from=build,source=/dist,target=/dist \
    python -m pip install --no-cache-dir /dist/*.whl

# PYTHONUNBUFFERED: log lines reach `docker logs` as they are written.
# ADMIN_HOST 0.0.0.0: the published port must reach the admin server; pgcourier refuses to bind
# beyond loopback without PGCOURIER_ADMIN_TOKEN, so a container started without one stops at once
# with a line saying so (docker-compose.yml reads the token from .env).
# LOG_FORMAT json: no terminal decides it here; log collectors read JSON lines.
# DATA_DIR: where the embedded Postgres lives when PGCOURIER_DATABASE_URL is unset (mount a
# volume there to keep it); owned by the pgcourier user, as Postgres refuses to run as root.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PGCOURIER_ADMIN_HOST=0.0.0.0 \
    PGCOURIER_ADMIN_PORT=8787 \
    PGCOURIER_LOG_FORMAT=json \
    PGCOURIER_DATA_DIR=/var/lib/pgcourier

USER 10001:10001
WORKDIR /home/pgcourier
EXPOSE 8787

# /health answers 200 whenever the process serves (it is exempt from the Host check that applies
# without a token). slim has no curl: Python asks, and any failure (refused, timeout, non-2xx)
# exits 1 with one line for `docker inspect` instead of a traceback. The port follows
# PGCOURIER_ADMIN_PORT, and the token is sent when set, so PGCOURIER_ADMIN_OPEN_OPERATIONS=false
# does not turn it unhealthy. start-period covers an embedded Postgres starting for the first
# time. A relay run with PGCOURIER_ADMIN_ENABLED=false has nothing to ask: disable the check.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as u; sys.excepthook = lambda kind, exc, tb: print('unhealthy:', exc, file=sys.stderr); t = os.environ.get('PGCOURIER_ADMIN_TOKEN'); u.urlopen(u.Request('http://127.0.0.1:%s/health' % os.environ.get('PGCOURIER_ADMIN_PORT', '8787'), headers={'Authorization': 'Bearer ' + t} if t else {}), timeout=3)"]

# `pgcourier run` drains in-flight deliveries on SIGTERM (`docker stop`), within
# PGCOURIER_SHUTDOWN_TIMEOUT (15s): give `docker stop -t` / stop_grace_period more than that.
ENTRYPOINT ["pgcourier"]
CMD ["run"]
