"""``scheduler-api`` as a process: it refuses to start without a proper JWT secret, serves
over real HTTP, and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scheduler_infrastructure.persistence.migrations import upgrade

REPO = Path(__file__).resolve().parents[3]
SECRET = "s" * 40


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("SCHEDULER__") and key != "SCHEDULER_CONFIG"
    }
    env.update(
        SCHEDULER__DATABASE__URL=f"sqlite+aiosqlite:///{tmp_path / 'api.db'}",
        SCHEDULER__API__PORT=str(free_port()),
        SCHEDULER__LOGGING__FORMAT="console",
        SCHEDULER__DATABASE__CONNECT_RETRY_SECONDS="5",
    )
    env.update(extra)
    return env


def command() -> list[str]:
    return [sys.executable, "-c", "from scheduler_api.main import main; main()"]


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        (None, "api.jwt_secret: not set"),
        ("too-short", "at least 32 bytes"),
        ("file:missing", "SCHEDULER__API__JWT_SECRET_FILE: no such file"),
        ("file:too-short", "api.jwt_secret: must be at least 32 bytes"),
    ],
    ids=["missing", "short", "missing-file", "short-file"],
)
def test_refuses_to_start_without_a_proper_secret(
    tmp_path: Path, secret: str | None, message: str
) -> None:
    env = environment(tmp_path)
    if secret == "file:missing":
        env["SCHEDULER__API__JWT_SECRET_FILE"] = str(tmp_path / "absent")
    elif secret is not None and secret.startswith("file:"):
        (tmp_path / "jwt").write_text(secret.removeprefix("file:") + "\n")
        env["SCHEDULER__API__JWT_SECRET_FILE"] = str(tmp_path / "jwt")
    elif secret is not None:
        env["SCHEDULER__API__JWT_SECRET"] = secret

    result = subprocess.run(
        command(), cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """The API as deployed: its JWT secret read from a file (the recommended form)."""
    upgrade(f"sqlite+aiosqlite:///{tmp_path / 'api.db'}")
    secret_file = tmp_path / "jwt-secret"
    secret_file.write_text(SECRET + "\n")
    process = subprocess.Popen(
        command(),
        cwd=REPO,
        env=environment(tmp_path, SCHEDULER__API__JWT_SECRET_FILE=str(secret_file)),
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    deadline = time.monotonic() + 60
    base_url = ""
    while time.monotonic() < deadline and not base_url:
        line = process.stderr.readline()
        if not line and process.poll() is not None:
            break
        found = re.search(r"api listening on (http://\S+)", line)
        if found:
            base_url = found.group(1)
    assert base_url, "the server did not report its address"
    yield process, base_url
    if process.poll() is None:
        process.kill()
        process.wait(10)


def test_serves_http_and_stops_on_sigterm(server: tuple[subprocess.Popen[str], str]) -> None:
    process, base_url = server
    for _ in range(50):
        try:
            health = httpx.get(f"{base_url}/health", timeout=5)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    ready = httpx.get(f"{base_url}/ready", timeout=5)
    unauthenticated = httpx.get(f"{base_url}/api/v1/tasks", timeout=5)

    process.send_signal(signal.SIGTERM)
    code = process.wait(30)

    assert health.json() == {"status": "ok"}
    assert ready.json()["status"] == "ready"
    assert unauthenticated.status_code == 401
    assert "server" not in unauthenticated.headers
    assert code == 0
