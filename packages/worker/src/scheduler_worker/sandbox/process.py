"""The worker's side of one sandboxed process: start the supervisor, learn the task's process
group, watch its exit, signal the group, and end it all by closing the watch pipe.

The supervisor is started with ``subprocess.Popen`` (never a fork that keeps running the
worker's code): a new session, no inherited descriptors but its pipes (``close_fds`` plus
``pass_fds``), an empty environment. The task's own environment and credentials travel in the
spec, written to the supervisor's stdin (never on its command line, which others may read).

It is the very ``Popen`` call the standard loop's ``subprocess_exec`` makes, made here so that
the worker may run on any loop: uvloop's own ``subprocess_exec`` (libuv) has no ``close_fds``
and would hand the worker's descriptors to the supervisor. Its pipes are then read and written
through the running loop, and its exit is watched with a pidfd (Linux; elsewhere a thread waits
for it), so nothing depends on the loop's child watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheduler_worker.sandbox.errors import SandboxStartError
from scheduler_worker.sandbox.policy import ResourceLimits, RunAs

#: Run by path with ``-I -S``: no import path, no site packages, nothing of the environment.
_SUPERVISOR = str(Path(__file__).with_name("supervisor.py"))
_POLL_SECONDS = 0.05
#: How long a supervisor may take to report its task's pid, and to exit once told to.
_START_SECONDS = 30.0
_CLOSE_SECONDS = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSpec:
    argv: Sequence[str]
    env: dict[str, str]
    cwd: str
    user: RunAs | None
    limits: ResourceLimits
    #: Raw ``(soft, hard)`` overrides by spec name, e.g. ``{"cpu": (10, 1000)}``.
    raw_limits: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: Descriptors of the worker handed to the task process (they keep their numbers).
    pass_fds: tuple[int, ...] = ()
    #: Descriptors the supervisor holds until it ends, never the task (the uid's lock).
    hold_fds: tuple[int, ...] = ()
    #: ``"none"``: the task gets a network namespace of its own; ``"host"``: the host's.
    network: str = "host"

    def encode(self) -> bytes:
        limits: dict[str, Any] = dict(self.limits.as_spec())
        limits.update({name: list(pair) for name, pair in self.raw_limits.items()})
        return json.dumps(
            {
                "argv": list(self.argv),
                "env": self.env,
                "cwd": self.cwd,
                "user": None if self.user is None else self.user.as_spec(),
                "limits": limits,
                "keep_fds": list(self.pass_fds),
                "hold_fds": list(self.hold_fds),
                "network": self.network,
            }
        ).encode()


class SandboxProcess:
    """A started task process (and its supervisor). ``pgid`` is the task's process group;
    ``exited`` resolves to the task's exit status (negative: the signal that killed it;
    ``None``: unknown, the supervisor itself died)."""

    def __init__(
        self,
        *,
        transport: _Supervisor,
        protocol: _SupervisorProtocol,
        status: _StatusProtocol,
        watch_w: int,
        pgid: int,
    ) -> None:
        self._transport = transport
        self._protocol = protocol
        self._status = status
        self._watch_w: int | None = watch_w
        self.pgid = pgid

    @classmethod
    async def start(cls, spec: TaskSpec, *, on_output: Any = None) -> SandboxProcess:
        """Start ``spec``'s program in the sandbox; ``on_output(bytes)`` receives its stdout
        and stderr. Raises :class:`SandboxStartError` when the supervisor cannot start it
        (a failure of the program itself, such as a missing file, is :attr:`failure`)."""
        loop = asyncio.get_running_loop()
        watch_r, watch_w = os.pipe()
        status_r, status_w = os.pipe()
        status = _StatusProtocol(loop)
        protocol = _SupervisorProtocol(loop, on_output)
        try:
            transport = await _Supervisor.start(
                loop,
                protocol,
                [sys.executable, "-I", "-S", _SUPERVISOR, str(watch_r), str(status_w)],
                pass_fds=(watch_r, status_w, *spec.pass_fds, *spec.hold_fds),
            )
        except OSError as exc:
            os.close(watch_w)
            os.close(status_r)
            raise SandboxStartError(f"cannot start the sandbox supervisor: {exc}") from exc
        finally:
            os.close(watch_r)
            os.close(status_w)
        await loop.connect_read_pipe(lambda: status, os.fdopen(status_r, "rb", buffering=0))
        transport.write_stdin(spec.encode())
        try:
            async with asyncio.timeout(_START_SECONDS):
                pgid = await status.started
        except BaseException as exc:
            os.close(watch_w)
            await _reap(transport, protocol)
            if isinstance(exc, Exception):
                said = protocol.diagnostics()
                raise SandboxStartError(
                    "the sandbox supervisor did not start the task" + (f": {said}" if said else "")
                ) from exc
            raise
        return cls(
            transport=transport, protocol=protocol, status=status, watch_w=watch_w, pgid=pgid
        )

    @property
    def exited(self) -> asyncio.Future[int | None]:
        return self._status.exited

    @property
    def output_closed(self) -> asyncio.Future[None]:
        return self._protocol.pipe_closed

    @property
    def failure(self) -> dict[str, Any] | None:
        """Why the program could not be started (``stage``, ``errno``, ``message``)."""
        return self._status.failure

    def group_exists(self) -> bool:
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # a member changed its credentials; still there
            return True
        return True

    def signal_group(self, signum: signal.Signals) -> bool:
        """Signal every process of the task's group; ``False`` when it no longer exists."""
        try:
            os.killpg(self.pgid, signum)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    async def terminate(self, grace_seconds: float) -> None:
        """SIGTERM the group, give it ``grace_seconds``, then SIGKILL whatever is left.

        A second cancellation while waiting still ends in SIGKILL (the ``finally``)."""
        if not self.signal_group(signal.SIGTERM):
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_seconds
        try:
            # Polling: the group's members are not our children, nothing signals their exit.
            while self.group_exists() and (remaining := deadline - loop.time()) > 0:  # noqa: ASYNC110
                await asyncio.sleep(min(_POLL_SECONDS, remaining))
        finally:
            if self.group_exists():
                self.signal_group(signal.SIGKILL)

    async def close(self) -> None:
        """End the sandbox: the supervisor SIGKILLs whatever is left of the group and exits."""
        if self._watch_w is not None:
            os.close(self._watch_w)
            self._watch_w = None
        await _reap(self._transport, self._protocol)
        self._status.close()


