"""The Redis Streams consumer: priority-ordered reads, taking over dead consumers' entries,
keeping its own entries from being taken over."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from redis.exceptions import ResponseError

from scheduler_application.ports.queue import Delivery
from scheduler_infrastructure.queues import messages
from scheduler_infrastructure.queues.consumer import BufferedConsumer
from scheduler_infrastructure.queues.priorities import PRIORITIES
from scheduler_infrastructure.queues.redis_streams import (
    DRIVER_ERRORS,
    GROUP,
    PAYLOAD,
    PRIOR_DELIVERIES,
    id_order,
    pairs,
)

if TYPE_CHECKING:
    from scheduler_infrastructure.queues.redis import RedisStreamsRunQueue

log = logging.getLogger("scheduler.queues.redis")

#: How long a full consumer waits for more capacity before reading again (see
#: ``BufferedConsumer.wait_for_capacity``): a little latency under load for fewer round trips.
FETCH_GATHER_SECONDS = 0.005


@dataclass(slots=True, eq=False)
class RedisTag:
    queue: str
    key: str
    entry_id: bytes
    payload: bytes
    deliveries: int
    consumer: RedisStreamsConsumer


class RedisStreamsConsumer(BufferedConsumer):
    def __init__(
        self, owner: RedisStreamsRunQueue, *, queues: Sequence[str], prefetch: int, name: str
    ) -> None:
        super().__init__(queues=queues, prefetch=prefetch)
        self.name = name
        self._owner = owner
        # All bands of all queues, highest priority first (queue order breaks ties).
        self._queue_of = {
            owner.band_key(queue, priority): queue
            for priority in PRIORITIES
            for queue in self.queues
        }
        self._keys = list(self._queue_of)
        self._claim_cursors = dict.fromkeys(self._keys, b"0-0")
        self._next_sweep = 0.0

    def _loops(self) -> Sequence[Coroutine[Any, Any, None]]:
        return (self._fetch_forever(), self._keep_entries())

    async def _fetch_forever(self) -> None:
        failures = 0
        groups_ready = False
        loop = asyncio.get_running_loop()
        while True:
            await self.wait_for_capacity(gather=FETCH_GATHER_SECONDS)
            try:
                if not groups_ready:
                    await self._owner._ensure_groups(self.queues)
                    groups_ready = True
                if loop.time() >= self._next_sweep:
                    self._next_sweep = loop.time() + self._owner.claim_interval
                    if await self._claim_idle():
                        continue
                if not await self._read_by_priority():
                    await self._read_blocking()
                failures = 0
            except ResponseError as error:
                if "NOGROUP" not in str(error):
                    raise
                groups_ready = False  # the streams were deleted: create them again
            except DRIVER_ERRORS as error:
                failures += 1
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(level, "queue consumer cannot read (%r); retrying", error)
                await asyncio.sleep(min(0.05 * 2**failures, 5.0))

    async def _read_by_priority(self) -> bool:
        found = await self._owner._read_script(keys=self._keys, args=[GROUP, self.name, self.free])
        for index, entry_id, fields in found:
            await self._accept(self._tag(self._keys[index], entry_id, pairs(fields), deliveries=1))
        return bool(found)

    async def _read_blocking(self) -> None:
        reply: Any = await self._owner.client.xreadgroup(
            GROUP,
            self.name,
            dict.fromkeys(self._keys, ">"),
            count=self.free,
            block=max(int(self._owner.block_seconds * 1000), 10),
        )
        for key, entries in reply or ():
            for entry_id, fields in entries:
                await self._accept(self._tag(key.decode(), entry_id, fields, deliveries=1))

    async def _claim_idle(self) -> bool:
        """Take over entries idle longer than the visibility timeout; True if any were taken."""
        client = self._owner.client
        idle_ms = int(self._owner.visibility_timeout * 1000)
        taken = False
        for key in self._keys:
            wanted = self.free
            if wanted <= 0:
                break
            reply: Any = await client.xautoclaim(
                key, GROUP, self.name, idle_ms, self._claim_cursors[key], count=wanted
            )
            # Redis 7 adds a third element: pending entries no longer in the stream (trimmed).
            cursor, entries, deleted = reply[0], reply[1], reply[2] if len(reply) > 2 else []
            self._claim_cursors[key] = cursor
            if deleted:
                log.warning("%d pending entries of %s were trimmed", len(deleted), key)
            entries = [(entry_id, fields) for entry_id, fields in entries if fields]
            if not entries:
                continue
            taken = True
            counts = await self._delivery_counts(key, [entry_id for entry_id, _ in entries])
            over: list[RedisTag] = []
            for entry_id, fields in entries:
                tag = self._tag(key, entry_id, fields, deliveries=counts.get(entry_id, 2))
                if tag.deliveries > self._owner.max_deliveries:
                    over.append(tag)
                else:
                    await self._accept(tag)
            if over:
                log.warning("dead-lettering %d entries of %s delivered too often", len(over), key)
                await self._owner._bury(over, "delivery limit reached")
        return taken

    async def _delivery_counts(self, key: str, ids: list[bytes]) -> dict[bytes, int]:
        pending = await self._owner.client.xpending_range(
            key,
            GROUP,
            min=min(ids, key=id_order),
            max=max(ids, key=id_order),
            count=len(ids) + self.prefetch,
            consumername=self.name,
        )
        return {cast(bytes, row["message_id"]): int(row["times_delivered"]) for row in pending}

    def _tag(
        self, key: str, entry_id: bytes, fields: dict[bytes, bytes], *, deliveries: int
    ) -> RedisTag:
        """``deliveries`` counts this group's deliveries of the entry; an entry added again by
        a requeue carries the count of its earlier life."""
        total = deliveries + int(fields.get(PRIOR_DELIVERIES, 0))
        return RedisTag(self._queue_of[key], key, entry_id, fields.get(PAYLOAD, b""), total, self)

    async def _accept(self, tag: RedisTag) -> None:
        try:
            message = messages.decode(tag.payload)
        except messages.UnreadableMessage as error:
            log.error("dead-lettering unreadable entry %s of %s: %s", tag.entry_id, tag.key, error)
            await self._owner._bury([tag], "unreadable")
            return
        self.push(Delivery(message=message, tag=tag, redelivered=tag.deliveries > 1))

    async def _keep_entries(self) -> None:
        """Reset the idle time of our unacked entries so that nobody claims them from us."""
        client = self._owner.client
        while True:
            await asyncio.sleep(self._owner.visibility_timeout / 3)
            by_key: dict[str, list[bytes]] = defaultdict(list)
            for tag in self.unacked_tags:
                if isinstance(tag, RedisTag):
                    by_key[tag.key].append(tag.entry_id)
            if not by_key:
                continue
            try:
                pipe = client.pipeline(transaction=False)
                for key, ids in by_key.items():
                    pipe.xclaim(key, GROUP, self.name, 0, list[Any](ids), justid=True)
                await pipe.execute()
            except DRIVER_ERRORS as error:
                log.warning("queue consumer cannot keep its entries (%r)", error)

    async def _shutdown(self, buffered: list[Delivery]) -> None:
        """Make the never-handed-out entries claimable at once; forget this consumer's name
        where it holds nothing (handed-out unacked entries stay until acked or claimed)."""
        client = self._owner.client
        by_key: dict[str, list[bytes]] = defaultdict(list)
        for delivery in buffered:
            if isinstance(delivery.tag, RedisTag):
                by_key[delivery.tag.key].append(delivery.tag.entry_id)
        idle_ms = int(self._owner.visibility_timeout * 1000) * 2
        try:
            if by_key:
                pipe = client.pipeline(transaction=False)
                for key, ids in by_key.items():
                    pipe.xclaim(key, GROUP, self.name, 0, list[Any](ids), idle=idle_ms, justid=True)
                await pipe.execute()
            await self._owner._forget_script(keys=self._keys, args=[GROUP, self.name])
        except DRIVER_ERRORS as error:
            log.warning("queue consumer could not clean up (%r)", error)
