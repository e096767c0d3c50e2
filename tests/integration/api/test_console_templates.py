"""The console's templates over ASGI: operators create and change templates from a form (a new
version; a bad field shown on the form), users subscribe with parameters (the refused field
named on the form, the values kept) and pause, resume and remove their subscriptions; viewers
get no form and their forged posts are refused; a subscription of a team the caller is no
member of is a 404, one of a team they only view is read only."""

from __future__ import annotations

import json
import re
from html import unescape
from typing import Any

import pytest
from api_harness import Api, Caller
from console_client import INLINE_SCRIPT, INLINE_STYLE, browser

from scheduler_domain.accounts import Role

pytestmark = pytest.mark.timeout(60)

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1, "description": "where"},
        "units": {"enum": ["metric", "imperial"], "default": "metric"},
        "days": {"type": "integer", "minimum": 1, "maximum": 7, "default": 1},
    },
    "required": ["city"],
    "additionalProperties": False,
}
FORM = {
    "name": "weather",
    "description": "Forecast for a city",
    "executor": "http",
    "params": json.dumps(
        {"url": "https://api.example.com/weather?city={{city}}&units={{units}}&days={{days}}"}
    ),
    "params_schema": json.dumps(SCHEMA),
    "schedule": json.dumps({"interval_seconds": 3600}),
    "min_interval_seconds": "300",
    "allow_custom": "on",
    "policies": json.dumps({"queue": "vendor", "priority": 3}),
}


async def _api_template(api: Api, caller: Caller) -> dict[str, Any]:
    body = {k: json.loads(v) for k, v in FORM.items() if k.startswith(("params", "sched", "pol"))}
    body.update(name="weather", executor="http", schedule_bounds={"min_interval_seconds": 300})
    made = await api.client.post("/api/v1/templates", json=body, headers=caller.headers)
    assert made.status_code == 201, made.text
    return dict(made.json())


def _problem(html: str) -> str:
    found = re.search(r'<p class="card problem" role="alert" id="form-problem">(.*?)</p>', html)
    assert found is not None, html[:3000]
    return found.group(1)


async def test_an_operator_creates_and_changes_a_template_from_the_form(api: Api) -> None:
    await api.user("olga", Role.OPERATOR)
    async with browser(api) as visitor:
        await visitor.sign_in("olga")
        listing = await visitor.page("/ui/templates")
        assert '<a href="/ui/templates" aria-current="page">Templates</a>' in listing.text
        assert "No templates yet." in listing.text

        bad = await visitor.act(
            "/ui/templates", on="/ui/templates/new", **{**FORM, "params_schema": "{not json"}
        )
        assert bad.status_code == 422, bad.text
        assert _problem(bad.text).startswith("<strong>params_schema</strong>: params_schema is")
        assert re.search(
            r'id="t-schema" name="params_schema" rows="8" aria-invalid="true"', bad.text
        )
        assert 'value="Forecast for a city"' in bad.text  # what was typed stays
        unplaced = await visitor.act(
            "/ui/templates",
            on="/ui/templates/new",
            **{**FORM, "params": json.dumps({"x": "{{nowhere}}"})},
        )
        assert unplaced.status_code == 422
        assert "<strong>params</strong>" in _problem(unplaced.text)

        created = await visitor.act("/ui/templates", on="/ui/templates/new", **FORM)
        assert created.status_code == 303, created.text
        page = created.headers["location"]
        detail = await visitor.page(page)
        assert detail.status_code == 200
        html = detail.text
        assert "version 1" in html
        assert "at most one run every 5 minutes" in html
        assert '<dd id="subscription-count">0</dd>' in html
        assert "<td><code>city</code></td><td>string</td><td>yes</td>" in html
        assert "<td><code>units</code></td><td>enum: metric, imperial</td><td>no</td>" in html
        assert not INLINE_SCRIPT.search(html)
        assert not INLINE_STYLE.search(html)

        edit = await visitor.page(f"{page}/edit")
        assert 'name="version" value="1"' in edit.text
        changed = await visitor.act(
            f"{page}/edit",
            on=f"{page}/edit",
            **{**FORM, "description": "Forecast, v2", "policies": "{}", "version": "1"},
        )
        assert changed.status_code == 303, changed.text
        stale = await visitor.act(f"{page}/edit", on=f"{page}/edit", **{**FORM, "version": "1"})
        assert stale.status_code == 409
        assert "<strong>version</strong>" in _problem(stale.text)
    template_id = page.rsplit("/", 1)[1]
    olga = await api.user("olga2", Role.OPERATOR)
    shown = await api.client.get(f"/api/v1/templates/{template_id}", headers=olga.headers)
    assert (shown.json()["version"], shown.json()["description"]) == (2, "Forecast, v2")
    assert shown.json()["policies"] == {}  # a policy left out of the box is cleared


