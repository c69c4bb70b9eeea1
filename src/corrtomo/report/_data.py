"""What a report is made of: the run's volumes, tables, SEM sections and provenance."""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .._shared import InputError, normalize_spacing
from ..phases import PhaseLibrary


@dataclass
class ReportSection:
    """One SEM section as the report shows it.

    Attributes
    ----------
    name : str
        Section name (for example the folder name ``section01``).
    mineral_map : (rows, columns) ndarray of uint8
        Phase id per pixel (0 = matrix), the EDS-derived mineral map.
    bse : (rows, columns) or (rows, columns, 3 | 4) ndarray, optional
        Backscattered-electron image, same rows and columns as `mineral_map` (an RGB export
        is shown in grey).
    ct_plane : (rows, columns) ndarray of float, optional
        The CT volume sampled on the registered plane (same shape as `mineral_map`), NaN
        outside the volume.
    score : float, optional
        Registration score.
    pose_error_voxels : float, optional
        Digital twin only: mean distance between the registered and the truth pose, in voxels.
    """

    name: str
    mineral_map: np.ndarray
    bse: np.ndarray | None = None
    ct_plane: np.ndarray | None = None
    score: float | None = None
    pose_error_voxels: float | None = None


#: Columns of :func:`corrtomo.stats.cross_scale_psd` that the report reads.
CROSS_SCALE_COLUMNS = (
    "source",
    "esd_min_um",
    "esd_max_um",
    "n_particles",
    "volume_um3",
    "density_per_1000um3",
    "ci_low",
    "ci_high",
    "cutoff_um",
    "below_cutoff",
)
#: Keys of a volume registration (``VolumeRegistration.to_dict()``) the report cannot do without.
CROSS_SCALE_REGISTRATION_KEYS = ("scale", "score", "confident")


@dataclass
class CrossScaleReport:
    """A high-resolution (nano-CT) volume located inside a low-resolution (micro-CT) overview, and
    the particle size distributions of both (seed paper Sec. 3.5, Fig. 12).

    Attributes
    ----------
    table : DataFrame
        :func:`corrtomo.stats.cross_scale_psd` output: one row per (``source``, ESD interval) with
        ``source`` in {``nano``, ``micro region``, ``micro pieces``}; ``table.attrs["summary"]``
        holds the per-source particle count, median ESD and share below the micro cut-off.
    registration : dict
        :meth:`corrtomo.register.VolumeRegistration.to_dict` output (``scale``, ``tilt_deg``,
        ``score``, ``runner_up``, ``confident``, voxel sizes and shapes...).
    overlay_png : bytes or path of a PNG file, optional
        :func:`corrtomo.register.write_volume_overlay` output.
    pose_error_voxels : float, optional
        Digital twin only: largest corner error of the found pose against the truth, in overview
        (micro) voxels.
    """

    table: pd.DataFrame
    registration: dict
    overlay_png: bytes | os.PathLike | None = None
    pose_error_voxels: float | None = None


