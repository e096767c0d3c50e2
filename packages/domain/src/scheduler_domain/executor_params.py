"""Validation of the parameters of the built-in executors.

A task is refused at creation when its parameters could never run, so mistakes surface in the
API response rather than as failed runs at 2 a.m. Third-party executors (entry points) validate
their own parameters at run time; here they only need a well-formed name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from scheduler_domain.errors import ValidationError

BUILTIN_EXECUTORS = frozenset({"shell", "http", "python", "noop"})
_EXECUTOR_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
_CALLABLE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
#: A POSIX environment variable name (anything else, ``A=B`` say, cannot be set in a process's
#: environment at all).
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
#: Executors whose task runs as a process with an environment: the only ones ``secret_env``
#: means anything to.
ENV_EXECUTORS = frozenset({"shell", "python"})


def is_env_name(name: object) -> bool:
    return isinstance(name, str) and ENV_NAME.fullmatch(name) is not None


#: Resource limits a ``shell`` or ``python`` task may ask for; the worker caps each at its own
#: maximum (``worker.max_*``), so a task can only lower them.
LIMIT_NAMES = ("cpu_seconds", "memory_bytes", "processes", "open_files")


def _fail(key: str, message: str) -> ValidationError:
    return ValidationError(message, field=f"params.{key}")


def _only(params: Mapping[str, Any], allowed: set[str]) -> None:
    for key in params:
        if key not in allowed:
            raise _fail(key, f"unknown parameter {key!r}; expected one of {sorted(allowed)}")


def _string_map(params: Mapping[str, Any], key: str) -> None:
    value = params.get(key)
    if value is None:
        return
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _fail(key, f"{key} must be an object of strings")


def _limits(params: Mapping[str, Any]) -> None:
    limits = params.get("limits")
    if limits is None:
        return
    if not isinstance(limits, Mapping):
        raise _fail("limits", f"limits must be an object with any of {list(LIMIT_NAMES)}")
    for name, value in limits.items():
        if name not in LIMIT_NAMES:
            raise _fail(
                f"limits.{name}", f"unknown limit {name!r}; expected one of {list(LIMIT_NAMES)}"
            )
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise _fail(f"limits.{name}", f"limits.{name} must be a positive integer")


def _shell(params: Mapping[str, Any]) -> None:
    _only(params, {"argv", "command", "shell", "cwd", "env", "output_limit", "limits"})
    shell = params.get("shell", False)
    if not isinstance(shell, bool):
        raise _fail("shell", "shell must be true or false")
    if shell:
        command = params.get("command")
        if not isinstance(command, str) or not command.strip():
            raise _fail("command", "a shell task needs a non-empty command string")
        if "argv" in params:
            raise _fail("argv", "give either argv or shell + command, not both")
    else:
        argv = params.get("argv")
        if "command" in params:
            raise _fail("command", "command runs through a shell: set shell to true, or use argv")
        if (
            not isinstance(argv, list)
            or not argv
            or not all(isinstance(a, str) for a in argv)
            or not argv[0]
        ):
            raise _fail("argv", "argv must be a non-empty list of strings")
    cwd = params.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise _fail("cwd", "cwd must be a string")
    _string_map(params, "env")
    for name in params.get("env") or {}:
        if not is_env_name(name):
            raise _fail(
                "env",
                f"{name!r} is not an environment variable name: letters, digits and '_', "
                "not starting with a digit",
            )
    limit = params.get("output_limit")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise _fail("output_limit", "output_limit must be a non-negative integer (bytes)")
    _limits(params)


def _http(params: Mapping[str, Any]) -> None:
    _only(
        params, {"url", "method", "headers", "body", "json", "expected_status", "follow_redirects"}
    )
    url = params.get("url")
    if not isinstance(url, str) or not re.match(r"^https?://[^\s/]+", url):
        raise _fail("url", "url must be an absolute http:// or https:// URL")
    method = params.get("method", "GET")
    if not isinstance(method, str) or method.upper() not in _HTTP_METHODS:
        raise _fail("method", f"method must be one of {sorted(_HTTP_METHODS)}")
    _string_map(params, "headers")
    body = params.get("body")
    if body is not None and not isinstance(body, str):
        raise _fail("body", "body must be a string (use json for structured bodies)")
    if body is not None and "json" in params:
        raise _fail("json", "give either body or json, not both")
    expected = params.get("expected_status")
    if expected is not None:
        codes = expected if isinstance(expected, list) else [expected]
        if not codes or not all(
            isinstance(c, int) and not isinstance(c, bool) and 100 <= c <= 599 for c in codes
        ):
            raise _fail("expected_status", "expected_status must be an HTTP status or a list")
    if not isinstance(params.get("follow_redirects", False), bool):
        raise _fail("follow_redirects", "follow_redirects must be true or false")


def _python(params: Mapping[str, Any]) -> None:
    _only(params, {"callable", "args", "kwargs", "env", "limits"})
    target = params.get("callable")
    if not isinstance(target, str) or not _CALLABLE.match(target):
        raise _fail("callable", "callable must look like 'package.module:function'")
    if not isinstance(params.get("args", []), list):
        raise _fail("args", "args must be a list")
    kwargs = params.get("kwargs", {})
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise _fail("kwargs", "kwargs must be an object")
    _string_map(params, "env")
    _limits(params)


def _noop(params: Mapping[str, Any]) -> None:
    _only(params, {"sleep_seconds", "fail"})
    sleep = params.get("sleep_seconds", 0)
    if not isinstance(sleep, int | float) or isinstance(sleep, bool) or not 0 <= sleep <= 86_400:
        raise _fail("sleep_seconds", "sleep_seconds must be a number between 0 and 86400")
    if not isinstance(params.get("fail", False), bool):
        raise _fail("fail", "fail must be true or false")


_VALIDATORS: dict[str, Callable[[Mapping[str, Any]], None]] = {
    "shell": _shell,
    "http": _http,
    "python": _python,
    "noop": _noop,
}


def validate_executor(executor: str, params: Mapping[str, Any]) -> None:
    """Raise :class:`ValidationError` naming the field when ``params`` cannot run on
    ``executor``."""
    if not isinstance(executor, str) or not _EXECUTOR_NAME.match(executor):
        raise ValidationError(
            "executor must be a lower-case name such as 'shell', 'http', 'python' or 'noop'",
            field="executor",
        )
    if not isinstance(params, Mapping):
        raise ValidationError("params must be an object", field="params")
    validator = _VALIDATORS.get(executor)
    if validator is not None:
        validator(params)
