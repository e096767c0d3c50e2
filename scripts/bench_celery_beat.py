"""Celery beat's firing lateness on this machine, to set beside ``bench_dispatcher.py`` phase a.

The same measurement as phase a, for Celery beat: ``--entries`` (1,000) beat entries on
``crontab(minute="*")``, all due at the same minute; one real ``celery beat`` process (Redis
broker, a database index of its own, emptied after); per entry, slot → *published*: the
instant Celery's ``after_task_publish`` signal fires in the beat process, i.e. once the
message is in Redis. p50, p99 and max per round; each round waits for a minute boundary.

Not part of the project (Celery is not one of its dependencies): run it with a Python that has
Celery and redis-py, e.g.::

    python3 -m venv /tmp/celery-bench && /tmp/celery-bench/bin/pip install celery redis
    /tmp/celery-bench/bin/python scripts/bench_celery_beat.py [--entries 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

BROKER = "redis://127.0.0.1:6379/14"

APP = """
import os
import time

from celery import Celery
from celery.schedules import crontab
from celery.signals import after_task_publish

app = Celery("benchapp", broker=os.environ["BENCH_BROKER"])
app.conf.timezone = "UTC"
app.conf.beat_schedule = {
    f"entry-{i}": {"task": "bench.noop", "schedule": crontab(minute="*")}
    for i in range(int(os.environ["BENCH_ENTRIES"]))
}


@app.task(name="bench.noop")
def noop():
    pass


_out = open(os.environ["BENCH_OUT"], "a", buffering=1)


@after_task_publish.connect
def published(**_):
    _out.write(f"{time.time()}\\n")
"""


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def one_round(entries: int, workdir: Path) -> list[float]:
    """Start beat well before a minute boundary, let the slot pass, stop it; lateness in ms."""
    now = time.time()
    slot = (int(now) // 60 + 1) * 60
    if slot - now < 15:  # too close: beat must be up and asleep before the slot
        slot += 60
    out = workdir / f"published-{slot}.txt"
    env = {
        **os.environ,
        "BENCH_BROKER": BROKER,
        "BENCH_ENTRIES": str(entries),
        "BENCH_OUT": str(out),
        "PYTHONPATH": str(workdir),
    }
    schedule = workdir / f"beat-schedule-{slot}"
    with (workdir / "beat.log").open("ab") as log:
        beat = subprocess.Popen(  # noqa: S603 - celery from this interpreter
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "benchapp",
                "beat",
                "-s",
                str(schedule),
                "--loglevel",
                "WARNING",
            ],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=log,
        )
    try:
        time.sleep(max(slot + 15 - time.time(), 0))
    finally:
        beat.send_signal(signal.SIGTERM)
        beat.wait(30)
    stamps = [float(line) for line in out.read_text().split()] if out.exists() else []
    if len(stamps) != entries:
        raise RuntimeError(f"{len(stamps)} of {entries} published; see {workdir}/beat.log")
    return [(stamp - slot) * 1000 for stamp in stamps]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-celery-beat-"))
    (workdir / "benchapp.py").write_text(APP)
    client = redis.Redis.from_url(BROKER)
    print(f"Celery beat, {args.entries} entries due at the same minute (Redis broker)")
    try:
        for i in range(1, args.rounds + 1):
            late = one_round(args.entries, workdir)
            client.flushdb()  # the published messages: no worker takes them
            print(
                f"  round {i}: slot -> published ms, p50 / p99 / max: "
                f"{statistics.median(late):.0f} / {_percentile(late, 0.99):.0f} / {max(late):.0f}",
                flush=True,
            )
    finally:
        client.flushdb()
        client.close()


if __name__ == "__main__":
    main()
