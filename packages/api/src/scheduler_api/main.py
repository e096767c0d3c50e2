"""``scheduler-api``: the REST API as its own process."""

from __future__ import annotations

import asyncio
import signal
import sys

from scheduler_api import bootstrap


async def _serve() -> None:
    settings = bootstrap.load()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    sock = bootstrap.bind(settings.api.host, settings.api.port)
    try:
        async with bootstrap.open_resources(settings, components=["api"], stop=stop) as resources:
            app = bootstrap.build_api(resources)
            await bootstrap.serve(app, stop=stop, sock=sock)
    finally:
        sock.close()


def main() -> None:
    try:
        asyncio.run(_serve())
    except bootstrap.StartupInterrupted as stopped:
        print(f"scheduler-api: {stopped}", file=sys.stderr)
    except (bootstrap.StartupError, ConnectionError, OSError) as error:
        print(f"scheduler-api: {error}", file=sys.stderr)
        sys.exit(2)
