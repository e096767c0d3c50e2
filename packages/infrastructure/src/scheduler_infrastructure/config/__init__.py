"""Configuration: TOML files in ``config/`` plus ``SCHEDULER__SECTION__KEY`` overrides."""

from scheduler_infrastructure.config.loader import load_settings
from scheduler_infrastructure.config.settings import (
    ApiSettings,
    DatabaseSettings,
    DispatcherSettings,
    LoggingSettings,
    QueueSettings,
    RabbitMQSettings,
    RedisSettings,
    RunSettings,
    Settings,
    TelemetrySettings,
    WorkerSettings,
)

__all__ = [
    "ApiSettings",
    "DatabaseSettings",
    "DispatcherSettings",
    "LoggingSettings",
    "QueueSettings",
    "RabbitMQSettings",
    "RedisSettings",
    "RunSettings",
    "Settings",
    "TelemetrySettings",
    "WorkerSettings",
    "load_settings",
]
