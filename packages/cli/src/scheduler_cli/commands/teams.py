"""``scheduler teams …``: teams, their members and roles (docs/security.md, "Teams")."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from scheduler_cli.commands.options import JsonFlag
from scheduler_cli.context import context_of
from scheduler_cli.output import Column, Output, when

app = typer.Typer(
    help="Teams own tasks; members are viewers, editors or admins of a team. TEAM is a team's "
    "name or id; your personal team is @<your username>.",
    no_args_is_help=True,
)

TeamArg = Annotated[str, typer.Argument(help="The team's name or id.", metavar="TEAM")]
UserArg = Annotated[str, typer.Argument(help="A username or user id.", metavar="USER")]
RoleArg = Annotated[str, typer.Argument(help="viewer, editor (or user) or admin.", metavar="ROLE")]

TEAM_COLUMNS: list[Column] = [
    ("NAME", lambda t: t["name"]),
    ("ID", lambda t: t["id"]),
    ("MY ROLE", lambda t: t["role"] or "-"),
    ("PERSONAL", lambda t: t["personal"]),
    ("CREATED", lambda t: when(t["created_at"])),
]
MEMBER_COLUMNS: list[Column] = [
    ("USERNAME", lambda m: m["username"]),
    ("ROLE", lambda m: m["role"]),
    ("USER ID", lambda m: m["user_id"]),
]


def _path(team: str) -> str:
    return f"/teams/{quote(team, safe='@')}"


def _show(out: Output, team: dict[str, Any]) -> None:
    def render() -> None:
        out.line(f"team {team['name']} ({team['id']}), your role: {team['role'] or '-'}")
        out.table(team["members"], MEMBER_COLUMNS, empty="no members")

    out.show(team, render)


@app.command("list")
def list_teams(ctx: typer.Context, json_output: JsonFlag = False) -> None:
    """Your teams, your personal team included."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        teams = api.get("/teams")["items"]
    out.show(teams, lambda: out.table(teams, TEAM_COLUMNS, empty="no teams"))


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="2-64 lower-case letters, digits, '.', '_', '-'.")],
    json_output: JsonFlag = False,
) -> None:
    """Create a team; you become its admin."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        team = api.post("/teams", {"name": name})
    out.show(team, lambda: out.line(f"created team {team['name']} ({team['id']})"))


@app.command("show")
def show(ctx: typer.Context, team: TeamArg, json_output: JsonFlag = False) -> None:
    """A team and its members."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        found = api.get(_path(team))
    _show(out, found)


@app.command("add")
def add_member(
    ctx: typer.Context, team: TeamArg, user: UserArg, role: RoleArg, json_output: JsonFlag = False
) -> None:
    """Add a member with a role, or change their role (team admins)."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        changed = api.post(f"{_path(team)}/members", {"user": user, "role": role})
    _show(out, changed)


@app.command("set-role")
def set_role(
    ctx: typer.Context, team: TeamArg, user: UserArg, role: RoleArg, json_output: JsonFlag = False
) -> None:
    """Change a member's role (team admins); it counts from their next request."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        changed = api.patch(f"{_path(team)}/members/{quote(user, safe='@')}", {"role": role})
    _show(out, changed)


@app.command("remove")
def remove_member(
    ctx: typer.Context, team: TeamArg, user: UserArg, json_output: JsonFlag = False
) -> None:
    """Remove a member (team admins), or leave a team (yourself)."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        api.delete(f"{_path(team)}/members/{quote(user, safe='@')}")
    out.show({"team": team, "removed": user}, lambda: out.line(f"removed {user} from team {team}"))


@app.command("delete")
def delete(ctx: typer.Context, team: TeamArg, json_output: JsonFlag = False) -> None:
    """Delete a team that owns no task (team admins)."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        api.delete(_path(team))
    out.show({"team": team, "deleted": True}, lambda: out.line(f"deleted team {team}"))
