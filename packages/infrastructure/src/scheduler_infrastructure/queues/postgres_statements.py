"""The statements of the Postgres queue, each one round trip in autocommit mode.

Publishing and releasing notify in the same statement as their write, so a notification is sent
exactly when the rows it announces are committed.

The consumer's own bookkeeping — claiming, extending, releasing, acknowledging, burying — commits
asynchronously (``synchronous_commit = off`` for that statement's transaction, via the one-row
``relaxed`` join): it does not wait for its WAL to reach the disk, which on a small machine is
most of a claim's time. Should the server crash, such a commit may be lost, and every such loss
only causes a redelivery or a later one: a lost claim or ack leaves the row to be delivered
again (the run's own claim, which commits durably, refuses the duplicate); a lost release or
extension makes the lock lapse later or earlier; a lost burial leaves the row to be buried
again. Publishing commits durably.
"""

from __future__ import annotations

from scheduler_infrastructure.persistence.driver import prebuilt_text

#: A message with a ``not_before`` (a run fired ahead of its slot) is only claimable from
#: then (``available_at``); its notification says when, as ``<queue> <epoch seconds>``, so that
#: listening consumers wake at that instant rather than at their next poll. The notification
#: of messages claimable now is ``<queue> ~<token>``: a random number by which every listening
#: process picks the same one of them to claim at once (see ``postgres.PostgresRunQueue._wake``).
PUBLISH = prebuilt_text(
    """
    WITH inserted AS (
        INSERT INTO queue_messages (queue, priority, payload, available_at)
        SELECT queue, priority, payload, coalesce(available_at, now()) FROM unnest(
            CAST(:queues AS text[]),
            CAST(:priorities AS smallint[]),
            CAST(:payloads AS bytea[]),
            CAST(:available AS timestamptz[])
        ) AS message(queue, priority, payload, available_at)
        RETURNING queue, available_at
    )
    SELECT pg_notify(:channel, woken.payload || CASE
        WHEN woken.later THEN '' ELSE ' ~' || floor(random() * 2147483647)::bigint END
    ) FROM (
        SELECT DISTINCT available_at > now() AS later, CASE
            WHEN available_at > now() THEN queue || ' ' || extract(epoch FROM available_at)
            ELSE queue
        END AS payload
        FROM inserted
    ) AS woken
    """
)
#: The messages of new runs, written by the statement that inserts the runs
#: (``SqlRunRepository.add_new_many`` with an ``AlongsideInsert``): a message is written only if
#: its run was (``new_run``: the ids inserted), in the order given, and ``WITH_RUNS_NOTIFY``,
#: a column of that statement's final ``SELECT``, notifies as :data:`PUBLISH` does — one round
#: trip for the runs, their events and their messages.
WITH_RUNS_CTES = """
    new_message AS (
        INSERT INTO queue_messages (queue, priority, payload, available_at)
        SELECT message.queue, message.priority, message.payload,
               coalesce(message.available_at, now())
        FROM unnest(
            CAST(:message_queues AS text[]),
            CAST(:message_priorities AS smallint[]),
            CAST(:message_payloads AS bytea[]),
            CAST(:message_available AS timestamptz[]),
            CAST(:message_run_ids AS text[])
        ) WITH ORDINALITY AS message(queue, priority, payload, available_at, run_id, n)
        WHERE message.run_id IN (SELECT id FROM new_run)
        ORDER BY message.n
        RETURNING queue, available_at
    )
"""
WITH_RUNS_NOTIFY = """
    (SELECT count(pg_notify(:message_channel, woken.payload || CASE
        WHEN woken.later THEN '' ELSE ' ~' || floor(random() * 2147483647)::bigint END
    )) FROM (
        SELECT DISTINCT available_at > now() AS later, CASE
            WHEN available_at > now() THEN queue || ' ' || extract(epoch FROM available_at)
            ELSE queue
        END AS payload
        FROM new_message
    ) AS woken) AS notified
"""
#: Claims from all of a consumer's queues in one round trip (its task queues and its worker's
#: direct queue): each queue's most urgent available rows through its index (the lateral
#: subquery, locked with ``SKIP LOCKED``), then the most urgent of those across the queues —
#: priority first, then the oldest. A wake-up thus costs a consumer one statement, however many
#: queues it reads, and a consumer that lost the race for a message to another finds nothing in
#: one statement rather than one per queue. The rows are picked once (``ARRAY(...)``, an init
#: plan) and updated by primary key, a plan that suits any values: the consumers run it as a
#: generic plan (see ``postgres.CONSUMER_SERVER_SETTINGS``).
#:
#: The same statement deletes the rows of the acks waiting in this process (``acks``, maybe
#: none: see ``postgres.ACK_LINGER``), which it never picks: at a steady flow an ack costs no
#: round trip of its own.
CLAIM = prebuilt_text(
    """
    WITH acked AS (
        DELETE FROM queue_messages WHERE id = ANY(CAST(:acks AS bigint[]))
    )
    UPDATE queue_messages
    SET locked_by = :consumer,
        locked_until = now() + make_interval(secs => CAST(:visibility AS double precision)),
        delivery_count = delivery_count + 1
    FROM (SELECT set_config('synchronous_commit', 'off', true)) AS relaxed
    WHERE id = ANY(ARRAY(
        SELECT picked.id FROM unnest(CAST(:queues AS text[])) AS wanted(queue)
        CROSS JOIN LATERAL (
            SELECT m.id, m.priority FROM queue_messages AS m
            WHERE m.queue = wanted.queue
              AND m.available_at <= now()
              AND (m.locked_until IS NULL OR m.locked_until < now())
              AND m.id <> ALL(CAST(:acks AS bigint[]))
            ORDER BY m.priority DESC, m.id
            LIMIT :limit
            FOR UPDATE SKIP LOCKED
        ) AS picked
        ORDER BY picked.priority DESC, picked.id
        LIMIT :limit
    ))
    RETURNING id, priority, payload, delivery_count
    """
)
ACK = prebuilt_text(
    """
    DELETE FROM queue_messages
    USING (SELECT set_config('synchronous_commit', 'off', true)) AS relaxed
    WHERE id = ANY(CAST(:ids AS bigint[]))
    """
)
RELEASE = prebuilt_text(
    """
    WITH released AS (
        UPDATE queue_messages SET locked_by = NULL, locked_until = NULL
        FROM (SELECT set_config('synchronous_commit', 'off', true)) AS relaxed
        WHERE id = ANY(CAST(:ids AS bigint[])) AND locked_by = :consumer
        RETURNING queue
    )
    SELECT pg_notify(:channel, queue) FROM (SELECT DISTINCT queue FROM released) AS woken
    """
)
EXTEND = prebuilt_text(
    """
    UPDATE queue_messages
    SET locked_until = now() + make_interval(secs => CAST(:visibility AS double precision))
    FROM (SELECT set_config('synchronous_commit', 'off', true)) AS relaxed
    WHERE id = ANY(CAST(:ids AS bigint[])) AND locked_by = :consumer
    """
)
BURY = prebuilt_text(
    """
    WITH buried AS (
        DELETE FROM queue_messages
        USING (SELECT set_config('synchronous_commit', 'off', true)) AS relaxed
        WHERE id = ANY(CAST(:ids AS bigint[]))
        RETURNING id, queue, priority, payload, enqueued_at, delivery_count
    )
    INSERT INTO queue_dead_letters
        (id, queue, priority, payload, enqueued_at, delivery_count, reason)
    SELECT id, queue, priority, payload, enqueued_at, delivery_count, CAST(:reason AS text)
    FROM buried
    ON CONFLICT (id) DO NOTHING
    """
)
DEPTH = prebuilt_text(
    """
    SELECT count(*) FROM queue_messages
    WHERE queue = :queue AND (locked_until IS NULL OR locked_until < now())
    """
)
#: A queue here is only its rows: it is "deleted" when none is left, live or dead.
HOLDS_ANYTHING = prebuilt_text(
    """
    SELECT EXISTS (SELECT 1 FROM queue_messages WHERE queue = :queue)
        OR EXISTS (SELECT 1 FROM queue_dead_letters WHERE queue = :queue)
    """
)
DEAD_LETTERS = prebuilt_text(
    "SELECT payload FROM queue_dead_letters WHERE queue = :queue ORDER BY id LIMIT :limit"
)

#: A listening process's beat (asyncpg parameters: its name, the JSON array of the queues it
#: has free capacity for, the seconds after which a silent process counts as gone): its row
#: written, the rows of processes gone deleted (those another beat is deleting are skipped,
#: never waited for), and the rows of the live ones read — as they were before this
#: statement, so its own row may be missing or old.
BEAT = """
    WITH beat AS (
        INSERT INTO queue_listeners (name, queues, beat_at) VALUES ($1, $2, now())
        ON CONFLICT (name) DO UPDATE SET queues = EXCLUDED.queues, beat_at = EXCLUDED.beat_at
    ), gone AS (
        DELETE FROM queue_listeners WHERE name IN (
            SELECT name FROM queue_listeners
            WHERE beat_at < now() - make_interval(secs => CAST($3 AS double precision))
            FOR UPDATE SKIP LOCKED
        )
    )
    SELECT name, queues FROM queue_listeners
    WHERE beat_at >= now() - make_interval(secs => CAST($3 AS double precision))
"""
#: A process that stops listening says so, so that nobody picks it meanwhile.
LEAVE = prebuilt_text("DELETE FROM queue_listeners WHERE name = :name")
