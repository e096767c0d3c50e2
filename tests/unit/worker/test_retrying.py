"""Which errors the worker tries again (outages, lost races) and which it takes as answers."""

from __future__ import annotations

import pytest

from scheduler_application.errors import Conflict, Contended, NotFound, Unavailable
from scheduler_worker.retrying import is_transient, retry_until

pytestmark = pytest.mark.timeout(10)


def test_outages_and_lost_races_are_tried_again_answers_are_not() -> None:
    assert is_transient(Unavailable("down", dependency="database"))
    assert is_transient(Contended("the run was changed concurrently: deadlock detected"))
    assert is_transient(ConnectionResetError())
    assert not is_transient(Conflict("run moved on"))
    assert not is_transient(NotFound("no such run"))


async def test_an_outcome_refused_by_a_deadlock_is_recorded_on_the_next_try() -> None:
    attempts: list[int] = []

    async def record() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise Contended("the run was changed concurrently, try again: deadlock detected")
        return "recorded"

    assert await retry_until(record, what="record", first_delay=0.001) == "recorded"
    assert len(attempts) == 3


async def test_a_conflict_is_an_answer_and_is_not_tried_again() -> None:
    attempts: list[int] = []

    async def record() -> None:
        attempts.append(1)
        raise Conflict("the run moved on")

    with pytest.raises(Conflict):
        await retry_until(record, what="record", first_delay=0.001)
    assert attempts == [1]
