"""References to named limits: a task, a template's policies or a queue may name only limits
that exist, and a limit still named by one of them is not deleted.

A reference to a missing limit would be accepted and then never enforced (the gates ignore a
name no limit has), which is the silent kind of wrong: it is refused where it is written,
naming the item (``limits[0]: no limit named 'vendor-ap'``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from scheduler_application.ports.unit_of_work import UnitOfWork
from scheduler_domain.errors import ValidationError


async def ensure_limits_exist(
    uow: UnitOfWork,
    names: Sequence[str],
    *,
    field: str = "limits",
    known: Collection[str] = (),
) -> None:
    """Refuse the first name no limit has, naming ``<field>[<index>]``. ``known``: names
    taken as existing without a read (those a change keeps, those a file defines)."""
    wanted = [name for name in names if name not in known]
    if not wanted:
        return
    found = {limit.name for limit in await uow.limits.get_many(wanted)}
    for index, name in enumerate(names):
        if name not in known and name not in found:
            raise ValidationError(f"no limit named {name!r}", field=f"{field}[{index}]")
