"""A hostile ``user`` on a shared install: nothing its tasks do reaches the worker's or the
server's secrets, forges a token, takes the worker down, or costs another user a run.

Run for real against ``scheduler run`` (the embedded default, as root in CI: tasks run as the
unprivileged account) and against the separate binaries on PostgreSQL. The deployment in the
sandbox tests is the worst case for the sandbox: the deployer let users run ``shell`` and
``python`` (``executors.*.roles``) and registered the attacker's module
(``executors.python.allow``), so every way out the task code can try, it tries.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from embedded import ADMIN_PASSWORD, Embedded, embedded
from harness import Cluster, eventually
from hostile import (
    PYTHON_CRASHES,
    PYTHON_READS,
    SHELL_READS,
    Tenant,
    everything_shown,
    finished,
    forged_tokens,
    leaks,
    planted_secrets,
    tenant,
)

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

HERE = Path(__file__).resolve().parent


def _grant_users_everything(planted: dict[str, str]) -> dict[str, str]:
    """The worst case for the sandbox: users may run shell and python, the attacker's module
    is registered; the server's secrets are planted in its environment."""
    return {
        "SCHEDULER__EXECUTORS__SHELL__ROLES": '["admin", "operator", "user"]',
        "SCHEDULER__EXECUTORS__PYTHON__ROLES": '["admin", "operator", "user"]',
        "SCHEDULER__EXECUTORS__PYTHON__ALLOW": '["hostile_tasks:*"]',
        "SCHEDULER__API__JWT_SECRET": planted["jwt_secret"],
        "SCHEDULER__SECRETS__KEY": planted["secrets_key"],
        "SCHEDULER__WORKER__CAPACITY": "8",
        "SCHEDULER__WORKER__MAX_MEMORY_BYTES": str(512 * 1024 * 1024),
        "SCHEDULER__WORKER__MAX_PROCESSES": "64",
        "SCHEDULER__WORKER__MAX_CPU_SECONDS": "20",
        "DEPLOY_TOKEN": planted["deploy_token"],
        "PYTHONPATH": str(HERE),
    }


async def _honest_load(client: httpx.AsyncClient, alice: Tenant, planted: dict[str, str]) -> None:
    """Alice's own work, which must go on untouched: a shell task with a secret of hers every
    second, and a noop every second."""
    ticking = await alice.task(client, "ticking", executor="noop", schedule={"interval_seconds": 1})
    assert ticking.status_code == 201, ticking.text
    secretive = await alice.task(
        client,
        "secretive",
        executor="shell",
        params={"argv": ["sh", "-c", 'test -n "$ALICE_TOKEN" && sleep 0.5 && echo ok']},
        secret_env={"ALICE_TOKEN": planted["alice_secret"]},
        schedule={"interval_seconds": 1},
    )
    assert secretive.status_code == 201, secretive.text
    # One long run of Alice's is in progress while Mallory attacks.
    long = await alice.task(
        client,
        "long",
        executor="shell",
        params={"argv": ["sh", "-c", "sleep 12; echo ALICE_TOKEN-done"]},
    )
    assert long.status_code == 201, long.text
    await alice.trigger(client, "long")


async def _attack(
    client: httpx.AsyncClient, mallory: Tenant, *, python: bool = True
) -> dict[str, dict[str, Any]]:
    run_ids: list[str] = []
    for name, script in SHELL_READS.items():
        created = await mallory.task(
            client,
            name,
            executor="shell",
            params={"argv": ["sh", "-c", script]},
            timeout_seconds=30,
        )
        assert created.status_code == 201, created.text
        run_ids.append(await mallory.trigger(client, name))
    catalogue = {**PYTHON_READS, **PYTHON_CRASHES} if python else {}
    for name, (target, args) in catalogue.items():
        created = await mallory.task(
            client,
            name,
            executor="python",
            params={"callable": target, "args": args},
            timeout_seconds=5 if name == "py-spin" else 30,
        )
        assert created.status_code == 201, created.text
        run_ids.append(await mallory.trigger(client, name))
    return await finished(client, mallory.headers, run_ids, timeout=120)


