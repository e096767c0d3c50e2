"""Local admin actions that talk to the database directly (no API needed)."""

from __future__ import annotations

from scheduler_application.accounts.users import AccountService
from scheduler_infrastructure.clock import SystemClock
from scheduler_infrastructure.config import Settings
from scheduler_infrastructure.factories import build_engine, build_unit_of_work_factory
from scheduler_infrastructure.security.passwords import Argon2PasswordHasher


async def ensure_admin(settings: Settings, *, username: str, password: str) -> bool:
    """Create ``username`` as admin unless it exists; True when created."""
    engine = build_engine(settings)
    try:
        service = AccountService(
            uow_factory=build_unit_of_work_factory(engine),
            clock=SystemClock(),
            hasher=Argon2PasswordHasher(),
        )
        _, created = await service.ensure_admin(password, username=username)
        return created
    finally:
        await engine.dispose()
