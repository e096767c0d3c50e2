"""The API's ``/metrics``: valid Prometheus text, request metrics by route template (never the
raw path), optionally behind authentication, and 503s counted as dependency outages."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from observed_stack import JWT_SECRET, migrated_sqlite, stack_settings
from prometheus_client.parser import text_string_to_metric_families

from scheduler_api.bootstrap import build_api
from scheduler_application.accounts.users import AccountService
from scheduler_domain.accounts import Role
from scheduler_infrastructure.config import ApiSettings, DatabaseSettings
from scheduler_infrastructure.persistence.engine import create_engine
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from scheduler_infrastructure.resources import Resources, open_resources
from scheduler_infrastructure.security.passwords import Argon2PasswordHasher

pytestmark = pytest.mark.timeout(60)

FAST_HASHER = Argon2PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORD = "correct horse battery staple"
SCHEDULER_METRICS = {
    "scheduler_runs_created",
    "scheduler_runs_finished",
    "scheduler_run_duration_seconds",
    "scheduler_run_queue_wait_seconds",
    "scheduler_schedule_lateness_seconds",
    "scheduler_slots_skipped",
    "scheduler_queue_depth",
    "scheduler_workers",
    "scheduler_worker_active_runs",
    "scheduler_retries",
    "scheduler_dead_lettered",
    "scheduler_leases_expired",
    "scheduler_rate_limited",
    "scheduler_dependency_unavailable",
    "scheduler_http_requests",
    "scheduler_http_request_duration_seconds",
}


@asynccontextmanager
async def api_client(resources: Resources) -> AsyncIterator[httpx.AsyncClient]:
    app = build_api(resources, hasher=FAST_HASHER)
    for hook in app.on_startup:
        await hook()  # type: ignore[call-arg]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def login(client: httpx.AsyncClient, resources: Resources, name: str, role: Role) -> dict:
    accounts = AccountService(
        uow_factory=resources.uow_factory, clock=resources.clock, hasher=FAST_HASHER
    )
    await accounts.create_user(name, PASSWORD, role)
    response = await client.post(
        "/api/v1/auth/login", json={"username": name, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def parse(text: str) -> dict[str, list]:  # type: ignore[type-arg]
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


async def test_metrics_is_valid_prometheus_text_with_every_scheduler_metric(
    tmp_path: Path,
) -> None:
    url = await migrated_sqlite(tmp_path / "api.db")
    async with open_resources(stack_settings(url)) as resources, api_client(resources) as client:
        response = await client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        families = parse(response.text)
        assert set(families) >= SCHEDULER_METRICS
        assert "process_cpu_seconds" in families or "process_cpu_seconds_total" in {
            s.name for samples in families.values() for s in samples
        }


async def test_requests_are_counted_by_route_template_never_by_raw_path(tmp_path: Path) -> None:
    url = await migrated_sqlite(tmp_path / "routes.db")
    async with open_resources(stack_settings(url)) as resources, api_client(resources) as client:
        headers = await login(client, resources, "alice", Role.USER)
        missing = [f"01900000-0000-7000-8000-00000000{n:04d}" for n in range(5)]
        for run_id in missing:
            assert (await client.get(f"/api/v1/runs/{run_id}", headers=headers)).status_code == 404
        assert (await client.get("/api/v1/tasks", headers=headers)).status_code == 200
        assert (await client.get("/no/such/page/123")).status_code == 404
        assert (await client.get("/api/v1/tasks")).status_code == 401

        samples = parse((await client.get("/metrics")).text)["scheduler_http_requests"]
        counted = {
            (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
            for s in samples
            if s.name == "scheduler_http_requests_total"
        }
        run_routes = [key for key in counted if key[1].startswith("/api/v1/runs/")]
        assert len(run_routes) == 1
        assert "{" in run_routes[0][1]
        assert counted[run_routes[0]] == 5
        assert counted[("GET", "/api/v1/tasks", "200")] == 1
        assert counted[("GET", "/api/v1/tasks", "401")] == 1
        assert counted[("GET", "unmatched", "404")] == 1
        for _, route, _ in counted:
            assert not any(run_id in route for run_id in missing), route
            assert "/no/such" not in route


async def test_metrics_can_require_an_operator(tmp_path: Path) -> None:
    url = await migrated_sqlite(tmp_path / "guarded.db")
    settings = stack_settings(url)
    settings = dataclasses.replace(
        settings, api=ApiSettings(jwt_secret=JWT_SECRET, metrics_public=False)
    )
    async with open_resources(settings) as resources, api_client(resources) as client:
        assert (await client.get("/metrics")).status_code == 401
        user = await login(client, resources, "bob", Role.USER)
        assert (await client.get("/metrics", headers=user)).status_code == 403
        admin = await login(client, resources, "root", Role.ADMIN)
        response = await client.get("/metrics", headers=admin)
        assert response.status_code == 200
        assert (
            "scheduler_runs_created_total" in parse(response.text)["scheduler_runs_created"][0].name
        )


async def test_an_unreachable_database_is_counted_as_a_dependency_outage(tmp_path: Path) -> None:
    url = await migrated_sqlite(tmp_path / "outage.db")
    async with open_resources(stack_settings(url)) as resources:
        (tmp_path / "a-directory.db").mkdir()  # SQLite cannot open it
        gone = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'a-directory.db'}")
        broken = dataclasses.replace(
            resources,
            settings=dataclasses.replace(
                resources.settings, database=DatabaseSettings(url=str(gone.url))
            ),
            engine=gone,
            uow_factory=SqlUnitOfWorkFactory(gone),
        )
        async with api_client(broken) as client:
            response = await client.get(
                "/api/v1/tasks", headers={"X-Api-Key": "sk_" + "a" * 12 + "_" + "b" * 43}
            )
            assert response.status_code == 503
            ready = await client.get("/ready")
            assert ready.status_code == 503
        value = resources.metrics.registry.get_sample_value(
            "scheduler_dependency_unavailable_total", {"dependency": "database"}
        )
        assert value == 2  # the request and the readiness probe
        await gone.dispose()
