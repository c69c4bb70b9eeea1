"""Test configuration: reproducible property tests on CI."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

# On CI, hypothesis draws the same examples every run, so a red build is reproducible.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a test module: pytest -n 2 runs two processes on two cores, and the
    tests' tiny convolutions run several times faster on one uncontended thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
