"""Tasks as code: apply a file of tasks (create, update, unchanged, prune), dry runs, export."""

from __future__ import annotations

from typing import Any

import pytest
from application_fixtures import ALICE, BOB, OPERATOR, VIEWER_ALICE, task_spec

from scheduler_application.accounts.access import Principal
from scheduler_application.accounts.teams import TeamService
from scheduler_application.errors import PermissionDenied
from scheduler_application.limits.service import LimitService
from scheduler_application.tasks.apply import PruneScope, TaskApplyService
from scheduler_application.tasks.service import TaskService
from scheduler_application.templates.service import TemplateService
from scheduler_application.testing import (
    OPEN_EXECUTOR_POLICY,
    FakeClock,
    InMemoryStore,
    InMemoryUnitOfWorkFactory,
)
from scheduler_domain.accounts import Role
from scheduler_domain.errors import ValidationError
from scheduler_domain.teams import TeamRole

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


@pytest.fixture
def limit_service(uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock) -> LimitService:
    return LimitService(uow_factory=uow_factory, clock=clock)


@pytest.fixture
def ops_applier(
    uow_factory: InMemoryUnitOfWorkFactory, tasks: TaskService, limit_service: LimitService
) -> TaskApplyService:
    return TaskApplyService(uow_factory=uow_factory, tasks=tasks, limits=limit_service)


VENDOR = {"name": "vendor-api", "rate": "100/s", "partition_by": "owner", "partition_rate": "5/m"}


async def test_a_file_defines_named_limits_its_tasks_reference_and_reapplying_changes_nothing(
    ops_applier: TaskApplyService, limit_service: LimitService, store: InMemoryStore
) -> None:
    document = {"limits": [VENDOR], "tasks": [task_spec("call", limits=["vendor-api"])]}
    plan = await ops_applier.apply(document, principal=OPERATOR, dry_run=True)
    assert [(c.kind, c.name, c.action) for c in plan.changes] == [
        ("limit", "vendor-api", "create"),
        ("task", "call", "create"),
    ]
    assert store.rows("shared_limits") == []  # a dry run changes nothing
    await ops_applier.apply(document, principal=OPERATOR)
    view = await limit_service.get("vendor-api", principal=OPERATOR)
    assert (str(view.limit.rate), str(view.limit.partition_rate)) == ("100/s", "5/m")
    assert view.use.tasks == 1
    again = await ops_applier.apply(document, principal=OPERATOR)
    assert {(c.kind, c.action) for c in again.changes} == {
        ("limit", "unchanged"),
        ("task", "unchanged"),
    }
    changed = {**document, "limits": [{**VENDOR, "rate": "50/s"}]}
    update = await ops_applier.apply(changed, principal=OPERATOR)
    [limit_change] = [c for c in update.changes if c.kind == "limit"]
    assert (limit_change.action, limit_change.fields) == ("update", {"rate": ("100/s", "50/s")})
    assert str((await limit_service.get("vendor-api", principal=OPERATOR)).limit.rate) == "50/s"


async def test_prune_deletes_limits_the_file_leaves_out_after_the_tasks_naming_them(
    ops_applier: TaskApplyService, store: InMemoryStore
) -> None:
    old = {"name": "old-api", "rate": "1/s"}
    await ops_applier.apply(
        {"limits": [VENDOR, old], "tasks": [task_spec("legacy", limits=["old-api"])]},
        principal=OPERATOR,
    )
    keep_tasks = {"limits": [VENDOR], "tasks": [task_spec("legacy", limits=["old-api"])]}
    with pytest.raises(ValidationError) as refused:  # the file prunes what it still names
        await ops_applier.apply(keep_tasks, principal=OPERATOR, prune=True)
    assert refused.value.field == "tasks[0].limits[0]"
    result = await ops_applier.apply(
        {"limits": [VENDOR], "tasks": []}, principal=OPERATOR, prune=True
    )
    assert [(c.kind, c.name, c.action) for c in result.changes][-2:] == [
        ("task", "legacy", "delete"),
        ("limit", "old-api", "delete"),
    ]
    assert [row.name for row in store.rows("shared_limits")] == ["vendor-api"]
    untouched = await ops_applier.apply({"tasks": []}, principal=OPERATOR, prune=True)
    assert [c for c in untouched.changes if c.kind == "limit"] == []  # no section: no prune


async def test_a_file_naming_a_limit_nobody_defined_is_refused_before_any_change(
    ops_applier: TaskApplyService, store: InMemoryStore
) -> None:
    document = {
        "limits": [VENDOR],
        "tasks": [task_spec("a", limits=["vendor-api"]), task_spec("b", limits=["vendor-ap"])],
    }
    with pytest.raises(ValidationError) as refused:
        await ops_applier.apply(document, principal=OPERATOR)
    assert (refused.value.field, refused.value.message) == (
        "tasks[1].limits[0]",
        "no limit named 'vendor-ap'",
    )
    assert store.rows("shared_limits") == []
    assert store.rows("tasks") == []
    with pytest.raises(ValidationError) as bad:
        await ops_applier.apply({"limits": [{"name": "x", "rate": "fast"}]}, principal=OPERATOR)
    assert bad.value.field == "limits[0].rate"
    with pytest.raises(PermissionDenied):  # limits are operators' and admins'
        await ops_applier.apply({"limits": [VENDOR]}, principal=ALICE)


async def test_a_name_the_creator_has_in_two_teams_must_be_given_its_team(
    applier: TaskApplyService,
    tasks: TaskService,
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
) -> None:
    team = await TeamService(uow_factory=uow_factory, clock=clock).create("ops", principal=ALICE)
    alice = Principal(
        "alice", Role.USER, teams={"alice": TeamRole.ADMIN, team.team.id: TeamRole.ADMIN}
    )
    await tasks.create(task_spec("report"), principal=alice)
    in_ops = await tasks.create(task_spec("report", team="ops"), principal=alice)
    with pytest.raises(ValidationError) as ambiguous:
        await applier.apply(_file(task_spec("report")), principal=alice)
    assert ambiguous.value.field == "tasks[0].team"
    plan = await applier.apply(_file(task_spec("report", team="ops")), principal=alice)
    assert [(c.name, c.action, c.task_id) for c in plan.changes] == [
        ("report", "unchanged", in_ops.id)
    ]


async def test_a_files_template_may_name_a_limit_the_same_file_defines(
    uow_factory: InMemoryUnitOfWorkFactory,
    tasks: TaskService,
    limit_service: LimitService,
    clock: FakeClock,
) -> None:
    templates = TemplateService(
        uow_factory=uow_factory, clock=clock, executor_policy=OPEN_EXECUTOR_POLICY
    )
    applier = TaskApplyService(
        uow_factory=uow_factory, tasks=tasks, templates=templates, limits=limit_service
    )
    template = {"name": "ping", "executor": "noop", "policies": {"limits": ["vendor-api"]}}
    with pytest.raises(ValidationError) as refused:
        await applier.apply({"templates": [template]}, principal=OPERATOR)
    assert refused.value.field == "templates[0].policies.limits[0]"
    document = {"limits": [VENDOR], "templates": [template]}
    result = await applier.apply(document, principal=OPERATOR)
    assert [(c.kind, c.action) for c in result.changes] == [
        ("limit", "create"),
        ("template", "create"),
    ]
    assert (await templates.get("ping", principal=OPERATOR)).policies["limits"] == ["vendor-api"]
