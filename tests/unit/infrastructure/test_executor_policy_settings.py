"""The executor policy as the deployer configures it: settings, environment and the
``scheduler.tasks`` entry points of the installed packages."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler_domain.accounts import Role
from scheduler_domain.errors import ValidationError
from scheduler_infrastructure.config import load_settings
from scheduler_infrastructure.errors import ConfigError
from scheduler_infrastructure.factories import build_executor_policy, registered_task_callables


def test_defaults_are_safe_for_a_multi_user_install(tmp_path: Path) -> None:
    policy = build_executor_policy(load_settings({}, path=_empty(tmp_path)), registered=frozenset())
    assert policy.allows("noop", Role.USER)
    assert policy.allows("http", Role.USER)
    assert not policy.allows("shell", Role.USER)
    assert not policy.allows("python", Role.USER)
    assert policy.allows("shell", Role.OPERATOR)
    assert policy.allows("python", Role.ADMIN)


def test_roles_per_executor_come_from_the_environment(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "SCHEDULER__EXECUTORS__SHELL__ROLES": '["admin", "user"]',
            "SCHEDULER__EXECUTORS__PYTHON__ALLOW": '["reports.jobs:*"]',
        },
        path=_empty(tmp_path),
    )
    policy = build_executor_policy(settings, registered=frozenset())
    assert policy.allows("shell", Role.USER)
    assert not policy.allows("shell", Role.OPERATOR)
    policy.check_callable("reports.jobs:nightly")


def test_roles_come_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[executors.http]\nroles = ["admin"]\nallow = ["10.0.0.0/8"]\n')
    settings = load_settings({}, path=config)
    assert settings.executors.http.allow == ("10.0.0.0/8",)
    assert not build_executor_policy(settings, registered=frozenset()).allows("http", Role.USER)


def test_an_unknown_role_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings({"SCHEDULER__EXECUTORS__SHELL__ROLES": '["root"]'}, path=_empty(tmp_path))
    assert "executors.shell.roles" in str(refused.value)


def test_a_malformed_callable_pattern_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"executors\.python\.allow"):
        load_settings({"SCHEDULER__EXECUTORS__PYTHON__ALLOW": '["nocolon"]'}, path=_empty(tmp_path))


@pytest.fixture
def installed_task_package(tmp_path: Path) -> Iterator[None]:
    """A distribution on sys.path whose metadata registers two task callables."""
    dist = tmp_path / "site" / "acme_jobs-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-jobs\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[scheduler.tasks]\ninvoice = acme.billing:invoice\nreport = acme.reports : nightly\n"
    )
    sys.path.insert(0, str(tmp_path / "site"))
    try:
        yield
    finally:
        sys.path.remove(str(tmp_path / "site"))


@pytest.mark.usefixtures("installed_task_package")
def test_entry_points_register_task_callables(tmp_path: Path) -> None:
    assert {"acme.billing:invoice", "acme.reports:nightly"} <= registered_task_callables()
    policy = build_executor_policy(load_settings({}, path=_empty(tmp_path)))
    policy.check_callable("acme.billing:invoice")
    policy.check_callable("acme.reports:nightly")


def _empty(tmp_path: Path) -> Path:
    config = tmp_path / "empty.toml"
    config.write_text("")
    return config


def test_plugin_names_come_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[executors]\nplugin_names = ["ftp"]\n')
    policy = build_executor_policy(
        load_settings({}, path=config), registered=frozenset(), installed=frozenset()
    )
    policy.check_known("ftp")
    assert policy.known_executors == {"noop", "http", "shell", "python", "ftp"}


def test_without_plugin_names_only_the_built_in_executors_exist(tmp_path: Path) -> None:
    policy = build_executor_policy(
        load_settings({}, path=_empty(tmp_path)), registered=frozenset(), installed=frozenset()
    )
    for name in ("noop", "http", "shell", "python"):
        policy.check_known(name)
    with pytest.raises(ValidationError) as refused:
        policy.check_known("ftp")
    assert refused.value.field == "executor"


@pytest.fixture
def installed_executor_plugin(tmp_path: Path) -> Iterator[None]:
    """A distribution on sys.path whose metadata registers an executor plugin ``ftp``."""
    dist = tmp_path / "plugins" / "acme_ftp-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-ftp\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[scheduler.executors]\nftp = acme.ftp:FtpExecutor\n")
    sys.path.insert(0, str(tmp_path / "plugins"))
    try:
        yield
    finally:
        sys.path.remove(str(tmp_path / "plugins"))


@pytest.mark.usefixtures("installed_executor_plugin")
def test_an_executor_plugin_installed_in_the_process_is_known(tmp_path: Path) -> None:
    policy = build_executor_policy(load_settings({}, path=_empty(tmp_path)), registered=frozenset())
    policy.check_known("ftp")
