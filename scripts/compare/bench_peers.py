"""Celery ``.delay()`` and Dramatiq ``.send()``, measured the way ``scripts/bench_rest.py``
measures this project, to set beside it in the same sitting.

Per system: its real worker processes on RabbitMQ (Celery: one worker, thread pool x 16;
Dramatiq: 2 processes x 8 threads); ``--clients`` client threads each send one no-op job per
call until ``--runs`` are sent; runs/s from the first send to the last job's completion (each
job counts itself with one Redis ``INCR``: no result backend), with the whole machine's CPU
time over that window per job; then light load: one job at a time, p50/p99 of send → start.

Not part of the project: run it with a Python that has the peers installed::

    python3 -m venv /tmp/peers && /tmp/peers/bin/pip install -r scripts/compare/requirements.txt
    /tmp/peers/bin/python scripts/compare/bench_peers.py [--systems celery,dramatiq] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
REDIS_URL = "redis://127.0.0.1:6379/13"


def _machine_busy_seconds() -> float:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _start_workers(system: str, env: dict[str, str], log: Path) -> list[subprocess.Popen[bytes]]:
    if system == "celery":
        command = [
            str(BIN / "celery"), "-A", "peer_celery", "worker", "--pool", "threads",
            "--concurrency", "16", "--loglevel", "WARNING", "--without-gossip",
            "--without-mingle", "--without-heartbeat",
        ]  # fmt: skip
    else:
        command = [
            str(BIN / "dramatiq"), "peer_dramatiq", "--processes", "2", "--threads", "8",
        ]  # fmt: skip
    with log.open("ab") as handle:
        return [
            subprocess.Popen(  # noqa: S603 - the peer's own worker command
                command, cwd=HERE, env=env, stdout=handle, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        ]  # fmt: skip


def _sender(system: str) -> Any:
    sys.path.insert(0, str(HERE))
    if system == "celery":
        from peer_celery import noop as celery_noop

        return lambda sent=None: celery_noop.delay(sent)
    from peer_dramatiq import noop as dramatiq_noop

    return lambda sent=None: dramatiq_noop.send(sent)


def _wait(counter: redis.Redis, key: str, total: int) -> None:
    deadline = time.monotonic() + 600
    while int(counter.get(key) or 0) < total:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{key}: not done after 600 s")
        time.sleep(0.01)


def throughput(
    send: Any, counter: redis.Redis, prefix: str, runs: int, clients: int
) -> dict[str, float]:
    key = f"{prefix}:done"
    before = int(counter.get(key) or 0)
    share = [runs // clients + (1 if i < runs % clients else 0) for i in range(clients)]

    def client(count: int) -> None:
        for _ in range(count):
            send()

    threads = [threading.Thread(target=client, args=(n,)) for n in share]
    machine0 = _machine_busy_seconds()
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sent = time.perf_counter()
    _wait(counter, key, before + runs)
    finished = time.perf_counter()
    machine = _machine_busy_seconds() - machine0
    return {
        "sent_per_s": runs / (sent - started),
        "finished_per_s": runs / (finished - started),
        "machine_cpu_ms_per_run": machine * 1000 / runs,
    }


def light_load(send: Any, counter: redis.Redis, prefix: str, count: int) -> dict[str, float]:
    key = f"{prefix}:done"
    counter.delete(f"{prefix}:latency")
    for _ in range(count):
        before = int(counter.get(key) or 0)
        send(time.time())
        _wait(counter, key, before + 1)
        time.sleep(0.005)
    latencies = sorted(float(v) * 1000 for v in counter.lrange(f"{prefix}:latency", 0, -1))
    return {
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }


def bench(system: str, args: argparse.Namespace) -> None:
    prefix = f"peer{secrets.token_hex(3)}"
    os.environ["PEER_PREFIX"] = prefix
    env = dict(os.environ, PEER_PREFIX=prefix, PEER_REDIS=REDIS_URL)
    counter = redis.Redis.from_url(REDIS_URL)
    logs = Path(tempfile.mkdtemp(prefix=f"bench-{system}-"))
    workers = _start_workers(system, env, logs / "worker.log")
    send = _sender(system)
    try:
        # Warm-up: the workers are consuming once a first job comes back.
        before = int(counter.get(f"{prefix}:done") or 0)
        send()
        _wait(counter, f"{prefix}:done", before + 1)
        throughput(send, counter, prefix, min(300, args.runs), args.clients)
        rounds = [
            throughput(send, counter, prefix, args.runs, args.clients) for _ in range(args.repeat)
        ]
        latency = [light_load(send, counter, prefix, args.light) for _ in range(args.repeat)]

        def median(rows: list[dict[str, float]], key: str) -> float:
            return statistics.median(r[key] for r in rows)

        print(
            f"{system}: {median(rounds, 'finished_per_s'):,.0f} runs/s send -> finished,"
            f" {median(rounds, 'sent_per_s'):,.0f} sent/s, machine CPU"
            f" {median(rounds, 'machine_cpu_ms_per_run'):.2f} ms/run;"
            f" light load send -> start p50 {median(latency, 'p50_ms'):.2f} ms,"
            f" p99 {median(latency, 'p99_ms'):.2f} ms; rounds:"
            f" {[round(r['finished_per_s']) for r in rounds]}",
            flush=True,
        )
    finally:
        for worker in workers:
            os.killpg(worker.pid, signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
        counter.delete(f"{prefix}:done", f"{prefix}:latency")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", default="celery,dramatiq")
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--light", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    child = os.environ.get("PEER_CHILD") == "1"
    if not child:
        print(f"load average before: {os.getloadavg()}", flush=True)
    for system in args.systems.split(","):
        # Each system in its own process: the client libraries keep global state.
        if len(args.systems.split(",")) > 1:
            subprocess.run(  # noqa: S603
                [sys.executable, __file__, "--systems", system, "--runs", str(args.runs),
                 "--clients", str(args.clients), "--light", str(args.light),
                 "--repeat", str(args.repeat)],
                check=True,
                env=dict(os.environ, PEER_CHILD="1"),
            )  # fmt: skip
        else:
            bench(system, args)
    if not child:
        print(f"load average after: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
