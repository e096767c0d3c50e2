"""The embedded default's key for tasks' ``secret_env``, so the feature works out of the box.

``scheduler run`` on SQLite without ``secrets.key`` generates a key once into ``secrets-key``
beside the database file (``var/secrets-key``, mode 0600), as ``./scripts/run`` does for the
JWT secret, and reads it on later starts. The key never goes into the database: a copy of
``var/scheduler.db`` alone opens no secret.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from scheduler_infrastructure.config import Settings
from scheduler_infrastructure.factories import sqlite_file
from scheduler_infrastructure.security.secret_box import generate_key

logger = logging.getLogger("scheduler.launcher")
KEY_FILE = "secrets-key"


def with_embedded_secrets_key(settings: Settings) -> Settings:
    """``settings`` with the embedded key filled in (unchanged unless SQLite on a file and no
    ``secrets.key``)."""
    if settings.secrets.key is not None:
        return settings
    database = sqlite_file(settings.database)
    if database is None:
        return settings
    key = _read_or_create(database.parent / KEY_FILE)
    secrets = dataclasses.replace(settings.secrets, key=key)
    return dataclasses.replace(settings, secrets=secrets)


def _read_or_create(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="ascii").strip()
    with os.fdopen(descriptor, "w", encoding="ascii") as file:
        file.write(generate_key() + "\n")
    logger.info("generated the key for tasks' secret_env into %s", path)
    return path.read_text(encoding="ascii").strip()
