"""The tables of the Postgres queue, on the shared metadata so that migrations see them.

``queue_messages`` is a work queue: a row is claimed by setting ``locked_by``/``locked_until``
(its visibility timeout), deleted when acked, and visible again once the lock lapses. Rows move
to ``queue_dead_letters`` when they were delivered too often or were rejected.
``queue_listeners`` names the processes listening for the queue's notifications, with the
queues they can take work for now; each beats every second, and a notification's messages are
claimed at once by one of them, not by all (see ``postgres.PostgresRunQueue._wake``). The
tables only serve the Postgres adapter; on SQLite they exist (one migration history) but stay
empty.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Identity,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Table,
    Text,
    func,
)

from scheduler_infrastructure.persistence.column_types import UTCDateTime
from scheduler_infrastructure.persistence.tables import metadata

# SQLite only auto-increments an INTEGER PRIMARY KEY.
_BIG_ID = BigInteger().with_variant(Integer(), "sqlite")

queue_messages = Table(
    "queue_messages",
    metadata,
    Column("id", _BIG_ID, Identity(always=False), primary_key=True),
    Column("queue", String(200), nullable=False),
    Column("priority", SmallInteger, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("enqueued_at", UTCDateTime(), nullable=False, server_default=func.now()),
    Column("available_at", UTCDateTime(), nullable=False, server_default=func.now()),
    Column("delivery_count", Integer, nullable=False, server_default="0"),
    Column("locked_by", String(200), nullable=True),
    Column("locked_until", UTCDateTime(), nullable=True),
)
# The claim walks this index in delivery order and skips the few rows that are locked.
Index(
    "ix_queue_messages_queue_priority_id",
    queue_messages.c.queue,
    queue_messages.c.priority.desc(),
    queue_messages.c.id,
)

queue_dead_letters = Table(
    "queue_dead_letters",
    metadata,
    Column("id", _BIG_ID, primary_key=True, autoincrement=False),
    Column("queue", String(200), nullable=False),
    Column("priority", SmallInteger, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("enqueued_at", UTCDateTime(), nullable=False),
    Column("delivery_count", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("dead_at", UTCDateTime(), nullable=False, server_default=func.now()),
)
Index("ix_queue_dead_letters_queue_id", queue_dead_letters.c.queue, queue_dead_letters.c.id)

#: Unlogged on PostgreSQL (migration 0020): a beat every second from every listening process
#: needs no WAL, and after a crash the rows come back with the next beats.
queue_listeners = Table(
    "queue_listeners",
    metadata,
    Column("name", String(200), primary_key=True),
    #: The queues the process has a consumer with free capacity for, as a JSON array.
    Column("queues", Text, nullable=False),
    Column("beat_at", UTCDateTime(), nullable=False, server_default=func.now()),
)

QUEUE_TABLES = (queue_messages, queue_dead_letters, queue_listeners)
