from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from application_fixtures import ALICE, BOB, OPERATOR, START, VIEWER_ALICE, WORKER_ROLE, task_spec

from scheduler_application.errors import AlreadyExists, Conflict, NotFound, PermissionDenied
from scheduler_application.runs.service import RunService
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import FakeClock, InMemoryStore
from scheduler_domain.errors import DependencyCycle, ValidationError
from scheduler_domain.events import SkipReason, SlotDecision, SlotOutcome
from scheduler_domain.task import Task

CRON_BERLIN = {"cron": "0 2 * * *", "timezone": "Europe/Berlin"}


async def test_create_stores_the_task_owned_by_the_caller_with_next_run_at(
    tasks: TaskService, store: InMemoryStore
) -> None:
    task = await tasks.create(task_spec(schedule={"interval_seconds": 60}), principal=ALICE)
    stored = store.row("tasks", task.id)
    assert stored.owner_id == "alice"
    assert stored.next_run_at == START + timedelta(minutes=1)
    assert stored.version == 1
    assert store.commits == 1


async def test_create_without_schedule_has_no_next_run(tasks: TaskService) -> None:
    task = await tasks.create(task_spec(), principal=ALICE)
    assert task.next_run_at is None


async def test_create_refuses_a_name_the_owner_already_uses(tasks: TaskService) -> None:
    await tasks.create(task_spec("dup"), principal=ALICE)
    await tasks.create(task_spec("dup"), principal=BOB)  # other owner: fine
    with pytest.raises(AlreadyExists) as error:
        await tasks.create(task_spec("dup"), principal=ALICE)
    assert error.value.field == "name"


async def test_create_refuses_invalid_fields_naming_them(tasks: TaskService) -> None:
    with pytest.raises(ValidationError) as error:
        await tasks.create(task_spec(retry={"max_attempts": 0}), principal=ALICE)
    assert error.value.field == "retry.max_attempts"
    with pytest.raises(ValidationError) as forbidden:
        await tasks.create(task_spec(owner_id="bob"), principal=ALICE)
    assert forbidden.value.field == "owner_id"


async def test_viewer_cannot_create_update_or_delete(tasks: TaskService, alice_task: Task) -> None:
    with pytest.raises(PermissionDenied):
        await tasks.create(task_spec("other"), principal=VIEWER_ALICE)
    with pytest.raises(PermissionDenied):
        await tasks.update(alice_task.id, {"description": "x"}, principal=VIEWER_ALICE)
    with pytest.raises(PermissionDenied):
        await tasks.pause(alice_task.id, principal=VIEWER_ALICE)
    with pytest.raises(PermissionDenied):
        await tasks.delete(alice_task.id, principal=VIEWER_ALICE)


async def test_viewer_reads_own_tasks(tasks: TaskService, alice_task: Task) -> None:
    assert (await tasks.get(alice_task.id, principal=VIEWER_ALICE)).id == alice_task.id


async def test_worker_role_sees_no_tasks(tasks: TaskService, alice_task: Task) -> None:
    with pytest.raises(PermissionDenied):
        await tasks.get(alice_task.id, principal=WORKER_ROLE)
    with pytest.raises(PermissionDenied):
        await tasks.list(principal=WORKER_ROLE)


async def test_another_users_task_is_not_found_for_every_action(
    tasks: TaskService, alice_task: Task
) -> None:
    with pytest.raises(NotFound):
        await tasks.get(alice_task.id, principal=BOB)
    with pytest.raises(NotFound):
        await tasks.update(alice_task.id, {"description": "mine now"}, principal=BOB)
    with pytest.raises(NotFound):
        await tasks.pause(alice_task.id, principal=BOB)
    with pytest.raises(NotFound):
        await tasks.delete(alice_task.id, principal=BOB)
    with pytest.raises(NotFound):
        await tasks.schedule_preview(alice_task.id, principal=BOB)
    assert (await tasks.get(alice_task.id, principal=OPERATOR)).id == alice_task.id


