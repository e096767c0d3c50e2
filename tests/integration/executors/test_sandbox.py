"""Task processes of the shell and python executors are sandboxed: real processes, and — when
the tests run as root, as in CI — really dropped to ``nobody``.

The test process plays the worker: it plants a secret in its environment and an open file,
makes itself non-dumpable, and checks that no task reaches them, that a crashing task fails
only its own run, and that nothing a run started survives a timeout, a cancellation or the
worker's ``kill -9``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from task_interpreter import TASK_PYTHON

from scheduler_application.ports.executor import ExecutionContext, ExecutionResult
from scheduler_worker.executors import PythonExecutor, ShellExecutor
from scheduler_worker.sandbox.dumpable import is_dumpable, make_non_dumpable
from scheduler_worker.sandbox.policy import ResourceLimits, sandbox_policy
from scheduler_worker.sandbox.pool import PythonHost

pytestmark = pytest.mark.timeout(60)

ROOT = os.geteuid() == 0
PLANTED = "planted-worker-secret-5b1e0c77"
TARGETS = "scheduler_sandbox_test_targets"
SOURCE = """
import os
import subprocess
import sys
import time


def pid():
    return os.getpid()


def uid():
    return [os.getuid(), os.geteuid(), os.getgid()]


def environment():
    return dict(os.environ)


