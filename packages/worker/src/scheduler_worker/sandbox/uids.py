"""Task uids: every sandboxed run (and every python interpreter) gets an OS uid of its own,
never used by another live run, so tasks of different runs cannot read each other's
``/proc/<pid>/environ``, ptrace or signal each other.

The uids come from ``worker.task_uid_range`` (no account of the host may own one) and are
allocated across every worker process of the host: uid ``N`` is taken while some process holds
an exclusive ``flock`` on ``<worker.task_uid_lock_dir>/N``. The kernel drops the lock when its
holders die, even by ``kill -9``, so a crashed worker never leaks uids. The supervisor of the
run holds a copy of the lock descriptor, so the uid stays taken until the supervisor, too, has
ended (after it has killed every process of the uid).
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import os
import pwd
import secrets
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scheduler_worker.sandbox.errors import SandboxConfigError, SandboxStartError

DEFAULT_UID_RANGE = "1900000000-1900999999"
DEFAULT_LOCK_DIR = "/run/scheduler/task-uids"
#: How many uids one allocation tries before it gives up (the range is expected to be much
#: larger than the number of live runs on the host).
_ATTEMPTS = 4096


def parse_uid_range(text: str) -> tuple[int, int]:
    """``"FIRST-LAST"`` as two uids; :class:`SandboxConfigError` naming the setting otherwise."""
    first_text, dash, last_text = text.strip().partition("-")
    try:
        if not dash:
            raise ValueError
        first, last = int(first_text), int(last_text)
    except ValueError:
        raise SandboxConfigError(
            f"worker.task_uid_range: expected FIRST-LAST, e.g. {DEFAULT_UID_RANGE!r} (got {text!r})"
        ) from None
    if not 0 < first <= last < 2**32 - 1:
        raise SandboxConfigError(
            f"worker.task_uid_range: expected 0 < FIRST <= LAST < 4294967295 (got {text!r})"
        )
    return first, last


def check_uid_range(
    first: int,
    last: int,
    *,
    accounts: Callable[[], Iterable[Any]] = pwd.getpwall,
    groups: Callable[[], Iterable[Any]] = grp.getgrall,
) -> None:
    """Refuse a range that holds the uid of an account (or the gid of a group) of the host:
    its processes and files would be the task's."""
    for entry in accounts():
        if first <= entry.pw_uid <= last:
            raise SandboxConfigError(
                f"worker.task_uid_range: the account {entry.pw_name!r} has uid {entry.pw_uid},"
                f" inside {first}-{last}; choose a range no account uses"
            )
    for entry in groups():
        if first <= entry.gr_gid <= last:
            raise SandboxConfigError(
                f"worker.task_uid_range: the group {entry.gr_name!r} has gid {entry.gr_gid},"
                f" inside {first}-{last}; choose a range no group uses"
            )


class UidLease:
    """One allocated uid, held until :meth:`release` (or until this process dies)."""

    def __init__(self, *, uid: int, fd: int, path: str) -> None:
        self.uid = uid
        self.fd = fd
        self._path = path
        self._released = False

    def release(self) -> None:
        """Free the uid. The lock file is removed while still locked, so an allocator that
        opened it meanwhile sees that its file is gone and tries again."""
        if self._released:
            return
        self._released = True
        with contextlib.suppress(OSError):
            os.unlink(self._path)
        os.close(self.fd)


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskUids:
    first: int
    last: int
    lock_dir: str = DEFAULT_LOCK_DIR

    def prepare(self) -> None:
        """Create the lock folder (0700, owned by this process's user) or check it."""
        folder = Path(self.lock_dir)
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = folder.lstat()
        except OSError as exc:
            raise SandboxConfigError(
                f"worker.task_uid_lock_dir: cannot create {self.lock_dir!r}: {exc}"
            ) from None
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            raise SandboxConfigError(
                f"worker.task_uid_lock_dir: {self.lock_dir!r} must be a folder owned by the"
                " worker's user"
            )
        folder.chmod(0o700)

    def free_leftovers(self) -> list[UidLease]:
        """Leases of every uid whose lock file a dead holder left (a worker killed before it
        could free its uids): the caller clears what they left, then releases them."""
        leases = []
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.lock_dir):
                if entry.name.isdigit() and self.first <= int(entry.name) <= self.last:
                    lease = self._try(int(entry.name))
                    if lease is not None:
                        leases.append(lease)
        return leases

    def take(self, uid: int) -> UidLease | None:
        """``uid``'s lease if no one holds it."""
        return self._try(uid)

    def acquire(self) -> UidLease:
        """A uid no live run of this host holds, from a random start in the range."""
        size = self.last - self.first + 1
        start = secrets.randbelow(size)
        for step in range(min(size, _ATTEMPTS)):
            uid = self.first + (start + step) % size
            lease = self._try(uid)
            if lease is not None:
                return lease
        raise SandboxStartError(
            f"no free task uid in worker.task_uid_range ({self.first}-{self.last})"
        )

    def _try(self, uid: int) -> UidLease | None:
        path = os.path.join(self.lock_dir, str(uid))
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise SandboxStartError(
                f"cannot open a task uid lock in {self.lock_dir}: {exc}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # The holder before us may have removed the file between our open and our lock.
            if os.stat(path, follow_symlinks=False).st_ino != os.fstat(fd).st_ino:
                raise BlockingIOError
        except OSError:
            os.close(fd)
            return None
        return UidLease(uid=uid, fd=fd, path=path)


def holds_lock(lock_dir: str, uid: int) -> bool:
    """Whether some process holds ``uid``'s lock (for tests and diagnostics)."""
    path = os.path.join(lock_dir, str(uid))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
