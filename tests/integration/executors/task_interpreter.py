"""The interpreter task processes can run in these tests."""

from __future__ import annotations

from scheduler_worker.sandbox.policy import default_python, sandbox_policy

#: The worker's own interpreter, unless the unprivileged user tasks run as (when the tests run
#: as root) cannot reach it; then the system's of the same version.
TASK_PYTHON = default_python(sandbox_policy().user)
