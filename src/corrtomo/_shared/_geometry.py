"""Small geometry helpers shared by stages."""

from __future__ import annotations

import numpy as np


def fibonacci_sphere(n: int) -> np.ndarray:
    """``n`` nearly uniform unit vectors (z, y, x) on the sphere (Fibonacci lattice).

    Returns
    -------
    (n, 3) ndarray of float64
    """
    index = np.arange(n) + 0.5
    polar = np.arccos(1.0 - 2.0 * index / n)
    azimuth = np.pi * (1.0 + 5.0**0.5) * index
    return np.stack(
        [np.cos(polar), np.sin(polar) * np.sin(azimuth), np.sin(polar) * np.cos(azimuth)], axis=1
    )
