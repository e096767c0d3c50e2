"""The REST path as its users take it: HTTP clients triggering runs one request at a time.

Starts real processes on a fresh PostgreSQL database — ``scheduler-api`` (``--api-workers``
processes), one ``scheduler-dispatcher`` and ``--workers`` ``scheduler-worker`` processes — with
a user and an API key of that user, and a no-op task. Then, per round:

1. throughput: ``--clients`` concurrent HTTP/1.1 keep-alive connections each send
   ``POST /api/v1/tasks/{id}/trigger`` (API key) one after the other until ``--runs`` runs
   are accepted; runs/s is measured from the first request to the last run's ``finished_at``
   (trigger → finished, the whole path), with the whole machine's CPU time over the same window
   divided by the runs (every process counted: API, dispatcher, workers, PostgreSQL, the broker
   and this client); with ``--rate R`` the triggers leave at R per second (open loop), so that
   runs arrive one by one at a moderate rate instead of as fast as the API answers;
2. with ``--batch N``: the same runs sent as ``POST /api/v1/runs/batch`` requests of N triggers
   (when the server has that endpoint): triggers accepted per second and runs finished per second;
3. light load: one client, one trigger at a time, p50/p99 of ``started_at - created_at``
   (trigger → start, both stamped by the system under test), and of ``started_at`` against
   the client's clock when it sent the request (the same host's clock: the request's way in
   counted too), with the split send → answer, answer → start.

The client is a minimal asyncio HTTP/1.1 client (one request in flight per connection), so
that the load generator's own CPU is small beside the server's; it is counted anyway.

Usage:  uv run python scripts/bench_rest.py [--runs 3000] [--clients 16] [--backend postgres]
            [--repeat 3] [--batch 100] [--keys] [--light-only] [--rate 300]
Needs PostgreSQL (and RabbitMQ/Redis for those backends) on 127.0.0.1. Compare with
``scripts/compare/`` (Celery ``.delay()`` and Dramatiq ``.send()``) in the same sitting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ADMIN_DSN = os.environ.get(
    "SCHEDULER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
).replace("postgresql+asyncpg://", "postgresql://")
RABBITMQ_URL = "amqp://guest@127.0.0.1:5672/"
REDIS_URL = "redis://127.0.0.1:6379/0"
ADMIN_PASSWORD = "bench-admin-password-1"  # noqa: S105 - a throwaway database's account
USER_PASSWORD = "bench-user-password-1"  # noqa: S105


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _machine_busy_seconds() -> float:
    """CPU time spent by every process on the machine (all cores), from ``/proc/stat``."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _process_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Connection:
    """One keep-alive HTTP/1.1 connection; one request in flight at a time."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self._host, self._port = host, port
        self._fixed = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: Any = None, headers: str = ""
    ) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        assert self._reader is not None
        payload = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nhost: {self._host}:{self._port}\r\n{self._fixed}{headers}"
            f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n"
        )
        self._writer.write(head.encode() + payload)
        status_line = await self._reader.readline()
        status = int(status_line.split()[1])
        length = 0
        chunked = False
        while True:
            line = await self._reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:
            data = b""
            while True:
                size = int((await self._reader.readline()).strip(), 16)
                chunk = await self._reader.readexactly(size + 2)
                if size == 0:
                    break
                data += chunk[:-2]
            return status, data
        return status, await self._reader.readexactly(length) if length else b""

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class Stack:
    """API, dispatcher and workers on a fresh database."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.database = f"scheduler_rest_{secrets.token_hex(4)}"
        self.url = ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        self.url = f"{self.url}/{self.database}"
        self.port = _free_port()
        self.logs = Path(tempfile.mkdtemp(prefix="bench-rest-"))
        self.processes: list[subprocess.Popen[bytes]] = []
        self.profiled = False
        self.prefix = f"rest{secrets.token_hex(3)}"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_")}
        env.update(
            SCHEDULER_CONFIG=str(ROOT / "config" / "default.toml"),
            SCHEDULER__DATABASE__URL=self.url,
            SCHEDULER__QUEUE__BACKEND=self.args.backend,
            SCHEDULER__QUEUE__PREFIX=self.prefix,
            SCHEDULER__WORKER__CAPACITY=str(self.args.capacity),
            SCHEDULER__LOGGING__LEVEL="WARNING",
            SCHEDULER__LOGGING__FORMAT="json",
            SCHEDULER__API__PORT=str(self.port),
            SCHEDULER__API__JWT_SECRET=secrets.token_urlsafe(32),
            SCHEDULER__RABBITMQ__URL=RABBITMQ_URL,
            SCHEDULER__RABBITMQ__PASSWORD="guest",  # noqa: S106 - the local broker's default
            SCHEDULER__REDIS__URL=REDIS_URL if self.args.backend == "redis" else "",
            SCHEDULER__WORKER__METRICS_PORT="0",
            SCHEDULER__DISPATCHER__METRICS_PORT="0",
            SCHEDULER_ADMIN_PASSWORD=ADMIN_PASSWORD,
        )
        if self.args.api_workers:
            env["SCHEDULER__API__WORKERS"] = str(self.args.api_workers)
        for setting in self.args.set:
            key, _, value = setting.partition("=")
            env["SCHEDULER__" + key.upper().replace(".", "__")] = value
        env.update(extra)
        return env

    def start(self, binary: str, name: str, env: dict[str, str]) -> None:
        with (self.logs / f"{name}.log").open("ab") as handle:
            self.processes.append(
                subprocess.Popen(  # noqa: S603 - our own console scripts
                    [str(BIN / binary)],
                    env=env,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

    async def up(self) -> None:
        admin = await asyncpg.connect(ADMIN_DSN)
        try:
            await admin.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await admin.close()
        env = self.env()
        for command in (["migrate", "upgrade"], ["create-admin"]):
            done = subprocess.run(  # noqa: S603, ASYNC221 - before anything runs
                [str(BIN / "scheduler"), *command],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"scheduler {' '.join(command)}: {done.stderr}")
        self.start("scheduler-api", "api", env)
        self.start("scheduler-dispatcher", "dispatcher", env)
        for i in range(self.args.workers):
            self.start("scheduler-worker", f"w{i}", self.env(SCHEDULER__WORKER__NAME=f"w{i}"))
        probe = Connection("127.0.0.1", self.port, {})
        deadline = time.monotonic() + 90
        while True:
            try:
                status, _ = await probe.request("GET", "/ready")
                if status == 200:
                    break
            except OSError:
                await probe.close()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the API did not become ready; logs in {self.logs}")
            await asyncio.sleep(0.2)
        await probe.close()

    async def down(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        admin = await asyncpg.connect(ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        finally:
            await admin.close()


async def _json(connection: Connection, method: str, path: str, body: Any = None) -> Any:
    status, data = await connection.request(method, path, body)
    if status >= 300:
        raise RuntimeError(f"{method} {path}: {status} {data[:300]!r}")
    return json.loads(data) if data else None


async def _prepare(stack: Stack) -> tuple[str, str]:
    """A user with an API key, and that user's no-op task: (api key, task id)."""
    admin = Connection("127.0.0.1", stack.port, {})
    login = await _json(
        admin, "POST", "/api/v1/auth/login", {"username": "admin", "password": ADMIN_PASSWORD}
    )
    admin = Connection(
        "127.0.0.1", stack.port, {"authorization": f"Bearer {login['access_token']}"}
    )
    await _json(
        admin,
        "POST",
        "/api/v1/users",
        {"username": "bench", "password": USER_PASSWORD, "role": "user"},
    )
    user = Connection("127.0.0.1", stack.port, {})
    token = await _json(
        user, "POST", "/api/v1/auth/login", {"username": "bench", "password": USER_PASSWORD}
    )
    user = Connection("127.0.0.1", stack.port, {"authorization": f"Bearer {token['access_token']}"})
    issued = await _json(user, "POST", "/api/v1/api-keys", {"name": "bench"})
    keyed = Connection("127.0.0.1", stack.port, {"x-api-key": issued["key"]})
    task = await _json(keyed, "POST", "/api/v1/tasks", {"name": "bench-noop", "executor": "noop"})
    for connection in (admin, user, keyed):
        await connection.close()
    return issued["key"], task["id"]


async def _count_finished(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT count(*) FROM task_runs WHERE status = 'succeeded'") or 0)


async def _wait_finished(db: asyncpg.Connection, total: int, logs: Path) -> None:
    deadline = time.monotonic() + 600
    while await _count_finished(db) < total:
        if time.monotonic() > deadline:
            raise TimeoutError(f"runs not finished after 600 s; logs in {logs}")
        await asyncio.sleep(0.05)


def _descendants(pid: int) -> list[int]:
    """``pid`` and its descendants (the API's pre-forked processes, a worker's sandboxes)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


async def _groups(stack: Stack, db: asyncpg.Connection) -> dict[str, list[int]]:
    """The processes of each component, and the database's server processes."""
    api, dispatcher, *workers = stack.processes
    rows = await db.fetch("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
    return {
        "api": _descendants(api.pid),
        "dispatcher": _descendants(dispatcher.pid),
        "workers": [pid for w in workers for pid in _descendants(w.pid)],
        "postgres": [row["pid"] for row in rows],
    }


async def throughput(
    stack: Stack,
    db: asyncpg.Connection,
    key: str,
    task_id: str,
    runs: int,
    batch: int,
    *,
    warm_up: bool = False,
) -> dict[str, Any]:
    before = await _count_finished(db)
    connections = [
        Connection("127.0.0.1", stack.port, {"x-api-key": key}) for _ in range(stack.args.clients)
    ]
    remaining = runs
    accepted: list[float] = []
    rate = stack.args.rate if not batch else 0.0
    sent = 0

    async def client(connection: Connection) -> None:
        nonlocal remaining, sent
        while remaining > 0:
            if rate:
                # --rate: open loop, request i leaves at start + i / rate (whichever client is
                # free), so runs arrive one by one at that pace rather than as fast as answered.
                due = started + sent / rate
                sent += 1
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                if remaining <= 0:
                    break
            if batch:
                take = min(batch, remaining)
                remaining -= take
                body = {"triggers": [{"task_id": task_id} for _ in range(take)]}
                status, data = await connection.request("POST", "/api/v1/runs/batch", body)
            else:
                remaining -= 1
                # --keys: each trigger with its own Idempotency-Key, as careful clients send.
                key = f"idempotency-key: {secrets.token_hex(8)}\r\n" if stack.args.keys else ""
                status, data = await connection.request(
                    "POST", f"/api/v1/tasks/{task_id}/trigger", headers=key
                )
            if status >= 300:
                raise RuntimeError(f"trigger: {status} {data[:300]!r}")
        accepted.append(time.perf_counter())

    counted = stack.args.transactions and not warm_up
    xacts0 = await _transactions(db) if counted else 0
    own = os.getpid()
    groups = await _groups(stack, db)
    profiled = stack.profiled or warm_up or not stack.args.py_spy
    profilers = [] if profiled else _profile(stack)
    stack.profiled = stack.profiled or bool(profilers)
    cpu_before = {pid: _process_cpu(pid) for pids in groups.values() for pid in pids}
    machine0, client0 = _machine_busy_seconds(), _process_cpu(own)
    started = time.perf_counter()
    await asyncio.gather(*(client(c) for c in connections))
    all_accepted = time.perf_counter()
    if stack.args.workers:
        await _wait_finished(db, before + runs, stack.logs)
    finished = time.perf_counter()
    machine = _machine_busy_seconds() - machine0
    client_cpu = _process_cpu(own) - client0
    per_group = {
        name: sum(_process_cpu(pid) - cpu_before.get(pid, 0.0) for pid in pids) * 1000 / runs
        for name, pids in (await _groups(stack, db)).items()
    }
    for profiler in profilers:
        profiler.send_signal(signal.SIGINT)
        profiler.wait(30)
    for connection in connections:
        await connection.close()
    xacts = (await _transactions(db) - xacts0) / runs if counted else 0.0
    return {
        "transactions_per_run": xacts,
        "runs": runs,
        "accepted_per_s": runs / (all_accepted - started),
        "finished_per_s": runs / (finished - started),
        "machine_cpu_ms_per_run": machine * 1000 / runs,
        "client_cpu_ms_per_run": client_cpu * 1000 / runs,
        "cpu_ms_per_run": per_group,
    }


def _profile(stack: Stack) -> list[subprocess.Popen[bytes]]:
    """--py-spy: sample the API, the dispatcher and the first worker through the first
    measured round (collapsed stacks in the logs folder, one file per process)."""
    api, dispatcher, *workers = stack.processes
    targets = {"api": api.pid, "dispatcher": dispatcher.pid}
    if workers:
        targets["worker"] = workers[0].pid
    print(f"py-spy profiles in {stack.logs}", flush=True)
    return [
        subprocess.Popen(  # noqa: S603 - the profiler the caller named
            [
                stack.args.py_spy,
                "record",
                "--pid",
                str(pid),
                "--rate",
                "250",
                "--nonblocking",
                "--format",
                "raw",
                "--output",
                str(stack.logs / f"{name}.collapsed"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in targets.items()
    ]


async def _transactions(db: asyncpg.Connection) -> int:
    """Transactions the database has ended (an autocommit statement is one), once the
    backends have reported them: an idle backend reports its counts within ~10 s."""
    await asyncio.sleep(11)
    return int(
        await db.fetchval(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database"
            " WHERE datname = current_database()"
        )
    )


def _p99(values: list[float]) -> float:
    """The 99th percentile by rank (the largest of fewer than 100 values)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def light_load(
    stack: Stack, db: asyncpg.Connection, key: str, task_id: str, count: int
) -> dict[str, float]:
    connection = Connection("127.0.0.1", stack.port, {"x-api-key": key})
    latencies: list[float] = []
    #: created -> queued (the trigger's own transaction: gate, group commit) and
    #: queued -> started (delivery to a worker and its claim).
    queueing: list[float] = []
    delivery: list[float] = []
    #: From the client's send (wall clock, this host's): to the start, to the answer, and
    #: from the answer to the start.
    from_send: list[float] = []
    answering: list[float] = []
    after_answer: list[float] = []
    for _ in range(count):
        sent = time.time()
        run = await _json(connection, "POST", f"/api/v1/tasks/{task_id}/trigger")
        answered = time.time()
        await asyncio.sleep(0.01)
        while True:
            row = await db.fetchrow(
                "SELECT created_at, queued_at, started_at FROM task_runs WHERE id = $1", run["id"]
            )
            if row is not None and row["started_at"] is not None:
                break
            await asyncio.sleep(0.002)
        latencies.append((row["started_at"] - row["created_at"]).total_seconds() * 1000)
        started = row["started_at"].timestamp()
        from_send.append((started - sent) * 1000)
        answering.append((answered - sent) * 1000)
        after_answer.append((started - answered) * 1000)
        if row["queued_at"] is not None:
            queueing.append((row["queued_at"] - row["created_at"]).total_seconds() * 1000)
            delivery.append((row["started_at"] - row["queued_at"]).total_seconds() * 1000)
        await asyncio.sleep(0.005)
    await connection.close()
    return {
        "p50_ms": statistics.median(latencies),
        "p99_ms": _p99(latencies),
        "queued_p50_ms": statistics.median(queueing) if queueing else float("nan"),
        "delivered_p50_ms": statistics.median(delivery) if delivery else float("nan"),
        "sent_p50_ms": statistics.median(from_send),
        "sent_p99_ms": _p99(from_send),
        "answered_p50_ms": statistics.median(answering),
        "after_answer_p50_ms": statistics.median(after_answer),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--backend", default="postgres")
    parser.add_argument("--workers", type=int, default=2, help="0: the API alone (accepted/s)")
    parser.add_argument("--capacity", type=int, default=64)
    parser.add_argument("--api-workers", type=int, default=0, help="api.workers (0: config)")
    parser.add_argument(
        "--light", type=int, default=200, help="runs for the latency test (0: no latency test)"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", type=int, default=0, help="also measure /runs/batch of N")
    parser.add_argument("--keys", action="store_true", help="an Idempotency-Key per trigger")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting for every process, e.g. worker.batch_window_ms=0 (repeatable)",
    )
    parser.add_argument(
        "--py-spy",
        default="",
        help="a py-spy binary: profile the api, dispatcher and first worker in the first round",
    )
    parser.add_argument(
        "--transactions",
        action="store_true",
        help="also count the database's transactions per run (adds ~22 s per round)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="triggers per second, sent at that pace (open loop; 0: as fast as answered)",
    )
    parser.add_argument(
        "--light-only",
        action="store_true",
        help="after the warm-up, only the light-load latency (to compare commits quickly)",
    )
    args = parser.parse_args()

    print(f"load average before: {os.getloadavg()}", flush=True)
    stack = Stack(args)
    try:
        await stack.up()
        key, task_id = await _prepare(stack)
        db = await asyncpg.connect(stack.url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            await throughput(stack, db, key, task_id, min(300, args.runs), 0, warm_up=True)
            rounds = [
                await throughput(stack, db, key, task_id, args.runs, 0)
                for _ in range(0 if args.light_only else args.repeat)
            ]
            if rounds:
                _report(f"REST, {args.clients} clients, one trigger per request", rounds)
            if args.batch and not args.light_only:
                batched = [
                    await throughput(stack, db, key, task_id, args.runs * 3, args.batch)
                    for _ in range(args.repeat)
                ]
                _report(f"REST, {args.clients} clients, /runs/batch of {args.batch}", batched)
            if args.workers and args.light:  # with no worker (the API alone) nothing starts
                latency = [
                    await light_load(stack, db, key, task_id, args.light)
                    for _ in range(args.repeat)
                ]
                print(
                    f"light load, trigger -> start ({args.light} runs, median of {args.repeat}):"
                    f" p50 {statistics.median(r['p50_ms'] for r in latency):.2f} ms,"
                    f" p99 {statistics.median(r['p99_ms'] for r in latency):.2f} ms"
                    f" (p50 created -> queued"
                    f" {statistics.median(r['queued_p50_ms'] for r in latency):.2f} ms,"
                    f" queued -> started"
                    f" {statistics.median(r['delivered_p50_ms'] for r in latency):.2f} ms)",
                    flush=True,
                )
                print(
                    "light load, client's send -> start:"
                    f" p50 {statistics.median(r['sent_p50_ms'] for r in latency):.2f} ms,"
                    f" p99 {statistics.median(r['sent_p99_ms'] for r in latency):.2f} ms"
                    " (p50 send -> answer"
                    f" {statistics.median(r['answered_p50_ms'] for r in latency):.2f} ms,"
                    " answer -> start"
                    f" {statistics.median(r['after_answer_p50_ms'] for r in latency):.2f} ms)",
                    flush=True,
                )
        finally:
            await db.close()
    finally:
        await stack.down()
    print(f"load average after: {os.getloadavg()}", flush=True)


def _report(title: str, rounds: list[dict[str, Any]]) -> None:
    def median(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    print(
        f"{title}: {median('finished_per_s'):,.0f} runs/s trigger -> finished,"
        f" {median('accepted_per_s'):,.0f} accepted/s, machine CPU"
        f" {median('machine_cpu_ms_per_run'):.2f} ms/run (client"
        f" {median('client_cpu_ms_per_run'):.2f});"
        f" database transactions/run {median('transactions_per_run'):.2f};"
        f" per component {_per_component(rounds)}; rounds:"
        f" {[round(r['finished_per_s']) for r in rounds]}",
        flush=True,
    )


def _per_component(rounds: list[dict[str, Any]]) -> str:
    names = rounds[0]["cpu_ms_per_run"].keys()
    return ", ".join(
        f"{name} {statistics.median(r['cpu_ms_per_run'][name] for r in rounds):.2f}"
        for name in names
    )


if __name__ == "__main__":
    asyncio.run(main())
