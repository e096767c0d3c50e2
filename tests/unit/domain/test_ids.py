"""Identifiers are UUIDv7 strings in the canonical form, ordered by their millisecond."""

from __future__ import annotations

import time
import uuid

from scheduler_domain.ids import new_id


def test_an_id_is_a_canonical_uuid_of_version_7_and_the_rfc_variant() -> None:
    for _ in range(2_000):
        made = new_id()
        parsed = uuid.UUID(made)
        assert str(parsed) == made  # lower-case hex, 8-4-4-4-12
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122


def test_ids_carry_their_millisecond_and_sort_by_it() -> None:
    before = time.time_ns() // 1_000_000
    first = new_id()
    while time.time_ns() // 1_000_000 == before:  # the next millisecond, whatever the clock
        pass
    second = new_id()
    after = time.time_ns() // 1_000_000
    assert before <= uuid.UUID(first).int >> 80 <= uuid.UUID(second).int >> 80 <= after
    assert first < second


def test_ids_are_unique() -> None:
    made = [new_id() for _ in range(20_000)]
    assert len(set(made)) == len(made)
