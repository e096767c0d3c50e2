"""The worker's options as its settings give them."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from scheduler_infrastructure.config import Settings
from scheduler_worker.bootstrap import worker_options


def test_the_batch_window_comes_from_worker_batch_window_ms() -> None:
    settings = Settings()
    assert worker_options(settings).batch_window == timedelta(milliseconds=1)
    off = replace(settings, worker=replace(settings.worker, batch_window_ms=0))
    assert worker_options(off).batch_window == timedelta(0)
