"""``/api/v1/teams``: teams, their members and roles (docs/security.md, "Teams").

``{team}`` is a team's id or name; ``{user}`` a user's id or username. A team the caller is no
member of is 404 (unless their global role sees every team), as a task would be.
"""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Response, delete, get, patch, post
from litestar.params import JSONBody, PathParameter

from scheduler_api.auth import WORKERS_REFUSED
from scheduler_api.dependencies import CurrentPrincipal, Services
from scheduler_api.openapi import problems
from scheduler_api.schemas.teams import MemberIn, RoleIn, TeamCreateIn, TeamList, TeamOut
from scheduler_domain.teams import parse_team_role

TeamRef = Annotated[str, PathParameter(description="Team id or name", max_length=100)]
UserRef = Annotated[str, PathParameter(description="User id or username", max_length=100)]


class TeamController(Controller):
    path = "/teams"
    tags = ("teams",)
    opt = {WORKERS_REFUSED: True}  # noqa: RUF012

    @post("/", summary="Create a team (the caller becomes its admin)", responses=problems(409))
    async def create(
        self, data: JSONBody[TeamCreateIn], services: Services, principal: CurrentPrincipal
    ) -> Response[TeamOut]:
        view = await services.teams.create(data.name, principal=principal)
        return Response(
            TeamOut.of(view),
            status_code=201,
            headers={"Location": f"/api/v1/teams/{view.team.id}"},
        )

    @get("/", summary="The caller's teams (their personal team included)", responses=problems())
    async def list_mine(self, services: Services, principal: CurrentPrincipal) -> TeamList:
        views = await services.teams.list_mine(principal=principal)
        return TeamList(items=[TeamOut.of(v) for v in views])

    @get("/{team:str}", summary="A team and its members", responses=problems(404))
    async def show(self, team: TeamRef, services: Services, principal: CurrentPrincipal) -> TeamOut:
        return TeamOut.of(await services.teams.get(team, principal=principal))

    @delete(
        "/{team:str}",
        status_code=204,
        summary="Delete a team that owns no task (team admins)",
        responses=problems(404, 409),
    )
    async def remove(self, team: TeamRef, services: Services, principal: CurrentPrincipal) -> None:
        await services.teams.delete(team, principal=principal)

    @post(
        "/{team:str}/members",
        status_code=200,
        summary="Add a member with a role, or change their role (team admins)",
        responses=problems(404, 409),
    )
    async def add_member(
        self,
        team: TeamRef,
        data: JSONBody[MemberIn],
        services: Services,
        principal: CurrentPrincipal,
    ) -> TeamOut:
        role = parse_team_role(data.role)
        view = await services.teams.set_member(team, data.user, role, principal=principal)
        return TeamOut.of(view)

    @patch(
        "/{team:str}/members/{user:str}",
        summary="Change a member's role (team admins); it counts from the member's next request",
        responses=problems(404, 409),
    )
    async def change_role(
        self,
        team: TeamRef,
        user: UserRef,
        data: JSONBody[RoleIn],
        services: Services,
        principal: CurrentPrincipal,
    ) -> TeamOut:
        role = parse_team_role(data.role)
        return TeamOut.of(await services.teams.change_role(team, user, role, principal=principal))

    @delete(
        "/{team:str}/members/{user:str}",
        status_code=200,
        summary="Remove a member (team admins), or leave the team (any member, oneself)",
        responses=problems(404, 409),
    )
    async def remove_member(
        self, team: TeamRef, user: UserRef, services: Services, principal: CurrentPrincipal
    ) -> TeamOut:
        return TeamOut.of(await services.teams.remove_member(team, user, principal=principal))
