"""The admin commands' composition root: which API, which credentials, which transport.

The root command builds one :class:`CliContext` per invocation and stores it on the typer
context; commands ask it for an :class:`ApiClient`. Tests hand in :class:`Overrides` (as the
CliRunner's ``obj``) to reach an in-process API instead of the network.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import httpx
import typer

from scheduler_cli.client import DEFAULT_API_URL, ApiClient, ApiKeyAuth, SessionAuth, normalize_url
from scheduler_cli.credentials import CredentialStore, config_directory

API_URL_ENV = "SCHEDULER_API_URL"
API_KEY_ENV = "SCHEDULER_API_KEY"


@dataclass(frozen=True, slots=True, kw_only=True)
class Overrides:
    """What a test may replace: the HTTP transport and the environment."""

    transport: httpx.BaseTransport | None = None
    environ: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CliContext:
    api_url_option: str | None
    environ: Mapping[str, str]
    store: CredentialStore
    transport: httpx.BaseTransport | None = field(default=None, repr=False)

    @classmethod
    def build(cls, *, api_url: str | None, overrides: Overrides | None = None) -> CliContext:
        overrides = overrides or Overrides()
        environ = overrides.environ if overrides.environ is not None else os.environ
        return cls(
            api_url_option=api_url,
            environ=environ,
            store=CredentialStore(directory=config_directory(environ)),
            transport=overrides.transport,
        )

    def with_api_url(self, api_url: str | None) -> CliContext:
        return self if api_url is None else replace(self, api_url_option=api_url)

    def api_url(self) -> str:
        """``--api-url``, else ``$SCHEDULER_API_URL``, else the URL of the last login."""
        chosen = (
            self.api_url_option
            or self.environ.get(API_URL_ENV)
            or self.store.default_url()
            or DEFAULT_API_URL
        )
        return normalize_url(chosen)

    @property
    def api_key(self) -> str | None:
        return self.environ.get(API_KEY_ENV) or None

    def client(self, *, anonymous: bool = False) -> ApiClient:
        """A client for the chosen API: with ``$SCHEDULER_API_KEY`` when set, else with the
        stored login (NotLoggedIn when there is none)."""
        url = self.api_url()
        auth: httpx.Auth | None = None
        if not anonymous:
            key = self.api_key
            auth = ApiKeyAuth(key) if key else SessionAuth(store=self.store, api_url=url)
        return ApiClient(api_url=url, auth=auth, transport=self.transport)


def context_of(ctx: typer.Context) -> CliContext:
    """The CliContext the root command stored (built on the spot when a test skipped it)."""
    found = ctx.find_object(CliContext)
    if found is None:
        found = CliContext.build(api_url=None)
    return found
