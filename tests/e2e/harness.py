"""Real processes for end-to-end tests: the ``scheduler-*`` binaries against real services.

Each test gets a fresh, migrated PostgreSQL database and a unique queue prefix, so nothing it
publishes or stores is seen by another test. Processes log to files under the test's tmp dir;
on failure the tail of every log is printed.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from services import POSTGRES_ADMIN_URL, REDIS_URL, plain_dsn

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
#: Without its password: the e2e processes get that from the environment, like production.
RABBITMQ_URL = os.environ.get("SCHEDULER_TEST_RABBITMQ_URL", "amqp://guest@127.0.0.1:5672/")
RABBITMQ_PASSWORD = "guest"


async def admin_execute(statement: str) -> None:
    connection = await asyncpg.connect(plain_dsn(POSTGRES_ADMIN_URL), timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


API_SECRET = "e2e-jwt-secret-" + "x" * 40
ADMIN_PASSWORD = "e2e-admin-password-1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


#: Every server process the e2e tests started, so that none outlives the test run: a run
#: interrupted before its fixtures' teardowns (SIGTERM, see conftest) once left an API and a
#: dispatcher up for three quarters of an hour.
_STARTED: list[subprocess.Popen[bytes]] = []


def track(popen: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    """Record ``popen`` (started with ``start_new_session``: its own process group) so that it
    and its children are killed at exit if still running."""
    _STARTED.append(popen)
    return popen


@atexit.register
def _kill_leftovers() -> None:
    for popen in _STARTED:
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGKILL)


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def signal(self, signum: int) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signum)

    def alive(self) -> bool:
        return self.popen.poll() is None

    async def wait(self, timeout: float) -> int:
        async with asyncio.timeout(timeout):
            while self.popen.poll() is None:
                await asyncio.sleep(0.05)
        return self.popen.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Cluster:
    """Processes sharing one database and one queue prefix."""

    database_url: str
    backend: str
    workdir: Path
    prefix: str = field(default_factory=lambda: f"e2e{secrets.token_hex(4)}")
    processes: list[Process] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("SCHEDULER_") and key not in ("CI",)
        }
        env.update(
            {
                "SCHEDULER_CONFIG": str(ROOT / "config" / "test.toml"),
                "SCHEDULER__DATABASE__URL": self.database_url,
                "SCHEDULER__QUEUE__BACKEND": self.backend,
                "SCHEDULER__QUEUE__PREFIX": self.prefix,
                "SCHEDULER__LOGGING__FORMAT": "json",
                "SCHEDULER__LOGGING__LEVEL": "INFO",
                "SCHEDULER__WORKER__LEASE_SECONDS": "3",
                "SCHEDULER__WORKER__HEARTBEAT_SECONDS": "0.5",
                "SCHEDULER__WORKER__DRAIN_TIMEOUT_SECONDS": "10",
                "SCHEDULER__DISPATCHER__REAPER_INTERVAL_SECONDS": "0.5",
                "SCHEDULER__DISPATCHER__RELAY_INTERVAL_SECONDS": "0.1",
                "SCHEDULER__DISPATCHER__REQUEUE_AFTER_SECONDS": "10",
                "SCHEDULER__DATABASE__CONNECT_RETRY_SECONDS": "30",
                # Several dispatchers and workers share this host: no fixed metrics ports.
                "SCHEDULER__DISPATCHER__METRICS_PORT": "0",
                "SCHEDULER__WORKER__METRICS_PORT": "0",
            }
        )
        if self.backend == "rabbitmq":
            env["SCHEDULER__RABBITMQ__URL"] = RABBITMQ_URL
            env["SCHEDULER__RABBITMQ__PASSWORD"] = RABBITMQ_PASSWORD
        if self.backend == "redis":
            env["SCHEDULER__REDIS__URL"] = REDIS_URL
        env.update(self.extra_env)
        env.update(overrides)
        return env

    def start(self, binary: str, name: str, **env: str) -> Process:
        log = self.workdir / f"{name}.log"
        handle = log.open("ab")
        popen = track(
            subprocess.Popen(
                [str(BIN / binary)],
                cwd=self.workdir,
                env=self.env(**env),
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        handle.close()
        process = Process(name=name, popen=popen, log=log)
        self.processes.append(process)
        return process

    def worker(self, name: str, **env: str) -> Process:
        return self.start("scheduler-worker", name, SCHEDULER__WORKER__NAME=name, **env)

    def dispatcher(self, name: str = "dispatcher", **env: str) -> Process:
        return self.start("scheduler-dispatcher", name, **env)

    async def api(
        self,
        name: str = "api",
        *,
        jwt_secret: str = API_SECRET,
        admin_password: str = ADMIN_PASSWORD,
    ) -> tuple[Process, httpx.AsyncClient]:
        """A ``scheduler-api`` on a free port with an admin user, and a client logged in as
        that admin (closed by :meth:`stop_all`). The JWT secret goes to every process the
        cluster starts from now on."""
        port = free_port()
        self.extra_env.update(
            SCHEDULER__API__JWT_SECRET=jwt_secret,
            SCHEDULER__API__PORT=str(port),
            SCHEDULER_ADMIN_PASSWORD=admin_password,
        )
        created = await asyncio.to_thread(
            subprocess.run,
            [str(BIN / "scheduler"), "create-admin"],
            env=self.env(),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert created.returncode == 0, created.stderr
        process = self.start("scheduler-api", name)
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10)
        self.clients.append(client)

        async def ready() -> bool:
            try:
                return (await client.get("/ready")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(ready, timeout=60, interval=0.25)
        login = await client.post(
            "/api/v1/auth/login", json={"username": "admin", "password": admin_password}
        )
        assert login.status_code == 200, login.text
        client.headers["authorization"] = f"Bearer {login.json()['access_token']}"
        return process, client

    async def stop_all(self) -> None:
        for client in self.clients:
            await client.aclose()
        for process in self.processes:
            if process.alive():
                process.signal(signal.SIGCONT)
                process.signal(signal.SIGTERM)
        for process in self.processes:
            try:
                await process.wait(30)
            except TimeoutError:
                process.signal(signal.SIGKILL)
                await process.wait(5)

    def logs(self) -> str:
        return "\n".join(
            f"----- {p.name} (pid {p.pid}, rc {p.popen.poll()}) -----\n{p.output()[-4000:]}"
            for p in self.processes
        )


async def eventually(
    check: Callable[[], Awaitable[Any]], *, timeout: float, interval: float = 0.1
) -> Any:
    """Poll ``check`` until it returns a truthy value; return that value."""
    async with asyncio.timeout(timeout):
        while True:
            value = await check()
            if value:
                return value
            await asyncio.sleep(interval)
