"""Parametric marginal distributions of particle descriptors, chosen by AIC.

Positive sizes and shapes get a log-normal, gamma or Weibull law (and a beta law or a two-component beta
mixture when every value lies in (0, 1)); volume fractions ``vf_<phase>`` get a zero-one-inflated beta law, because liberated particles put
point masses at 0 (phase absent) and 1 (particle made only of the phase).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import optimize, special
from scipy import stats as scipy_stats

from .._shared import InputError

#: Families for positive continuous descriptors (sizes, areas, shape factors).
POSITIVE_FAMILIES = ("lognormal", "gamma", "weibull")
#: Extra families for positive descriptors that never reach 1 (sphericity, elongation, flatness).
UNIT_FAMILIES = ("beta", "beta_mixture")
#: The family of volume fractions.
INFLATED_BETA = "zero_one_inflated_beta"
#: Every family name a :class:`Marginal` accepts.
FAMILIES = (*POSITIVE_FAMILIES, *UNIT_FAMILIES, INFLATED_BETA)
#: Prefix of the volume-fraction columns of the particle table.
FRACTION_PREFIX = "vf_"
#: Fewer distinct interior values than this: the interior of an inflated beta is uniform (no fit).
MIN_INTERIOR_VALUES = 5
#: Fewer distinct values than this: no two-component beta mixture is tried (5 parameters).
MIN_MIXTURE_VALUES = 30

_EPS = 1e-12


class _BetaMixture:
    """Two-component beta mixture ``w Beta(a1, b1) + (1 - w) Beta(a2, b2)`` on (0, 1)."""

    def __init__(self, w: float, a1: float, b1: float, a2: float, b2: float):
        self.w, self.a1, self.b1, self.a2, self.b2 = w, a1, b1, a2, b2

    def cdf(self, x: np.ndarray) -> np.ndarray:
        return self.w * special.betainc(self.a1, self.b1, x) + (1 - self.w) * special.betainc(
            self.a2, self.b2, x
        )

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            first = math.log(self.w) + scipy_stats.beta.logpdf(x, self.a1, self.b1)
            second = math.log1p(-self.w) + scipy_stats.beta.logpdf(x, self.a2, self.b2)
        return np.logaddexp(first, second)

    def ppf(self, u: np.ndarray) -> np.ndarray:
        """Vectorised bisection (the CDF is increasing; 52 halvings reach float resolution)."""
        u = np.asarray(u, dtype=np.float64)
        low, high = np.zeros_like(u), np.ones_like(u)
        for _ in range(52):
            middle = 0.5 * (low + high)
            below = self.cdf(middle) < u
            low = np.where(below, middle, low)
            high = np.where(below, high, middle)
        return 0.5 * (low + high)


def _moments_beta(x: np.ndarray) -> tuple[float, float]:
    """Method-of-moments beta parameters (a start for maximum likelihood)."""
    mean, variance = float(x.mean()), float(x.var())
    variance = min(variance, 0.99 * mean * (1 - mean)) if variance > 0 else 0.01 * mean * (1 - mean)
    common = mean * (1 - mean) / variance - 1
    return max(mean * common, 1e-2), max((1 - mean) * common, 1e-2)


def _fit_beta_mixture(x: np.ndarray) -> tuple[float, ...]:
    """Maximum-likelihood two-component beta mixture; start from 2-means on logit(x)."""
    log_x, log_1mx = np.log(x), np.log1p(-x)
    z = special.logit(x)
    centres = np.percentile(z, [25.0, 75.0])
    second = np.zeros(x.size, dtype=bool)
    for _ in range(20):
        second = np.abs(z - centres[0]) > np.abs(z - centres[1])
        if second.all() or not second.any():
            break
        centres = np.array([z[~second].mean(), z[second].mean()])
    if second.sum() < 2 or (~second).sum() < 2:
        second = z > np.median(z)
    a1, b1 = _moments_beta(x[~second])
    a2, b2 = _moments_beta(x[second])
    weight = float(np.clip((~second).mean(), 0.05, 0.95))
    start = np.array([special.logit(weight), *np.log([a1, b1, a2, b2])])

    def negative_loglik(theta: np.ndarray) -> float:
        w = special.expit(theta[0])
        a1, b1, a2, b2 = np.exp(np.clip(theta[1:], -10, 12))
        first = np.log(w) + (a1 - 1) * log_x + (b1 - 1) * log_1mx - special.betaln(a1, b1)
        other = np.log1p(-w) + (a2 - 1) * log_x + (b2 - 1) * log_1mx - special.betaln(a2, b2)
        value = -float(np.sum(np.logaddexp(first, other)))
        return value if math.isfinite(value) else 1e300

    result = optimize.minimize(negative_loglik, start, method="L-BFGS-B")
    theta = result.x
    return (
        float(special.expit(theta[0])),
        *(float(v) for v in np.exp(np.clip(theta[1:], -10, 12))),
    )


def _scipy_law(family: str, parameters: Sequence[float]) -> Any:
    """The law of a continuous family (loc fixed at 0): an object with cdf, ppf and logpdf."""
    p = [float(v) for v in parameters]
    if family == "beta_mixture" or (family == INFLATED_BETA and len(p) == 5):
        return _BetaMixture(*p)
    if family == "lognormal":  # (sigma, median)
        return scipy_stats.lognorm(p[0], scale=p[1])
    if family == "gamma":  # (shape, scale)
        return scipy_stats.gamma(p[0], scale=p[1])
    if family == "weibull":  # (shape, scale)
        return scipy_stats.weibull_min(p[0], scale=p[1])
    if family in ("beta", INFLATED_BETA):  # (a, b)
        return scipy_stats.beta(p[0], p[1])
    raise InputError(f"unknown marginal family {family!r}; known: {', '.join(FAMILIES)}")


def _mle(family: str, values: np.ndarray) -> tuple[float, ...]:
    """Maximum-likelihood parameters of a continuous family (location fixed at 0, beta scale 1)."""
    if family == "lognormal":
        logs = np.log(values)
        return float(logs.std()), float(np.exp(logs.mean()))  # closed form
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if family == "gamma":
            shape, _, scale = scipy_stats.gamma.fit(values, floc=0)
            return float(shape), float(scale)
        if family == "weibull":
            shape, _, scale = scipy_stats.weibull_min.fit(values, floc=0)
            return float(shape), float(scale)
        if family == "beta":
            a, b, _, _ = scipy_stats.beta.fit(values, floc=0, fscale=1)
            return float(a), float(b)
        if family == "beta_mixture":
            return _fit_beta_mixture(values)
    raise InputError(f"unknown marginal family {family!r}; known: {', '.join(FAMILIES)}")


@dataclass(frozen=True)
class Marginal:
    """A fitted parametric marginal law of one descriptor.

    Parameters
    ----------
    name : str
        Descriptor (column) name.
    family : str
        One of ``lognormal`` (parameters sigma, median), ``gamma`` (shape, scale), ``weibull``
        (shape, scale), ``beta`` (a, b), ``beta_mixture`` (w, a1, b1, a2, b2) or
        ``zero_one_inflated_beta`` (interior law: a, b of a beta or w, a1, b1, a2, b2 of a mixture).
    parameters : tuple of float
        The family's parameters (location 0).
    p_zero, p_one : float
        Point masses at 0 and 1 (zero-one-inflated beta only; 0 otherwise).
    loglik : float
        Maximised log-likelihood on the fitted data.
    n_parameters : int
        Number of free parameters ``k`` (point masses that were estimated count as one each).
    n : int
        Number of fitted values.

    Notes
    -----
    The zero-one-inflated beta law (Ospina & Ferrari 2010) of a volume fraction X is the mixture

    .. math:: P(X = 0) = p_0, \\quad P(X = 1) = p_1, \\quad
              X \\mid 0 < X < 1 \\sim \\mathrm{Beta}(a, b),

    with CDF ``F(x) = p0 + (1 - p0 - p1) B(x; a, b)`` for ``0 <= x < 1`` and ``F(1) = 1``. The interior
    law is a beta or, when AIC prefers it, a two-component beta mixture
    ``w Beta(a1, b1) + (1 - w) Beta(a2, b2)`` (a spike of small inclusions near 0 next to a broad mode is
    common in particle tables).
    Its maximum-likelihood estimate separates: ``p0 = n0 / n``, ``p1 = n1 / n`` and the beta MLE of the
    interior values, so ``log L = n0 log p0 + n1 log p1 + m log(1 - p0 - p1) + sum log b(x_i; a, b)``.
    """

    name: str
    family: str
    parameters: tuple[float, ...]
    p_zero: float = 0.0
    p_one: float = 0.0
    loglik: float = math.nan
    n_parameters: int = 2
    n: int = 0
    candidates: dict[str, float] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise InputError(
                f"unknown marginal family {self.family!r}; known: {', '.join(FAMILIES)}",
                source=self.name,
            )
        object.__setattr__(self, "parameters", tuple(float(p) for p in self.parameters))

    @property
    def aic(self) -> float:
        """Akaike information criterion ``AIC = 2 k - 2 log L``."""
        return 2.0 * self.n_parameters - 2.0 * self.loglik

    @property
    def inflated(self) -> bool:
        """True for the zero-one-inflated beta law (a law with atoms)."""
        return self.family == INFLATED_BETA

    @property
    def _law(self) -> Any:
        return _scipy_law(self.family, self.parameters)

    def cdf(self, values: np.ndarray) -> np.ndarray:
        """Right-continuous CDF ``F(x) = P(X <= x)``."""
        x = np.asarray(values, dtype=np.float64)
        if not self.inflated:
            return self._law.cdf(x)
        interior = 1.0 - self.p_zero - self.p_one
        inside = self.p_zero + interior * self._law.cdf(np.clip(x, 0.0, 1.0))
        return np.where(x < 0, 0.0, np.where(x >= 1, 1.0, inside))

    def cdf_left(self, values: np.ndarray) -> np.ndarray:
        """Left limit ``F(x-) = P(X < x)``; equal to ``F`` except at the atoms 0 and 1."""
        x = np.asarray(values, dtype=np.float64)
        if not self.inflated:
            return self._law.cdf(x)
        interior = 1.0 - self.p_zero - self.p_one
        inside = self.p_zero + interior * self._law.cdf(np.clip(x, 0.0, 1.0))
        return np.where(x <= 0, 0.0, np.where(x >= 1, 1.0 - self.p_one, inside))

    def ppf(self, probabilities: np.ndarray) -> np.ndarray:
        """Generalised inverse ``F^-(u) = inf{x : F(x) >= u}``; maps uniforms to this law."""
        u = np.clip(np.asarray(probabilities, dtype=np.float64), _EPS, 1.0 - _EPS)
        if not self.inflated:
            return self._law.ppf(u)
        interior = 1.0 - self.p_zero - self.p_one
        scaled = np.clip((u - self.p_zero) / max(interior, _EPS), 0.0, 1.0)
        inside = self._law.ppf(scaled) if interior > 0 else np.zeros_like(u)
        return np.where(u <= self.p_zero, 0.0, np.where(u > 1.0 - self.p_one, 1.0, inside))

    def pit(self, values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Randomised probability integral transform ``U = F(x-) + V (F(x) - F(x-))``, V ~ U(0, 1).

        For a continuous law this is ``F(x)`` (no randomness used); at an atom U is uniform on the
        atom's interval ``[F(x-), F(x)]``, so U is exactly U(0, 1) when X follows this law
        (Brockwell 2007; Rüschendorf 2009).
        """
        x = np.asarray(values, dtype=np.float64)
        upper = self.cdf(x)
        if not self.inflated:
            return np.clip(upper, _EPS, 1.0 - _EPS)
        lower = self.cdf_left(x)
        jitter = rng.random(x.shape)
        return np.clip(lower + jitter * (upper - lower), _EPS, 1.0 - _EPS)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (family, parameters, point masses, fit statistics)."""
        return {
            "name": self.name,
            "family": self.family,
            "parameters": list(self.parameters),
            "p_zero": self.p_zero,
            "p_one": self.p_one,
            "loglik": self.loglik,
            "n_parameters": self.n_parameters,
            "n": self.n,
            "aic": self.aic,
            "candidates_aic": dict(self.candidates),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Marginal:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(
                name=str(data["name"]),
                family=str(data["family"]),
                parameters=tuple(data["parameters"]),
                p_zero=float(data.get("p_zero", 0.0)),
                p_one=float(data.get("p_one", 0.0)),
                loglik=float(data.get("loglik", math.nan)),
                n_parameters=int(data.get("n_parameters", 2)),
                n=int(data.get("n", 0)),
                candidates={str(k): float(v) for k, v in data.get("candidates_aic", {}).items()},
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"bad marginal description: {error}", source="model") from None


def _fit_unit_interval(
    x: np.ndarray, families: Sequence[str], penalty: float
) -> tuple[str, tuple[float, ...], float, int, dict[str, float]]:
    """Fit candidate families to values; return the best (family, parameters, loglik, k, scores)."""
    best: tuple[str, tuple[float, ...], float, int] | None = None
    scores: dict[str, float] = {}
    distinct = np.unique(x).size
    for family in families:
        if family == "beta_mixture" and distinct < MIN_MIXTURE_VALUES:
            continue
        parameters = _mle(family, x)
        if not all(math.isfinite(p) and p > 0 for p in parameters):
            continue
        with np.errstate(all="ignore"):
            loglik = float(np.sum(_scipy_law(family, parameters).logpdf(x)))
        if not math.isfinite(loglik):
            continue
        k = len(parameters)
        scores[family] = penalty * k - 2.0 * loglik
        if best is None or scores[family] < scores[best[0]]:
            best = (family, parameters, loglik, k)
    if best is None:
        raise InputError("no marginal family could be fitted")
    return (*best, scores)


def _fit_inflated_beta(name: str, x: np.ndarray, criterion: str) -> Marginal:
    n = x.size
    n_zero = int(np.count_nonzero(x <= 0.0))
    n_one = int(np.count_nonzero(x >= 1.0))
    interior = x[(x > 0.0) & (x < 1.0)]
    p_zero, p_one = n_zero / n, n_one / n
    loglik = 0.0
    for count, p in ((n_zero, p_zero), (n_one, p_one), (interior.size, 1 - p_zero - p_one)):
        if count:
            loglik += count * math.log(p)
    n_parameters = int(n_zero > 0) + int(n_one > 0)
    penalty = 2.0 if criterion == "aic" else math.log(n)
    scores: dict[str, float] = {}
    if np.unique(interior).size >= MIN_INTERIOR_VALUES:
        _, parameters, interior_loglik, k, interior_scores = _fit_unit_interval(
            interior, UNIT_FAMILIES, penalty
        )
        loglik += interior_loglik
        n_parameters += k
        atoms = penalty * (int(n_zero > 0) + int(n_one > 0))
        base = -2.0 * (loglik - interior_loglik)
        scores = {f"interior_{f}": v + atoms + base for f, v in interior_scores.items()}
    else:  # too few interior values to fit: uniform interior, Beta(1, 1), log-density 0
        parameters = (1.0, 1.0)
    return Marginal(
        name=name,
        family=INFLATED_BETA,
        parameters=parameters,
        p_zero=p_zero,
        p_one=p_one,
        loglik=float(loglik),
        n_parameters=n_parameters,
        n=n,
        candidates=scores,
    )


def fit_marginal(
    values: np.ndarray,
    *,
    name: str,
    families: Sequence[str] | None = None,
    criterion: str = "aic",
) -> Marginal:
    """Fit the parametric marginal law of one descriptor, choosing the family by AIC (or BIC).

    Parameters
    ----------
    values : (n,) array_like
        Finite observations of the descriptor.
    name : str
        Descriptor name; ``vf_*`` names are volume fractions in [0, 1] and get a zero-one-inflated
        beta law, every other descriptor must be positive.
    families : sequence of str, optional
        Candidate families for a positive descriptor (default ``lognormal, gamma, weibull`` plus
        ``beta`` when every value lies below 1).
    criterion : {"aic", "bic"}
        ``AIC = 2 k - 2 log L`` or ``BIC = k log n - 2 log L`` with k free parameters.

    Returns
    -------
    Marginal
        The family with the smallest criterion, fitted by maximum likelihood; ``candidates`` holds
        every candidate's criterion value.

    Raises
    ------
    InputError
        Non-finite values, a volume fraction outside [0, 1], a non-positive size or shape value, or
        an unknown family.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(x)):
        raise InputError("the column holds NaN or infinite values", source=name)
    if name.startswith(FRACTION_PREFIX):
        if np.any((x < 0) | (x > 1)):
            raise InputError("volume fractions must lie in [0, 1]", source=name)
        return _fit_inflated_beta(name, x, criterion)
    if np.any(x <= 0):
        raise InputError(
            "a size or shape descriptor must be positive (log-normal, gamma and Weibull laws); "
            "volume fractions must be named vf_<phase>",
            source=name,
        )
    if families is None:
        families = POSITIVE_FAMILIES + (UNIT_FAMILIES if np.all(x < 1) else ())
    unknown = [f for f in families if f not in (*POSITIVE_FAMILIES, *UNIT_FAMILIES)]
    if unknown:
        raise InputError(f"unknown marginal family {unknown[0]!r}", source=name)
    if np.any(x >= 1):
        families = [f for f in families if f not in UNIT_FAMILIES]
    penalty = 2.0 if criterion == "aic" else math.log(x.size)
    try:
        family, parameters, loglik, k, scores = _fit_unit_interval(x, families, penalty)
    except InputError:
        raise InputError("no marginal family could be fitted", source=name) from None
    return Marginal(
        name=name,
        family=family,
        parameters=parameters,
        loglik=loglik,
        n_parameters=k,
        n=x.size,
        candidates=scores,
    )
