"""The webhook sender: one POST per attempt, through the outbound policy.

The policy is the ``http`` executor's (:mod:`scheduler_domain.outbound`) and is applied the
same way: every connection resolves its host here, refuses the name when any of its
addresses is forbidden, and connects to the vetted address itself, so a DNS answer that
changes between the check and the connect (rebinding) cannot slip through. Redirects are
never followed (a 3xx is a failed delivery), so no hop can lead to a refused target. The
answer is read up to :data:`MAX_ANSWER` bytes and only an excerpt is kept.

(The worker's executor has its own copy of the guarded backend in
``scheduler_worker.executors.outbound``: the layers keep the worker's executors from
importing this package. Both are thin wrappers of the one domain policy.)
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from scheduler_application.ports.webhooks import SendResult
from scheduler_domain.outbound import OutboundPolicy, parse_address

#: Bytes of a receiver's answer read at most (the rest is never read).
MAX_ANSWER = 4096
#: Characters of the answer kept for the delivery log.
EXCERPT = 200


class Refused(httpcore.ConnectError):
    """The destination is forbidden by the policy or does not resolve."""


class Unresolved(Refused):
    """The name did not resolve (now): no connection is made, but it is no policy refusal."""


async def _resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(sockaddr[0]) for _f, _t, _p, _n, sockaddr in infos]


async def vetted_addresses(policy: OutboundPolicy, host: str, port: int) -> list[str]:
    """Every address of ``host``; :class:`Refused` unless the policy permits all of them."""
    try:
        resolved = await _resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise Unresolved(f"{host!r} did not resolve: {exc}") from None
    addresses: list[str] = []
    for text in resolved:
        address = parse_address(text)
        if address is None:
            raise Refused(f"{host!r} resolved to {text!r}, not an IP address")
        reason = policy.refusal(host, address)
        if reason is not None:
            raise Refused(f"{host!r} resolves to {address}: {reason}")
        if text not in addresses:
            addresses.append(text)
    if not addresses:
        raise Refused(f"{host!r} has no address")
    return addresses


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, policy: OutboundPolicy) -> None:
        self._policy = policy
        self._backend = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        async with asyncio.timeout(timeout):
            addresses = await vetted_addresses(self._policy, host, port)
        failure: Exception = Refused(f"{host!r}: no address answered")
        for address in addresses:
            try:
                return await self._backend.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise Refused("unix sockets are not an outbound destination")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class _GuardedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, policy: OutboundPolicy, limits: httpx.Limits) -> None:
        super().__init__(trust_env=False, limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_GuardedBackend(policy),
        )


class HttpWebhookSender:
    """``WebhookSender`` over httpx; an async context manager (closes its connection pool)."""

    def __init__(self, *, policy: OutboundPolicy, user_agent: str = "scheduler-webhooks") -> None:
        self._policy = policy
        self._client = httpx.AsyncClient(
            transport=_GuardedTransport(policy, httpx.Limits(max_connections=100)),
            trust_env=False,
            follow_redirects=False,
            headers={"user-agent": user_agent},
        )

    async def __aenter__(self) -> HttpWebhookSender:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def vet(self, url: str) -> str | None:
        """Why the policy refuses ``url``'s host (one of its addresses is forbidden), or None;
        a name that does not resolve is not refused here (its delivery fails, and is retried)."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            await vetted_addresses(self._policy, host, port)
        except Refused as refused:
            if isinstance(refused, Unresolved):
                return None  # not a refusal: the attempt itself fails (and is retried)
            return str(refused)
        return None

    async def send(
        self, url: str, *, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> SendResult:
        started = time.perf_counter()

        def elapsed() -> int:
            return int((time.perf_counter() - started) * 1000)

        try:
            async with asyncio.timeout(timeout):
                request = self._client.build_request(
                    "POST", url, content=body, headers=dict(headers), timeout=timeout
                )
                response = await self._client.send(request, stream=True)
                try:
                    answer = bytearray()
                    async for chunk in response.aiter_raw():
                        answer += chunk
                        if len(answer) >= MAX_ANSWER:
                            break
                finally:
                    await response.aclose()
        except TimeoutError:
            return SendResult(status_code=None, latency_ms=elapsed(), error="timed out")
        except Refused as refused:
            return SendResult(status_code=None, latency_ms=elapsed(), error=f"refused: {refused}")
        except httpx.TimeoutException:
            return SendResult(status_code=None, latency_ms=elapsed(), error="timed out")
        except httpx.HTTPError as error:
            return SendResult(
                status_code=None,
                latency_ms=elapsed(),
                error=f"{type(error).__name__}: {str(error)[:200]}",
            )
        excerpt = bytes(answer[:EXCERPT]).decode("utf-8", "replace")
        return SendResult(
            status_code=response.status_code,
            latency_ms=elapsed(),
            retry_after=response.headers.get("retry-after"),
            excerpt=excerpt,
        )
