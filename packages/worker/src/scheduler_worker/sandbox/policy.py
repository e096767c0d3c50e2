"""Who a task process runs as, what it may use and what it sees: the sandbox's policy,
decided once when the worker starts.

Environment: a task process gets only the worker variables named in ``worker.env_allowlist``
(``HOME`` replaced by the unprivileged user's home when the worker drops to one), then the
task's ``env``, its decrypted ``secret_env`` and ``SCHEDULER_RUN_ID``/``SCHEDULER_TASK_ID``/
``SCHEDULER_ATTEMPT``. Nothing else of the worker's environment reaches task code.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import stat
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheduler_worker.sandbox.errors import SandboxConfigError

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
    """The unprivileged account task processes run as."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str

    def as_spec(self) -> dict[str, Any]:
        return {"uid": self.uid, "gid": self.gid, "groups": list(self.groups)}


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxPolicy:
    #: ``None``: tasks run as the worker's own user (the worker is not root, or root tasks
    #: were allowed).
    user: RunAs | None = None
    limits: ResourceLimits = field(default_factory=ResourceLimits)
    env_allowlist: tuple[str, ...] = DEFAULT_ENV_ALLOWLIST
    #: The interpreter of ``python`` tasks: it must be readable and executable by ``user``.
    python_executable: str = sys.executable

    def environment(
        self,
        *,
        run_id: str,
        task_id: str,
        attempt: int,
        env: Mapping[str, str] | None = None,
        secret_env: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        result = self.base_environment()
        result.update(env or {})
        result.update(secret_env or {})
        result.update(run_variables(run_id=run_id, task_id=task_id, attempt=attempt))
        return result

    def base_environment(self) -> dict[str, str]:
        """The allow-listed part of the worker's environment."""
        result = {name: os.environ[name] for name in self.env_allowlist if name in os.environ}
        if self.user is not None and "HOME" in result:
            result["HOME"] = self.user.home
        return result


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
) -> SandboxPolicy:
    """The policy for this process: when it runs as root, tasks run as ``run_as`` unless
    ``allow_root_tasks`` (then a warning is logged). Raises :class:`SandboxConfigError` when
    ``run_as`` does not exist or is root itself."""
    user: RunAs | None = None
    if os.geteuid() == 0:
        if allow_root_tasks:
            logger.warning(
                "worker.allow_root_tasks is true and the worker runs as root: shell and python"
                " tasks run as root"
            )
        else:
            user = resolve_user(run_as)
    return SandboxPolicy(
        user=user,
        limits=limits or ResourceLimits(),
        env_allowlist=tuple(env_allowlist),
        python_executable=python_executable or default_python(user),
    )


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


def default_python(user: RunAs | None) -> str:
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
                user.name,
                own,
                candidate,
            )
            return candidate
    logger.error(
        "%s cannot run the worker's interpreter %s and no %s is installed where it can:"
        " python tasks will fail; set worker.python_executable",
        user.name,
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
