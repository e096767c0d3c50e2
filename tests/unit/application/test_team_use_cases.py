"""TeamService on the in-memory fakes: every membership change invalidates the credential cache
(a principal carries its memberships); the team rule through the task and run use cases."""

from __future__ import annotations

from datetime import timedelta

import pytest

from scheduler_application.accounts.access import Principal
from scheduler_application.accounts.principal_cache import PrincipalCache
from scheduler_application.accounts.teams import TeamService
from scheduler_application.accounts.users import AccountService
from scheduler_application.errors import AlreadyExists, Conflict, NotFound, PermissionDenied
from scheduler_application.runs.service import RunService
from scheduler_application.tasks.service import TaskService
from scheduler_application.templates.service import TemplateService
from scheduler_application.testing import (
    FakeClock,
    FakePasswordHasher,
    InMemoryStore,
    InMemoryUnitOfWorkFactory,
)
from scheduler_domain.accounts import Role, User
from scheduler_domain.teams import TeamRole

PASSWORD = "correct horse battery staple"


class CountingCache(PrincipalCache):
    def __init__(self) -> None:
        super().__init__(ttl=timedelta(seconds=60))
        self.invalidations = 0

    def invalidate(self) -> None:
        self.invalidations += 1
        super().invalidate()


@pytest.fixture
def cache() -> CountingCache:
    return CountingCache()


@pytest.fixture
def teams(
    uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock, cache: CountingCache
) -> TeamService:
    return TeamService(uow_factory=uow_factory, clock=clock, principal_cache=cache)


async def _user(uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock, name: str) -> User:
    accounts = AccountService(uow_factory=uow_factory, clock=clock, hasher=FakePasswordHasher())
    return await accounts.create_user(name, PASSWORD, Role.USER)


async def _as(uow_factory: InMemoryUnitOfWorkFactory, user: User) -> Principal:
    """The principal a credential of ``user`` proves now (memberships read as auth does)."""
    async with uow_factory() as uow:
        return Principal(user.id, user.role, teams=await uow.teams.roles_of(user.id))


async def test_a_new_user_has_a_personal_team_named_after_them(
    uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock, store: InMemoryStore
) -> None:
    ann = await _user(uow_factory, clock, "ann")
    team = store.row("teams", ann.id)
    assert team.name == "@ann"
    assert team.personal_of == ann.id
    assert (await _as(uow_factory, ann)).teams == {ann.id: TeamRole.ADMIN}


async def test_every_membership_change_invalidates_the_credential_cache(
    teams: TeamService,
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
    cache: CountingCache,
) -> None:
    ann = await _user(uow_factory, clock, "ann")
    ben = await _user(uow_factory, clock, "ben")
    steps = [
        lambda: teams.create("ops", principal=Principal(ann.id, Role.USER)),
        lambda: teams.set_member("ops", "ben", TeamRole.VIEWER, principal=admin),
        lambda: teams.change_role("ops", "ben", TeamRole.EDITOR, principal=admin),
        lambda: teams.remove_member("ops", "ben", principal=admin),
        lambda: teams.delete("ops", principal=admin),
    ]
    admin = Principal(ann.id, Role.USER)
    for index, step in enumerate(steps):
        before = cache.invalidations
        await step()
        admin = await _as(uow_factory, ann)
        assert cache.invalidations == before + 1, index
    assert (await _as(uow_factory, ben)).teams == {ben.id: TeamRole.ADMIN}


async def test_the_team_rule_through_the_task_and_run_use_cases(
    teams: TeamService,
    tasks: TaskService,
    runs: RunService,
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
) -> None:
    ann = await _user(uow_factory, clock, "ann")
    ben = await _user(uow_factory, clock, "ben")
    eve = await _user(uow_factory, clock, "eve")
    await teams.create("ops", principal=await _as(uow_factory, ann))
    await teams.set_member("ops", "ben", TeamRole.VIEWER, principal=await _as(uow_factory, ann))
    task = await tasks.create(
        {"name": "shared", "executor": "noop", "team": "ops"}, principal=await _as(uow_factory, ann)
    )
    run = await runs.trigger(task.id, principal=await _as(uow_factory, ann))
    viewer = await _as(uow_factory, ben)
    outsider = await _as(uow_factory, eve)

    assert (await tasks.get(task.id, principal=viewer)).name == "shared"
    assert [t.id for t in (await tasks.list(principal=viewer)).items] == [task.id]
    assert [r.id for r in (await runs.list(principal=viewer)).items] == [run.id]
    with pytest.raises(PermissionDenied):
        await tasks.pause(task.id, principal=viewer)
    with pytest.raises(PermissionDenied):
        await runs.cancel(run.id, principal=viewer)
    with pytest.raises(NotFound):
        await tasks.get(task.id, principal=outsider)
    with pytest.raises(NotFound):
        await runs.cancel(run.id, principal=outsider)
    assert (await tasks.list(principal=outsider)).items == []
    assert await runs.cancel_many([run.id], principal=viewer) == {run.id: "forbidden"}

    await teams.change_role("ops", "ben", TeamRole.EDITOR, principal=await _as(uow_factory, ann))
    editor = await _as(uow_factory, ben)
    moved = await tasks.update(task.id, {"team": "@ben"}, principal=editor)
    assert moved.team_id == ben.id
    assert (await runs.get(run.id, principal=editor)).team_id == ben.id
    with pytest.raises(NotFound):  # ann is no member of ben's personal team
        await runs.get(run.id, principal=await _as(uow_factory, ann))
    with pytest.raises(Conflict):
        await teams.delete("@ben", principal=editor)


