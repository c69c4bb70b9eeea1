"""EDS element maps -> mineral map: Poisson/multinomial classification against the phase library,
or clustering matched to the library.

Model (``method="reference"``). The counts of pixel ``i`` over the detectable elements,
``n_i = (n_{i,1}, ..., n_{i,E})``, are Poisson with means ``S sum_m w_{i,m} a_{m,e}``, where
``a_{m,e} = c_{m,e} k_e`` is the weight fraction of element ``e`` in material ``m`` times the
detector efficiency (:func:`reference_signatures`), ``w_{i,m}`` the share of material ``m`` in
the interaction volume and ``S`` the (unknown) counts scale. Conditioned on the pixel's total
``N_i``, the counts are multinomial with proportions ``p_e = sum_m w_m a_{m,e} / sum_{m,e'} w_m
a_{m,e'}``, free of ``S``, and the log-likelihood of a template ``t`` is linear in the counts,

    log L_t(n_i) = sum_e n_{i,e} log p_{t,e} + const,

so all pixels are scored against all templates with one matrix product. Templates are the pure
minerals, the pure matrix and mineral-matrix mixtures ``f a_m + (1 - f) a_matrix`` on a grid of
``f`` (pixels at a particle's edge, where the interaction volume straddles grain and epoxy), and
mineral-mineral mixtures with a smaller prior; a mixture is labelled by its larger share. The posterior of each class sums the template
likelihoods times their priors (the mixture fraction is a nuisance parameter). A pixel is
unclassified when its best template fits poorly (the deviance ``G^2 = 2 sum_e n_e log(n_e /
(N p_e))`` exceeds the chi-square quantile of ``misfit_p_value``: mixed mineral-mineral pixels,
pores, unknown phases), when its total counts are below ``min_counts``, or when the posterior
of its class is below ``min_confidence``. With a BSE image, a second pass adds a Gaussian BSE
likelihood per class, calibrated on the confidently classified pixels (mean-Z ordering of the
backscatter coefficient, Reuter 1972, for classes with too few pixels).

References
----------
Newbury, D. E., Ritchie, N. W. M. (2013). Is scanning electron microscopy/energy dispersive X-ray
spectrometry (SEM/EDS) quantitative? Scanning 35, 141-168.
Reuter, W. (1972). The ionization function and its application to the electron probe analysis
of thin films. Proc. 6th Int. Conf. X-ray Optics and Microanalysis, 121-130.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import ndimage, special, stats

from .._shared import MATRIX_LABEL, InputError, as_rng
from ..phases import MATERIALS, PhaseLibrary, atomic_number, load_phase_library
from ._mineral_map import MineralMap, area_fractions, class_tables
from ._references import eds_efficiency, reference_signatures

_METHODS = ("reference", "unsupervised")


# ------------------------------------------------------------------------------ input checking
def _as_stack(eds: Any) -> tuple[tuple[str, ...], np.ndarray, str]:
    """Element symbols and (E, rows, columns) float64 counts of an EDSMaps or a dict of maps."""
    source = "eds"
    if hasattr(eds, "maps") and isinstance(eds.maps, Mapping):
        source = getattr(eds, "source", "") or "eds"
        maps = dict(eds.maps)
    elif isinstance(eds, Mapping):
        maps = dict(eds)
    else:
        raise InputError(
            f"expected EDSMaps or a dict of element maps, got {type(eds).__name__}", source="eds"
        )
    if not maps:
        raise InputError("no element maps given", source=source)
    shape = None
    arrays = {}
    for symbol, image in maps.items():
        atomic_number(symbol)  # InputError on an unknown symbol
        image = np.asarray(image)
        if image.ndim != 2:
            raise InputError(
                f"map of {symbol} has shape {image.shape}; expected a 2D section", source=source
            )
        if image.dtype.kind not in "biuf":
            raise InputError(f"map of {symbol} has type {image.dtype}; expected numbers", source=source)
        if shape is None:
            shape, first = image.shape, symbol
        elif image.shape != shape:
            raise InputError(
                f"map of {symbol} has shape {image.shape}, but the map of {first} has shape "
                f"{shape}; all maps must match",
                source=source,
            )
        values = image.astype(np.float64)
        if not np.all(np.isfinite(values)):
            raise InputError(f"map of {symbol} holds NaN or infinite values", source=source)
        if values.min() < 0:
            raise InputError(f"map of {symbol} holds negative counts", source=source)
        arrays[symbol] = values
    elements = tuple(sorted(arrays, key=atomic_number))
    return elements, np.stack([arrays[e] for e in elements]), source


def _as_library(library: Any) -> PhaseLibrary:
    if library is None:
        raise InputError("a phase library is needed to name the minerals", source="library")
    return load_phase_library(library)


def _preprocess(counts: np.ndarray, bin_size: int, smooth_sigma_px: float) -> np.ndarray:
    """Moving-window binning (sum over ``bin_size``^2 pixels) then sum-preserving Gaussian smoothing."""
    if int(bin_size) != bin_size or bin_size < 1:
        raise InputError(f"bin_size must be a positive integer, got {bin_size!r}", source="bin_size")
    if not np.isfinite(smooth_sigma_px) or smooth_sigma_px < 0:
        raise InputError(
            f"smooth_sigma_px must be >= 0, got {smooth_sigma_px!r}", source="smooth_sigma_px"
        )
    out = counts
    if bin_size > 1:
        out = ndimage.uniform_filter(out, size=(1, bin_size, bin_size), mode="nearest") * bin_size**2
    if smooth_sigma_px > 0:
        out = ndimage.gaussian_filter(out, sigma=(0, smooth_sigma_px, smooth_sigma_px), mode="nearest")
    return out


def _proportions(rates: np.ndarray, background: float) -> np.ndarray:
    """Row-normalised count proportions with a small floor (background, peak overlaps)."""
    p = rates / rates.sum(axis=1, keepdims=True)
    return (p + background) / (1.0 + background * rates.shape[1])


def _check_distinct(names: list[str], p: np.ndarray, elements: tuple[str, ...]) -> None:
    root = np.sqrt(p)
    distance = np.sqrt(0.5 * ((root[:, None, :] - root[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(distance, np.inf)
    a, b = np.unravel_index(np.argmin(distance), distance.shape)
    if distance[a, b] < 1e-3:
        raise InputError(
            f"{names[a]} and {names[b]} give the same EDS signature over the maps given "
            f"({', '.join(elements)}); add the maps that tell them apart",
            source="eds",
        )


def backscatter_coefficient(mean_atomic_number: np.ndarray | float) -> np.ndarray:
    """BSE coefficient ``eta(Z) = -0.0254 + 0.016 Z - 1.86e-4 Z^2 + 8.3e-7 Z^3`` (Reuter 1972)."""
    z = np.asarray(mean_atomic_number, dtype=np.float64)
    return -0.0254 + 0.016 * z - 1.86e-4 * z**2 + 8.3e-7 * z**3


# ------------------------------------------------------------------------------------ public
def classify_eds(
    eds: Any,
    *,
    library: Any,
    matrix: str | None = "epoxy",
    bse: np.ndarray | None = None,
    bin_size: int = 1,
    smooth_sigma_px: float = 0.0,
    method: str = "reference",
    min_confidence: float = 0.5,
    min_counts: float | None = None,
    misfit_p_value: float = 1e-6,
    light_element_weight: float = 0.5,
    mixture_steps: int = 20,
    mineral_pair_prior: float = 0.1,
    background: float = 1e-3,
    efficiency: Mapping[str, float] | None = None,
    n_clusters: int | None = None,
    max_match_distance: float = 0.3,
    rng: np.random.Generator | int | None = None,
) -> MineralMap:
    """Classify the pixels of EDS element maps into the minerals of a phase library.

    Parameters
    ----------
    eds : EDSMaps or dict of str to (rows, columns) ndarray
        Counts (or intensities proportional to counts) per element symbol, all maps the same
        shape. Maps of elements EDS cannot detect (H, He, Li, Be) are ignored.
    library : PhaseLibrary, str or os.PathLike
        The minerals to recognise (a preset name or a phase-library file also work).
    matrix : str or None
        Embedding material of ``corrtomo.phases.MATERIALS`` (``"epoxy"``) recognised as class
        ``MATRIX_LABEL`` (255), or ``None`` (matrix pixels then fit nothing: unclassified).
    bse : (rows, columns) ndarray, optional
        Backscattered-electron image of the same pixels; adds a per-class BSE likelihood
        (reference method) or a feature (unsupervised method).
    bin_size : int
        Moving-window binning: counts are summed over ``bin_size x bin_size`` pixels (same
        output shape; more counts per pixel, less resolution).
    smooth_sigma_px : float
        Gaussian smoothing of the counts (pixels), sum-preserving. Confidence gets optimistic as
        neighbouring pixels share counts.
    method : {"reference", "unsupervised"}
        ``"reference"``: multinomial likelihood against the library signatures (needs counts
        whose per-element calibration follows :func:`eds_efficiency`; the overall counts scale
        may be anything). ``"unsupervised"``: Gaussian-mixture clustering of the normalised
        count vectors (a multinomial mixture fitted by EM), clusters matched to the library by
        the Hungarian algorithm: for maps whose calibration the library does not model well.
    min_confidence : float
        Pixels whose class posterior (or cluster membership probability) is below it are
        unclassified.
    min_counts : float, optional
        Pixels with fewer detected counts (sum over the maps used) are unclassified (vacuum,
        pores, charging). Default ``0.1 x`` the 99th percentile of the pixel totals.
    misfit_p_value : float
        Goodness-of-fit test level: a pixel whose best template has a deviance above the
        chi-square ``1 - misfit_p_value`` quantile is unclassified (reference method).
    light_element_weight : float
        Weight (0..1) of the soft lines (B-F: C, N, O) in the likelihood: they are common to
        most phases and to the epoxy and carbon coat, and least reliable.
    mixture_steps : int
        Grid steps of the share ``f`` of two-material mixture templates (0 or 1 = pure templates
        only).
    mineral_pair_prior : float
        Prior mass of the mixtures of two minerals relative to a pure class (mineral-matrix
        mixtures have mass 1); 0 leaves mineral-mineral mixtures out. Small, because a mixture of
        two minerals can mimic a third (calcite + magnesite has the composition of dolomite).
    background : float
        Floor added to every template proportion (continuum background, peak overlaps), so an
        element a mineral lacks costs ``log(background)`` per count rather than infinity.
    efficiency : mapping of str to float, optional
        Detector efficiency per element, overriding :func:`eds_efficiency`.
    n_clusters : int, optional
        Clusters of the unsupervised method; default ``2 R - 1`` for ``R`` references (phases
        plus matrix), so that mixed boundary pixels get clusters of their own and rare minerals
        keep one.
    max_match_distance : float
        Largest Hellinger distance between a cluster centre and its matched reference
        (unsupervised method); clusters farther away stay unclassified.
    rng : numpy.random.Generator, int or None
        Seeds the clustering.

    Returns
    -------
    MineralMap
        Phase ids (0 unclassified, 255 matrix), confidence, area fractions.

    Raises
    ------
    InputError
        On maps of different shapes, a 3D map, NaN or negative counts, a BSE image of another
        shape, no map of any element of the library, two minerals the given maps cannot tell
        apart, an unknown matrix or method.

    Notes
    -----
    See the module notes for the model. The deviance has ``E - 1`` degrees of freedom (``E - 2``
    with mixture templates), ``E`` the number of maps used.

    Examples
    --------
    >>> import numpy as np
    >>> from corrtomo.phases import preset_library
    >>> rng = np.random.default_rng(0)
    >>> calcite = {"C": 9.0, "O": 36.0, "Ca": 60.0}  # expected counts of pure calcite
    >>> maps = {e: rng.poisson(m, (4, 4)) for e, m in calcite.items()}
    >>> maps.update(Mg=rng.poisson(0.01, (4, 4)), Si=rng.poisson(0.01, (4, 4)))
    >>> result = classify_eds(maps, library=preset_library("talc-saxolite"))
    >>> sorted(set(result.phase_ids.ravel().tolist()))
    [1]
    """
    if method not in _METHODS:
        raise InputError(f"unknown method {method!r} (use {' or '.join(_METHODS)})", source="method")
    if not 0.0 <= float(min_confidence) <= 1.0:
        raise InputError(f"min_confidence must lie in 0..1, got {min_confidence!r}", source="min_confidence")
    library = _as_library(library)
    if matrix is not None and MATRIX_LABEL in set(library.ids.tolist()):
        raise InputError(
            f"phase id {MATRIX_LABEL} is reserved for the matrix; renumber the library or pass matrix=None",
            source="library",
        )
    all_elements, counts, source = _as_stack(eds)
    shape = counts.shape[1:]
    if bse is not None:
        bse = np.asarray(bse)
        if bse.ndim != 2:
            raise InputError(f"BSE image has shape {bse.shape}; expected a 2D section", source="bse")
        if bse.shape != shape:
            raise InputError(
                f"BSE image has shape {bse.shape}, the EDS maps {shape}; they must match", source="bse"
            )
        bse = bse.astype(np.float64)
        if not np.all(np.isfinite(bse)):
            raise InputError("BSE image holds NaN or infinite values", source="bse")

    # Elements: every detectable map; references over them.
    eff = dict(efficiency or {})
    keep = [
        i for i, e in enumerate(all_elements) if eff.get(e, eds_efficiency(atomic_number(e))) > 0
    ]
    elements = tuple(all_elements[i] for i in keep)
    counts = counts[keep]
    names, ref_ids, rates = reference_signatures(library, elements, matrix=matrix, efficiency=eff)
    empty = rates.sum(axis=1) <= 0
    if len(elements) == 0 or empty.all():
        needed = [e for e in library.elements if eds_efficiency(atomic_number(e)) > 0]
        raise InputError(
            f"no map of an element of the phase library (maps: {', '.join(all_elements)}; "
            f"library: {', '.join(needed)})",
            source=source,
        )
    if empty.any():
        lost = ", ".join(n for n, e in zip(names, empty, strict=True) if e)
        raise InputError(f"no map of any element of {lost}; it cannot be recognised", source=source)
    p_ref = _proportions(rates, background)
    _check_distinct(names, p_ref, elements)

    counts = _preprocess(counts, bin_size, smooth_sigma_px)
    flat = counts.reshape(len(elements), -1).T  # (pixels, E)
    totals = flat.sum(axis=1)
    if min_counts is None:
        min_counts = 0.1 * float(np.percentile(totals, 99)) if totals.size else 0.0
    enough = totals >= max(float(min_counts), 1e-12)
    z = np.array([atomic_number(e) for e in elements])
    weights = np.where(z <= 9, float(light_element_weight), 1.0)
    class_names, colors = class_tables(library, matrix)
    info: dict[str, Any] = {
        "elements_used": list(elements),
        "elements_ignored": [e for e in all_elements if e not in elements],
        "min_counts": float(min_counts),
        "low_count_pixels": int((~enough).sum()),
    }

    if method == "reference":
        labels, confidence = _classify_reference(
            flat, enough, rates, p_ref, ref_ids, names, weights, matrix is not None, bse, library,
            matrix, min_confidence, misfit_p_value, mixture_steps, background, mineral_pair_prior,
            info,
        )
    else:
        labels, confidence = _classify_unsupervised(
            flat, enough, p_ref, ref_ids, names, weights, bse, min_confidence, n_clusters,
            max_match_distance, as_rng(rng), info,
        )
    phase_ids = labels.reshape(shape).astype(np.uint8)
    return MineralMap(
        phase_ids=phase_ids,
        confidence=confidence.reshape(shape).astype(np.float32),
        area_fractions=area_fractions(phase_ids, library),
        class_names=class_names,
        colors=colors,
        method=method,
        elements=elements,
        info=info,
    )


# ------------------------------------------------------------------------------- reference
def _templates(p_rates, has_matrix, steps, background, rates, mineral_pair_prior):
    """Templates: the pure references and two-material mixtures on a grid of shares.

    Returns the template proportions (K, E), the class index of each template (the material with
    the larger share), the pair ``(a, b, f)`` it mixes and its log prior. The mixtures of one pair
    share the prior mass of one pure class (matrix pairs) or `mineral_pair_prior` (two minerals:
    a mixture of two minerals can mimic a third, e.g. calcite + magnesite = dolomite, so they get
    less prior mass).
    """
    n_ref = rates.shape[0]
    props = [p_rates]
    label_index = [np.arange(n_ref)]
    parts = [np.column_stack([np.arange(n_ref), np.arange(n_ref), np.ones(n_ref)])]
    log_prior = [np.zeros(n_ref)]
    if steps > 1:
        f = np.arange(1, steps) / steps  # share of the first material
        pairs = [(a, b) for a in range(n_ref) for b in range(a + 1, n_ref)]
        masses = [
            1.0 if (has_matrix and b == n_ref - 1) else float(mineral_pair_prior) for a, b in pairs
        ]
        pairs = [pair for pair, mass in zip(pairs, masses, strict=True) if mass > 0]
        masses = [mass for mass in masses if mass > 0]
        if pairs:
            a, b = np.array(pairs).T
            mix = f[None, :, None] * rates[a, None, :] + (1 - f)[None, :, None] * rates[b, None, :]
            props.append(_proportions(mix.reshape(-1, rates.shape[1]), background))
            a_all, b_all = np.repeat(a, f.size), np.repeat(b, f.size)
            f_all = np.tile(f, len(pairs))
            label_index.append(np.where(f_all >= 0.5, a_all, b_all))
            parts.append(np.column_stack([a_all, b_all, f_all]))
            log_prior.append(np.repeat(np.log(masses) - np.log(f.size), f.size))
    return (
        np.vstack(props),
        np.concatenate(label_index),
        np.vstack(parts),
        np.concatenate(log_prior),
    )


def _classify_reference(
    flat, enough, rates, p_ref, ref_ids, names, weights, has_matrix, bse, library, matrix,
    min_confidence, misfit_p_value, mixture_steps, background, mineral_pair_prior, info,
):
    n_ref = len(ref_ids)
    props, label_index, parts, log_prior = _templates(
        p_ref, has_matrix, int(mixture_steps), background, rates, mineral_pair_prior
    )
    log_p = np.log(props)  # (K, E)
    x = flat[enough]
    loglik = (x * weights[None, :]) @ log_p.T + log_prior[None, :]  # (n, K)
    posterior, best_template = _class_posterior(loglik, label_index, n_ref)

    # Goodness of fit of the best template (unweighted multinomial deviance).
    p_best = props[best_template]
    n_tot = x.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(x > 0, x * np.log(x / (n_tot * p_best)), 0.0)
    deviance = 2.0 * terms.sum(axis=1)
    dof = max(flat.shape[1] - 1 - (1 if mixture_steps > 1 else 0), 1)
    misfit = deviance > stats.chi2.isf(float(misfit_p_value), dof)

    if bse is not None:
        b = bse.ravel()[enough]
        confident = (posterior.max(axis=1) > 0.95) & ~misfit & (best_template < n_ref)
        model = _bse_model(b[confident], posterior.argmax(axis=1)[confident], names, library, matrix, n_ref)
        info["bse_model"] = model
        if model is not None:
            mean, var = model["mean"], model["var"]
            t_mean, t_var = _template_bse(mean, var, parts)
            gauss = -0.5 * ((b[:, None] - t_mean[None, :]) ** 2 / t_var[None, :] + np.log(t_var)[None, :])
            posterior, best_template = _class_posterior(loglik + gauss, label_index, n_ref)

    cls = posterior.argmax(axis=1)
    conf = posterior[np.arange(cls.size), cls]
    ok = ~misfit & (conf >= min_confidence)
    labels = np.zeros(flat.shape[0], dtype=np.int64)
    confidence = np.zeros(flat.shape[0], dtype=np.float64)
    labels[np.flatnonzero(enough)[ok]] = ref_ids[cls[ok]]
    confidence[np.flatnonzero(enough)[ok]] = conf[ok]
    info.update(
        misfit_pixels=int(misfit.sum()),
        low_confidence_pixels=int((~misfit & (conf < min_confidence)).sum()),
        deviance_threshold=float(stats.chi2.isf(float(misfit_p_value), dof)),
        n_templates=int(props.shape[0]),
    )
    return labels, confidence


def _class_posterior(loglik: np.ndarray, label_index: np.ndarray, n_classes: int):
    """Per-class posterior (logsumexp over each class's templates) and the best template."""
    per_class = np.full((loglik.shape[0], n_classes), -np.inf)
    for k in range(n_classes):  # a handful of classes, each vectorised over pixels and templates
        columns = np.flatnonzero(label_index == k)
        per_class[:, k] = special.logsumexp(loglik[:, columns], axis=1)
    posterior = np.exp(per_class - special.logsumexp(per_class, axis=1, keepdims=True))
    return posterior, loglik.argmax(axis=1)


def _bse_model(b, cls, names, library, matrix, n_ref, min_pixels: int = 20):
    """Class-conditional BSE mean and variance from confident pixels; uncalibrated classes from a
    linear fit of the means against the backscatter coefficient eta(Z) (Reuter 1972)."""
    z = list(library.mean_atomic_numbers)
    if matrix is not None:
        z.append(MATERIALS[matrix].mean_atomic_number)
    eta = backscatter_coefficient(np.asarray(z[:n_ref]))
    counts = np.bincount(cls, minlength=n_ref)
    sums = np.bincount(cls, weights=b, minlength=n_ref)
    squares = np.bincount(cls, weights=b * b, minlength=n_ref)
    calibrated = counts >= min_pixels
    if calibrated.sum() < 2:
        return None
    mean = np.where(calibrated, sums / np.maximum(counts, 1), np.nan)
    var = np.where(calibrated, squares / np.maximum(counts, 1) - mean**2, np.nan)
    slope, intercept = np.polyfit(eta[calibrated], mean[calibrated], 1)
    mean = np.where(calibrated, mean, intercept + slope * eta)
    # Poisson-like variance scaling for classes without their own estimate
    ratio = np.nanmedian(var[calibrated] / np.maximum(np.abs(mean[calibrated]), 1e-9))
    var = np.where(calibrated, var, ratio * np.abs(mean))
    var = np.maximum(var, 1e-6 + 1e-3 * np.nanmax(np.abs(mean)))
    return {"mean": mean, "var": var, "calibrated": [n for n, c in zip(names, calibrated, strict=True) if c]}


def _template_bse(mean, var, parts):
    """Expected BSE mean and variance per template; a mixture interpolates its two materials and
    widens the variance for the narrower BSE interaction volume (the BSE share differs from the
    EDS share at a boundary)."""
    a, b, f = parts[:, 0].astype(np.int64), parts[:, 1].astype(np.int64), parts[:, 2]
    t_mean = f * mean[a] + (1 - f) * mean[b]
    t_var = f * var[a] + (1 - f) * var[b] + f * (1 - f) * (mean[a] - mean[b]) ** 2
    return t_mean, t_var


# ----------------------------------------------------------------------------- unsupervised
def _classify_unsupervised(
    flat, enough, p_ref, ref_ids, names, weights, bse, min_confidence, n_clusters,
    max_match_distance, rng, info, n_iter: int = 100, max_fit_pixels: int = 10000,
):
    """Multinomial mixture clustering (EM) of the count vectors, clusters matched to references.

    EM for a mixture of multinomials (each cluster a vector of count proportions ``q_k``):
    responsibilities ``r_ik ~ pi_k prod_e q_ke^(w_e n_ie)``, then ``q_k ~ sum_i r_ik n_i``,
    ``pi_k ~ sum_i r_ik``. Initialised by k-means++ on the square-root proportions. Clusters are
    matched one-to-one to the references by the Hungarian algorithm (Kuhn 1955) on the weighted
    Kullback-Leibler divergence ``sum_e w_e q_ke log(q_ke / p_me)``; clusters left over take their
    nearest reference; a cluster whose Hellinger distance to its reference exceeds
    `max_match_distance` stays unclassified.
    """
    from scipy.optimize import linear_sum_assignment
    from sklearn.cluster import kmeans_plusplus

    x = flat[enough]
    if x.shape[0] == 0:
        raise InputError("no pixel has enough counts to classify", source="eds")
    n_ref = len(ref_ids)
    fractions = x / x.sum(axis=1, keepdims=True)
    k = int(n_clusters) if n_clusters is not None else 2 * n_ref - 1
    k = max(1, min(k, x.shape[0]))
    # EM on a random subsample of at most `max_fit_pixels` pixels, then one E-step on all
    fit = np.arange(x.shape[0])
    if fit.size > max_fit_pixels:
        fit = np.sort(rng.choice(fit.size, max_fit_pixels, replace=False))
    centres, _ = kmeans_plusplus(np.sqrt(fractions[fit]), k, random_state=int(rng.integers(2**31 - 1)))
    q = centres**2 + 1e-3
    q /= q.sum(axis=1, keepdims=True)
    pi = np.full(k, 1.0 / k)
    xw = x * weights[None, :]
    b = None if bse is None else bse.ravel()[enough]
    moments = None
    for _ in range(int(n_iter)):
        resp = _responsibilities(xw[fit], q, pi, None if b is None else b[fit], moments)
        if b is not None:
            moments = _bse_moments(b[fit], resp)
        mass = resp.sum(axis=0)
        previous = q
        q = resp.T @ x[fit] + 1e-6
        q /= q.sum(axis=1, keepdims=True)
        pi = np.maximum(mass / mass.sum(), 1e-12)
        if np.abs(q - previous).max() < 1e-5:
            break  # the cluster proportions no longer move
    resp = _responsibilities(xw, q, pi, b, moments)
    cluster = resp.argmax(axis=1)
    conf = resp[np.arange(cluster.size), cluster]
    # Match clusters to references.
    w = weights[None, None, :]
    kl = (w * q[:, None, :] * np.log(q[:, None, :] / p_ref[None, :, :])).sum(-1)
    rows, cols = linear_sum_assignment(kl)
    match = np.full(k, -1)
    match[rows] = cols
    leftover = match < 0
    match[leftover] = kl[leftover].argmin(axis=1)
    distance = np.sqrt(0.5 * ((np.sqrt(q) - np.sqrt(p_ref[match])) ** 2).sum(axis=1))
    match[distance > max_match_distance] = -1
    assigned = match[cluster]
    ok = (assigned >= 0) & (conf >= min_confidence)
    labels = np.zeros(flat.shape[0], dtype=np.int64)
    confidence = np.zeros(flat.shape[0], dtype=np.float64)
    index = np.flatnonzero(enough)[ok]
    labels[index] = ref_ids[assigned[ok]]
    confidence[index] = conf[ok]
    info["clusters"] = [
        {
            "cluster": int(c),
            "pixels": int((cluster == c).sum()),
            "matched": names[match[c]] if match[c] >= 0 else None,
            "hellinger_distance": float(distance[c]),
        }
        for c in range(k)
    ]
    return labels, confidence


def _responsibilities(xw, q, pi, b, moments):
    """E-step: cluster membership probabilities (multinomial counts, Gaussian BSE if given)."""
    log_r = xw @ np.log(q).T + np.log(pi)[None, :]
    if b is not None and moments is not None:
        mu, var = moments
        log_r += -0.5 * ((b[:, None] - mu) ** 2 / var + np.log(var))
    return np.exp(log_r - special.logsumexp(log_r, axis=1, keepdims=True))


def _bse_moments(b, resp):
    """Per-cluster BSE mean and variance, weighted by the responsibilities."""
    mass = resp.sum(axis=0) + 1e-12
    mu = (resp * b[:, None]).sum(axis=0) / mass
    var = (resp * (b[:, None] - mu) ** 2).sum(axis=0) / mass + 1e-3 * (b.var() + 1e-9)
    return mu[None, :], var[None, :]
