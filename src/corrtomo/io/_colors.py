"""Colours as written in legends and phase libraries: hex, "r,g,b", tuples, names."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from corrtomo._shared import InputError

# Matplotlib's tab20, as 8-bit RGB: the colour of a label that has none of its own.
_PALETTE = np.array(
    [
        (31, 119, 180),
        (174, 199, 232),
        (255, 127, 14),
        (255, 187, 120),
        (44, 160, 44),
        (152, 223, 138),
        (214, 39, 40),
        (255, 152, 150),
        (148, 103, 189),
        (197, 176, 213),
        (140, 86, 75),
        (196, 156, 148),
        (227, 119, 194),
        (247, 182, 210),
        (127, 127, 127),
        (199, 199, 199),
        (188, 189, 34),
        (219, 219, 141),
        (23, 190, 207),
        (158, 218, 229),
    ],
    dtype=np.uint8,
)
_HEX = re.compile(r"^#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})$")


def palette_color(label: int) -> np.ndarray:
    """A fixed colour for `label`: black for 0, otherwise tab20 cycled by label."""
    if int(label) == 0:
        return np.zeros(3, dtype=np.uint8)
    return _PALETTE[(int(label) - 1) % len(_PALETTE)]


def parse_color(color: Any, *, source: str = "color") -> np.ndarray:
    """Return a colour as a (3,) uint8 RGB array.

    Parameters
    ----------
    color : str or sequence of number
        ``"#rrggbb"``, ``"rrggbb"``, ``"#rgb"``, ``"r,g,b"`` / ``"r g b"`` (0..255), a sequence
        of three (or four, alpha ignored) integers in 0..255 or floats in 0..1, or a colour
        name known to matplotlib (``"red"``, ``"tab:blue"``).
    source : str
        Name for the error message.

    Raises
    ------
    InputError
        If the colour cannot be read.
    """
    values: Any = color
    if isinstance(color, str):
        text = color.strip()
        match = _HEX.match(text)
        if match:
            digits = match.group(1)
            if len(digits) == 3:
                digits = "".join(d * 2 for d in digits)
            return np.array([int(digits[i : i + 2], 16) for i in (0, 2, 4)], dtype=np.uint8)
        parts = [p for p in re.split(r"[\s,;/]+", text.strip("()[]")) if p]
        if len(parts) in (3, 4):
            values = parts
        else:
            return _named_color(text, source)
    try:
        numbers = np.asarray([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"cannot read colour {color!r}", source=source) from None
    if numbers.size not in (3, 4) or not np.all(np.isfinite(numbers)):
        raise InputError(f"cannot read colour {color!r}", source=source)
    numbers = numbers[:3]
    is_fraction = all(isinstance(v, float) for v in values) and np.all(numbers <= 1.0)
    if is_fraction and not isinstance(color, str):
        numbers = numbers * 255.0
    if np.any(numbers < 0) or np.any(numbers > 255):
        raise InputError(f"colour {color!r} is outside 0..255", source=source)
    return np.rint(numbers).astype(np.uint8)


def _named_color(name: str, source: str) -> np.ndarray:
    try:
        from matplotlib.colors import to_rgb
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        raise InputError(f"cannot read colour {name!r}", source=source) from None
    try:
        return np.rint(np.asarray(to_rgb(name)) * 255).astype(np.uint8)
    except ValueError:
        raise InputError(f"cannot read colour {name!r}", source=source) from None
