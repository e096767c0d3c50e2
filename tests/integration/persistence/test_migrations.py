"""The migration history on both backends: up, down to nothing, up again, and no drift from the
tables the code uses."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from scheduler_infrastructure.persistence import migrations
from scheduler_infrastructure.persistence.engine import create_engine

pytestmark = pytest.mark.timeout(120)

REPO_ROOT = Path(__file__).resolve().parents[3]
METADATA = migrations.target_metadata()
ALL_TABLES = {*METADATA.tables, "alembic_version"}

EmptyDatabase = Callable[[], Awaitable[str]]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> EmptyDatabase:
    """Makes an empty database of the parametrized backend (PostgreSQL ones are dropped after)."""
    if request.param == "postgres":
        maker: EmptyDatabase = request.getfixturevalue("fresh_postgres_database")
        return maker

    async def sqlite_file() -> str:
        return f"sqlite+aiosqlite:///{tmp_path / 'migrations.db'}"

    return sqlite_file


async def _inspect(url: str, look: Callable[[Connection], Any]) -> Any:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(look)
    finally:
        await engine.dispose()


async def table_names(url: str) -> set[str]:
    names: list[str] = await _inspect(url, lambda sync: inspect(sync).get_table_names())
    return set(names)


def _diff(sync: Connection) -> list[Any]:
    options = migrations.context_options(sync.dialect.name)
    context = MigrationContext.configure(sync, opts=options)
    return list(compare_metadata(context, METADATA))


async def test_upgrade_downgrade_to_base_and_upgrade_again(empty_database: EmptyDatabase) -> None:
    url = await empty_database()
    head = migrations.head()
    assert head is not None

    await asyncio.to_thread(migrations.upgrade, url)
    assert await table_names(url) == ALL_TABLES
    assert migrations.current(url) == head

    await asyncio.to_thread(migrations.downgrade, url, "base")
    assert await table_names(url) == {"alembic_version"}
    assert migrations.current(url) is None

    # Called straight from a coroutine: the helper moves Alembic's own loop to a thread.
    migrations.upgrade(url)
    assert await table_names(url) == ALL_TABLES
    assert migrations.current(url) == head


async def test_migrated_schema_has_no_drift_from_the_tables_in_code(
    empty_database: EmptyDatabase,
) -> None:
    url = await empty_database()
    await asyncio.to_thread(migrations.upgrade, url)
    diff = await _inspect(url, _diff)
    if diff:
        print("schema drift between migrations and tables.py:")
        for item in diff:
            print(f"  {item}")
    assert diff == []


def test_migrations_are_found_from_the_environment_or_an_explicit_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(REPO_ROOT / "migrations" / "versions")  # found upwards from a subfolder
    head = migrations.head()
    assert head is not None
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(migrations.MIGRATIONS_DIR_ENV, str(REPO_ROOT / "migrations"))
    assert migrations.head() == head
    monkeypatch.delenv(migrations.MIGRATIONS_DIR_ENV)
    assert migrations.head(config_path=REPO_ROOT / "alembic.ini") == head
    assert migrations.head(config_path=REPO_ROOT) == head
    monkeypatch.setenv(migrations.MIGRATIONS_DIR_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=migrations.MIGRATIONS_DIR_ENV):
        migrations.head()
    with pytest.raises(FileNotFoundError):
        migrations.head(config_path=tmp_path)


async def _execute(url: str, statement: str, **values: Any) -> None:
    from sqlalchemy import text

    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(statement), values)
    finally:
        await engine.dispose()


_TASK = (
    "INSERT INTO tasks (id, owner_id, name, description, executor, params, schedule, enabled,"
    " queue, priority, labels, strategy, retry, concurrency, misfire, spread_seconds,"
    " trigger_rule, created_at, updated_at, version) VALUES (:id, 'u', :name, '', 'noop', '{}',"
    " :schedule, true, 'default', 5, '[]', 'queue', '{}', 'allow', '{}', 0, 'all_success',"
    " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 1)"
)


async def test_an_upgrade_stops_at_stored_cron_expressions_crontab_refuses(
    empty_database: EmptyDatabase,
) -> None:
    url = await empty_database()
    await asyncio.to_thread(migrations.upgrade, url, "0006")
    await _execute(url, _TASK, id="t1", name="randomly", schedule='{"cron": "R 3 * * *"}')
    await _execute(url, _TASK, id="t2", name="fine", schedule='{"cron": "0 12-12 * * *"}')

    with pytest.raises(RuntimeError, match=r"randomly \(t1\): 'R 3 \* \* \*'"):
        await asyncio.to_thread(migrations.upgrade, url)
    assert migrations.current(url) == "0006"

    await _execute(url, "UPDATE tasks SET schedule = :s WHERE id = 't1'", s='{"cron": "0 3 * * *"}')
    await asyncio.to_thread(migrations.upgrade, url)
    assert migrations.current(url) == migrations.head()


_USER = (
    "INSERT INTO users (id, username, password_hash, role, disabled, created_at, updated_at)"
    " VALUES (:id, :name, 'x', 'user', false, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
)
_OWNED_TASK = _TASK.replace("'u'", ":owner").replace(
    "'{}', 'allow', '{}'", ":retry, 'allow', :misfire"
)
_DOCS = {
    "retry": '{"max_attempts": 1, "base_delay": 10.0, "max_delay": 3600.0, "jitter": 0.0}',
    "misfire": '{"kind": "run_once", "catch_up_cap": 10, "grace": 60.0}',
}
_RUN = (
    "INSERT INTO task_runs (id, task_id, owner_id, attempt, trigger, scheduled_for, status,"
    " queue, priority, version, created_at) VALUES (:id, :task, :owner, 1, 'manual',"
    " CURRENT_TIMESTAMP, 'queued', 'default', 5, 1, CURRENT_TIMESTAMP)"
)
_RECORD = (
    "INSERT INTO run_events (id, run_id, task_id, at, actor, detail, kind, subject, owner_id)"
    " VALUES (:id, NULL, :task, CURRENT_TIMESTAMP, 'user:x', '{}', :kind, :subject, :owner)"
)


async def test_teams_migrate_existing_owners_without_loss(empty_database: EmptyDatabase) -> None:
    """0016 on a database with users, tasks, runs and events: each owner's objects are in
    their personal team (id = the user's), seen by them through the new access paths and by
    nobody else; a task whose owner is no user keeps a team of its own; downgrade gives the
    task records their owner back."""
    from scheduler_application.ports.repositories import EventQuery, RunFilter, TaskFilter
    from scheduler_domain.events import LOG_START
    from scheduler_domain.teams import TeamRole
    from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory

    url = await empty_database()
    await asyncio.to_thread(migrations.upgrade, url, "0013")
    for user, name in (("u1", "alice"), ("u2", "bob")):
        await _execute(url, _USER, id=user, name=name)
    await _execute(url, _OWNED_TASK, id="t1", name="a", schedule=None, owner="u1", **_DOCS)
    await _execute(url, _OWNED_TASK, id="t2", name="b", schedule=None, owner="u2", **_DOCS)
    await _execute(url, _OWNED_TASK, id="t3", name="c", schedule=None, owner="gh", **_DOCS)
    await _execute(url, _RUN, id="r1", task="t1", owner="u1")
    await _execute(url, _RUN, id="r2", task="t2", owner="u2")
    await _execute(url, _RECORD, id="e1", task="t1", kind="task.created", subject=None, owner="u1")
    await _execute(
        url, _RECORD, id="e2", task=None, kind="webhook.disabled", subject="webhook:w", owner="u2"
    )

    await asyncio.to_thread(migrations.upgrade, url)

    engine = create_engine(url, pool_size=1)
    try:
        uow = SqlUnitOfWorkFactory(engine)
        async with uow() as u:
            assert await u.teams.roles_of("u1") == {"u1": TeamRole.ADMIN}
            assert [(t.name, r) for t, r in await u.teams.of_user("u2")] == [
                ("@bob", TeamRole.ADMIN)
            ]
            ghost = await u.teams.get("gh")
            assert ghost is not None
            assert ghost.name == "@gh"
            assert await u.teams.members("gh") == []
            tasks = (await u.tasks.list(TaskFilter(team_ids=frozenset({"u1"})), limit=10)).items
            assert [(t.id, t.owner_id, t.team_id) for t in tasks] == [("t1", "u1", "u1")]
            assert (await u.tasks.get("t3")).team_id == "gh"  # type: ignore[union-attr]
            runs = (await u.runs.list(RunFilter(team_ids=frozenset({"u2"})), limit=10)).items
            assert [(r.id, r.team_id) for r in runs] == [("r2", "u2")]

            async def log(user: str) -> set[str]:
                query = EventQuery(after=LOG_START, team_ids=frozenset({user}), owner_id=user)
                return {e.id for e in await u.events.read_log(query, limit=50)}

            assert await log("u1") == {"e1"}
            assert await log("u2") == {"e2"}
        await asyncio.to_thread(migrations.downgrade, url, "0013")
        async with engine.connect() as connection:
            from sqlalchemy import text

            rows = await connection.execute(text("SELECT id, owner_id FROM run_events ORDER BY id"))
            assert [tuple(r) for r in rows] == [("e1", "u1"), ("e2", "u2")]
            count = await connection.execute(text("SELECT count(*) FROM tasks"))
            assert count.scalar() == 3
    finally:
        await engine.dispose()


_TEAM_TASK = (
    "INSERT INTO tasks (id, owner_id, team_id, name, description, executor, params, schedule,"
    " enabled, queue, priority, labels, strategy, retry, concurrency, misfire, spread_seconds,"
    " trigger_rule, created_at, updated_at, version) VALUES (:id, :owner, :team, :name, '',"
    " 'noop', '{}', NULL, true, 'default', 5, '[]', 'queue', :retry, 'allow', :misfire, 0,"
    " 'all_success', :created, :created, 1)"
)


async def test_task_names_become_unique_per_team_renaming_a_shared_teams_duplicates(
    empty_database: EmptyDatabase,
) -> None:
    """0018 on a shared team where two members each made a ``report``: the older keeps the
    name, the other is renamed ``report-<id suffix>`` (nothing else changes, no task lost);
    a personal team's names were unique already. Downgrade renames within each creator."""
    from datetime import UTC, datetime

    from sqlalchemy import text

    url = await empty_database()
    await asyncio.to_thread(migrations.upgrade, url, "0017")
    for user, name in (("u1", "alice"), ("u2", "bob")):
        await _execute(url, _USER, id=user, name=name)
    await _execute(
        url,
        "INSERT INTO teams (id, name, personal_of, created_at) VALUES ('ops', 'ops', NULL, :at)",
        at=datetime(2030, 1, 1, tzinfo=UTC),
    )
    rows = [
        ("t1", "u1", "ops", "report", 1),
        ("t2-000000abcdef", "u2", "ops", "report", 2),
        ("t3", "u1", "u1", "daily", 3),  # alice's own, in her personal team
        ("t4", "u2", "ops", "report-000000abcdef", 0),  # the renamed name is taken already
    ]
    for task_id, owner, team, name, hour in rows:
        created = datetime(2030, 1, 1, hour, tzinfo=UTC)
        await _execute(
            url, _TEAM_TASK, id=task_id, owner=owner, team=team, name=name, created=created,
            **_DOCS,
        )  # fmt: skip

    await asyncio.to_thread(migrations.upgrade, url)

    async def names() -> dict[str, str]:
        engine = create_engine(url, pool_size=1)
        try:
            async with engine.connect() as connection:
                found = await connection.execute(text("SELECT id, name FROM tasks"))
                return {row[0]: row[1] for row in found}
        finally:
            await engine.dispose()

    assert await names() == {
        "t1": "report",
        "t2-000000abcdef": "report-000000abcdef-2",
        "t3": "daily",
        "t4": "report-000000abcdef",
    }
    with pytest.raises(Exception, match=r"(?i)unique"):  # the team has one already
        await _execute(
            url, _TEAM_TASK, id="t5", owner="u2", team="ops", name="report",
            created=datetime(2030, 1, 2, tzinfo=UTC), **_DOCS,
        )  # fmt: skip
    await _execute(  # now allowed: alice's second "report", in her personal team
        url, _TEAM_TASK, id="t6", owner="u1", team="u1", name="report",
        created=datetime(2030, 1, 2, tzinfo=UTC), **_DOCS,
    )  # fmt: skip
    await asyncio.to_thread(migrations.downgrade, url, "0017")
    after = await names()
    assert len(after) == 5
    assert (after["t1"], after["t6"]) == ("report", "report-t6")  # alice's: t6 is newer
