"""Thin helpers around pyvinecopulib (>= 1.0): family sets, fit controls, JSON, Kendall's tau."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._shared import InputError

#: Named family sets of pyvinecopulib (``pv.families.<name>``).
FAMILY_SETS = (
    "parametric",
    "one_par",
    "two_par",
    "three_par",
    "archimedean",
    "elliptical",
    "extreme_value",
    "bb",
    "itau",
    "nonparametric",
    "all",
)


def _pyvinecopulib() -> Any:
    import pyvinecopulib

    return pyvinecopulib


def resolve_family_set(family_set: str | Sequence[str]) -> tuple[list[Any], list[str]]:
    """Pair-copula families for a named set or a list of family names.

    Parameters
    ----------
    family_set : str or sequence of str
        A set name of ``pyvinecopulib.families`` (``"parametric"``, ``"one_par"``, ``"archimedean"``,
        ...) or family names (``["gaussian", "clayton", "gumbel"]``); comma-separated text is accepted.

    Returns
    -------
    families : list of pyvinecopulib.BicopFamily
    names : list of str
        The family names, for the JSON record.

    Raises
    ------
    InputError
        An unknown set or family name.
    """
    pv = _pyvinecopulib()
    if isinstance(family_set, str):
        items = [part.strip() for part in family_set.split(",") if part.strip()]
    else:
        items = [str(part).strip() for part in family_set]
    if not items:
        raise InputError("the family set is empty", source="family_set")
    families: list[Any] = []
    for item in items:
        key = item.lower()
        if key in FAMILY_SETS:
            families.extend(getattr(pv.families, key))
            continue
        family = getattr(pv.families, key, None)
        if not isinstance(family, pv.families.BicopFamily):
            raise InputError(
                f"unknown pair-copula family or set {item!r}; sets: {', '.join(FAMILY_SETS)}; "
                "families: indep, gaussian, student, clayton, gumbel, frank, joe, bb1, bb6, bb7, "
                "bb8, tawn, tll",
                source="family_set",
            )
        families.append(family)
    unique = list(dict.fromkeys(families))
    return unique, [family.name for family in unique]


def fit_controls(
    family_set: str | Sequence[str],
    *,
    truncation_level: int | None,
    criterion: str,
    conditioning_set: Sequence[int] = (),
    parametric_method: str = "mle",
    seeds: Sequence[int] = (),
) -> Any:
    """``pyvinecopulib.FitControlsVinecop`` for structure and family selection.

    Parameters
    ----------
    family_set : str or sequence of str
        See :func:`resolve_family_set`.
    truncation_level : int or None
        Trees above this level are independence copulas; None: no truncation.
    criterion : {"aic", "bic"}
        Pair-copula family selection criterion.
    conditioning_set : sequence of int
        0-based variable indices that the structure selection must place at the tail of the vine
        order (drawn first, so that the other variables can be simulated exactly given them).
    parametric_method : {"mle", "itau"}
        Pair-copula parameters by maximum likelihood, or by inverting Kendall's tau (one-parameter
        families and the Student t only).
    seeds : sequence of int
        Seeds for randomised parts of the selection.
    """
    pv = _pyvinecopulib()
    criterion = str(criterion).lower()
    if criterion not in ("aic", "bic"):
        raise InputError(f"criterion must be 'aic' or 'bic', got {criterion!r}", source="criterion")
    families, _ = resolve_family_set(family_set)
    parametric_method = str(parametric_method).lower()
    if parametric_method not in ("mle", "itau"):
        raise InputError(
            f"parametric_method must be 'mle' or 'itau', got {parametric_method!r}",
            source="parametric_method",
        )
    if parametric_method == "itau":
        pv_itau = set(pv.families.itau) | {pv.families.indep}
        families = [f for f in families if f in pv_itau]
        if not families:
            raise InputError(
                "no family of the set can be fitted by inverting Kendall's tau", source="family_set"
            )
    options: dict[str, Any] = {
        "parametric_method": parametric_method,
        "family_set": families,
        "selection_criterion": criterion,
        "num_threads": 1,
        "seeds": [int(s) for s in seeds],
    }
    if truncation_level is not None:
        if int(truncation_level) < 1:
            raise InputError(
                f"the truncation level must be >= 1, got {truncation_level}", source="truncation"
            )
        options["trunc_lvl"] = int(truncation_level)
    controls = pv.FitControlsVinecop(**options)
    if conditioning_set:
        controls.conditioning_set = [int(i) + 1 for i in conditioning_set]
    return controls


def vine_to_dict(vine: Any) -> dict[str, Any]:
    """The vine as a JSON object (pyvinecopulib's ``Vinecop.to_json``, decoded)."""
    return json.loads(vine.to_json())


def vine_from_dict(data: dict[str, Any] | str) -> Any:
    """Inverse of :func:`vine_to_dict` (``Vinecop.from_json``)."""
    pv = _pyvinecopulib()
    text = data if isinstance(data, str) else json.dumps(data)
    try:
        return pv.Vinecop.from_json(text)
    except (RuntimeError, ValueError) as error:
        raise InputError(f"bad vine copula description: {error}", source="model") from None


def copy_vine(vine: Any) -> Any:
    """An independent copy of a vine (through its JSON)."""
    return vine_from_dict(vine.to_json())


def kendall_tau_matrix(values: np.ndarray) -> np.ndarray:
    """Kendall's tau (tie-corrected tau-b, ``pyvinecopulib.utils.wdm``) of every column pair.

    Parameters
    ----------
    values : (n, d) array_like
        Observations.

    Returns
    -------
    (d, d) ndarray
        Symmetric matrix with ones on the diagonal.
    """
    pv = _pyvinecopulib()
    x = np.asarray(values, dtype=np.float64)
    d = x.shape[1]
    tau = np.eye(d)
    for i in range(d):  # loop over column pairs, not particles
        for j in range(i + 1, d):
            tau[i, j] = tau[j, i] = pv.utils.wdm(
                np.ascontiguousarray(x[:, i]), np.ascontiguousarray(x[:, j]), "kendall"
            )
    return tau


def pair_copula_table(vine: Any, names: Sequence[str]) -> list[dict[str, Any]]:
    """One record per pair copula: tree, conditioned and conditioning names, family, rotation, tau."""
    structure = vine.structure
    order = list(vine.order)
    d = len(order)
    records: list[dict[str, Any]] = []
    for tree, edges in enumerate(vine.pair_copulas):
        for edge, bicop in enumerate(edges):
            first = names[order[edge] - 1]
            second = names[structure.struct_array(tree, edge, False) - 1]
            conditioning = [
                names[structure.struct_array(level, edge, False) - 1] for level in range(tree)
            ]
            records.append(
                {
                    "tree": tree + 1,
                    "edge": edge + 1,
                    "conditioned": [first, second],
                    "conditioning": conditioning,
                    "family": bicop.family.name,
                    "rotation": int(bicop.rotation),
                    "parameters": np.asarray(bicop.parameters).ravel().tolist(),
                    "tau": float(bicop.tau),
                }
            )
        if tree + 1 >= d - 1:
            break
    return records
