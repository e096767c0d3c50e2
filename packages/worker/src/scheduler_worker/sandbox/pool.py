"""Warm sandbox interpreters for ``python`` runs, so a run starts in milliseconds rather than
paying for a new interpreter.

Each interpreter (:mod:`.host`) is a sandboxed task process like a ``shell`` run's: started
fresh by a supervisor, clean environment, own process group, resource limits, unprivileged user
— with isolated task uids, a uid of its own, held (with its private home) until the interpreter
retires — and the policy's network. The pool keeps ``size`` *blank* ones ready (they never ran
anything). A run takes an idle interpreter already bound to its key — the task, its environment
(``env`` and ``secret_env``) and its limits — or else a blank one, which becomes bound to that
key for good; so an interpreter never runs code of another task nor sees another environment.
An interpreter is retired after ``max_runs`` runs (like Celery's ``max_tasks_per_child``), when
a run leaves threads or processes behind, when it dies, or when a run times out or is cancelled
(its whole group is terminated). At most ``size`` bound interpreters wait idle; the least
recently used goes first.

The trade-off: runs of the same task share an interpreter, so a run can change modules or
global state that the next runs of that task will see (without isolated uids, a run can also
leave a file in ``/tmp`` for anything else running as the same user). Runs of other tasks, or
with other secrets, never share one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
from collections import OrderedDict
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from scheduler_worker.sandbox.errors import SandboxError, SandboxStartError
from scheduler_worker.sandbox.policy import ResourceLimits, SandboxPolicy, TaskIdentity
from scheduler_worker.sandbox.process import SandboxProcess, TaskSpec

logger = logging.getLogger("scheduler.worker.sandbox")

_HOST = str(Path(__file__).with_name("host.py"))
_READY_SECONDS = 30.0
_DRAIN_SECONDS = 2.0
_CWD = "/"


class HostDied(SandboxError):
    """The interpreter ended (or broke the protocol) during a run."""

    def __init__(self, returncode: int | None) -> None:
        super().__init__(f"the python process ended: {returncode}")
        self.returncode = returncode


class HostGone(HostDied):
    """The interpreter was gone before the message reached it (it died while idle, before its
    supervisor's report arrived): nothing of the message was run."""


class PythonHost:
    """One sandbox interpreter, seen from the worker."""

    def __init__(
        self,
        *,
        process: SandboxProcess,
        sock: socket.socket,
        max_reply: int,
        identity: TaskIdentity | None = None,
    ) -> None:
        self.process = process
        self._identity = identity
        self._sock = sock
        self._buffer = bytearray()
        self._max_reply = max_reply
        self.key: Hashable | None = None
        self.runs = 0

    @classmethod
    async def start(
        cls, *, policy: SandboxPolicy, limits: ResourceLimits, cpu_hard: int, output_limit: int
    ) -> PythonHost:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        mine.setblocking(False)
        diagnostics = bytearray()

        def keep(data: bytes) -> None:  # what the interpreter says outside runs (start-up errors)
            if len(diagnostics) < 4096:
                diagnostics.extend(data[: 4096 - len(diagnostics)])

        try:
            identity = policy.identity()
        except SandboxStartError:
            mine.close()
            theirs.close()
            raise
        spec = TaskSpec(
            argv=[policy.python_executable, "-I", "-S", _HOST, str(theirs.fileno())],
            env=policy.base_environment(identity.user),
            cwd=_CWD,
            user=identity.user,
            limits=ResourceLimits(
                memory_bytes=limits.memory_bytes,
                processes=limits.processes,
                open_files=limits.open_files,
            ),
            raw_limits={"cpu": (cpu_hard, cpu_hard)} if cpu_hard else {},
            pass_fds=(theirs.fileno(),),
            hold_fds=identity.hold_fds,
            network=policy.network,
        )
        try:
            process = await SandboxProcess.start(spec, on_output=keep)
        except BaseException:
            mine.close()
            identity.close()
            raise
        finally:
            theirs.close()
        host = cls(
            process=process, sock=mine, max_reply=4 * output_limit + 65_536, identity=identity
        )
        try:
            async with asyncio.timeout(_READY_SECONDS):
                await host._send(
                    {
                        "op": "hello",
                        "sys_path": _worker_path(),
                        "output_limit": output_limit,
                        "own_uid": identity.user is not None and identity.user.exclusive,
                    }
                )
                await host._receive()
        except BaseException as exc:
            await host.close(grace_seconds=0)
            if isinstance(exc, Exception):
                failure = process.failure
                said = (failure or {}).get("message") or diagnostics.decode("utf-8", "replace")
                raise SandboxStartError(
                    f"cannot start a python sandbox with {policy.python_executable}"
                    + (f" as {identity.user.name}" if identity.user else "")
                    + (f": {said.strip()}" if said else "")
                ) from exc
            raise
        return host

    @property
    def alive(self) -> bool:
        """Whether the interpreter is still there (it may die while idle, e.g. killed)."""
        return not self.process.exited.done()

    async def run(self, request: dict[str, Any], on_output: Any) -> dict[str, Any]:
        """Send one run, feed its output to ``on_output``; the reply, or :class:`HostDied`."""
        loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()
        try:
            await self._send(request, fd=write_fd)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self.runs += 1
        closed: asyncio.Future[None] = loop.create_future()
        transport, _ = await loop.connect_read_pipe(
            lambda: _OutputProtocol(on_output, closed), os.fdopen(read_fd, "rb", buffering=0)
        )
        receiving: asyncio.Future[dict[str, Any]] = asyncio.ensure_future(self._receive())
        try:
            either: list[asyncio.Future[Any]] = [receiving, self.process.exited]
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if not receiving.done() or receiving.exception() is not None:
                await asyncio.wait([self.process.exited], timeout=_DRAIN_SECONDS)
                await asyncio.wait([closed], timeout=_DRAIN_SECONDS)
                raise HostDied(self.process.exited.result() if self.process.exited.done() else None)
            await asyncio.wait([closed], timeout=_DRAIN_SECONDS)
            return receiving.result()
        finally:
            # Never leave a read pending on the socket (a timeout or a cancellation lands here):
            # its descriptor is closed next and its number reused.
            if not receiving.done():
                receiving.cancel()
                with contextlib.suppress(BaseException):
                    await receiving
            transport.close()

    async def close(self, *, grace_seconds: float) -> None:
        """Terminate the interpreter's whole group and its supervisor."""
        with contextlib.suppress(OSError):
            self._sock.close()
        try:
            if grace_seconds > 0 and not self.process.exited.done():
                await self.process.terminate(grace_seconds)
            await self.process.close()
        finally:
            if self._identity is not None:
                identity, self._identity = self._identity, None
                await asyncio.shield(asyncio.to_thread(identity.close))

    async def _send(self, message: dict[str, Any], *, fd: int | None = None) -> None:
        data = json.dumps(message).encode() + b"\n"
        loop = asyncio.get_running_loop()
        # A failed send is a peer that is gone (or, for ``BlockingIOError``, an idle
        # interpreter's socket that is never full): an incomplete line is never run.
        if fd is not None:
            try:
                sent = socket.send_fds(self._sock, [data], [fd])
            except OSError as exc:
                raise HostGone(None) from exc
            data = data[sent:]
        if data:
            try:
                await loop.sock_sendall(self._sock, data)
            except OSError as exc:
                raise HostGone(None) from exc

    async def _receive(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        while (end := self._buffer.find(b"\n")) < 0:
            if len(self._buffer) > self._max_reply:
                raise HostDied(None)
            chunk = await loop.sock_recv(self._sock, 1 << 16)
            if not chunk:
                raise HostDied(None)
            self._buffer += chunk
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        try:
            reply = json.loads(line)
        except ValueError:
            raise HostDied(None) from None
        if not isinstance(reply, dict):
            raise HostDied(None)
        return reply


class _OutputProtocol(asyncio.Protocol):
    def __init__(self, on_output: Any, closed: asyncio.Future[None]) -> None:
        self._on_output = on_output
        self._closed = closed

    def data_received(self, data: bytes) -> None:
        self._on_output(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed.done():
            self._closed.set_result(None)


class PythonPool:
    def __init__(
        self,
        *,
        policy: SandboxPolicy,
        size: int = 2,
        max_runs: int = 100,
        output_limit: int,
        kill_grace_seconds: float = 5.0,
    ) -> None:
        self._policy = policy
        self._size = max(0, size)
        self._max_runs = max(1, max_runs)
        self._output_limit = output_limit
        self._grace = kill_grace_seconds
        self._blank: list[PythonHost] = []
        self._idle: OrderedDict[Hashable, list[PythonHost]] = OrderedDict()
        self._background: set[asyncio.Task[None]] = set()
        self._starting = 0
        self._closed = False

    @property
    def idle(self) -> int:
        return len(self._blank) + sum(len(hosts) for hosts in self._idle.values())

    async def start(self) -> None:
        """Start the blank interpreters and wait (bounded) until they are ready."""
        self._refill()
        starting = list(self._background)
        if starting:
            await asyncio.wait(starting, timeout=_READY_SECONDS)

    async def acquire(self, key: Hashable) -> PythonHost:
        """An interpreter for ``key``: an idle one bound to it, a blank one, or a new one.
        Raises :class:`SandboxStartError` when none can be started."""
        hosts = self._idle.get(key, [])
        while hosts:
            bound = hosts.pop()
            if not hosts:
                del self._idle[key]
            if bound.alive:
                return bound
            self._in_background(bound.close(grace_seconds=0))
        host: PythonHost | None = None
        while self._blank and host is None:
            candidate = self._blank.pop(0)
            if candidate.alive:
                host = candidate
            else:
                self._in_background(candidate.close(grace_seconds=0))
        if host is None:
            host = await self._new_host()
        self._refill()
        host.key = key
        return host

    async def release(self, host: PythonHost, *, reusable: bool) -> None:
        """Back to the idle ones when ``reusable`` and not worn out; otherwise its group is
        terminated before this returns."""
        if not reusable or self._closed:
            await host.close(grace_seconds=self._grace)
            return
        if host.runs >= self._max_runs:  # idle and healthy: no grace needed, nor waiting
            self._in_background(host.close(grace_seconds=0))
            return
        self._idle.setdefault(host.key, []).append(host)
        self._idle.move_to_end(host.key)
        while sum(len(hosts) for hosts in self._idle.values()) > max(self._size, 1):
            oldest_key, oldest = next(iter(self._idle.items()))
            retired = oldest.pop(0)
            if not oldest:
                del self._idle[oldest_key]
            self._in_background(retired.close(grace_seconds=self._grace))

    async def aclose(self) -> None:
        self._closed = True
        # Interpreters being started or retired finish that first (a started one sees the
        # pool closed and is closed at once); only a start that hangs is cancelled.
        if self._background:
            _, hanging = await asyncio.wait(list(self._background), timeout=10)
            for task in hanging:
                task.cancel()
            if hanging:
                await asyncio.wait(hanging, timeout=5)
        hosts = self._blank + [host for hosts in self._idle.values() for host in hosts]
        self._blank, self._idle = [], OrderedDict()
        await asyncio.gather(
            *(host.close(grace_seconds=0) for host in hosts), return_exceptions=True
        )

    def _refill(self) -> None:
        while not self._closed and len(self._blank) + self._starting < self._size:
            self._starting += 1
            self._in_background(self._add_blank())

    async def _add_blank(self) -> None:
        try:
            host = await self._new_host()
        except SandboxStartError as exc:
            logger.error("%s", exc)
            return
        finally:
            self._starting -= 1
        if self._closed:
            await host.close(grace_seconds=0)
        else:
            self._blank.append(host)

    async def _new_host(self) -> PythonHost:
        limits = self._policy.limits
        return await PythonHost.start(
            policy=self._policy,
            limits=limits,
            cpu_hard=limits.cpu_seconds * self._max_runs,
            output_limit=self._output_limit,
        )

    def _in_background(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _worker_path() -> list[str]:
    """The worker's import path, with its relative entries made absolute (the interpreter
    runs in another folder)."""
    return [os.path.abspath(entry) for entry in sys.path]
