"""The console's teams: the caller's teams with their role in each, one team with its members
and their roles; a team's admins add members, change their roles and remove them; any member
leaves a team (not their personal one); a user creates a team (becoming its admin) and its
admins delete it once it owns no task.

Everything goes through :class:`~scheduler_application.accounts.teams.TeamService`, as
``/api/v1/teams`` does: a team the caller is no member of is a 404 (unless their global role
sees every team), a member who is no team admin gets a 403 on a change. CSRF and origin were
checked by the router's hook."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.params import PathParameter
from litestar.response import Redirect, Template

from scheduler_api.console.context import (
    Console,
    FormError,
    form_error,
    form_fields,
    form_page,
    redirect,
)
from scheduler_api.dependencies import Services
from scheduler_application.accounts.teams import TeamView
from scheduler_domain.errors import ValidationError
from scheduler_domain.teams import TeamRole, parse_team_role

TeamRef = Annotated[str, PathParameter(max_length=100)]
UserRef = Annotated[str, PathParameter(max_length=100)]


def manages(console: Console, view: TeamView) -> bool:
    """Whether the page offers the member changes (the use case decides anyway)."""
    if view.team.personal:
        return False
    if console.principal.role.manages_accounts:
        return True
    return view.role is not None and view.role.manages_members


def _user(form: dict[str, str]) -> str:
    user = form.get("user", "").strip()
    if not user or len(user) > 100:
        raise ValidationError("user must be a username or user id", field="user")
    return user


async def _list_page(
    request: Request[Any, Any, Any],
    console: Console,
    services: Services,
    *,
    error: FormError | None = None,
    values: dict[str, str] | None = None,
) -> Template:
    teams = await services.teams.list_mine(principal=console.principal)
    return form_page(
        request,
        console,
        "teams.html",
        title="Teams",
        teams=teams,
        error=error,
        values=values or {},
    )


async def _team_page(
    request: Request[Any, Any, Any],
    console: Console,
    services: Services,
    team: str,
    *,
    error: FormError | None = None,
    values: dict[str, str] | None = None,
) -> Template:
    view = await services.teams.get(team, principal=console.principal)
    return form_page(
        request,
        console,
        "team.html",
        title=f"Team {view.team.name}",
        view=view,
        manages=manages(console, view),
        roles=[r.value for r in TeamRole],
        error=error,
        values=values or {},
    )


class TeamsController(Controller):
    @get("/teams")
    async def teams(
        self, request: Request[Any, Any, Any], console: Console, services: Services
    ) -> Template:
        return await _list_page(request, console, services)

    @post("/teams")
    async def create(
        self, request: Request[Any, Any, Any], console: Console, services: Services
    ) -> Template | Redirect:
        form = await form_fields(request)
        try:
            view = await services.teams.create(
                form.get("name", "").strip(), principal=console.principal
            )
        except Exception as error:
            shown = form_error(error)
            if shown is None:
                raise
            return await _list_page(request, console, services, error=shown, values=form)
        return redirect(request, console, f"/ui/teams/{view.team.id}")

    @get("/teams/{team:str}")
    async def team(
        self, request: Request[Any, Any, Any], console: Console, services: Services, team: TeamRef
    ) -> Template:
        return await _team_page(request, console, services, team)

    @post("/teams/{team:str}/members")
    async def add_member(
        self, request: Request[Any, Any, Any], console: Console, services: Services, team: TeamRef
    ) -> Template | Redirect:
        form = await form_fields(request)
        try:
            view = await services.teams.set_member(
                team, _user(form), parse_team_role(form.get("role")), principal=console.principal
            )
        except Exception as error:
            shown = form_error(error)
            if shown is None:
                raise
            return await _team_page(request, console, services, team, error=shown, values=form)
        return redirect(request, console, f"/ui/teams/{view.team.id}")

    @post("/teams/{team:str}/members/{user:str}/role")
    async def change_role(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
        team: TeamRef,
        user: UserRef,
    ) -> Template | Redirect:
        form = await form_fields(request)
        try:
            view = await services.teams.change_role(
                team, user, parse_team_role(form.get("role")), principal=console.principal
            )
        except Exception as error:
            shown = form_error(error)
            if shown is None:
                raise
            return await _team_page(request, console, services, team, error=shown)
        return redirect(request, console, f"/ui/teams/{view.team.id}")

    @post("/teams/{team:str}/members/{user:str}/remove")
    async def remove_member(
        self,
        request: Request[Any, Any, Any],
        console: Console,
        services: Services,
        team: TeamRef,
        user: UserRef,
    ) -> Template | Redirect:
        try:
            view = await services.teams.remove_member(team, user, principal=console.principal)
        except Exception as error:
            shown = form_error(error)
            if shown is None:
                raise
            return await _team_page(request, console, services, team, error=shown)
        if view.role is None and not console.principal.role.sees_all_tasks:
            return redirect(request, console, "/ui/teams")  # left the team
        return redirect(request, console, f"/ui/teams/{view.team.id}")

    @post("/teams/{team:str}/delete")
    async def delete(
        self, request: Request[Any, Any, Any], console: Console, services: Services, team: TeamRef
    ) -> Template | Redirect:
        try:
            await services.teams.delete(team, principal=console.principal)
        except Exception as error:
            shown = form_error(error)
            if shown is None:
                raise
            return await _team_page(request, console, services, team, error=shown)
        return redirect(request, console, "/ui/teams")
