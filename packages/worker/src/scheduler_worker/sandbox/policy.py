"""Who a task process runs as, what it may use and what it sees: the sandbox's policy,
decided once when the worker starts.

Who: when the worker runs as root, each run (and each python interpreter) gets a uid of its
own from ``worker.task_uid_range`` (``worker.isolate_tasks``, :mod:`.uids`) with a fresh
private ``HOME``/``TMPDIR``; or, without isolation, the shared ``worker.run_as`` account.

Network: ``worker.task_network = "none"`` puts every task process in a new network namespace
holding only its own loopback (root only; a worker that is not root runs tasks with the host's
network, with a warning at start).

Environment: a task process gets only the worker variables named in ``worker.env_allowlist``
(``HOME`` replaced by the unprivileged user's home when the worker drops to one; with isolated
uids ``HOME`` and ``TMPDIR`` are the run's private folder), then the
task's ``env``, its decrypted ``secret_env`` and ``SCHEDULER_RUN_ID``/``SCHEDULER_TASK_ID``/
``SCHEDULER_ATTEMPT``. Nothing else of the worker's environment reaches task code.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheduler_worker.sandbox.errors import SandboxConfigError, SandboxStartError
from scheduler_worker.sandbox.uids import (
    DEFAULT_LOCK_DIR,
    DEFAULT_UID_RANGE,
    TaskUids,
    UidLease,
    check_uid_range,
    parse_uid_range,
)

logger = logging.getLogger("scheduler.worker.sandbox")

#: Variables a task process usually needs and that carry no secret.
DEFAULT_ENV_ALLOWLIST = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")

_SPEC_NAMES = {
    "cpu_seconds": "cpu",
    "memory_bytes": "as",
    "processes": "nproc",
    "open_files": "nofile",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ResourceLimits:
    """Per-process limits of a task (0: none). Applied as both soft and hard limits, so the
    task cannot raise them again."""

    cpu_seconds: int = 0
    memory_bytes: int = 0
    processes: int = 0
    open_files: int = 0

    def lowered(self, requested: Mapping[str, Any] | None) -> ResourceLimits:
        """These limits with the task's own requests applied: a request lowers a limit (or
        sets one where the worker has none), never raises it."""
        if not requested:
            return self
        values = {}
        for name in _SPEC_NAMES:
            mine: int = getattr(self, name)
            asked = requested.get(name)
            if isinstance(asked, int) and not isinstance(asked, bool) and asked > 0:
                values[name] = asked if mine == 0 else min(asked, mine)
            else:
                values[name] = mine
        return ResourceLimits(**values)

    def as_spec(self) -> dict[str, int]:
        """The limits in the supervisor's spec form (``{"cpu": 10, "as": ...}``)."""
        return {
            key: getattr(self, name) for name, key in _SPEC_NAMES.items() if getattr(self, name)
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class RunAs:
    """The unprivileged account task processes run as. ``exclusive``: the uid belongs to
    this run alone, so every process of it is killed before the run starts and after it
    ends (which also ends processes that left the run's group with ``setsid``)."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str
    exclusive: bool = False

    def as_spec(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "gid": self.gid,
            "groups": list(self.groups),
            "exclusive": self.exclusive,
        }


class TaskIdentity:
    """Who one run (or one python interpreter) runs as, held until :meth:`close`: a shared
    account, or a uid of its own with a private home folder. Close it only once no process
    of the run is left (the supervisor has ended)."""

    def __init__(
        self, *, user: RunAs | None, lease: UidLease | None = None, home: str | None = None
    ) -> None:
        self.user = user
        self._lease = lease
        self._home = home

    @property
    def hold_fds(self) -> tuple[int, ...]:
        """Descriptors the supervisor keeps open (the uid's lock) until it has ended."""
        return () if self._lease is None else (self._lease.fd,)

    def close(self) -> None:
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None
        if self._lease is not None:
            self._lease.release()
            self._lease = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxPolicy:
    #: ``None``: tasks run as the worker's own user (the worker is not root, or root tasks
    #: were allowed).
    user: RunAs | None = None
    limits: ResourceLimits = field(default_factory=ResourceLimits)
    env_allowlist: tuple[str, ...] = DEFAULT_ENV_ALLOWLIST
    #: The interpreter of ``python`` tasks: it must be readable and executable by ``user``.
    python_executable: str = sys.executable
    #: Set: every run gets a uid of its own from these (``user`` is then unused).
    uids: TaskUids | None = None
    #: Where the private home folders of isolated runs are created ("": the system's temp).
    home_base: str = ""
    #: ``"none"``: a new network namespace with only its own loopback; ``"host"``: the host's.
    network: str = "host"

    def identity(self) -> TaskIdentity:
        """Who the next run runs as; raises :class:`SandboxStartError` when no uid is free
        or its home cannot be made."""
        if self.uids is None:
            return TaskIdentity(user=self.user)
        lease = self.uids.acquire()
        base = self.home_base or tempfile.gettempdir()
        _remove_stale_homes(base, lease.uid)
        try:
            home = tempfile.mkdtemp(prefix=f"{_HOME_PREFIX}{lease.uid}-", dir=base)
        except OSError as exc:
            lease.release()
            raise SandboxStartError(f"cannot create the task's home folder: {exc}") from exc
        try:
            os.chown(home, lease.uid, lease.uid)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.rmdir(home)
            lease.release()
            raise SandboxStartError(f"cannot hand the task its home folder: {exc}") from exc
        user = RunAs(
            name=f"uid {lease.uid}",
            uid=lease.uid,
            gid=lease.uid,
            groups=(),
            home=home,
            exclusive=True,
        )
        return TaskIdentity(user=user, lease=lease, home=home)

    def environment(
        self,
        *,
        run_id: str,
        task_id: str,
        attempt: int,
        env: Mapping[str, str] | None = None,
        secret_env: Mapping[str, str] | None = None,
        user: RunAs | None = None,
    ) -> dict[str, str]:
        result = self.base_environment(user)
        result.update(env or {})
        result.update(secret_env or {})
        result.update(run_variables(run_id=run_id, task_id=task_id, attempt=attempt))
        return result

    def base_environment(self, user: RunAs | None = None) -> dict[str, str]:
        """The allow-listed part of the worker's environment, with ``user``'s home (default:
        the policy's account)."""
        result = {name: os.environ[name] for name in self.env_allowlist if name in os.environ}
        who = user or self.user
        if who is not None and who.exclusive:
            result["HOME"] = result["TMPDIR"] = who.home
        elif who is not None and "HOME" in result:
            result["HOME"] = who.home
        return result


_HOME_PREFIX = "scheduler-task-"


def _clear_leftovers(uids: TaskUids, base: str) -> None:
    """At start: the homes and lock files of uids that no live worker holds (their worker
    died), so they do not pile up until the same uid happens to be taken again."""
    stale = set()
    with contextlib.suppress(OSError):
        for entry in os.scandir(base):
            if entry.name.startswith(_HOME_PREFIX):
                number = entry.name[len(_HOME_PREFIX) :].split("-", 1)[0]
                if number.isdigit() and uids.first <= int(number) <= uids.last:
                    stale.add(int(number))
    leases = uids.free_leftovers()
    for uid in stale - {lease.uid for lease in leases}:
        lease = uids.take(uid)
        if lease is not None:
            leases.append(lease)
    for lease in leases:
        try:
            _remove_stale_homes(base, lease.uid)
        finally:
            lease.release()


def _remove_stale_homes(base: str, uid: int) -> None:
    """Remove the home folders an earlier holder of ``uid`` left (its worker died before it
    could): whoever holds the uid's lock owns every ``scheduler-task-<uid>-*`` folder that
    ``uid`` owns."""
    prefix = f"{_HOME_PREFIX}{uid}-"
    try:
        entries = list(os.scandir(base))
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode) and info.st_uid == uid:
            shutil.rmtree(entry.path, ignore_errors=True)


def run_variables(*, run_id: str, task_id: str, attempt: int) -> dict[str, str]:
    return {
        "SCHEDULER_RUN_ID": run_id,
        "SCHEDULER_TASK_ID": task_id,
        "SCHEDULER_ATTEMPT": str(attempt),
    }


def sandbox_policy(
    *,
    run_as: str = "nobody",
    allow_root_tasks: bool = False,
    limits: ResourceLimits | None = None,
    env_allowlist: Sequence[str] = DEFAULT_ENV_ALLOWLIST,
    python_executable: str = "",
    isolate_tasks: bool = True,
    task_uid_range: str = DEFAULT_UID_RANGE,
    task_uid_lock_dir: str = DEFAULT_LOCK_DIR,
    task_home_dir: str = "",
    task_network: str = "none",
    accounts: Callable[[], Iterable[Any]] = pwd.getpwall,
    network_probe: Callable[[], str | None] | None = None,
) -> SandboxPolicy:
    """The policy for this process. When it runs as root, tasks run with a uid of their own
    each (``isolate_tasks``), or else as ``run_as``, or as root with ``allow_root_tasks``
    (logged as a warning); and without network (``task_network="none"``). Raises
    :class:`SandboxConfigError`, naming the setting, when ``run_as`` does not exist or is
    root, or when an account (``accounts``: the passwd entries) owns a uid of the range.
    ``network_probe`` says why no network namespace can be made here (``None``: it can)."""
    if task_network not in ("none", "host"):
        raise SandboxConfigError(
            f"worker.task_network: expected 'none' or 'host' (got {task_network!r})"
        )
    user: RunAs | None = None
    uids: TaskUids | None = None
    root = os.geteuid() == 0
    if root:
        if allow_root_tasks:
            logger.warning(
                "worker.allow_root_tasks is true and the worker runs as root: shell and python"
                " tasks run as root"
            )
        elif isolate_tasks:
            first, last = parse_uid_range(task_uid_range)
            check_uid_range(first, last, accounts=accounts)
            uids = TaskUids(first=first, last=last, lock_dir=task_uid_lock_dir)
            uids.prepare()
            if task_home_dir and not os.path.isdir(task_home_dir):
                raise SandboxConfigError(f"worker.task_home_dir: {task_home_dir!r} is not a folder")
            _clear_leftovers(uids, task_home_dir or tempfile.gettempdir())
            logger.info(
                "shell and python tasks run with a uid of their own each, from %s-%s",
                first,
                last,
            )
        else:
            user = resolve_user(run_as)
            logger.info("shell and python tasks run as %s (worker.isolate_tasks is false)", run_as)
    network = task_network
    if network == "none" and not root:
        logger.warning(
            "worker.task_network is 'none' but the worker is not root: it cannot give tasks a"
            " network namespace of their own, so they use the host's network"
        )
        network = "host"
    elif network == "none" and (refused := (network_probe or probe_network_namespace)()):
        logger.warning(
            "worker.task_network is 'none' but no network namespace can be created here (%s;"
            " a container needs CAP_SYS_ADMIN and a seccomp profile allowing unshare): tasks"
            " use the host's network",
            refused,
        )
        network = "host"
    logger.info(
        "task network: %s",
        "none (a namespace with only its own loopback)" if network == "none" else "host",
    )
    unprivileged = "task uids" if uids is not None else (user.name if user else None)
    return SandboxPolicy(
        user=user,
        limits=limits or ResourceLimits(),
        env_allowlist=tuple(env_allowlist),
        python_executable=python_executable or default_python(unprivileged),
        uids=uids,
        home_base=task_home_dir,
        network=network,
    )


_NETNS_PROBE = (
    "import ctypes, os, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "if libc.unshare(0x40000000) != 0:\n"
    "    sys.exit(os.strerror(ctypes.get_errno()))\n"
)


def probe_network_namespace() -> str | None:
    """Why a process of this host cannot enter a new network namespace, or ``None``.
    Tried in a short-lived interpreter, so the worker's own namespace is left alone."""
    try:
        probe = subprocess.run(  # noqa: S603 - our own interpreter and fixed code
            [sys.executable, "-I", "-S", "-c", _NETNS_PROBE],
            env={},
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if probe.returncode == 0:
        return None
    return probe.stderr.decode("utf-8", "replace").strip() or f"exit {probe.returncode}"


def resolve_user(name: str) -> RunAs:
    try:
        entry = pwd.getpwnam(name) if not name.isdigit() else pwd.getpwuid(int(name))
    except KeyError:
        raise SandboxConfigError(
            f"worker.run_as: there is no user {name!r} to run tasks as; create it or name"
            " another unprivileged account"
        ) from None
    if entry.pw_uid == 0:
        raise SandboxConfigError(
            f"worker.run_as: {name!r} is root; set worker.allow_root_tasks to run tasks as root"
        )
    groups = tuple(sorted(set(os.getgrouplist(entry.pw_name, entry.pw_gid))))
    return RunAs(
        name=entry.pw_name,
        uid=entry.pw_uid,
        gid=entry.pw_gid,
        groups=groups,
        home=entry.pw_dir,
    )


def default_python(user: str | None) -> str:
    """The worker's own interpreter, unless ``user`` could not run it (e.g. one installed
    under ``/root``): then the system's interpreter of the same version, with a warning."""
    own = sys.executable
    if user is None or _world_runnable(own):
        return own
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for folder in ("/usr/local/bin", "/usr/bin"):
        candidate = shutil.which(version, path=folder)
        if candidate and _world_runnable(candidate):
            logger.warning(
                "%s cannot run the worker's interpreter %s; python tasks use %s (set"
                " worker.python_executable to choose)",
                user,
                own,
                candidate,
            )
            return candidate
    logger.error(
        "%s cannot run the worker's interpreter %s and no %s is installed where it can:"
        " python tasks will fail; set worker.python_executable",
        user,
        own,
        version,
    )
    return own


def _world_runnable(executable: str) -> bool:
    """Whether anyone may run ``executable``: the file and every folder above it (symlinks
    resolved) grant execute permission to others."""
    path = Path(os.path.realpath(executable))
    try:
        if not path.stat().st_mode & stat.S_IXOTH:
            return False
        return all(parent.stat().st_mode & stat.S_IXOTH for parent in path.parents)
    except OSError:
        return False
