"""Liberation spectra, size distributions (Fig. 9) and grain versus particle volume (Fig. 11)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .._shared import InputError
from ._common import (
    check_edges,
    class_index,
    geometric_size_bins,
    phase_columns,
    select_particles,
    volume_fractions,
)

#: Grade classes of a liberation spectrum, in percent: 0, (0,10], ..., (80,90], (90,100), 100.
GRADE_CLASSES = ("0", *(f"({k},{k + 10}]" for k in range(0, 90, 10)), "(90,100)", "100")
_GRADE_TOLERANCE = 1e-9


def _grade_class(vf: np.ndarray) -> np.ndarray:
    """Grade class index 0..11 of volume fractions (see :data:`GRADE_CLASSES`)."""
    pct = vf * 100.0
    index = np.ceil(pct / 10.0 - 1e-12).astype(np.int64)  # (0,10] -> 1, ..., (80,90] -> 9
    index = np.clip(index, 1, 10)  # (90,100) -> 10
    index[vf <= _GRADE_TOLERANCE] = 0
    index[vf >= 1.0 - _GRADE_TOLERANCE] = 11
    return index


def liberation_spectrum(
    particles_df: pd.DataFrame,
    *,
    phases: Sequence[str] | str | None = None,
    exclude_border: bool = True,
    min_esd_um: float = 0.0,
) -> pd.DataFrame:
    """Liberation spectrum (volume of each phase by particle grade) and the grade-recovery curve.

    Parameters
    ----------
    particles_df : DataFrame
        ``particles.csv`` table (``esd_um``, ``volume_um3``, ``touches_border``, ``vf_<phase>``).
    phases : str or sequence of str, optional
        Phases to report; default every ``vf_`` column.
    exclude_border, min_esd_um
        Particle filter, as in :func:`liberation_table`.

    Returns
    -------
    DataFrame
        12 rows per phase, one per grade class ``0, (0,10], ..., (80,90], (90,100), 100`` (percent
        of the phase in the particle): ``phase, grade_class, grade_min_pct, grade_max_pct,
        n_particles, particle_volume_um3, phase_volume_um3, phase_volume_fraction,
        cumulative_recovery, cumulative_grade``. ``phase_volume_um3`` sums over the classes to the
        whole volume of the phase in the counted particles. The cumulative columns accumulate from
        the richest class down: recovering every particle of grade >= the class lower bound
        recovers ``cumulative_recovery`` of the phase at a concentrate grade ``cumulative_grade``
        (the ideal grade-recovery curve of a perfect grade separation).

    Notes
    -----
    A particle of grade ``g_p = x_{p,i}`` (volume fraction of phase i) and volume ``V_p`` adds
    ``g_p V_p`` to the phase volume of its class. Class "0" holds the particles without the phase
    (phase volume 0), class "100" the pure particles (``g_p = 1`` within 1e-9). Particle grade
    classes are the liberation by grade of Reyes et al. (2018); the free share of Eq. 1 of the
    seed paper is the part of the spectrum above the threshold.

    References
    ----------
    .. [1] Reyes F., Lin Q., Cilliers J.J., Neethling S.J. (2018). Quantifying mineral liberation by
           particle grade and surface exposure using X-ray microCT. Minerals Engineering 125, 75-82.
    """
    names = phase_columns(particles_df, phases)
    counted = select_particles(
        particles_df, exclude_border=exclude_border, min_size_um=float(min_esd_um)
    )
    vf = volume_fractions(counted, names)
    volume = counted["volume_um3"].to_numpy(dtype=np.float64)
    n_grades = len(GRADE_CLASSES)
    grade_min = np.array([0.0, *range(0, 100, 10), 100.0])
    grade_max = np.array([0.0, *range(10, 101, 10), 100.0])
    frames = []
    for j, name in enumerate(names):  # loop over phases
        grade = _grade_class(vf[:, j])
        n_particles = np.bincount(grade, minlength=n_grades)
        particle_volume = np.bincount(grade, weights=volume, minlength=n_grades)
        phase_volume = np.bincount(grade, weights=vf[:, j] * volume, minlength=n_grades)
        total = phase_volume.sum()
        cumulative_phase = np.cumsum(phase_volume[::-1])[::-1]
        cumulative_particles = np.cumsum(particle_volume[::-1])[::-1]
        fraction = phase_volume / total if total > 0 else np.full(n_grades, np.nan)
        recovery = cumulative_phase / total if total > 0 else np.full(n_grades, np.nan)
        grade_curve = np.full(n_grades, np.nan)
        np.divide(
            cumulative_phase, cumulative_particles, out=grade_curve, where=cumulative_particles > 0
        )
        frames.append(
            pd.DataFrame(
                {
                    "phase": name,
                    "grade_class": GRADE_CLASSES,
                    "grade_min_pct": grade_min,
                    "grade_max_pct": grade_max,
                    "n_particles": n_particles,
                    "particle_volume_um3": particle_volume,
                    "phase_volume_um3": phase_volume,
                    "phase_volume_fraction": fraction,
                    "cumulative_recovery": recovery,
                    "cumulative_grade": grade_curve,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _weighted_histogram(klass: np.ndarray, weights: np.ndarray, n_classes: int) -> np.ndarray:
    inside = klass >= 0
    hist = np.bincount(klass[inside], weights=weights[inside], minlength=n_classes)
    total = hist.sum()
    return hist / total if total > 0 else np.full(n_classes, np.nan)


def size_distribution(
    particles_df: pd.DataFrame,
    *,
    densities: Mapping[str, float] | None = None,
    phases: Sequence[str] | str | None = None,
    size_bins_um: Sequence[float] | np.ndarray | None = None,
    dominance: float = 0.5,
    exclude_border: bool = True,
    min_esd_um: float = 0.0,
) -> pd.DataFrame:
    """Number-, volume- and mass-weighted ESD distributions, for all particles and per dominant phase.

    Parameters
    ----------
    particles_df : DataFrame
        ``particles.csv`` table (``esd_um``, ``volume_um3``, ``touches_border``, ``vf_<phase>``).
    densities : mapping of str to float, optional
        Density of each phase in g/cm3 (``PhaseLibrary.by_name(name).density``). Without it the
        mass-weighted columns are NaN.
    phases : str or sequence of str, optional
        Phases (default every ``vf_`` column); also the phases whose densities make the mass.
    size_bins_um : sequence of float, optional
        ESD class edges; default the sqrt(2) series of :func:`geometric_size_bins`.
    dominance : float
        A particle belongs to the group of phase i when ``vf_i > dominance`` (0.5: "predominantly
        consist of one mineral", seed paper Fig. 9).
    exclude_border, min_esd_um
        Particle filter, as in :func:`liberation_table`.

    Returns
    -------
    DataFrame
        One row per (group, ESD class), group ``"all"`` then each phase: ``group, esd_min_um,
        esd_max_um, n_particles, number_fraction, volume_fraction, mass_fraction,
        cumulative_number, cumulative_volume, cumulative_mass``. The fractions are normalised
        histograms (summing to 1 over the classes of a group; NaN for an empty group); the
        cumulative columns are the undersize distributions Q0, Q3 and the mass distribution.

    Notes
    -----
    Particle mass ``m_p = V_p sum_i x_{p,i} rho_i`` (x: phase volume fractions, rho: densities).
    Fig. 9 of the seed paper shows the mass-weighted normalised histograms.

    References
    ----------
    .. [1] Englisch S. et al., seed paper (``shared/seeds/000_22e43a0dd9515ebb.txt``), Fig. 9.
    """
    names = phase_columns(particles_df, phases)
    counted = select_particles(
        particles_df, exclude_border=exclude_border, min_size_um=float(min_esd_um)
    )
    vf = volume_fractions(counted, names)
    volume = counted["volume_um3"].to_numpy(dtype=np.float64)
    esd = counted["esd_um"].to_numpy(dtype=np.float64)
    edges = geometric_size_bins(esd) if size_bins_um is None else check_edges(size_bins_um)
    n_classes = edges.size - 1
    if densities is None:
        mass = np.full(volume.shape, np.nan)
    else:
        missing = [n for n in names if n not in densities]
        if missing:
            raise InputError(f"no density for phase(s) {', '.join(missing)}", source="densities")
        rho = np.array([float(densities[n]) for n in names])
        mass = volume * (vf @ rho)
    klass = class_index(esd, edges)
    groups = [("all", np.ones(esd.size, dtype=bool))]
    groups += [(name, vf[:, j] > dominance) for j, name in enumerate(names)]
    frames = []
    for group, member in groups:  # loop over groups (phases), not particles
        k = np.where(member, klass, -1)
        number = _weighted_histogram(k, np.ones(esd.size), n_classes)
        by_volume = _weighted_histogram(k, volume, n_classes)
        by_mass = (
            np.full(n_classes, np.nan)
            if densities is None
            else _weighted_histogram(k, mass, n_classes)
        )
        frames.append(
            pd.DataFrame(
                {
                    "group": group,
                    "esd_min_um": edges[:-1],
                    "esd_max_um": edges[1:],
                    "n_particles": np.bincount(k[k >= 0], minlength=n_classes),
                    "number_fraction": number,
                    "volume_fraction": by_volume,
                    "mass_fraction": by_mass,
                    "cumulative_number": np.cumsum(number),
                    "cumulative_volume": np.cumsum(by_volume),
                    "cumulative_mass": np.cumsum(by_mass),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def grain_particle_volume(
    grains_df: pd.DataFrame,
    particles_df: pd.DataFrame,
    phase: str | int,
    bins: Sequence[float] | np.ndarray | int | None = None,
    *,
    exclude_border: bool = True,
) -> pd.DataFrame:
    """Binned mean grain volume of one phase against the volume of its particle (Fig. 11).

    Parameters
    ----------
    grains_df : DataFrame
        ``grains.csv`` table: ``particle_label``, ``phase`` (name or id) and ``volume_um3``.
    particles_df : DataFrame
        ``particles.csv`` table: ``label``, ``volume_um3``, ``touches_border``.
    phase : str or int
        The phase whose grains are plotted (matched against the ``phase`` column as given, or as text).
    bins : sequence of float or int, optional
        Edges of the particle-volume classes in um3, or a number of logarithmic classes between the
        smallest and largest particle volume (default 4 per decade).
    exclude_border : bool
        Drop grains of particles that touch the volume border.

    Returns
    -------
    DataFrame
        One row per particle-volume class: ``particle_volume_min_um3, particle_volume_max_um3,
        n_grains, particle_volume_mean_um3, grain_volume_mean_um3, grain_volume_std_um3,
        grain_volume_sem_um3`` (standard error of the mean, ``s / sqrt(n)``, NaN for n < 2).

    Notes
    -----
    Each grain is one point (particle volume, grain volume); the curve is the class mean of the grain
    volume. Far below the diagonal ``grain = particle`` the phase is locked; on the diagonal it is
    liberated (Fig. 11 of the seed paper, "the farer away from the diagonal line, the lower the
    liberation degree"). Moments are sums per class (``bincount``), so the curve merges across chunks.

    References
    ----------
    .. [1] Englisch S. et al., seed paper (``shared/seeds/000_22e43a0dd9515ebb.txt``), Fig. 11 and Fig. S7.
    """
    for column in ("particle_label", "phase", "volume_um3"):
        if column not in grains_df.columns:
            raise InputError(f"the grain table has no {column!r} column", source="grains")
    for column in ("label", "volume_um3"):
        if column not in particles_df.columns:
            raise InputError(f"the particle table has no {column!r} column", source="particles")
    particles = particles_df
    if exclude_border and "touches_border" in particles.columns:
        particles = particles.loc[~particles["touches_border"].to_numpy(dtype=bool)]
    column = grains_df["phase"]
    selected = (column == phase).to_numpy(dtype=bool) | (column.astype(str) == str(phase)).to_numpy(
        dtype=bool
    )
    grains = grains_df.loc[selected]
    volume_by_label = pd.Series(
        particles["volume_um3"].to_numpy(dtype=np.float64), index=particles["label"].to_numpy()
    )
    particle_volume = grains["particle_label"].map(volume_by_label).to_numpy(dtype=np.float64)
    matched = np.isfinite(particle_volume)
    particle_volume = particle_volume[matched]
    grain_volume = grains["volume_um3"].to_numpy(dtype=np.float64)[matched]

    if bins is None or isinstance(bins, int | np.integer):
        positive = particles["volume_um3"].to_numpy(dtype=np.float64)
        positive = positive[positive > 0]
        if positive.size == 0:
            raise InputError("no particle with a positive volume", source="particles")
        lo, hi = np.log10(positive.min()), np.log10(positive.max())
        n_bins = int(bins) if bins is not None else max(1, int(np.ceil((hi - lo) * 4)))
        edges = np.logspace(lo, hi + 1e-9, n_bins + 1)
    else:
        edges = check_edges(bins, name="bins")
    n_classes = edges.size - 1
    klass = class_index(particle_volume, edges)
    inside = klass >= 0
    k = klass[inside]
    g = grain_volume[inside]
    n = np.bincount(k, minlength=n_classes).astype(np.float64)
    sum_g = np.bincount(k, weights=g, minlength=n_classes)
    sum_g2 = np.bincount(k, weights=g * g, minlength=n_classes)
    sum_p = np.bincount(k, weights=particle_volume[inside], minlength=n_classes)
    mean = np.full(n_classes, np.nan)
    np.divide(sum_g, n, out=mean, where=n > 0)
    mean_p = np.full(n_classes, np.nan)
    np.divide(sum_p, n, out=mean_p, where=n > 0)
    variance = np.full(n_classes, np.nan)
    np.divide(sum_g2 - n * np.nan_to_num(mean) ** 2, n - 1, out=variance, where=n > 1)
    std = np.sqrt(np.clip(variance, 0.0, None))
    sem = np.full(n_classes, np.nan)
    np.divide(std, np.sqrt(n), out=sem, where=n > 1)
    return pd.DataFrame(
        {
            "particle_volume_min_um3": edges[:-1],
            "particle_volume_max_um3": edges[1:],
            "n_grains": n.astype(np.int64),
            "particle_volume_mean_um3": mean_p,
            "grain_volume_mean_um3": mean,
            "grain_volume_std_um3": std,
            "grain_volume_sem_um3": sem,
        }
    )
