"""A template subscription and a parameterised trigger executed by the real worker runtime
(shell executor, sandboxed) on SQLite and PostgreSQL: the process gets the filled-in params."""

from __future__ import annotations

import pytest
from execution_stack import OWNER, PYTHON, Stack, running

from scheduler_application.accounts.access import Principal
from scheduler_application.templates.service import TemplateService
from scheduler_application.testing import OPEN_EXECUTOR_POLICY
from scheduler_domain.accounts import Role
from scheduler_domain.status import RunStatus

pytestmark = pytest.mark.timeout(60)

OPERATOR = Principal(subject_id="operator-1", role=Role.OPERATOR)
GREET = "import sys; print('hello', sys.argv[1], 'x', sys.argv[2])"


async def test_a_subscription_runs_with_its_params_and_a_triggers(stack: Stack) -> None:
    templates = TemplateService(
        uow_factory=stack.uow_factory, clock=stack.clock, executor_policy=OPEN_EXECUTOR_POLICY
    )
    template = await templates.create(
        {
            "name": "greeter",
            "executor": "shell",
            "params": {"argv": [PYTHON, "-c", GREET, "{{who}}", "--times={{times}}"]},
            "params_schema": {
                "type": "object",
                "properties": {
                    "who": {"type": "string", "pattern": "^[a-z]+$"},
                    "times": {"type": "integer", "default": 1},
                },
                "required": ["who"],
            },
        },
        principal=OPERATOR,
    )
    task = await templates.subscribe(template.id, {"params": {"who": "ann"}}, principal=OWNER)
    async with running(stack.worker()):
        plain = await stack.trigger(task.id)
        given = await stack.runs.trigger(task.id, principal=OWNER, params={"times": 3})
        stack.dispatcher.loop("relay").wake()

        async def settled() -> bool:
            runs = [await stack.runs.get(r.id, principal=OWNER) for r in (plain, given)]
            return all(r.status.is_final for r in runs)

        await stack.wait_for(settled)
    plain = await stack.runs.get(plain.id, principal=OWNER)
    given = await stack.runs.get(given.id, principal=OWNER)
    assert plain.status is RunStatus.SUCCEEDED, plain.error
    assert given.status is RunStatus.SUCCEEDED, given.error
    assert "hello ann x --times=1" in (plain.output or "")
    assert "hello ann x --times=3" in (given.output or "")
    assert (given.template_version, given.run_params) == (1, {"who": "ann", "times": 3})
