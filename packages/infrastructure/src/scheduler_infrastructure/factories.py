"""Factories that turn :class:`Settings` into adapters. Composition roots call these; nothing
else constructs infrastructure."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.metadata import entry_points
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_application.ports.coordination import RateLimiter
from scheduler_application.ports.observer import RunObserver
from scheduler_application.ports.secrets import SecretBox
from scheduler_domain.executor_policy import PLUGINS, ExecutorPolicy
from scheduler_infrastructure.config import DatabaseSettings, Settings
from scheduler_infrastructure.config.loader import secrets_keys
from scheduler_infrastructure.persistence.engine import create_engine
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from scheduler_infrastructure.ratelimit import LocalRateLimiter, RedisRateLimiter
from scheduler_infrastructure.security.secret_box import FernetSecretBox


def database_url(database: DatabaseSettings) -> str:
    """The configured URL with the password from the environment filled in; for SQLite files,
    the parent folder is created so that a fresh checkout starts without a setup step."""
    url = make_url(database.url)
    if database.password is not None:
        url = url.set(password=database.password)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        _private_sqlite_file(Path(url.database).expanduser())
    return url.render_as_string(hide_password=False)


def _private_sqlite_file(path: Path) -> None:
    """The database holds every user's tasks, outputs and credential hashes: its folder is
    created owner-only, and a file (or its journal) readable by others is made owner-only, so
    task processes running as another OS user cannot read it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    for file in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal"))):
        try:
            mode = file.stat().st_mode
        except FileNotFoundError:
            continue
        if mode & 0o077:
            file.chmod(mode & 0o700)


def sqlite_file(database: DatabaseSettings) -> Path | None:
    """The SQLite database's file (None for PostgreSQL or an in-memory database)."""
    url = make_url(database.url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database).expanduser()


def build_engine(settings: Settings) -> AsyncEngine:
    return create_engine(
        database_url(settings.database),
        pool_size=settings.database.pool_size,
        echo=settings.database.echo,
    )


def build_unit_of_work_factory(engine: AsyncEngine) -> SqlUnitOfWorkFactory:
    return SqlUnitOfWorkFactory(engine)


def build_rate_limiter(
    settings: Settings, observer: RunObserver
) -> tuple[RateLimiter, Callable[[], Awaitable[None]] | None]:
    """Redis buckets when ``redis.url`` is set (shared by every process), else in-process;
    with the function that closes it, if it holds anything."""
    if not settings.redis.url:
        return LocalRateLimiter(), None
    limiter = RedisRateLimiter(
        url=settings.redis.url,
        password=settings.redis.password,
        prefix=f"{settings.queue.prefix}:ratelimit",
        on_unavailable=lambda: observer.dependency_unavailable("redis"),
    )
    return limiter, limiter.aclose


#: The entry-point group in which installed packages register their task callables.
TASK_ENTRY_POINT_GROUP = "scheduler.tasks"


def registered_task_callables(group: str = TASK_ENTRY_POINT_GROUP) -> frozenset[str]:
    """The ``module:function`` values of the installed ``scheduler.tasks`` entry points."""
    return frozenset(entry.value.replace(" ", "") for entry in entry_points(group=group))


#: The entry-point group in which installed packages register executor plugins (the worker's).
EXECUTOR_ENTRY_POINT_GROUP = "scheduler.executors"


def installed_executor_plugins(group: str = EXECUTOR_ENTRY_POINT_GROUP) -> frozenset[str]:
    """The names of the executor plugins installed where this process runs."""
    return frozenset(entry.name for entry in entry_points(group=group))


def build_executor_policy(
    settings: Settings,
    *,
    registered: frozenset[str] | None = None,
    installed: frozenset[str] | None = None,
) -> ExecutorPolicy:
    """``executors.<name>.roles``, ``executors.python.allow`` and ``executors.plugin_names``
    from the settings, plus the installed task callables and executor plugins of this
    process (``registered``, ``installed`` replace the discovery, for tests): in ``scheduler
    run`` the API shares its environment with the worker and knows the plugins without being
    told."""
    e = settings.executors
    plugins = installed_executor_plugins() if installed is None else installed
    return ExecutorPolicy.from_names(
        {
            "noop": e.noop.roles,
            "http": e.http.roles,
            "shell": e.shell.roles,
            "python": e.python.roles,
            PLUGINS: e.plugins.roles,
        },
        python_allow=e.python.allow,
        python_registered=registered_task_callables() if registered is None else registered,
        plugin_names=(*e.plugin_names, *sorted(plugins)),
    )


def build_secret_box(settings: Settings) -> SecretBox | None:
    """What seals and opens tasks' ``secret_env`` (``secrets.key``); None when no key is set,
    and tasks cannot then be given secrets."""
    keys = secrets_keys(settings.secrets.key)
    return FernetSecretBox(keys=keys) if keys else None