@dataclass
class ReportData:
    """Everything one report shows; the pipeline fills it, :func:`write_report` renders it.

    Attributes
    ----------
    title : str
        Report title (the sample name).
    library : PhaseLibrary
        Phase ids, names, colours and densities.
    voxel_size_um : float or (3,) sequence of float
        Voxel size (z, y, x) in micrometres.
    ct : (P, M, N) array_like
        CT volume (numpy, Zarr or Dask); only its three central orthogonal planes are read.
    phases : (P, M, N) array_like of uint8
        Phase ids (0 = matrix); only the central planes are read.
    particles : (P, M, N) array_like of uint32
        Particle labels (0 = background); only the central planes are read.
    particles_table : DataFrame
        The ``particles.csv`` table.
    grains_table : DataFrame
        The ``grains.csv`` table.
    liberation : DataFrame
        :func:`corrtomo.liberation.liberation_table` output (``liberation.csv`` + optional
        ``ld_ci_low``/``ld_ci_high``).
    summary : dict
        The ``summary.json`` content.
    sections : list of ReportSection
        SEM sections (may be empty).
    stereology : DataFrame, optional
        :func:`corrtomo.liberation.stereology_comparison` output.
    representativeness : DataFrame, optional
        :func:`corrtomo.stats.representativeness` output.
    accuracy : dict, optional
        Digital twin only: accuracy against the truth. Scalars (``mean_phase_iou``,
        ``particle_f1``...) form one table; every mapping (``phase_iou``, ``ld_error``...) its own.
    provenance : dict
        ``config`` (YAML text), ``versions`` {package: version}, ``stages`` [{stage, seconds,
        peak_memory_mb, skipped}], optionally ``created`` (time stamp) and any other key.
    particle_model_figure : matplotlib Figure, path of a PNG file or PNG bytes, optional
        The copula pair plot (:func:`corrtomo.stats.pair_plot` writes a PNG file).
    cross_scale : CrossScaleReport, optional
        A nano-CT volume located in this micro-CT overview and the size distributions of both.
    """

    title: str
    library: PhaseLibrary
    voxel_size_um: Any
    ct: Any
    phases: Any
    particles: Any
    particles_table: pd.DataFrame
    grains_table: pd.DataFrame
    liberation: pd.DataFrame
    summary: dict
    sections: list[ReportSection] = field(default_factory=list)
    stereology: pd.DataFrame | None = None
    representativeness: pd.DataFrame | None = None
    accuracy: dict | None = None
    provenance: dict = field(default_factory=dict)
    particle_model_figure: Any = None
    cross_scale: CrossScaleReport | None = None


def _shape_of(array: Any, name: str) -> tuple[int, ...]:
    shape = getattr(array, "shape", None)
    if shape is None:
        raise InputError(f"expected an array with a shape, got {type(array).__name__}", source=name)
    return tuple(int(n) for n in shape)


def check_report_data(data: ReportData) -> np.ndarray:
    """Check the parts of `data` a report needs; return the voxel size (z, y, x) in micrometres.

    Raises
    ------
    InputError
        One line naming the part at fault: volumes that are not 3D or differ in shape, a bad
        voxel size, a table that is not a DataFrame, a section image of another shape than its
        mineral map, or a particle model figure that is not a Figure or a PNG.
    """
    if not isinstance(data, ReportData):
        raise InputError(f"expected ReportData, got {type(data).__name__}", source="report")
    if not isinstance(data.library, PhaseLibrary):
        raise InputError(
            f"expected a PhaseLibrary, got {type(data.library).__name__}", source="library"
        )
    spacing = normalize_spacing(data.voxel_size_um, 3, name="voxel_size_um")
    shape = _shape_of(data.ct, "ct")
    if len(shape) != 3:
        raise InputError(f"expected a 3D volume, got shape {shape}", source="ct")
    if min(shape) < 1:
        raise InputError(f"the volume is empty (shape {shape})", source="ct")
    for name in ("phases", "particles"):
        other = _shape_of(getattr(data, name), name)
        if other != shape:
            raise InputError(f"shape {other} differs from the CT volume's {shape}", source=name)
    for name in ("particles_table", "grains_table", "liberation"):
        if not isinstance(getattr(data, name), pd.DataFrame):
            raise InputError(
                f"expected a DataFrame, got {type(getattr(data, name)).__name__}", source=name
            )
    for name in ("stereology", "representativeness"):
        value = getattr(data, name)
        if value is not None and not isinstance(value, pd.DataFrame):
            raise InputError(
                f"expected a DataFrame or None, got {type(value).__name__}", source=name
            )
    if not isinstance(data.summary, dict):
        raise InputError(f"expected a dict, got {type(data.summary).__name__}", source="summary")
    if data.accuracy is not None and not isinstance(data.accuracy, dict):
        raise InputError(
            f"expected a dict or None, got {type(data.accuracy).__name__}", source="accuracy"
        )
    if not isinstance(data.provenance, dict):
        raise InputError(
            f"expected a dict, got {type(data.provenance).__name__}", source="provenance"
        )
    for section in data.sections:
        _check_section(section)
    _check_model_figure(data.particle_model_figure)
    if data.cross_scale is not None:
        _check_cross_scale(data.cross_scale)
    return spacing


