"""The webhook sender: one POST per attempt, through the outbound policy.

The policy is the ``http`` executor's (:mod:`scheduler_domain.outbound`) and is applied the
same way: every connection resolves its host here, refuses the name when any of its
addresses is forbidden, and connects to the vetted address itself, so a DNS answer that
changes between the check and the connect (rebinding) cannot slip through. Redirects are
never followed (a 3xx is a failed delivery), so no hop can lead to a refused target. The
answer is read up to :data:`MAX_ANSWER` bytes and only an excerpt is kept.

The guarded connections are :mod:`scheduler_infrastructure.outbound.guarded`'s, the same as
the ``http`` executor's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

import httpx

from scheduler_application.ports.webhooks import SendResult
from scheduler_domain.outbound import OutboundPolicy
from scheduler_infrastructure.outbound.guarded import (
    DestinationRefused,
    GuardedTransport,
    Unresolved,
    vetted_addresses,
)

#: Bytes of a receiver's answer read at most (the rest is never read).
MAX_ANSWER = 4096
#: Characters of the answer kept for the delivery log.
EXCERPT = 200


class HttpWebhookSender:
    """``WebhookSender`` over httpx; an async context manager (closes its connection pool)."""

    def __init__(self, *, policy: OutboundPolicy, user_agent: str = "scheduler-webhooks") -> None:
        self._policy = policy
        self._client = httpx.AsyncClient(
            transport=GuardedTransport(policy=policy, limits=httpx.Limits(max_connections=100)),
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
        except DestinationRefused as refused:
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
        except DestinationRefused as refused:
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
