"""The run message wire format: exact round trips, clear refusals, the factory's choices."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest

from scheduler_application.ports.queue import RunMessage
from scheduler_infrastructure.errors import ConfigError
from scheduler_infrastructure.queues import build_run_queue, messages
from scheduler_infrastructure.queues.memory import MemoryRunQueue

MESSAGE = RunMessage(
    run_id="run-1",
    task_id="task-1",
    attempt=2,
    token=9,
    queue="default",
    priority=4,
    enqueued_at=datetime(2026, 11, 22, 5, 36, 58, 422464, tzinfo=UTC),
    traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
)


def test_round_trip_is_exact() -> None:
    assert messages.decode(messages.encode(MESSAGE)) == MESSAGE


def test_enqueued_at_comes_back_in_utc() -> None:
    local = MESSAGE.enqueued_at.astimezone(timezone(timedelta(hours=5)))
    decoded = messages.decode(messages.encode(_with(enqueued_at=local)))
    assert decoded.enqueued_at == MESSAGE.enqueued_at
    assert decoded.enqueued_at.tzinfo == UTC


def test_naive_enqueued_at_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        messages.encode(_with(enqueued_at=datetime(2026, 1, 1)))


def test_message_is_small() -> None:
    assert len(messages.encode(MESSAGE)) < 200


def test_unknown_version_is_refused_by_name() -> None:
    future = msgspec.msgpack.encode({"v": 2, "run_id": "run-1", "shape": "new"})
    with pytest.raises(messages.UnreadableMessage, match="unsupported run message version 2"):
        messages.decode(future)


def test_version_one_with_extra_fields_is_read() -> None:
    wire = msgspec.msgpack.decode(messages.encode(MESSAGE))
    wire["added_later"] = "ignored"
    assert messages.decode(msgspec.msgpack.encode(wire)) == MESSAGE


@pytest.mark.parametrize("data", [b"", b"\xc1", b"plain text", msgspec.msgpack.encode([1, 2])])
def test_garbage_is_refused(data: bytes) -> None:
    with pytest.raises(messages.UnreadableMessage):
        messages.decode(data)


def test_factory_builds_the_memory_queue() -> None:
    assert isinstance(build_run_queue(backend="memory"), MemoryRunQueue)


@pytest.mark.parametrize(
    ("backend", "key"),
    [("postgres", "queue.backend"), ("rabbitmq", "rabbitmq.url"), ("redis", "redis.url")],
)
def test_factory_names_the_missing_setting(backend: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        build_run_queue(backend=backend)


def test_factory_refuses_unknown_backends() -> None:
    with pytest.raises(ConfigError, match="kafka"):
        build_run_queue(backend="kafka")


def _with(**changes: object) -> RunMessage:
    fields = {name: getattr(MESSAGE, name) for name in RunMessage.__dataclass_fields__}
    return RunMessage(**{**fields, **changes})  # type: ignore[arg-type]