async def test_list_is_scoped_to_the_owner_unless_the_role_sees_all(tasks: TaskService) -> None:
    for name in ("a1", "a2", "a3"):
        await tasks.create(task_spec(name), principal=ALICE)
    await tasks.create(task_spec("b1"), principal=BOB)
    alice_sees = await tasks.list(principal=ALICE)
    assert sorted(t.name for t in alice_sees.items) == ["a1", "a2", "a3"]
    assert (await tasks.list(principal=ALICE, owner_id="bob")).items == []
    everyone = await tasks.list(principal=OPERATOR)
    assert len(everyone.items) == 4
    only_bob = await tasks.list(principal=OPERATOR, owner_id="bob")
    assert [t.name for t in only_bob.items] == ["b1"]


async def test_list_pages_with_a_cursor_and_caps_the_limit(tasks: TaskService) -> None:
    for i in range(5):
        await tasks.create(task_spec(f"t{i}"), principal=ALICE)
    first = await tasks.list(principal=ALICE, limit=3)
    second = await tasks.list(principal=ALICE, limit=3, cursor=first.next_cursor)
    assert len(first.items) == 3
    assert len(second.items) == 2
    assert second.next_cursor is None
    with pytest.raises(ValidationError) as error:
        await tasks.list(principal=ALICE, limit=10_000)
    assert error.value.field == "limit"


async def test_update_changes_only_given_keys_and_bumps_the_version(
    tasks: TaskService, alice_task: Task, store: InMemoryStore
) -> None:
    updated = await tasks.update(
        alice_task.id, {"description": "daily", "retry": {"max_attempts": 5}}, principal=ALICE
    )
    stored = store.row("tasks", alice_task.id)
    assert stored.description == "daily"
    assert stored.retry.max_attempts == 5
    assert stored.params == {"argv": ["echo", "hi"]}
    assert stored.version == updated.version == 2


async def test_update_with_a_stale_expected_version_is_a_conflict(
    tasks: TaskService, alice_task: Task
) -> None:
    await tasks.update(alice_task.id, {"description": "first"}, principal=ALICE)
    with pytest.raises(Conflict) as error:
        await tasks.update(
            alice_task.id, {"description": "second"}, principal=ALICE, expected_version=1
        )
    assert error.value.field == "version"


async def test_update_reschedules_when_the_schedule_changes(
    tasks: TaskService, alice_task: Task, clock: FakeClock
) -> None:
    clock.advance(seconds=30)
    updated = await tasks.update(
        alice_task.id, {"schedule": {"interval_seconds": 3600}}, principal=ALICE
    )
    assert updated.next_run_at == datetime(2030, 3, 1, 13, 0, tzinfo=UTC)
    cleared = await tasks.update(alice_task.id, {"schedule": None}, principal=ALICE)
    assert cleared.next_run_at is None


async def test_update_refuses_server_fields_and_invalid_values(
    tasks: TaskService, alice_task: Task, store: InMemoryStore
) -> None:
    with pytest.raises(ValidationError) as forbidden:
        await tasks.update(alice_task.id, {"next_run_at": "2030-01-01T00:00:00Z"}, principal=ALICE)
    assert forbidden.value.field == "next_run_at"
    with pytest.raises(ValidationError) as invalid:
        await tasks.update(alice_task.id, {"priority": 42}, principal=ALICE)
    assert invalid.value.field == "priority"
    assert store.row("tasks", alice_task.id).version == 1


async def test_update_refuses_a_name_taken_by_another_task(
    tasks: TaskService, alice_task: Task
) -> None:
    await tasks.create(task_spec("taken"), principal=ALICE)
    with pytest.raises(AlreadyExists) as error:
        await tasks.update(alice_task.id, {"name": "taken"}, principal=ALICE)
    assert error.value.field == "name"


