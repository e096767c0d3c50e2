"""The rate limiters: Redis's shared bucket holds its rate across callers, and Redis going away
(or coming back) never breaks an acquisition."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis
from dispatcher_stack import DEAD_REDIS_URL, REDIS_URL

from scheduler_domain.clock import utc_now
from scheduler_domain.rate_limit import RateLimit
from scheduler_infrastructure.ratelimit import LocalRateLimiter, RedisRateLimiter

pytestmark = pytest.mark.timeout(60)

ZERO = timedelta(0)


@pytest.mark.redis
async def test_redis_bucket_holds_ten_per_second_from_two_callers(redis_prefix: str) -> None:
    limit = RateLimit.parse("10/s")
    key = "task:shared"
    duration = 3.0
    async with (
        RedisRateLimiter(url=REDIS_URL, prefix=redis_prefix) as one,
        RedisRateLimiter(url=REDIS_URL, prefix=redis_prefix) as two,
    ):
        burst = 0
        while await one.acquire(key, limit, now=utc_now()) == ZERO:
            burst += 1
        assert burst == 10  # the bucket starts full: one burst of its capacity
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def caller(limiter: RedisRateLimiter) -> int:
            granted = 0
            while loop.time() - start < duration:
                wait = await limiter.acquire(key, limit, now=utc_now())
                if wait > ZERO:
                    await asyncio.sleep(min(wait.total_seconds(), 0.02))
                elif loop.time() - start <= duration:  # granted within the window
                    granted += 1
            return granted

        counts = await asyncio.gather(caller(one), caller(two))
    assert all(count > 0 for count in counts)
    assert 27 <= sum(counts) <= 33  # 10/s over 3 s, within 10 %
    assert not one.degraded
    assert not two.degraded


@pytest.mark.redis
async def test_bucket_keys_expire_once_full_again(redis_prefix: str) -> None:
    async with RedisRateLimiter(url=REDIS_URL, prefix=redis_prefix) as limiter:
        await limiter.acquire("task:ttl", RateLimit.parse("5/s"), now=utc_now())
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            ttl = await client.pttl(limiter.key("task:ttl"))
        finally:
            await client.aclose()
    assert 0 < ttl <= 1_300


async def test_a_dead_redis_falls_back_to_local_buckets_without_failing() -> None:
    limit = RateLimit.parse("2/s")
    now = utc_now()
    async with RedisRateLimiter(url=DEAD_REDIS_URL, retry_after=timedelta(seconds=5)) as limiter:
        async with asyncio.timeout(5):
            waits = [await limiter.acquire("task:t", limit, now=now) for _ in range(3)]
        assert waits[:2] == [ZERO, ZERO]
        assert waits[2] == timedelta(seconds=0.5)
        assert limiter.degraded
        assert (limiter.outages, limiter.fallbacks) == (1, 3)


class _Proxy:
    """A TCP relay to Redis that the test can cut and restore (Redis going down and up)."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = urlsplit(REDIS_URL)
        upstream_reader, upstream_writer = await asyncio.open_connection(
            upstream.hostname or "127.0.0.1", upstream.port or 6379
        )
        self._writers.update({writer, upstream_writer})

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


@contextlib.asynccontextmanager
async def proxy() -> AsyncIterator[_Proxy]:
    relay = _Proxy()
    await relay.start()
    try:
        yield relay
    finally:
        with contextlib.suppress(Exception):
            await relay.stop()


@pytest.mark.redis
async def test_the_limiter_degrades_while_redis_is_down_and_recovers(redis_prefix: str) -> None:
    limit = RateLimit.parse("100/s")
    async with proxy() as relay:
        url = f"redis://127.0.0.1:{relay.port}/0"
        retry = timedelta(seconds=0.2)
        async with RedisRateLimiter(url=url, prefix=redis_prefix, retry_after=retry) as limiter:
            assert await limiter.acquire("task:r", limit, now=utc_now()) == ZERO
            assert not limiter.degraded

            await relay.stop()
            assert await limiter.acquire("task:r", limit, now=utc_now()) == ZERO  # locally
            assert limiter.degraded
            assert limiter.outages == 1

            await relay.start()
            await asyncio.sleep(0.3)
            assert await limiter.acquire("task:r", limit, now=utc_now()) == ZERO
            assert not limiter.degraded
            assert limiter.outages == 1
            assert limiter.fallbacks == 1


async def test_local_bucket_grants_a_burst_then_refills_by_elapsed_time() -> None:
    limiter = LocalRateLimiter()
    limit = RateLimit.parse("3/m")
    now = utc_now()
    assert [await limiter.acquire("k", limit, now=now) for _ in range(3)] == [ZERO] * 3
    assert await limiter.acquire("k", limit, now=now) == timedelta(seconds=20)
    assert await limiter.acquire("k", limit, now=now + timedelta(seconds=20)) == ZERO
    assert await limiter.acquire("other", limit, now=now) == ZERO  # buckets are per key
