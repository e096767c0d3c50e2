"""Templates and subscriptions with the in-memory fakes: who may do what, parameters checked
against the template's schema with the field named, schedule bounds, a template change
reaching every subscription while its subscriber's parameters stay, and what runs record."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from application_fixtures import ALICE, BOB, OPERATOR, START, VIEWER_ALICE

from scheduler_application.accounts.access import Principal
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.errors import Conflict, NotFound, PermissionDenied
from scheduler_application.execution.service import ExecutionService
from scheduler_application.runs.batch_trigger import BatchTrigger, TriggerItem
from scheduler_application.runs.scheduling import ScheduleFiring
from scheduler_application.runs.service import RunService
from scheduler_application.tasks.apply import TaskApplyService
from scheduler_application.tasks.service import TaskService
from scheduler_application.templates.param_schema import MAX_DEPTH, validate_params
from scheduler_application.templates.service import TemplateService
from scheduler_application.testing import (
    OPEN_EXECUTOR_POLICY,
    FakeClock,
    InMemoryStore,
    InMemoryUnitOfWorkFactory,
)
from scheduler_domain.accounts import Role, User
from scheduler_domain.errors import ValidationError
from scheduler_domain.template import Template
from scheduler_domain.worker import Worker

ADMIN = Principal("root", Role.ADMIN)

WEATHER: dict[str, Any] = {
    "name": "weather",
    "description": "fetch the weather of a city",
    "executor": "http",
    "params": {
        "url": "https://api.example.com/weather?city={{city}}&units={{units}}",
        "method": "GET",
        "expected_status": "{{expect}}",
    },
    "params_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "minLength": 1},
            "units": {"enum": ["metric", "imperial"], "default": "metric"},
            "expect": {"type": "integer", "default": 200},
        },
        "required": ["city"],
        "additionalProperties": False,
    },
    "schedule": {"interval_seconds": 3600},
    "schedule_bounds": {"min_interval_seconds": 300},
    "policies": {"queue": "vendor", "priority": 3, "retry": {"max_attempts": 2}},
}


@pytest.fixture
def templates(uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock) -> TemplateService:
    return TemplateService(
        uow_factory=uow_factory, clock=clock, executor_policy=OPEN_EXECUTOR_POLICY
    )


@pytest.fixture
async def weather(templates: TemplateService) -> Template:
    return await templates.create(WEATHER, principal=OPERATOR)


def _field(error: pytest.ExceptionInfo[Any]) -> str | None:
    return error.value.field  # type: ignore[no-any-return]


# -- managing templates ----------------------------------------------------------------------


@pytest.mark.parametrize("principal", [ALICE, VIEWER_ALICE])
async def test_only_admins_and_operators_manage_templates(
    templates: TemplateService, weather: Template, principal: Principal
) -> None:
    with pytest.raises(PermissionDenied):
        await templates.create({**WEATHER, "name": "other"}, principal=principal)
    with pytest.raises(PermissionDenied):
        await templates.update(weather.id, {"description": "x"}, principal=principal)
    with pytest.raises(PermissionDenied):
        await templates.delete(weather.id, principal=principal)
    assert (await templates.get(weather.id, principal=principal)).name == "weather"
    created = await templates.create({**WEATHER, "name": "by-admin"}, principal=ADMIN)
    assert created.version == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"params_schema": {"type": "object", "properties": {"city": {"type": "town"}}}},
         "params_schema.properties.city.type"),
        ({"params_schema": {"$ref": "https://schemas.example.com/city.json"}},
         "params_schema.$ref"),
        ({"params_schema": {"type": "string"}}, "params_schema.type"),
        ({"params": {"url": "{{town}}"}}, "params"),
        ({"policies": {"priority": 12}}, "policies.priority"),
        ({"policies": {"executor": "shell"}}, "policies.executor"),
        ({"schedule": {"interval_seconds": 60}}, "schedule"),
        ({"schedule_bounds": {"min_interval_seconds": -1}}, "schedule_bounds.min_interval_seconds"),
        ({"executor": "Shell!"}, "executor"),
        ({"version": 3}, "version"),
    ],
)  # fmt: skip
async def test_a_bad_template_is_refused_naming_the_field(
    templates: TemplateService, change: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        await templates.create({**WEATHER, **change}, principal=OPERATOR)
    assert _field(refused) == field


async def test_a_huge_or_deeply_nested_schema_is_refused(templates: TemplateService) -> None:
    huge = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(5_000)}}
    with pytest.raises(ValidationError) as refused:
        await templates.create({**WEATHER, "params_schema": huge}, principal=OPERATOR)
    assert "bytes" in refused.value.message
    deep: dict[str, Any] = {"type": "object"}
    for _ in range(10_000):  # deeper than any recursion would survive
        deep = {"type": "object", "properties": {"a": deep}}
    with pytest.raises(ValidationError) as refused:
        await templates.create({**WEATHER, "params_schema": deep}, principal=OPERATOR)
    assert f"deeper than {MAX_DEPTH}" in refused.value.message


async def test_a_shell_command_line_may_not_hold_placeholders(templates: TemplateService) -> None:
    spec = {
        "name": "greet",
        "executor": "shell",
        "params": {"shell": True, "command": "echo {{who}}"},
        "params_schema": {"type": "object", "properties": {"who": {"type": "string"}}},
    }
    with pytest.raises(ValidationError) as refused:
        await templates.create(spec, principal=OPERATOR)
    assert _field(refused) == "params.command"
    spec["params"] = {"argv": ["echo", "{{who}}"]}
    assert (await templates.create(spec, principal=OPERATOR)).executor == "shell"


@pytest.fixture
def listener() -> Iterator[tuple[str, list[object]]]:
    """A local HTTP port that records every connection made to it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    accepted: list[object] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            accepted.append(connection)
            connection.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/schema.json", accepted
    stop.set()
    thread.join(timeout=5)
    server.close()


