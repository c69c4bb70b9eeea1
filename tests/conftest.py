"""Test configuration: reproducible property tests on CI."""

from __future__ import annotations

import os

from hypothesis import settings

# On CI, hypothesis draws the same examples every run, so a red build is reproducible.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
