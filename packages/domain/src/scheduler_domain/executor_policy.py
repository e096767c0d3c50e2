"""Which role may use which executor, and which Python callables a task may name.

A task is code its owner runs on the workers' machines, so the executor is a privilege: by
default a ``user`` may only call ``noop`` and ``http`` (an outbound request), while ``shell``
and ``python`` (a process on the worker) belong to ``operator`` and ``admin``. The deployer
decides otherwise per executor (``executors.<name>.roles``); executors installed as plugins
share one rule.

A task may only name an executor some worker provides: a built-in one or a plugin the deployer
declared (``executors.plugin_names``) — the API process cannot see which plugins the workers
have installed, so an unknown name (``ftp``) is refused when the task is created instead of
dead-lettering its first run.

The ``python`` executor runs only callables the deployer registered: the values of the
``scheduler.tasks`` entry points and the ``module:function`` patterns of
``executors.python.allow`` (``*`` is a shell-style wildcard and may span dots:
``myjobs.*:*``). Whatever is registered, the modules that are the interpreter's own way out —
``builtins``, ``os``, ``subprocess``, ``importlib`` and their kin — are refused, so a
careless ``*:*`` does not hand out the worker.

The rule is checked twice: when a task is created or updated (with the caller's role) and by
the worker's claim before each run (with the owner's role *now*: a demoted owner's tasks stop
running at once).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from scheduler_domain.accounts import Role
from scheduler_domain.errors import DomainError, ValidationError
from scheduler_domain.executor_params import BUILTIN_EXECUTORS

#: The key of :attr:`ExecutorPolicy.roles` that covers every executor not listed by name.
PLUGINS = "plugins"

#: Modules a ``python`` task may never name, whatever the allow-list says: each is a way to run
#: arbitrary code, reach the operating system or read the interpreter's memory.
FORBIDDEN_MODULES = frozenset(
    {
        "builtins",
        "code",
        "codeop",
        "ctypes",
        "gc",
        "importlib",
        "inspect",
        "io",
        "marshal",
        "multiprocessing",
        "nt",
        "os",
        "pathlib",
        "pickle",
        "posix",
        "pty",
        "runpy",
        "shutil",
        "signal",
        "socket",
        "subprocess",
        "sys",
        "threading",
        "_thread",
        "types",
    }
)

_SAFE_DEFAULTS: dict[str, frozenset[Role]] = {
    "noop": frozenset({Role.ADMIN, Role.OPERATOR, Role.USER}),
    "http": frozenset({Role.ADMIN, Role.OPERATOR, Role.USER}),
    "shell": frozenset({Role.ADMIN, Role.OPERATOR}),
    "python": frozenset({Role.ADMIN, Role.OPERATOR}),
    PLUGINS: frozenset({Role.ADMIN, Role.OPERATOR}),
}

#: The roles that can own tasks: an executor allowed to all of them needs no owner lookup.
_TASK_OWNERS = frozenset(role for role in Role if role.can_write_tasks)


class ExecutorNotAllowed(DomainError):
    """The role may not use the executor (the API answers 403)."""

    code = "executor_not_allowed"

    def __init__(self, executor: str, role: Role) -> None:
        self.executor = executor
        self.role = role
        super().__init__(
            f"the {executor!r} executor is not allowed for role {role.value!r}", field="executor"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutorPolicy:
    """``roles``: executor name (or :data:`PLUGINS`) → the roles that may use it; a name
    missing from the map falls back to the safe defaults. ``python_allow``: callable patterns;
    ``python_registered``: exact callables (the entry points)."""

    roles: Mapping[str, frozenset[Role]] = field(default_factory=dict)
    python_allow: tuple[str, ...] = ()
    python_registered: frozenset[str] = frozenset()
    #: The plugin executors the workers provide (``executors.plugin_names``).
    plugin_names: frozenset[str] = frozenset()

    @classmethod
    def from_names(
        cls,
        roles: Mapping[str, Iterable[str]],
        *,
        python_allow: Iterable[str] = (),
        python_registered: Iterable[str] = (),
        plugin_names: Iterable[str] = (),
    ) -> ExecutorPolicy:
        return cls(
            roles={name: frozenset(Role(r) for r in names) for name, names in roles.items()},
            python_allow=tuple(python_allow),
            python_registered=frozenset(python_registered),
            plugin_names=frozenset(plugin_names),
        )

    @property
    def known_executors(self) -> frozenset[str]:
        """Every executor name a task may use: the built-ins and the declared plugins."""
        return BUILTIN_EXECUTORS | self.plugin_names

    def check_known(self, executor: str) -> None:
        """Raise :class:`ValidationError` (``executor``) for a name no worker provides."""
        if executor in self.known_executors:
            return
        known = ", ".join(sorted(self.known_executors))
        raise ValidationError(
            f"unknown executor {executor!r}: the executors are {known} (a plugin executor"
            " must be declared in executors.plugin_names)",
            field="executor",
        )

    def roles_for(self, executor: str) -> frozenset[Role]:
        key = executor if executor in BUILTIN_EXECUTORS else PLUGINS
        found = self.roles.get(key)
        return found if found is not None else _SAFE_DEFAULTS[key]

    def allows(self, executor: str, role: Role) -> bool:
        return role in self.roles_for(executor)

    def open_to_every_owner(self, executor: str) -> bool:
        """Whether any role that can own a task may use ``executor`` (no need to look the
        owner up before a run)."""
        return self.roles_for(executor) >= _TASK_OWNERS

    def check(self, executor: str, params: Mapping[str, Any], role: Role) -> None:
        """Raise :class:`ExecutorNotAllowed` for a role that may not use ``executor``, and
        :class:`ValidationError` (``params.callable``) for a python callable not registered."""
        if not self.allows(executor, role):
            raise ExecutorNotAllowed(executor, role)
        if executor == "python":
            self.check_callable(params.get("callable"))

    def refusal(self, executor: str, params: Mapping[str, Any], role: Role | None) -> str | None:
        """Why a run of this task may not start now (``role``: its owner's, None when the owner
        is gone), or None."""
        if role is None:
            return f"the task's owner no longer exists: the {executor!r} executor is refused"
        try:
            self.check(executor, params, role)
        except (ExecutorNotAllowed, ValidationError) as refused:
            return f"refused by the executor policy: {refused.message}"
        return None

    def check_callable(self, target: object) -> None:
        if not isinstance(target, str):
            raise ValidationError("callable must be a string", field="params.callable")
        module, _, _ = target.partition(":")
        top = module.split(".", 1)[0]
        if top in FORBIDDEN_MODULES or top.startswith("_"):
            raise ValidationError(
                f"callables of module {top!r} may never run as tasks", field="params.callable"
            )
        if target in self.python_registered:
            return
        if any(fnmatchcase(target, pattern) for pattern in self.python_allow):
            return
        raise ValidationError(
            f"{target!r} is not a registered task callable: the deployer registers them with"
            " the 'scheduler.tasks' entry points or executors.python.allow",
            field="params.callable",
        )
