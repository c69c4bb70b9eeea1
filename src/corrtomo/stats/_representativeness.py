"""Representativeness of a sub-volume: particle size frequencies over pieces of a larger volume (Fig. 12)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from .._shared import InputError, normalize_spacing

_MAX_CHUNK_VOXELS = 1 << 22


def piece_grid(
    shape: Sequence[int],
    *,
    spacing: float | Sequence[float],
    piece_size_um: float | Sequence[float],
) -> np.ndarray:
    """Number of whole pieces per axis and the piece size in voxels.

    Parameters
    ----------
    shape : (3,) sequence of int
        Volume shape (z, y, x).
    spacing : float or (3,) sequence
        Voxel size in micrometres.
    piece_size_um : float or (3,) sequence
        Physical size of one piece (z, y, x), for example one nano-CT field of view.

    Returns
    -------
    (2, 3) ndarray of int
        Row 0: pieces per axis; row 1: piece size in voxels (the physical size rounded to whole voxels).

    Raises
    ------
    InputError
        If a piece is smaller than a voxel or the volume holds fewer than two whole pieces.
    """
    spacing_zyx = normalize_spacing(spacing, 3)
    size = normalize_spacing(piece_size_um, 3, name="piece_size_um")
    piece_voxels = np.rint(size / spacing_zyx).astype(np.int64)
    if np.any(piece_voxels < 1):
        raise InputError(
            f"piece size {size.tolist()} um is smaller than a voxel", source="piece_size_um"
        )
    counts = np.asarray(shape, dtype=np.int64) // piece_voxels
    if np.prod(counts) < 2:
        raise InputError(
            f"a volume of {list(shape)} voxels holds {int(np.prod(counts))} whole piece(s) of "
            f"{piece_voxels.tolist()} voxels; at least 2 are needed for a confidence interval",
            source="piece_size_um",
        )
    return np.stack([counts, piece_voxels])


def interval_statistics(values: np.ndarray, *, confidence: float = 0.95) -> pd.DataFrame:
    """Mean, standard deviation, standard error and Student-t confidence interval of columns.

    Parameters
    ----------
    values : (n, k) array_like
        n observations (pieces) of k quantities (size intervals); n >= 2.
    confidence : float
        Coverage of the interval (0.95).

    Returns
    -------
    DataFrame
        k rows: ``n_pieces, mean, std, sem, ci_low, ci_high``.

    Notes
    -----
    ``sem = s / sqrt(n)`` with the sample standard deviation ``s`` (n - 1 in the denominator) and
    ``CI = mean -/+ t_{n-1, (1 + confidence) / 2} * sem``.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    n = x.shape[0]
    if n < 2:
        raise InputError(f"need at least 2 observations, got {n}", source="values")
    mean = x.mean(axis=0)
    std = x.std(axis=0, ddof=1)
    sem = std / np.sqrt(n)
    half = scipy_stats.t.ppf(0.5 + confidence / 2.0, df=n - 1) * sem
    return pd.DataFrame(
        {
            "n_pieces": n,
            "mean": mean,
            "std": std,
            "sem": sem,
            "ci_low": mean - half,
            "ci_high": mean + half,
        }
    )


