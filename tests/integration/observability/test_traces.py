"""One trace per run, across the queue: the API request that triggers a run, the publish, the
worker's consume and the execution share one trace id and form one chain of parents.

The API and the worker are built by their own composition roots on separate resources — their
own queue connections and their own tracer providers, as two processes would have — over the
real PostgreSQL and the real broker; the only thing they share is an in-memory span exporter.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from datetime import UTC, datetime

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from scheduler_api.bootstrap import build_api
from scheduler_application.accounts.users import AccountService
from scheduler_application.ports.queue import RunMessage
from scheduler_domain.accounts import Role
from scheduler_infrastructure.config import (
    ApiSettings,
    DatabaseSettings,
    QueueSettings,
    RabbitMQSettings,
    RedisSettings,
    Settings,
    WorkerSettings,
)
from scheduler_infrastructure.persistence.engine import create_engine
from scheduler_infrastructure.persistence.migrations import upgrade
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from scheduler_infrastructure.queues import build_run_queue
from scheduler_infrastructure.resources import Resources, open_resources
from scheduler_infrastructure.security.passwords import Argon2PasswordHasher
from scheduler_worker.bootstrap import build_worker
from services import RABBITMQ_URL, REDIS_URL, require_service

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]

PASSWORD = "correct horse battery staple"
FAST_HASHER = Argon2PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def _settings(database_url: str, backend: str) -> Settings:
    return Settings(
        database=DatabaseSettings(url=database_url),
        queue=QueueSettings(backend=backend, prefix=f"trace{secrets.token_hex(4)}"),
        rabbitmq=RabbitMQSettings(url=RABBITMQ_URL if backend == "rabbitmq" else ""),
        redis=RedisSettings(url=REDIS_URL if backend == "redis" else ""),
        api=ApiSettings(jwt_secret="trace-test-secret-" + "x" * 32),
        worker=WorkerSettings(capacity=2, heartbeat_seconds=0.5, lease_seconds=5, metrics_port=0),
    )


def _process(
    settings: Settings, component: str, exporter: InMemorySpanExporter
) -> AbstractAsyncContextManager[Resources]:
    """One process's resources, as its composition root opens them, its spans to ``exporter``."""
    return open_resources(
        settings, components=[component], span_processor=SimpleSpanProcessor(exporter)
    )


async def _trigger_and_wait(resources: Resources, exporter: InMemorySpanExporter) -> str:
    app = build_api(resources, hasher=FAST_HASHER)
    for hook in app.on_startup:
        await hook()  # type: ignore[call-arg]
    accounts = AccountService(
        uow_factory=resources.uow_factory, clock=resources.clock, hasher=FAST_HASHER
    )
    username = f"tracer-{secrets.token_hex(3)}"
    await accounts.create_user(username, PASSWORD, Role.USER)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        login = await client.post(
            "/api/v1/auth/login", json={"username": username, "password": PASSWORD}
        )
        assert login.status_code == 200, login.text
        client.headers["authorization"] = f"Bearer {login.json()['access_token']}"
        task = await client.post("/api/v1/tasks", json={"name": "traced", "executor": "noop"})
        assert task.status_code == 201, task.text
        exporter.clear()
        run = await client.post(f"/api/v1/tasks/{task.json()['id']}/trigger")
        assert run.status_code == 201, run.text
        run_id = str(run.json()["id"])
        async with asyncio.timeout(30):
            while (await client.get(f"/api/v1/runs/{run_id}")).json()["status"] != "succeeded":
                await asyncio.sleep(0.05)
        return run_id


def _one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [span for span in spans if span.name == name]
    assert len(found) == 1, (name, [span.name for span in spans])
    return found[0]


