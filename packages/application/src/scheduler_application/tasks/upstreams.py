"""Resolve a task's ``depends_on`` entries, ids or names, to the ids of tasks the caller sees.

An entry that is the id of a task the caller may see is that task. Otherwise it is a name,
looked for among the tasks of the task's owner, then the caller's own, then — for roles that
see every owner's tasks — everyone's: one match is that task, several are refused (the caller
must give the id), none is "does not exist" (as for a task the caller may not see).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from scheduler_application.accounts.access import Principal, can_see
from scheduler_application.ports.unit_of_work import UnitOfWork
from scheduler_domain.errors import ValidationError
from scheduler_domain.task import Task


async def resolve_upstreams(
    uow: UnitOfWork,
    principal: Principal,
    entries: Sequence[str],
    *,
    owner_id: str,
    known: Iterable[str] = (),
) -> tuple[str, ...]:
    """The ids ``entries`` name, in order; ``known`` ids (already upstreams) are kept as is."""
    kept = set(known)
    by_id = {
        t.id: t
        for t in await uow.tasks.get_many([e for e in entries if e not in kept])
        if can_see(principal, t.team_id)
    }
    resolved: list[str] = []
    for entry in entries:
        if entry in kept or entry in by_id:
            resolved.append(entry)
        else:
            resolved.append((await _by_name(uow, principal, entry, owner_id=owner_id)).id)
    return tuple(resolved)


async def _by_name(uow: UnitOfWork, principal: Principal, name: str, *, owner_id: str) -> Task:
    for owner in dict.fromkeys((owner_id, principal.subject_id)):
        task = await uow.tasks.get_by_name(owner, name)
        if task is not None and can_see(principal, task.team_id):
            return task
    if principal.role.sees_all_tasks and principal.role.can_read_tasks:
        matches = await uow.tasks.with_name(name)
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise ValidationError(
                f"depends_on names {name!r}, the name of {len(matches)} tasks of different "
                "owners: give the task's id instead",
                field="depends_on",
            )
    raise ValidationError(f"depends_on names task {name}, which does not exist", field="depends_on")