async def test_pause_and_resume_toggle_the_schedule(tasks: TaskService, clock: FakeClock) -> None:
    task = await tasks.create(task_spec(schedule={"interval_seconds": 60}), principal=ALICE)
    paused = await tasks.pause(task.id, principal=ALICE)
    assert paused.paused
    assert paused.next_run_at is None
    clock.advance(seconds=150)
    resumed = await tasks.resume(task.id, principal=ALICE)
    assert resumed.enabled
    assert resumed.next_run_at == START + timedelta(minutes=3)  # next slot after now
    assert resumed.version == 3


async def test_upstreams_must_exist_and_be_visible(tasks: TaskService) -> None:
    bobs = await tasks.create(task_spec("bobs"), principal=BOB)
    for missing in ("no-such-task", bobs.id):
        with pytest.raises(ValidationError) as error:
            await tasks.create(task_spec("child", depends_on=[missing]), principal=ALICE)
        assert error.value.field == "depends_on"
        assert "does not exist" in error.value.message


async def test_a_dependency_cycle_is_refused_naming_the_tasks(
    tasks: TaskService, store: InMemoryStore
) -> None:
    extract = await tasks.create(task_spec("extract"), principal=ALICE)
    transform = await tasks.create(task_spec("transform", depends_on=[extract.id]), principal=ALICE)
    load = await tasks.create(task_spec("load", depends_on=[transform.id]), principal=ALICE)
    with pytest.raises(DependencyCycle) as error:
        await tasks.update(extract.id, {"depends_on": [load.id]}, principal=ALICE)
    assert error.value.field == "depends_on"
    assert set(error.value.cycle) == {"extract", "transform", "load"}
    assert error.value.cycle[0] == error.value.cycle[-1]
    assert "extract" in error.value.message
    assert "load" in error.value.message
    assert store.row("tasks", extract.id).depends_on == ()


async def test_delete_is_refused_while_other_tasks_depend_on_it(
    tasks: TaskService, store: InMemoryStore
) -> None:
    upstream = await tasks.create(task_spec("upstream"), principal=ALICE)
    await tasks.create(task_spec("alices-child", depends_on=[upstream.id]), principal=ALICE)
    await tasks.create(task_spec("operators-child", depends_on=[upstream.id]), principal=OPERATOR)
    with pytest.raises(Conflict) as seen_all:
        await tasks.delete(upstream.id, principal=OPERATOR)
    assert "alices-child" in seen_all.value.message
    assert "operators-child" in seen_all.value.message
    with pytest.raises(Conflict) as seen_own:
        await tasks.delete(upstream.id, principal=ALICE)
    assert "alices-child" in seen_own.value.message
    assert "operators-child" not in seen_own.value.message  # never reveal others' tasks
    assert "1 task(s) you cannot see" in seen_own.value.message
    assert store.row("tasks", upstream.id) is not None


async def test_delete_removes_the_task_and_its_runs(
    tasks: TaskService, runs: RunService, alice_task: Task, store: InMemoryStore
) -> None:
    await runs.trigger(alice_task.id, principal=ALICE)
    await tasks.delete(alice_task.id, principal=ALICE)
    assert store.rows("tasks") == []
    assert store.rows("runs") == []
    with pytest.raises(NotFound):
        await tasks.get(alice_task.id, principal=ALICE)