async def _check_nothing_leaked_and_nothing_forged(
    client: httpx.AsyncClient,
    mallory: Tenant,
    admin: dict[str, str],
    runs: dict[str, dict[str, Any]],
    planted: dict[str, str],
) -> None:
    shown = await everything_shown(client, mallory.headers, runs)
    assert leaks(shown, planted) == [], "a planted secret reached the attacker"

    control, forged = forged_tokens(admin["Authorization"].split()[1], shown, planted["jwt_secret"])
    accepted = await client.get("/api/v1/users", headers={"Authorization": f"Bearer {control}"})
    assert accepted.status_code == 200, "the forging itself is wrong: the control was refused"
    for token in forged:
        response = await client.get("/api/v1/users", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, "a token forged from what a task saw was accepted"


async def _check_alice_lost_nothing(client: httpx.AsyncClient, alice: Tenant) -> None:
    """Every one of Alice's runs that ended succeeded, and runs kept coming."""
    for name in ("ticking", "secretive", "long"):
        runs = await alice.runs(client, name)
        ended = [
            run
            for run in runs
            if run["status"] in ("succeeded", "failed", "timed_out", "dead_lettered", "lost")
        ]
        assert len(ended) >= (1 if name == "long" else 5), f"{name}: only {len(ended)} ended"
        bad = [(run["status"], run.get("error")) for run in ended if run["status"] != "succeeded"]
        assert bad == [], f"{name}: runs of another user were lost or failed: {bad}"


async def _sandbox_attacks(
    client: httpx.AsyncClient, admin: dict[str, str], planted: dict[str, str], *, python: bool
) -> None:
    alice = await tenant(client, admin, "alice")
    mallory = await tenant(client, admin, "mallory")
    await _honest_load(client, alice, planted)

    runs = await _attack(client, mallory, python=python)

    by_name = {
        name: runs[run_id]
        for name, task_id in mallory.task_ids.items()
        for run_id in runs
        if runs[run_id]["task_id"] == task_id
    }
    if python:
        for name in ("py-exit", "py-segfault", "py-memory", "py-spin"):
            assert by_name[name]["status"] != "succeeded", (name, by_name[name])
        # The fork bomb either failed or got no further than the process limit (64).
        bomb = by_name["py-fork-bomb"]
        if bomb["status"] == "succeeded":
            assert bomb["result"]["return_value"] < 64, bomb
        # It may signal nothing of the worker's, nor another run's process.
        killed = json.dumps(by_name["py-kill-everyone"].get("result"))
        assert "killed" not in killed, killed
        identity = json.dumps(by_name["py-identity"].get("result"))
        if os.geteuid() == 0:
            assert '"uid": 0' not in identity, identity
    await _check_nothing_leaked_and_nothing_forged(client, mallory, admin, runs, planted)
    # The server kept serving throughout, and keeps doing so.
    assert (await client.get("/health")).status_code == 200
    await eventually(lambda: _alice_has_runs(client, alice), timeout=30, interval=0.5)
    await _check_alice_lost_nothing(client, alice)


async def _alice_has_runs(client: httpx.AsyncClient, alice: Tenant) -> bool:
    runs = await alice.runs(client, "secretive")
    long = await alice.runs(client, "long")
    return sum(run["status"] == "succeeded" for run in runs) >= 5 and all(
        run["status"] not in ("queued", "running", "pending") for run in long
    )


async def test_embedded_a_hostile_users_tasks_reach_no_secret_and_cost_others_nothing(
    tmp_path: Path,
) -> None:
    planted = planted_secrets()
    async with embedded(tmp_path, **_grant_users_everything(planted)) as server:
        admin = await server.login("admin", ADMIN_PASSWORD)
        await _sandbox_attacks(server.client, admin, planted, python=True)
        assert server.process.poll() is None, server.logs()[-4000:]
        assert await server.stop() == 0


async def test_distributed_a_hostile_users_tasks_reach_no_secret_and_cost_others_nothing(
    cluster_factory: Any,
) -> None:
    planted = planted_secrets()
    cluster: Cluster = cluster_factory("postgres")
    grant = _grant_users_everything(planted)
    jwt_secret = grant.pop("SCHEDULER__API__JWT_SECRET")
    cluster.extra_env.update(grant)
    _, client = await cluster.api(jwt_secret=jwt_secret)
    cluster.dispatcher()
    cluster.worker("w1")
    admin = {"Authorization": client.headers["authorization"]}
    await _sandbox_attacks(client, admin, planted, python=True)
    for process in cluster.processes:
        assert process.alive(), f"{process.name} died\n{cluster.logs()}"


async def test_default_policy_refuses_users_the_process_executors(tmp_path: Path) -> None:
    async with embedded(tmp_path) as server:
        admin = await server.login("admin", ADMIN_PASSWORD)
        mallory = await tenant(server.client, admin, "mallory")
        for body in (
            {"executor": "shell", "params": {"argv": ["env"]}},
            {"executor": "python", "params": {"callable": "builtins:eval", "args": ["1"]}},
            {"executor": "python", "params": {"callable": "os:system", "args": ["id"]}},
        ):
            refused = await mallory.task(server.client, "nope", **body)
            assert refused.status_code == 403, refused.text
            assert refused.json()["field"] == "executor"


async def _check_http_refusals(server: Embedded, mallory: Tenant, targets: list[str]) -> None:
    run_ids = []
    for n, url in enumerate(targets):
        created = await mallory.task(
            server.client,
            f"reach-{n}",
            executor="http",
            params={"url": url, "follow_redirects": True},
            timeout_seconds=10,
        )
        assert created.status_code == 201, created.text
        run_ids.append(await mallory.trigger(server.client, f"reach-{n}"))
    runs = await finished(server.client, mallory.headers, run_ids, timeout=60)
    errors = {runs[run_id]["error"] for run_id in run_ids}
    assert all(runs[run_id]["status"] != "succeeded" for run_id in run_ids), runs
    # One uniform answer: nothing tells an open port from a closed one.
    assert len(errors) == 1, errors


async def test_http_tasks_reach_no_loopback_address_in_any_notation(tmp_path: Path) -> None:
    async with embedded(tmp_path) as server:
        admin = await server.login("admin", ADMIN_PASSWORD)
        mallory = await tenant(server.client, admin, "mallory")
        port = server.url.rsplit(":", 1)[1]
        closed = "1"  # nothing listens on port 1
        targets = [
            f"http://127.0.0.1:{port}/metrics",
            f"http://localhost:{port}/metrics",
            f"http://[::1]:{port}/metrics",
            f"http://2130706433:{port}/metrics",
            f"http://0x7f000001:{port}/metrics",
            f"http://127.1:{port}/metrics",
            f"http://0.0.0.0:{port}/metrics",
            f"http://[::ffff:127.0.0.1]:{port}/metrics",
            "http://127.0.0.1:5432/",
            f"http://127.0.0.1:{closed}/",
        ]
        await _check_http_refusals(server, mallory, targets)
