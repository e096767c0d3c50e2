"""``scheduler run``: any mix of api, dispatcher and worker in one process.

The components share one event loop, one database pool and one queue connection (so the
in-process memory queue works). SIGINT/SIGTERM stop them in order — the API stops accepting
requests, the worker drains, the dispatcher stops — and then the shared resources are closed,
each step bounded by ``run.shutdown_timeout_seconds``. The process ends on a signal or on a
component's fatal error, and logs which; a component that ends cleanly on its own leaves the
others serving. An operator's drain does not end the in-process worker: it stops taking runs and
stays registered until undrained.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import socket
from collections.abc import Callable, Sequence
from typing import Any

from scheduler_api.bootstrap import bind, build_api, require_jwt_secret, serve
from scheduler_application.tasks.changes import TaskChangeSignal
from scheduler_dispatcher.bootstrap import build_dispatcher
from scheduler_infrastructure.config import Settings
from scheduler_infrastructure.factories import database_url
from scheduler_infrastructure.persistence.migrations import upgrade
from scheduler_infrastructure.resources import build_relay, open_resources
from scheduler_infrastructure.telemetry import component_metrics
from scheduler_worker.bootstrap import build_worker

logger = logging.getLogger("scheduler.launcher")

#: Shutdown order: stop taking requests, finish the work in hand, stop making new work.
ORDER = ("api", "worker", "dispatcher")


async def run_components(
    settings: Settings,
    components: Sequence[str],
    *,
    migrate: bool = False,
    on_ready: Callable[[str | None], None] | None = None,
) -> None:
    """Run ``components`` until SIGINT/SIGTERM. ``on_ready`` gets the API's base URL (or None)
    once everything is up."""
    if "api" in components:
        require_jwt_secret(settings)
    if migrate:
        logger.info("migrating the database to the newest revision")
        await asyncio.to_thread(upgrade, database_url(settings.database))
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(signum: signal.Signals) -> None:
        received.append(signum.name)
        stop.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    sock: socket.socket | None = None
    if "api" in components:
        sock = bind(settings.api.host, settings.api.port)
    try:
        async with (
            open_resources(settings, components=sorted(components), stop=stop) as resources,
            contextlib.AsyncExitStack() as stack,
        ):
            changes = TaskChangeSignal()
            # One relay for the process: the API's triggers and the dispatcher's loops share
            # its gates' memory and its background publishes. Closed after every component
            # stopped (the exit stack unwinds it last).
            relay = build_relay(resources)
            stack.push_async_callback(relay.aclose)
            tasks: dict[str, asyncio.Task[None]] = {}
            stoppers: dict[str, Callable[[], None]] = {}
            if "dispatcher" in components:
                dispatcher = build_dispatcher(resources, relay=relay, task_changes=changes)
                tasks["dispatcher"] = asyncio.create_task(dispatcher.run(), name="dispatcher")
                stoppers["dispatcher"] = dispatcher.stop
            if "worker" in components:
                worker = await stack.enter_async_context(build_worker(resources))
                tasks["worker"] = asyncio.create_task(worker.run(), name="worker")
                stoppers["worker"] = worker.stop
            if sock is None:
                # No API in this process: serve the shared registry on the dispatcher's (or,
                # without one, the worker's) metrics port instead.
                own = settings.dispatcher if "dispatcher" in components else settings.worker
                await stack.enter_async_context(
                    component_metrics(
                        resources.metrics, host=own.metrics_host, port=own.metrics_port
                    )
                )
            api_url = None
            if sock is not None:
                # Task changes wake the dispatcher of this process, if there is one.
                watched = (
                    dataclasses.replace(resources, uow_factory=changes.watch(resources.uow_factory))
                    if "dispatcher" in components
                    else resources
                )
                app = build_api(watched, relay=relay)
                api_stop = asyncio.Event()
                tasks["api"] = asyncio.create_task(serve(app, stop=api_stop, sock=sock))
                stoppers["api"] = api_stop.set
                host, port = sock.getsockname()[:2]
                api_url = f"http://{host}:{port}"
            logger.info("running: %s", ", ".join(components))
            if on_ready is not None:
                on_ready(api_url)
            crashed = await _serve_until_stopped(stop, tasks, received)
            await _stop_in_order(tasks, stoppers, settings.run.shutdown_timeout_seconds)
            if crashed:
                raise SystemExit(1)
    finally:
        if sock is not None:
            sock.close()


async def _serve_until_stopped(
    stop: asyncio.Event, tasks: dict[str, asyncio.Task[None]], received: list[str]
) -> bool:
    """Wait for a signal or a fatal error, and log which; True for a fatal error.

    A component that ends cleanly on its own is not a reason to stop the others. (An operator
    draining the in-process worker, ``POST /workers/{id}/drain``, only pauses it: it keeps
    heartbeating and takes runs again once undrained.)
    """
    names: dict[asyncio.Task[Any], str] = {task: name for name, task in tasks.items()}
    running = set(tasks.values())
    waiter = asyncio.create_task(stop.wait())
    try:
        while True:
            done, _ = await asyncio.wait([waiter, *running], return_when=asyncio.FIRST_COMPLETED)
            for task in done - {waiter}:
                running.discard(task)
                error = None if task.cancelled() else task.exception()
                if error is not None or task.cancelled():
                    logger.error(
                        "fatal error: the %s stopped unexpectedly; shutting down",
                        names[task],
                        exc_info=error,
                    )
                    return True
                logger.warning(
                    "the %s stopped; %s keep running",
                    names[task],
                    ", ".join(names[t] for t in running) or "no other component",
                )
            if waiter in done:
                logger.info("received %s: shutting down", " then ".join(received) or "a signal")
                return False
            if not running:
                logger.info("every component has stopped: shutting down")
                return False
    finally:
        waiter.cancel()


async def _stop_in_order(
    tasks: dict[str, asyncio.Task[None]],
    stoppers: dict[str, Callable[[], None]],
    limit_seconds: float,
) -> None:
    for name in ORDER:
        if name not in tasks:
            continue
        stoppers[name]()
        task = tasks[name]
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=limit_seconds)
        except TimeoutError:
            logger.error("%s did not stop within %.0f s; cancelling it", name, limit_seconds)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        except Exception:
            logger.exception("%s stopped with an error", name)
