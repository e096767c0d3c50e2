"""The console's limits and circuits over ASGI: operators create, change and delete named limits
from forms (a bad field named on the form), everyone who reads tasks sees each limit's use (in
flight against its cap, per partition) and the circuit breakers with their state and why;
users and viewers get no form and their forged posts are refused."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from api_harness import Api, Caller
from console_client import INLINE_SCRIPT, INLINE_STYLE, browser
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_domain.accounts import Role
from scheduler_infrastructure.persistence.tables import circuits

pytestmark = pytest.mark.timeout(60)

FORM = {
    "name": "vendor",
    "rate": "100/s",
    "partition_by": "owner",
    "partition_rate": "5/m",
    "max_concurrency": "50",
    "failure_threshold": "",
    "cool_down_seconds": "",
    "description": "The weather vendor",
}


def _problem(html: str) -> str:
    found = re.search(r'<p class="card problem" role="alert" id="form-problem">(.*?)</p>', html)
    assert found is not None, html[:3000]
    return found.group(1)


async def test_an_operator_creates_changes_and_deletes_a_limit_and_sees_its_use(
    api: Api, alice: Caller
) -> None:
    otto = await api.user("otto", Role.OPERATOR)
    async with browser(api) as visitor:
        await visitor.sign_in("otto")
        empty = await visitor.page("/ui/limits")
        assert '<a href="/ui/limits" aria-current="page">Limits</a>' in empty.text
        assert "No named limits yet." in empty.text
        assert "No circuit has counted a failure yet." in empty.text

        bad = await visitor.act("/ui/limits", on="/ui/limits", **{**FORM, "rate": "fast"})
        assert bad.status_code == 422, bad.text
        assert _problem(bad.text).startswith("<strong>rate</strong>:")
        assert 'name="rate" value="fast" placeholder="100/s" size="10" aria-invalid="true"' in (
            bad.text
        )
        whole = await visitor.act(
            "/ui/limits", on="/ui/limits", **{**FORM, "max_concurrency": "lots"}
        )
        assert "<strong>max_concurrency</strong>" in _problem(whole.text)
        no_partition_rate = await visitor.act(
            "/ui/limits", on="/ui/limits", **{**FORM, "partition_rate": ""}
        )
        assert "<strong>partition_rate</strong>" in _problem(no_partition_rate.text)

        created = await visitor.act("/ui/limits", on="/ui/limits", **FORM)
        assert created.status_code == 303, created.text
        assert created.headers["location"] == "/ui/limits/vendor"
        twice = await visitor.act("/ui/limits", on="/ui/limits", **FORM)
        assert twice.status_code == 409
        assert "<strong>name</strong>" in _problem(twice.text)

        task = await api.task(alice, limits=["vendor"])
        run = await api.run(alice, task["id"])
        assert run["status"] == "queued"
        listing = (await visitor.page("/ui/limits")).text
        row = re.search(r'<tr data-limit="vendor">.*?</tr>', listing, re.S)
        assert row is not None, listing
        assert "<td>100/s</td><td>5/m per owner</td>" in row.group(0)
        assert '1 of 50 <meter min="0" max="50" value="1"' in row.group(0)
        assert "1 task</td>" in row.group(0)
        detail = (await visitor.page("/ui/limits/vendor")).text
        assert f"<tr><td><code>{alice.id}</code></td><td>1</td>" in detail
        assert not INLINE_SCRIPT.search(detail)
        assert not INLINE_STYLE.search(detail)

        changed = await visitor.act(
            "/ui/limits/vendor/edit",
            on="/ui/limits/vendor",
            **{**FORM, "rate": "10/s", "partition_by": "", "partition_rate": ""},
        )
        assert changed.status_code == 303, changed.text
        shown = await api.client.get("/api/v1/limits/vendor", headers=otto.headers)
        assert (shown.json()["rate"], shown.json()["partition_by"]) == ("10/s", None)
        refused_edit = await visitor.act(
            "/ui/limits/vendor/edit", on="/ui/limits/vendor", **{**FORM, "cool_down_seconds": "x"}
        )
        assert refused_edit.status_code == 422
        assert "<strong>cool_down_seconds</strong>" in _problem(refused_edit.text)

        # A limit a task still names is not deleted: the refusal names the task.
        refused_delete = await visitor.act("/ui/limits/vendor/delete", on="/ui/limits/vendor")
        assert refused_delete.status_code == 409, refused_delete.text
        assert task["name"] in refused_delete.text
        removed = await api.client.delete(f"/api/v1/tasks/{task['id']}", headers=alice.headers)
        assert removed.status_code == 204, removed.text
        deleted = await visitor.act("/ui/limits/vendor/delete", on="/ui/limits/vendor")
        assert deleted.status_code == 303
        assert (await visitor.page("/ui/limits/vendor")).status_code == 404
    gone = await api.client.get("/api/v1/limits/vendor", headers=otto.headers)
    assert gone.status_code == 404


async def test_circuits_show_their_state_and_why(api: Api, sqlite_engine: AsyncEngine) -> None:
    otto = await api.user("otto", Role.OPERATOR)
    made = await api.client.put(
        "/api/v1/limits/vendor",
        json={"rate": "10/s", "failure_threshold": 3, "cool_down_seconds": 60},
        headers=otto.headers,
    )
    assert made.status_code == 201, made.text
    now = datetime.now(UTC)
    async with sqlite_engine.begin() as conn:
        await conn.execute(
            insert(circuits),
            [
                {
                    "name": "limit:vendor",
                    "state": "open",
                    "failures": 3,
                    "opened_at": now - timedelta(seconds=10),
                    "updated_at": now,
                },
                {
                    "name": "host:api.example.com",
                    "state": "closed",
                    "failures": 2,
                    "opened_at": None,
                    "updated_at": now,
                },
            ],
        )
    alice = await api.user("alice")
    task = await api.task(alice, limits=["vendor"])
    for _ in range(2):
        held = await api.run(alice, task["id"])
        assert held["status"] == "pending"  # the open circuit holds it
    listed = await api.client.get("/api/v1/circuits", headers=alice.headers)
    assert {c["name"]: c["held_runs"] for c in listed.json()["items"]} == {
        "limit:vendor": 2,
        "host:api.example.com": None,
    }
    await api.user("vera", Role.VIEWER)
    async with browser(api) as viewer:
        await viewer.sign_in("vera")
        html = (await viewer.page("/ui/limits")).text
        rows = re.findall(r'<tr data-circuit="([^"]+)">', html)
        assert rows == ["limit:vendor", "host:api.example.com"]  # open ones first
        assert '<span class="status status-open">open</span>' in html
        assert "3 failed runs in a row; runs bound for it are held pending" in html
        assert re.search(r"a probe goes through in [0-9.]+ (s|seconds)", html), html
        assert "2 of 5 failures in a row" in html  # the host's: the configured default
        held_cells = re.findall(r'<td class="held">([^<]*)</td>', html)
        assert held_cells == ["2", "not counted"]
        detail = (await viewer.page("/ui/limits/vendor")).text
        assert 'Limit vendor <span class="status status-open">open</span>' in detail


@pytest.mark.parametrize("role", [Role.USER, Role.VIEWER])
async def test_users_and_viewers_get_no_limit_forms_and_forged_posts_are_refused(
    api: Api, role: Role
) -> None:
    otto = await api.user("otto", Role.OPERATOR)
    made = await api.client.put(
        "/api/v1/limits/vendor", json={"rate": "10/s"}, headers=otto.headers
    )
    assert made.status_code == 201
    await api.user("pat", role)
    async with browser(api) as visitor:
        await visitor.sign_in("pat")
        for path in ("/ui/limits", "/ui/limits/vendor"):
            html = (await visitor.page(path)).text
            assert html.count("<button") == 1, (path, html)  # sign out only
        for action in ("/ui/limits", "/ui/limits/vendor/edit", "/ui/limits/vendor/delete"):
            refused = await visitor.act(action, on="/ui/limits", **{**FORM, "rate": "1/s"})
            assert refused.status_code == 403, (action, refused.text)
    kept = await api.client.get("/api/v1/limits/vendor", headers=otto.headers)
    assert kept.json()["rate"] == "10/s"
