"""Executors by name: the built-ins plus third-party ones from the ``scheduler.executors``
entry-point group.

A plugin's entry point names a class or factory (called without arguments) or an instance;
the object needs a ``name`` and an ``async execute(context)``. A plugin that fails to load, is
malformed or claims a name already taken is logged and skipped: one broken package must not
stop a worker, nor replace a built-in such as ``shell``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from importlib.metadata import EntryPoint, entry_points
from types import TracebackType
from typing import Any

import httpx

from scheduler_application.ports.executor import Executor
from scheduler_domain.errors import ValidationError
from scheduler_domain.executor_params import BUILTIN_EXECUTORS, validate_executor
from scheduler_worker.executors.errors import DuplicateExecutorError, UnknownExecutorError
from scheduler_worker.executors.http import HttpExecutor
from scheduler_worker.executors.noop import NoopExecutor
from scheduler_worker.executors.output import DEFAULT_OUTPUT_LIMIT
from scheduler_worker.executors.python import PythonExecutor
from scheduler_worker.executors.shell import ShellExecutor
from scheduler_worker.sandbox.policy import SandboxPolicy, sandbox_policy

ENTRY_POINT_GROUP = "scheduler.executors"

logger = logging.getLogger(__name__)


def builtin_executors(
    *,
    http_transport: httpx.AsyncBaseTransport,
    env_allowlist: Sequence[str] | None = None,
    output_limit: int = DEFAULT_OUTPUT_LIMIT,
    kill_grace_seconds: float = 5.0,
    sandbox: SandboxPolicy | None = None,
    python_pool_size: int = 2,
    python_max_runs_per_process: int = 100,
) -> list[Executor]:
    """``http_transport``: how http tasks connect — the composition root's guarded transport,
    which applies the outbound policy (the destinations they may reach); ``sandbox``: how
    ``shell`` and ``python`` task processes are isolated (default: :func:`sandbox_policy` for
    this process, with ``env_allowlist`` when given)."""
    policy = sandbox or sandbox_policy()
    if env_allowlist is not None:
        policy = replace(policy, env_allowlist=tuple(env_allowlist))
    return [
        ShellExecutor(
            sandbox=policy,
            output_limit=output_limit,
            kill_grace_seconds=kill_grace_seconds,
        ),
        HttpExecutor(transport=http_transport, output_limit=output_limit),
        PythonExecutor(
            sandbox=policy,
            output_limit=output_limit,
            pool_size=python_pool_size,
            max_runs_per_process=python_max_runs_per_process,
            kill_grace_seconds=kill_grace_seconds,
        ),
        NoopExecutor(),
    ]


class ExecutorRegistry:
    """Also an async context manager: leaving it closes the executors that hold resources
    (those with an ``aclose()``, such as the http executor's own client)."""

    def __init__(self, executors: Iterable[Executor] = ()) -> None:
        self._executors: dict[str, Executor] = {}
        for executor in executors:
            self.register(executor)

    @classmethod
    def discover(
        cls,
        *,
        builtins: Iterable[Executor],
        entry_points: Iterable[EntryPoint] | None = None,
    ) -> ExecutorRegistry:
        """The built-ins (:func:`builtin_executors`, wired by the caller) plus every loadable
        plugin of ``entry_points`` (default: the installed ``scheduler.executors``)."""
        registry = cls(builtins)
        for entry_point in _installed() if entry_points is None else entry_points:
            registry._add_plugin(entry_point)
        return registry

    def register(self, executor: Executor) -> None:
        if executor.name in self._executors:
            raise DuplicateExecutorError(f"an executor named {executor.name!r} is registered")
        self._executors[executor.name] = executor

    def get(self, name: str) -> Executor:
        try:
            return self._executors[name]
        except KeyError:
            raise UnknownExecutorError(name, self._executors) from None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._executors))

    def __contains__(self, name: object) -> bool:
        return name in self._executors

    def __iter__(self) -> Iterator[Executor]:
        return iter(self._executors.values())

    def __len__(self) -> int:
        return len(self._executors)

    async def __aenter__(self) -> ExecutorRegistry:
        """Warms up the executors that have a ``warm_up()`` (the python executor's pool)."""
        for executor in self._executors.values():
            warm_up = getattr(executor, "warm_up", None)
            if warm_up is None:
                continue
            try:
                await warm_up()
            except Exception:
                logger.exception("warming up executor %r failed", executor.name)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for executor in self._executors.values():
            close = getattr(executor, "aclose", None)
            if close is None:
                continue
            try:
                await close()
            except Exception:
                logger.exception("closing executor %r failed", executor.name)

    def _add_plugin(self, entry_point: EntryPoint) -> None:
        label = f"{entry_point.name} = {entry_point.value}"
        try:
            loaded = entry_point.load()
            executor = _instantiate(loaded)
        except Exception:
            logger.exception("skipping executor plugin %s: it failed to load", label)
            return
        problem = _malformed(executor)
        if problem is None and executor.name in self._executors:
            problem = f"the name {executor.name!r} is already taken"
        if problem is not None:
            logger.error("skipping executor plugin %s: %s", label, problem)
            return
        if executor.name != entry_point.name:
            logger.warning("executor plugin %s registers itself as %r", label, executor.name)
        self._executors[executor.name] = executor
        logger.info("loaded executor plugin %s", label)


def _installed() -> Iterable[EntryPoint]:
    return entry_points(group=ENTRY_POINT_GROUP)


def _instantiate(loaded: Any) -> Any:
    """An instance is used as is; a class or factory is called without arguments."""
    if inspect.isclass(loaded) or not hasattr(loaded, "execute"):
        return loaded()
    return loaded


def _malformed(executor: Any) -> str | None:
    name = getattr(executor, "name", None)
    if not isinstance(name, str):
        return "it has no string 'name'"
    if not callable(getattr(executor, "execute", None)):
        return "it has no execute(context) method"
    if name in BUILTIN_EXECUTORS:
        return f"the name {name!r} belongs to a built-in executor"
    try:
        # For a name that is not a built-in, the domain only checks its form, which is the
        # form a task must use to reach the executor.
        validate_executor(name, {})
    except ValidationError as exc:
        return f"{name!r} is not a valid executor name: {exc.message}"
    return None
