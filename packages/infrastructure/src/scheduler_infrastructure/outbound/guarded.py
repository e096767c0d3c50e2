"""Outbound HTTP under the :class:`~scheduler_domain.outbound.OutboundPolicy`: every
connection resolved, vetted, then made to the vetted address. The one implementation, used by
the worker's ``http`` executor (its composition root injects a :class:`GuardedTransport`) and
by the webhook sender.

:class:`GuardedBackend` is an httpcore network backend. For each new connection it resolves
the host itself, asks the :class:`~scheduler_domain.outbound.OutboundPolicy` about *every*
address the name has (one forbidden address refuses the name: a name that mixes public and
internal addresses is a rebinding attempt), and connects to those addresses — not to the name
— so a DNS answer that changes between the check and the connect cannot slip through.
httpcore still uses the URL's host for the ``Host`` header and for TLS (SNI and certificate
checks), since it only hands the network backend the host to connect to.

Redirects are followed by httpx, and each hop to a new origin opens its connection here, so
it is vetted the same way. Connections reused from the pool belong to an origin vetted when
they were opened.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpcore
import httpx

from scheduler_domain.outbound import OutboundPolicy, parse_address


class DestinationRefused(httpcore.ConnectError):
    """The destination was not connected to: its address is forbidden, or its name did not
    resolve. The message is for the operator's log, never for a task."""


class Unresolved(DestinationRefused):
    """The name did not resolve (now): no connection is made, but it is no policy refusal."""


#: Resolves ``(host, port)`` to addresses as text, raising :class:`OSError` when it cannot.
Resolver = Callable[[str, int], Awaitable[list[str]]]


async def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's resolver (``getaddrinfo``), which also reads every numeric
    notation of an IPv4 address (``2130706433``, ``0x7f.1``, ``127.1``)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(sockaddr[0]) for _family, _type, _proto, _name, sockaddr in infos]


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """``backend`` makes the connections (default: httpcore's anyio backend), ``resolver``
    answers for names (default: :func:`system_resolver`)."""

    def __init__(
        self,
        *,
        policy: OutboundPolicy,
        backend: httpcore.AsyncNetworkBackend | None = None,
        resolver: Resolver = system_resolver,
    ) -> None:
        self._policy = policy
        self._backend = backend if backend is not None else httpcore.AnyIOBackend()
        self._resolve = resolver

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._vetted(host, port, timeout)
        failure: Exception | None = None
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
        assert failure is not None  # _vetted never returns an empty list
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise DestinationRefused(f"unix socket {path!r}: not an outbound destination")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)

    async def _vetted(self, host: str, port: int, timeout: float | None) -> list[str]:
        try:
            async with asyncio.timeout(timeout):
                return await vetted_addresses(self._policy, host, port, resolver=self._resolve)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host!r} timed out") from None


async def vetted_addresses(
    policy: OutboundPolicy, host: str, port: int, *, resolver: Resolver = system_resolver
) -> list[str]:
    """Every address of ``host`` as text, in resolver order, once each; refused
    (:class:`DestinationRefused`, :class:`Unresolved` for a name that does not resolve) unless
    the policy permits all of them: one forbidden address refuses the name."""
    try:
        resolved = await resolver(host, port)
    except (OSError, UnicodeError) as exc:
        raise Unresolved(f"{host!r} did not resolve: {exc}") from None
    addresses: list[str] = []
    for text in resolved:
        address = parse_address(text)
        if address is None:
            raise DestinationRefused(f"{host!r} resolved to {text!r}, not an IP address")
        reason = policy.refusal(host, address)
        if reason is not None:
            raise DestinationRefused(f"{host!r} resolves to {address}: {reason}")
        if text not in addresses:
            addresses.append(text)
    if not addresses:
        raise DestinationRefused(f"{host!r} has no address")
    return addresses


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (request mapping, error translation, pooling) on a connection
    pool whose network backend is a :class:`GuardedBackend`.

    httpx does not take a network backend as an argument, so the pool it builds is replaced
    by an equivalent one that has it; the executor's tests fail if that stops taking effect.
    Environment proxies and ``.netrc`` are never consulted (``trust_env`` off): a proxy would
    connect on the caller's behalf past the policy, and the process's credentials are not a
    task's.
    """

    def __init__(self, *, policy: OutboundPolicy, limits: httpx.Limits | None = None) -> None:
        limits = limits if limits is not None else httpx.Limits()
        super().__init__(trust_env=False, limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy=policy),
        )


def public_only() -> GuardedTransport:
    """A guarded transport under the default policy: public destinations only."""
    return GuardedTransport(policy=OutboundPolicy())