async def _reap(transport: _Supervisor, protocol: _SupervisorProtocol) -> None:
    try:
        await asyncio.wait([protocol.exited], timeout=_CLOSE_SECONDS)
        if not protocol.exited.done():
            transport.kill()
            await asyncio.wait([protocol.exited], timeout=_CLOSE_SECONDS)
    finally:
        transport.close()


class _Supervisor:
    """The supervisor's process, started by ``subprocess.Popen`` and watched on the running
    loop: its stdout (the task's output) feeds the protocol, its exit calls
    ``process_exited`` once it is reaped."""

    def __init__(self, process: subprocess.Popen[bytes], protocol: _SupervisorProtocol) -> None:
        self._process = process
        self._protocol = protocol
        self._stdin: asyncio.WriteTransport | None = None
        self._stdout: asyncio.BaseTransport | None = None
        self._pidfd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    async def start(
        cls,
        loop: asyncio.AbstractEventLoop,
        protocol: _SupervisorProtocol,
        argv: list[str],
        *,
        pass_fds: tuple[int, ...],
    ) -> _Supervisor:
        # Our own supervisor, by path, no shell; Popen forks and execs without waiting for the
        # program, as the standard loop's subprocess_exec does in the loop's thread too.
        process = subprocess.Popen(  # noqa: S603, ASYNC220
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={},
            cwd="/",
            close_fds=True,
            pass_fds=pass_fds,
            start_new_session=True,
            bufsize=0,
        )
        supervisor = cls(process, protocol)
        try:
            await supervisor._connect(loop)
        except BaseException:
            supervisor.kill()
            supervisor.close()
            raise
        return supervisor

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._loop = loop
        self._watch_exit(loop)
        protocol = self._protocol
        self._stdout, _ = await loop.connect_read_pipe(
            lambda: _OutputPipe(protocol), self._process.stdout
        )
        # (uvloop's write transport is no subclass of asyncio.WriteTransport: no isinstance.)
        self._stdin, _ = await loop.connect_write_pipe(asyncio.Protocol, self._process.stdin)

    def _watch_exit(self, loop: asyncio.AbstractEventLoop) -> None:
        """Reap the process when it exits: a pidfd turns readable then; without pidfds (not
        Linux, or refused by a seccomp filter) a thread waits for it."""
        try:
            self._pidfd = os.pidfd_open(self._process.pid)
        except (AttributeError, OSError):
            threading.Thread(
                target=self._wait_in_thread, args=(loop,), name="sandbox-reaper", daemon=True
            ).start()
            return
        loop.add_reader(self._pidfd, self._exited)

    def _wait_in_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        self._process.wait()
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._protocol.process_exited)

    def _exited(self) -> None:
        if self._pidfd is not None and self._loop is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        self._process.wait()  # it has exited: this only reaps it
        self._protocol.process_exited()

    def write_stdin(self, data: bytes) -> None:
        """Write ``data`` to the supervisor's stdin and close it."""
        assert self._stdin is not None
        self._stdin.write(data)
        self._stdin.close()

    def kill(self) -> None:
        """SIGKILL the supervisor, unless it was reaped already (its pid may be reused)."""
        if self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()

    def close(self) -> None:
        """Close the pipes. A process still running goes on being watched, and is reaped
        when it exits (:func:`_reap` kills it first)."""
        for transport, raw in (
            (self._stdin, self._process.stdin),
            (self._stdout, self._process.stdout),
        ):
            if transport is not None:
                transport.close()  # it owns the pipe
            elif raw is not None:
                raw.close()


