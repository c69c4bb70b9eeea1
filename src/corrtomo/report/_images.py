"""Image helpers of the report: grey windows, label colours, overlays, PNG data URIs."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

from ..phases import PhaseLibrary

#: Colour of matrix / background pixels in mineral maps (id 0).
BACKGROUND_RGB = (24, 24, 24)
#: Colour of a phase id that the library does not know.
UNKNOWN_RGB = (150, 150, 150)
#: Colour of pixels outside the CT volume (NaN) in CT images.
OUTSIDE_RGB = (205, 214, 224)
#: Largest side, in pixels, of an image drawn into a figure (larger images are reduced).
MAX_IMAGE_SIDE = 480


def reduction_factor(shape: tuple[int, ...], max_side: int = MAX_IMAGE_SIDE) -> int:
    """Integer step that brings the largest side of `shape` to at most `max_side`."""
    return max(1, int(np.ceil(max(shape) / max_side)))


def reduce_labels(image: np.ndarray, factor: int) -> np.ndarray:
    """Every `factor`-th pixel of a label image (labels must not be averaged)."""
    return image if factor == 1 else image[::factor, ::factor]


def reduce_grey(image: np.ndarray, factor: int) -> np.ndarray:
    """Block mean over `factor` x `factor` pixels (NaN-aware), shape as :func:`reduce_labels`."""
    if factor == 1:
        return image.astype(np.float64, copy=False)
    rows, columns = image.shape
    padded_rows, padded_columns = -(-rows // factor) * factor, -(-columns // factor) * factor
    padded = np.full((padded_rows, padded_columns), np.nan)
    padded[:rows, :columns] = image
    blocks = padded.reshape(padded_rows // factor, factor, padded_columns // factor, factor)
    finite = np.isfinite(blocks)
    counts = finite.sum(axis=(1, 3))
    sums = np.where(finite, blocks, 0.0).sum(axis=(1, 3))
    out = np.full(counts.shape, np.nan)
    np.divide(sums, counts, out=out, where=counts > 0)
    return out


def as_grey(image: np.ndarray) -> np.ndarray:
    """A 2D float image; an (rows, columns, 3 | 4) RGB(A) image becomes the mean of R, G, B."""
    values = np.asarray(image, dtype=np.float64)
    return values[..., :3].mean(axis=-1) if values.ndim == 3 else values


def grey_window(image: np.ndarray, *, percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Grey values scaled to [0, 1] between two percentiles of the finite values; NaN stays NaN."""
    values = np.asarray(image, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.full(values.shape, np.nan)
    low, high = np.percentile(values[finite], percentiles)
    scale = high - low if high > low else 1.0
    return np.clip((values - low) / scale, 0.0, 1.0)


def grey_rgb(window: np.ndarray) -> np.ndarray:
    """A [0, 1] grey image as float RGB; NaN pixels get :data:`OUTSIDE_RGB`."""
    rgb = np.repeat(np.nan_to_num(window, nan=0.0)[..., None], 3, axis=-1)
    rgb[~np.isfinite(window)] = np.asarray(OUTSIDE_RGB) / 255.0
    return rgb


def phase_lookup(library: PhaseLibrary) -> np.ndarray:
    """(256, 3) float RGB table: library colours by id, :data:`BACKGROUND_RGB` for 0."""
    table = np.tile(np.asarray(UNKNOWN_RGB, dtype=np.float64), (256, 1))
    table[0] = BACKGROUND_RGB
    for phase_id, color in library.colors.items():
        table[int(phase_id)] = color
    return table / 255.0


def phase_rgb(phase_image: np.ndarray, library: PhaseLibrary) -> np.ndarray:
    """Mineral map as float RGB in library colours."""
    ids = np.clip(np.asarray(phase_image).astype(np.int64), 0, 255)
    return phase_lookup(library)[ids]


def hashed_label_colors(labels: np.ndarray) -> np.ndarray:
    """A stable, well-spread colour per label (float RGB, one row per label).

    Neighbouring particles have consecutive labels; a multiplicative (Fibonacci) hash scatters
    them over the hue circle, so touching particles rarely share a colour, and a label keeps
    its colour in every slice and every report.
    """
    from matplotlib.colors import hsv_to_rgb

    key = np.asarray(labels, dtype=np.uint64) * np.uint64(2654435761)
    key = key & np.uint64(0xFFFFFFFF)
    hue = (key % np.uint64(360)).astype(np.float64) / 360.0
    saturation = 0.55 + 0.4 * ((key >> np.uint64(9)) % np.uint64(100)).astype(np.float64) / 100.0
    value = 0.75 + 0.25 * ((key >> np.uint64(17)) % np.uint64(100)).astype(np.float64) / 100.0
    return hsv_to_rgb(np.stack([hue, saturation, value], axis=-1))


def label_boundaries(label_image: np.ndarray) -> np.ndarray:
    """Pixels of a label that have a 4-neighbour with another value (inner boundaries)."""
    from skimage.segmentation import find_boundaries

    return find_boundaries(label_image, mode="inner") & (label_image > 0)


def blend(
    base_rgb: np.ndarray, color_rgb: np.ndarray, mask: np.ndarray, alpha: float
) -> np.ndarray:
    """`base_rgb` with `color_rgb` laid over it at opacity `alpha` where `mask` is set."""
    out = base_rgb.copy()
    out[mask] = (1.0 - alpha) * base_rgb[mask] + alpha * color_rgb[mask]
    return out


def phase_overlay(
    grey_window_image: np.ndarray, phase_image: np.ndarray, library: PhaseLibrary
) -> np.ndarray:
    """CT grey with the phases in library colours (semi-transparent, opaque boundaries)."""
    base = grey_rgb(grey_window_image)
    colors = phase_rgb(phase_image, library)
    inside = np.asarray(phase_image) > 0
    out = blend(base, colors, inside, 0.5)
    edges = label_boundaries(np.asarray(phase_image))
    out[edges] = colors[edges]
    return out


def particle_overlay(grey_window_image: np.ndarray, label_image: np.ndarray) -> np.ndarray:
    """CT grey with every particle in its hashed colour and its outline darker."""
    base = grey_rgb(grey_window_image)
    labels = np.asarray(label_image)
    unique, inverse = np.unique(labels, return_inverse=True)
    colors = hashed_label_colors(unique)[inverse.reshape(labels.shape)]
    inside = labels > 0
    out = blend(base, colors, inside, 0.5)
    edges = label_boundaries(labels)
    out[edges] = 0.65 * colors[edges]
    return out


def checkerboard(first: np.ndarray, second: np.ndarray, tiles: int = 8) -> np.ndarray:
    """Alternate square tiles of two same-shape images (about `tiles` along the longer side)."""
    rows, columns = first.shape[:2]
    tile = max(1, int(np.ceil(max(rows, columns) / tiles)))
    r = (np.arange(rows) // tile)[:, None]
    c = (np.arange(columns) // tile)[None, :]
    pick_first = (r + c) % 2 == 0
    if first.ndim == 3:
        pick_first = pick_first[..., None]
    return np.where(pick_first, first, second)


def figure_png(figure: Any, *, dpi: int = 100) -> bytes:
    """Render a matplotlib Figure to PNG bytes with the Agg canvas (no display, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(figure.canvas, FigureCanvasAgg):
        FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    # No "Software"/date metadata: the same data give the same bytes.
    figure.savefig(buffer, format="png", dpi=dpi, facecolor="white", metadata={"Software": None})
    return buffer.getvalue()


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` URI of PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels from the IHDR chunk of a PNG."""
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
