"""``scheduler-dispatcher``: one dispatcher process (several may run at once)."""

from __future__ import annotations

import asyncio
import signal
import sys

from scheduler_dispatcher import bootstrap


async def _serve() -> None:
    settings = bootstrap.load()
    async with (
        bootstrap.open_resources(settings, components=["dispatcher"]) as resources,
        bootstrap.metrics_endpoint(resources),
    ):
        dispatcher = bootstrap.build_dispatcher(resources)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, dispatcher.stop)
        await dispatcher.run()


def main() -> None:
    try:
        asyncio.run(_serve())
    except (bootstrap.StartupError, ConnectionError, OSError) as error:
        print(f"scheduler-dispatcher: {error}", file=sys.stderr)
        sys.exit(2)