async def test_a_user_subscribes_with_parameters_then_pauses_resumes_and_removes(
    api: Api, alice: Caller
) -> None:
    olga = await api.user("olga", Role.OPERATOR)
    template = await _api_template(api, olga)
    page = f"/ui/templates/{template['id']}"
    async with browser(api) as visitor:
        await visitor.sign_in("alice")
        form = (await visitor.page(page)).text
        assert 'name="param.city"' in form
        assert '<option value="imperial">imperial</option>' in form
        assert "New template" not in (await visitor.page("/ui/templates")).text

        no_city = await visitor.act(f"{page}/subscribe", on=page, **{"param.days": "3"})
        assert no_city.status_code == 422, no_city.text
        assert "<strong>params.city</strong>" in _problem(no_city.text)
        assert re.search(
            r'id="p-city" name="param.city" value="" aria-invalid="true"', no_city.text
        )
        assert 'name="param.days" value="3"' in no_city.text
        too_many = await visitor.act(
            f"{page}/subscribe", on=page, **{"param.city": "Oslo", "param.days": "9"}
        )
        assert too_many.status_code == 422
        assert "<strong>params.days</strong>" in _problem(too_many.text)
        not_a_number = await visitor.act(
            f"{page}/subscribe", on=page, **{"param.city": "Oslo", "param.days": "many"}
        )
        assert "<strong>params.days</strong>: days must be a whole number" in _problem(
            not_a_number.text
        )
        too_often = await visitor.act(
            f"{page}/subscribe", on=page, **{"param.city": "Oslo", "schedule_every": "60"}
        )
        assert too_often.status_code == 422
        assert "<strong>schedule</strong>" in _problem(too_often.text)

        done = await visitor.act(
            f"{page}/subscribe",
            on=page,
            **{"param.city": "Oslo", "param.units": "imperial", "schedule_every": "600"},
        )
        assert done.status_code == 303, done.text
        assert done.headers["location"] == f"{page}#subscriptions"
        (task,) = (
            await api.client.get(
                f"/api/v1/templates/{template['id']}/subscriptions", headers=alice.headers
            )
        ).json()["items"]
        assert task["template_params"] == {"city": "Oslo", "units": "imperial"}
        assert task["schedule"]["interval_seconds"] == 600
        listed = (await visitor.page(page)).text
        assert '<dd id="subscription-count">1 (yours and your teams\')</dd>' in listed
        assert f'data-task-id="{task["id"]}"' in listed

        task_page = (await visitor.page(f"/ui/tasks/{task['id']}")).text
        assert f'<dt>Template</dt><dd><a href="{page}">weather</a>, version 1;' in task_page
        assert '<code>{"city": "Oslo", "units": "imperial"}</code>' in unescape(task_page)
        base = f"{page}/subscriptions/{task['id']}"
        assert (await visitor.act(f"{base}/pause", on=page)).status_code == 303
        paused = await api.client.get(f"/api/v1/tasks/{task['id']}", headers=alice.headers)
        assert paused.json()["enabled"] is False
        assert "Resume" in (await visitor.page(page)).text
        assert (await visitor.act(f"{base}/resume", on=page)).status_code == 303
        resumed = await api.client.get(f"/api/v1/tasks/{task['id']}", headers=alice.headers)
        assert resumed.json()["enabled"] is True
        assert (await visitor.act(f"{base}/remove", on=page)).status_code == 303
        gone = await api.client.get(f"/api/v1/tasks/{task['id']}", headers=alice.headers)
        assert gone.status_code == 404


