"""The real ``scheduler`` binary against ``scheduler run`` in another process.

One server per module (SQLite file in a temp dir, memory queue, API on a free port, admin
created with a known password), stopped with SIGTERM at the end, which must exit 0. Each test
runs the CLI as a subprocess with its own ``XDG_CONFIG_HOME``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
SCHEDULER = Path(sys.executable).parent / "scheduler"
ADMIN_PASSWORD = "e2e-admin-password-1"
STARTUP_SECONDS = 60
CLI_SECONDS = 60


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    log: Path
    workdir: Path

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-8000:]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("cli-e2e")
    port = free_port()
    env = {
        **os.environ,
        "SCHEDULER_CONFIG": "config/default.toml",
        "SCHEDULER__DATABASE__URL": f"sqlite+aiosqlite:///{workdir / 's.db'}",
        "SCHEDULER__API__PORT": str(port),
        "SCHEDULER__API__JWT_SECRET": "e2e-cli-secret-" + "s" * 40,
        "SCHEDULER_ADMIN_PASSWORD": ADMIN_PASSWORD,
    }
    log = workdir / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(SCHEDULER), "run", "--migrate", "--create-admin"],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    running = Server(url=f"http://127.0.0.1:{port}", log=log, workdir=workdir)
    try:
        _wait_until_ready(process, running)
        yield running
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
            pytest.fail(f"scheduler run ignored SIGTERM\n{running.logs()}")
        assert code == 0, f"scheduler run exited {code}\n{running.logs()}"


def _wait_until_ready(process: subprocess.Popen[bytes], server: Server) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"scheduler run exited with {process.returncode}\n{server.logs()}")
        try:
            if httpx.get(f"{server.url}/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"scheduler run was not ready within {STARTUP_SECONDS}s\n{server.logs()}")


@dataclass
class Cli:
    config_home: Path
    api_url: str

    def __call__(self, *args: str, input: str | None = None, timeout: float = CLI_SECONDS):
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER")},
            "XDG_CONFIG_HOME": str(self.config_home),
            "SCHEDULER_API_URL": self.api_url,
            "NO_COLOR": "1",
        }
        return subprocess.run(
            [str(SCHEDULER), *args],
            input=input,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def json(self, *args: str, input: str | None = None) -> Any:
        result = self(*args, "--json", input=input)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    @property
    def credentials(self) -> Path:
        return self.config_home / "scheduler" / "credentials.json"


@pytest.fixture
def cli(server: Server, tmp_path: Path) -> Cli:
    return Cli(config_home=tmp_path / "config", api_url=server.url)


@pytest.fixture
def admin(cli: Cli) -> Cli:
    result = cli("login", "-u", "admin", "--password-stdin", input=ADMIN_PASSWORD + "\n")
    assert result.returncode == 0, result.stderr
    return cli


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_login_stores_the_tokens_with_mode_0600(admin: Cli, server: Server) -> None:
    assert stat.S_IMODE(admin.credentials.stat().st_mode) == 0o600
    stored = json.loads(admin.credentials.read_text())
    assert stored["default"] == server.url
    status = admin.json("status")
    assert status["me"]["user"]["username"] == "admin"


def test_a_triggered_task_is_waited_for_with_its_outcome_as_exit_code(admin: Cli) -> None:
    admin.json("tasks", "create", "--name", "greet", "--argv", "echo hello from e2e")
    admin.json("tasks", "create", "--name", "broken", "--argv", "sh -c 'echo oops >&2; exit 3'")

    good = admin.json("tasks", "trigger", "greet")
    good_wait = admin("runs", "wait", good["id"], "--timeout", "30")
    bad = admin.json("tasks", "trigger", "broken")
    bad_wait = admin("runs", "wait", bad["id"], "--timeout", "30", "--json")

    assert good_wait.returncode == 0, good_wait.stderr
    assert f"run {good['id']}: succeeded" in good_wait.stdout
    assert bad_wait.returncode == 1, bad_wait.stderr
    assert json.loads(bad_wait.stdout)["status"] in ("failed", "dead_lettered")
    output = admin("runs", "output", good["id"])
    assert output.stdout == "hello from e2e\n"


def test_trigger_wait_reports_the_outcome_directly(admin: Cli) -> None:
    admin.json("tasks", "create", "--name", "quick", "--argv", "true")

    result = admin("tasks", "trigger", "quick", "--wait", "--timeout", "30")

    assert result.returncode == 0, result.stderr
    assert "succeeded" in result.stdout


def test_a_cron_task_with_a_seconds_field_fires_within_seconds(admin: Cli) -> None:
    task = admin.json(
        "tasks", "create", "--name", "every-2s", "--argv", "echo tick", "--cron", "*/2 * * * * *"
    )
    deadline = time.monotonic() + 10
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not runs:
        runs = admin.json("runs", "list", "--task", task["id"], "--status", "succeeded")
        time.sleep(0.5)
    admin("tasks", "pause", "every-2s")

    assert runs, "the cron task did not fire within 10 s"
    assert runs[0]["trigger"] == "schedule"


def test_json_output_parses_for_scripts(admin: Cli) -> None:
    admin.json("tasks", "create", "--name", "listed", "--executor", "noop")

    assert any(t["name"] == "listed" for t in admin.json("tasks", "list"))
    assert isinstance(admin.json("runs", "list"), list)
    assert admin.json("workers", "list")[0]["status"] == "online"
    assert "items" in admin.json("queues")
    assert admin.json("tasks", "get", "listed")["executor"] == "noop"
    assert admin.json("status")["system"]["status"] == "ok"


def test_bad_credentials_are_one_error_line(cli: Cli) -> None:
    result = cli("login", "-u", "admin", "--password-stdin", input="not the password\n")

    assert _one_error_line(result) == "error: invalid username or password"
    assert not cli.credentials.exists()


def test_an_unreachable_server_is_one_error_line(admin: Cli) -> None:
    url = f"http://127.0.0.1:{free_port()}"

    result = admin("--api-url", url, "tasks", "list")

    assert _one_error_line(result) == f"error: cannot reach {url}: connection refused"


def test_an_unknown_task_is_one_error_line(admin: Cli) -> None:
    by_name = admin("tasks", "trigger", "no-such-task")
    by_id = admin("tasks", "get", "01a201fc-1836-71a5-82b0-93c30d0a20e9")

    assert _one_error_line(by_name) == "error: no task named 'no-such-task'"
    assert "not found" in _one_error_line(by_id)


def test_a_validation_error_names_the_field(admin: Cli) -> None:
    result = admin(
        "tasks", "create", "--name", "bad-cron", "--argv", "true", "--cron", "61 * * * *"
    )

    line = _one_error_line(result)
    assert "schedule" in line


def test_a_secret_env_task_runs_out_of_the_box_with_its_value_masked(
    admin: Cli, server: Server, tmp_path: Path
) -> None:
    secret = "e2e-Secret-" + "Qm7c2"
    value_file = tmp_path / "token"
    value_file.write_text(secret + "\n")
    script = 'echo "tok:$TOKEN copy:$COPY"'
    created = admin.json(
        "tasks",
        "create",
        "--name",
        "secretive",
        "--argv",
        f"sh -c '{script}'",
        "--param",
        "env=" + json.dumps({"COPY": secret}),
        "--secret-env",
        f"TOKEN=@{value_file}",
    )
    assert created["secret_env_names"] == ["TOKEN"]
    # The embedded default made its key beside the database, private to its user.
    key_file = server.workdir / "secrets-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    run = admin.json("tasks", "trigger", "secretive")
    waited = admin("runs", "wait", run["id"], "--timeout", "30")
    assert waited.returncode == 0, waited.stderr
    output = admin("runs", "output", run["id"])
    assert "copy:[REDACTED]" in output.stdout
    assert secret not in output.stdout
    shown = admin.json("tasks", "get", "secretive")
    assert shown["secret_env_names"] == ["TOKEN"]
    assert "secret_env" not in shown  # the plain params.env COPY is shown, as it always was
    assert secret not in server.logs()
