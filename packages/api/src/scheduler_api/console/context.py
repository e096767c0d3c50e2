"""The console session as a dependency, and the one way pages and redirects are answered
(so that a refreshed session cookie is never left off)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from litestar import Request
from litestar.di import NamedDependency
from litestar.response import Redirect, Template

from scheduler_api.console.router import SESSION_STATE, console_state
from scheduler_api.console.session import (
    ConsoleSession,
    is_secure,
    open_session,
    session_cookie,
)
from scheduler_api.dependencies import Services
from scheduler_api.services import ApiServices
from scheduler_application.accounts.access import Principal, can_change
from scheduler_application.errors import AlreadyExists, Conflict
from scheduler_domain.accounts import Role
from scheduler_domain.errors import ValidationError
from scheduler_domain.queue_settings import validate_queue_name

E = TypeVar("E", bound=StrEnum)
#: The handlers' name for the signed-in session.
Console = NamedDependency[ConsoleSession]


@dataclass(frozen=True, slots=True)
class Abilities:
    """What the principal's role may do: the pages offer only these actions (the use cases
    refuse the others anyway)."""

    write: bool
    operate: bool
    admin: bool
    see_all: bool
    principal: Principal | None = None
    #: Create, change and delete templates (admins and operators).
    templates: bool = False

    @classmethod
    def of(cls, principal: Principal) -> Abilities:
        role = principal.role
        return cls(
            write=role.can_write_tasks,
            operate=role.operates_workers,
            admin=role.manages_accounts,
            see_all=role.sees_all_tasks,
            principal=principal,
            templates=role in (Role.ADMIN, Role.OPERATOR),
        )

    def change(self, team_id: str) -> bool:
        """Whether the objects of team ``team_id`` are the principal's to change (a viewer
        of the team is offered no action on them)."""
        return self.principal is not None and can_change(self.principal, team_id)


async def provide_console(request: Request[Any, Any, Any], services: Services) -> ConsoleSession:
    state = console_state(request)
    session = await open_session(
        request, auth=services.auth, keys=state.keys, refresher=state.refresher
    )
    # The error page must carry a renewed cookie too (the old refresh token is spent).
    request.state[SESSION_STATE] = session
    return session


def session_cookies(request: Request[Any, Any, Any], session: ConsoleSession) -> list[Any]:
    """The renewed session cookie, when the request renewed it (else nothing)."""
    if session.renewed is None:
        return []
    secure = is_secure(request, always=console_state(request).secure_cookies)
    return [session_cookie(session.renewed, secure=secure)]


def page(
    request: Request[Any, Any, Any],
    session: ConsoleSession,
    template: str,
    *,
    status_code: int = 200,
    **context: Any,
) -> Template:
    values = {
        "principal": session.principal,
        "can": Abilities.of(session.principal),
        "csrf_token": session.csrf_token,
        "path": request.url.path,
        **context,
    }
    return Template(
        template,
        context=values,
        cookies=session_cookies(request, session),
        status_code=status_code,
    )


def form_page(
    request: Request[Any, Any, Any],
    session: ConsoleSession,
    template: str,
    *,
    error: FormError | None,
    values: dict[str, str],
    **context: Any,
) -> Template:
    """A page holding a form: shown again after a refusal with the refused field named, what
    was typed kept, and the refusal's status (422 or 409)."""
    return page(
        request,
        session,
        template,
        error=error,
        values=values,
        status_code=error.status if error else 200,
        **context,
    )


def redirect(request: Request[Any, Any, Any], session: ConsoleSession, target: str) -> Redirect:
    """After an action: back to a page (303, so a reload does not post again)."""
    return Redirect(target, status_code=303, cookies=session_cookies(request, session))


@dataclass(frozen=True, slots=True)
class FormError:
    """A refused form, shown on the form itself: the field it names and why."""

    status: int
    field: str | None
    detail: str


def form_error(error: Exception) -> FormError | None:
    """What a form shows for ``error``: invalid input (422) and clashes (409) stay on the
    form with the field named; anything else (403, 404, ...) is the error page's."""
    if isinstance(error, ValidationError):
        return FormError(422, error.field, error.message)
    if isinstance(error, AlreadyExists | Conflict):
        return FormError(409, error.field, error.message)
    return None


async def form_fields(request: Request[Any, Any, Any]) -> dict[str, str]:
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def choice(kind: type[E], value: str | None, *, field: str) -> E | None:
    """A filter from a form: empty means any; anything else must be one of ``kind``."""
    if not value:
        return None
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise ValidationError(f"{field} must be one of {allowed}", field=field) from None


def text(value: str | None, *, field: str, limit: int = 200) -> str | None:
    if not value:
        return None
    value = value.strip()
    if len(value) > limit:
        raise ValidationError(f"{field} is limited to {limit} characters", field=field)
    return value or None


def queue_filter(value: str | None) -> str | None:
    """A queue name from a form: empty means any; else a valid queue name (422 naming it)."""
    name = text(value, field="queue", limit=100)
    return None if name is None else validate_queue_name(name, field="queue")


async def task_names(
    services: ApiServices, principal: Principal, task_ids: list[str]
) -> dict[str, str]:
    """Names of the tasks a page of runs belongs to, in one read."""
    tasks = await services.tasks.visible(task_ids, principal=principal)
    return {task_id: task.name for task_id, task in tasks.items()}