def test_a_remote_reference_is_never_fetched(listener: tuple[str, list[object]]) -> None:
    """Even a schema that never went through the creation check (a row written by hand) makes
    no connection: the validator's registry refuses every retrieval."""
    url, accepted = listener
    schema = {"type": "object", "properties": {"city": {"$ref": url}}}
    with pytest.raises(ValidationError) as refused:
        validate_params(schema, {"city": "Berlin"})
    assert refused.value.field == "params_schema"
    assert accepted == []


# -- subscribing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "params.city"),
        ({"city": ""}, "params.city"),
        ({"city": 7}, "params.city"),
        ({"city": "Oslo", "units": "kelvin"}, "params.units"),
        ({"city": "Oslo", "country": "NO"}, "params.country"),
        ({"city": "Oslo", "expect": 99}, "params.expect"),  # the executor's check, blamed
    ],
)
async def test_subscription_params_are_checked_naming_the_field(
    templates: TemplateService, weather: Template, params: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        await templates.subscribe(weather.id, {"params": params}, principal=ALICE)
    assert _field(refused) == field


async def test_a_subscription_is_the_users_task_filled_in_from_the_template(
    templates: TemplateService, tasks: TaskService, weather: Template
) -> None:
    task = await templates.subscribe(
        weather.id, {"name": "oslo", "params": {"city": "Oslo"}}, principal=ALICE
    )
    assert task.owner_id == ALICE.subject_id
    assert task.params["url"] == "https://api.example.com/weather?city=Oslo&units=metric"
    assert task.params["expected_status"] == 200  # a whole placeholder keeps the value's type
    assert (task.queue, task.priority, task.retry.max_attempts) == ("vendor", 3, 2)
    assert (task.template_id, task.template_version) == (weather.id, 1)
    assert task.template_params == {"city": "Oslo"}
    assert task.next_run_at == START + timedelta(hours=1)
    listed = await tasks.list(principal=ALICE)
    assert [t.name for t in listed.items] == ["oslo"]
    paused = await tasks.pause(task.id, principal=ALICE)
    assert paused.paused
    await tasks.delete(task.id, principal=ALICE)
    assert (await tasks.list(principal=ALICE)).items == []


@pytest.mark.parametrize(
    ("schedule", "allowed"),
    [
        ({"interval_seconds": 299}, False),
        ({"interval_seconds": 300}, True),
        ({"cron": "* * * * *"}, False),
        ({"cron": "*/5 * * * *"}, True),
        ({"cron": "0,2 * * * *"}, False),  # two minutes apart at the top of every hour
        ({"cron": "0 9,17 * * *"}, True),
        ({"cron": "*/30 * * * * *"}, False),  # a seconds field
        ({"cron": "0 1 * * *", "timezone": "Europe/Berlin", "dst_fold": "both"}, False),
        ({"at": "2030-04-01T00:00:00Z"}, True),
    ],
)
async def test_a_schedule_must_be_within_the_templates_bounds(
    templates: TemplateService, weather: Template, schedule: dict[str, Any], allowed: bool
) -> None:
    body = {"params": {"city": "Oslo"}, "schedule": schedule}
    if allowed:
        task = await templates.subscribe(weather.id, body, principal=ALICE)
        assert task.schedule is not None
        return
    with pytest.raises(ValidationError) as refused:
        await templates.subscribe(weather.id, body, principal=ALICE)
    assert str(_field(refused)).startswith("schedule")


async def test_a_template_may_keep_subscribers_on_its_schedule(templates: TemplateService) -> None:
    fixed = await templates.create(
        {**WEATHER, "name": "fixed", "schedule_bounds": {"allow_custom": False}},
        principal=OPERATOR,
    )
    body = {"params": {"city": "Oslo"}, "schedule": {"interval_seconds": 7200}}
    with pytest.raises(ValidationError) as refused:
        await templates.subscribe(fixed.id, body, principal=ALICE)
    assert _field(refused) == "schedule"


async def test_viewers_cannot_subscribe(templates: TemplateService, weather: Template) -> None:
    with pytest.raises(PermissionDenied):
        await templates.subscribe(weather.id, {"params": {"city": "x"}}, principal=VIEWER_ALICE)


async def _users(uow_factory: InMemoryUnitOfWorkFactory, *names: tuple[str, Role]) -> None:
    async with uow_factory() as uow:
        for name, role in names:
            await uow.users.add(
                User(
                    id=name,
                    username=name,
                    password_hash="-",
                    role=role,
                    created_at=START,
                    updated_at=START,
                )
            )
        await uow.commit()


async def test_bulk_subscription_answers_each_item(
    templates: TemplateService,
    weather: Template,
    uow_factory: InMemoryUnitOfWorkFactory,
    tasks: TaskService,
) -> None:
    await _users(uow_factory, ("ann", Role.USER), ("ben", Role.USER), ("vic", Role.VIEWER))
    answers = await templates.subscribe_many(
        weather.id,
        [
            {"owner": "ann", "params": {"city": "Oslo"}},
            {"owner": "ben", "params": {"city": 3}},
            {"owner": "nobody", "params": {"city": "Rome"}},
            {"owner": "vic", "params": {"city": "Rome"}},
            {"owner": "ben", "params": {"city": "Rome"}, "schedule": {"interval_seconds": 60}},
            {"owner": "ben", "params": {"city": "Rome"}},
        ],
        principal=ADMIN,
    )
    assert [a.status for a in answers] == [
        "created", "refused", "refused", "refused", "refused", "created",
    ]  # fmt: skip
    assert [a.field for a in answers[1:5]] == ["params.city", "owner", "owner", "schedule"]
    owners = {t.owner_id for t in (await tasks.list(principal=ADMIN)).items}
    assert owners == {"ann", "ben"}
    everyone = await templates.subscriptions(weather.id, principal=ADMIN)
    assert sorted(t.owner_id for t in everyone.items) == ["ann", "ben"]
    assert (await templates.subscriptions(weather.id, principal=ALICE)).items == []
    with pytest.raises(PermissionDenied):
        await templates.subscribe_many(weather.id, [{"params": {"city": "x"}}], principal=ALICE)
    with pytest.raises(PermissionDenied):  # nor on someone else's behalf one by one
        await templates.subscribe(
            weather.id, {"owner": "ann", "params": {"city": "x"}}, principal=ALICE
        )


# -- changing a template ----------------------------------------------------------------------


async def test_a_template_change_reaches_every_subscription_and_keeps_their_params(
    templates: TemplateService, tasks: TaskService, weather: Template, store: InMemoryStore
) -> None:
    oslo = await templates.subscribe(weather.id, {"params": {"city": "Oslo"}}, principal=ALICE)
    rome = await templates.subscribe(
        weather.id,
        {"params": {"city": "Rome", "units": "imperial"}, "schedule": {"interval_seconds": 900}},
        principal=BOB,
    )
    changed = await templates.update(
        weather.id,
        {
            "params": {"url": "https://v2.example.com/w/{{city}}?u={{units}}", "method": "POST"},
            "schedule": {"interval_seconds": 7200},
            "policies": {"priority": 7, "timeout_seconds": 20},
        },
        principal=OPERATOR,
    )
    assert changed.version == 2
    logged = [e.entry for e in store.rows("event_log") if e.entry.kind.startswith("template.")]
    assert [(e.kind, e.detail["version"]) for e in logged] == [
        ("template.created", 1),
        ("template.updated", 2),
    ]
    assert logged[1].detail["subscriptions"] == 2
    oslo_now = await tasks.get(oslo.id, principal=ALICE)
    rome_now = await tasks.get(rome.id, principal=BOB)
    assert oslo_now.params == {"url": "https://v2.example.com/w/Oslo?u=metric", "method": "POST"}
    assert rome_now.params["url"] == "https://v2.example.com/w/Rome?u=imperial"
    assert (oslo_now.template_params, rome_now.template_params) == (
        {"city": "Oslo"},
        {"city": "Rome", "units": "imperial"},
    )
    assert {oslo_now.template_version, rome_now.template_version} == {2}
    assert (oslo_now.priority, oslo_now.timeout) == (7, timedelta(seconds=20))
    assert oslo_now.queue == "vendor"  # a policy the patch left alone
    assert oslo_now.next_run_at == START + timedelta(hours=2)  # follows the default schedule
    assert rome_now.schedule is not None
    assert rome_now.next_run_at == START + timedelta(minutes=15)


async def test_a_change_that_would_break_a_subscription_changes_nothing(
    templates: TemplateService, tasks: TaskService, weather: Template
) -> None:
    oslo = await templates.subscribe(weather.id, {"params": {"city": "Oslo"}}, principal=ALICE)
    schema = {**WEATHER["params_schema"], "properties": {
        **WEATHER["params_schema"]["properties"], "city": {"enum": ["Rome"]}}}  # fmt: skip
    with pytest.raises(Conflict) as refused:
        await templates.update(
            weather.id, {"params_schema": schema, "description": "v2"}, principal=OPERATOR
        )
    assert refused.value.field == "subscriptions"
    assert "params.city" in refused.value.message
    assert (await templates.get(weather.id, principal=ALICE)).version == 1
    assert (await tasks.get(oslo.id, principal=ALICE)).version == oslo.version


async def test_a_template_with_subscriptions_cannot_be_deleted(
    templates: TemplateService, tasks: TaskService, weather: Template
) -> None:
    oslo = await templates.subscribe(weather.id, {"params": {"city": "Oslo"}}, principal=ALICE)
    with pytest.raises(Conflict):
        await templates.delete(weather.id, principal=OPERATOR)
    await tasks.delete(oslo.id, principal=ALICE)
    await templates.delete(weather.id, principal=OPERATOR)
    with pytest.raises(NotFound):
        await templates.get(weather.id, principal=ALICE)


async def test_the_template_owns_what_it_decides_of_a_subscription(
    templates: TemplateService, tasks: TaskService, weather: Template
) -> None:
    oslo = await templates.subscribe(weather.id, {"params": {"city": "Oslo"}}, principal=ALICE)
    with pytest.raises(ValidationError) as refused:
        await tasks.update(oslo.id, {"priority": 9}, principal=ALICE)
    assert _field(refused) == "priority"
    with pytest.raises(ValidationError) as refused:
        await tasks.update(oslo.id, {"schedule": {"interval_seconds": 10}}, principal=ALICE)
    assert _field(refused) == "schedule"
    renamed = await tasks.update(oslo.id, {"name": "oslo-weather"}, principal=ALICE)
    assert renamed.name == "oslo-weather"
    changed = await templates.update_subscription(
        oslo.id, {"params": {"city": "Bergen", "units": "imperial"}}, principal=ALICE
    )
    assert changed.params["url"].endswith("city=Bergen&units=imperial")
    assert changed.template_params == {"city": "Bergen", "units": "imperial"}
    with pytest.raises(ValidationError) as refused:
        await templates.update_subscription(oslo.id, {"params": {"city": None}}, principal=ALICE)
    assert _field(refused) == "params.city"
    with pytest.raises(NotFound):
        await templates.update_subscription(oslo.id, {"params": {}}, principal=BOB)


# -- runs ---------------------------------------------------------------------------------------


async def test_a_trigger_with_params_is_checked_and_the_run_keeps_what_it_ran_with(
    templates: TemplateService,
    runs: RunService,
    relay: RunRelay,
    execution: ExecutionService,
    worker: Worker,
    weather: Template,
) -> None:
    oslo = await templates.subscribe(weather.id, {"params": {"city": "Oslo"}}, principal=ALICE)
    with pytest.raises(ValidationError) as refused:
        await runs.trigger(oslo.id, principal=ALICE, params={"units": "kelvin"})
    assert _field(refused) == "params.units"
    await templates.update(weather.id, {"description": "v2"}, principal=OPERATOR)
    run = await runs.trigger(oslo.id, principal=ALICE, params={"units": "imperial"})
    assert (run.template_id, run.template_version) == (weather.id, 2)
    assert run.run_params == {"city": "Oslo", "units": "imperial"}
    assert run.params is not None
    assert run.params["url"].endswith("city=Oslo&units=imperial")
    claim = await execution.claim(run.id, worker_id=worker.id)
    assert claim is not None
    assert claim.params["url"].endswith("city=Oslo&units=imperial")
    plain = await runs.trigger(oslo.id, principal=ALICE)
    assert plain.run_params == {"city": "Oslo"}
    assert plain.params is not None
    assert plain.params["url"].endswith("units=metric")


async def test_a_run_keeps_the_template_version_it_was_made_from(
    templates: TemplateService,
    runs: RunService,
    execution: ExecutionService,
    worker: Worker,
    weather: Template,
) -> None:
    oslo = await templates.subscribe(weather.id, {"params": {"city": "Oslo"}}, principal=ALICE)
    run = await runs.trigger(oslo.id, principal=ALICE)
    await templates.update(
        weather.id, {"params": {"url": "https://v2.example.com/{{city}}"}}, principal=OPERATOR
    )
    claim = await execution.claim(run.id, worker_id=worker.id)
    assert claim is not None
    assert claim.run.template_version == 1
    assert claim.params["url"].startswith("https://api.example.com/weather")
    later = await runs.trigger(oslo.id, principal=ALICE)
    assert later.template_version == 2


async def test_a_plain_task_takes_params_its_executor_accepts(
    runs: RunService, execution: ExecutionService, worker: Worker, tasks: TaskService
) -> None:
    task = await tasks.create(
        {"name": "echo", "executor": "shell", "params": {"argv": ["echo", "hi"]}}, principal=ALICE
    )
    with pytest.raises(ValidationError) as refused:
        await runs.trigger(task.id, principal=ALICE, params={"argv": "echo bye"})
    assert _field(refused) == "params.argv"
    run = await runs.trigger(task.id, principal=ALICE, params={"argv": ["echo", "bye"]})
    assert (run.run_params, run.params) == ({"argv": ["echo", "bye"]}, {"argv": ["echo", "bye"]})
    claim = await execution.claim(run.id, worker_id=worker.id)
    assert claim is not None
    assert claim.params == {"argv": ["echo", "bye"]}
    untouched = await runs.trigger(task.id, principal=ALICE)
    assert (untouched.params, untouched.run_params) == (None, None)


async def test_a_batch_refuses_only_the_items_with_bad_params(
    templates: TemplateService,
    weather: Template,
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
    relay: RunRelay,
    store: InMemoryStore,
) -> None:
    oslo = await templates.subscribe(weather.id, {"params": {"city": "Oslo"}}, principal=ALICE)
    batch = BatchTrigger(uow_factory=uow_factory, clock=clock, relay=relay)
    answers = await batch.trigger(
        [
            TriggerItem(task_id=oslo.id, params={"city": "Rome"}),
            TriggerItem(task_id=oslo.id, params={"units": "kelvin"}, idempotency_key="k"),
            TriggerItem(task_id=oslo.id, params={"city": ""}),
            TriggerItem(task_id=oslo.id, idempotency_key="k"),
        ],
        principal=ALICE,
    )
    assert [a.status for a in answers] == ["created", "refused", "refused", "created"]
    assert [a.field for a in answers] == [None, "params.units", "params.city", None]
    assert answers[0].run is not None
    assert answers[0].run.run_params == {"city": "Rome"}
    assert len(store.tables["runs"]) == 2


# -- templates as code ---------------------------------------------------------------------------


async def test_templates_are_applied_from_a_tasks_file(
    templates: TemplateService,
    tasks: TaskService,
    uow_factory: InMemoryUnitOfWorkFactory,
) -> None:
    applier = TaskApplyService(uow_factory=uow_factory, tasks=tasks, templates=templates)
    document = {"templates": [WEATHER], "tasks": []}
    with pytest.raises(PermissionDenied):
        await applier.apply(document, principal=ALICE)
    with pytest.raises(ValidationError) as refused:
        await applier.apply(
            {"templates": [{**WEATHER, "params_schema": {"type": 3}}]}, principal=OPERATOR
        )
    assert _field(refused) == "templates[0].params_schema.type"

    first = await applier.apply(document, principal=OPERATOR)
    assert [(c.kind, c.action) for c in first.changes] == [("template", "create")]
    oslo = await templates.subscribe("weather", {"params": {"city": "Oslo"}}, principal=ALICE)
    again = await applier.apply(document, principal=OPERATOR)
    assert [c.action for c in again.changes] == ["unchanged"]

    without_retry = {**WEATHER, "policies": {"queue": "vendor", "priority": 6}}
    plan = await applier.apply({"templates": [without_retry]}, principal=OPERATOR, dry_run=True)
    assert set(plan.changes[0].fields) == {"policies"}
    assert (await templates.get("weather", principal=ALICE)).version == 1  # a dry run
    await applier.apply({"templates": [without_retry]}, principal=OPERATOR)
    changed = await templates.get("weather", principal=ALICE)
    assert (changed.version, changed.policies) == (2, {"queue": "vendor", "priority": 6})
    task = await tasks.get(oslo.id, principal=ALICE)
    assert (task.priority, task.retry.max_attempts, task.template_version) == (6, 1, 2)


async def test_a_scheduled_run_of_a_subscription_records_its_template_version(
    templates: TemplateService,
    weather: Template,
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
    relay: RunRelay,
    store: InMemoryStore,
) -> None:
    oslo = await templates.subscribe(
        weather.id,
        {"params": {"city": "Oslo"}, "schedule": {"interval_seconds": 600}},
        principal=ALICE,
    )
    await templates.update(weather.id, {"description": "v2"}, principal=OPERATOR)
    clock.set(START + timedelta(minutes=10))
    firing = ScheduleFiring(uow_factory=uow_factory, clock=clock, relay=relay)
    assert (await firing.fire_due_tasks()).fired == 1
    [run] = [r for r in store.rows("runs") if r.task_id == oslo.id]
    assert (run.template_id, run.template_version) == (weather.id, 2)
    assert run.run_params == {"city": "Oslo"}
    assert run.params is not None
    assert run.params["url"].endswith("city=Oslo&units=metric")


async def test_export_writes_subscriptions_as_subscriptions_and_applying_it_recreates_them(
    templates: TemplateService,
    weather: Template,
    tasks: TaskService,
    uow_factory: InMemoryUnitOfWorkFactory,
) -> None:
    applier = TaskApplyService(uow_factory=uow_factory, tasks=tasks, templates=templates)
    extract = await tasks.create(
        {"name": "extract", "executor": "noop", "params": {}}, principal=ALICE
    )
    await templates.subscribe(
        "weather", {"name": "oslo", "params": {"city": "Oslo"}}, principal=ALICE
    )
    rome = await templates.subscribe(
        "weather",
        {"name": "rome", "params": {"city": "Rome", "units": "imperial"},
         "schedule": {"interval_seconds": 900}},
        principal=ALICE,
    )  # fmt: skip
    await tasks.update(rome.id, {"depends_on": ["extract"]}, principal=ALICE)

    exported = await applier.export_file(principal=ALICE)
    assert [t["name"] for t in exported["tasks"]] == ["extract"]
    assert exported["subscriptions"] == [
        {"name": "oslo", "template": "weather", "params": {"city": "Oslo"}, "enabled": True,
         "depends_on": [], "trigger_rule": "all_success"},
        {"name": "rome", "template": "weather", "params": {"city": "Rome", "units": "imperial"},
         "enabled": True, "depends_on": ["extract"], "trigger_rule": "all_success",
         "schedule": {"interval_seconds": 900}},
    ]  # fmt: skip
    again = await applier.apply(exported, principal=ALICE, prune=True)
    assert {(c.kind, c.action) for c in again.changes} == {
        ("task", "unchanged"),
        ("subscription", "unchanged"),
    }

    for task in (await tasks.list(principal=ALICE)).items:
        if task.id != extract.id:
            await tasks.delete(task.id, principal=ALICE)
    await tasks.delete(extract.id, principal=ALICE)
    recreated = await applier.apply(exported, principal=ALICE)
    assert [(c.kind, c.name, c.action) for c in recreated.changes] == [
        ("task", "extract", "create"),
        ("subscription", "oslo", "create"),
        ("subscription", "rome", "create"),
    ]
    by_name = {t.name: t for t in (await tasks.list(principal=ALICE)).items}
    assert by_name["oslo"].template_id == weather.id
    assert by_name["oslo"].template_params == {"city": "Oslo"}
    assert by_name["oslo"].schedule == weather.schedule  # follows the template's default
    assert by_name["rome"].template_params == {"city": "Rome", "units": "imperial"}
    assert by_name["rome"].depends_on == (by_name["extract"].id,)
    assert (await applier.export_file(principal=ALICE)) == exported
    # They are subscriptions again: a template change reaches them.
    await templates.update("weather", {"policies": {"priority": 8}}, principal=OPERATOR)
    assert (await tasks.get(by_name["oslo"].id, principal=ALICE)).priority == 8
    # ... and keeps what is its own: its upstreams (a template change used to drop them).
    after = await tasks.get(by_name["rome"].id, principal=ALICE)
    assert (after.priority, after.depends_on) == (8, (by_name["extract"].id,))


async def test_a_changed_subscription_in_a_file_is_a_precise_diff_and_bad_params_are_named(
    templates: TemplateService,
    weather: Template,
    tasks: TaskService,
    uow_factory: InMemoryUnitOfWorkFactory,
) -> None:
    applier = TaskApplyService(uow_factory=uow_factory, tasks=tasks, templates=templates)
    item = {"name": "oslo", "template": "weather", "params": {"city": "Oslo", "units": "imperial"},
            "schedule": {"interval_seconds": 900}}  # fmt: skip
    await applier.apply({"subscriptions": [item]}, principal=ALICE)
    changed = {**item, "params": {"city": "Bergen"}, "enabled": False}
    del changed["schedule"]
    plan = await applier.apply({"subscriptions": [changed]}, principal=ALICE, dry_run=True)
    [change] = plan.changes
    assert (change.kind, change.action) == ("subscription", "update")
    assert set(change.fields) == {"params", "schedule", "enabled"}
    await applier.apply({"subscriptions": [changed]}, principal=ALICE)
    [task] = (await tasks.list(principal=ALICE)).items
    assert task.template_params == {"city": "Bergen"}  # units dropped: the file is the truth
    assert (task.schedule, task.enabled) == (weather.schedule, False)
    unchanged = await applier.apply({"subscriptions": [changed]}, principal=ALICE)
    assert [c.action for c in unchanged.changes] == ["unchanged"]

    with pytest.raises(ValidationError) as bad:
        await applier.apply({"subscriptions": [{**item, "params": {"city": ""}}]}, principal=ALICE)
    assert _field(bad) == "subscriptions[0].params.city"
    with pytest.raises(ValidationError) as missing:
        await applier.apply({"subscriptions": [{**item, "template": "wether"}]}, principal=ALICE)
    assert _field(missing) == "subscriptions[0].template"
    with pytest.raises(ValidationError) as twice:
        await applier.apply(
            {"tasks": [{"name": "oslo", "executor": "noop"}], "subscriptions": [item]},
            principal=ALICE,
        )
    assert _field(twice) == "subscriptions[0].name"
