"""``api.workers``: several API processes sharing one listening socket (pre-fork).

The parent loads the settings and binds the socket, then forks ``count`` children; each runs the
whole API (its own event loop, database pool, caches and request metrics) on the inherited
socket, and the kernel spreads connections between them. The parent only supervises:

- SIGTERM or SIGINT: forwarded to every child, which stops accepting, finishes the requests in
  flight and exits; the parent exits once all have, with the worst child's status.
- A child that dies is replaced (a crash of one process costs the connections it held, not the
  service) — unless it could not start (status 2: database refused, bad configuration), or
  children died more than ``max_restarts`` times within ``window`` seconds: then the parent stops
  them all and exits with that status, since restarting would only repeat the failure.

What the processes share is what every process of the system shares: the database (runs,
tasks, accounts, sessions), the queue and, when ``redis.url`` is set, the rate-limit buckets.
Forking happens before any event loop, thread or connection exists in the parent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable

logger = logging.getLogger(__name__)

_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


STARTUP_FAILED = 2


def supervise(
    count: int, serve_one: Callable[[], int], *, max_restarts: int = 5, window: float = 60.0
) -> int:
    """Run ``serve_one`` in ``count`` forked children until a stop signal; the exit status."""
    children: dict[int, float] = {}
    restarts: deque[float] = deque()
    stopping = False

    def stop_all(signum: int = signal.SIGTERM, _frame: object = None) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def spawn() -> None:
        # Signals stay blocked across the fork: a stop arriving in between is seen by the parent
        # once the child is recorded, and never by the child's copy of ``stop_all``.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                for signum in _STOP_SIGNALS:
                    signal.signal(signum, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
                status = 1
                try:
                    status = serve_one()
                except BaseException:
                    logger.exception("api process failed")
                finally:
                    logging.shutdown()
                    os._exit(status)
            children[pid] = time.monotonic()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)

    for signum in _STOP_SIGNALS:
        signal.signal(signum, stop_all)
    for _ in range(count):
        spawn()
        if stopping:
            break
    logger.info("api: %d processes serving (pids %s)", len(children), sorted(children))
    status = 0
    while children:
        try:
            pid, raw = os.wait()
        except ChildProcessError:
            break
        started = children.pop(pid, None)
        if started is None:
            continue
        code = os.waitstatus_to_exitcode(raw)
        if stopping:
            status = max(status, code if code > 0 else 0)
            continue
        now = time.monotonic()
        while restarts and now - restarts[0] > window:
            restarts.popleft()
        if code == STARTUP_FAILED or len(restarts) >= max_restarts:
            logger.error(
                "api process %d exited with status %d after %.1f s; stopping the others",
                pid,
                code,
                now - started,
            )
            status = code if code > 0 else 1
            stop_all()
        else:
            logger.warning("api process %d exited with status %d; starting another", pid, code)
            restarts.append(now)
            spawn()
    return status
