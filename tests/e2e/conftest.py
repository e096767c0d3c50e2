"""End-to-end fixtures: a fresh migrated PostgreSQL database and a process cluster per test."""

from __future__ import annotations

import asyncio
import secrets
import signal
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from harness import Cluster, admin_execute
from sqlalchemy.engine import make_url

from scheduler_infrastructure.persistence.engine import create_engine
from scheduler_infrastructure.persistence.migrations import upgrade
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from services import POSTGRES_ADMIN_URL, probe, require


def pytest_configure(config: pytest.Config) -> None:
    """A SIGTERM (a CI timeout, an interrupted run) ends the session as Ctrl-C does, so that
    the fixtures' teardowns stop the processes they started (``harness.track`` kills what is
    left at exit)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    require("PostgreSQL", await probe("postgres"))
    name = f"scheduler_e2e_{secrets.token_hex(5)}"
    await admin_execute(f'CREATE DATABASE "{name}"')
    url = make_url(POSTGRES_ADMIN_URL).set(drivername="postgresql+asyncpg", database=name)
    rendered = url.render_as_string(hide_password=False)
    try:
        await asyncio.to_thread(upgrade, rendered)
        yield rendered
    finally:
        await admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def uow_factory(database_url: str) -> AsyncIterator[SqlUnitOfWorkFactory]:
    engine = create_engine(database_url, pool_size=10)
    yield SqlUnitOfWorkFactory(engine)
    await engine.dispose()


@pytest.fixture
async def cluster_factory(
    database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[object]:
    clusters: list[Cluster] = []

    def make(backend: str) -> Cluster:
        cluster = Cluster(database_url=database_url, backend=backend, workdir=tmp_path)
        clusters.append(cluster)
        return cluster

    yield make
    for cluster in clusters:
        await cluster.stop_all()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(cluster.logs())


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
