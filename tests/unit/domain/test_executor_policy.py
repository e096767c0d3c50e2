"""The executor policy: which role may use which executor, which callables python may run."""

from __future__ import annotations

import pytest

from scheduler_domain.accounts import Role
from scheduler_domain.errors import ValidationError
from scheduler_domain.executor_policy import ExecutorNotAllowed, ExecutorPolicy

SAFE = ExecutorPolicy()


@pytest.mark.parametrize(
    ("executor", "role", "allowed"),
    [
        ("noop", Role.USER, True),
        ("http", Role.USER, True),
        ("shell", Role.USER, False),
        ("python", Role.USER, False),
        ("shell", Role.OPERATOR, True),
        ("python", Role.ADMIN, True),
        ("ftp-plugin", Role.USER, False),
        ("ftp-plugin", Role.OPERATOR, True),
        ("shell", Role.VIEWER, False),
    ],
)
def test_safe_defaults_keep_process_executors_from_users(
    executor: str, role: Role, allowed: bool
) -> None:
    assert SAFE.allows(executor, role) is allowed


def test_check_names_the_executor_and_the_role() -> None:
    with pytest.raises(ExecutorNotAllowed) as refused:
        SAFE.check("shell", {"argv": ["id"]}, Role.USER)
    assert refused.value.field == "executor"
    assert "'shell'" in refused.value.message
    assert "'user'" in refused.value.message


def test_configured_roles_replace_the_defaults_per_executor() -> None:
    policy = ExecutorPolicy.from_names({"shell": ["admin", "user"], "http": ["admin"]})
    assert policy.allows("shell", Role.USER)
    assert not policy.allows("shell", Role.OPERATOR)
    assert not policy.allows("http", Role.USER)
    assert policy.allows("noop", Role.USER)  # not configured: the safe default


@pytest.mark.parametrize(
    "target",
    [
        "builtins:eval",
        "builtins:exec",
        "os:system",
        "os.path:join",
        "subprocess:run",
        "importlib:import_module",
        "sys:exit",
        "ctypes:string_at",
        "posix:_exit",
        "_posixsubprocess:fork_exec",
        "pickle:loads",
        "shutil:rmtree",
    ],
)
def test_interpreter_escapes_are_refused_even_under_a_wildcard(target: str) -> None:
    policy = ExecutorPolicy(python_allow=("*:*", "*"), python_registered=frozenset({target}))
    with pytest.raises(ValidationError) as refused:
        policy.check("python", {"callable": target}, Role.ADMIN)
    assert refused.value.field == "params.callable"


def test_only_registered_or_allow_listed_callables_run() -> None:
    policy = ExecutorPolicy(
        python_allow=("reports.jobs:*", "etl.*:run"),
        python_registered=frozenset({"billing.tasks:invoice"}),
    )
    for target in ("billing.tasks:invoice", "reports.jobs:nightly", "etl.daily.load:run"):
        policy.check_callable(target)
    for target in ("billing.tasks:refund", "reports:nightly", "etl.daily:stop", "json:loads"):
        with pytest.raises(ValidationError, match="not a registered task callable"):
            policy.check_callable(target)


def test_refusal_explains_why_a_run_may_not_start() -> None:
    assert SAFE.refusal("noop", {}, Role.USER) is None
    assert "not allowed for role 'user'" in (SAFE.refusal("shell", {}, Role.USER) or "")
    assert "no longer exists" in (SAFE.refusal("shell", {}, None) or "")
    assert "not a registered" in (
        SAFE.refusal("python", {"callable": "json:loads"}, Role.ADMIN) or ""
    )


def test_an_executor_open_to_every_owner_role_needs_no_owner_lookup() -> None:
    assert SAFE.open_to_every_owner("noop")
    assert SAFE.open_to_every_owner("http")
    assert not SAFE.open_to_every_owner("shell")
