"""Priorities as every backend orders them: 0 (lowest) to 9 (highest)."""

from __future__ import annotations

MIN_PRIORITY = 0
MAX_PRIORITY = 9
PRIORITIES = range(MAX_PRIORITY, MIN_PRIORITY - 1, -1)
"""Highest first: the order in which bands are read."""


def clamp(priority: int) -> int:
    """``priority`` moved into 0-9, as RabbitMQ does with ``x-max-priority: 9``."""
    return MIN_PRIORITY if priority < MIN_PRIORITY else min(priority, MAX_PRIORITY)
