"""The http executor's network backend: one resolution per connection, every address vetted,
and the connection made to a vetted address, never to the name."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpcore
import pytest

from scheduler_domain.outbound import OutboundPolicy
from scheduler_infrastructure.outbound.guarded import DestinationRefused, GuardedBackend

pytestmark = pytest.mark.timeout(10)


class RecordingBackend(httpcore.AsyncNetworkBackend):
    """Connects nowhere: records each host it is asked for; ``refusing`` hosts fail."""

    def __init__(self, *, refusing: Iterable[str] = ()) -> None:
        self.connected: list[str] = []
        self._refusing = set(refusing)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connected.append(host)
        if host in self._refusing:
            raise httpcore.ConnectError("connection refused")
        return httpcore.AsyncNetworkStream()


class ScriptedResolver:
    """Answers each lookup with the next answer of its script (a rebinding DNS server)."""

    def __init__(self, *answers: list[str]) -> None:
        self._answers = list(answers)
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        return self._answers.pop(0)


def _backend(
    resolver: ScriptedResolver, inner: RecordingBackend, allow: Iterable[str] = ()
) -> GuardedBackend:
    return GuardedBackend(policy=OutboundPolicy.from_allow(allow), backend=inner, resolver=resolver)


async def test_the_connection_goes_to_the_vetted_address_not_the_name() -> None:
    inner = RecordingBackend()
    # A rebinding server: public for the check, loopback for whoever asks next.
    resolver = ScriptedResolver(["93.184.216.34"], ["127.0.0.1"])

    await _backend(resolver, inner).connect_tcp("rebind.example", 80)

    assert inner.connected == ["93.184.216.34"]
    assert resolver.asked == ["rebind.example"]


async def test_one_forbidden_address_refuses_the_name_before_any_connection() -> None:
    inner = RecordingBackend()
    resolver = ScriptedResolver(["93.184.216.34", "127.0.0.1"])

    with pytest.raises(DestinationRefused, match=r"127\.0\.0\.1: loopback"):
        await _backend(resolver, inner).connect_tcp("mixed.example", 80)

    assert inner.connected == []


async def test_each_vetted_address_is_tried_in_turn() -> None:
    inner = RecordingBackend(refusing=["2606:4700::1"])
    resolver = ScriptedResolver(["2606:4700::1", "93.184.216.34", "93.184.216.34"])

    await _backend(resolver, inner).connect_tcp("dual.example", 443)

    assert inner.connected == ["2606:4700::1", "93.184.216.34"]


async def test_an_allowed_name_reaches_its_internal_address() -> None:
    inner = RecordingBackend()
    resolver = ScriptedResolver(["10.0.0.7"])

    await _backend(resolver, inner, allow=["api.internal"]).connect_tcp("API.internal", 80)

    assert inner.connected == ["10.0.0.7"]


async def test_a_name_that_does_not_resolve_is_refused() -> None:
    async def failing(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    backend = GuardedBackend(policy=OutboundPolicy(), backend=RecordingBackend(), resolver=failing)

    with pytest.raises(DestinationRefused, match="did not resolve"):
        await backend.connect_tcp("nowhere.invalid", 80)


async def test_unix_sockets_are_never_an_outbound_destination() -> None:
    backend = GuardedBackend(policy=OutboundPolicy(), backend=RecordingBackend())

    with pytest.raises(DestinationRefused):
        await backend.connect_unix_socket("/var/run/docker.sock")
