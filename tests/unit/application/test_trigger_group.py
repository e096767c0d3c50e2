"""Single triggers group-committed: triggers arriving while a group commits share the next
one, and each request keeps its own answer — idempotency, gates, rate limits, the outbox, and
one request's refusal or failure never failing another's."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from application_fixtures import ALICE, BOB, VIEWER_ALICE, task_spec

from recording_queue import InMemoryRunQueue
from scheduler_application.dispatch.rate_limiting import RunRateLimits
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.errors import (
    Conflict,
    Contended,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from scheduler_application.runs.batch_trigger import BatchTrigger
from scheduler_application.runs.trigger_group import Triggered, TriggerGroup
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import (
    FakeClock,
    InMemoryRateLimiter,
    InMemoryStore,
    InMemoryUnitOfWork,
    InMemoryUnitOfWorkFactory,
)
from scheduler_domain.errors import ValidationError
from scheduler_domain.run import TaskRun
from scheduler_domain.status import RunStatus

pytestmark = pytest.mark.timeout(30)


class HeldUnitsOfWork(InMemoryUnitOfWorkFactory):
    """Units of work whose commits wait while ``hold`` is clear (a slow database), recording
    what the queue had published when each commit began; inserts of runs of a ``poisoned``
    task fail the transaction (a fault no validation foresaw); ``down`` fails every insert
    as the database being unreachable would."""

    def __init__(self, store: InMemoryStore, queue: InMemoryRunQueue) -> None:
        super().__init__(store)
        self.queue = queue
        self.hold = asyncio.Event()
        self.hold.set()
        self.committing = asyncio.Event()
        self.published_at_commit: list[int] = []
        self.poisoned: set[str] = set()
        self.down = False
        self.inserts = 0
        #: Leaving a unit of work that committed fails (the connection dropped as it was being
        #: returned, say): the commit stands.
        self.fail_after_commit = False
        #: A commit takes, but its reply is lost (the caller sees an error).
        self.lose_commit_reply = False
        #: The next this many inserts lose a race (a deadlock PostgreSQL broke): nothing
        #: written.
        self.races_lost = 0

    def __call__(self) -> InMemoryUnitOfWork:
        uow = super().__call__()
        commit, add_new_many = uow.commit, uow.runs.add_new_many

        async def held_commit() -> None:
            self.published_at_commit.append(len(self.queue.published))
            self.committing.set()
            await self.hold.wait()
            await commit()

        async def checked_insert(runs: Sequence[TaskRun], **kwargs: Any) -> set[str]:
            self.inserts += 1
            if self.down:
                raise Unavailable("database unreachable", dependency="database")
            if self.races_lost:
                self.races_lost -= 1
                raise Contended("the run was changed concurrently, try again: deadlock detected")
            if any(run.task_id in self.poisoned for run in runs):
                raise RuntimeError("value out of range for the column")
            return await add_new_many(runs, **kwargs)

        committed = False
        leave = uow.__aexit__

        async def committing() -> None:
            nonlocal committed
            await held_commit()
            committed = True
            if self.lose_commit_reply:
                raise RuntimeError("connection reset before the commit's reply")

        async def failing_exit(*exc: Any) -> None:
            await leave(*exc)
            if committed and self.fail_after_commit:
                raise RuntimeError("connection reset while it was returned")

        uow.commit = committing  # type: ignore[method-assign]
        uow.runs.add_new_many = checked_insert  # type: ignore[method-assign]
        uow.__aexit__ = failing_exit  # type: ignore[method-assign]
        return uow


@pytest.fixture
def held(store: InMemoryStore, queue: InMemoryRunQueue) -> HeldUnitsOfWork:
    return HeldUnitsOfWork(store, queue)


def group_over(
    held: HeldUnitsOfWork, clock: FakeClock, queue: InMemoryRunQueue, **relay: Any
) -> TriggerGroup:
    batch = BatchTrigger(
        uow_factory=held,
        clock=clock,
        relay=RunRelay(uow_factory=held, clock=clock, queue=queue, **relay),
    )
    return TriggerGroup(batch=batch, clock=clock)


@pytest.fixture
def group(held: HeldUnitsOfWork, clock: FakeClock, queue: InMemoryRunQueue) -> TriggerGroup:
    return group_over(held, clock, queue)


async def _behind_a_held_commit(
    held: HeldUnitsOfWork, group: TriggerGroup, task_id: str, *calls: Any
) -> tuple[Triggered, list[Triggered | BaseException]]:
    """Start one trigger, hold its commit, make ``calls`` meanwhile, then let both groups go:
    the first trigger's answer and the calls' answers."""
    held.hold.clear()
    first = asyncio.ensure_future(group.trigger(task_id, principal=ALICE))
    await asyncio.wait_for(held.committing.wait(), timeout=5)
    rest = asyncio.gather(*calls, return_exceptions=True)
    await asyncio.sleep(0)
    held.hold.set()
    return await first, list(await rest)


async def test_an_idle_api_commits_a_trigger_at_once_alone(
    group: TriggerGroup, tasks: TaskService, store: InMemoryStore, queue: InMemoryRunQueue
) -> None:
    task = await tasks.create(task_spec("now"), principal=ALICE)
    triggered = await asyncio.wait_for(group.trigger(task.id, principal=ALICE), timeout=1)
    assert not triggered.replayed
    assert triggered.run.status is RunStatus.QUEUED
    assert store.row("runs", triggered.run.id).status is RunStatus.QUEUED
    assert group.groups == 1
    assert [m.run_id for m in queue.published] == [triggered.run.id]


async def test_triggers_arriving_during_a_commit_share_the_next_transaction(
    group: TriggerGroup,
    held: HeldUnitsOfWork,
    tasks: TaskService,
    store: InMemoryStore,
    queue: InMemoryRunQueue,
) -> None:
    task = await tasks.create(task_spec("busy"), principal=ALICE)
    commits = store.commits
    first, rest = await _behind_a_held_commit(
        held, group, task.id, *(group.trigger(task.id, principal=ALICE) for _ in range(10))
    )
    assert group.groups == 2
    assert store.commits == commits + 2  # not 11
    # One insert per group: the group's runs take successive logical times at once, rather
    # than colliding on "now" and being inserted one per retry. (The fake clock stands still,
    # so the second group's first run meets the first group's run: one more insert, not ten.)
    assert held.inserts == 3
    runs = [first.run, *(r.run for r in rest if isinstance(r, Triggered))]
    assert len({run.id for run in runs}) == 11
    assert all(store.row("runs", run.id).status is RunStatus.QUEUED for run in runs)
    assert {m.run_id for m in queue.published} == {run.id for run in runs}
    # The runs' audit trails begin as a single trigger's do: created pending, then queued.
    first_events = [e.to_status for e in store.rows("events") if e.run_id == runs[5].id]
    assert first_events == [RunStatus.PENDING, RunStatus.QUEUED]


async def test_a_fixed_set_of_clients_coming_back_shares_one_transaction(
    held: HeldUnitsOfWork,
    tasks: TaskService,
    store: InMemoryStore,
    clock: FakeClock,
    queue: InMemoryRunQueue,
) -> None:
    """Four clients, each triggering again as soon as it has its answer: the first one
    answered comes back while nothing is written, and waits for the three whose group
    follows (at most as long as the last group took) instead of committing alone."""
    ticks = [100.0]
    batch = BatchTrigger(
        uow_factory=held, clock=clock, relay=RunRelay(uow_factory=held, clock=clock, queue=queue)
    )
    group = TriggerGroup(batch=batch, clock=clock, monotonic=lambda: ticks[0])
    task = await tasks.create(task_spec("clients"), principal=ALICE)
    commits = store.commits
    held.hold.clear()
    first = asyncio.ensure_future(group.trigger(task.id, principal=ALICE))
    await asyncio.wait_for(held.committing.wait(), timeout=5)
    behind = [asyncio.ensure_future(group.trigger(task.id, principal=ALICE)) for _ in range(3)]
    await asyncio.sleep(0)
    ticks[0] += 0.04  # that commit took 40 ms
    held.committing.clear()
    held.hold.set()
    await first
    again = asyncio.ensure_future(group.trigger(task.id, principal=ALICE))  # the client's next
    answers = await asyncio.wait_for(asyncio.gather(*behind, again), timeout=5)
    assert group.groups == 2  # the first alone, then the four together: not 1, 3 and 1
    assert store.commits == commits + 2
    runs = [first.result().run, *(answer.run for answer in answers)]
    assert len({run.id for run in runs}) == 5
    assert all(store.row("runs", run.id).status is RunStatus.QUEUED for run in runs)


async def test_one_idempotency_key_twice_in_one_group_makes_one_run_and_a_replay(
    group: TriggerGroup, held: HeldUnitsOfWork, tasks: TaskService, store: InMemoryStore
) -> None:
    task = await tasks.create(task_spec("keyed"), principal=ALICE)
    _, (one, two) = await _behind_a_held_commit(
        held,
        group,
        task.id,
        group.trigger(task.id, principal=ALICE, idempotency_key="order-7"),
        group.trigger(task.id, principal=ALICE, idempotency_key="order-7"),
    )
    assert isinstance(one, Triggered)
    assert isinstance(two, Triggered)
    assert group.groups == 2
    assert (one.replayed, two.replayed) == (False, True)
    assert one.run.id == two.run.id
    keyed = [r for r in store.rows("runs") if r.idempotency_key is not None]
    assert len(keyed) == 1
    # A later request with the key is a replay too.
    again = await group.trigger(task.id, principal=ALICE, idempotency_key="order-7")
    assert (again.replayed, again.run.id) == (True, one.run.id)


async def test_each_request_in_a_group_gets_its_own_refusal_and_the_others_their_runs(
    group: TriggerGroup, held: HeldUnitsOfWork, tasks: TaskService, clock: FakeClock
) -> None:
    mine = await tasks.create(task_spec("mine"), principal=ALICE)
    bobs = await tasks.create(task_spec("bobs"), principal=BOB)
    past = clock.now() - timedelta(hours=1)
    _, answers = await _behind_a_held_commit(
        held,
        group,
        mine.id,
        group.trigger(mine.id, principal=ALICE),
        group.trigger("no-such-task", principal=ALICE),
        group.trigger(bobs.id, principal=ALICE),  # another owner's task: not found
        group.trigger(bobs.id, principal=BOB),
        group.trigger(mine.id, principal=ALICE, logical_time=past),
        group.trigger(mine.id, principal=ALICE, logical_time=past),  # that time is taken
        group.trigger(mine.id, principal=VIEWER_ALICE),
        group.trigger(mine.id, principal=ALICE, idempotency_key=" "),
        group.trigger(mine.id, principal=ALICE, logical_time=clock.now() + timedelta(days=1)),
        group.trigger(mine.id, principal=ALICE),
    )
    kinds = [type(a).__name__ for a in answers]
    assert kinds == [
        "Triggered",
        "NotFound",
        "NotFound",
        "Triggered",
        "Triggered",
        "Conflict",
        "PermissionDenied",
        "ValidationError",
        "ValidationError",
        "Triggered",
    ]
    assert isinstance(answers[1], NotFound)
    assert answers[1].field == "task_id"
    assert isinstance(answers[5], Conflict)
    assert answers[5].field == "logical_time"
    assert isinstance(answers[6], PermissionDenied)
    assert isinstance(answers[7], ValidationError)
    assert answers[7].field == "idempotency_key"
    assert isinstance(answers[8], ValidationError)
    assert answers[8].field == "logical_time"
    bobs_run = answers[3]
    assert isinstance(bobs_run, Triggered)
    assert bobs_run.run.owner_id == BOB.subject_id
    timed = answers[4]
    assert isinstance(timed, Triggered)
    assert timed.run.scheduled_for == past
    assert group.groups == 2  # the refused ones did not cost groups of their own


async def test_the_gates_and_rate_limits_see_a_groups_runs_together(
    held: HeldUnitsOfWork,
    clock: FakeClock,
    queue: InMemoryRunQueue,
    tasks: TaskService,
    store: InMemoryStore,
) -> None:
    group = group_over(held, clock, queue, rate_limits=RunRateLimits(limiter=InMemoryRateLimiter()))
    capped = await tasks.create(task_spec("capped", max_concurrent=2), principal=ALICE)
    limited = await tasks.create(task_spec("limited", rate_limit="1/m"), principal=ALICE)
    _, answers = await _behind_a_held_commit(
        held,
        group,
        capped.id,
        *(group.trigger(capped.id, principal=ALICE) for _ in range(3)),
        *(group.trigger(limited.id, principal=ALICE) for _ in range(3)),
    )
    runs = [a.run for a in answers if isinstance(a, Triggered)]
    assert len(runs) == 6
    capped_statuses = sorted(store.row("runs", r.id).status.value for r in runs[:3])
    assert capped_statuses == ["pending", "pending", "queued"]  # the first took a slot
    limited_runs = [store.row("runs", r.id) for r in runs[3:]]
    assert sorted(r.status.value for r in limited_runs) == ["pending", "pending", "queued"]
    held_back = [r for r in limited_runs if r.status is RunStatus.PENDING]
    assert all(r.not_before is not None and r.not_before > clock.now() for r in held_back)
    queued = {r.id for r in store.rows("runs") if r.status is RunStatus.QUEUED}
    assert {m.run_id for m in queue.published} == queued


async def test_messages_are_published_only_after_the_groups_commit(
    group: TriggerGroup, held: HeldUnitsOfWork, tasks: TaskService, queue: InMemoryRunQueue
) -> None:
    task = await tasks.create(task_spec("outbox"), principal=ALICE)
    held.hold.clear()
    pending = [asyncio.ensure_future(group.trigger(task.id, principal=ALICE)) for _ in range(3)]
    await asyncio.wait_for(held.committing.wait(), timeout=5)
    await asyncio.sleep(0.01)
    assert queue.published == []  # the group is written, not committed: nothing sent
    assert not any(p.done() for p in pending)  # and nobody answered
    held.hold.set()
    answers = await asyncio.gather(*pending)
    assert held.published_at_commit[0] == 0
    assert {m.run_id for m in queue.published} == {a.run.id for a in answers}


async def test_a_group_failing_for_one_item_is_retried_item_by_item_so_only_it_fails(
    group: TriggerGroup,
    held: HeldUnitsOfWork,
    tasks: TaskService,
    store: InMemoryStore,
    queue: InMemoryRunQueue,
) -> None:
    good = await tasks.create(task_spec("good"), principal=ALICE)
    bad = await tasks.create(task_spec("bad"), principal=ALICE)
    held.poisoned.add(bad.id)
    _, answers = await _behind_a_held_commit(
        held,
        group,
        good.id,
        group.trigger(good.id, principal=ALICE, idempotency_key="a"),
        group.trigger(bad.id, principal=ALICE),
        group.trigger(good.id, principal=ALICE),
    )
    assert isinstance(answers[0], Triggered)
    assert isinstance(answers[1], RuntimeError)
    assert isinstance(answers[2], Triggered)
    assert not answers[0].replayed  # written by its retry, not before
    stored = {r.id for r in store.rows("runs")}
    assert {answers[0].run.id, answers[2].run.id} <= stored
    assert not [r for r in store.rows("runs") if r.task_id == bad.id]
    published = [m.run_id for m in queue.published]
    assert answers[0].run.id in published
    assert answers[2].run.id in published
    assert len(published) == len(set(published)) == 3  # the first group's run and these two


async def test_an_unavailable_database_fails_the_group_at_once_without_retries(
    group: TriggerGroup, held: HeldUnitsOfWork, tasks: TaskService
) -> None:
    task = await tasks.create(task_spec("down"), principal=ALICE)
    held.down = True
    inserts = held.inserts
    answers = await asyncio.gather(
        *(group.trigger(task.id, principal=ALICE) for _ in range(4)), return_exceptions=True
    )
    assert all(isinstance(a, Unavailable) for a in answers)
    assert held.inserts - inserts == group.groups  # one attempt per group, none per item


async def test_a_group_failing_after_its_commit_answers_its_runs_and_makes_no_second_run(
    group: TriggerGroup,
    held: HeldUnitsOfWork,
    tasks: TaskService,
    store: InMemoryStore,
    queue: InMemoryRunQueue,
) -> None:
    task = await tasks.create(task_spec("once"), principal=ALICE)
    held.fail_after_commit = True
    first, answers = await _behind_a_held_commit(
        held, group, task.id, *(group.trigger(task.id, principal=ALICE) for _ in range(3))
    )
    assert all(isinstance(a, Triggered) for a in answers), answers
    runs = [r for r in store.rows("runs") if r.task_id == task.id]
    # Keyless triggers, each made once: four requests, four runs (no retry of a committed group).
    assert len(runs) == 4
    answered = {first.run.id, *(a.run.id for a in answers if isinstance(a, Triggered))}
    assert answered == {r.id for r in runs}
    assert group.groups == 2


async def test_a_commit_without_a_reply_is_not_retried_item_by_item(
    group: TriggerGroup, held: HeldUnitsOfWork, tasks: TaskService, store: InMemoryStore
) -> None:
    task = await tasks.create(task_spec("unsure"), principal=ALICE)
    held.lose_commit_reply = True
    answers = await asyncio.gather(
        *(group.trigger(task.id, principal=ALICE) for _ in range(3)), return_exceptions=True
    )
    # The commit took: the callers are told to retry (503), and no run was made twice.
    assert all(isinstance(a, Unavailable) for a in answers), answers
    assert len([r for r in store.rows("runs") if r.task_id == task.id]) == 3


@pytest.mark.parametrize("lost", [1, 2])
async def test_a_lone_trigger_that_loses_a_race_is_written_on_another_try(
    group: TriggerGroup, held: HeldUnitsOfWork, tasks: TaskService, store: InMemoryStore, lost: int
) -> None:
    task = await tasks.create(task_spec("raced"), principal=ALICE)
    held.races_lost = lost
    inserts = held.inserts
    answer = await group.trigger(task.id, principal=ALICE)
    assert held.races_lost == 0
    assert held.inserts - inserts == lost + 1
    assert [r.id for r in store.rows("runs") if r.task_id == task.id] == [answer.run.id]


async def test_a_trigger_that_keeps_losing_races_is_answered_with_the_lost_race(
    group: TriggerGroup, held: HeldUnitsOfWork, tasks: TaskService, store: InMemoryStore
) -> None:
    task = await tasks.create(task_spec("unlucky"), principal=ALICE)
    held.races_lost = 3
    with pytest.raises(Contended):
        await group.trigger(task.id, principal=ALICE)
    assert not [r for r in store.rows("runs") if r.task_id == task.id]


async def test_a_group_that_loses_a_race_writes_each_trigger_alone(
    group: TriggerGroup, held: HeldUnitsOfWork, tasks: TaskService, store: InMemoryStore
) -> None:
    task = await tasks.create(task_spec("raced-group"), principal=ALICE)
    held.hold.clear()
    first = asyncio.ensure_future(group.trigger(task.id, principal=ALICE))
    await asyncio.wait_for(held.committing.wait(), timeout=5)
    held.races_lost = 1  # the insert of the group of three behind it
    inserts = held.inserts
    rest = asyncio.gather(
        *(group.trigger(task.id, principal=ALICE, idempotency_key=f"k{i}") for i in range(3)),
        return_exceptions=True,
    )
    await asyncio.sleep(0)
    held.hold.set()
    await first
    answers = await rest
    assert all(isinstance(a, Triggered) for a in answers), answers
    assert held.races_lost == 0
    # The group's insert, then each trigger's own (more where a logical time was taken).
    assert held.inserts - inserts >= 1 + 3
    runs = [r for r in store.rows("runs") if r.task_id == task.id]
    assert sorted(r.idempotency_key or "" for r in runs) == [
        "",
        "manual:k0",
        "manual:k1",
        "manual:k2",
    ]
