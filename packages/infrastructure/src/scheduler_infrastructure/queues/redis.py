"""Redis Streams: one stream per queue and priority, one consumer group per queue.

Queue ``q`` is ten streams ``<prefix>:q:p0`` .. ``<prefix>:q:p9``, each with the consumer group
``workers``. A consumer reads the bands highest first (one Lua script, so a read never takes more
than it may hold) and, when all are empty, blocks on all of them with ``XREADGROUP BLOCK``. An
ack is ``XACK`` + ``XDEL``.

Redelivery: entries pending on a consumer for longer than ``visibility_timeout`` are taken over
by a live consumer with ``XAUTOCLAIM``. A live consumer resets the idle time of its unacked
entries every third of the timeout, so only the entries of a dead (or closed) consumer move. An
entry delivered more than ``max_deliveries`` times, an unreadable one, or one nacked without
requeue is moved to the dead-letter stream ``<prefix>:q:dead`` and acked. ``nack(requeue=True)``
adds the entry again at the end of its band.

Trimming: ``XADD ... MAXLEN ~ maxlen`` keeps each band stream near ``maxlen`` entries. Trimming
removes the oldest entries whether or not they were delivered or acked, so ``maxlen`` must stay
far above any backlog the deployment can build up (default 1,000,000 per band); a trimmed entry
is lost to the queue (the dispatcher's republishing of stale queued runs recovers the run).

The keys of one queue are not hash-tagged; Redis Cluster is not supported.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import uuid
from collections import defaultdict
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT, FieldT

from scheduler_application.errors import Unavailable
from scheduler_application.group_commit import GroupCommit, answer_alike
from scheduler_application.ports.queue import Delivery, RunMessage
from scheduler_infrastructure.queues import messages, redis_streams
from scheduler_infrastructure.queues.priorities import clamp
from scheduler_infrastructure.queues.redis_consumer import RedisStreamsConsumer, RedisTag
from scheduler_infrastructure.queues.redis_streams import (
    DRIVER_ERRORS,
    GROUP,
    PAYLOAD,
    PRIOR_DELIVERIES,
    TRACEPARENT,
)


class RedisStreamsRunQueue:
    """The Redis Streams adapter of ``RunQueue``; ``async with`` connects, exit disconnects."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "scheduler",
        visibility_timeout: float = 30.0,
        claim_interval: float | None = None,
        max_deliveries: int = 5,
        maxlen: int = 1_000_000,
        dead_letter_maxlen: int = 100_000,
        socket_timeout: float = 10.0,
        consumer_name: str | None = None,
    ) -> None:
        if visibility_timeout <= 0 or max_deliveries < 1 or maxlen < 1:
            raise ValueError("visibility_timeout, max_deliveries and maxlen must be positive")
        self._url = url
        self.prefix = prefix
        self.visibility_timeout = visibility_timeout
        self.claim_interval = claim_interval or min(max(visibility_timeout / 2, 0.1), 15.0)
        self.block_seconds = min(self.claim_interval, 2.0)
        self.max_deliveries = max_deliveries
        self.maxlen = maxlen
        self.dead_letter_maxlen = dead_letter_maxlen
        self.socket_timeout = max(socket_timeout, self.block_seconds + 5.0)
        self.consumer_name = consumer_name or (
            f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        )
        self._client: aioredis.Redis | None = None
        self._consumers: set[RedisStreamsConsumer] = set()
        self._serial = itertools.count(1)
        self._acks: GroupCommit[tuple[str, bytes], None] = GroupCommit(
            answer_alike(self._ack_entries), max_batch=1000
        )

    def band_key(self, queue: str, priority: int) -> str:
        return redis_streams.band_key(self.prefix, queue, priority)

    def band_keys(self, queue: str) -> list[str]:
        """The queue's streams, highest priority first."""
        return redis_streams.band_keys(self.prefix, queue)

    def dead_letter_key(self, queue: str) -> str:
        return redis_streams.dead_letter_key(self.prefix, queue)

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._client = aioredis.Redis.from_url(
            self._url,
            decode_responses=False,
            socket_timeout=self.socket_timeout,
            socket_connect_timeout=5.0,
            health_check_interval=30,
            retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=3),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            client_name=f"{self.prefix}-queue",
        )
        self._read_script = self._client.register_script(redis_streams.READ_BY_PRIORITY)
        self._depth_script = self._client.register_script(redis_streams.DEPTH)
        self._forget_script = self._client.register_script(redis_streams.FORGET_CONSUMER)
        self._delete_script = self._client.register_script(redis_streams.DELETE_IF_EMPTY)
        try:
            await self._client.ping()
        except DRIVER_ERRORS as error:
            await self.aclose()
            raise Unavailable(f"Redis is unavailable: {error!r}", dependency="broker") from error
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await asyncio.gather(*(consumer.aclose() for consumer in list(self._consumers)))
        await self._acks.aclose()
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- RunQueue --------------------------------------------------------------------------------

    async def publish(self, message: RunMessage) -> None:
        await self.publish_many((message,))

    async def publish_many(self, messages_: Sequence[RunMessage]) -> None:
        if not messages_:
            return
        async with self._translated():
            pipe = self.client.pipeline(transaction=False)
            for message in messages_:
                fields: dict[FieldT, EncodableT] = {PAYLOAD: messages.encode(message)}
                if message.traceparent:
                    # Also beside the payload, for tools that read the entry's fields.
                    fields[TRACEPARENT] = message.traceparent.encode()
                pipe.xadd(
                    self.band_key(message.queue, clamp(message.priority)),
                    fields,
                    maxlen=self.maxlen,
                    approximate=True,
                )
            await pipe.execute()

    def consume(self, queues: Sequence[str], *, prefetch: int) -> RedisStreamsConsumer:
        consumer = RedisStreamsConsumer(
            self,
            queues=queues,
            prefetch=prefetch,
            name=f"{self.consumer_name}/{next(self._serial)}",
        )
        self._consumers.add(consumer)
        consumer.start(on_close=lambda closed: self._consumers.discard(consumer))
        return consumer

    async def ack(self, delivery: Delivery) -> None:
        tag = _tag(delivery)
        tag.consumer.settle(tag)
        await self._acks.submit((tag.key, tag.entry_id))

    async def nack(self, delivery: Delivery, *, requeue: bool) -> None:
        tag = _tag(delivery)
        tag.consumer.settle(tag)
        if not requeue:
            await self._bury([tag], "rejected")
            return
        async with self._translated():
            pipe = self.client.pipeline(transaction=True)
            pipe.xadd(
                tag.key,
                {PAYLOAD: tag.payload, PRIOR_DELIVERIES: tag.deliveries},
                maxlen=self.maxlen,
                approximate=True,
            )
            pipe.xack(tag.key, GROUP, tag.entry_id)
            pipe.xdel(tag.key, tag.entry_id)
            await pipe.execute()

    async def depth(self, queue: str) -> int:
        """Entries not yet delivered (those delivered and not yet acked are not counted)."""
        async with self._translated():
            return int(await self._depth_script(keys=self.band_keys(queue), args=[GROUP]))

    async def delete_if_empty(self, queue: str) -> bool:
        """The queue's streams (and consumer group) and its dead letters, deleted in one script
        when all are empty."""
        keys = [*self.band_keys(queue), self.dead_letter_key(queue)]
        async with self._translated():
            return bool(await self._delete_script(keys=keys))

    # -- beyond the port -------------------------------------------------------------------------

    async def dead_letters(self, queue: str, *, limit: int = 100) -> list[RunMessage]:
        """Dead-lettered messages of ``queue``, oldest first (unreadable ones left out)."""
        async with self._translated():
            entries: Any = await self.client.xrange(self.dead_letter_key(queue), count=limit)
        found = []
        for _, fields in entries:
            with contextlib.suppress(messages.UnreadableMessage):
                found.append(messages.decode(fields.get(PAYLOAD, b"")))
        return found

    # -- internals -------------------------------------------------------------------------------

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            raise RuntimeError("use `async with RedisStreamsRunQueue(...)` first")
        return self._client

    @contextlib.asynccontextmanager
    async def _translated(self) -> Any:
        try:
            yield
        except DRIVER_ERRORS as error:
            raise Unavailable(f"Redis is unavailable: {error!r}", dependency="broker") from error

    async def _ensure_groups(self, queues: Sequence[str]) -> None:
        """Create each band's group, reading from the start so nothing published earlier is
        skipped."""
        pipe = self.client.pipeline(transaction=False)
        for queue in queues:
            for key in self.band_keys(queue):
                pipe.xgroup_create(key, GROUP, id="0", mkstream=True)
        for outcome in await pipe.execute(raise_on_error=False):
            if isinstance(outcome, ResponseError) and "BUSYGROUP" not in str(outcome):
                raise outcome
            if isinstance(outcome, Exception) and not isinstance(outcome, ResponseError):
                raise outcome

    async def _ack_entries(self, entries: list[tuple[str, bytes]]) -> None:
        by_key: dict[str, list[bytes]] = defaultdict(list)
        for key, entry_id in entries:
            by_key[key].append(entry_id)
        async with self._translated():
            pipe = self.client.pipeline(transaction=False)
            for key, ids in by_key.items():
                pipe.xack(key, GROUP, *ids)
                pipe.xdel(key, *ids)
            await pipe.execute()

    async def _bury(self, tags: Sequence[RedisTag], reason: str) -> None:
        """Move entries to their queue's dead-letter stream and ack them, atomically."""
        async with self._translated():
            pipe = self.client.pipeline(transaction=True)
            for tag in tags:
                pipe.xadd(
                    self.dead_letter_key(tag.queue),
                    {
                        PAYLOAD: tag.payload,
                        b"reason": reason,
                        b"deliveries": tag.deliveries,
                        b"source": f"{tag.key} {tag.entry_id.decode()}",
                    },
                    maxlen=self.dead_letter_maxlen,
                    approximate=True,
                )
                pipe.xack(tag.key, GROUP, tag.entry_id)
                pipe.xdel(tag.key, tag.entry_id)
            await pipe.execute()


def _tag(delivery: Delivery) -> RedisTag:
    if not isinstance(delivery.tag, RedisTag):
        raise TypeError("not a delivery of the Redis queue")
    return delivery.tag
