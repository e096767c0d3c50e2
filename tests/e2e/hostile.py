"""What the hostile-user tests share: planted secrets, the attack catalogue, the scan of what
the attacker got back, and token forging with every string it found.

A hostile ``user`` (Mallory) runs tasks on the same install as an honest one (Alice). Whatever
Mallory's tasks print or return is searched for every planted secret, also reversed, in base64
and in hex (value-based redaction could not catch those: the secrets must be out of reach, not
merely masked). Every long string found is then tried as the JWT signing key for an admin token.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
from harness import eventually

PASSWORD = "hostile-e2e-password-1"
TERMINAL = {"succeeded", "failed", "timed_out", "dead_lettered", "cancelled", "lost"}


def planted_secrets() -> dict[str, str]:
    token = secrets.token_hex(6)
    return {
        "jwt_secret": f"planted-jwt-{token}-" + secrets.token_hex(16),
        "secrets_key": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "deploy_token": f"planted-deploy-{token}-" + secrets.token_hex(8),
        "alice_secret": f"planted-alice-{token}-" + secrets.token_hex(8),
    }


def encodings(secret: str) -> list[str]:
    raw = secret.encode()
    return [
        secret,
        secret[::-1],
        base64.b64encode(raw).decode()[:-4],
        base64.urlsafe_b64encode(raw).decode()[:-4],
        binascii.hexlify(raw).decode(),
    ]


def leaks(text: str, planted: dict[str, str]) -> list[str]:
    """The planted secrets ``text`` reveals, in any of the encodings above."""
    return [
        name for name, value in planted.items() if any(form in text for form in encodings(value))
    ]


#: Shell attacks: each tries to reach a secret of the worker or the server.
SHELL_READS: dict[str, str] = {
    "env": "env",
    "parent-environ": "cat /proc/$PPID/environ; cat /proc/$PPID/cmdline",
    "ancestors": (
        'p=$$; while [ "$p" -gt 1 ]; do echo "== $p"; cat /proc/$p/environ;'
        " p=$(awk '{print $4}' /proc/$p/stat); done; cat /proc/1/environ"
    ),
    "all-processes": "for f in /proc/[0-9]*/environ; do cat $f 2>/dev/null; echo; done",
    "descriptors": "ls -l /proc/self/fd; for fd in /proc/self/fd/*; do head -c 4096 $fd; done",
    "files": (
        "cat /proc/self/cwd/config/*.toml var/* var/.* 2>&1 | head -c 200000;"
        " find / -xdev \\( -name '*.db' -o -name '*secret*' -o -name '*.key' \\) -readable"
        ' -type f 2>/dev/null | head -50 | while read f; do head -c 65536 "$f"; done'
    ),
    "identity": "id; cat /proc/self/status | grep -i -E 'uid|gid|cap'",
}

#: Python attacks (``hostile_tasks``): reads, then crashes and resource exhaustion.
PYTHON_READS: dict[str, tuple[str, list[Any]]] = {
    "py-environment": ("hostile_tasks:environment", []),
    "py-ancestors": ("hostile_tasks:ancestors", []),
    "py-every-process": ("hostile_tasks:every_process", []),
    "py-descriptors": ("hostile_tasks:descriptors", []),
    "py-interpreter": ("hostile_tasks:interpreter", []),
    "py-identity": ("hostile_tasks:identity", []),
}
PYTHON_CRASHES: dict[str, tuple[str, list[Any]]] = {
    "py-exit": ("hostile_tasks:hard_exit", []),
    "py-segfault": ("hostile_tasks:segfault", []),
    "py-memory": ("hostile_tasks:eat_memory", []),
    "py-fork-bomb": ("hostile_tasks:fork_bomb", []),
    "py-spin": ("hostile_tasks:spin", []),
    "py-kill-everyone": ("hostile_tasks:kill_everyone", ["bin/scheduler", "ALICE_TOKEN"]),
}


@dataclass
class Tenant:
    """One user of the install, with a client logged in as them."""

    username: str
    headers: dict[str, str]
    user_id: str
    task_ids: dict[str, str] = field(default_factory=dict)

    async def task(self, client: httpx.AsyncClient, name: str, **body: Any) -> httpx.Response:
        response = await client.post(
            "/api/v1/tasks", headers=self.headers, json={"name": name, **body}
        )
        if response.status_code == 201:
            self.task_ids[name] = response.json()["id"]
        return response

    async def trigger(self, client: httpx.AsyncClient, name: str) -> str:
        response = await client.post(
            f"/api/v1/tasks/{self.task_ids[name]}/trigger", headers=self.headers
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def runs(self, client: httpx.AsyncClient, name: str) -> list[dict[str, Any]]:
        response = await client.get(
            "/api/v1/runs",
            headers=self.headers,
            params={"task_id": self.task_ids[name], "limit": 200},
        )
        assert response.status_code == 200, response.text
        return list(response.json()["items"])


async def tenant(
    client: httpx.AsyncClient, admin: dict[str, str], username: str, role: str = "user"
) -> Tenant:
    created = await client.post(
        "/api/v1/users",
        headers=admin,
        json={"username": username, "password": PASSWORD, "role": role},
    )
    assert created.status_code == 201, created.text
    login = await client.post(
        "/api/v1/auth/login", json={"username": username, "password": PASSWORD}
    )
    assert login.status_code == 200, login.text
    return Tenant(
        username=username,
        headers={"Authorization": f"Bearer {login.json()['access_token']}"},
        user_id=created.json()["id"],
    )


async def finished(
    client: httpx.AsyncClient, headers: dict[str, str], run_ids: list[str], *, timeout: float
) -> dict[str, dict[str, Any]]:
    """Every run once it reached a terminal status, by id."""
    done: dict[str, dict[str, Any]] = {}

    async def all_done() -> bool:
        for run_id in run_ids:
            if run_id in done:
                continue
            run = (await client.get(f"/api/v1/runs/{run_id}", headers=headers)).json()
            if run["status"] in TERMINAL:
                done[run_id] = run
        return len(done) == len(run_ids)

    await eventually(all_done, timeout=timeout, interval=0.25)
    return done


async def everything_shown(
    client: httpx.AsyncClient, headers: dict[str, str], runs: dict[str, dict[str, Any]]
) -> str:
    """All a tenant can see of its runs: output, error, result."""
    parts = []
    for run_id, run in runs.items():
        output = await client.get(f"/api/v1/runs/{run_id}/output", headers=headers)
        parts.append(output.text)
        parts.append(str(run.get("error")))
        parts.append(str(run.get("result")))
    return "\n".join(parts)


_CANDIDATE = re.compile(r"[A-Za-z0-9_\-+/=.]{16,}")


def forged_tokens(legit_token: str, shown: str, planted_secret: str) -> tuple[str, list[str]]:
    """A token re-signed with the real secret (the control: it must be accepted, so the
    forging is right), and the same claims signed with every candidate string the attacker
    saw (longest first, at most 400)."""
    claims = jwt.decode(legit_token, options={"verify_signature": False})
    claims["exp"] = int(time.time()) + 600
    control = jwt.encode(claims, planted_secret, algorithm="HS256")
    candidates = sorted(set(_CANDIDATE.findall(shown)), key=len, reverse=True)[:400]
    return control, [jwt.encode(claims, key, algorithm="HS256") for key in candidates]