async def test_schedule_preview_lists_fire_times_in_the_task_timezone(
    tasks: TaskService, uow_factory: object, store: InMemoryStore
) -> None:
    task = await tasks.create(task_spec(schedule=CRON_BERLIN), principal=ALICE)
    decision = SlotDecision(
        task_id=task.id,
        slot=START - timedelta(days=1),
        outcome=SlotOutcome.SKIPPED,
        at=START,
        reason=SkipReason.FORBID,
    )
    store.put("decisions", decision)
    preview = await tasks.schedule_preview(task.id, principal=ALICE, n=3)
    assert preview.timezone == "Europe/Berlin"
    assert [t.hour for t in preview.next_fire_times] == [2, 2, 2]
    assert [t.day for t in preview.next_fire_times] == [2, 3, 4]
    assert all(str(t.tzinfo) == "Europe/Berlin" for t in preview.next_fire_times)
    assert preview.next_fire_times[0] == datetime(2030, 3, 2, 1, 0, tzinfo=UTC)
    assert [d.reason for d in preview.recent_decisions] == [SkipReason.FORBID]


@pytest.mark.parametrize(
    ("cron", "rule"),
    [
        ("0 0 1,15 * MON", "day-of-month OR day-of-week (both restricted)"),
        (
            "0 0 */2 * MON",
            "day-of-month AND day-of-week (a field starting with '*' is unrestricted)",
        ),
    ],
)
async def test_schedule_preview_says_how_the_day_fields_combine(
    tasks: TaskService, cron: str, rule: str
) -> None:
    task = await tasks.create(task_spec(schedule={"cron": cron}), principal=ALICE)

    preview = await tasks.schedule_preview(task.id, principal=ALICE, n=1)

    assert preview.day_rule == rule


async def test_schedule_preview_of_an_interval_is_in_utc(tasks: TaskService) -> None:
    task = await tasks.create(task_spec(schedule={"interval_seconds": 600}), principal=ALICE)
    preview = await tasks.schedule_preview(task.id, principal=ALICE, n=2)
    assert preview.timezone == "UTC"
    assert preview.day_rule is None
    assert preview.next_fire_times == [
        START + timedelta(minutes=10),
        START + timedelta(minutes=20),
    ]


async def test_depends_on_names_resolve_to_visible_tasks_owner_first(tasks: TaskService) -> None:
    alices = await tasks.create(task_spec("extract"), principal=ALICE)
    await tasks.create(task_spec("extract"), principal=BOB)
    bobs_clean = await tasks.create(task_spec("clean"), principal=BOB)

    mine = await tasks.create(task_spec("load", depends_on=["extract"]), principal=ALICE)
    audit = await tasks.create(task_spec("audit", depends_on=["clean"]), principal=OPERATOR)
    # an operator editing alice's task: alice's "extract" first, so not ambiguous
    edited = await tasks.update(mine.id, {"depends_on": [alices.id, "clean"]}, principal=OPERATOR)
    renamed = await tasks.update(edited.id, {"depends_on": ["extract"]}, principal=OPERATOR)

    assert mine.depends_on == (alices.id,)
    assert audit.depends_on == (bobs_clean.id,)
    assert edited.depends_on == (alices.id, bobs_clean.id)
    assert renamed.depends_on == (alices.id,)
    with pytest.raises(ValidationError, match="give the task's id") as ambiguous:
        await tasks.create(task_spec("report", depends_on=["extract"]), principal=OPERATOR)
    assert ambiguous.value.field == "depends_on"
    with pytest.raises(ValidationError, match="does not exist"):
        await tasks.create(task_spec("peek", depends_on=["clean"]), principal=ALICE)


async def test_visible_returns_only_the_tasks_the_caller_may_see(
    tasks: TaskService, alice_task: Task
) -> None:
    bobs = await tasks.create(task_spec(name="bobs"), principal=BOB)
    ids = [alice_task.id, bobs.id, "missing", alice_task.id]
    assert set(await tasks.visible(ids, principal=ALICE)) == {alice_task.id}
    assert set(await tasks.visible(ids, principal=VIEWER_ALICE)) == {alice_task.id}
    assert set(await tasks.visible(ids, principal=OPERATOR)) == {alice_task.id, bobs.id}
    assert await tasks.visible([], principal=ALICE) == {}
    with pytest.raises(PermissionDenied):
        await tasks.visible(ids, principal=WORKER_ROLE)
