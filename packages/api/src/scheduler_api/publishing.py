"""Publish freshly created runs right after the response, for low trigger latency. Best effort:
if it fails, the dispatcher's relay loop publishes them on its next pass."""

from __future__ import annotations

import logging

from litestar.background_tasks import BackgroundTask

from scheduler_api.services import ApiOptions, ApiServices

logger = logging.getLogger("scheduler.api.publish")


async def _publish(services: ApiServices, batch: int) -> None:
    try:
        await services.relay.relay_pending(batch)
    except Exception as error:  # the relay loop will retry; never fail the request for this
        logger.warning("immediate publish failed (%s); the relay will publish later", error)


def publish_soon(services: ApiServices, options: ApiOptions) -> BackgroundTask:
    return BackgroundTask(_publish, services, options.publish_batch)