def _parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
        pytest.param("redis", marks=pytest.mark.redis),
        "postgres",
    ],
)
async def test_one_trace_links_the_api_trigger_to_the_workers_execution(
    backend: str, fresh_postgres_database: Callable[[], Awaitable[str]]
) -> None:
    if backend != "postgres":
        await require_service(backend)
    postgres_url = await fresh_postgres_database()
    await asyncio.to_thread(upgrade, postgres_url)  # Alembic runs its own event loop
    settings = _settings(postgres_url, backend)
    exporter = InMemorySpanExporter()
    async with AsyncExitStack() as stack:
        api = await stack.enter_async_context(_process(settings, "api", exporter))
        worker_resources = await stack.enter_async_context(_process(settings, "worker", exporter))
        worker = await stack.enter_async_context(build_worker(worker_resources))
        working = asyncio.create_task(worker.run())
        try:
            await asyncio.wait_for(worker.wait_started(), timeout=10)
            run_id = await _trigger_and_wait(api, exporter)
        finally:
            worker.stop()
            await asyncio.wait_for(working, timeout=20)

    spans = list(exporter.get_finished_spans())
    [request] = [span for span in spans if span.kind is SpanKind.SERVER and "trigger" in span.name]
    # Named by the route template: no ids in span names or in http.route.
    assert request.name == "POST /api/v1/tasks/{task_id}/trigger"
    assert request.attributes is not None
    assert request.attributes["http.route"] == "/api/v1/tasks/{task_id}/trigger"
    assert request.parent is None
    trigger = _one(spans, "run.trigger")
    publish = _one(spans, "run.publish")
    consume = _one(spans, "run.consume")
    execute = _one(spans, "run.execute")
    trace_id = request.context.trace_id
    assert {s.context.trace_id for s in (trigger, publish, consume, execute)} == {trace_id}
    assert _parent_id(execute) == consume.context.span_id
    assert _parent_id(consume) == publish.context.span_id
    assert _parent_id(publish) == trigger.context.span_id
    ancestors = {span.context.span_id: span for span in spans}
    parent = ancestors.get(_parent_id(trigger) or 0)
    while parent is not None and parent is not request:
        parent = ancestors.get(_parent_id(parent) or 0)
    assert parent is request, "run.trigger is not inside the API request's span"

    assert publish.kind is SpanKind.PRODUCER
    assert consume.kind is SpanKind.CONSUMER
    assert publish.attributes is not None
    assert consume.attributes is not None
    assert execute.attributes is not None
    assert publish.attributes["messaging.destination.name"] == "default"
    assert consume.attributes["scheduler.claim"] == "claimed"
    assert execute.attributes["scheduler.run.status"] == "succeeded"
    assert execute.resource.attributes["service.name"] == "scheduler-worker"
    assert request.resource.attributes["service.name"] == "scheduler-api"
    # The database work of the trigger is in the trace too (the SQLAlchemy instrumentation).
    assert any(span.kind is SpanKind.CLIENT and span.context.trace_id == trace_id for span in spans)
    # The run row carries the context the worker continued from.
    engine = create_engine(postgres_url)
    try:
        async with SqlUnitOfWorkFactory(engine)() as uow:
            stored = await uow.runs.get(run_id)
    finally:
        await engine.dispose()
    assert stored is not None
    assert stored.traceparent is not None
    assert stored.traceparent.split("-")[1] == f"{trace_id:032x}"


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _traced_message(*, priority: int) -> RunMessage:
    return RunMessage(
        run_id="r-1",
        task_id="t-1",
        attempt=1,
        token=1,
        queue="default",
        priority=priority,
        enqueued_at=datetime.now(UTC),
        traceparent=TRACEPARENT,
    )


@pytest.mark.rabbitmq
async def test_a_rabbitmq_message_carries_the_trace_context_in_its_headers() -> None:
    import aio_pika

    await require_service("rabbitmq")
    prefix = f"trace{secrets.token_hex(4)}"
    async with build_run_queue(backend="rabbitmq", rabbitmq_url=RABBITMQ_URL, prefix=prefix) as q:
        await q.publish(_traced_message(priority=0))
        connection = await aio_pika.connect(RABBITMQ_URL)
        try:
            channel = await connection.channel()
            queue = await channel.get_queue(q.queue_name("default"), ensure=False)
            raw = await queue.get(timeout=5)
            assert raw is not None
            assert raw.headers["traceparent"] == TRACEPARENT
            await raw.ack()
            await queue.delete(if_unused=False, if_empty=False)
        finally:
            await connection.close()


@pytest.mark.redis
async def test_a_redis_stream_entry_carries_the_trace_context_beside_its_payload() -> None:
    import redis.asyncio as aioredis

    await require_service("redis")
    prefix = f"trace{secrets.token_hex(4)}"
    async with build_run_queue(backend="redis", redis_url=REDIS_URL, prefix=prefix) as q:
        await q.publish(_traced_message(priority=3))
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            key = q.band_key("default", 3)
            [(_, fields)] = await client.xrange(key)
            assert fields[b"traceparent"] == TRACEPARENT.encode()
            await client.delete(*[k async for k in client.scan_iter(f"{prefix}*")])
        finally:
            await client.aclose()
