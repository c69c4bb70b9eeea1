"""Expected EDS signatures of library minerals: element weight fractions x detector efficiency.

A pure material ``m`` under the beam gives characteristic counts ``n_e ~ Poisson(S c_{m,e} k_e)``
for every element ``e`` it holds, with ``c_{m,e}`` the weight fraction (from the formula),
``k_e`` a detection efficiency and ``S`` the counts scale of the map (dose x dwell time). This is
the first-order ("k-ratio ~ concentration") relation of EDS quantification without matrix
corrections (Newbury & Ritchie 2013); the counts *proportions* ``p_{m,e} = c_{m,e} k_e / sum_e'
c_{m,e'} k_e'`` do not depend on the unknown scale ``S``, which is what classification compares.

References
----------
Newbury, D. E., Ritchie, N. W. M. (2013). Is scanning electron microscopy/energy dispersive X-ray
spectrometry (SEM/EDS) quantitative? Scanning 35, 141-168.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .._shared import InputError
from ..phases import MATERIALS, PhaseLibrary, atomic_number

#: Lightest element whose characteristic line an EDS detector records (boron, Z = 5).
LIGHTEST_DETECTABLE_Z = 5


def eds_efficiency(atomic_number_: int | np.ndarray) -> np.ndarray | float:
    """Relative detection efficiency of an element's characteristic X-ray line.

    A coarse model of a windowed silicon-drift detector: H, He, Li and Be (Z < 5) are not
    detected (their lines are absorbed by the window and the sample), the soft K lines of
    B-F (5 <= Z <= 9) are detected at half the efficiency of the harder lines of Z >= 10.

    Parameters
    ----------
    atomic_number_ : int or ndarray of int
        Atomic number(s) Z.

    Returns
    -------
    float or ndarray of float
        ``k(Z) = 0`` for Z < 5, 0.5 for 5 <= Z <= 9, 1 otherwise.

    Examples
    --------
    >>> eds_efficiency(3), eds_efficiency(8), eds_efficiency(20)
    (0.0, 0.5, 1.0)
    """
    z = np.asarray(atomic_number_)
    k = np.where(z < LIGHTEST_DETECTABLE_Z, 0.0, np.where(z <= 9, 0.5, 1.0))
    return float(k) if k.ndim == 0 else k


def detectable(symbol: str) -> bool:
    """Whether EDS records element `symbol` at all (``eds_efficiency > 0``)."""
    return bool(eds_efficiency(atomic_number(symbol)) > 0)


def reference_signatures(
    library: PhaseLibrary,
    elements: Sequence[str],
    *,
    matrix: str | None = "epoxy",
    efficiency: Mapping[str, float] | None = None,
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Expected EDS count rates of every library phase (and the matrix) over `elements`.

    Parameters
    ----------
    library : PhaseLibrary
        Minerals; weight fractions come from their formulas.
    elements : sequence of str
        Element symbols of the maps, in the column order wanted.
    matrix : str or None
        Name of the embedding material in ``corrtomo.phases.MATERIALS`` (``"epoxy"``), added as
        the last row, or ``None`` for none.
    efficiency : mapping of str to float, optional
        Detector efficiency per element, overriding :func:`eds_efficiency`.

    Returns
    -------
    names : list of str
        Phase names, then the matrix name.
    ids : (n_references,) ndarray of int
        Phase ids, then 255 (``MATRIX_LABEL``) for the matrix.
    rates : (n_references, n_elements) ndarray of float64
        ``a_{m,e} = c_{m,e} k_e``: expected counts per unit counts scale.

    Raises
    ------
    InputError
        If `matrix` is not a known material.
    """
    from .._shared import MATRIX_LABEL

    elements = list(elements)
    k = np.array(
        [
            (efficiency or {}).get(e, eds_efficiency(atomic_number(e)))
            for e in elements
        ],
        dtype=np.float64,
    )
    fractions = library.weight_fraction_matrix(elements)
    names = list(library.names)
    ids = [int(i) for i in library.ids]
    if matrix is not None:
        if matrix not in MATERIALS:
            known = ", ".join(sorted(MATERIALS))
            raise InputError(f"unknown matrix material {matrix!r} (known: {known})", source="matrix")
        wf = MATERIALS[matrix].weight_fractions
        fractions = np.vstack([fractions, [[wf.get(e, 0.0) for e in elements]]])
        names.append(matrix)
        ids.append(MATRIX_LABEL)
    return names, np.asarray(ids, dtype=np.int64), fractions * k[None, :]
