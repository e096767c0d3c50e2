"""The sandbox's policy: limits a task may lower but not raise, who tasks run as, and the
environment they get."""

from __future__ import annotations

import logging
import os
import pwd
from pathlib import Path
from types import SimpleNamespace

import pytest

from scheduler_infrastructure.config import Settings
from scheduler_infrastructure.config.settings import WorkerSettings
from scheduler_infrastructure.startup import StartupError
from scheduler_worker.bootstrap import worker_sandbox
from scheduler_worker.sandbox.dumpable import is_dumpable, make_non_dumpable
from scheduler_worker.sandbox.errors import SandboxConfigError
from scheduler_worker.sandbox.policy import (
    ResourceLimits,
    RunAs,
    SandboxPolicy,
    resolve_user,
    sandbox_policy,
)
from scheduler_worker.sandbox.uids import check_uid_range, parse_uid_range

ROOT = os.geteuid() == 0
WORKER = ResourceLimits(cpu_seconds=60, memory_bytes=1_000_000, processes=0, open_files=100)


def test_task_limits_lower_the_worker_maxima_but_never_raise_them() -> None:
    lowered = WORKER.lowered(
        {"cpu_seconds": 5, "memory_bytes": 9_000_000, "processes": 7, "open_files": 100}
    )

    assert lowered == ResourceLimits(
        cpu_seconds=5, memory_bytes=1_000_000, processes=7, open_files=100
    )
    assert WORKER.lowered(None) == WORKER
    assert WORKER.lowered({"cpu_seconds": 0, "open_files": True}) == WORKER


def test_limits_in_the_supervisor_spec_leave_out_the_unlimited_ones() -> None:
    assert WORKER.as_spec() == {"cpu": 60, "as": 1_000_000, "nofile": 100}


def test_environment_is_the_allow_list_then_task_env_then_secret_env_then_run_ids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("HOME", "/root")
    monkeypatch.setenv("SCHEDULER__API__JWT_SECRET", "worker-secret")
    nobody = RunAs(name="nobody", uid=65534, gid=65534, groups=(65534,), home="/nonexistent")
    policy = SandboxPolicy(user=nobody, env_allowlist=("LANG", "HOME", "UNSET_9"))

    env = policy.environment(
        run_id="r",
        task_id="t",
        attempt=2,
        env={"A": "task", "SCHEDULER_RUN_ID": "forged"},
        secret_env={"A": "secret", "B": "s"},
    )

    assert env == {
        "LANG": "C.UTF-8",
        "HOME": "/nonexistent",
        "A": "secret",
        "B": "s",
        "SCHEDULER_RUN_ID": "r",
        "SCHEDULER_TASK_ID": "t",
        "SCHEDULER_ATTEMPT": "2",
    }


def test_unknown_or_root_run_as_is_refused() -> None:
    with pytest.raises(SandboxConfigError, match="no user 'no-such-user-71'"):
        resolve_user("no-such-user-71")
    with pytest.raises(SandboxConfigError, match="allow_root_tasks"):
        resolve_user("root")


@pytest.mark.skipif(not ROOT, reason="the policy drops privileges only when run as root")
def test_root_worker_runs_tasks_as_run_as_unless_root_tasks_are_allowed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dropped = sandbox_policy(run_as="nobody", isolate_tasks=False)
    with caplog.at_level(logging.WARNING, logger="scheduler.worker.sandbox"):
        kept = sandbox_policy(run_as="nobody", allow_root_tasks=True)

    assert dropped.user is not None
    assert dropped.user.name == "nobody"
    assert kept.user is None
    assert "tasks run as root" in caplog.text


@pytest.mark.skipif(ROOT, reason="as root the policy drops to run_as")
def test_unprivileged_worker_runs_tasks_as_itself() -> None:
    assert sandbox_policy(run_as="no-such-user-71").user is None


@pytest.mark.skipif(not ROOT, reason="run_as is resolved only when the worker is root")
def test_worker_settings_with_a_missing_run_as_do_not_start() -> None:
    settings = Settings(worker=WorkerSettings(run_as="no-such-user-71", isolate_tasks=False))

    with pytest.raises(StartupError, match=r"worker\.run_as"):
        worker_sandbox(settings)


def test_worker_settings_become_the_sandbox_limits() -> None:
    settings = Settings(
        worker=WorkerSettings(
            max_cpu_seconds=7, max_memory_bytes=0, max_processes=3, max_open_files=50
        )
    )

    policy = worker_sandbox(settings)

    assert policy.limits == ResourceLimits(
        cpu_seconds=7, memory_bytes=0, processes=3, open_files=50
    )


def test_worker_can_make_itself_non_dumpable() -> None:
    assert make_non_dumpable()
    assert not is_dumpable()


def _account(name: str, uid: int) -> SimpleNamespace:
    return SimpleNamespace(pw_name=name, pw_uid=uid)


