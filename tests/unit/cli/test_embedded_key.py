"""``scheduler run`` on the embedded default (SQLite) generates the key of tasks' secret_env
once, beside the database file, so secret task variables work out of the box."""

from __future__ import annotations

import stat
from pathlib import Path

from scheduler_cli.embedded_key import KEY_FILE, with_embedded_secrets_key
from scheduler_infrastructure.config import DatabaseSettings, Settings
from scheduler_infrastructure.config.settings import SecretsSettings
from scheduler_infrastructure.factories import build_secret_box
from scheduler_infrastructure.security.secret_box import generate_key


def test_the_embedded_default_generates_its_key_once_beside_the_database(tmp_path: Path) -> None:
    settings = Settings(database=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path}/s.db"))
    first = with_embedded_secrets_key(settings)
    key_file = tmp_path / KEY_FILE
    assert first.secrets.key == key_file.read_text().strip()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert with_embedded_secrets_key(settings).secrets.key == first.secrets.key
    assert build_secret_box(first) is not None


def test_an_explicit_key_or_postgres_gets_no_generated_key(tmp_path: Path) -> None:
    given = Settings(
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path}/s.db"),
        secrets=SecretsSettings(key=generate_key()),
    )
    assert with_embedded_secrets_key(given) is given
    postgres = Settings(database=DatabaseSettings(url="postgresql+asyncpg://u@h/db"))
    assert with_embedded_secrets_key(postgres).secrets.key is None
    assert not (tmp_path / KEY_FILE).exists()
