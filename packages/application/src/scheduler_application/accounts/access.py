"""Who is asking, and the access rules every use case applies before it reads or writes.

Two kinds of refusal, deliberately different:

* the caller's *role* may never do the action (a viewer editing, a worker reading tasks):
  :class:`PermissionDenied` — it reveals nothing about any object;
* the object belongs to someone the caller may not see: :class:`NotFound`, exactly as if it did
  not exist, so ids cannot be probed (BOLA).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scheduler_application.errors import NotFound, PermissionDenied
from scheduler_domain.accounts import Role


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a user, an API key (``via="api_key"``) or the system itself.

    ``subject_id`` is the user (an API key's owner); ``key_id`` the API key presented, if any.
    Two principals are equal when they act as the same user with the same role, whichever
    key they came with."""

    subject_id: str
    role: Role
    via: str = "user"
    key_id: str | None = field(default=None, compare=False)

    @property
    def credential(self) -> str:
        """The credential itself: ``api_key:<key id>`` or ``user:<user id>`` — what a worker
        registered over HTTP is bound to (two keys of one owner are two credentials)."""
        if self.via == "api_key" and self.key_id is not None:
            return f"api_key:{self.key_id}"
        return f"{self.via}:{self.subject_id}"

    @property
    def actor(self) -> str:
        """How the caller appears in the audit trail (``RunEvent.actor``)."""
        return f"{self.via}:{self.subject_id}"


#: The dispatcher's and workers' own loops: sees everything, owns nothing.
SYSTEM = Principal(subject_id="system", role=Role.ADMIN, via="system")


def can_see(principal: Principal, owner_id: str) -> bool:
    """Whether ``principal`` may know that an object owned by ``owner_id`` exists."""
    if not principal.role.can_read_tasks:
        return False
    return principal.role.sees_all_tasks or principal.subject_id == owner_id


def owner_scope(principal: Principal) -> str | None:
    """The owner a list must be restricted to; None when the role sees every owner's objects."""
    ensure_can_read_tasks(principal)
    return None if principal.role.sees_all_tasks else principal.subject_id


def ensure_can_read_tasks(principal: Principal) -> None:
    if not principal.role.can_read_tasks:
        raise PermissionDenied(f"role {principal.role.value!r} cannot read tasks or runs")


def ensure_can_write_tasks(principal: Principal) -> None:
    if not principal.role.can_write_tasks:
        raise PermissionDenied(f"role {principal.role.value!r} cannot change tasks or runs")


def ensure_visible(principal: Principal, owner_id: str, *, kind: str, object_id: str) -> None:
    """Raise NotFound for an object the caller may not see (after the role check passed)."""
    if not can_see(principal, owner_id):
        raise NotFound(f"{kind} {object_id} not found", field="id")


def ensure_operates_workers(principal: Principal) -> None:
    if not principal.role.operates_workers:
        raise PermissionDenied(f"role {principal.role.value!r} cannot operate workers")


def ensure_runs_work(principal: Principal) -> None:
    """The worker protocol (claim, heartbeat, complete): adapters call this before delegating."""
    if not principal.role.runs_work:
        raise PermissionDenied(f"role {principal.role.value!r} cannot use the worker protocol")


def ensure_manages_accounts(principal: Principal) -> None:
    if not principal.role.manages_accounts:
        raise PermissionDenied(f"role {principal.role.value!r} cannot manage accounts")