async def test_a_subscription_can_belong_to_a_team_and_follows_the_team_rule(
    teams: TeamService,
    tasks: TaskService,
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
) -> None:
    ann = await _user(uow_factory, clock, "ann")
    ben = await _user(uow_factory, clock, "ben")
    eve = await _user(uow_factory, clock, "eve")
    await teams.create("ops", principal=await _as(uow_factory, ann))
    await teams.set_member("ops", "ben", TeamRole.VIEWER, principal=await _as(uow_factory, ann))
    templates = TemplateService(uow_factory=uow_factory, clock=clock)
    operator = Principal("op", Role.OPERATOR)
    template = await templates.create(
        {"name": "ping", "executor": "noop", "params_schema": {"type": "object"}},
        principal=operator,
    )
    shared = await templates.subscribe(
        template.id, {"name": "team-ping", "team": "ops"}, principal=await _as(uow_factory, ann)
    )
    assert shared.team_id != ann.id  # the team's, not ann's personal team
    viewer, outsider = await _as(uow_factory, ben), await _as(uow_factory, eve)
    # A viewer member sees the team's subscription, in the template's list and as a task ...
    listed = await templates.subscriptions(template.id, principal=viewer)
    assert [t.id for t in listed.items] == [shared.id]
    assert (await tasks.get(shared.id, principal=viewer)).name == "team-ping"
    # ... but may not put a subscription in the team, and an outsider sees nothing of it.
    with pytest.raises(PermissionDenied):
        await templates.subscribe(template.id, {"name": "x", "team": "ops"}, principal=viewer)
    assert (await templates.subscriptions(template.id, principal=outsider)).items == []
    with pytest.raises(NotFound):
        await templates.subscribe(template.id, {"name": "y", "team": "ops"}, principal=outsider)


async def test_task_names_are_unique_within_a_team_whoever_created_them(
    teams: TeamService,
    tasks: TaskService,
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
) -> None:
    ann = await _user(uow_factory, clock, "ann")
    ben = await _user(uow_factory, clock, "ben")
    await teams.create("ops", principal=await _as(uow_factory, ann))
    await teams.set_member("ops", "ben", TeamRole.EDITOR, principal=await _as(uow_factory, ann))
    as_ann, as_ben = await _as(uow_factory, ann), await _as(uow_factory, ben)
    spec = {"name": "report", "executor": "noop", "params": {}}
    await tasks.create({**spec, "team": "ops"}, principal=as_ann)
    with pytest.raises(AlreadyExists) as taken:  # another member, the same team
        await tasks.create({**spec, "team": "ops"}, principal=as_ben)
    assert taken.value.field == "name"
    mine = await tasks.create(spec, principal=as_ben)  # his personal team: another team
    assert mine.team_id == ben.id
    with pytest.raises(AlreadyExists) as moving:  # moved into a team that has the name
        await tasks.update(mine.id, {"team": "ops"}, principal=as_ben)
    assert moving.value.field == "name"
    assert (await tasks.get(mine.id, principal=as_ben)).team_id == ben.id
    templates = TemplateService(uow_factory=uow_factory, clock=clock)
    template = await templates.create(
        {"name": "ping", "executor": "noop"}, principal=Principal("op", Role.OPERATOR)
    )
    with pytest.raises(AlreadyExists) as subscribed:
        await templates.subscribe(template.id, {"name": "report", "team": "ops"}, principal=as_ben)
    assert subscribed.value.field == "name"
