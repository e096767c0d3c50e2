"""CLI fixtures: one real API per session (SQLite file, memory queue) on a background loop,
emptied before each test; each test gets its own config directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cli_harness import ADMIN, ApiInThread, Cli, RemoteWorker, admin_http, api_in_thread
from typer.testing import CliRunner

from scheduler_domain.accounts import Role


@pytest.fixture(scope="session")
def running_api() -> Iterator[ApiInThread]:
    with api_in_thread() as api:
        yield api


@pytest.fixture
def api(running_api: ApiInThread) -> ApiInThread:
    running_api.wipe()
    running_api.user(ADMIN, Role.ADMIN)
    return running_api


@pytest.fixture
def cli(api: ApiInThread, tmp_path: Path) -> Cli:
    return Cli(
        api=api,
        config_home=tmp_path / "config",
        transport=api.transport(),
        runner=CliRunner(),
    )


@pytest.fixture
def admin(cli: Cli) -> Cli:
    """The CLI, logged in as the admin."""
    cli.login()
    return cli


@pytest.fixture
def http(api: ApiInThread) -> Iterator[httpx.Client]:
    """The API over plain HTTP as the admin (for steps taken while the CLI runs)."""
    client = admin_http(api.transport())
    yield client
    client.close()


@pytest.fixture
def worker(api: ApiInThread, http: httpx.Client) -> RemoteWorker:
    return RemoteWorker(api, http)
