"""The SQL unit of work makes each of its repositories on first use, once, all of them."""

from __future__ import annotations

import pytest

from scheduler_application.ports.unit_of_work import REPOSITORY_NAMES
from scheduler_infrastructure.persistence.engine import create_engine
from scheduler_infrastructure.persistence.repositories import SqlRunRepository, SqlTaskRepository
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWork


@pytest.fixture
def uow() -> SqlUnitOfWork:
    # No connection is made: the engine is never used by these tests.
    return SqlUnitOfWork(create_engine("sqlite+aiosqlite:///:memory:"))


def test_every_repository_is_there_made_on_first_use_and_kept(uow: SqlUnitOfWork) -> None:
    assert "runs" not in vars(uow)  # nothing made before it is asked for
    for name in REPOSITORY_NAMES:
        first = getattr(uow, name)
        assert getattr(uow, name) is first, name
    assert isinstance(uow.runs, SqlRunRepository)
    assert isinstance(uow.tasks, SqlTaskRepository)


def test_an_unknown_attribute_is_still_an_attribute_error(uow: SqlUnitOfWork) -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = uow.nope  # type: ignore[attr-defined]
    assert not hasattr(uow, "_private_thing")


def test_the_task_and_queue_settings_repositories_share_the_read_ahead(
    uow: SqlUnitOfWork,
) -> None:
    assert uow.tasks._read_ahead is uow.queue_settings._read_ahead is uow._read_ahead
