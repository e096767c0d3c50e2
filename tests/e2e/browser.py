"""Debian's Chromium driven by Playwright (the PyPI package; never a browser download), and
where the console's screenshots go."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("SCHEDULER_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
#: Screenshots of every console page (not committed: tmp/ is ignored).
ARTIFACTS = Path(os.environ.get("SCHEDULER_TEST_ARTIFACTS", ROOT / "tmp" / "artifacts" / "console"))


def require_chromium() -> str:
    """The browser's path; skip without it — fail under CI=true, where ``.ci/run`` installs
    it with apt-get."""
    if Path(CHROMIUM).exists() or shutil.which(CHROMIUM):
        return CHROMIUM
    message = f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; CI=true requires it")
    pytest.skip(message)
