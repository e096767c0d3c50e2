# syntax=docker/dockerfile:1.7
# Multi-stage build of the whole workspace: one image, four entry points
# (scheduler, scheduler-api, scheduler-dispatcher, scheduler-worker).

FROM python:3.11-slim AS build
ENV UV_PYTHON_DOWNLOADS=never UV_PYTHON_PREFERENCE=only-system \
    UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
RUN pip install --no-cache-dir "uv>=0.9,<1"
WORKDIR /app
# Dependencies first, for layer caching: only the lock and the members' metadata.
COPY pyproject.toml uv.lock ./
COPY packages/domain/pyproject.toml packages/domain/
COPY packages/application/pyproject.toml packages/application/
COPY packages/infrastructure/pyproject.toml packages/infrastructure/
COPY packages/api/pyproject.toml packages/api/
COPY packages/dispatcher/pyproject.toml packages/dispatcher/
COPY packages/worker/pyproject.toml packages/worker/
COPY packages/cli/pyproject.toml packages/cli/
RUN uv sync --frozen --no-dev --all-packages --no-install-workspace
COPY packages packages
RUN uv sync --frozen --no-dev --all-packages --no-editable

FROM python:3.11-slim AS runtime
RUN useradd --create-home --uid 10001 scheduler \
    && apt-get update && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
COPY alembic.ini ./
COPY migrations migrations
COPY config config
ENV PATH=/app/.venv/bin:$PATH \
    SCHEDULER_CONFIG=/app/config/production.toml \
    SCHEDULER_MIGRATIONS_DIR=/app/migrations \
    PYTHONUNBUFFERED=1
USER scheduler
# tini reaps the orphans of shell tasks and forwards SIGTERM for a clean drain.
ENTRYPOINT ["tini", "--"]
CMD ["scheduler", "run"]
