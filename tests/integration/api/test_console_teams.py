"""The console's teams over ASGI: a user creates a team (its admin), adds members, changes their
roles and removes them; the last admin cannot be demoted (the refusal on the page); members who
are no team admin see the members without any form and their forged posts are refused;
outsiders get 404 for the team's page and every change."""

from __future__ import annotations

import re

import pytest
from api_harness import Api, Caller
from console_client import INLINE_SCRIPT, INLINE_STYLE, browser

from scheduler_domain.accounts import Role

pytestmark = pytest.mark.timeout(60)


def _members(html: str) -> dict[str, str]:
    """Username → role as the page shows it (the selected option, or the plain text)."""
    found = {}
    for name, cell in re.findall(
        r'<tr data-member="([^"]+)"><td>[^<]*</td>\s*<td>(.*?)</td>', html, re.S
    ):
        selected = re.search(r'<option value="(\w+)" selected>', cell)
        found[name] = selected.group(1) if selected else cell.strip()
    return found


async def test_a_team_admin_manages_members_from_the_console(
    api: Api, alice: Caller, bob: Caller
) -> None:
    await api.user("carol", Role.USER)
    async with browser(api) as visitor:
        await visitor.sign_in("alice")
        listing = (await visitor.page("/ui/teams")).text
        assert '<a href="/ui/teams" aria-current="page">Teams</a>' in listing
        assert ">@alice</a></td><td>admin</td><td>personal</td>" in listing

        bad = await visitor.act("/ui/teams", on="/ui/teams", name="No Spaces!")
        assert bad.status_code == 422
        assert "<strong>name</strong>" in bad.text
        assert 'value="No Spaces!"' in bad.text
        created = await visitor.act("/ui/teams", on="/ui/teams", name="ops")
        assert created.status_code == 303, created.text
        page = created.headers["location"]
        assert _members((await visitor.page(page)).text) == {"alice": "admin"}

        unknown = await visitor.act(f"{page}/members", on=page, user="nobody", role="editor")
        assert unknown.status_code == 404  # the user, as the API answers
        bad_role = await visitor.act(f"{page}/members", on=page, user="bob", role="boss")
        assert bad_role.status_code == 422
        assert "<strong>role</strong>" in bad_role.text
        for user, role in (("bob", "editor"), ("carol", "viewer")):
            added = await visitor.act(f"{page}/members", on=page, user=user, role=role)
            assert added.status_code == 303, added.text
        html = (await visitor.page(page)).text
        assert _members(html) == {"alice": "admin", "bob": "editor", "carol": "viewer"}
        assert not INLINE_SCRIPT.search(html)
        assert not INLINE_STYLE.search(html)

        promoted = await visitor.act(f"{page}/members/{bob.id}/role", on=page, role="admin")
        assert promoted.status_code == 303
        last = await visitor.act(f"{page}/members/{alice.id}/role", on=page, role="viewer")
        assert last.status_code == 303  # bob is an admin too now
        assert _members((await visitor.page(page)).text)["alice"] == "viewer"
    shown = await api.client.get("/api/v1/teams/ops", headers=bob.headers)
    assert {m["username"]: m["role"] for m in shown.json()["members"]} == {
        "alice": "viewer",
        "bob": "admin",
        "carol": "viewer",
    }
    async with browser(api) as admin:
        await admin.sign_in("bob")
        alone = await admin.act(f"{page}/members/{bob.id}/role", on=page, role="editor")
        assert alone.status_code == 409
        assert "a team keeps at least one admin" in alone.text
        carol = shown.json()["members"]
        carol_id = next(m["user_id"] for m in carol if m["username"] == "carol")
        removed = await admin.act(f"{page}/members/{carol_id}/remove", on=page)
        assert removed.status_code == 303
        assert "carol" not in _members((await admin.page(page)).text)


async def test_members_without_the_admin_role_only_read_and_outsiders_get_404(
    api: Api, alice: Caller, bob: Caller
) -> None:
    mallory = await api.user("mallory", Role.USER)
    vera = await api.user("vera", Role.VIEWER)
    made = await api.client.post("/api/v1/teams", json={"name": "ops"}, headers=alice.headers)
    team = made.json()
    for user, role in (("bob", "editor"), (vera.id, "viewer")):
        added = await api.client.post(
            "/api/v1/teams/ops/members", json={"user": user, "role": role}, headers=alice.headers
        )
        assert added.status_code == 200, added.text
    page = f"/ui/teams/{team['id']}"
    changes = (
        (f"{page}/members", {"user": "mallory", "role": "admin"}),
        (f"{page}/members/{alice.id}/role", {"role": "viewer"}),
        (f"{page}/members/{alice.id}/remove", {}),
        (f"{page}/delete", {}),
    )
    for username in ("bob", "vera"):
        async with browser(api) as member:
            await member.sign_in(username)
            html = (await member.page(page)).text
            assert _members(html) == {"alice": "admin", "bob": "editor", "vera": "viewer"}
            assert "Add member" not in html
            assert html.count("<button") == 2  # sign out, and leave the team
            assert "Leave team" in html
            for action, fields in changes:
                refused = await member.act(action, on=page, **fields)
                assert refused.status_code == 403, (username, action, refused.text)
    async with browser(api) as outsider:
        await outsider.sign_in("mallory")
        assert team["id"] not in (await outsider.page("/ui/teams")).text
        for path in (page, "/ui/teams/ops"):
            missing = await outsider.page(path)
            assert missing.status_code == 404
            assert "alice" not in missing.text
        for action, fields in changes:
            refused = await outsider.act(action, on="/ui/teams", **fields)
            assert refused.status_code == 404, (action, refused.text)
    shown = await api.client.get("/api/v1/teams/ops", headers=alice.headers)
    assert len(shown.json()["members"]) == 3
    assert mallory.id not in {m["user_id"] for m in shown.json()["members"]}

    async with browser(api) as leaving:
        await leaving.sign_in("vera")
        left = await leaving.act(f"{page}/members/{vera.id}/remove", on=page)
        assert left.status_code == 303
        assert left.headers["location"] == "/ui/teams"
        assert (await leaving.page(page)).status_code == 404
