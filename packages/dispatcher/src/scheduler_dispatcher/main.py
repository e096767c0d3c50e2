"""``scheduler-dispatcher``: one dispatcher process (several may run at once)."""

from __future__ import annotations

import asyncio
import signal
import sys

from scheduler_dispatcher import bootstrap


async def _serve() -> None:
    settings = bootstrap.prepare("dispatcher", standalone=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with (
        bootstrap.open_resources(settings, components=["dispatcher"], stop=stop) as resources,
        bootstrap.component_metrics(
            resources.metrics,
            host=settings.dispatcher.metrics_host,
            port=settings.dispatcher.metrics_port,
        ),
    ):
        dispatcher = bootstrap.build_dispatcher(resources)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, dispatcher.stop)
        if stop.is_set():
            return
        await dispatcher.run()


def main() -> None:
    try:
        bootstrap.run_event_loop(_serve())
    except bootstrap.StartupInterrupted as stopped:
        print(f"scheduler-dispatcher: {stopped}", file=sys.stderr)
    except (bootstrap.StartupError, ConnectionError, OSError) as error:
        print(f"scheduler-dispatcher: {error}", file=sys.stderr)
        sys.exit(2)
