"""The event loop every process of the system runs on.

uvloop (libuv, in C) where it is installed — the default on Linux and macOS, a dependency of
this package there — otherwise the standard library's loop. uvloop's transports write and read
sockets without going through Python for each call: the API answers more requests per core,
and asyncpg, aio-pika and redis-py cost less per round trip on it (docs/benchmarks.md, #15).

Workers run on it too. They start every task's sandbox supervisor with ``subprocess.Popen``
themselves (``scheduler_worker.sandbox.process``), never with the loop's ``subprocess_exec``:
uvloop's has no ``close_fds`` (the worker's descriptors — its database and broker sockets —
would reach the task) nor ``user``/``group``.

``SCHEDULER_EVENT_LOOP=asyncio`` chooses the standard loop everywhere (to rule the loop out when
chasing a problem); ``uvloop`` insists on it and fails to start without it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from scheduler_infrastructure import heap
from scheduler_infrastructure.startup import StartupError

T = TypeVar("T")

VARIABLE = "SCHEDULER_EVENT_LOOP"
CHOICES = ("auto", "uvloop", "asyncio")


class EventLoopChoiceError(StartupError):
    """``SCHEDULER_EVENT_LOOP`` names no loop this process can run."""


def loop_factory(choice: str | None = None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the chosen loop (None: the standard library's)."""
    wanted = (choice if choice is not None else os.environ.get(VARIABLE, "auto")).strip().lower()
    wanted = wanted or "auto"
    if wanted not in CHOICES:
        raise EventLoopChoiceError(f"{VARIABLE}={wanted!r}: expected one of {', '.join(CHOICES)}")
    if wanted == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if wanted == "uvloop":
            raise EventLoopChoiceError(f"{VARIABLE}=uvloop, but uvloop is not installed") from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the chosen loop, the garbage collector set for a server first
    (:func:`scheduler_infrastructure.heap.settle`: what the process imported is frozen)."""
    try:
        factory = loop_factory()
        heap.settle()
    except StartupError:
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
