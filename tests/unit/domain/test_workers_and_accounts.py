"""Workers' liveness and draining; roles, API keys and refresh tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scheduler_domain.accounts import (
    ApiKey,
    RefreshToken,
    Role,
    User,
    validate_password,
    validate_username,
)
from scheduler_domain.errors import ValidationError
from scheduler_domain.lease import Lease
from scheduler_domain.worker import Worker, WorkerOffline, WorkerStatus

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TIMEOUT = timedelta(seconds=30)


def _worker(**overrides: object) -> Worker:
    fields: dict[str, object] = {
        "name": "w1",
        "hostname": "host",
        "pid": 1,
        "queues": ("default",),
        "capacity": 4,
        "started_at": NOW,
        "heartbeat_at": NOW,
    }
    fields.update(overrides)
    return Worker(**fields)  # type: ignore[arg-type]


def test_undrain_puts_a_draining_worker_back_online_and_refuses_an_offline_one() -> None:
    worker = _worker()
    worker.drain()
    assert worker.status is WorkerStatus.DRAINING
    worker.undrain()
    assert worker.status is WorkerStatus.ONLINE
    worker.undrain()  # already online: nothing to do
    assert worker.status is WorkerStatus.ONLINE

    worker.go_offline(now=NOW)
    with pytest.raises(WorkerOffline, match="offline"):
        worker.undrain()
    assert worker.status is WorkerStatus.OFFLINE


def test_a_worker_is_retired_only_when_offline_longer_than_the_retention() -> None:
    day = timedelta(days=1)
    silent = _worker(heartbeat_at=NOW - 2 * day)
    assert not silent.is_retired(now=NOW, retention=day)  # silent, but not marked offline yet
    silent.go_offline(now=NOW - 2 * day)
    assert silent.is_retired(now=NOW, retention=day)
    assert not silent.is_retired(now=NOW, retention=3 * day)
    draining = _worker(heartbeat_at=NOW - 2 * day, status=WorkerStatus.DRAINING)
    assert not draining.is_retired(now=NOW, retention=day)


def test_worker_without_heartbeat_for_the_timeout_is_not_alive() -> None:
    worker = _worker()
    assert worker.is_alive(now=NOW + timedelta(seconds=29), timeout=TIMEOUT)
    assert not worker.is_alive(now=NOW + TIMEOUT, timeout=TIMEOUT)


def test_draining_worker_is_alive_but_takes_no_new_work() -> None:
    worker = _worker()
    worker.drain()
    assert worker.status is WorkerStatus.DRAINING
    assert worker.is_alive(now=NOW, timeout=TIMEOUT)
    assert not worker.accepts_work(now=NOW, timeout=TIMEOUT)


def test_free_slots_follow_heartbeats() -> None:
    worker = _worker(capacity=4)
    worker.record_heartbeat(now=NOW, active_runs=3)
    assert worker.free_slots == 1
    worker.record_heartbeat(now=NOW, active_runs=9)
    assert worker.free_slots == 0


def test_offline_worker_comes_back_online_on_heartbeat() -> None:
    worker = _worker()
    worker.go_offline(now=NOW)
    assert not worker.is_alive(now=NOW, timeout=TIMEOUT)
    worker.record_heartbeat(now=NOW, active_runs=0)
    assert worker.status is WorkerStatus.ONLINE


@pytest.mark.parametrize(
    ("overrides", "field"), [({"capacity": 0}, "capacity"), ({"queues": ()}, "queues")]
)
def test_invalid_worker_is_refused(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        _worker(**overrides)
    assert info.value.field == field


def test_roles_grant_what_design_section_10_says() -> None:
    assert Role.ADMIN.manages_accounts
    assert not Role.OPERATOR.manages_accounts
    assert Role.OPERATOR.sees_all_tasks
    assert not Role.USER.sees_all_tasks
    assert Role.USER.can_write_tasks
    assert not Role.VIEWER.can_write_tasks
    assert Role.VIEWER.can_read_tasks
    assert not Role.WORKER.can_read_tasks
    assert Role.WORKER.runs_work
    assert not Role.USER.runs_work


def test_usernames_and_passwords_are_validated() -> None:
    assert validate_username("alice@example") == "alice@example"
    with pytest.raises(ValidationError) as info:
        validate_username("a b")
    assert info.value.field == "username"
    with pytest.raises(ValidationError) as info:
        validate_password("short")
    assert info.value.field == "password"
    with pytest.raises(ValidationError):
        User(username="x", password_hash="h", role=Role.USER, created_at=NOW, updated_at=NOW)


def test_api_key_is_unusable_once_revoked_or_expired() -> None:
    key = ApiKey(
        name="ci",
        prefix="sk_abc",
        secret_hash="h",
        owner_id="u",
        role=Role.USER,
        created_at=NOW,
        expires_at=NOW + timedelta(days=1),
    )
    assert key.is_usable(NOW)
    assert not key.is_usable(NOW + timedelta(days=1))
    key.revoke(NOW)
    assert not key.is_usable(NOW)


def test_refresh_token_is_single_use() -> None:
    token = RefreshToken(
        user_id="u",
        family_id="f",
        token_hash="h",
        created_at=NOW,
        expires_at=NOW + timedelta(days=1),
    )
    assert token.is_usable(NOW)
    token.used_at = NOW
    assert not token.is_usable(NOW)


def test_lease_belongs_to_its_holder_until_it_expires() -> None:
    lease = Lease(resource="reaper", holder="d1", expires_at=NOW + TIMEOUT)
    assert lease.is_held_by("d1", NOW)
    assert not lease.is_held_by("d2", NOW)
    assert not lease.is_held_by("d1", NOW + TIMEOUT)