async def test_viewers_get_no_forms_and_others_subscriptions_are_not_found(
    api: Api, alice: Caller, bob: Caller
) -> None:
    olga = await api.user("olga", Role.OPERATOR)
    carol = await api.user("carol", Role.USER)
    vera = await api.user("vera", Role.VIEWER)
    template = await _api_template(api, olga)
    team = await api.client.post("/api/v1/teams", json={"name": "ops"}, headers=alice.headers)
    assert team.status_code == 201
    for user in (carol.id, vera.id):
        member = await api.client.post(
            "/api/v1/teams/ops/members",
            json={"user": user, "role": "viewer"},
            headers=alice.headers,
        )
        assert member.status_code == 200, member.text
    page = f"/ui/templates/{template['id']}"
    async with browser(api) as owner:
        await owner.sign_in("alice")
        made = await owner.act(
            f"{page}/subscribe", on=page, **{"param.city": "Rome", "team": "ops"}
        )
        assert made.status_code == 303, made.text
    (task,) = (
        await api.client.get(
            f"/api/v1/templates/{template['id']}/subscriptions", headers=alice.headers
        )
    ).json()["items"]
    base = f"{page}/subscriptions/{task['id']}"

    async with browser(api) as viewer:
        await viewer.sign_in("vera")
        html = (await viewer.page(page)).text
        assert "Subscribe</button>" not in html
        assert f'data-task-id="{task["id"]}"' in html  # her team's: she reads it
        assert html.count("<button") == 1  # sign out only
        for action in (f"{page}/subscribe", f"{base}/pause", f"{base}/remove", "/ui/templates"):
            refused = await viewer.act(action, on=page, **{"param.city": "Oslo"})
            assert refused.status_code == 403, (action, refused.text)
        assert (await viewer.page("/ui/templates/new")).status_code == 403
        assert (await viewer.page(f"{page}/edit")).status_code == 403

    async with browser(api) as team_viewer:
        await team_viewer.sign_in("carol")
        html = (await team_viewer.page(page)).text
        assert "read only" in html
        assert (await team_viewer.act(f"{base}/pause", on=page)).status_code == 403

    async with browser(api) as outsider:
        await outsider.sign_in("bob")
        html = (await outsider.page(page)).text
        assert task["id"] not in html
        assert '<dd id="subscription-count">0' in html
        for action in (f"{base}/pause", f"{base}/resume", f"{base}/remove"):
            missing = await outsider.act(action, on=page)
            assert missing.status_code == 404, (action, missing.text)
        wrong_template = await outsider.page("/ui/templates/no-such-template")
        assert wrong_template.status_code == 404

    still = await api.client.get(f"/api/v1/tasks/{task['id']}", headers=alice.headers)
    assert still.json()["enabled"] is True
    refused = await api.client.get(f"/api/v1/tasks/{task['id']}", headers=bob.headers)
    assert refused.status_code == 404


async def test_template_forms_need_the_csrf_token(api: Api) -> None:
    await api.user("olga", Role.OPERATOR)
    async with browser(api) as visitor:
        await visitor.sign_in("olga")
        missing = await visitor.client.post("/ui/templates", data=FORM)
        assert missing.status_code == 403
        assert "CSRF" in missing.text
    root = await api.user("root", Role.ADMIN)
    listed = await api.client.get("/api/v1/templates", headers=root.headers)
    assert listed.json()["items"] == []
