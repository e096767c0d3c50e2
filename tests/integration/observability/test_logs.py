"""Logs and stored output on the combined stack: lines written during a run carry its run,
task and worker ids; secrets are redacted from log lines and from the output, error and result
stored on runs."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from observed_stack import ObservedStack, migrated_sqlite, observed_stack

from scheduler_infrastructure.logging_setup import ContextFilter, JsonFormatter

pytestmark = pytest.mark.timeout(60)

PLANTED_ENV_SECRET = "planted-env-secret-7f3a9c1e55"
PLANTED_API_KEY = "sk_abcdefghijkl_" + "Q" * 43
PLANTED_PASSWORD = "planted-param-password-42"
PLANTED_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXBsYW50ZWQ"
PLANTED = (PLANTED_ENV_SECRET, PLANTED_API_KEY, PLANTED_PASSWORD, PLANTED_JWT)


@contextmanager
def json_lines(stack: ObservedStack) -> Iterator[io.StringIO]:
    """Root logging to a buffer the way ``configure_logging`` sets it up for JSON."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter("test", stack.resources.redactor))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def test_python_task_logging_is_its_run_output_with_secrets_hidden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A python task runs in a sandboxed interpreter: what it logs is its run's output (not a
    line of the worker's log), stored redacted like a shell task's."""
    monkeypatch.setenv("OBSERVABILITY_TEST_TOKEN", PLANTED_ENV_SECRET)
    async with observed_stack(await migrated_sqlite(tmp_path / "logs.db")) as stack:
        message = (
            f"calling with password={PLANTED_PASSWORD} key {PLANTED_API_KEY} "
            f"env {PLANTED_ENV_SECRET}\r\nforged line"
        )
        task_id = await stack.create_task(
            "chatty", executor="python", params={"callable": "logging:warning", "args": [message]}
        )
        with json_lines(stack) as buffer:
            await stack.trigger(task_id)
            await stack.until(lambda: _has(stack, task_id, "succeeded"))
        stored = (await stack.runs_of(task_id))[0]
        assert stored.output is not None
        assert stored.output.startswith("WARNING:root:calling with")
        assert "[REDACTED]" in stored.output
        for secret in PLANTED:
            assert secret not in stored.output
            assert secret not in buffer.getvalue()
        assert "calling with" not in buffer.getvalue()
        assert not any(raw.startswith("forged") for raw in buffer.getvalue().splitlines())


async def test_output_error_and_result_stored_on_runs_are_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OBSERVABILITY_TEST_TOKEN", PLANTED_ENV_SECRET)
    async with observed_stack(await migrated_sqlite(tmp_path / "output.db")) as stack:
        script = (
            f"echo 'GET https://svc.example/?user=me&password={PLANTED_PASSWORD}';"
            f"echo 'X-Api-Key: {PLANTED_API_KEY}';"
            f"echo 'Authorization: Bearer {PLANTED_JWT}';"
            f"echo 'token from env: {PLANTED_ENV_SECRET}' >&2; exit 3"
        )
        task_id = await stack.create_task(
            "leaky", executor="shell", params={"argv": ["sh", "-c", script]}
        )
        await stack.trigger(task_id)
        await stack.until(lambda: _has(stack, task_id, "dead_lettered"))
        stored = (await stack.runs_of(task_id))[0]
        text = json.dumps([stored.output, stored.error, stored.result])
        for secret in PLANTED:
            assert secret not in text
        assert stored.output is not None
        assert stored.output.count("[REDACTED]") >= 4
        assert "https://svc.example/?user=me&password=[REDACTED]" in stored.output


async def _has(stack: ObservedStack, task_id: str, status: str) -> bool:
    return status in await stack.statuses(task_id)
