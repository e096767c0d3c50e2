"""The task-change signal's watched units of work are the wrapped ones but for the signal."""

from __future__ import annotations

import pytest

from scheduler_application.tasks.changes import TaskChangeSignal
from scheduler_application.testing import InMemoryStore, InMemoryUnitOfWork


async def test_a_watched_unit_of_work_hands_on_every_repository_of_the_one_it_wraps() -> None:
    inner = InMemoryUnitOfWork(InMemoryStore())
    watched = TaskChangeSignal().watch(lambda: inner)()
    repositories = {
        name: value
        for name, value in vars(inner).items()
        if type(value).__name__.endswith("Repository")
    }
    assert {"tasks", "runs", "events", "teams"} <= set(repositories)
    for name, repository in repositories.items():
        assert getattr(watched, name) is repository, name
    with pytest.raises(AttributeError):
        _ = watched.store  # type: ignore[attr-defined]  # the repositories only
