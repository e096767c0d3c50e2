"""Runs are isolated from each other and from the host's network: real processes, with a uid
of their own per run and a network namespace per task process (both need root, as in CI).

The test process plays the worker (as root). Without the isolation, run A could read run B's
``/proc/<pid>/environ``, ``kill -9 -1`` it, leave a ``setsid`` process behind, or connect to
services on the host's loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from task_interpreter import TASK_PYTHON

from scheduler_application.ports.executor import ExecutionContext, ExecutionResult
from scheduler_worker.executors import PythonExecutor, ShellExecutor
from scheduler_worker.sandbox.policy import SandboxPolicy, sandbox_policy
from scheduler_worker.sandbox.uids import TaskUids, holds_lock

pytestmark = [
    pytest.mark.timeout(60),
    # As root in CI these must run, never be skipped.
    pytest.mark.skipif(
        os.geteuid() != 0 and os.environ.get("CI") != "true",
        reason="task uids and network namespaces need a root worker",
    ),
]

SECRET = "run-b-secret-3f9a1c"
TARGETS = "scheduler_isolation_test_targets"
SOURCE = """
import os
import socket
import time


def escape(path):
    # A grandchild in a session of its own: out of the interpreter's group, an orphan.
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            with open(path, "w") as file:
                file.write(str(os.getpid()))
            time.sleep(300)
        os._exit(0)
    os.wait()
    while not os.path.exists(path):
        time.sleep(0.01)
    return os.getuid()


def connect(port):
    sock = socket.socket()
    sock.settimeout(5)
    try:
        sock.connect(("127.0.0.1", port))
    except OSError as exc:
        return f"refused: {exc}"
    finally:
        sock.close()
    return "connected"


def home():
    return [os.environ["HOME"], os.environ["TMPDIR"], os.getuid()]
"""

#: Tries the test's server on the host's loopback, then a server of its own on its loopback.
NETWORK_PROBE = """
import socket, sys
outside = socket.socket()
outside.settimeout(5)
try:
    outside.connect(("127.0.0.1", int(sys.argv[1])))
    print("outside: connected")
except OSError as exc:
    print(f"outside: {exc}")
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
inside = socket.socket()
inside.connect(server.getsockname())
peer, _ = server.accept()
inside.sendall(b"ping")
print("inside:", peer.recv(4).decode())
"""


@pytest.fixture(scope="module")
def shared() -> Iterator[Path]:
    """A folder the worker and every task uid can use, holding the targets."""
    folder = Path(tempfile.mkdtemp(prefix="scheduler-isolation-")).resolve()
    folder.chmod(0o777)
    (folder / f"{TARGETS}.py").write_text(textwrap.dedent(SOURCE))
    (folder / f"{TARGETS}.py").chmod(0o644)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.syspath_prepend(str(folder))
            yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def policy() -> SandboxPolicy:
    isolated = sandbox_policy(task_network="none")
    assert isolated.uids is not None
    assert isolated.network == "none"
    return isolated


@pytest.fixture
def shell(policy: SandboxPolicy) -> ShellExecutor:
    return ShellExecutor(sandbox=policy, output_limit=8_000, kill_grace_seconds=0.5)


@pytest.fixture
async def python(policy: SandboxPolicy, shared: Path) -> AsyncIterator[PythonExecutor]:
    executor = PythonExecutor(sandbox=policy, output_limit=8_000, kill_grace_seconds=0.5)
    try:
        yield executor
    finally:
        await executor.aclose()


def context(
    params: dict[str, Any],
    *,
    run: str = "run-1",
    secret_env: dict[str, str] | None = None,
) -> ExecutionContext:
    return ExecutionContext(
        run_id=run,
        task_id=f"task-{run}",
        attempt=1,
        params=params,
        timeout_seconds=30,
        secret_env=secret_env or {},
    )


def sh(command: str) -> dict[str, Any]:
    return {"shell": True, "command": command}


def value(result: ExecutionResult) -> Any:
    assert result.status == "succeeded", result
    return result.result["return_value"]


def processes_of(uid: int) -> list[int]:
    """Live (not zombie) processes whose real uid is ``uid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields["Uid"].split()[0]) == uid and not fields["State"].strip().startswith("Z"):
            found.append(int(entry))
    return found


