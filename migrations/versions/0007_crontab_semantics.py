"""cron expressions mean what crontab means: refuse to upgrade past stored ones that no longer do

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 23:40:00.000000+00:00

The schedule engine now follows Vixie cron and refuses forms the previous one (croniter)
accepted: the random ``R``, backwards ranges (``FRI-MON``, ``22-2``), Quartz's ``L``/``W``/``#``,
and expressions longer than 1 kB. A task stored with such an expression could no longer be read,
so this revision changes no schema; it checks every stored cron schedule and stops the upgrade,
naming the tasks, when one is refused — fix them (for example ``22-2`` → ``22-23,0-2``) with the
previous version, then upgrade again. ``N-N`` ranges are accepted and now mean ``N``.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from scheduler_domain.errors import InvalidSchedule
from scheduler_domain.schedules import parse_schedule

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    tasks = sa.table(
        "tasks",
        sa.column("id", sa.String),
        sa.column("name", sa.String),
        sa.column("schedule", sa.JSON),
    )
    refused = []
    for task_id, name, schedule in op.get_bind().execute(
        sa.select(tasks.c.id, tasks.c.name, tasks.c.schedule)
    ):
        if not isinstance(schedule, dict) or "cron" not in schedule:
            continue
        try:
            parse_schedule(schedule)
        except InvalidSchedule as error:
            refused.append(f"{name} ({task_id}): {schedule.get('cron')!r}: {error.message}")
    if refused:
        raise RuntimeError(
            "these tasks' cron expressions are no longer accepted; fix them with the previous"
            " version, then upgrade again:\n  " + "\n  ".join(refused)
        )


def downgrade() -> None:
    pass
