"""Requests per second of the REST routes against a bare Litestar route on the same uvicorn.

Starts ``scheduler run --mode api`` on a fresh PostgreSQL database (postgres queue, nothing
consuming it) and, on another port, a bare Litestar app answering ``GET /`` with
``{"ok": true}`` under the same uvicorn settings as the API (one process, no access log,
lifespan on). Then, with ``wrk`` (``--threads`` threads, ``--connections`` connections,
``--seconds`` each) measures:

* the bare route,
* ``GET /health``,
* ``GET /api/v1/tasks/{id}`` with an API key, and with a JWT access token,
* ``GET /api/v1/runs/{id}`` with an API key (what a client polls for a run's result),
* ``POST /api/v1/tasks/{id}/trigger`` with an API key,

and prints req/s, the share of the bare route and the machine's load (``uptime``). The bare
route is measured before the first route and again after each one; a route's share is against
the mean of the two bare figures around it.

Usage:  uv run python scripts/bench_api_routes.py [--seconds 10] [--connections 16]
        [--api-workers N]  (``scheduler-api`` with ``api.workers=N`` instead of ``scheduler run``)
Needs PostgreSQL on 127.0.0.1 and ``wrk`` on PATH (``apt-get install wrk``).
To measure another checkout's code with this script, put its ``packages/*/src`` on
``PYTHONPATH`` (the servers are started with this interpreter and inherit it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
ADMIN = os.environ.get(
    "SCHEDULER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PASSWORD = "bench-" + secrets.token_urlsafe(12)

BARE_APP = textwrap.dedent(
    """
    import socket, sys
    import uvicorn
    from litestar import Litestar, get

    @get("/", sync_to_thread=False)
    def root() -> dict[str, bool]:
        return {"ok": True}

    app = Litestar([root], logging_config=None, debug=False)
    # IPPROTO_TCP like the API's own socket: asyncio sets TCP_NODELAY only then.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", int(sys.argv[1])))
    sock.listen(2048)
    config = uvicorn.Config(
        app, lifespan="on", log_config=None, access_log=False, server_header=False,
        proxy_headers=False,
    )
    uvicorn.Server(config).run(sockets=[sock])
    """
)


def _run(command: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        raise RuntimeError(f"{command[3:]} failed: {done.stdout}{done.stderr}")


def _api_command(profile: str, api_workers: int = 0) -> list[str]:
    if api_workers:
        # ``scheduler-api`` itself: ``scheduler run`` is one process whatever ``api.workers``.
        return [sys.executable, "-c", "from scheduler_api.main import main; main()"]
    entry = (
        "from scheduler_cli.main import entrypoint; import sys; "
        "sys.argv[1:] = ['run', '--mode', 'api']"
    )
    if not profile:
        return [sys.executable, "-c", f"{entry}; entrypoint()"]
    return [
        sys.executable,
        "-c",
        f"{entry}; import cProfile; cProfile.run('entrypoint()', {profile!r})",
    ]


def _spy(binary: str, pid: int, label: str, seconds: int, work: Path) -> subprocess.Popen[bytes]:
    """py-spy recording ``pid`` for the ``seconds`` of one route, collapsed stacks to a file."""
    out = Path(tempfile.gettempdir()) / (
        "bench-api-" + re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") + ".txt"
    )
    print(f"  py-spy: {label} -> {out}", file=sys.stderr)
    command = [binary, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "500"]
    command += ["--format", "raw", "--nonblocking", "--output", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _sessions(name: str) -> int:
    """Connections ever opened to database ``name`` (pool churn shows here)."""
    dsn = make_url(ADMIN).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        value = await connection.fetchval(
            "SELECT sessions FROM pg_stat_database WHERE datname = $1", name
        )
        return int(value or 0)
    finally:
        await connection.close()


async def _admin(statement: str) -> None:
    dsn = make_url(ADMIN).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _env(url: str, port: int, secret_file: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_")}
    env.update(
        SCHEDULER_CONFIG=str(ROOT / "config" / "default.toml"),
        SCHEDULER__DATABASE__URL=url,
        SCHEDULER__QUEUE__BACKEND="postgres",
        SCHEDULER__QUEUE__PREFIX="bench" + secrets.token_hex(3),
        SCHEDULER__API__PORT=str(port),
        SCHEDULER__API__JWT_SECRET_FILE=str(secret_file),
        SCHEDULER__LOGGING__LEVEL="WARNING",
        SCHEDULER__REDIS__URL="",
    )
    return env


def _wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {timeout} s")
        time.sleep(0.2)


def _wrk(url: str, *, threads: int, connections: int, seconds: int, script: str | None) -> float:
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script or "")
    command += ["-s", handle.name, url]
    try:
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout  # noqa: S603
    finally:
        os.unlink(handle.name)
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        print(f"  warning: {non2xx.group(1)} non-2xx answers from {url}", file=sys.stderr)
    assert match, out
    return float(match.group(1))


def _lua(method: str, headers: dict[str, str], body: str | None = None) -> str:
    lines = [f'wrk.method = "{method}"']
    lines += [f'wrk.headers["{name}"] = "{value}"' for name, value in headers.items()]
    if body is not None:
        lines.append(f"wrk.body = '{body}'")
    return "\n".join(lines) + "\n"


def _load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()  # noqa: S607


def _setup(base: str) -> dict[str, str]:
    """An admin (made by ``scheduler create-admin`` beforehand), a JWT, an API key, a task."""
    with httpx.Client(base_url=base, timeout=30) as client:
        answer = client.post("/api/v1/auth/login", json={"username": "admin", "password": PASSWORD})
        answer.raise_for_status()
        jwt = answer.json()["access_token"]
        auth = {"Authorization": f"Bearer {jwt}"}
        answer = client.post("/api/v1/api-keys", json={"name": "bench"}, headers=auth)
        answer.raise_for_status()
        key = next(v for v in _strings(answer.json()) if v.startswith("sk_"))
        answer = client.post(
            "/api/v1/tasks", json={"name": "bench", "executor": "noop"}, headers=auth
        )
        answer.raise_for_status()
        task = answer.json()["id"]
        answer = client.post(f"/api/v1/tasks/{task}/trigger", json={}, headers=auth)
        answer.raise_for_status()
        return {"jwt": jwt, "key": key, "task": task, "run": answer.json()["id"]}


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--keep-log", action="store_true")
    parser.add_argument(
        "--rate-limits",
        default="",
        help="api.rate_limits for the API, as JSON (e.g. '[\"*=1000000/s\"]'), to see their cost",
    )
    parser.add_argument(
        "--api-workers",
        type=int,
        default=0,
        help="run scheduler-api with api.workers=N processes (0: one `scheduler run --mode api`);"
        " the bare route stays one process",
    )
    parser.add_argument(
        "--redis", action="store_true", help="give the API redis.url (shared rate-limit buckets)"
    )
    parser.add_argument(
        "--only", default="", help="measure only the routes whose label contains this text"
    )
    parser.add_argument(
        "--profile", default="", help="run the API under cProfile, stats written to this file"
    )
    parser.add_argument(
        "--py-spy",
        default="",
        help="a py-spy binary: record the API during each of its routes (collapsed stacks, "
        "one file per route, named in the output)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not on PATH (apt-get install wrk)")
    if args.api_workers and (args.profile or args.py_spy):
        raise SystemExit("--api-workers runs several processes: profile one process instead")
    name = "bench_api_" + secrets.token_hex(4)
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    work = Path(tempfile.mkdtemp(prefix="bench-api-"))
    secret_file = work / "jwt-secret"
    secret_file.write_text(secrets.token_urlsafe(48))
    url = (
        make_url(ADMIN)
        .set(drivername="postgresql+asyncpg", database=name)
        .render_as_string(hide_password=False)
    )
    api_port, bare_port = _free_port(), _free_port()
    env = _env(url, api_port, secret_file)
    if args.api_workers:
        env["SCHEDULER__API__WORKERS"] = str(args.api_workers)
    if args.rate_limits:
        env["SCHEDULER__API__RATE_LIMITS"] = args.rate_limits
    if args.redis:
        env["SCHEDULER__REDIS__URL"] = os.environ.get(
            "SCHEDULER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"
        )
    scheduler = [sys.executable, "-c", "from scheduler_cli.main import entrypoint; entrypoint()"]
    processes: list[subprocess.Popen[bytes]] = []
    log = work / "servers.log"
    try:
        _run([*scheduler, "migrate", "upgrade"], env)
        _run(
            [*scheduler, "create-admin", "--password-env", "BENCH_PASSWORD"],
            {**env, "BENCH_PASSWORD": PASSWORD},
        )
        with log.open("ab") as handle:
            processes.append(
                subprocess.Popen(  # noqa: S603
                    _api_command(args.profile, args.api_workers),
                    env=env,
                    stdout=handle,
                    stderr=handle,
                )
            )
            processes.append(
                subprocess.Popen(  # noqa: S603
                    [sys.executable, "-c", BARE_APP, str(bare_port)], stdout=handle, stderr=handle
                )
            )
        base, bare = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{bare_port}"
        _wait_http(f"{base}/health")
        _wait_http(f"{bare}/")
        made = _setup(base)
        key = {"X-API-Key": made["key"]}
        jwt = {"Authorization": f"Bearer {made['jwt']}"}
        task = f"{base}/api/v1/tasks/{made['task']}"
        routes = [
            ("bare Litestar GET /", f"{bare}/", None),
            ("GET /health", f"{base}/health", None),
            ("GET /api/v1/tasks/{id}, API key", task, _lua("GET", key)),
            ("GET /api/v1/tasks/{id}, JWT", task, _lua("GET", jwt)),
            (
                "GET /api/v1/runs/{id}, API key",
                f"{base}/api/v1/runs/{made['run']}",
                _lua("GET", key),
            ),
            (
                "POST /api/v1/tasks/{id}/trigger, API key",
                f"{task}/trigger",
                _lua("POST", {**key, "Content-Type": "application/json"}, "{}"),
            ),
        ]
        print(f"load before: {_load()}")
        print(
            f"wrk -t{args.threads} -c{args.connections} -d{args.seconds}s; "
            f"python {sys.version.split()[0]}; rate limits {args.rate_limits or 'none'}"
            f"{' (redis)' if args.redis else ''}"
        )
        bare_label, bare_target, _ = routes[0]

        def bare_rate() -> float:
            return _wrk(
                bare_target,
                threads=args.threads,
                connections=args.connections,
                seconds=args.seconds,
                script=None,
            )

        # The bare route is measured again after every route: each route's share is taken
        # against the mean of the bare figures just before and just after it, so a machine
        # whose speed drifts (seen here: the bare route 8,500 -> 4,300 req/s in an hour) moves
        # both sides of the share alike.
        bares = [bare_rate()]
        figures: list[tuple[str, float, int, float]] = []
        for label, target, script in routes[1:]:
            if args.only and args.only not in label:
                continue
            opened = asyncio.run(_sessions(name))
            spy = (
                _spy(args.py_spy, processes[0].pid, label, args.seconds, work)
                if (args.py_spy and target.startswith(base))
                else None
            )
            rate = _wrk(
                target,
                threads=args.threads,
                connections=args.connections,
                seconds=args.seconds,
                script=script,
            )
            connections = asyncio.run(_sessions(name)) - opened
            if spy is not None:
                spy.wait(timeout=60)
            bares.append(bare_rate())
            figures.append((label, rate, connections, (bares[-2] + bares[-1]) / 2))
        print("| route | req/s | bare around it, req/s | share of bare | connections opened |")
        print("| --- | ---: | ---: | ---: | ---: |")
        print(f"| {bare_label} | {bares[0]:,.0f} (first) … {bares[-1]:,.0f} (last) | | 100 % | 0 |")
        for label, rate, connections, bare in figures:
            print(
                f"| {label} | {rate:,.0f} | {bare:,.0f} | {100 * rate / bare:.1f} % "
                f"| {connections} |"
            )
        print(f"load after: {_load()}")
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        if args.keep_log:
            print(f"server log: {log}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
