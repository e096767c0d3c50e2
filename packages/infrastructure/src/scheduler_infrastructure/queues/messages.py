"""The wire format of run messages: small, versioned, msgpack.

A message only says how to find and claim a run; the database row carries the payload. Fields
may be added to version 1 with defaults (old readers ignore them, new readers fill them in); a
change that old readers would misread takes a new version, which old readers refuse by name
rather than by a confusing validation error.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import msgspec

from scheduler_application.ports.queue import RunMessage
from scheduler_infrastructure.errors import InfrastructureError

WIRE_VERSION = 1


class UnreadableMessage(InfrastructureError):
    """Bytes from a queue that are not a run message this code understands."""


class WireMessage(msgspec.Struct, kw_only=True, frozen=True):
    v: int = WIRE_VERSION
    run_id: str
    task_id: str
    attempt: int
    token: int
    queue: str
    priority: int
    enqueued_at: Annotated[datetime, msgspec.Meta(tz=True)]
    """An instant, encoded as msgpack's timestamp extension (exact to the nanosecond)."""
    traceparent: str | None = None


class _Envelope(msgspec.Struct):
    v: int


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(WireMessage)
_envelope_decoder = msgspec.msgpack.Decoder(_Envelope)


def encode(message: RunMessage) -> bytes:
    if message.enqueued_at.utcoffset() is None:
        raise ValueError(f"enqueued_at must be timezone-aware: {message.enqueued_at!r}")
    return _encoder.encode(
        WireMessage(
            run_id=message.run_id,
            task_id=message.task_id,
            attempt=message.attempt,
            token=message.token,
            queue=message.queue,
            priority=message.priority,
            enqueued_at=message.enqueued_at,
            traceparent=message.traceparent,
        )
    )


def decode(data: bytes) -> RunMessage:
    """The run message in ``data``; :class:`UnreadableMessage` for anything else."""
    try:
        wire = _decoder.decode(data)
    except msgspec.DecodeError as error:
        raise UnreadableMessage(_why_unreadable(data, error)) from error
    if wire.v != WIRE_VERSION:
        raise UnreadableMessage(
            f"unsupported run message version {wire.v} (this code reads {WIRE_VERSION})"
        )
    return RunMessage(
        run_id=wire.run_id,
        task_id=wire.task_id,
        attempt=wire.attempt,
        token=wire.token,
        queue=wire.queue,
        priority=wire.priority,
        enqueued_at=wire.enqueued_at.astimezone(UTC),
        traceparent=wire.traceparent,
    )


def _why_unreadable(data: bytes, error: msgspec.DecodeError) -> str:
    try:
        version = _envelope_decoder.decode(data).v
    except msgspec.DecodeError:
        return f"not a run message: {error}"
    if version != WIRE_VERSION:
        return f"unsupported run message version {version} (this code reads {WIRE_VERSION})"
    return f"malformed run message (version {version}): {error}"
