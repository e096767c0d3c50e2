"""``scheduler_dependency_unavailable_total{dependency}``: outages of the database, the broker
and Redis are counted where the components meet them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from recording_queue import InMemoryRunQueue
from scheduler_application.accounts.access import Principal
from scheduler_application.errors import Unavailable
from scheduler_application.operations.gauges import ClusterGauges
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import (
    OPEN_EXECUTOR_POLICY,
    FakeClock,
    InMemoryStore,
    InMemoryUnitOfWorkFactory,
)
from scheduler_dispatcher.loop_group import LoopGroup
from scheduler_dispatcher.loops import PeriodicLoop
from scheduler_domain.accounts import Role
from scheduler_domain.rate_limit import RateLimit
from scheduler_infrastructure.ratelimit import RedisRateLimiter
from scheduler_infrastructure.telemetry import PrometheusMetrics

pytestmark = pytest.mark.timeout(30)
#: A port nothing listens on: a Redis that is down.
DEAD_REDIS_URL = "redis://127.0.0.1:6390/0"


def outages(metrics: PrometheusMetrics, dependency: str) -> float:
    value = metrics.registry.get_sample_value(
        "scheduler_dependency_unavailable_total", {"dependency": dependency}
    )
    return value or 0.0


async def test_a_dispatcher_loop_counts_the_outages_it_meets() -> None:
    metrics = PrometheusMetrics()
    failures: list[str] = ["database", "broker"]

    async def step() -> bool:
        if failures:
            raise Unavailable("down", dependency=failures.pop(0))
        return False

    loop = PeriodicLoop("flaky", step, interval=timedelta(milliseconds=10))
    dispatcher = LoopGroup(loops=[loop], observer=metrics)
    running = asyncio.create_task(dispatcher.run())
    async with asyncio.timeout(10):
        while outages(metrics, "broker") < 1:
            await asyncio.sleep(0.01)
    dispatcher.stop()
    await running
    assert outages(metrics, "database") == 1
    assert outages(metrics, "broker") == 1
    assert outages(metrics, "redis") == 0


async def test_redis_rate_limiter_counts_each_failed_attempt_to_reach_redis() -> None:
    metrics = PrometheusMetrics()
    limiter = RedisRateLimiter(
        url=DEAD_REDIS_URL,
        timeout=0.2,
        retry_after=timedelta(seconds=60),
        on_unavailable=lambda: metrics.dependency_unavailable("redis"),
    )
    async with limiter:
        now = datetime.now(UTC)
        for _ in range(3):
            await limiter.acquire("task:x", RateLimit.parse("10/s"), now=now)
    # One attempt reached for Redis; the others were answered locally while it was down.
    assert outages(metrics, "redis") == 1


class DownBroker(InMemoryRunQueue):
    async def depth(self, queue: str) -> int:
        raise Unavailable("the broker is down", dependency="broker")


async def test_gauge_sampling_counts_a_broker_that_cannot_give_depths() -> None:
    metrics = PrometheusMetrics()
    uow_factory = InMemoryUnitOfWorkFactory(InMemoryStore())
    clock = FakeClock(datetime(2030, 1, 1, tzinfo=UTC))
    owner = Principal(subject_id="user-1", role=Role.USER)
    await TaskService(
        uow_factory=uow_factory, clock=clock, executor_policy=OPEN_EXECUTOR_POLICY
    ).create({"name": "report", "executor": "noop", "queue": "reports"}, principal=owner)
    gauges = ClusterGauges(uow_factory=uow_factory, queue=DownBroker(), observer=metrics)
    sample = await gauges.sample()
    assert sample.queue_depths == {}
    assert sample.workers_by_status == {"online": 0, "draining": 0, "offline": 0}
    assert outages(metrics, "broker") == 1
