"""The sandbox's exceptions: one root, narrow subclasses."""


class SandboxError(Exception):
    """Root of the errors of the sandbox machinery (a task's own failure is a result)."""


class SandboxConfigError(SandboxError):
    """The worker cannot sandbox tasks as configured (unknown ``run_as``, root without consent)."""


class SandboxStartError(SandboxError):
    """A sandbox process could not be started."""
