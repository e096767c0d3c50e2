"""CPU per request of the API's own code, with no server and no socket in the way.

``bench_api_routes.py`` measures routes under ``wrk`` against uvicorn, where the server, the
sockets and ``wrk`` itself (on the same two cores) are part of every figure and the machine's
swings move them by a third. This script calls the ASGI app directly, in process, on uvloop:
16 concurrent callers, each sending requests one after another, and reports the process's CPU
microseconds per request (``time.process_time``) for

* a bare Litestar app answering ``GET /`` with ``{"ok": true}`` (the floor),
* ``GET /health``,
* ``GET /api/v1/tasks/{id}`` with an API key and with a JWT (served from the caches),
* ``GET /api/v1/runs/{id}`` with an API key (a database read),
* with ``--trigger``, ``POST /api/v1/tasks/{id}/trigger`` (a group-committed insert),
* with ``--batch N``, ``POST /api/v1/runs/batch`` of N triggers (its figure is per request:
  divide by N for a trigger's).

The API is built as ``scheduler run --mode api`` builds it (``build_api`` over
``open_resources``) on a fresh, migrated PostgreSQL database with the postgres queue. Routes
are measured in turn, ``--rounds`` times, and the median of the rounds is printed with every
round's figure, so that a round the machine disturbed shows.

To compare two checkouts, run the same script with the other one's ``packages/*/src`` first on
``PYTHONPATH`` (with the venv's python itself: ``uv run`` may reset ``PYTHONPATH``), alternating.

Usage: ``.venv/bin/python scripts/bench_asgi.py [--requests 6000] [--rounds 3] [--trigger]``
``[--batch 100]``
``[--only "task key"] [--profile] [--callers 16]`` (``--profile``: cProfile of one round of
the ``--only`` route, by own time and by cumulative time; ``--callers 1``: one request at a
time, whose wall time per request is its latency without the socket). Needs PostgreSQL on
127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import uvloop
from litestar import Litestar, get
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_api_routes as routes_bench

ASGIApp = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[dict[str, Any]]],
        Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ],
    Awaitable[None],
]


def _scope(method: str, path: str, headers: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def _call(
    app: Any, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, bytes]:
    """One request through the ASGI app: its status and body."""
    sent: list[MutableMapping[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError("unreachable")

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app(_scope(method, path, headers), receive, send)
    return int(sent[0]["status"]), b"".join(m.get("body", b"") for m in sent[1:])


async def _cpu_per_request(
    app: Any,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    requests: int,
    callers: int,
) -> tuple[float, float]:
    """The process's CPU microseconds per request, and each caller's wall-clock microseconds
    per request (with one caller: a request's latency through the API's code and the
    database, no socket)."""
    status, answer = await _call(app, method, path, headers, body)
    if status >= 300:
        raise RuntimeError(f"{method} {path} answered {status}: {answer[:300]!r}")
    each = max(1, requests // callers)

    async def caller() -> None:
        for _ in range(each):
            await _call(app, method, path, headers, body)

    started, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    cpu = (time.process_time() - started) / (each * callers) * 1e6
    return cpu, (time.perf_counter() - wall) / each * 1e6


def _bare() -> Litestar:
    @get("/", sync_to_thread=False)
    def root() -> dict[str, bool]:
        return {"ok": True}

    return Litestar([root], logging_config=None, debug=False)


async def _prepare(app: Any) -> dict[str, str]:
    """A JWT, an API key, a task and one of its runs, made through the API itself."""
    login = json.dumps({"username": "admin", "password": routes_bench.PASSWORD}).encode()
    _, answer = await _call(
        app, "POST", "/api/v1/auth/login", {"content-type": "application/json"}, login
    )
    jwt = json.loads(answer)["access_token"]
    auth = {"authorization": f"Bearer {jwt}", "content-type": "application/json"}
    _, answer = await _call(app, "POST", "/api/v1/api-keys", auth, b'{"name": "bench"}')
    key = next(v for v in routes_bench._strings(json.loads(answer)) if v.startswith("sk_"))
    task_body = b'{"name": "bench", "executor": "noop"}'
    _, answer = await _call(app, "POST", "/api/v1/tasks", auth, task_body)
    task = json.loads(answer)["id"]
    _, answer = await _call(app, "POST", f"/api/v1/tasks/{task}/trigger", auth, b"{}")
    return {"jwt": jwt, "key": key, "task": task, "run": json.loads(answer)["id"]}


async def _measure(args: argparse.Namespace) -> None:
    from scheduler_api.bootstrap import build_api, load
    from scheduler_infrastructure.resources import open_resources

    bare = _bare()
    async with open_resources(load()) as resources:
        app = build_api(resources)
        async with app.lifespan(), bare.lifespan():
            made = await _prepare(app)
            key = {"x-api-key": made["key"]}
            json_key = {**key, "content-type": "application/json"}
            task = f"/api/v1/tasks/{made['task']}"
            cases: list[tuple[str, Any, str, str, dict[str, str], bytes]] = [
                ("bare", bare, "GET", "/", {}, b""),
                ("health", app, "GET", "/health", {}, b""),
                ("task key", app, "GET", task, key, b""),
                ("task jwt", app, "GET", task, {"authorization": f"Bearer {made['jwt']}"}, b""),
                ("run key", app, "GET", f"/api/v1/runs/{made['run']}", key, b""),
            ]
            if args.trigger:
                cases.append(("trigger", app, "POST", f"{task}/trigger", json_key, b"{}"))
            if args.batch:
                triggers = [{"task_id": made["task"]}] * args.batch
                batch = json.dumps({"triggers": triggers}).encode()
                cases.append(("batch", app, "POST", "/api/v1/runs/batch", json_key, batch))
            if args.only:
                cases = [c for c in cases if c[0] in ("bare", args.only)]
            if args.profile:
                [case] = [c for c in cases if c[0] == args.only] or [cases[-1]]
                await _cpu_per_request(*case[1:], args.requests, args.callers)  # warm
                profile = cProfile.Profile()
                profile.enable()
                await _cpu_per_request(*case[1:], args.requests, args.callers)
                profile.disable()
                if args.profile_out:
                    profile.dump_stats(args.profile_out)
                stats = pstats.Stats(profile, stream=sys.stdout)
                stats.sort_stats("tottime").print_stats(40)
                stats.sort_stats("cumtime").print_stats(50)
                return
            figures: dict[str, list[float]] = {c[0]: [] for c in cases}
            walls: dict[str, list[float]] = {c[0]: [] for c in cases}
            for _ in range(args.rounds):
                for label, target, method, path, headers, body in cases:
                    cpu, wall = await _cpu_per_request(
                        target, method, path, headers, body, args.requests, args.callers
                    )
                    figures[label].append(cpu)
                    walls[label].append(wall)
    floor = statistics.median(figures["bare"])
    print(
        f"python {sys.version.split()[0]}; {args.requests} requests x {args.rounds} rounds,"
        f" {args.callers} callers"
    )
    print("| route | CPU µs/request, median | rounds | bare / route | wall µs/request/caller |")
    print("| --- | ---: | --- | ---: | ---: |")
    for label, values in figures.items():
        median = statistics.median(values)
        rounds = ", ".join(f"{v:.0f}" for v in values)
        wall = statistics.median(walls[label])
        print(f"| {label} | {median:.1f} | {rounds} | {floor / median * 100:.0f} % | {wall:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trigger", action="store_true", help="measure the trigger route too")
    parser.add_argument(
        "--batch", type=int, default=0, help="measure POST /runs/batch of N triggers too"
    )
    parser.add_argument("--only", default="", help='only this route beside bare ("task key")')
    parser.add_argument("--profile", action="store_true", help="cProfile the --only route")
    parser.add_argument("--profile-out", default="", help="also write the profile to this file")
    parser.add_argument(
        "--callers",
        type=int,
        default=16,
        help="concurrent callers (1: one request at a time, its wall time is its latency)",
    )
    args = parser.parse_args()
    args.callers = max(1, args.callers)
    name = "bench_asgi_" + secrets.token_hex(4)
    asyncio.run(routes_bench._admin(f'CREATE DATABASE "{name}"'))
    work = Path(tempfile.mkdtemp(prefix="bench-asgi-"))
    secret_file = work / "jwt-secret"
    secret_file.write_text(secrets.token_urlsafe(48))
    url = (
        make_url(routes_bench.ADMIN)
        .set(drivername="postgresql+asyncpg", database=name)
        .render_as_string(hide_password=False)
    )
    # A port is part of a valid configuration; nothing listens on it.
    env = routes_bench._env(url, routes_bench._free_port(), secret_file)
    scheduler = [sys.executable, "-c", "from scheduler_cli.main import entrypoint; entrypoint()"]
    try:
        routes_bench._run([*scheduler, "migrate", "upgrade"], env)
        routes_bench._run(
            [*scheduler, "create-admin", "--password-env", "BENCH_PASSWORD"],
            {**env, "BENCH_PASSWORD": routes_bench.PASSWORD},
        )
        os.environ.update(env)
        print(f"load before: {routes_bench._load()}")
        uvloop.run(_measure(args))
        print(f"load after: {routes_bench._load()}")
    finally:
        asyncio.run(routes_bench._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
