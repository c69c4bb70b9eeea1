"""Random generators: never global seeding."""

from __future__ import annotations

import numpy as np


def as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    """Return a :class:`numpy.random.Generator` from a generator, a seed or ``None``."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)
