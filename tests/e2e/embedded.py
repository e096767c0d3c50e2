"""``scheduler run`` (api + dispatcher + worker in one process) as its own subprocess, on a
SQLite file or a given database, with an admin and a client logged in as that admin."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from harness import eventually, free_port, track

ROOT = Path(__file__).resolve().parents[2]
SCHEDULER = Path(sys.executable).parent / "scheduler"
ADMIN_PASSWORD = "embedded-admin-password-1"


@dataclass
class Embedded:
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    client: httpx.AsyncClient
    env: dict[str, str]

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    async def login(self, username: str, password: str) -> dict[str, str]:
        response = await self.client.post(
            "/api/v1/auth/login", json={"username": username, "password": password}
        )
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    async def stop(self) -> int:
        """SIGTERM, and the exit code (killed after 30 s)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.process.wait, 30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            await asyncio.to_thread(self.process.wait, 10)
            raise AssertionError(f"scheduler run ignored SIGTERM\n{self.logs()[-6000:]}") from None


@asynccontextmanager
async def embedded(workdir: Path, **env: str) -> AsyncIterator[Embedded]:
    """Start ``scheduler run --migrate --create-admin``; stopped (SIGTERM) on exit."""
    port = free_port()
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER")},
        "SCHEDULER_CONFIG": "config/default.toml",
        "SCHEDULER__DATABASE__URL": f"sqlite+aiosqlite:///{workdir / 'scheduler.db'}",
        "SCHEDULER__API__PORT": str(port),
        "SCHEDULER__API__JWT_SECRET": "embedded-e2e-secret-" + "s" * 40,
        "SCHEDULER__WORKER__HEARTBEAT_SECONDS": "0.5",
        "SCHEDULER__WORKER__LEASE_SECONDS": "5",
        "SCHEDULER_ADMIN_PASSWORD": ADMIN_PASSWORD,
        **env,
    }
    log = workdir / "scheduler-run.log"
    with log.open("wb") as sink:
        process = track(
            subprocess.Popen(  # noqa: ASYNC220 (starting it does not block)
                [str(SCHEDULER), "run", "--migrate", "--create-admin"],
                cwd=ROOT,
                env=environment,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        server = Embedded(process=process, url=url, log=log, client=client, env=environment)

        async def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"scheduler run exited early\n{server.logs()[-6000:]}")
            try:
                return (await client.get("/ready")).status_code == 200
            except httpx.TransportError:
                return False

        try:
            await eventually(ready, timeout=60, interval=0.2)
            yield server
        finally:
            if process.poll() is None:
                process.kill()
                await asyncio.to_thread(process.wait, 10)
