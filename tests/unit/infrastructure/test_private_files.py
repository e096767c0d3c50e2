"""Files that hold every user's data are readable by the server's OS user only."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from scheduler_infrastructure.config.settings import DatabaseSettings
from scheduler_infrastructure.factories import database_url
from scheduler_infrastructure.startup import prepare


def test_the_sqlite_folder_is_created_owner_only(tmp_path: Path) -> None:
    database_url(DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'var' / 'db.sqlite'}"))
    assert stat.S_IMODE((tmp_path / "var").stat().st_mode) == 0o700


def test_a_world_readable_sqlite_file_and_journal_are_made_owner_only(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    for file in (db, tmp_path / "s.db-wal"):
        file.write_bytes(b"")
        file.chmod(0o644)
    database_url(DatabaseSettings(url=f"sqlite+aiosqlite:///{db}"))
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "s.db-wal").stat().st_mode) == 0o600


def test_a_started_process_creates_owner_only_files(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("")
    previous = os.umask(0o022)
    try:
        prepare("cli", standalone=False, environ={"SCHEDULER_CONFIG": str(config)})
        created = tmp_path / "created"
        created.write_text("x")
        assert stat.S_IMODE(created.stat().st_mode) == 0o600
    finally:
        os.umask(previous)
