"""Tasks as code: apply a file of tasks (create, update, unchanged, prune), dry runs, export."""

from __future__ import annotations

from typing import Any

import pytest
from application_fixtures import ALICE, BOB, VIEWER_ALICE, task_spec

from scheduler_application.errors import PermissionDenied
from scheduler_application.tasks.apply import PruneScope, TaskApplyService
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import InMemoryUnitOfWorkFactory
from scheduler_domain.errors import ValidationError

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def applier(uow_factory: InMemoryUnitOfWorkFactory, tasks: TaskService) -> TaskApplyService:
    return TaskApplyService(uow_factory=uow_factory, tasks=tasks)


def _file(*specs: dict[str, Any]) -> dict[str, Any]:
    return {"tasks": list(specs)}


def _actions(result: Any) -> dict[str, str]:
    return {change.name: change.action for change in result.changes}


async def test_a_file_creates_its_tasks_upstreams_first(
    applier: TaskApplyService, tasks: TaskService
) -> None:
    document = _file(
        task_spec("report", depends_on=["extract"], schedule={"cron": "0 3 * * *"}),
        task_spec("extract", schedule={"cron": "0 2 * * *"}),
    )
    result = await applier.apply(document, principal=ALICE)
    assert [(c.name, c.action) for c in result.changes] == [
        ("extract", "create"),
        ("report", "create"),
    ]
    page = await tasks.list(principal=ALICE)
    by_name = {t.name: t for t in page.items}
    assert by_name["report"].depends_on == (by_name["extract"].id,)


async def test_export_then_apply_is_a_no_op(applier: TaskApplyService, tasks: TaskService) -> None:
    await tasks.create(task_spec("extract", retry={"max_attempts": 4}), principal=ALICE)
    await tasks.create(
        task_spec("report", depends_on=["extract"], rate_limit="5/m", labels=["gpu"]),
        principal=ALICE,
    )
    exported = await applier.export(principal=ALICE)
    assert [spec["name"] for spec in exported] == ["extract", "report"]
    assert exported[1]["depends_on"] == ["extract"]
    result = await applier.apply({"tasks": exported}, principal=ALICE, prune=True)
    assert _actions(result) == {"extract": "unchanged", "report": "unchanged"}


async def test_a_changed_file_is_a_precise_diff_and_left_out_fields_return_to_defaults(
    applier: TaskApplyService, tasks: TaskService
) -> None:
    created = await tasks.create(
        task_spec("extract", priority=9, retry={"max_attempts": 4}), principal=ALICE
    )
    plan = await applier.apply(
        _file(task_spec("extract", retry={"max_attempts": 2})), principal=ALICE, dry_run=True
    )
    (change,) = plan.changes
    assert change.action == "update"
    assert change.task_id == created.id
    assert change.fields == {"priority": (9, 5), "retry.max_attempts": (4, 2)}
    # A dry run changes nothing.
    assert (await tasks.get(created.id, principal=ALICE)).priority == 9

    await applier.apply(_file(task_spec("extract", retry={"max_attempts": 2})), principal=ALICE)
    after = await tasks.get(created.id, principal=ALICE)
    assert (after.priority, after.retry.max_attempts) == (5, 2)
    again = await applier.apply(
        _file(task_spec("extract", retry={"max_attempts": 2})), principal=ALICE
    )
    assert _actions(again) == {"extract": "unchanged"}


async def test_prune_deletes_only_within_its_scope_and_only_the_callers_tasks(
    applier: TaskApplyService, tasks: TaskService
) -> None:
    for name in ("team-a-one", "team-a-two", "other"):
        await tasks.create(task_spec(name), principal=ALICE)
    bobs = await tasks.create(task_spec("team-a-bob"), principal=BOB)

    result = await applier.apply(
        _file(task_spec("team-a-one")),
        principal=ALICE,
        prune=True,
        scope=PruneScope(name_prefix="team-a-"),
    )
    assert _actions(result) == {"team-a-one": "unchanged", "team-a-two": "delete"}
    names = {t.name for t in (await tasks.list(principal=ALICE)).items}
    assert names == {"team-a-one", "other"}
    assert (await tasks.get(bobs.id, principal=BOB)).name == "team-a-bob"

    # Without prune, nothing the file leaves out is touched.
    result = await applier.apply(_file(task_spec("new")), principal=ALICE)
    assert _actions(result) == {"new": "create"}
    assert "other" in {t.name for t in (await tasks.list(principal=ALICE)).items}


async def test_prune_by_label_and_dependents_go_before_their_upstreams(
    applier: TaskApplyService, tasks: TaskService
) -> None:
    await tasks.create(task_spec("up", labels=["etl"]), principal=ALICE)
    await tasks.create(task_spec("down", labels=["etl"], depends_on=["up"]), principal=ALICE)
    await tasks.create(task_spec("kept"), principal=ALICE)
    result = await applier.apply(
        _file(task_spec("kept")), principal=ALICE, prune=True, scope=PruneScope(label="etl")
    )
    assert [(c.name, c.action) for c in result.changes] == [
        ("kept", "unchanged"),
        ("down", "delete"),
        ("up", "delete"),
    ]
    assert {t.name for t in (await tasks.list(principal=ALICE)).items} == {"kept"}


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"tasks": [task_spec("a", priority="high")]}, "tasks[0].priority"),
        ({"tasks": [task_spec("a"), task_spec("a")]}, "tasks[1].name"),
        ({"tasks": [task_spec("a", secret_env={"T": "x"})]}, "tasks[0].secret_env"),
        ({"tasks": [task_spec("a", schedule={"cron": "61 * * * *"})]}, "tasks[0].schedule"),
        ({"tasks": "nope"}, "tasks"),
        ({"tasks": [], "extra": 1}, "extra"),
        ({"tasks": [5]}, "tasks[0]"),
        (
            {"tasks": [task_spec("a", depends_on=["b"]), task_spec("b", depends_on=["a"])]},
            "depends_on",
        ),
    ],
)
async def test_a_bad_file_changes_nothing_and_names_the_field(
    applier: TaskApplyService, tasks: TaskService, document: dict[str, Any], field: str
) -> None:
    await tasks.create(task_spec("existing"), principal=ALICE)
    with pytest.raises(ValidationError) as raised:
        await applier.apply(document, principal=ALICE, prune=True)
    assert raised.value.field is not None
    assert raised.value.field.startswith(field), raised.value.field
    assert {t.name for t in (await tasks.list(principal=ALICE)).items} == {"existing"}


async def test_a_viewer_cannot_apply(applier: TaskApplyService) -> None:
    with pytest.raises(PermissionDenied):
        await applier.apply(_file(task_spec("a")), principal=VIEWER_ALICE)