def descriptors():
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            found[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    return found


def read(path):
    with open(path, "rb") as file:
        return file.read().decode("utf-8", "replace")


def chatty():
    print("to stdout")
    print("to stderr", file=sys.stderr)
    return 7


def group_then_sleep(path, seconds):
    child = subprocess.Popen(["sleep", "300"])
    with open(path, "w") as file:
        file.write(f"{os.getpgrp()} {os.getpid()} {child.pid}")
    time.sleep(seconds)


def noop():
    return None


def dumpable():
    import ctypes

    return ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE


def forge():
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                os.write(int(fd), b"not json\\n")
        except OSError:
            pass
    return "forged"


def spin():
    while True:
        pass


def leave_behind(path):
    # A grandchild that outlives its parent: an orphan in the interpreter's group.
    subprocess.run(["sh", "-c", f"sleep 300 & echo $! > {path}"], check=True)
    return os.getpid()
"""


@pytest.fixture(scope="module")
def shared() -> Iterator[Path]:
    """A folder both the worker and the unprivileged task user can use, holding the targets."""
    folder = Path(tempfile.mkdtemp(prefix="scheduler-sandbox-")).resolve()
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
def planted(shared: Path) -> Iterator[Path]:
    """A secret in the worker's environment and a secret file it holds open."""
    secret_file = shared / "worker-only"
    secret_file.write_text(PLANTED)
    secret_file.chmod(0o600)
    handle = secret_file.open()
    os.environ["SCHEDULER__API__JWT_SECRET"] = PLANTED
    make_non_dumpable()
    try:
        yield secret_file
    finally:
        handle.close()
        os.environ.pop("SCHEDULER__API__JWT_SECRET", None)


#: The worker's default maxima (``worker.max_*``), so tests run under them like production.
POLICY = sandbox_policy(
    limits=ResourceLimits(
        cpu_seconds=3600, memory_bytes=2_147_483_648, processes=256, open_files=1024
    )
)


@pytest.fixture
async def python(shared: Path) -> AsyncIterator[PythonExecutor]:
    executor = PythonExecutor(
        sandbox=POLICY, output_limit=8_000, kill_grace_seconds=0.5, max_runs_per_process=3
    )
    try:
        yield executor
    finally:
        await executor.aclose()


@pytest.fixture
def shell() -> ShellExecutor:
    return ShellExecutor(sandbox=POLICY, output_limit=8_000, kill_grace_seconds=0.5)


def context(
    params: dict[str, Any],
    *,
    timeout: float | None = 20,
    task: str = "task-1",
    secret_env: dict[str, str] | None = None,
) -> ExecutionContext:
    return ExecutionContext(
        run_id="run-1",
        task_id=task,
        attempt=1,
        params=params,
        timeout_seconds=timeout,
        secret_env=secret_env or {},
    )


def call(function: str, *args: Any, **params: Any) -> dict[str, Any]:
    return {"callable": f"{TARGETS}:{function}", "args": list(args), **params}


def value(result: ExecutionResult) -> Any:
    assert result.status == "succeeded", result
    return result.result["return_value"]


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def alive(pid: int) -> bool:
    """A zombie counts as gone (a container's PID 1 may never reap what it inherits)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def until(condition: Callable[[], bool], *, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        await asyncio.sleep(0.02)


# -- what a task can see of the worker ---------------------------------------------------------


async def test_shell_task_sees_neither_the_worker_environment_nor_its_proc_files(
    shell: ShellExecutor, planted: Path
) -> None:
    worker = os.getpid()
    script = f"env; cat /proc/{worker}/environ; cat /proc/{os.getppid()}/environ"
    if ROOT:  # a file of the worker's user is out of reach only for another user
        script += f"; cat {planted}"

    result = await shell.execute(context({"shell": True, "command": script}))

    assert PLANTED not in (result.output or "")
    assert "SCHEDULER__API__JWT_SECRET" not in (result.output or "")
    assert "Permission denied" in (result.output or "")
    assert not is_dumpable()


async def test_python_task_sees_neither_the_worker_environment_nor_its_proc_files(
    python: PythonExecutor, planted: Path
) -> None:
    env = value(await python.execute(context(call("environment"))))
    proc = await python.execute(context(call("read", f"/proc/{os.getpid()}/environ")))
    mem = await python.execute(context(call("read", f"/proc/{os.getpid()}/cmdline")))
    held = await python.execute(context(call("read", str(planted))))

    assert PLANTED not in json.dumps(env)
    assert "SCHEDULER__API__JWT_SECRET" not in env
    assert proc.status == "failed"
    assert (
        proc.error
        == f"PermissionError: [Errno 13] Permission denied: '/proc/{os.getpid()}/environ'"
    )
    assert (
        mem.status == "succeeded"
    )  # the worker's process exists and is visible; only its insides are not
    assert PLANTED not in json.dumps([proc.output, proc.error])
    if ROOT:  # a file of the worker's user is out of reach only for another user
        assert held.status == "failed"
        assert PLANTED not in json.dumps([held.output, held.error])


async def test_task_environment_is_the_allow_list_the_task_env_secret_env_and_run_ids(
    python: PythonExecutor, shell: ShellExecutor, planted: Path
) -> None:
    params = call("environment", env={"FROM_TASK": "1"})
    env = value(await python.execute(context(params, secret_env={"API_TOKEN": "tok"})))
    printed = await shell.execute(
        context({"argv": ["env"], "env": {"FROM_TASK": "1"}}, secret_env={"API_TOKEN": "tok"})
    )
    shell_env = dict(line.split("=", 1) for line in (printed.output or "").splitlines())

    allowed = {"PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"}
    task = {"FROM_TASK", "API_TOKEN", "SCHEDULER_RUN_ID", "SCHEDULER_TASK_ID", "SCHEDULER_ATTEMPT"}
    for seen in (env, shell_env):
        assert seen["API_TOKEN"] == "tok"
        assert seen["FROM_TASK"] == "1"
        assert seen["SCHEDULER_RUN_ID"] == "run-1"
        # The python interpreter adds LC_CTYPE when it coerces the C locale; nothing else.
        assert set(seen) - allowed - task <= {"LC_CTYPE", "PWD"}


async def test_python_interpreters_are_not_dumpable_by_other_tasks(
    python: PythonExecutor,
) -> None:
    assert value(await python.execute(context(call("dumpable")))) == 0


async def test_no_descriptor_of_the_worker_reaches_a_task(
    python: PythonExecutor, shell: ShellExecutor, planted: Path
) -> None:
    printed = await shell.execute(
        context({"shell": True, "command": "ls /proc/$$/fd; readlink /proc/$$/fd/*"})
    )
    held = value(await python.execute(context(call("descriptors"))))

    fds = [line for line in (printed.output or "").splitlines() if line.isdigit()]
    assert sorted(fds) == ["0", "1", "2"]
    assert str(planted) not in (printed.output or "")
    for fd, target in held.items():
        # stdin, the run's output pipe, the interpreter's channel to the worker, /dev/null and
        # the listing itself: nothing the worker had open.
        assert str(planted) not in target
        assert target.startswith(("/dev/null", "pipe:", "socket:", "/proc/")), (fd, target)


@pytest.mark.skipif(not ROOT, reason="the worker drops privileges only when it runs as root")
async def test_tasks_run_as_nobody_when_the_worker_is_root_without_isolated_uids() -> None:
    policy = sandbox_policy(isolate_tasks=False)
    nobody = policy.user
    assert nobody is not None
    assert policy.uids is None
    shell = ShellExecutor(sandbox=policy, kill_grace_seconds=0.5)
    python = PythonExecutor(sandbox=policy, kill_grace_seconds=0.5, pool_size=1)
    try:
        printed = await shell.execute(context({"argv": ["id", "-u"]}))
        ids = value(await python.execute(context(call("uid"))))
    finally:
        await python.aclose()

    assert printed.output == f"{nobody.uid}\n"
    assert ids == [nobody.uid, nobody.uid, nobody.gid]


@pytest.mark.skipif(not ROOT, reason="the worker drops privileges only when it runs as root")
async def test_tasks_run_with_a_uid_of_the_task_range_when_the_worker_is_root(
    python: PythonExecutor, shell: ShellExecutor
) -> None:
    assert POLICY.uids is not None

    printed = await shell.execute(context({"argv": ["id", "-u"]}))
    ids = value(await python.execute(context(call("uid"))))

    uid = int(printed.output or "")
    assert POLICY.uids.first <= uid <= POLICY.uids.last
    assert ids[0] == ids[1] == ids[2]
    assert POLICY.uids.first <= ids[0] <= POLICY.uids.last


# -- a task that misbehaves fails its own run ---------------------------------------------------


async def test_python_crashes_fail_their_run_only(python: PythonExecutor, shared: Path) -> None:
    exited = await python.execute(context({"callable": "os:_exit", "args": [3]}))
    crashed = await python.execute(context({"callable": "ctypes:string_at", "args": [0]}))
    starved = await python.execute(
        context(
            {
                "callable": "builtins:bytearray",
                "args": [1_000_000_000],  # fine under the worker maximum
                "limits": {"memory_bytes": 400_000_000},
            }
        )
    )
    after = await python.execute(context(call("chatty")))

    assert exited.status == "failed"
    assert exited.error == "the python process exited with code 3"
    assert crashed.status == "failed"
    assert crashed.error == "the python process was killed by signal SIGSEGV"
    assert starved.status == "failed"
    assert starved.error == "MemoryError"
    assert value(after) == 7


async def test_shell_task_under_a_memory_limit_fails_alone(
    shell: ShellExecutor, planted: Path
) -> None:
    script = "bytearray(1_000_000_000)"  # fine under the worker maximum
    starved = await shell.execute(
        context({"argv": [TASK_PYTHON, "-c", script], "limits": {"memory_bytes": 300_000_000}})
    )
    after = await shell.execute(context({"argv": ["true"]}))

    assert starved.status == "failed"
    assert "MemoryError" in (starved.output or "")
    assert after.status == "succeeded"


@pytest.mark.skipif(not ROOT, reason="RLIMIT_NPROC counts per user: only run as nobody")
async def test_fork_bomb_stops_at_the_process_limit_and_fails_alone(
    shell: ShellExecutor, python: PythonExecutor
) -> None:
    bomb = "f() { f & f; }; f"
    started = time.monotonic()

    result = await shell.execute(
        context({"shell": True, "command": bomb, "limits": {"processes": 40}}, timeout=2)
    )
    after = await shell.execute(context({"argv": ["true"]}))
    other = await python.execute(context(call("chatty")))

    assert result.status in ("timed_out", "failed")
    assert time.monotonic() - started < 15
    assert after.status == "succeeded"
    assert value(other) == 7


async def test_cpu_limit_ends_a_spinning_shell_task(shell: ShellExecutor) -> None:
    result = await shell.execute(
        context({"shell": True, "command": "while :; do :; done", "limits": {"cpu_seconds": 1}})
    )

    assert result.status == "failed"
    assert result.error == "killed by signal SIGXCPU"


async def test_cpu_limit_ends_a_spinning_python_task_alone(python: PythonExecutor) -> None:
    result = await python.execute(context(call("spin", limits={"cpu_seconds": 1})))
    after = await python.execute(context(call("chatty")))

    assert result.status == "failed"
    assert result.error == "the python process was killed by signal SIGXCPU"
    assert value(after) == 7


# -- nothing outlives its run -------------------------------------------------------------------


async def test_python_timeout_kills_the_interpreter_group(
    python: PythonExecutor, shared: Path
) -> None:
    report = shared / "timeout-pids"

    result = await python.execute(context(call("group_then_sleep", str(report), 300), timeout=1))

    assert result.status == "timed_out"
    pgid, host, sleeper = (int(part) for part in report.read_text().split())
    assert pgid == host
    await until(lambda: group_gone(pgid) and not alive(sleeper))


async def test_python_cancellation_kills_the_interpreter_group(
    python: PythonExecutor, shared: Path
) -> None:
    report = shared / "cancel-pids"
    running = asyncio.create_task(
        python.execute(context(call("group_then_sleep", str(report), 300)))
    )
    await until(lambda: report.exists() and len(report.read_text().split()) == 3)
    pgid, _, sleeper = (int(part) for part in report.read_text().split())

    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running

    assert group_gone(pgid)
    await until(lambda: not alive(sleeper))


async def test_shell_timeout_and_cancellation_leave_no_group_behind(
    shell: ShellExecutor, shared: Path
) -> None:
    timed = await shell.execute(
        context({"shell": True, "command": 'echo "$$"; sleep 300 & wait'}, timeout=0.5)
    )
    report = shared / "shell-pgid"
    running = asyncio.create_task(
        shell.execute(context({"shell": True, "command": f'echo "$$" > {report}; sleep 300'}))
    )
    await until(lambda: report.exists() and report.read_text().strip().isdigit())
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running

    assert timed.status == "timed_out"
    assert group_gone(int((timed.output or "").split()[0]))
    assert group_gone(int(report.read_text()))


WORKER = """
import asyncio, sys
from scheduler_application.ports.executor import ExecutionContext
from scheduler_worker.executors import {executor}

async def main():
    executor = {executor}()
    params = {params!r}
    await executor.execute(ExecutionContext(run_id="r", task_id="t", attempt=1, params=params))

sys.path.insert(0, {folder!r})
asyncio.run(main())
"""


@pytest.mark.parametrize(
    ("executor", "params"),
    [
        (
            "ShellExecutor",
            {"shell": True, "command": 'sleep 300 & echo "$$ $!" > {report}; wait'},
        ),
        ("PythonExecutor", {"callable": f"{TARGETS}:group_then_sleep", "args": ["{report}", 300]}),
    ],
)
async def test_kill_9_of_the_worker_kills_its_task_processes(
    shared: Path, executor: str, params: dict[str, Any]
) -> None:
    report = shared / f"kill9-{executor}"
    filled = json.loads(json.dumps(params).replace("{report}", str(report)))
    script = WORKER.format(executor=executor, params=filled, folder=str(shared))
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, start_new_session=True
    )
    try:
        await until(lambda: report.exists() and len(report.read_text().split()) >= 2, seconds=30)
        pids = [int(part) for part in report.read_text().split()]
        assert all(alive(pid) for pid in pids)

        worker.send_signal(signal.SIGKILL)
        await asyncio.wait_for(worker.wait(), timeout=10)

        await until(lambda: not any(alive(pid) for pid in pids))
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()


# -- the python pool ----------------------------------------------------------------------------


async def test_print_output_is_captured_like_shell_output(python: PythonExecutor) -> None:
    result = await python.execute(context(call("chatty")))
    logged = await python.execute(context({"callable": "logging:warning", "args": ["careful"]}))
    failing = await python.execute(
        context({"callable": "builtins:print", "args": ["before"], "kwargs": {"nope": 1}})
    )

    assert result.output == "to stdout\nto stderr\n"
    assert logged.output == "WARNING:root:careful\n"
    assert failing.status == "failed"
    assert (failing.output or "").startswith("Traceback (most recent call last):")


async def test_interpreters_are_recycled_after_max_runs_and_never_shared_between_tasks(
    python: PythonExecutor,
) -> None:
    first = [value(await python.execute(context(call("pid"), task="a"))) for _ in range(4)]
    other = value(await python.execute(context(call("pid"), task="b")))
    secret = value(await python.execute(context(call("pid"), task="a", secret_env={"K": "v"})))

    assert first[0] == first[1] == first[2]  # max_runs_per_process=3
    assert first[3] != first[0]
    assert other not in first
    assert secret not in [*first, other]  # another environment, another interpreter


async def test_secret_env_does_not_leak_into_the_next_task(python: PythonExecutor) -> None:
    await python.execute(context(call("noop"), task="a", secret_env={"LEAK_ME": "secret-a"}))

    env = value(await python.execute(context(call("environment"), task="b")))

    assert "LEAK_ME" not in env


async def test_python_start_latency_is_measured(python: PythonExecutor) -> None:
    await python.warm_up()
    durations = []
    for _ in range(30):
        started = time.perf_counter()
        await python.execute(context({"callable": "time:perf_counter"}))
        durations.append(time.perf_counter() - started)
    print(f"python run round trip: p50 {statistics.median(durations) * 1e3:.2f} ms")


async def test_a_run_that_leaves_a_process_behind_retires_its_interpreter(
    python: PythonExecutor, shared: Path
) -> None:
    report = shared / "orphan-pid"

    first = value(await python.execute(context(call("leave_behind", str(report)), task="o")))
    orphan = int(report.read_text())
    await until(lambda: not alive(orphan))
    second = value(await python.execute(context(call("pid"), task="o")))

    assert second != first


async def test_a_task_writing_on_the_interpreter_channel_fails_its_own_run(
    python: PythonExecutor,
) -> None:
    forged = await python.execute(context(call("forge"), task="f"))
    after = await python.execute(context(call("chatty"), task="f"))

    assert forged.status == "failed"
    assert value(after) == 7


async def test_an_idle_interpreter_that_died_is_replaced(python: PythonExecutor) -> None:
    before = value(await python.execute(context(call("pid"), task="k")))
    os.kill(before, signal.SIGKILL)
    await until(lambda: not alive(before))

    after = await python.execute(context(call("pid"), task="k"))

    assert value(after) != before


async def test_a_run_offered_to_an_interpreter_that_died_unheard_goes_to_another(
    python: PythonExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool learns of an idle interpreter's death from its supervisor's report, which a
    loaded machine may deliver after the next run has taken that interpreter: the run, which
    never reached it, is given to another instead of failing."""
    before = value(await python.execute(context(call("pid"), task="k")))
    os.kill(before, signal.SIGKILL)
    await until(lambda: not alive(before))
    # As if the report had not arrived yet: every interpreter still counts as alive.
    monkeypatch.setattr(PythonHost, "alive", property(lambda host: True))

    after = await python.execute(context(call("pid"), task="k"))

    assert value(after) != before
