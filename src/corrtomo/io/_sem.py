"""2D SEM data: BSE images, EDS element-map sets and automated-mineralogy maps."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from corrtomo._shared import InputError

from ._elements import ATOMIC_NUMBER, element_from_name
from ._slices import SLICE_SUFFIXES, list_slices, open_pil
from ._volume import TIFF_SUFFIXES


def read_image2d(path: str | os.PathLike, *, allow_rgb: bool = False) -> np.ndarray:
    """Read a 2D image (BSE or SE image, EDS map, label map) into memory.

    Parameters
    ----------
    path : str or os.PathLike
        TIFF, PNG, JPEG or BMP file. Never modified.
    allow_rgb : bool
        Accept colour images and return them as (Y, X, 3) or (Y, X, 4); palette images are
        expanded to RGB(A). Otherwise a palette image gives its indices.

    Returns
    -------
    (Y, X) ndarray, or (Y, X, 3|4) ndarray with `allow_rgb`
        Axis order (row, column), native byte order. Singleton axes are dropped, and an RGB
        image whose channels are all equal is returned as 2D grey values.

    Raises
    ------
    InputError
        If the file is missing or unreadable, is 3D (a stack, "is 3D, expected a 2D section"),
        or is colour without `allow_rgb`. The message names the file.
    """
    source = Path(path)
    if not source.is_file():
        raise InputError("no such file", source=source)
    try:
        if source.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(source) as tif:
                series = tif.series[0]
                axes = series.axes
                if sum(n > 1 for n, a in zip(series.shape, axes, strict=True) if a != "S") > 2:
                    raise InputError(
                        f"is 3D, expected a 2D section (shape {tuple(series.shape)})",
                        source=source,
                    )
                image = series.asarray()
        else:
            with open_pil(source) as pil:
                if pil.mode in ("P", "PA") and allow_rgb:
                    pil = pil.convert("RGBA")
                elif pil.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                    pil = pil.convert("RGB")
                elif pil.mode == "LA":
                    pil = pil.getchannel(0)
                image = np.asarray(pil)
    except InputError:
        raise
    except Exception as error:
        raise InputError(f"cannot be read as an image ({error})", source=source) from None
    image = np.squeeze(image)
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        if image.shape[-1] == 4 and np.all(image[..., 3] == image[..., 3].max()):
            image = image[..., :3]  # an opaque alpha channel carries nothing
        if (
            image.shape[-1] == 3
            and np.array_equal(image[..., 0], image[..., 1])
            and np.array_equal(image[..., 0], image[..., 2])
        ):
            image = image[..., 0]
        elif not allow_rgb:
            raise InputError(
                f"is a colour image (shape {image.shape}), expected a grey-value 2D image",
                source=source,
            )
    if image.ndim == 3 and image.shape[-1] not in (3, 4):
        raise InputError(f"is 3D, expected a 2D section (shape {image.shape})", source=source)
    if image.ndim != 2 and not (allow_rgb and image.ndim == 3):
        raise InputError(f"has shape {image.shape}, expected a 2D section", source=source)
    if not image.dtype.isnative:
        image = image.astype(image.dtype.newbyteorder("="))
    return np.ascontiguousarray(image)


@dataclass(frozen=True)
class EDSMaps:
    """A set of EDS element maps of one SEM section.

    Parameters
    ----------
    maps : dict of str to (Y, X) ndarray
        Element symbol -> counts (or intensities) per pixel, in order of atomic number.
    shape : tuple of int
        Shape (Y, X) shared by every map.
    source : str
        The folder they came from.
    """

    maps: dict[str, np.ndarray]
    shape: tuple[int, int]
    source: str = ""

    @property
    def elements(self) -> tuple[str, ...]:
        """Element symbols in order of atomic number."""
        return tuple(sorted(self.maps, key=ATOMIC_NUMBER.__getitem__))

    def stack(self, elements: Any = None) -> np.ndarray:
        """Stack maps into one array.

        Parameters
        ----------
        elements : sequence of str, optional
            Symbols in the order wanted; default `elements`.

        Returns
        -------
        (n_elements, Y, X) ndarray
            The maps' common type.

        Raises
        ------
        InputError
            If an element has no map.
        """
        names = self.elements if elements is None else tuple(elements)
        missing = [name for name in names if name not in self.maps]
        if missing:
            raise InputError(
                f"no map for {', '.join(missing)} (maps: {', '.join(self.elements)})",
                source=self.source or "elements",
            )
        return np.stack([self.maps[name] for name in names])


def read_eds_maps(folder: str | os.PathLike) -> EDSMaps:
    """Read a folder of EDS element maps, one image per element named by its symbol.

    File names are parsed for the element symbol: ``Ca.tif``, ``Mg_K.tif``, ``Si Ka.png``,
    ``eds_Ca.tiff``, ``FeLa1.png`` and ``ca.tif`` all work (see `element_from_name`). Hidden
    files and files that are not images (``.json``, ``.csv``, ...) are ignored.

    Parameters
    ----------
    folder : str or os.PathLike
        The folder. Never modified.

    Returns
    -------
    EDSMaps
        Maps by element symbol, each (Y, X). A colour-coded map is read as its brightest
        channel per pixel.

    Raises
    ------
    InputError
        If the folder is missing or holds no image, a file name names no chemical element, two
        files name the same element, or maps differ in shape (the message names the odd file).
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError("is not a folder of EDS element maps", source=root)
    files = list_slices(root)
    if not files:
        suffixes = ", ".join(sorted({s.lstrip(".") for s in SLICE_SUFFIXES}))
        raise InputError(f"holds no element maps ({suffixes} files named by element)", source=root)
    maps: dict[str, np.ndarray] = {}
    origin: dict[str, Path] = {}
    shape: tuple[int, ...] | None = None
    for path in files:
        stem = path.name[: -len(path.suffix)].removesuffix(".ome")
        symbol = element_from_name(stem)
        if symbol is None:
            raise InputError(
                "file name names no chemical element (expected e.g. Ca.tif, Mg_K.tif, Si Ka.png)",
                source=path,
            )
        if symbol in maps:
            raise InputError(
                f"is a second map of {symbol} (first: {origin[symbol].name})", source=path
            )
        image = read_image2d(path, allow_rgb=True)
        if image.ndim == 3:
            image = image[..., :3].max(axis=-1)
        if shape is None:
            shape, first = image.shape, path
        elif image.shape != shape:
            raise InputError(
                f"has shape {image.shape}, but {first.name} has shape {shape}; all maps must match",
                source=path,
            )
        maps[symbol] = image
        origin[symbol] = path
    ordered = {symbol: maps[symbol] for symbol in sorted(maps, key=ATOMIC_NUMBER.__getitem__)}
    return EDSMaps(maps=ordered, shape=tuple(shape), source=str(root))


