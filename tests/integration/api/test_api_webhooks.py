"""``/api/v1/webhooks`` through the real composition root: the secret shown once (and sealed
at rest), validation naming the field, owner scoping, the outbound policy at subscription
time, the test event signed and logged, the delivery log, changes and deletion."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from api_harness import Api, api_settings, running_api, wipe
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_domain.accounts import Role
from scheduler_infrastructure.config.settings import EventsSettings, WebhookSettings
from scheduler_infrastructure.persistence.tables import webhooks
from scheduler_infrastructure.security.secret_box import FernetSecretBox, generate_key
from webhook_receiver import receiving, verify

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def hooks_api(sqlite_engine: AsyncEngine) -> AsyncIterator[Api]:
    """Loopback allowed for webhooks only, by the explicit ``events.webhooks.allow``."""
    settings = replace(
        api_settings(), events=EventsSettings(webhooks=WebhookSettings(allow=("127.0.0.1",)))
    )
    box = FernetSecretBox(keys=[generate_key()])
    async with running_api(sqlite_engine, settings=settings, secret_box=box) as api:
        yield api
    await wipe(sqlite_engine)


async def test_webhook_lifecycle_over_the_api(hooks_api: Api, sqlite_engine: AsyncEngine) -> None:
    api = hooks_api
    alice = await api.user("alice")
    bob = await api.user("bob")
    admin = await api.user("root", Role.ADMIN)
    async with receiving() as receiver:
        created = await api.client.post(
            "/api/v1/webhooks",
            json={"url": receiver.url, "event_types": ["run.*", "task.created"]},
            headers=alice.headers,
        )
        assert created.status_code == 201, created.text
        assert created.headers["cache-control"] == "no-store"
        secret = created.json()["secret"]
        hook = created.json()["webhook"]
        assert secret.startswith("whsec_")
        assert "secret" not in hook
        path = f"/api/v1/webhooks/{hook['id']}"

        shown = await api.client.get(path, headers=alice.headers)
        assert shown.status_code == 200
        assert secret not in shown.text
        async with sqlite_engine.connect() as conn:
            stored = (await conn.execute(select(webhooks.c.secret))).scalar_one()
        assert stored.startswith("sealed:")
        assert secret not in stored

        assert (await api.client.get(path, headers=bob.headers)).status_code == 404
        mine = await api.client.get("/api/v1/webhooks", headers=bob.headers)
        assert mine.json()["items"] == []
        everyone = await api.client.get("/api/v1/webhooks", headers=admin.headers)
        assert [w["id"] for w in everyone.json()["items"]] == [hook["id"]]

        tested = await api.client.post(f"{path}/test", headers=alice.headers)
        assert tested.status_code == 200, tested.text
        assert tested.json()["status"] == "delivered"
        (request,) = receiver.requests
        assert verify(secret, request)
        assert json.loads(request.body)["type"] == "webhook.test"

    log = await api.client.get(f"{path}/deliveries", headers=alice.headers)
    assert [d["event_id"] for d in log.json()["items"]] == [request.headers["webhook-id"]]
    assert log.json()["items"][0]["response_code"] == 200

    changed = await api.client.patch(
        path, json={"enabled": False, "description": "ops"}, headers=alice.headers
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["enabled"], changed.json()["description"]) == (False, "ops")
    assert (await api.client.delete(path, headers=bob.headers)).status_code == 404
    assert (await api.client.delete(path, headers=alice.headers)).status_code == 204
    assert (await api.client.get(path, headers=alice.headers)).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://example.com/"}, "url"),
        ({"url": "http://10.0.0.8/hook"}, "url"),
        ({"url": "http://169.254.169.254/latest"}, "url"),
        ({"url": "https://example.com/", "event_types": ["Run Failed"]}, "event_types"),
        ({"url": "https://example.com/", "statuses": ["nope"]}, "statuses"),
        ({"url": "https://example.com/", "colour": "red"}, "colour"),
    ],
)
async def test_bad_subscriptions_are_422_naming_the_field(
    hooks_api: Api, body: dict[str, object], field: str
) -> None:
    alice = await hooks_api.user("alice")
    response = await hooks_api.client.post("/api/v1/webhooks", json=body, headers=alice.headers)
    assert response.status_code in (400, 422), response.text
    assert field in (response.json().get("field") or response.text)


async def test_loopback_is_refused_without_the_explicit_allowance(
    sqlite_engine: AsyncEngine,
) -> None:
    async with running_api(sqlite_engine) as api:
        alice = await api.user("alice")
        response = await api.client.post(
            "/api/v1/webhooks", json={"url": "http://127.0.0.1:8080/hook"}, headers=alice.headers
        )
    await wipe(sqlite_engine)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "url"
    assert "loopback" in response.json()["detail"]
