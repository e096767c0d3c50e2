"""Waiting for the database at start-up: a refusal (a database that does not exist) is
reported at once in the server's words, a server that is not up is waited for, and SIGTERM
ends the waiting at once — in the function and in a real ``scheduler-dispatcher`` process."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import make_url

from scheduler_infrastructure.persistence.engine import create_engine
from scheduler_infrastructure.waiting import (
    DatabaseRefused,
    StartupInterrupted,
    wait_for_database,
)
from services import POSTGRES_ADMIN_URL, probe, require

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
async def postgres_up() -> None:
    """Skip when PostgreSQL is unreachable (fail instead when CI=true)."""
    require(f"PostgreSQL at {POSTGRES_ADMIN_URL}", await probe("postgres"))


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _missing_database_url() -> str:
    url = make_url(POSTGRES_ADMIN_URL).set(
        drivername="postgresql+asyncpg", database=f"scheduler_absent_{secrets.token_hex(4)}"
    )
    return url.render_as_string(hide_password=False)


def _closed_port_url() -> str:
    return f"postgresql+asyncpg://postgres@127.0.0.1:{_closed_port()}/scheduler"


@pytest.mark.usefixtures("postgres_up")
async def test_a_missing_database_is_reported_at_once_with_the_servers_message() -> None:
    url = _missing_database_url()
    engine = create_engine(url)
    started = time.monotonic()
    try:
        with pytest.raises(DatabaseRefused) as refused:
            await asyncio.wait_for(wait_for_database(engine, timeout=60), 20)
    finally:
        await engine.dispose()
    assert time.monotonic() - started < 5
    assert f'database "{make_url(url).database}" does not exist' in str(refused.value)


async def test_a_closed_port_is_retried_until_the_timeout() -> None:
    engine = create_engine(_closed_port_url())
    try:
        with pytest.raises(ConnectionError, match="database unreachable after") as failed:
            await asyncio.wait_for(wait_for_database(engine, timeout=1), 20)
    finally:
        await engine.dispose()
    assert not isinstance(failed.value, DatabaseRefused)


async def test_a_stop_request_ends_the_retries_at_once() -> None:
    engine = create_engine(_closed_port_url())
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.5, stop.set)
    started = time.monotonic()
    try:
        with pytest.raises(StartupInterrupted):
            await asyncio.wait_for(wait_for_database(engine, timeout=60, stop=stop), 20)
    finally:
        await engine.dispose()
    assert time.monotonic() - started < 3


def _dispatcher(database_url: str) -> subprocess.Popen[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("SCHEDULER__") and key != "SCHEDULER_CONFIG"
    }
    env.update(
        SCHEDULER__DATABASE__URL=database_url,
        SCHEDULER__QUEUE__BACKEND="postgres",
        SCHEDULER__DISPATCHER__METRICS_PORT="0",
        SCHEDULER__LOGGING__FORMAT="console",
        SCHEDULER__DATABASE__CONNECT_RETRY_SECONDS="60",
    )
    return subprocess.Popen(
        [sys.executable, "-c", "from scheduler_dispatcher.main import main; main()"],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.usefixtures("postgres_up")
async def test_the_dispatcher_reports_a_missing_database_and_exits() -> None:
    url = _missing_database_url()
    process = _dispatcher(url)
    try:
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert process.returncode == 2, stderr
    assert f'database "{make_url(url).database}" does not exist' in stderr
    assert "not reachable" not in stderr


def test_sigterm_stops_a_dispatcher_waiting_for_its_database() -> None:
    process = _dispatcher(_closed_port_url())
    assert process.stderr is not None
    try:
        deadline = time.monotonic() + 60
        line = ""
        while time.monotonic() < deadline and "not reachable" not in line:
            line = process.stderr.readline()
            if not line and process.poll() is not None:
                break
        assert "database not reachable" in line, "the dispatcher did not start retrying"
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        process.wait(10)
        elapsed = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert elapsed < 3
    assert process.returncode == 0
    assert "stopped while waiting for the database" in process.stderr.read()
