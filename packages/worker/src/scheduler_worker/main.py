"""``scheduler-worker``: one worker process."""

from __future__ import annotations

import asyncio
import signal
import sys

from scheduler_worker import bootstrap


async def _serve() -> None:
    settings = bootstrap.prepare("worker", standalone=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with bootstrap.standalone_worker(settings, stop=stop) as runtime:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, runtime.stop)
        if stop.is_set():
            return
        await runtime.run()


def main() -> None:
    try:
        bootstrap.run_event_loop(_serve())
    except bootstrap.StartupInterrupted as stopped:
        print(f"scheduler-worker: {stopped}", file=sys.stderr)
    except (bootstrap.StartupError, ConnectionError, OSError) as error:
        print(f"scheduler-worker: {error}", file=sys.stderr)
        sys.exit(2)
