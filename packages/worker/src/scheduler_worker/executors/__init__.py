"""How a run's work is done: the built-in executors, the plugin registry and the guard the
worker calls them through."""

from scheduler_worker.executors.errors import (
    DuplicateExecutorError,
    ExecutorError,
    UnknownExecutorError,
)
from scheduler_worker.executors.guard import run_executor
from scheduler_worker.executors.http import HttpExecutor
from scheduler_worker.executors.noop import NoopExecutor
from scheduler_worker.executors.output import DEFAULT_OUTPUT_LIMIT, CappedOutput
from scheduler_worker.executors.python import PythonExecutor
from scheduler_worker.executors.registry import (
    ENTRY_POINT_GROUP,
    ExecutorRegistry,
    builtin_executors,
)
from scheduler_worker.executors.shell import DEFAULT_ENV_ALLOWLIST, ShellExecutor

__all__ = [
    "DEFAULT_ENV_ALLOWLIST",
    "DEFAULT_OUTPUT_LIMIT",
    "ENTRY_POINT_GROUP",
    "CappedOutput",
    "DuplicateExecutorError",
    "ExecutorError",
    "ExecutorRegistry",
    "HttpExecutor",
    "NoopExecutor",
    "PythonExecutor",
    "ShellExecutor",
    "UnknownExecutorError",
    "builtin_executors",
    "run_executor",
]
