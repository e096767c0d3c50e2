"""The http executor's outbound policy against a real server on 127.0.0.1: loopback is refused
unless allowed, by any notation or name, directly or through redirects, and every refusal
looks the same to the task."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import quote

import pytest

from scheduler_application.ports.executor import ExecutionContext, ExecutionResult
from scheduler_domain.outbound import OutboundPolicy
from scheduler_infrastructure.outbound.guarded import GuardedTransport
from scheduler_worker.executors import HttpExecutor
from scheduler_worker.executors.http import UNREACHABLE

pytestmark = pytest.mark.timeout(30)

ContextFactory = Callable[..., ExecutionContext]
HTTP_LOG = "scheduler_worker.executors.http"


class HttpServer(Protocol):
    base_url: str
    requests: list[Any]


def _port(server: HttpServer) -> int:
    return int(server.base_url.rsplit(":", 1)[1])


def _closed_port() -> int:
    with socket.socket() as probe:  # free a moment ago, and nothing listens on it
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _run(
    allow: list[str], context: ExecutionContext, *, output_limit: int = 10_000
) -> ExecutionResult:
    policy = OutboundPolicy.from_allow(allow)
    async with HttpExecutor(
        transport=GuardedTransport(policy=policy), output_limit=output_limit
    ) as executor:
        return await executor.execute(context)


def _refused(result: ExecutionResult) -> bool:
    return (
        result.status == "failed"
        and result.error == UNREACHABLE
        and not result.output
        and not result.result
    )


async def test_loopback_is_refused_by_default_and_never_contacted(
    http_server: HttpServer, context_for: ContextFactory
) -> None:
    before = len(http_server.requests)

    result = await _run([], context_for({"url": f"{http_server.base_url}/ok"}, timeout=5))

    assert _refused(result)
    assert len(http_server.requests) == before


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "LOCALHOST",
        "127.1",
        "2130706433",
        "0x7f.1",
        "0x7f000001",
        "127.0.0.1.",
        "[::ffff:127.0.0.1]",
        "[0:0:0:0:0:ffff:7f00:1]",
        "[::1]",
        "0",
        "0.0.0.0",
        "[::]",
    ],
)
async def test_every_spelling_of_this_machine_is_refused(
    host: str, http_server: HttpServer, context_for: ContextFactory
) -> None:
    before = len(http_server.requests)
    url = f"http://{host}:{_port(http_server)}/ok"

    result = await _run([], context_for({"url": url}, timeout=5))

    assert _refused(result), result
    assert len(http_server.requests) == before


async def test_a_notation_httpx_cannot_parse_fails_without_a_request(
    http_server: HttpServer, context_for: ContextFactory
) -> None:
    before = len(http_server.requests)

    result = await _run([], context_for({"url": f"http://0177.0.0.1:{_port(http_server)}/ok"}))

    assert result.status == "failed"
    assert len(http_server.requests) == before


@pytest.mark.parametrize("allow", [["127.0.0.0/8"], ["127.0.0.1"], ["localhost"]])
async def test_the_allow_list_lets_an_internal_target_through(
    allow: list[str], http_server: HttpServer, context_for: ContextFactory
) -> None:
    url = f"http://{'localhost' if allow == ['localhost'] else '127.0.0.1'}:{_port(http_server)}"

    result = await _run(allow, context_for({"url": f"{url}/ok"}, timeout=5))

    assert result.status == "succeeded", result
    assert result.output == "hello from the server"
    assert http_server.requests[-1].headers["Host"] == url.removeprefix("http://")


async def test_an_allowed_host_name_does_not_allow_its_address_under_another_name(
    http_server: HttpServer, context_for: ContextFactory
) -> None:
    result = await _run(["localhost"], context_for({"url": f"{http_server.base_url}/ok"}))

    assert _refused(result)


async def test_closed_and_open_forbidden_ports_fail_identically(
    http_server: HttpServer, context_for: ContextFactory
) -> None:
    open_port = await _run([], context_for({"url": f"{http_server.base_url}/ok"}, timeout=5))
    closed = await _run([], context_for({"url": f"http://127.0.0.1:{_closed_port()}/"}))
    closed_allowed = await _run(
        ["127.0.0.0/8"], context_for({"url": f"http://127.0.0.1:{_closed_port()}/"}, timeout=5)
    )
    unresolvable = await _run([], context_for({"url": "http://no-such-host.invalid/"}))

    assert open_port == closed == closed_allowed == unresolvable
    assert _refused(open_port)


async def test_redirects_are_not_followed_unless_asked(
    http_server: HttpServer, context_for: ContextFactory
) -> None:
    url = f"{http_server.base_url}/chain/1"

    plain = await _run(["127.0.0.0/8"], context_for({"url": url}, timeout=5))
    followed = await _run(
        ["127.0.0.0/8"], context_for({"url": url, "follow_redirects": True}, timeout=5)
    )

    assert (plain.status, plain.error) == ("failed", "unexpected status 302")
    assert (followed.status, followed.output) == ("succeeded", "end of the chain")


async def test_at_most_five_redirects_are_followed(
    http_server: HttpServer, context_for: ContextFactory
) -> None:
    def chain(hops: int) -> ExecutionContext:
        url = f"{http_server.base_url}/chain/{hops}"
        return context_for({"url": url, "follow_redirects": True}, timeout=5)

    five = await _run(["127.0.0.0/8"], chain(5))
    six = await _run(["127.0.0.0/8"], chain(6))

    assert five.status == "succeeded"
    assert (six.status, six.error) == ("failed", "more than 5 redirects")


async def test_a_redirect_to_the_metadata_address_is_refused_before_connecting(
    http_server: HttpServer, context_for: ContextFactory, caplog: pytest.LogCaptureFixture
) -> None:
    target = quote("http://169.254.169.254/latest/meta-data/", safe="")
    url = f"{http_server.base_url}/redirect?to={target}"

    with caplog.at_level(logging.DEBUG, logger=HTTP_LOG):
        result = await _run(
            ["127.0.0.0/8"], context_for({"url": url, "follow_redirects": True}, timeout=5)
        )

    assert _refused(result)
    assert http_server.requests[-1].path.startswith("/redirect?")
    # The policy, not a connect attempt, refused it; the reason is in the worker's log only.
    assert "'169.254.169.254' resolves to 169.254.169.254: link-local (metadata)" in caplog.text


async def test_a_redirect_from_an_allowed_name_to_a_loopback_address_is_refused(
    http_server: HttpServer, context_for: ContextFactory
) -> None:
    port = _port(http_server)
    target = quote(f"http://127.0.0.1:{port}/ok", safe="")
    url = f"http://localhost:{port}/redirect?to={target}"
    before = len(http_server.requests)

    result = await _run(["localhost"], context_for({"url": url, "follow_redirects": True}))

    assert _refused(result)
    assert [r.path for r in http_server.requests[before:]] == [f"/redirect?to={target}"]


async def test_a_tls_failure_at_a_permitted_destination_is_reported_as_such(
    http_server: HttpServer, context_for: ContextFactory
) -> None:
    # The server speaks plain HTTP: the handshake fails after a permitted connection.
    url = f"https://127.0.0.1:{_port(http_server)}/ok"

    permitted = await _run(["127.0.0.0/8"], context_for({"url": url}, timeout=5))
    refused = await _run([], context_for({"url": url}, timeout=5))

    assert permitted.status == "failed"
    assert (permitted.error or "").startswith("TLS handshake with the destination failed")
    assert _refused(refused)
