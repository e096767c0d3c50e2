"""The garbage collector set for a long-running server process.

CPython's cycle collector walks the objects it tracks: the youngest generation every 700 net
allocations of containers, the whole heap now and then. A process of this system holds
~220,000 tracked objects once started (the API: its modules, the app, SQLAlchemy's and
Litestar's structures), nearly all of them made while it started and kept until it exits; a
full collection walked them all — 120 to 140 ms on the 2-core machine of ``docs/benchmarks.md``,
during which the process answers nothing — and under load the young collections ran every
~20 requests (about 4 % of the API's CPU on ``POST /tasks/{id}/trigger``).

:func:`settle` is called once the process has imported what it runs (by
:func:`scheduler_infrastructure.event_loop.run`, before the loop starts): a collection, then
``gc.freeze()`` moves every object alive into the permanent generation, which no collection
walks (175,000 of the API's objects: a full collection then walks the ~45,000 made since,
in 25 to 35 ms); and the youngest generation is collected after :data:`YOUNG_THRESHOLD` net
allocations instead of 700. Request handling makes and drops its objects by reference
counting, so the count rarely climbs that far: young collections fell from ~130 to fewer than
one per second under that load. Garbage in reference cycles still goes, later: at most that
many container objects wait for it.

``SCHEDULER_GC=default`` leaves CPython's collector as it is (to rule this out).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Mapping

from scheduler_infrastructure.startup import StartupError

VARIABLE = "SCHEDULER_GC"
#: Net allocations of container objects between two collections of the youngest generation.
YOUNG_THRESHOLD = 10_000


class HeapChoiceError(StartupError):
    """``SCHEDULER_GC`` names no setting."""


def settle(environ: Mapping[str, str] | None = None) -> bool:
    """Freeze what is alive and raise the young generation's threshold; False (nothing done)
    under ``SCHEDULER_GC=default``."""
    choice = (environ if environ is not None else os.environ).get(VARIABLE, "").strip().lower()
    if choice == "default":
        return False
    if choice not in ("", "tuned"):
        raise HeapChoiceError(f"{VARIABLE}={choice!r}: expected 'tuned' (the default) or 'default'")
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    return True
