"""The worker runs on uvloop, whose own ``subprocess_exec`` would hand the worker's descriptors
to a task (libuv has no ``close_fds``). The sandbox starts its supervisor with
``subprocess.Popen`` instead; these tests run tasks on a uvloop loop of their own and check
what a task inherits, that its output and exit come through the loop, and that nothing is
left unreaped."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop

from scheduler_application.ports.executor import ExecutionContext
from scheduler_worker.executors import PythonExecutor, ShellExecutor
from scheduler_worker.sandbox import process
from scheduler_worker.sandbox.policy import ResourceLimits, sandbox_policy

pytestmark = pytest.mark.timeout(60)

T = TypeVar("T")
PLANTED = "planted-uvloop-worker-secret-41d2"
POLICY = sandbox_policy(
    limits=ResourceLimits(
        cpu_seconds=3600, memory_bytes=2_147_483_648, processes=256, open_files=1024
    )
)


def _on_uvloop(main: Coroutine[Any, Any, T]) -> T:
    async def checked() -> T:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        return await main

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(checked())


def _context(params: dict[str, Any], *, timeout: float = 20) -> ExecutionContext:
    return ExecutionContext(
        run_id="run-uv", task_id="task-uv", attempt=1, params=params, timeout_seconds=timeout
    )


def _zombies() -> list[int]:
    """This process's children that exited and were never reaped."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == os.getpid():
            found.append(int(entry.name))
    return found


def test_a_task_on_uvloop_inherits_no_descriptor_of_the_worker(tmp_path: Path) -> None:
    """Even descriptors marked inheritable (which libuv's spawn would pass on), and the
    loop's own sockets, stay out of the task."""
    secret = tmp_path / "worker-only"
    secret.write_text(PLANTED)
    held = os.open(secret, os.O_RDONLY)
    os.set_inheritable(held, True)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.set_inheritable(True)
    shell = ShellExecutor(sandbox=POLICY, output_limit=8_000, kill_grace_seconds=0.5)
    try:
        result = _on_uvloop(
            shell.execute(
                _context({"shell": True, "command": "ls /proc/$$/fd; readlink /proc/$$/fd/*; true"})
            )
        )
    finally:
        os.close(held)
        listener.close()
    assert result.status == "succeeded", result
    lines = (result.output or "").splitlines()
    assert sorted(line for line in lines if line.isdigit()) == ["0", "1", "2"]
    assert str(secret) not in (result.output or "")
    assert not any(line.startswith("socket:") for line in lines), lines


def test_a_task_on_uvloop_sees_only_its_own_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDULER__API__JWT_SECRET", PLANTED)
    shell = ShellExecutor(sandbox=POLICY, output_limit=8_000, kill_grace_seconds=0.5)
    result = _on_uvloop(shell.execute(_context({"argv": ["env"], "env": {"FROM_TASK": "1"}})))
    assert result.status == "succeeded", result
    assert "FROM_TASK=1" in (result.output or "")
    assert PLANTED not in (result.output or "")


def test_on_uvloop_output_exit_and_timeouts_come_through_and_nothing_is_left_unreaped() -> None:
    shell = ShellExecutor(sandbox=POLICY, output_limit=8_000, kill_grace_seconds=0.5)
    python = PythonExecutor(
        sandbox=POLICY, output_limit=8_000, kill_grace_seconds=0.5, max_runs_per_process=2
    )

    async def runs() -> list[Any]:
        try:
            return [
                await shell.execute(_context({"shell": True, "command": "echo hi; exit 3"})),
                await shell.execute(_context({"argv": ["sleep", "30"]}, timeout=0.5)),
                await python.execute(_context({"callable": "os:getpid"})),
                await python.execute(_context({"callable": "os:getpid"})),
                await python.execute(_context({"callable": "os:getpid"})),  # a new interpreter
            ]
        finally:
            await python.aclose()

    failed, timed_out, *pids = _on_uvloop(runs())
    assert (failed.status, (failed.output or "").strip()) == ("failed", "hi")
    assert timed_out.status == "timed_out"
    assert all(result.status == "succeeded" for result in pids), pids
    assert _zombies() == []


def test_where_pidfds_are_refused_a_thread_notices_the_supervisors_exit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A seccomp filter or an older kernel may refuse ``pidfd_open``: the exit is then
    waited for in a thread, and still reaches the run."""

    def refused(_pid: int) -> int:
        raise OSError(38, "Function not implemented")

    noticed: list[None] = []
    original = process._SupervisorProtocol.process_exited

    def counted(self: process._SupervisorProtocol) -> None:
        noticed.append(None)
        original(self)

    monkeypatch.setattr(os, "pidfd_open", refused)
    monkeypatch.setattr(process._SupervisorProtocol, "process_exited", counted)
    shell = ShellExecutor(sandbox=POLICY, output_limit=8_000, kill_grace_seconds=0.5)
    result = _on_uvloop(shell.execute(_context({"shell": True, "command": "echo done"})))
    assert result.status == "succeeded", result
    assert (result.output or "").strip() == "done"
    assert len(noticed) == 1
    assert _zombies() == []
