"""A task's place in the dependency graph: what it waits for and what waits for it."""

from __future__ import annotations

from dataclasses import dataclass

from scheduler_application.accounts.access import Principal, can_see, ensure_can_read_tasks
from scheduler_application.ports.unit_of_work import UnitOfWorkFactory
from scheduler_application.tasks.service import load_visible_task
from scheduler_domain.task import Task, TriggerRule


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskDependencies:
    """Upstreams and dependents the caller may see; the others are only counted."""

    task_id: str
    trigger_rule: TriggerRule
    upstreams: list[Task]
    dependents: list[Task]
    hidden_upstreams: int
    hidden_dependents: int


class TaskGraphService:
    def __init__(self, *, uow_factory: UnitOfWorkFactory) -> None:
        self._uow_factory = uow_factory

    async def dependencies(self, task_id: str, *, principal: Principal) -> TaskDependencies:
        ensure_can_read_tasks(principal)
        async with self._uow_factory() as uow:
            task = await load_visible_task(uow, task_id, principal)
            upstreams = await uow.tasks.get_many(list(task.depends_on))
            dependents = await uow.tasks.dependents(task.id)
        visible_up = [t for t in upstreams if can_see(principal, t.team_id)]
        visible_down = [t for t in dependents if can_see(principal, t.team_id)]
        return TaskDependencies(
            task_id=task.id,
            trigger_rule=task.trigger_rule,
            upstreams=visible_up,
            dependents=visible_down,
            hidden_upstreams=len(task.depends_on) - len(visible_up),
            hidden_dependents=len(dependents) - len(visible_down),
        )
