"""What every entry point does first: load and check the settings, set up logging."""

from __future__ import annotations

import os
from collections.abc import Mapping

from scheduler_infrastructure.config import Settings, load_settings
from scheduler_infrastructure.config.loader import forget_secret_variables
from scheduler_infrastructure.errors import ConfigError
from scheduler_infrastructure.logging_setup import configure_logging
from scheduler_infrastructure.telemetry.redaction import SecretRedactor


class StartupError(Exception):
    """The process cannot start; ``str()`` is the one line to show the operator."""


def prepare(
    component: str, *, standalone: bool, environ: Mapping[str, str] | None = None
) -> Settings:
    """Settings for ``component``; ``standalone`` means it runs without the other components
    in its process, which rules out the in-process memory queue.

    Read from the process's own environment (``environ`` None), the secrets' variables are
    removed from it once loaded: the settings hold them, and no process started afterwards (a
    task's, a migration's) can inherit them. Load the settings once per process."""
    try:
        settings = load_settings(environ)
    except ConfigError as error:
        raise StartupError(str(error)) from None
    if standalone and settings.queue.backend == "memory" and component != "api":
        raise StartupError(
            "invalid configuration: queue.backend: 'memory' only works when dispatcher and "
            "worker share one process (`scheduler run`); choose postgres, rabbitmq or redis"
        )
    # Files the process creates (the SQLite database and its journals, generated keys) are
    # its own: task processes run as another OS user and must not read them.
    os.umask(0o077)
    redactor = SecretRedactor.from_settings(settings, environ)
    configure_logging(settings.logging, component=component, redactor=redactor)
    if environ is None:
        forget_secret_variables(os.environ)
    return settings
