"""``scheduler-api``: the REST API as its own process (or ``api.workers`` processes)."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys

from scheduler_api import bootstrap, processes


async def _serve(settings: bootstrap.Settings, sock: socket.socket) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with bootstrap.open_resources(settings, components=["api"], stop=stop) as resources:
        app = bootstrap.build_api(resources)
        await bootstrap.serve(app, stop=stop, sock=sock)


def _serve_one(settings: bootstrap.Settings, sock: socket.socket) -> int:
    """One API process on ``sock``: its exit status (2: it could not start)."""
    try:
        bootstrap.run_event_loop(_serve(settings, sock))
    except bootstrap.StartupInterrupted as stopped:
        print(f"scheduler-api: {stopped}", file=sys.stderr)
    except (bootstrap.StartupError, ConnectionError, OSError) as error:
        print(f"scheduler-api: {error}", file=sys.stderr)
        return processes.STARTUP_FAILED
    return 0


def main() -> None:
    try:
        settings = bootstrap.load()
        sock = bootstrap.bind(settings.api.host, settings.api.port)
    except (bootstrap.StartupError, OSError) as error:
        print(f"scheduler-api: {error}", file=sys.stderr)
        sys.exit(2)
    try:
        if settings.api.workers == 1:
            status = _serve_one(settings, sock)
        else:
            status = processes.supervise(settings.api.workers, lambda: _serve_one(settings, sock))
    finally:
        sock.close()
    sys.exit(status)
