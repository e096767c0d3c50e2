"""The broker goes away while runs are being triggered: every accepted run still completes,
consumers come back, and no healthy worker executes a run twice (issue 3)."""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

import pytest
import redis.asyncio as aioredis
from harness import Cluster, eventually
from scenario import Scenario

from scheduler_domain.status import RunStatus
from services import REDIS_URL, require

pytestmark = [pytest.mark.timeout(240)]
TOTAL = 150


@pytest.fixture
def scenario(uow_factory: Any, tmp_path: Any) -> Scenario:
    return Scenario(uow_factory=uow_factory, workdir=tmp_path)


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


async def _rabbitmq_answers() -> bool:
    import aio_pika

    try:
        connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/", timeout=5)
    except Exception:
        return False
    await connection.close()
    return True


async def _trigger_through_outage(scenario: Scenario, task_id: str, outage: Any) -> list[str]:
    # Warm up first, so the outage hits connected publishers and consumers, not start-up.
    warm = await scenario.trigger(task_id)
    await eventually(lambda: _is_succeeded(scenario, warm.id), timeout=60, interval=0.2)
    ids: list[str] = [warm.id]

    async def trigger_all() -> None:
        for _ in range(TOTAL):
            ids.append((await scenario.trigger(task_id)).id)
            await asyncio.sleep(0.02)

    await asyncio.gather(trigger_all(), outage())
    return ids


async def _assert_all_done_once(scenario: Scenario, ids: list[str]) -> None:
    async def done() -> bool:
        statuses = [(await scenario.get(i)).status for i in ids]
        return all(s is RunStatus.SUCCEEDED for s in statuses)

    await eventually(done, timeout=150, interval=0.5)
    _, ends = scenario.ledger_counts()
    assert all(ends[i] == 1 for i in ids), [i for i in ids if ends[i] != 1]


@pytest.mark.rabbitmq
@pytest.mark.postgres
async def test_rabbitmq_app_restart_during_triggers_loses_and_duplicates_nothing(
    cluster_factory: Any, scenario: Scenario
) -> None:
    require("RabbitMQ", None if await _rabbitmq_answers() else "no answer on 5672")
    cluster: Cluster = cluster_factory("rabbitmq")
    cluster.worker("w1")
    cluster.worker("w2")
    cluster.dispatcher()
    task_id = await scenario.ledger_task("through-rabbit-outage", seconds=0.05)

    async def outage() -> None:
        await asyncio.sleep(1.0)
        try:
            await asyncio.to_thread(_rabbitmqctl, "stop_app")
            await asyncio.sleep(3.0)
        finally:
            await asyncio.to_thread(_rabbitmqctl, "start_app")
            await eventually(_rabbitmq_answers, timeout=60, interval=0.5)

    ids = await _trigger_through_outage(scenario, task_id, outage)
    await _assert_all_done_once(scenario, ids)
    # Consumers came back: a run triggered now is picked up promptly.
    late = await scenario.trigger(task_id)
    await eventually(lambda: _is_succeeded(scenario, late.id), timeout=30, interval=0.2)


async def _is_succeeded(scenario: Scenario, run_id: str) -> bool:
    return (await scenario.get(run_id)).status is RunStatus.SUCCEEDED


@pytest.mark.redis
@pytest.mark.postgres
async def test_redis_connections_killed_during_triggers_lose_and_duplicate_nothing(
    cluster_factory: Any, scenario: Scenario
) -> None:
    cluster: Cluster = cluster_factory("redis")
    cluster.worker("w1")
    cluster.worker("w2")
    cluster.dispatcher()
    task_id = await scenario.ledger_task("through-redis-outage", seconds=0.05)
    admin = aioredis.Redis.from_url(REDIS_URL)

    async def outage() -> None:
        for _ in range(3):
            await asyncio.sleep(1.0)
            await admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")

    try:
        ids = await _trigger_through_outage(scenario, task_id, outage)
    finally:
        await admin.aclose()
    await _assert_all_done_once(scenario, ids)
    late = await scenario.trigger(task_id)
    await eventually(lambda: _is_succeeded(scenario, late.id), timeout=30, interval=0.2)


@pytest.mark.rabbitmq
@pytest.mark.postgres
async def test_runs_triggered_through_the_api_while_rabbitmq_is_down_start_once_it_is_back(
    cluster_factory: Any,
) -> None:
    """The API queues a triggered run and publishes it at once; while RabbitMQ is stopped the
    trigger still answers 201 (the run is committed) and the publish is retried in the
    background. Re-publishing of stale queued runs is pushed out of reach (300 s), so the runs
    finishing within a minute of the broker's return shows the API's own retry brought them."""
    require("RabbitMQ", None if await _rabbitmq_answers() else "no answer on 5672")
    cluster: Cluster = cluster_factory("rabbitmq")
    cluster.extra_env["SCHEDULER__DISPATCHER__REQUEUE_AFTER_SECONDS"] = "300"
    api, client = await cluster.api()
    cluster.worker("w1")
    cluster.dispatcher()
    created = await client.post(
        "/api/v1/tasks",
        json={"name": "api-through-outage", "executor": "noop"},
    )
    assert created.status_code == 201, created.text
    trigger = f"/api/v1/tasks/{created.json()['id']}/trigger"
    warm = (await client.post(trigger)).json()["id"]

    async def succeeded(run_ids: list[str]) -> bool:
        runs = [(await client.get(f"/api/v1/runs/{i}")).json() for i in run_ids]
        return all(run["status"] == "succeeded" for run in runs)

    await eventually(lambda: succeeded([warm]), timeout=60, interval=0.2)
    accepted: list[str] = []
    try:
        await asyncio.to_thread(_rabbitmqctl, "stop_app")
        for _ in range(10):
            response = await client.post(trigger)
            assert response.status_code == 201, response.text
            assert response.json()["status"] == "queued"
            accepted.append(response.json()["id"])
    finally:
        await asyncio.to_thread(_rabbitmqctl, "start_app")
        await eventually(_rabbitmq_answers, timeout=60, interval=0.5)
    await eventually(lambda: succeeded(accepted), timeout=60, interval=0.5)
    for run_id in accepted:
        events = (await client.get(f"/api/v1/runs/{run_id}/events")).json()["items"]
        statuses = [event["to_status"] for event in events]
        assert statuses.count("running") == 1, statuses
    assert "retrying in the background" in api.output()