def read_mineral_map(
    path: str | os.PathLike,
    *,
    legend: Any = None,
    library: Any = None,
    tolerance: float = 30.0,
) -> np.ndarray:
    """Read an automated-mineralogy map (QEMSCAN, MLA, TIMA, Mineralogic) as phase ids.

    An RGB(A) map is decoded with its colour legend: each pixel takes the mineral of the nearest
    legend colour within `tolerance` (so JPEG-like noise is forgiven) and 0 (unclassified)
    otherwise; fully transparent pixels are 0. A single-channel integer image is taken as phase
    ids directly, or through the legend when the legend's keys are integer values.

    Parameters
    ----------
    path : str or os.PathLike
        The map image. Never modified.
    legend : dict, str or os.PathLike, optional
        Colour -> mineral. A dict (``{"#ff0000": "calcite", "0,128,0": 2}``, or the reverse
        ``{"calcite": "#ff0000"}``), or a CSV, JSON or YAML file (see `load_legend`). Minerals
        are names of the phase library or ids 0..255; ``unclassified``, ``background``,
        ``epoxy``, ``resin`` and ``unknown`` map to 0 unless the library defines them.
    library : PhaseLibrary, str or os.PathLike, optional
        Phase library (or its file) that turns mineral names into ids. Needed when the legend
        names minerals.
    tolerance : float
        Largest Euclidean RGB distance (0..441) from a legend colour that still counts as it.

    Returns
    -------
    (Y, X) ndarray of uint8
        Phase ids, 0 = unclassified.

    Raises
    ------
    InputError
        If the image is not 2D, an RGB map has no legend, the legend cannot be read, names a
        mineral the library lacks (or names minerals without a library), gives one colour two
        minerals, or ids fall outside 0..255 or outside the library.
    """
    from ._legend import load_legend, resolve_targets

    source = Path(path)
    image = read_image2d(source, allow_rgb=True)
    entries = None if legend is None else load_legend(legend)
    value_legend = entries is not None and all(isinstance(key, int) for key, _ in entries)
    if image.ndim == 2 and (entries is None or value_legend):
        if image.dtype.kind not in "biu":
            raise InputError(
                f"is a single-channel {image.dtype} image; expected integer phase ids or RGB",
                source=source,
            )
        if value_legend:
            keys = np.array([key for key, _ in entries], dtype=np.int64)
            ids = resolve_targets([target for _, target in entries], library, legend)
            lut_values, inverse = np.unique(image, return_inverse=True)
            mapped = np.zeros(lut_values.size, dtype=np.uint8)
            for i, value in enumerate(lut_values.tolist()):
                hit = np.flatnonzero(keys == value)
                mapped[i] = ids[hit[0]] if hit.size else 0
            return mapped[inverse.reshape(image.shape)]
        return _ids_from_values(image, library, source)
    if entries is None:
        raise InputError("is a colour mineral map; pass its colour legend (legend=)", source=source)
    if value_legend:
        raise InputError(
            "is a colour image but the legend maps integer values; give colours", source=source
        )
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return _ids_from_colours(image, entries, library, legend, tolerance)