class _OutputPipe(asyncio.Protocol):
    """The supervisor's stdout (its stderr goes there too), handed to the protocol as fd 1."""

    def __init__(self, protocol: _SupervisorProtocol) -> None:
        self._protocol = protocol

    def data_received(self, data: bytes) -> None:
        self._protocol.pipe_data_received(1, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._protocol.pipe_connection_lost(1, exc)


class _SupervisorProtocol(asyncio.SubprocessProtocol):
    """The supervisor's stdout/stderr pipe, which only the task holds: its output."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_output: Any) -> None:
        self._on_output = on_output
        self._early = bytearray()
        self.exited: asyncio.Future[None] = loop.create_future()
        self.pipe_closed: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        chunk = data if isinstance(data, bytes) else data.encode()
        if len(self._early) < 4096:  # what a supervisor that failed to start said
            self._early += chunk[: 4096 - len(self._early)]
        if self._on_output is not None:
            self._on_output(chunk)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd in (1, 2) and not self.pipe_closed.done():
            self.pipe_closed.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def diagnostics(self) -> str:
        return self._early.decode("utf-8", "replace").strip()


class _StatusProtocol(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._buffer = bytearray()
        self._transport: asyncio.BaseTransport | None = None
        self.started: asyncio.Future[int] = loop.create_future()
        self.exited: asyncio.Future[int | None] = loop.create_future()
        self.failure: dict[str, Any] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\n")) >= 0:
            line, self._buffer = bytes(self._buffer[:end]), self._buffer[end + 1 :]
            with contextlib.suppress(ValueError):
                self._event(json.loads(line))

    def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "started" and not self.started.done():
            self.started.set_result(int(event["pid"]))
        elif kind == "failed":
            self.failure = event
        elif kind == "exited" and not self.exited.done():
            self.exited.set_result(int(event["returncode"]))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.started.done():
            self.started.set_exception(SandboxStartError("the sandbox supervisor exited"))
        if not self.exited.done():
            self.exited.set_result(None)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
