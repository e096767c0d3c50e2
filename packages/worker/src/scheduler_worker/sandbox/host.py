"""A sandbox interpreter of the ``python`` executor's pool, run as ``python -I -S host.py FD``
in a task process of the supervisor (standard library only: it may be a different interpreter
from the worker's, running as an unprivileged user).

It talks with the worker over the Unix socket ``FD``, one JSON line per message. The first
message gives it the worker's ``sys.path`` (appended to its own, so it imports what the worker
could). Each ``run`` message comes with a pipe: for the run, the pipe is the process's stdout
and stderr (so ``print()`` and logging reach the run's output), then /dev/null again. The
callable is imported and called (a coroutine is run with ``asyncio.run``); the reply carries
the JSON of its value, or the exception and its traceback.

A process serves only runs of one task with one environment (the worker's pool makes sure):
the first run sets the task's ``env``/``secret_env`` and lowers the resource limits for good,
and each run sets its ``SCHEDULER_*`` variables and its CPU budget (the soft ``RLIMIT_CPU``,
relative to what the process has used). A run that leaves threads or processes behind is
reported ``dirty`` and the worker retires the process.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import os
import resource
import socket
import sys
import threading
import traceback
from typing import Any

_PR_SET_DUMPABLE = 4
_LIMITS = {
    "as": resource.RLIMIT_AS,
    "nproc": resource.RLIMIT_NPROC,
    "nofile": resource.RLIMIT_NOFILE,
}


class _Unresolvable(Exception):
    pass


class _Channel:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""
        self._fds: list[int] = []

    def receive(self) -> tuple[dict[str, Any] | None, list[int]]:
        while b"\n" not in self._buffer:
            data, fds, _, _ = socket.recv_fds(self._sock, 1 << 16, 4)
            self._fds.extend(fds)
            if not data:
                return None, []
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        fds, self._fds = self._fds, []
        return json.loads(line), fds

    def send(self, message: dict[str, Any]) -> None:
        self._sock.sendall(json.dumps(message).encode() + b"\n")


def main() -> None:
    # Other task processes of the same user must not read this interpreter's memory, which
    # will hold its task's secret_env (exec made it dumpable again).
    ctypes.CDLL(None).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    channel = _Channel(socket.socket(fileno=int(sys.argv[1])))
    hello, _ = channel.receive()
    if hello is None:
        return
    sys.path.extend(entry for entry in hello["sys_path"] if entry not in sys.path)
    limit = int(hello["output_limit"])
    own_uid = bool(hello.get("own_uid"))
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True, errors="backslashreplace")  # type: ignore[union-attr]
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    threads = threading.active_count()
    bound = False
    channel.send({"ready": True, "pid": os.getpid()})
    while True:
        message, fds = channel.receive()
        if message is None:
            return
        if not bound:
            os.environ.update(message["env"])
            _lower_limits(message["limits"])
            bound = True
        os.environ.update(message["run_env"])
        _set_cpu_budget(int(message["cpu_seconds"]))
        for fd in fds[:1]:
            os.dup2(fd, 1)
            os.dup2(fd, 2)
        for fd in fds:
            os.close(fd)
        try:
            reply = _run(message, limit)
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):  # the task may have broken its own stream
                    stream.flush()
            os.dup2(null, 1)
            os.dup2(null, 2)
        reply["dirty"] = threading.active_count() > threads or _has_company(own_uid=own_uid)
        channel.send(reply)


def _run(message: dict[str, Any], limit: int) -> dict[str, Any]:
    target = message["callable"]
    try:
        try:
            function = _resolve(target)
        except _Unresolvable as exc:
            return {
                "outcome": "unresolvable",
                "error": str(exc),
                **_traceback(exc.__cause__, limit),
            }
        value = function(*message["args"], **message["kwargs"])
        if hasattr(value, "__await__"):
            import asyncio

            value = asyncio.run(_awaited(value))
    except BaseException as exc:
        return {"outcome": "raised", "error": _describe(exc), **_traceback(exc, limit)}
    return {"outcome": "returned", **_storable(value, limit)}


async def _awaited(value: Any) -> Any:
    return await value


def _resolve(target: str) -> Any:
    module_name, _, path = target.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise _Unresolvable(f"cannot import {module_name!r}: {_describe(exc)}") from exc
    for attribute in path.split("."):
        try:
            found = getattr(found, attribute)
        except AttributeError:
            raise _Unresolvable(f"{target!r} not found: no attribute {attribute!r}") from None
    if not callable(found):
        raise _Unresolvable(f"{target!r} is not callable")
    return found


def _storable(value: Any, limit: int) -> dict[str, Any]:
    """``json`` when the value has a JSON form within ``limit`` bytes; otherwise ``text`` (the
    JSON, or the repr when there is none) cut to ``limit`` bytes, with what was ``dropped``."""
    try:
        encoded = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        try:
            encoded = repr(value)
        except Exception:
            encoded = f"<unrepresentable {type(value).__name__}>"
        return _cut(encoded, limit)
    if len(encoded.encode()) > limit:
        return _cut(encoded, limit)
    return {"json": encoded}


def _traceback(exc: BaseException | None, limit: int) -> dict[str, Any]:
    if exc is None:
        return {}
    try:
        text = "".join(traceback.format_exception(exc))
    except Exception:
        text = _describe(exc)
    return {"traceback": _cut(text, limit)}


def _cut(text: str, limit: int) -> dict[str, Any]:
    data = text.encode("utf-8", "replace")
    kept = data[:limit].decode("utf-8", "ignore")
    return {"text": kept, "dropped": len(data) - len(kept.encode())}


def _describe(exc: BaseException) -> str:
    try:
        message = str(exc)
    except Exception:
        message = ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _lower_limits(limits: dict[str, int]) -> None:
    for name, value in limits.items():
        which = _LIMITS[name]
        _, hard = resource.getrlimit(which)
        if hard == resource.RLIM_INFINITY or value < hard:
            resource.setrlimit(which, (value, value))


def _set_cpu_budget(seconds: int) -> None:
    """The soft CPU limit: what this process used so far plus the run's budget (SIGXCPU past
    it); the hard limit, fixed at start, bounds the whole process."""
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if not seconds:
        resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(usage.ru_utime + usage.ru_stime) + 1 + seconds
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


_children_seen = resource.getrusage(resource.RUSAGE_CHILDREN)


def _has_company(*, own_uid: bool) -> bool:
    """Whether a process other than this one is in this process's group: a child, or an
    orphan of one (reparented to the supervisor) — or, when this interpreter's uid is its own
    (``own_uid``), any other process of that uid, such as one that left the group with
    ``setsid``. The scan of ``/proc`` is skipped when no child ended since the last check
    (then no orphan can exist)."""
    global _children_seen
    me = os.getpid()
    group = os.getpgrp()
    uid = str(os.getuid()).encode()
    while True:  # reap what already ended
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            return True
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if usage == _children_seen:
        return False
    _children_seen = usage
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == b"Z":
            continue
        if int(fields[2]) == group or (own_uid and _real_uid(entry) == uid):
            return True
    return False


def _real_uid(pid: str) -> bytes:
    """The real uid of ``pid`` from its status (its ``/proc`` folder's owner may be root)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"Uid:"):
                    return line.split()[1]
    except OSError:
        pass
    return b""


if __name__ == "__main__":
    main()
