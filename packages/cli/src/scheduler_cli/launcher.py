"""``scheduler run``: any mix of api, dispatcher and worker in one process.

The components share one event loop, one database pool and one queue connection (so the
in-process memory queue works). SIGINT/SIGTERM stop them in order — stop accepting requests,
drain the worker, stop the dispatcher — and then the shared resources are closed, all within
``run.shutdown_timeout_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence

from scheduler_dispatcher.bootstrap import build_dispatcher
from scheduler_infrastructure.config import Settings
from scheduler_infrastructure.persistence.migrations import upgrade
from scheduler_infrastructure.resources import open_resources
from scheduler_worker.bootstrap import build_worker

logger = logging.getLogger("scheduler.launcher")


async def run_components(
    settings: Settings, components: Sequence[str], *, migrate: bool = False
) -> None:
    if migrate:
        from scheduler_infrastructure.factories import database_url

        logger.info("migrating the database to the newest revision")
        await asyncio.to_thread(upgrade, database_url(settings.database))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with open_resources(settings) as resources, contextlib.AsyncExitStack() as stack:
        tasks: dict[str, asyncio.Task[None]] = {}
        stoppers: list[tuple[str, object]] = []
        if "worker" in components:
            worker = await stack.enter_async_context(build_worker(resources))
            tasks["worker"] = asyncio.create_task(worker.run(), name="worker")
            stoppers.append(("worker", worker.stop))
        if "dispatcher" in components:
            dispatcher = build_dispatcher(resources)
            tasks["dispatcher"] = asyncio.create_task(dispatcher.run(), name="dispatcher")
            stoppers.append(("dispatcher", dispatcher.stop))
        logger.info("running: %s", ", ".join(components))
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait(
            [waiter, *tasks.values()], return_when=asyncio.FIRST_COMPLETED
        )
        crashed = [t for t in done if t is not waiter and t.exception() is not None]
        logger.info("shutting down")
        timeout = settings.run.shutdown_timeout_seconds
        for name, stopper in stoppers:
            stopper()  # type: ignore[operator]
            task = tasks[name]
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout=timeout)
            except TimeoutError:
                logger.error("%s did not stop within %.0f s; cancelling", name, timeout)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            except Exception:
                logger.exception("%s stopped with an error", name)
        waiter.cancel()
        for task in crashed:
            raise task.exception()  # type: ignore[misc]