def test_a_uid_range_holding_an_account_is_refused_naming_the_setting() -> None:
    accounts = [_account("root", 0), _account("intruder", 1900000042)]

    with pytest.raises(SandboxConfigError, match=r"worker\.task_uid_range.*'intruder'"):
        check_uid_range(1900000000, 1900999999, accounts=lambda: accounts, groups=list)
    check_uid_range(1900000043, 1900999999, accounts=lambda: accounts, groups=list)


@pytest.mark.skipif(not ROOT, reason="task uids are used only when the worker is root")
def test_a_root_worker_does_not_start_when_an_account_owns_a_task_uid(tmp_path: Path) -> None:
    accounts = [*pwd.getpwall(), _account("intruder", 1900000042)]

    with pytest.raises(SandboxConfigError, match=r"worker\.task_uid_range.*intruder"):
        sandbox_policy(task_uid_lock_dir=str(tmp_path / "uids"), accounts=lambda: accounts)
    with pytest.raises(SandboxConfigError, match=r"worker\.task_home_dir"):
        sandbox_policy(
            task_uid_lock_dir=str(tmp_path / "uids"), task_home_dir=str(tmp_path / "none")
        )
    policy = sandbox_policy(task_uid_lock_dir=str(tmp_path / "uids"))
    assert policy.uids is not None
    assert (tmp_path / "uids").stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("text", ["", "5", "a-b", "0-10", "10-5", "1-4294967295"])
def test_a_malformed_uid_range_is_refused_naming_the_setting(text: str) -> None:
    with pytest.raises(SandboxConfigError, match=r"worker\.task_uid_range"):
        parse_uid_range(text)


def test_an_unknown_task_network_is_refused_naming_the_setting() -> None:
    with pytest.raises(SandboxConfigError, match=r"worker\.task_network"):
        sandbox_policy(task_network="bridge")


def test_the_task_network_mode_that_applies_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="scheduler.worker.sandbox"):
        policy = sandbox_policy(task_network="none", isolate_tasks=False)

    if ROOT:
        assert policy.network == "none"
        assert "task network: none" in caplog.text
    else:  # a namespace needs root: the host's network, with a warning
        assert policy.network == "host"
        assert "worker.task_network is 'none' but the worker is not root" in caplog.text
    assert sandbox_policy(task_network="host", isolate_tasks=False).network == "host"


def test_an_isolated_run_gets_its_private_folder_as_home_and_tmpdir(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME", "/root")
    monkeypatch.setenv("TMPDIR", "/tmp")
    own = RunAs(
        name="uid 1900000007",
        uid=1900000007,
        gid=1900000007,
        groups=(),
        home="/tmp/scheduler-task-x",
        exclusive=True,
    )
    policy = SandboxPolicy(env_allowlist=("HOME",))

    env = policy.environment(run_id="r", task_id="t", attempt=1, user=own)

    assert env["HOME"] == env["TMPDIR"] == "/tmp/scheduler-task-x"


@pytest.mark.skipif(not ROOT, reason="only a root worker can make network namespaces")
def test_a_root_worker_that_cannot_make_a_network_namespace_warns_and_uses_the_host_network(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="scheduler.worker.sandbox"):
        policy = sandbox_policy(
            isolate_tasks=False, network_probe=lambda: "Operation not permitted"
        )

    assert policy.network == "host"
    assert "no network namespace can be created here (Operation not permitted" in caplog.text


@pytest.mark.skipif(not ROOT, reason="task uids are used only when the worker is root")
def test_worker_settings_choose_isolated_uids_or_run_as(tmp_path: Path) -> None:
    lock_dir = str(tmp_path / "uids")
    isolated = worker_sandbox(
        Settings(
            worker=WorkerSettings(
                task_uid_range="1900000100-1900000199", task_uid_lock_dir=lock_dir
            )
        )
    )
    shared = worker_sandbox(Settings(worker=WorkerSettings(isolate_tasks=False)))

    assert isolated.uids is not None
    assert (isolated.uids.first, isolated.uids.last) == (1900000100, 1900000199)
    assert isolated.user is None
    assert shared.uids is None
    assert shared.user is not None


@pytest.mark.skipif(not ROOT, reason="task uids are used only when the worker is root")
def test_a_starting_worker_clears_homes_and_locks_that_dead_workers_left(tmp_path: Path) -> None:
    homes, locks = tmp_path / "homes", tmp_path / "locks"
    homes.mkdir()
    first = sandbox_policy(task_uid_lock_dir=str(locks), task_home_dir=str(homes))
    live = first.identity()  # a run of a live worker: its uid stays locked, its home stays
    assert live.user is not None
    dead_home = homes / "scheduler-task-1900000077-x"
    dead_home.mkdir()
    os.chown(dead_home, 1900000077, 1900000077)
    (locks / "1900000078").touch()  # its worker died holding it: nobody locks it now

    sandbox_policy(task_uid_lock_dir=str(locks), task_home_dir=str(homes))

    try:
        assert not dead_home.exists()
        assert not (locks / "1900000078").exists()
        assert Path(live.user.home).is_dir()
        assert (locks / str(live.user.uid)).exists()
    finally:
        live.close()
    assert sorted(homes.iterdir()) == []
    assert sorted(locks.iterdir()) == []