def _ids_from_values(image: np.ndarray, library: Any, source: Path) -> np.ndarray:
    low, high = int(image.min()), int(image.max())
    if low < 0 or high > 255:
        raise InputError(f"holds values {low}..{high}; phase ids are 0..255", source=source)
    ids = image.astype(np.uint8)
    if library is not None:
        from ._legend import as_library

        known = set(as_library(library).ids) | {0}
        unknown = sorted(set(np.unique(ids).tolist()) - known)
        if unknown:
            raise InputError(
                f"holds phase ids {unknown} that the phase library does not define", source=source
            )
    return ids


def _ids_from_colours(
    image: np.ndarray, entries: list, library: Any, legend: Any, tolerance: float
) -> np.ndarray:
    from ._legend import resolve_targets

    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype.kind == "f":
        image = np.clip(np.rint(image * (255.0 if image.max() <= 1.0 else 1.0)), 0, 255)
    image = image.astype(np.uint8, copy=False)
    colours = np.array([key for key, _ in entries], dtype=np.int64)
    ids = np.asarray(resolve_targets([target for _, target in entries], library, legend))
    packed = (
        (image[..., 0].astype(np.uint32) << 16)
        | (image[..., 1].astype(np.uint32) << 8)
        | image[..., 2].astype(np.uint32)
    )
    unique, inverse = np.unique(packed, return_inverse=True)
    rgb = np.stack([(unique >> 16) & 255, (unique >> 8) & 255, unique & 255], axis=-1).astype(
        np.int64
    )
    lut = np.zeros(unique.size, dtype=np.uint8)
    for start in range(0, unique.size, 65536):
        part = rgb[start : start + 65536]
        distance = np.sqrt(((part[:, None, :] - colours[None, :, :]) ** 2).sum(axis=-1))
        nearest = np.argmin(distance, axis=1)
        close = distance[np.arange(part.shape[0]), nearest] <= float(tolerance)
        lut[start : start + 65536] = np.where(close, ids[nearest], 0)
    result = lut[inverse.reshape(packed.shape)]
    if image.shape[-1] == 4:
        result[image[..., 3] == 0] = 0
    return result
