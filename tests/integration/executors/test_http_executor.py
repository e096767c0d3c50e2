"""The http executor against a real local server."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import pytest

from scheduler_application.ports.executor import ExecutionContext
from scheduler_domain.outbound import OutboundPolicy
from scheduler_infrastructure.outbound.guarded import GuardedTransport
from scheduler_worker.executors import HttpExecutor
from scheduler_worker.executors.http import UNREACHABLE

pytestmark = pytest.mark.timeout(30)

ContextFactory = Callable[..., ExecutionContext]


class HttpServer(Protocol):
    """The ``http_server`` fixture of conftest.py."""

    base_url: str
    requests: list[Any]


@pytest.fixture
async def executor() -> AsyncIterator[HttpExecutor]:
    # The test server listens on loopback, which the default outbound policy refuses.
    policy = OutboundPolicy.from_allow(["127.0.0.0/8"])
    async with HttpExecutor(
        transport=GuardedTransport(policy=policy), output_limit=1_000
    ) as executor:
        yield executor


async def test_success_records_status_and_body(
    executor: HttpExecutor, http_server: HttpServer, context_for: ContextFactory
) -> None:
    result = await executor.execute(context_for({"url": f"{http_server.base_url}/ok"}, timeout=5))

    assert result.status == "succeeded"
    assert result.result == {"status_code": 200}
    assert result.output == "hello from the server"


async def test_unexpected_status_is_a_failure(
    executor: HttpExecutor, http_server: HttpServer, context_for: ContextFactory
) -> None:
    result = await executor.execute(context_for({"url": f"{http_server.base_url}/status/503"}))

    assert result.status == "failed"
    assert result.error == "unexpected status 503"
    assert result.result == {"status_code": 503}
    assert result.output == "status 503"


async def test_expected_status_accepts_an_int_or_a_list(
    executor: HttpExecutor, http_server: HttpServer, context_for: ContextFactory
) -> None:
    url = f"{http_server.base_url}/status/418"

    single = await executor.execute(context_for({"url": url, "expected_status": 418}))
    listed = await executor.execute(context_for({"url": url, "expected_status": [200, 418]}))
    missed = await executor.execute(
        context_for({"url": f"{http_server.base_url}/ok", "expected_status": [201]})
    )

    assert (single.status, listed.status, missed.status) == ("succeeded", "succeeded", "failed")


async def test_connection_refused_is_the_uniform_unreachable_failure(
    executor: HttpExecutor, context_for: ContextFactory
) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago and has no listener
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    result = await executor.execute(context_for({"url": f"http://127.0.0.1:{port}/"}, timeout=5))

    assert result.status == "failed"
    assert result.error == UNREACHABLE


async def test_slow_response_times_out(
    executor: HttpExecutor, http_server: HttpServer, context_for: ContextFactory
) -> None:
    started = time.monotonic()

    result = await executor.execute(
        context_for({"url": f"{http_server.base_url}/slow"}, timeout=0.3)
    )

    assert result.status == "timed_out"
    assert result.error == "timed out after 0.3 s"
    assert time.monotonic() - started < 2


async def test_json_body_method_and_headers_are_sent(
    executor: HttpExecutor, http_server: HttpServer, context_for: ContextFactory
) -> None:
    params = {
        "url": f"{http_server.base_url}/echo",
        "method": "post",
        "headers": {"X-Token": "abc123", "X-Scheduler-Test": "yes"},
        "json": {"report": "daily", "ids": [1, 2]},
    }

    result = await executor.execute(context_for(params, timeout=5))

    assert result.status == "succeeded"
    echoed = json.loads(result.output or "")
    assert echoed["method"] == "POST"
    assert json.loads(echoed["body"]) == {"report": "daily", "ids": [1, 2]}
    received = http_server.requests[-1]
    assert received.headers["X-Token"] == "abc123"
    assert received.headers["X-Scheduler-Test"] == "yes"
    assert received.headers["Content-Type"] == "application/json"


async def test_raw_body_is_sent_as_is(
    executor: HttpExecutor, http_server: HttpServer, context_for: ContextFactory
) -> None:
    params = {"url": f"{http_server.base_url}/echo", "method": "PUT", "body": "a=1&b=ü"}

    result = await executor.execute(context_for(params, timeout=5))

    assert json.loads(result.output or "") == {"method": "PUT", "body": "a=1&b=ü"}


async def test_large_body_is_capped(
    executor: HttpExecutor, http_server: HttpServer, context_for: ContextFactory
) -> None:
    result = await executor.execute(context_for({"url": f"{http_server.base_url}/big"}))

    assert result.status == "succeeded"
    text, marker = (result.output or "").split("\n")
    assert text == "x" * 1_000
    assert marker.startswith("[output truncated: at least ")


async def test_invalid_params_are_a_failure(
    executor: HttpExecutor, context_for: ContextFactory
) -> None:
    result = await executor.execute(context_for({"url": "ftp://example.org/file"}))

    assert result.status == "failed"
    assert result.error is not None
    assert result.error.startswith("invalid parameters (params.url):")


async def test_a_closed_executor_runs_nothing(
    http_server: HttpServer, context_for: ContextFactory
) -> None:
    executor = HttpExecutor(
        transport=GuardedTransport(policy=OutboundPolicy.from_allow(["127.0.0.0/8"]))
    )
    await executor.aclose()

    with pytest.raises(RuntimeError, match="client has been closed"):
        await executor.execute(context_for({"url": f"{http_server.base_url}/ok"}))
