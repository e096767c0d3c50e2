"""Names where ids are expected: tasks, workers, users and API keys may be given either way.

An id (a UUID) is used as it is. A name is looked up through the list endpoint (tasks with its
``name_prefix`` filter, the others by reading the list) and must match exactly; when several
owners use the same name, the caller's own object wins, and otherwise the command asks for an id.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from scheduler_cli.client import ApiClient
from scheduler_cli.errors import ApiError, CliError

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def is_id(value: str) -> bool:
    return bool(_UUID.match(value))


def task(client: ApiClient, ref: str) -> dict[str, Any]:
    """The task ``ref`` names (an id or a name)."""
    if is_id(ref):
        found: dict[str, Any] = client.get(f"/tasks/{ref.lower()}")
        return found
    candidates = client.items("/tasks", name_prefix=ref)
    return _one(client, "task", ref, [t for t in candidates if t.get("name") == ref])


def task_id(client: ApiClient, ref: str) -> str:
    return ref.lower() if is_id(ref) else str(task(client, ref)["id"])


def worker_id(client: ApiClient, ref: str) -> str:
    if is_id(ref):
        return ref.lower()
    return str(
        live_worker([w for w in client.items("/workers") if w.get("name") == ref], ref)["id"]
    )


def live_worker(named: list[dict[str, Any]], ref: str) -> dict[str, Any]:
    """The worker a name means: the live one (online or draining). A restarted process leaves
    its old record offline beside the new one, so offline records count only when no live
    worker has the name (then the most recently heard of). Two live workers of one name are
    ambiguous."""
    if not named:
        raise ApiError(f"no worker named {ref!r}", status=404, code="not-found")
    live = [w for w in named if w.get("status") != "offline"]
    if len(live) > 1:
        raise CliError(
            f"{len(live)} live workers are named {ref!r} ({_ids(live)}); give the id instead"
        )
    if live:
        return live[0]
    return max(named, key=lambda w: str(w.get("heartbeat_at") or ""))


def user_id(client: ApiClient, ref: str) -> str:
    if is_id(ref):
        return ref.lower()
    matches = [u for u in client.items("/users") if u.get("username") == ref]
    return str(_one(client, "user", ref, matches, owner_key=None)["id"])


def team_id(client: ApiClient, ref: str) -> str:
    """A team by id or name (the server resolves names: ``GET /teams/{name}``)."""
    if is_id(ref):
        return ref.lower()
    return str(client.get(f"/teams/{quote(ref, safe='@')}")["id"])


def api_key_id(client: ApiClient, ref: str) -> str:
    if is_id(ref):
        return ref.lower()
    matches = [k for k in client.items("/api-keys") if k.get("name") == ref]
    live = [k for k in matches if not k.get("revoked_at")]
    return str(_one(client, "API key", ref, live or matches)["id"])


def _one(
    client: ApiClient,
    kind: str,
    ref: str,
    matches: list[dict[str, Any]],
    *,
    owner_key: str | None = "owner_id",
) -> dict[str, Any]:
    if not matches:
        raise ApiError(f"no {kind} named {ref!r}", status=404, code="not-found")
    if len(matches) == 1:
        return matches[0]
    if owner_key is not None:
        me = client.get("/auth/me")["user"]["id"]
        mine = [m for m in matches if m.get(owner_key) == me]
        if len(mine) == 1:
            return mine[0]
    raise CliError(
        f"{len(matches)} {kind}s are named {ref!r} ({_ids(matches)}); give the id instead"
    )


def _ids(items: Iterable[dict[str, Any]]) -> str:
    return ", ".join(str(item.get("id")) for item in items)