def _check_section(section: ReportSection) -> None:
    if not isinstance(section, ReportSection):
        raise InputError(f"expected ReportSection, got {type(section).__name__}", source="sections")
    source = f"section {section.name}"
    mineral_map = np.asarray(section.mineral_map)
    if mineral_map.ndim != 2 or min(mineral_map.shape) < 1:
        raise InputError(
            f"the mineral map must be a non-empty 2D image, got shape {mineral_map.shape}",
            source=source,
        )
    if not np.issubdtype(mineral_map.dtype, np.integer):
        raise InputError(
            f"the mineral map must hold integer phase ids, got {mineral_map.dtype}", source=source
        )
    for name in ("bse", "ct_plane"):
        image = getattr(section, name)
        shape = np.shape(image)
        if name == "bse" and len(shape) == 3 and shape[2] in (3, 4):
            shape = shape[:2]  # an RGB(A) export of a BSE image is shown in grey
        if image is not None and shape != mineral_map.shape:
            raise InputError(
                f"{name} has shape {np.shape(image)}, the mineral map {mineral_map.shape}",
                source=source,
            )


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png(image: Any, name: str) -> bool:
    """True if `image` is PNG bytes or the path of a PNG file; raise if it is bytes or a path
    that is not; False for anything else."""
    if isinstance(image, bytes | bytearray):
        if not bytes(image[:8]) == _PNG_SIGNATURE:
            raise InputError("bytes given are not a PNG image", source=name)
        return True
    if isinstance(image, str | os.PathLike):
        if not os.path.isfile(image):
            raise InputError("no such file", source=os.fspath(image))
        with open(image, "rb") as handle:
            if handle.read(8) != _PNG_SIGNATURE:
                raise InputError("is not a PNG image", source=os.fspath(image))
        return True
    return False


def _check_model_figure(figure: Any) -> None:
    if figure is None or hasattr(figure, "savefig") or _check_png(figure, "particle_model_figure"):
        return
    raise InputError(
        f"expected a matplotlib Figure, a PNG file or PNG bytes, got {type(figure).__name__}",
        source="particle_model_figure",
    )


def _check_cross_scale(cross: Any) -> None:
    source = "cross_scale"
    if not isinstance(cross, CrossScaleReport):
        raise InputError(f"expected a CrossScaleReport, got {type(cross).__name__}", source=source)
    table = cross.table
    if not isinstance(table, pd.DataFrame):
        raise InputError(
            f"the table must be a DataFrame (cross_scale_psd output), got {type(table).__name__}",
            source=source,
        )
    missing = [c for c in CROSS_SCALE_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(
            f"the table lacks column(s) {', '.join(missing)}; expected cross_scale_psd output",
            source=source,
        )
    summary = table.attrs.get("summary")
    if summary is not None and not isinstance(summary, dict):
        raise InputError(
            f"table.attrs['summary'] must be a dict, got {type(summary).__name__}", source=source
        )
    registration = cross.registration
    if not isinstance(registration, dict):
        raise InputError(
            "the registration must be a dict (VolumeRegistration.to_dict()), "
            f"got {type(registration).__name__}",
            source=source,
        )
    missing = [k for k in CROSS_SCALE_REGISTRATION_KEYS if k not in registration]
    if missing:
        raise InputError(
            f"the registration lacks key(s) {', '.join(missing)}; "
            "expected VolumeRegistration.to_dict() output",
            source=source,
        )
    try:
        is_png = cross.overlay_png is None or _check_png(cross.overlay_png, "overlay_png")
    except InputError as error:
        raise InputError(str(error), source=source) from None
    if not is_png:
        raise InputError(
            f"overlay_png must be PNG bytes or a PNG file, got {type(cross.overlay_png).__name__}",
            source=source,
        )
    error = cross.pose_error_voxels
    if error is not None and (isinstance(error, bool) or not isinstance(error, numbers.Real)):
        raise InputError(
            f"pose_error_voxels must be a number or None, got {type(error).__name__}",
            source=source,
        )
