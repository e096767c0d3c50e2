"""Configuration: files, environment overrides, secrets and one-line errors naming the key."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from scheduler_domain.accounts import Role
from scheduler_domain.rate_limit import RateLimit
from scheduler_infrastructure.config import load_settings
from scheduler_infrastructure.config.loader import (
    forget_secret_variables,
    parse_queue_rate_limits,
    parse_role_rate_limits,
    parse_run_mode,
    secrets_keys,
)
from scheduler_infrastructure.errors import ConfigError
from scheduler_infrastructure.factories import database_url
from scheduler_infrastructure.startup import prepare

ROOT = Path(__file__).resolve().parents[3]
CONFIG_FILES = sorted((ROOT / "config").glob("*.toml"))


def _error(env: dict[str, str], path: Path | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(env, path=path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_every_shipped_config_file_is_valid() -> None:
    names = {p.name for p in CONFIG_FILES}
    assert {"default.toml", "development.toml", "production.toml", "test.toml"} <= names
    for path in CONFIG_FILES:
        settings = load_settings({}, path=path)
        assert settings.source == str(path)


def test_default_file_is_the_embedded_mode() -> None:
    settings = load_settings({}, path=ROOT / "config" / "default.toml")
    assert settings.database.url.startswith("sqlite+aiosqlite:///")
    assert settings.queue.backend == "memory"
    assert settings.run.mode == "all"


def test_scheduler_config_variable_picks_the_file() -> None:
    settings = load_settings({"SCHEDULER_CONFIG": str(ROOT / "config" / "development.toml")})
    assert settings.queue.backend == "rabbitmq"


def test_environment_overrides_any_key_with_typed_values() -> None:
    settings = load_settings(
        {
            "SCHEDULER__API__PORT": "9001",
            "SCHEDULER__WORKER__QUEUES": '["a", "b"]',
            "SCHEDULER__WORKER__LABELS": "gpu, region=eu",
            "SCHEDULER__DATABASE__ECHO": "true",
            "SCHEDULER__DISPATCHER__MAX_SLEEP_SECONDS": "2",
        },
        path=ROOT / "config" / "default.toml",
    )
    assert settings.api.port == 9001
    assert settings.worker.queues == ("a", "b")
    assert settings.worker.labels == ("gpu", "region=eu")
    assert settings.database.echo is True
    assert settings.dispatcher.max_sleep_seconds == 2.0


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"SCHEDULER__QUEUE__BACKEND": "kafka"}, "queue.backend"),
        ({"SCHEDULER__WORKER__CAPACITY": "many"}, "worker.capacity"),
        ({"SCHEDULER__WORKER__CAPACITY": "0"}, "worker.capacity"),
        ({"SCHEDULER__WORKER__BATCH_WINDOW_MS": "-1"}, "worker.batch_window_ms"),
        ({"SCHEDULER__WORKER__BATCH_WINDOW_MS": "51"}, "worker.batch_window_ms"),
        ({"SCHEDULER__API__PORT": "70000"}, "api.port"),
        ({"SCHEDULER__API__NOPE": "1"}, "api.nope"),
        ({"SCHEDULER__NOPE__KEY": "1"}, "nope"),
        ({"SCHEDULER__API__JWT_SECRET": "too-short"}, "api.jwt_secret"),
        ({"SCHEDULER__RUN__MODE": "api,scheduler"}, "run.mode"),
        ({"SCHEDULER__DATABASE__URL": "mysql://db/x"}, "database.url"),
        ({"SCHEDULER__QUEUE__BACKEND": "redis"}, "redis.url"),
        ({"SCHEDULER__WORKER__HEARTBEAT_SECONDS": "60"}, "worker.heartbeat_seconds"),
        ({"SCHEDULER__QUEUE__BACKEND": "postgres"}, "queue.backend"),
        (
            {"SCHEDULER__EXECUTORS__HTTP__ALLOW": '["10.0.0.0/8", "no such host"]'},
            "executors.http.allow",
        ),
        ({"SCHEDULER__EVENTS__WEBHOOKS__ALLOW": '["no such host"]'}, "events.webhooks.allow"),
        ({"SCHEDULER__EVENTS__PUBLISH__BACKEND": "kafka"}, "events.publish.backend"),
        ({"SCHEDULER__EVENTS__WEBHOOKS__MAX_ATTEMPTS": "0"}, "events.webhooks.max_attempts"),
        ({"SCHEDULER__WORKER__TASK_NETWORK": "bridge"}, "worker.task_network"),
        (
            {"SCHEDULER__DISPATCHER__QUEUE_RATE_LIMITS": '["reports:10/s"]'},
            "dispatcher.queue_rate_limits",
        ),
        (
            {"SCHEDULER__DISPATCHER__QUEUE_RATE_LIMITS": '["reports=10/fortnight"]'},
            "dispatcher.queue_rate_limits",
        ),
        (
            {"SCHEDULER__DISPATCHER__QUEUE_RATE_LIMITS": '["a=1/s", "a=2/s"]'},
            "dispatcher.queue_rate_limits",
        ),
        ({"SCHEDULER__API__RATE_LIMITS": '["wizard=1/s"]'}, "api.rate_limits"),
        ({"SCHEDULER__API__RATE_LIMITS": '["user:1/s"]'}, "api.rate_limits"),
        ({"SCHEDULER__API__RATE_LIMITS": '["user=1/fortnight"]'}, "api.rate_limits"),
        ({"SCHEDULER__API__RATE_LIMITS": '["*=1/s", "*=2/s"]'}, "api.rate_limits"),
        ({"SCHEDULER__API__AUTH_CACHE_SIZE": "-1"}, "api.auth_cache_size"),
        ({"SCHEDULER__API__AUTH_CACHE_SECONDS": "-0.5"}, "api.auth_cache_seconds"),
        ({"SCHEDULER__WORKER__TASK_UID_RANGE": "1900000000"}, "worker.task_uid_range"),
        ({"SCHEDULER__WORKER__TASK_UID_RANGE": "0-100"}, "worker.task_uid_range"),
        ({"SCHEDULER__WORKER__TASK_UID_RANGE": "200-100"}, "worker.task_uid_range"),
        ({"SCHEDULER__WORKER__TASK_UID_RANGE": "1-4294967295"}, "worker.task_uid_range"),
        ({"SCHEDULER__WORKER__TASK_UID_LOCK_DIR": "run/uids"}, "worker.task_uid_lock_dir"),
        ({"SCHEDULER__WORKER__TASK_HOME_DIR": "tmp"}, "worker.task_home_dir"),
    ],
)
def test_invalid_value_fails_with_one_line_naming_the_key(env: dict[str, str], key: str) -> None:
    message = _error(env, ROOT / "config" / "default.toml")
    assert f": {key}: " in message


def test_secret_in_a_config_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[api]\njwt_secret = "x' + "y" * 40 + '"\n')
    assert ": api.jwt_secret: " in _error({}, path)


def test_password_inside_a_url_in_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[database]\nurl = "postgresql+asyncpg://u:hunter2@db/x"\n')
    message = _error({}, path)
    assert ": database.url: " in message
    assert "hunter2" not in message


def test_secrets_come_from_the_environment_and_are_not_in_repr() -> None:
    secret = "s" * 40
    settings = load_settings(
        {"SCHEDULER__API__JWT_SECRET": secret, "SCHEDULER__DATABASE__PASSWORD": "pw-123"},
        path=ROOT / "config" / "default.toml",
    )
    assert settings.api.jwt_secret == secret
    assert secret not in repr(settings)
    assert "pw-123" not in repr(settings)


def test_database_password_is_filled_into_the_url() -> None:
    settings = load_settings(
        {
            "SCHEDULER__DATABASE__URL": "postgresql+asyncpg://scheduler@db:5432/x",
            "SCHEDULER__DATABASE__PASSWORD": "p@ss/word",
        },
        path=ROOT / "config" / "default.toml",
    )
    assert (
        database_url(settings.database) == "postgresql+asyncpg://scheduler:p%40ss%2Fword@db:5432/x"
    )


def test_missing_config_file_is_named() -> None:
    assert "SCHEDULER_CONFIG" in _error({"SCHEDULER_CONFIG": "/nonexistent/x.toml"})


def test_invalid_toml_is_reported_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[api\nport = 1\n")
    assert str(path) in _error({}, path)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("all", ("api", "dispatcher", "worker")),
        ("worker", ("worker",)),
        ("worker, api", ("api", "worker")),
        ("dispatcher,worker", ("dispatcher", "worker")),
    ],
)
def test_run_mode_is_all_or_a_comma_list(mode: str, expected: tuple[str, ...]) -> None:
    assert parse_run_mode(mode) == expected


def test_a_worker_counts_as_offline_after_the_configured_silence_but_never_within_3_beats() -> None:
    quick = load_settings(
        {
            "SCHEDULER__WORKER__OFFLINE_AFTER_SECONDS": "2",
            "SCHEDULER__WORKER__HEARTBEAT_SECONDS": "0.5",
        },
        path=None,
    )
    assert quick.worker.silence.total_seconds() == 2
    slow_beats = load_settings(
        {
            "SCHEDULER__WORKER__OFFLINE_AFTER_SECONDS": "2",
            "SCHEDULER__WORKER__HEARTBEAT_SECONDS": "5",
        },
        path=None,
    )
    assert slow_beats.worker.silence.total_seconds() == 15
    assert "worker.offline_after_seconds" in _error(
        {"SCHEDULER__WORKER__OFFLINE_AFTER_SECONDS": "0"}
    )


def test_fire_ahead_defaults_to_two_seconds_and_stays_below_the_requeue_threshold() -> None:
    assert load_settings({}, path=None).dispatcher.fire_ahead_seconds == 2.0
    off = load_settings({"SCHEDULER__DISPATCHER__FIRE_AHEAD_SECONDS": "0"}, path=None)
    assert off.dispatcher.fire_ahead_seconds == 0.0
    for value in ("-1", "60"):
        assert "dispatcher.fire_ahead_seconds" in _error(
            {"SCHEDULER__DISPATCHER__FIRE_AHEAD_SECONDS": value}
        )
    assert "dispatcher.fire_ahead_seconds" in _error(
        {
            "SCHEDULER__DISPATCHER__FIRE_AHEAD_SECONDS": "10",
            "SCHEDULER__DISPATCHER__REQUEUE_AFTER_SECONDS": "5",
        }
    )


# -- secrets read from files (SCHEDULER__…_FILE) ------------------------------------------------

FERNET_KEY = "a" * 43 + "="  # 32 zero-ish bytes, url-safe base64


def _secret_file(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("variable", "read"),
    [
        ("SCHEDULER__API__JWT_SECRET_FILE", lambda s: s.api.jwt_secret),
        ("SCHEDULER__DATABASE__PASSWORD_FILE", lambda s: s.database.password),
        ("SCHEDULER__RABBITMQ__PASSWORD_FILE", lambda s: s.rabbitmq.password),
        ("SCHEDULER__REDIS__PASSWORD_FILE", lambda s: s.redis.password),
        ("SCHEDULER__SECRETS__KEY_FILE", lambda s: s.secrets.key),
    ],
)
def test_every_secret_can_be_read_from_a_file_without_its_trailing_newline(
    tmp_path: Path, variable: str, read: Any
) -> None:
    value = FERNET_KEY if "SECRETS__KEY" in variable else "s3cret-" + "x" * 40
    path = _secret_file(tmp_path, "secret", value + "\n")
    settings = load_settings({variable: path}, path=ROOT / "config" / "default.toml")
    assert read(settings) == value
    assert value not in repr(settings)


def test_a_secret_file_keeps_inner_whitespace_and_drops_one_crlf(tmp_path: Path) -> None:
    path = _secret_file(tmp_path, "pw", " two words \r\n")
    settings = load_settings(
        {"SCHEDULER__DATABASE__PASSWORD_FILE": path}, path=ROOT / "config" / "default.toml"
    )
    assert settings.database.password == " two words "


def test_a_missing_secret_file_is_a_config_error_naming_the_variable(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    message = _error({"SCHEDULER__API__JWT_SECRET_FILE": missing}, ROOT / "config" / "default.toml")
    assert ": SCHEDULER__API__JWT_SECRET_FILE: " in message
    assert missing in message


def test_an_unreadable_secret_file_is_a_config_error_naming_the_variable(
    tmp_path: Path,
) -> None:
    message = _error(
        {"SCHEDULER__REDIS__PASSWORD_FILE": str(tmp_path)}, ROOT / "config" / "default.toml"
    )
    assert ": SCHEDULER__REDIS__PASSWORD_FILE: cannot read " in message


def test_an_empty_secret_file_is_refused(tmp_path: Path) -> None:
    path = _secret_file(tmp_path, "empty", "\n")
    message = _error({"SCHEDULER__API__JWT_SECRET_FILE": path}, ROOT / "config" / "default.toml")
    assert ": SCHEDULER__API__JWT_SECRET_FILE: " in message


def test_a_secret_given_both_as_value_and_as_file_is_refused(tmp_path: Path) -> None:
    path = _secret_file(tmp_path, "pw", "from-file")
    message = _error(
        {
            "SCHEDULER__RABBITMQ__PASSWORD": "from-env",
            "SCHEDULER__RABBITMQ__PASSWORD_FILE": path,
        },
        ROOT / "config" / "default.toml",
    )
    assert ": SCHEDULER__RABBITMQ__PASSWORD_FILE: " in message
    assert "not both" in message


def test_a_secret_from_a_file_is_checked_like_one_from_the_environment(tmp_path: Path) -> None:
    path = _secret_file(tmp_path, "jwt", "short\n")
    assert ": api.jwt_secret: " in _error(
        {"SCHEDULER__API__JWT_SECRET_FILE": path}, ROOT / "config" / "default.toml"
    )


def test_file_for_a_setting_that_is_no_secret_is_an_unknown_key(tmp_path: Path) -> None:
    path = _secret_file(tmp_path, "port", "9000")
    assert ": api.port_file: " in _error(
        {"SCHEDULER__API__PORT_FILE": path}, ROOT / "config" / "default.toml"
    )


def test_three_part_keys_still_work_beside_secret_files(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "SCHEDULER__EXECUTORS__SHELL__ROLES": "admin",
            "SCHEDULER__SECRETS__KEY_FILE": _secret_file(tmp_path, "k", FERNET_KEY),
        },
        path=ROOT / "config" / "default.toml",
    )
    assert settings.executors.shell.roles == ("admin",)
    assert settings.secrets.key == FERNET_KEY


@pytest.mark.parametrize("key", ["not-a-key", "a" * 10, FERNET_KEY + ",garbage"])
def test_a_secrets_key_that_is_not_a_fernet_key_is_refused(key: str) -> None:
    message = _error({"SCHEDULER__SECRETS__KEY": key}, ROOT / "config" / "default.toml")
    assert ": secrets.key: " in message
    assert key not in message


def test_several_comma_separated_secrets_keys_are_accepted_for_a_rotation() -> None:
    other = "b" * 43 + "="
    settings = load_settings(
        {"SCHEDULER__SECRETS__KEY": f"{FERNET_KEY}, {other}"}, path=ROOT / "config" / "default.toml"
    )
    assert secrets_keys(settings.secrets.key) == [FERNET_KEY, other]


def test_secrets_key_in_a_config_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f'[secrets]\nkey = "{FERNET_KEY}"\n')
    message = _error({}, path)
    assert ": secrets.key: " in message
    assert "SCHEDULER__SECRETS__KEY_FILE" in message


def test_loaded_secret_variables_are_removed_from_the_environment() -> None:
    environ = {
        "SCHEDULER__API__JWT_SECRET": "j" * 40,
        "SCHEDULER__DATABASE__PASSWORD": "pw",
        "SCHEDULER__SECRETS__KEY_FILE": "/run/secrets/k",
        "SCHEDULER__API__PORT": "9000",
        "PATH": "/bin",
    }
    removed = forget_secret_variables(environ)
    assert sorted(removed) == ["SCHEDULER__API__JWT_SECRET", "SCHEDULER__DATABASE__PASSWORD"]
    assert environ == {
        "SCHEDULER__SECRETS__KEY_FILE": "/run/secrets/k",
        "SCHEDULER__API__PORT": "9000",
        "PATH": "/bin",
    }


def test_startup_takes_the_secrets_out_of_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = "startup-secret-" + "z" * 40
    monkeypatch.setenv("SCHEDULER_CONFIG", str(ROOT / "config" / "default.toml"))
    monkeypatch.setenv("SCHEDULER__API__JWT_SECRET", secret)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        settings = prepare("api", standalone=False)
    finally:
        root.handlers[:], root.level = handlers, level
    assert settings.api.jwt_secret == secret
    assert "SCHEDULER__API__JWT_SECRET" not in os.environ
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(dict(os.environ))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert secret not in child.stdout


def test_queue_rate_limits_come_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[dispatcher]\nqueue_rate_limits = ["reports=10/s", "email = 5/2m"]\n')
    settings = load_settings({}, path=config)
    limits = parse_queue_rate_limits(settings.dispatcher.queue_rate_limits)
    assert limits == {"reports": RateLimit.parse("10/s"), "email": RateLimit.parse("5/2m")}


def test_retention_defaults_in_days_and_zero_keeps_for_ever() -> None:
    from scheduler_dispatcher.bootstrap import retention_policy

    settings = load_settings({}, path=None)
    r = settings.retention
    assert (r.workers_days, r.runs_days, r.dead_letters_days, r.slot_decisions_days) == (
        1.0,
        30.0,
        0.0,
        30.0,
    )
    policy = retention_policy(settings)
    assert policy.runs == timedelta(days=30)
    assert policy.dead_letters is None  # dead letters are kept unless asked
    tuned = load_settings(
        {"SCHEDULER__RETENTION__RUNS_DAYS": "0", "SCHEDULER__RETENTION__DEAD_LETTERS_DAYS": "90"},
        path=None,
    )
    assert retention_policy(tuned).runs is None
    assert retention_policy(tuned).dead_letters == timedelta(days=90)


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"SCHEDULER__RETENTION__RUNS_DAYS": "-1"}, "retention.runs_days"),
        ({"SCHEDULER__RETENTION__BATCH_SIZE": "0"}, "retention.batch_size"),
        ({"SCHEDULER__RETENTION__WORKERS_DAYS": "0.0001"}, "retention.workers_days"),
    ],
)
def test_a_bad_retention_is_refused_naming_the_key(env: dict[str, str], key: str) -> None:
    assert key in _error(env)


def test_api_rate_limits_read_per_role_with_a_default() -> None:
    limits = parse_role_rate_limits(("viewer=5/s", "*=100/m"))
    assert limits == {Role.VIEWER: RateLimit.parse("5/s"), None: RateLimit.parse("100/m")}
    assert parse_role_rate_limits(()) == {}