def exists(path: str) -> bool:
    return Path(path).exists()


async def until(condition: Callable[[], bool], *, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        await asyncio.sleep(0.02)


# -- a uid of its own per run ------------------------------------------------------------------


async def test_concurrent_runs_can_neither_read_nor_kill_each_other(
    shell: ShellExecutor, shared: Path
) -> None:
    b_pid, go = shared / "b-pid", shared / "b-go"
    victim = asyncio.create_task(
        shell.execute(
            context(
                sh(
                    f"id -u; echo $$ > {b_pid}; while [ ! -e {go} ]; do sleep 0.05; done;"
                    " echo finished"
                ),
                run="run-b",
                secret_env={"B_SECRET": SECRET},
            )
        )
    )
    await until(lambda: b_pid.exists() and b_pid.read_text().strip().isdigit())
    pid = int(b_pid.read_text())

    attacker = await shell.execute(
        context(sh(f"id -u; cat /proc/{pid}/environ; kill -9 -1; echo attacked"), run="run-a")
    )
    still_there = exists(f"/proc/{pid}")
    go.touch()
    finished = await victim

    assert SECRET not in (attacker.output or "")
    assert "Permission denied" in (attacker.output or "")
    assert "attacked" in (attacker.output or "")
    assert still_there
    assert finished.status == "succeeded", finished
    assert (finished.output or "").endswith("finished\n")
    assert (attacker.output or "").split()[0] != (finished.output or "").split()[0]


async def test_a_shell_process_that_left_the_group_with_setsid_ends_with_its_run(
    shell: ShellExecutor, shared: Path
) -> None:
    report = shared / "setsid-shell"

    result = await shell.execute(
        context(sh(f"id -u; setsid sleep 300 & echo $! > {report}; sleep 0.2"))
    )
    uid = int((result.output or "").split()[0])

    assert report.read_text().strip().isdigit()
    await until(lambda: not processes_of(uid))


async def test_a_python_process_that_left_the_group_with_setsid_ends_with_its_run(
    python: PythonExecutor, shared: Path
) -> None:
    report = shared / "setsid-python"

    uid = value(
        await python.execute(context({"callable": f"{TARGETS}:escape", "args": [str(report)]}))
    )

    assert int(report.read_text()) > 0
    await until(lambda: not processes_of(uid))


async def test_what_an_earlier_holder_of_the_uid_left_is_gone_before_the_task_starts(
    policy: SandboxPolicy, tmp_path: Path
) -> None:
    assert policy.uids is not None
    uid = policy.uids.acquire()  # a uid no run holds; freed, then the only one of the range
    uid.release()
    # A process of that uid, as the run of a worker that died could have left it.
    leftover = await asyncio.create_subprocess_exec(
        "sleep", "300", user=uid.uid, group=uid.uid, extra_groups=[], start_new_session=True
    )
    homes = tmp_path / "homes"
    homes.mkdir()
    stale = homes / f"scheduler-task-{uid.uid}-stale"
    stale.mkdir()
    os.chown(stale, uid.uid, uid.uid)
    foreign = homes / f"scheduler-task-{uid.uid}-not-its-own"
    foreign.mkdir()
    only_that_uid = replace(
        policy,
        uids=TaskUids(first=uid.uid, last=uid.uid, lock_dir=policy.uids.lock_dir),
        home_base=str(homes),
    )
    shell = ShellExecutor(sandbox=only_that_uid, kill_grace_seconds=0.5)
    try:
        # Alive: its /proc entry is there and it is no zombie (the test's own child stays a
        # zombie until this process reaps it; a zombie holds nothing but its pid).
        state = (
            's=$( { while read -r key value rest; do [ "$key" = State: ] && echo "$value"; done'
            f" < /proc/{leftover.pid}/status; }} 2>/dev/null )"
        )
        alive = '[ -n "$s" ] && [ "$s" != Z ] && echo alive || echo gone'
        result = await shell.execute(context(sh(f"id -u; {state}; {alive}")))
    finally:
        if leftover.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                leftover.kill()
        await leftover.wait()

    assert (result.output or "").split() == [str(uid.uid), "gone"]
    assert not exists(str(stale))
    assert exists(str(foreign))  # owned by root, not by the uid: not a home it left


async def test_the_uid_lock_is_held_for_the_run_and_released_after(
    shell: ShellExecutor, policy: SandboxPolicy, shared: Path
) -> None:
    assert policy.uids is not None
    lock_dir = policy.uids.lock_dir
    uid_file, go = shared / "lock-uid", shared / "lock-go"
    running = asyncio.create_task(
        shell.execute(context(sh(f"id -u > {uid_file}; while [ ! -e {go} ]; do sleep 0.05; done")))
    )
    await until(lambda: uid_file.exists() and uid_file.read_text().strip().isdigit())
    uid = int(uid_file.read_text())

    during = await _allocate_in_another_process(lock_dir, uid)
    held_during = holds_lock(lock_dir, uid)
    go.touch()
    assert (await running).status == "succeeded"
    after = await _allocate_in_another_process(lock_dir, uid)

    assert held_during
    assert "no free task uid" in during
    assert after == f"allocated {uid}"
    assert not holds_lock(lock_dir, uid)


async def _allocate_in_another_process(lock_dir: str, uid: int) -> str:
    script = (
        "from scheduler_worker.sandbox.uids import TaskUids\n"
        "from scheduler_worker.sandbox.errors import SandboxStartError\n"
        f"uids = TaskUids(first={uid}, last={uid}, lock_dir={lock_dir!r})\n"
        "try:\n"
        "    lease = uids.acquire()\n"
        "except SandboxStartError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    print('allocated', lease.uid)\n"
        "    lease.release()\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    return out.decode().strip()


async def test_each_run_has_a_private_home_and_tmpdir_removed_after_it(
    shell: ShellExecutor, python: PythonExecutor
) -> None:
    script = 'id -u; echo "$HOME"; echo "$TMPDIR"; stat -c "%a %u" "$HOME"; touch "$HOME/x"'
    first = (await shell.execute(context(sh(script)))).output or ""
    second = (await shell.execute(context(sh(script)))).output or ""
    uid, home, tmpdir, mode, owner = first.split()
    interpreter_home, interpreter_tmp, interpreter_uid = value(
        await python.execute(context({"callable": f"{TARGETS}:home"}))
    )
    during = os.stat(interpreter_home)
    await python.aclose()

    assert home == tmpdir
    assert home != second.split()[1]
    assert (mode, owner) == ("700", uid)
    assert not exists(home)
    assert not exists(second.split()[1])
    assert interpreter_home == interpreter_tmp
    assert interpreter_home not in (home, second.split()[1])
    assert (during.st_mode & 0o777, during.st_uid) == (0o700, interpreter_uid)
    assert not exists(interpreter_home)


# -- no network --------------------------------------------------------------------------------


@pytest.fixture
async def host_service() -> AsyncIterator[tuple[int, list[bool]]]:
    """A TCP server on the host's loopback; the list records each connection it saw."""
    seen: list[bool] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(True)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], seen
    finally:
        server.close()
        await server.wait_closed()


async def test_without_network_a_task_reaches_only_its_own_loopback(
    shell: ShellExecutor, python: PythonExecutor, host_service: tuple[int, list[bool]]
) -> None:
    port, seen = host_service

    probed = await shell.execute(context({"argv": [TASK_PYTHON, "-c", NETWORK_PROBE, str(port)]}))
    called = value(
        await python.execute(context({"callable": f"{TARGETS}:connect", "args": [port]}))
    )

    assert probed.status == "succeeded", probed
    assert "outside: [Errno 111] Connection refused" in (probed.output or "")
    assert "inside: ping" in (probed.output or "")
    assert called.startswith("refused:")
    assert seen == []


async def test_with_the_host_network_a_task_reaches_the_host_loopback(
    host_service: tuple[int, list[bool]], shared: Path
) -> None:
    port, seen = host_service
    shell = ShellExecutor(sandbox=sandbox_policy(task_network="host"), kill_grace_seconds=0.5)

    probed = await shell.execute(context({"argv": [TASK_PYTHON, "-c", NETWORK_PROBE, str(port)]}))

    assert "outside: connected" in (probed.output or "")
    assert "inside: ping" in (probed.output or "")
    await until(lambda: bool(seen))
