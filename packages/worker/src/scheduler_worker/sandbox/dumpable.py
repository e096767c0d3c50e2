"""The worker makes itself non-dumpable, so processes of the same user — task processes, when
the worker does not run as root — can neither read its ``/proc/<pid>/environ``, ``mem`` or
``maps`` nor attach a debugger to it (``prctl(PR_SET_DUMPABLE, 0)``; Linux only)."""

from __future__ import annotations

import ctypes
import logging
import sys

logger = logging.getLogger("scheduler.worker.sandbox")

_PR_SET_DUMPABLE = 4
_PR_GET_DUMPABLE = 3


def make_non_dumpable() -> bool:
    """``True`` when this process is now non-dumpable; logs a warning where it cannot be."""
    if not sys.platform.startswith("linux"):
        logger.warning("cannot make the worker non-dumpable on %s", sys.platform)
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        logger.warning("prctl(PR_SET_DUMPABLE, 0) failed: errno %d", ctypes.get_errno())
        return False
    return True


def is_dumpable() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0))
