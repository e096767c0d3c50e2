"""``scheduler-worker``: one worker process."""

from __future__ import annotations

import asyncio
import signal
import sys

from scheduler_worker import bootstrap


async def _serve() -> None:
    settings = bootstrap.load()
    async with bootstrap.standalone_worker(settings) as runtime:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, runtime.stop)
        await runtime.run()


def main() -> None:
    try:
        asyncio.run(_serve())
    except (bootstrap.StartupError, ConnectionError, OSError) as error:
        print(f"scheduler-worker: {error}", file=sys.stderr)
        sys.exit(2)
