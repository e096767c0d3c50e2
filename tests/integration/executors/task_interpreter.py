"""The interpreter task processes can run in these tests."""

from __future__ import annotations

from scheduler_worker.sandbox.policy import sandbox_policy

#: The worker's own interpreter, unless the unprivileged user tasks run as (when the tests run
#: as root) cannot reach it; then the system's of the same version (see ``default_python``).
TASK_PYTHON = sandbox_policy().python_executable