def _piece_of(coordinates_zyx: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Flat piece index of voxel coordinates (n, 3); -1 outside the whole pieces."""
    counts, size = grid
    index = np.floor(coordinates_zyx / size).astype(np.int64)
    inside = np.all((index >= 0) & (index < counts), axis=1)
    flat = np.ravel_multi_index(tuple(np.clip(index, 0, counts - 1).T), tuple(counts))
    return np.where(inside, flat, -1)


def _centroid_pieces(centroid_zyx: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Piece of each particle centroid (voxel-index coordinates, (n, 3)); -1 outside the pieces."""
    return _piece_of(centroid_zyx + 0.5, grid)  # voxel i covers [i, i + 1)


def _check_edges(esd_bins_um) -> np.ndarray:
    edges = np.asarray(esd_bins_um, dtype=np.float64).ravel()
    if edges.size < 2 or np.any(np.isnan(edges)) or np.any(np.diff(edges) <= 0):
        raise InputError(
            f"ESD interval edges must increase, got {edges.tolist()}", source="esd_bins_um"
        )
    return edges


def _esd(voxels: np.ndarray, voxel_volume: float) -> np.ndarray:
    """``ESD = (6 V / pi)^(1/3)`` in um from voxel counts (one formula for every path)."""
    return np.cbrt(6.0 * np.asarray(voxels, dtype=np.float64) * voxel_volume / np.pi)


def _interval_counts(
    piece: np.ndarray,
    esd: np.ndarray,
    keep: np.ndarray,
    *,
    edges: np.ndarray,
    cut_off: float,
    n_pieces: int,
) -> np.ndarray:
    """(n_pieces, n_intervals) counts of the kept particles (or fragments) above the cut-off."""
    keep = keep & (esd >= cut_off)
    klass = np.searchsorted(edges, esd, side="right") - 1
    keep &= (klass >= 0) & (klass < edges.size - 1)
    n_intervals = edges.size - 1
    flat = np.bincount(piece[keep] * n_intervals + klass[keep], minlength=n_pieces * n_intervals)
    return flat.reshape(n_pieces, n_intervals)


def _default_esd_bins(
    voxels: np.ndarray, voxel_volume: float, resolution_um: float | None, source: str
) -> np.ndarray:
    """A sqrt(2) series of ESD edges from the cut-off (or the smallest particle) to the largest."""
    esd = _esd(voxels, voxel_volume)
    cut_off = 0.0 if resolution_um is None else 2.0 * float(resolution_um)
    esd = esd[esd >= cut_off]
    if esd.size == 0:
        raise InputError("no particle above the resolution cut-off", source=source)
    low = max(cut_off, esd.min())
    steps = int(np.floor(2.0 * np.log2(esd.max() / low))) + 1
    return low * 2.0 ** (np.arange(steps + 1) / 2.0)


def _check_frequency(frequency: str) -> None:
    if frequency not in ("count", "relative"):
        raise InputError(
            f"frequency must be 'count' or 'relative', got {frequency!r}", source="frequency"
        )


def _interval_table(
    counts: np.ndarray, edges: np.ndarray, *, frequency: str, confidence: float
) -> pd.DataFrame:
    """Per-interval statistics over pieces of the counts (or the relative frequencies)."""
    values = counts.astype(np.float64)
    if frequency == "relative":
        per_piece = values.sum(axis=1, keepdims=True)
        values = np.divide(values, per_piece, out=np.zeros_like(values), where=per_piece > 0)
    summary = interval_statistics(values, confidence=confidence)
    summary.insert(0, "esd_center_um", np.sqrt(edges[:-1] * edges[1:]))
    summary.insert(0, "esd_max_um", edges[1:])
    summary.insert(0, "esd_min_um", edges[:-1])
    summary["total"] = counts.sum(axis=0)
    return summary


def _centroids(particles: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, voxel counts and centroids (voxel coordinates) of a label volume, slab by slab."""
    n_labels = int(particles.max(initial=0))
    count = np.zeros(n_labels + 1)
    sums = np.zeros((3, n_labels + 1))
    plane = particles.shape[1] * particles.shape[2] or 1
    step = max(1, _MAX_CHUNK_VOXELS // plane)
    y, x = np.indices(particles.shape[1:], dtype=np.float64)
    for start in range(0, particles.shape[0], step):
        slab = particles[start : start + step].astype(np.int64)
        flat = slab.reshape(slab.shape[0], -1)
        count += np.bincount(flat.ravel(), minlength=n_labels + 1)
        z = np.arange(start, start + slab.shape[0], dtype=np.float64)[:, None]
        sums[0] += np.bincount(
            flat.ravel(), weights=np.broadcast_to(z, flat.shape).ravel(), minlength=n_labels + 1
        )
        sums[1] += np.bincount(
            flat.ravel(), weights=np.tile(y.ravel(), slab.shape[0]), minlength=n_labels + 1
        )
        sums[2] += np.bincount(
            flat.ravel(), weights=np.tile(x.ravel(), slab.shape[0]), minlength=n_labels + 1
        )
    labels = np.flatnonzero(count)
    labels = labels[labels > 0]
    return labels, count[labels], (sums[:, labels] / count[labels]).T


def _border_labels(particles: np.ndarray) -> np.ndarray:
    faces = [np.take(particles, i, axis=a).ravel() for a in range(3) for i in (0, -1)]
    return np.unique(np.concatenate(faces))


def piece_size_counts(
    particles: np.ndarray,
    *,
    spacing: float | Sequence[float],
    piece_size_um: float | Sequence[float],
    esd_bins_um: Sequence[float] | np.ndarray,
    resolution_um: float | None = None,
    assign: Literal["centroid", "cut"] = "centroid",
    exclude_border: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Number of particles per ESD interval in every piece of a volume.

    Parameters
    ----------
    particles : (P, M, N) ndarray of int
        Particle labels (z, y, x), 0 is background.
    spacing : float or (3,) sequence
        Voxel size in micrometres.
    piece_size_um : float or (3,) sequence
        Physical size of a piece (z, y, x). The volume is tiled from its first voxel by whole pieces;
        a remainder thinner than a piece at the far end of an axis is not used.
    esd_bins_um : sequence of float
        ESD interval edges in micrometres, half-open ``[lo, hi)``.
    resolution_um : float, optional
        Particles with ``ESD < 2 * resolution_um`` are dropped (the resolution cut-off of Fig. 12).
    assign : {"centroid", "cut"}
        ``"centroid"`` (default): a particle belongs, whole and with its full ESD, to the piece holding
        its centroid, so every particle is counted once. ``"cut"``: the volume is cut into pieces and
        each piece is measured as a scan of it would be, with particles cut by the piece faces
        measured by their part inside the piece (counted in every piece they reach, smaller).
    exclude_border : bool
        Drop particles that touch the border of the whole volume (truncated by the scan). With
        ``assign="cut"`` this also drops parts that touch a piece face.

    Returns
    -------
    counts : (n_pieces, n_intervals) ndarray of int
        Particle counts per piece (C order over the piece grid) and ESD interval.
    edges : (n_intervals + 1,) ndarray
        The interval edges.
    """
    particles = np.asarray(particles)
    if particles.ndim != 3:
        raise InputError(f"expected a 3D label volume, got {particles.ndim}D", source="particles")
    if not np.issubdtype(particles.dtype, np.integer):
        raise InputError(f"labels must be integers, got {particles.dtype}", source="particles")
    if particles.size and np.issubdtype(particles.dtype, np.signedinteger) and particles.min() < 0:
        raise InputError("labels must be non-negative", source="particles")
    edges = _check_edges(esd_bins_um)
    if int(particles.max(initial=0)) > max(1 << 24, 4 * particles.size):
        # labels only group voxels here: renumber sparse labels to 1..N
        import fastremap

        particles, _ = fastremap.renumber(particles, preserve_zero=True, in_place=False)
    spacing_zyx = normalize_spacing(spacing, 3)
    grid = piece_grid(particles.shape, spacing=spacing_zyx, piece_size_um=piece_size_um)
    n_pieces = int(np.prod(grid[0]))
    voxel_volume = float(np.prod(spacing_zyx))
    cut_off = 0.0 if resolution_um is None else 2.0 * float(resolution_um)

    if assign == "centroid":
        labels, voxels, centroid = _centroids(particles)
        piece = _centroid_pieces(centroid, grid)
        keep = piece >= 0
        if exclude_border:
            keep &= ~np.isin(labels, _border_labels(particles))
        esd = _esd(voxels, voxel_volume)
    elif assign == "cut":
        counts_zyx, size = grid
        used = particles[
            : counts_zyx[0] * size[0], : counts_zyx[1] * size[1], : counts_zyx[2] * size[2]
        ]
        # piece index of every voxel, as a product of per-axis indices (no coordinate arrays)
        piece_z = np.arange(used.shape[0]) // size[0]
        piece_y = np.arange(used.shape[1]) // size[1]
        piece_x = np.arange(used.shape[2]) // size[2]
        piece_voxel = (
            piece_z[:, None, None] * counts_zyx[1] + piece_y[None, :, None]
        ) * counts_zyx[2] + piece_x[None, None, :]
        label = used.astype(np.int64)
        key = label * n_pieces + piece_voxel
        key = key[label > 0]
        fragments, voxels = np.unique(key, return_counts=True)
        piece = fragments % n_pieces
        keep = np.ones(fragments.size, dtype=bool)
        if exclude_border:
            # parts on a piece face are truncated by the piece (as by a scan of it)
            face = np.zeros(used.shape, dtype=bool)
            for axis in range(3):
                position = np.arange(used.shape[axis]) % size[axis]
                on_face = (position == 0) | (position == size[axis] - 1)
                shape = [1, 1, 1]
                shape[axis] = used.shape[axis]
                face |= on_face.reshape(shape)
            touching = np.unique((label * n_pieces + piece_voxel)[face & (label > 0)])
            keep &= ~np.isin(fragments, touching)
        esd = _esd(voxels, voxel_volume)
    else:
        raise InputError(f"assign must be 'centroid' or 'cut', got {assign!r}", source="assign")
    counts = _interval_counts(piece, esd, keep, edges=edges, cut_off=cut_off, n_pieces=n_pieces)
    return counts, edges


def representativeness(
    particles: np.ndarray,
    *,
    spacing: float | Sequence[float],
    piece_size_um: float | Sequence[float],
    esd_bins_um: Sequence[float] | np.ndarray | None = None,
    resolution_um: float | None = None,
    assign: Literal["centroid", "cut"] = "centroid",
    frequency: Literal["count", "relative"] = "count",
    exclude_border: bool = False,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Mean particle-size frequencies over pieces of a volume, with standard errors and t intervals.

    Splits a large volume (micro-CT) into pieces of the size of a smaller scan (one nano-CT field of
    view), counts the particles of every ESD interval in each piece, and reports per interval the
    mean over pieces, its standard error and a Student-t confidence interval: small intervals mean
    that one piece-sized scan is representative of the larger volume (Fig. 12 of the seed paper).

    Parameters
    ----------
    particles : (P, M, N) ndarray of int
        Particle labels (z, y, x), 0 is background.
    spacing : float or (3,) sequence
        Voxel size in micrometres, (z, y, x).
    piece_size_um : float or (3,) sequence
        Physical size of a piece, (z, y, x) or one value for a cube.
    esd_bins_um : sequence of float, optional
        ESD interval edges; default a sqrt(2) series from the cut-off (or the smallest particle) up to
        the largest particle.
    resolution_um : float, optional
        Resolution of the scan; particles with ``ESD < 2 * resolution_um`` are dropped (the paper's
        cut-off, 3.2 um for its micro-CT).
    assign : {"centroid", "cut"}
        How particles are given to pieces (see :func:`piece_size_counts`). Default ``"centroid"``.
    frequency : {"count", "relative"}
        ``"count"``: the number of particles of the interval in a piece; ``"relative"``: that number
        over the piece's number of particles above the cut-off (a normalised histogram).
    exclude_border : bool
        Drop particles touching the border of the whole volume.
    confidence : float
        Coverage of the t interval (0.95).

    Returns
    -------
    DataFrame
        One row per ESD interval: ``esd_min_um, esd_max_um, esd_center_um, n_pieces, mean, std, sem,
        ci_low, ci_high, total``. ``total`` is the number of particles of the interval over all
        pieces; ``esd_center_um`` the geometric mean of the bounds.

    Notes
    -----
    With ``f_{k,j}`` the frequency of interval j in piece k and n pieces:
    ``mean_j = (1/n) sum_k f_{k,j}``, ``SE_j = s_j / sqrt(n)``,
    ``CI_j = mean_j -/+ t_{n-1, 0.975} SE_j``.

    Why centroid assignment by default: the question of Fig. 12 is whether the *particle population*
    varies from place to place. Giving each particle, whole, to the piece that holds its centroid
    counts every particle exactly once with its true size, so the piece counts add up to the
    volume's and their spread measures spatial heterogeneity only. Measuring cut particles per piece
    instead (``assign="cut"``, what a separate scan of each piece would see) adds truncated
    fragments whose number grows as the pieces approach the particle size, which biases the
    distribution to small sizes and mixes edge effects into the variability.

    References
    ----------
    .. [1] Englisch S. et al., seed paper (``shared/seeds/000_22e43a0dd9515ebb.txt``), Sec. 3.5 and Fig. 12: 60
           nano-CT-sized pieces of the micro-CT tomogram, mean, standard error and 95 % CI per size
           interval, cut-off at the micro-CT resolution.

    Examples
    --------
    >>> import numpy as np
    >>> volume = np.zeros((4, 4, 8), dtype=np.uint32)
    >>> volume[1:3, 1:3, 1:3] = 1          # a 2x2x2 particle in the left half
    >>> volume[1:3, 1:3, 5:7] = 2          # and one in the right half
    >>> table = representativeness(volume, spacing=1.0, piece_size_um=(4, 4, 4), esd_bins_um=[1, 4])
    >>> float(table["mean"].iloc[0]), float(table["sem"].iloc[0])
    (1.0, 0.0)
    """
    _check_frequency(frequency)
    particles = np.asarray(particles)
    if esd_bins_um is None:
        spacing_zyx = normalize_spacing(spacing, 3)
        _, voxels = np.unique(particles[particles > 0], return_counts=True)
        esd_bins_um = _default_esd_bins(
            voxels, float(np.prod(spacing_zyx)), resolution_um, "particles"
        )
    counts, edges = piece_size_counts(
        particles,
        spacing=spacing,
        piece_size_um=piece_size_um,
        esd_bins_um=esd_bins_um,
        resolution_um=resolution_um,
        assign=assign,
        exclude_border=exclude_border,
    )
    return _interval_table(counts, edges, frequency=frequency, confidence=confidence)


_CENTROID_COLUMNS = ("centroid_z_um", "centroid_y_um", "centroid_x_um")


def _table_voxels_and_centroids(
    table: pd.DataFrame, spacing_zyx: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Voxel counts and voxel-index centroids (n, 3) of the rows of a particle table."""
    voxels = table["volume_voxels"].to_numpy()
    if not np.issubdtype(voxels.dtype, np.number) or np.any(~np.isfinite(voxels)):
        raise InputError("volume_voxels must be finite numbers", source="table")
    voxels = voxels.astype(np.float64)
    if np.any(voxels < 1) or np.any(voxels != np.rint(voxels)):
        raise InputError("volume_voxels must be positive whole voxel counts", source="table")
    centroid_um = table[list(_CENTROID_COLUMNS)].to_numpy(dtype=np.float64)
    if np.any(~np.isfinite(centroid_um)):
        raise InputError("the centroid columns hold NaN or infinite values", source="table")
    # The contract's centroid is the mean voxel index times the spacing; the integer index sums
    # are recovered exactly (error far below 0.5 for sums < 1e15) so that a centroid on a piece
    # face falls in the same piece as when measured from the volume.
    sums = np.rint(centroid_um / spacing_zyx[None, :] * voxels[:, None])
    return voxels, sums / voxels[:, None]


def representativeness_from_table(
    table: pd.DataFrame,
    *,
    volume_shape: Sequence[int],
    spacing: float | Sequence[float],
    piece_size_um: float | Sequence[float],
    esd_bins_um: Sequence[float] | np.ndarray | None = None,
    resolution_um: float | None = None,
    frequency: Literal["count", "relative"] = "count",
    exclude_border: bool = False,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """:func:`representativeness` with centroid assignment, from a particle table (no volume read).

    With ``assign="centroid"`` a particle goes, whole, to the piece holding its centroid, so its
    voxel count, centroid and border flag decide everything: this gives the table of
    ``representativeness(particles, assign="centroid", ...)`` from the ``particles.csv`` columns,
    for volumes too large to read whole (the measure stage of the chunked path writes the table).

    Parameters
    ----------
    table : DataFrame
        One row per particle of the whole volume (:func:`corrtomo.measure.particle_table`):
        ``volume_voxels``, ``centroid_z_um``, ``centroid_y_um``, ``centroid_x_um`` (the mean voxel
        index times the spacing, um) and, with `exclude_border`, ``touches_border``.
    volume_shape : (3,) sequence of int
        Shape (z, y, x) of the volume the table was measured on, in voxels.
    spacing : float or (3,) sequence
        Voxel size in micrometres, (z, y, x); the one the table was measured with.
    piece_size_um, esd_bins_um, resolution_um, frequency, confidence
        As in :func:`representativeness`.
    exclude_border : bool
        Drop the rows whose ``touches_border`` is true (for a table of
        :func:`~corrtomo.measure.particle_table`, the particles touching the volume's faces, as in
        :func:`representativeness`; flags added later, e.g. a pillar wall, drop those rows too).

    Returns
    -------
    DataFrame
        As :func:`representativeness`: one row per ESD interval, ``esd_min_um, esd_max_um,
        esd_center_um, n_pieces, mean, std, sem, ci_low, ci_high, total``.

    Notes
    -----
    The same pieces (:func:`piece_grid`, whole pieces from the first voxel), the same
    ``ESD = (6 n v / pi)^(1/3)`` from the voxel count ``n`` and voxel volume ``v``, the same
    cut-off ``ESD >= 2 * resolution_um`` and the same statistics (Sec. 3.5 and Fig. 12 of the seed
    paper, see :func:`representativeness`). The centroid in voxel indices, ``c = S / n`` with
    ``S`` the index sum, is recovered as ``rint(c_um / spacing * n) / n``: the table's value is
    ``(S / n) * spacing``, so this is exact and the piece of a centroid lying on a piece face
    (``c + 1/2`` a multiple of the piece size) matches the volume path bit for bit.

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"volume_voxels": [8, 8], "centroid_z_um": [1.5, 1.5],
    ...                       "centroid_y_um": [1.5, 1.5], "centroid_x_um": [1.5, 5.5]})
    >>> result = representativeness_from_table(
    ...     table, volume_shape=(4, 4, 8), spacing=1.0, piece_size_um=(4, 4, 4), esd_bins_um=[1, 4])
    >>> float(result["mean"].iloc[0]), float(result["sem"].iloc[0])
    (1.0, 0.0)
    """
    _check_frequency(frequency)
    if not isinstance(table, pd.DataFrame):
        raise InputError(f"expected a DataFrame, got {type(table).__name__}", source="table")
    needed = ["volume_voxels", *_CENTROID_COLUMNS] + (["touches_border"] if exclude_border else [])
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise InputError(f"the particle table lacks columns {missing}", source="table")
    shape = np.asarray(volume_shape).ravel()
    if shape.size != 3 or not np.issubdtype(shape.dtype, np.integer) or np.any(shape < 1):
        raise InputError(
            f"volume_shape must be three positive integers, got {shape.tolist()}",
            source="volume_shape",
        )
    spacing_zyx = normalize_spacing(spacing, 3)
    voxel_volume = float(np.prod(spacing_zyx))
    voxels, centroid = _table_voxels_and_centroids(table, spacing_zyx)
    if esd_bins_um is None:
        esd_bins_um = _default_esd_bins(voxels, voxel_volume, resolution_um, "table")
    edges = _check_edges(esd_bins_um)
    grid = piece_grid(tuple(shape.tolist()), spacing=spacing_zyx, piece_size_um=piece_size_um)
    piece = _centroid_pieces(centroid, grid)
    keep = piece >= 0
    if exclude_border:
        keep &= ~table["touches_border"].to_numpy(dtype=bool)
    cut_off = 0.0 if resolution_um is None else 2.0 * float(resolution_um)
    counts = _interval_counts(
        piece,
        _esd(voxels, voxel_volume),
        keep,
        edges=edges,
        cut_off=cut_off,
        n_pieces=int(np.prod(grid[0])),
    )
    return _interval_table(counts, edges, frequency=frequency, confidence=confidence)
