"""``executors.http.allow`` reaches the http executor of the worker that ``scheduler run``
builds (its composition root), and a user's http task to loopback fails without it."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from integration.observability.observed_stack import (
    migrated_sqlite,
    observed_stack,
    stack_settings,
)
from scheduler_infrastructure.config import Settings
from scheduler_infrastructure.config.settings import ExecutorsSettings, HttpExecutorSettings
from scheduler_worker.executors.http import UNREACHABLE

pytestmark = pytest.mark.timeout(60)


class _Hello(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        body = b"internal service"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def internal_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _with_allow(settings: Settings, allow: tuple[str, ...]) -> Settings:
    executors = ExecutorsSettings(http=HttpExecutorSettings(allow=allow))
    return dataclasses.replace(settings, executors=executors)


@pytest.mark.parametrize(
    ("allow", "status", "error", "output"),
    [
        ((), "dead_lettered", UNREACHABLE, None),
        (("127.0.0.0/8",), "succeeded", None, "internal service"),
    ],
)
async def test_the_allow_list_setting_decides_whether_a_task_reaches_loopback(
    allow: tuple[str, ...],
    status: str,
    error: str | None,
    output: str | None,
    internal_url: str,
    tmp_path: Path,
) -> None:
    url = await migrated_sqlite(tmp_path / "scheduler.db")
    settings = _with_allow(stack_settings(url), allow)

    async with observed_stack(url, settings=settings) as stack:
        task_id = await stack.create_task(
            "probe", executor="http", params={"url": internal_url}, schedule=None
        )
        await stack.trigger(task_id)

        async def finished() -> bool:
            return (await stack.statuses(task_id)) == [status]

        await stack.until(finished)
        (run,) = await stack.runs_of(task_id)

    assert run.error == error
    assert run.output == output
