"""Templates and subscriptions as the API shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from scheduler_api.schemas.tasks import TaskOut
from scheduler_application.templates.service import SubscribeOutcome
from scheduler_application.templates.spec import template_to_spec
from scheduler_domain.template import Template


class TemplateOut(msgspec.Struct, kw_only=True):
    id: str
    name: str
    description: str
    executor: str
    #: The parameter template: the executor params with ``{{name}}`` placeholders.
    params: dict[str, Any]
    #: The JSON Schema (draft 2020-12) subscribers' parameters are validated against.
    params_schema: dict[str, Any]
    schedule: dict[str, Any] | None
    schedule_bounds: dict[str, Any]
    policies: dict[str, Any]
    version: int
    created_by: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, template: Template) -> TemplateOut:
        return cls(
            **template_to_spec(template),
            id=template.id,
            version=template.version,
            created_by=template.created_by,
            created_at=template.created_at,
            updated_at=template.updated_at,
        )


class TemplatePage(msgspec.Struct, kw_only=True):
    items: list[TemplateOut]
    next_cursor: str | None
    limit: int


class SubscriptionRefusalOut(msgspec.Struct, kw_only=True):
    code: str | None
    field: str | None
    detail: str | None


class SubscriptionResultOut(msgspec.Struct, kw_only=True):
    """One item of a bulk subscription, in the order given."""

    index: int
    status: str
    task: TaskOut | None = None
    error: SubscriptionRefusalOut | None = None

    @classmethod
    def of(cls, index: int, outcome: SubscribeOutcome) -> SubscriptionResultOut:
        if outcome.task is not None:
            return cls(index=index, status=outcome.status, task=TaskOut.of(outcome.task))
        return cls(
            index=index,
            status=outcome.status,
            error=SubscriptionRefusalOut(
                code=outcome.code, field=outcome.field, detail=outcome.detail
            ),
        )


class BulkSubscriptionsOut(msgspec.Struct, kw_only=True):
    results: list[SubscriptionResultOut]
    created: int
    refused: int
