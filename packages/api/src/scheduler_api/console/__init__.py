"""The web console at ``/ui``: server-rendered pages over the same use cases as the REST API."""

from scheduler_api.console.headers import ConsoleHeaders
from scheduler_api.console.router import (
    CONSOLE_STATE,
    console_routers,
    new_console_state,
    root_redirect,
    template_config,
)

__all__ = [
    "CONSOLE_STATE",
    "ConsoleHeaders",
    "console_routers",
    "new_console_state",
    "root_redirect",
    "template_config",
]
