"""Multivariate particle models: parametric marginals + an R-vine copula (Furat et al. 2018, 2023).

A particle population is described by d descriptors (size, shape, composition). By Sklar's theorem its
joint CDF is ``F(x_1, ..., x_d) = C(F_1(x_1), ..., F_d(x_d))`` with marginal CDFs ``F_j`` and a copula
``C``; here the ``F_j`` are parametric laws chosen by AIC (:mod:`._marginals`) and ``C`` is an R-vine, a
cascade of bivariate (pair) copulas on conditional distributions (Aas et al. 2009), whose tree structure
and pair families are selected with Dissmann et al.'s (2013) algorithm in pyvinecopulib.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from .._shared import InputError, as_rng, write_json_atomic
from ._marginals import FRACTION_PREFIX, Marginal, fit_marginal
from ._vine import (
    copy_vine,
    fit_controls,
    kendall_tau_matrix,
    pair_copula_table,
    resolve_family_set,
    vine_from_dict,
    vine_to_dict,
)

#: Format tag and version of the saved JSON model.
MODEL_FORMAT = "corrtomo.particle_model"
MODEL_VERSION = 1
#: Size and shape descriptors used by default, when present in the table.
DEFAULT_SHAPE_DESCRIPTORS = ("esd_um", "sphericity", "elongation", "flatness")
#: A model needs at least this many particles per descriptor.
PARTICLES_PER_DESCRIPTOR = 10

_BORDER_COLUMN = "touches_border"
_SIZE_COLUMN = "esd_um"
_VOLUME_COLUMN = "volume_um3"


def _seeds(rng: np.random.Generator, count: int = 4) -> list[int]:
    return [int(s) for s in rng.integers(0, 2**31 - 1, size=count)]


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------


def _default_descriptors(particles_df: pd.DataFrame) -> tuple[str, ...]:
    shape = [c for c in DEFAULT_SHAPE_DESCRIPTORS if c in particles_df.columns]
    fractions = [
        c
        for c in particles_df.columns
        if str(c).startswith(FRACTION_PREFIX) and particles_df[c].nunique(dropna=True) > 1
    ]
    return tuple(shape + fractions)


def _check_table(
    particles_df: pd.DataFrame,
    descriptors: Sequence[str] | str | None,
    *,
    exclude_border: bool,
    source: str = "particles",
) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """Select the counted particles and validate the descriptor columns; return (rows, names)."""
    if not isinstance(particles_df, pd.DataFrame):
        raise InputError("expected a pandas DataFrame of particles", source=source)
    if descriptors is None:
        names = _default_descriptors(particles_df)
    elif isinstance(descriptors, str):
        names = tuple(p.strip() for p in descriptors.split(",") if p.strip())
    else:
        names = tuple(str(p) for p in descriptors)
    if not names:
        raise InputError("no descriptors to model", source="descriptors")
    if len(set(names)) != len(names):
        raise InputError(f"repeated descriptor names in {list(names)}", source="descriptors")
    if len(names) < 2:
        raise InputError("a copula model needs at least two descriptors", source="descriptors")
    missing = [n for n in names if n not in particles_df.columns]
    if missing:
        raise InputError(
            f"unknown descriptor(s) {', '.join(missing)}; the table has "
            f"{', '.join(map(str, particles_df.columns))}",
            source="descriptors",
        )
    rows = particles_df
    if exclude_border and _BORDER_COLUMN in particles_df.columns:
        rows = particles_df.loc[~particles_df[_BORDER_COLUMN].to_numpy(dtype=bool)]
    for name in names:
        column = rows[name]
        if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
            raise InputError(f"descriptor {name!r} is not numeric", source=source)
        values = column.to_numpy(dtype=np.float64)
        bad = int(np.count_nonzero(~np.isfinite(values)))
        if bad:
            raise InputError(
                f"descriptor {name!r} holds {bad} NaN or infinite value(s); drop or fill them first",
                source=source,
            )
        if values.size and np.all(values == values[0]):
            raise InputError(
                f"descriptor {name!r} is constant ({values[0]:g}); a constant has no distribution "
                "to fit, leave it out",
                source=source,
            )
    needed = PARTICLES_PER_DESCRIPTOR * len(names)
    if len(rows) < needed:
        where = " not touching the border" if exclude_border else ""
        raise InputError(
            f"{len(rows)} particles{where} are too few for {len(names)} descriptors "
            f"(at least {needed} = {PARTICLES_PER_DESCRIPTOR} x {len(names)} are needed)",
            source=source,
        )
    return rows, names


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ParticleModel:
    """A fitted joint model of particle descriptors: marginal laws + R-vine copula.

    Attributes
    ----------
    descriptors : tuple of str
        Modelled columns, in the vine's variable order 1..d.
    marginals : tuple of Marginal
        One fitted marginal law per descriptor.
    vine : pyvinecopulib.Vinecop
        The copula of the probability integral transforms (do not modify it).
    n_particles : int
        Number of particles the model was fitted to.
    conditioning : tuple of str
        Descriptors placed at the tail of the vine order during selection; the others can be
        simulated exactly given them (:meth:`predict`).
    settings : dict
        Fit settings: family set, truncation level, criterion, border rule, seed.
    diagnostics : dict
        Log-likelihood, AIC and BIC of marginals and vine, number of parameters, the pair copulas.

    Notes
    -----
    Density of the model (Sklar 1959; Aas et al. 2009):

    .. math:: f(x) = c\\big(F_1(x_1), \\dots, F_d(x_d)\\big) \\prod_j f_j(x_j),

    so ``log L = log L_copula + sum_j log L_j`` and ``AIC = 2 k - 2 log L`` with all parameters k.
    """

    descriptors: tuple[str, ...]
    marginals: tuple[Marginal, ...]
    vine: Any
    n_particles: int
    conditioning: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)

    @property
    def dimension(self) -> int:
        """Number of descriptors d."""
        return len(self.descriptors)

    def marginal(self, name: str) -> Marginal:
        """The marginal law of descriptor `name`."""
        try:
            return self.marginals[self.descriptors.index(name)]
        except ValueError:
            raise InputError(
                f"the model has no descriptor {name!r}; it has {', '.join(self.descriptors)}",
                source="model",
            ) from None

    # ---------------------------------------------------------------------------- transforms

    def to_uniform(
        self, table: pd.DataFrame, rng: np.random.Generator | int | None = None
    ) -> np.ndarray:
        """Randomised probability integral transforms ``u_j = F_j(x_j)`` of the descriptor columns."""
        generator = as_rng(rng)
        return np.column_stack(
            [
                m.pit(table[n].to_numpy(dtype=np.float64), generator)
                for n, m in zip(self.descriptors, self.marginals, strict=True)
            ]
        )

    def from_uniform(self, u: np.ndarray) -> pd.DataFrame:
        """Descriptor values ``x_j = F_j^-(u_j)`` (generalised inverses) of copula samples."""
        u = np.asarray(u, dtype=np.float64)
        return pd.DataFrame(
            {
                n: m.ppf(u[:, j])
                for j, (n, m) in enumerate(zip(self.descriptors, self.marginals, strict=True))
            }
        )

    # ---------------------------------------------------------------------------- simulation

    def simulate(self, n: int, rng: np.random.Generator | int | None = None) -> pd.DataFrame:
        """Simulate a particle population of `n` particles.

        Parameters
        ----------
        n : int
            Number of particles.
        rng : Generator, int or None
            Random generator or seed; the same seed gives the same population.

        Returns
        -------
        DataFrame
            ``label`` (1..n), one column per descriptor, and, so that the table feeds
            :mod:`corrtomo.liberation` directly, ``volume_um3 = pi/6 esd_um^3`` (when ``esd_um`` is
            modelled and ``volume_um3`` is not) and ``touches_border`` (False).

        Notes
        -----
        ``W ~ U(0, 1)^d`` (numpy generator), ``U = T^-1(W)`` with the vine's inverse Rosenblatt transform
        ``T^-1`` (Rosenblatt 1952; Aas et al. 2009, Algorithm 2), ``X_j = F_j^-(U_j)``.
        """
        n = int(n)
        if n < 1:
            raise InputError(f"the number of particles must be >= 1, got {n}", source="n")
        generator = as_rng(rng)
        w = np.clip(generator.random((n, self.dimension)), 1e-12, 1 - 1e-12)
        u = np.asarray(self.vine.inverse_rosenblatt(np.asfortranarray(w)))
        table = self.from_uniform(u)
        table.insert(0, "label", np.arange(1, n + 1, dtype=np.int64))
        if _SIZE_COLUMN in table.columns and _VOLUME_COLUMN not in table.columns:
            table[_VOLUME_COLUMN] = np.pi / 6.0 * table[_SIZE_COLUMN].to_numpy() ** 3
        table[_BORDER_COLUMN] = False
        return table

    # ---------------------------------------------------------------------------- prediction

    def predict(
        self,
        conditions: pd.DataFrame,
        *,
        target: str | None = None,
        quantiles: Sequence[float] = (0.05, 0.5, 0.95),
        n_samples: int = 2000,
        rng: np.random.Generator | int | None = None,
    ) -> pd.DataFrame:
        """Conditional distribution of one descriptor (e.g. a volume fraction) given others.

        Parameters
        ----------
        conditions : DataFrame
            One row per query; the columns that are model descriptors (other than `target`) are the
            conditioning values (e.g. ``esd_um``, ``sphericity``, ``flatness``); other columns are
            copied to the output.
        target : str, optional
            Predicted descriptor; default the first modelled ``vf_*`` column not among the conditions.
        quantiles : sequence of float
            Probabilities of the reported conditional quantiles (the prediction interval).
        n_samples : int
            Conditional draws per query row.
        rng : Generator, int or None
            Random generator or seed.

        Returns
        -------
        DataFrame
            The query columns, then ``<target>_mean``, ``<target>_q<p>`` per probability, for a volume
            fraction ``<target>_p_zero`` and ``<target>_p_one`` (probabilities that the particle holds
            none of the phase or is free of others), ``effective_samples`` and ``method``.

        Notes
        -----
        Let ``c`` be the conditioning descriptors. With ``u_c = F_c(x_c)`` the conditional law of the
        other variables has copula density ``c(u) / c_c(u_c)``.

        * ``method = "conditional"``: when ``c`` is a tail of a sampling order of the vine (always so
          for the default conditioning set chosen at fit time), the remaining variables are drawn
          exactly by the conditional inverse Rosenblatt transform (``Vinecop.sample_conditional``).
        * ``method = "importance"``: otherwise, the free variables are drawn uniformly and weighted by
          the full vine density ``c(u)``, which is proportional to the conditional density; the
          quantiles are weighted quantiles and ``effective_samples = (sum w)^2 / sum w^2``.

        A conditioning value on an atom of its law (a volume fraction of exactly 0 or 1) is drawn
        uniformly within the atom's interval ``[F(x-), F(x)]`` of the randomised PIT, which
        integrates over the atom exactly.
        """
        if not isinstance(conditions, pd.DataFrame):
            raise InputError("conditions must be a DataFrame", source="conditions")
        if len(conditions) == 0:
            raise InputError("no condition rows", source="conditions")
        given = [n for n in self.descriptors if n in conditions.columns and n != target]
        if not given:
            raise InputError(
                f"the conditions hold none of the model's descriptors ({', '.join(self.descriptors)})",
                source="conditions",
            )
        if target is None:
            free = [n for n in self.descriptors if n not in given]
            fractions = [n for n in free if n.startswith(FRACTION_PREFIX)]
            target = (fractions or free or [None])[0]
            if target is None:
                raise InputError(
                    "every descriptor is a condition; nothing to predict", source="target"
                )
        if target not in self.descriptors:
            raise InputError(
                f"unknown target {target!r}; the model has {', '.join(self.descriptors)}",
                source="target",
            )
        probabilities = np.asarray(quantiles, dtype=np.float64).ravel()
        if probabilities.size == 0 or np.any((probabilities <= 0) | (probabilities >= 1)):
            raise InputError("quantiles must lie strictly between 0 and 1", source="quantiles")
        n_samples = int(n_samples)
        if n_samples < 10:
            raise InputError(f"n_samples must be >= 10, got {n_samples}", source="n_samples")
        values = conditions[given].to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise InputError("the conditions hold NaN or infinite values", source="conditions")

        generator = as_rng(rng)
        m = len(conditions)
        index = [self.descriptors.index(n) for n in given]
        target_index = self.descriptors.index(target)
        repeated = np.repeat(values, n_samples, axis=0)  # (m * n_samples, k)
        u_given = np.column_stack(
            [self.marginals[j].pit(repeated[:, i], generator) for i, j in enumerate(index)]
        )
        u, weights, method = self._conditional_uniforms(u_given, index, generator)
        x = self.marginals[target_index].ppf(u[:, target_index]).reshape(m, n_samples)
        weights = weights.reshape(m, n_samples)
        total = weights.sum(axis=1, keepdims=True)
        if np.any(total <= 0):
            raise InputError(
                "the conditions lie where the model has no density; check their units",
                source="conditions",
            )
        weights = weights / total
        out = conditions.reset_index(drop=True).copy()
        out[f"{target}_mean"] = np.sum(weights * x, axis=1)
        for p, column in zip(
            probabilities, _weighted_quantiles(x, weights, probabilities).T, strict=True
        ):
            out[f"{target}_q{p:g}"] = column
        if self.marginals[target_index].inflated:
            out[f"{target}_p_zero"] = np.sum(weights * (x <= 0.0), axis=1)
            out[f"{target}_p_one"] = np.sum(weights * (x >= 1.0), axis=1)
        out["effective_samples"] = 1.0 / np.sum(weights**2, axis=1)
        out["method"] = method
        return out

    def _conditional_uniforms(
        self, u_given: np.ndarray, index: Sequence[int], generator: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, str]:
        """Draw the free copula variables given `u_given` at columns `index`; return (u, weights, method)."""
        n = u_given.shape[0]
        conditioning_set = [j + 1 for j in index]
        if len(index) < self.dimension:
            try:
                u = self.vine.sample_conditional(
                    np.asfortranarray(u_given),
                    conditioning_set=conditioning_set,
                    seeds=_seeds(generator),
                )
                return np.asarray(u), np.ones(n), "conditional"
            except (RuntimeError, ValueError):
                pass  # not a tail of a sampling order of this vine: importance sampling
        u = np.clip(generator.random((n, self.dimension)), 1e-12, 1 - 1e-12)
        u[:, list(index)] = u_given
        left = [u[:, j] for j, m in enumerate(self.marginals) if m.inflated]  # points, not atoms
        full = np.asfortranarray(np.column_stack([u, *left]))
        weights = np.asarray(self.vine.pdf(full), dtype=np.float64)
        weights = np.where(np.isfinite(weights) & (weights > 0), weights, 0.0)
        return u, weights, "importance"

    # ---------------------------------------------------------------------------- persistence

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description: marginal families and parameters, the vine's JSON, names, version."""
        from .. import __version__

        return {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "corrtomo_version": __version__,
            "descriptors": list(self.descriptors),
            "conditioning": list(self.conditioning),
            "n_particles": self.n_particles,
            "settings": self.settings,
            "marginals": [m.to_dict() for m in self.marginals],
            "vine": vine_to_dict(self.vine),
            "diagnostics": self.diagnostics,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "model") -> ParticleModel:
        """Inverse of :meth:`to_dict`."""
        if not isinstance(data, Mapping) or data.get("format") != MODEL_FORMAT:
            raise InputError(
                f"not a corrtomo particle model (format {MODEL_FORMAT!r})", source=source
            )
        if int(data.get("version", 0)) > MODEL_VERSION:
            raise InputError(
                f"model version {data.get('version')} is newer than this corrtomo reads ({MODEL_VERSION})",
                source=source,
            )
        try:
            descriptors = tuple(str(n) for n in data["descriptors"])
            marginals = tuple(Marginal.from_dict(m) for m in data["marginals"])
            vine = vine_from_dict(data["vine"])
        except (KeyError, TypeError) as error:
            raise InputError(f"incomplete model: missing {error}", source=source) from None
        if len(marginals) != len(descriptors) or vine.dim != len(descriptors):
            raise InputError(
                "the model's descriptors, marginals and vine disagree in number", source=source
            )
        return cls(
            descriptors=descriptors,
            marginals=marginals,
            vine=vine,
            n_particles=int(data.get("n_particles", 0)),
            conditioning=tuple(data.get("conditioning", ())),
            settings=dict(data.get("settings", {})),
            diagnostics=dict(data.get("diagnostics", {})),
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model as JSON (atomically); no pickle."""
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> ParticleModel:
        """Read a model written by :meth:`save`."""
        target = Path(path)
        if not target.is_file():
            raise InputError("no such model file", source=target)
        try:
            data = json.loads(target.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InputError(f"not a JSON file: {error}", source=target) from None
        return cls.from_dict(data, source=str(target))


def save_particle_model(model: ParticleModel, path: str | os.PathLike) -> Path:
    """Write `model` as JSON; see :meth:`ParticleModel.save`."""
    return model.save(path)


def load_particle_model(path: str | os.PathLike) -> ParticleModel:
    """Read a JSON model; see :meth:`ParticleModel.load`."""
    return ParticleModel.load(path)


def _copula_data(
    rows: pd.DataFrame, names: Sequence[str], marginals: Sequence[Marginal]
) -> np.ndarray:
    """PITs ``F_j(x_j)`` (n, d), then the left limits ``F_j(x_j-)`` of the margins with atoms (n, k)."""
    values = [rows[n].to_numpy(dtype=np.float64) for n in names]
    upper = [m.cdf(x) for m, x in zip(marginals, values, strict=True)]
    lower = [m.cdf_left(x) for m, x in zip(marginals, values, strict=True) if m.inflated]
    return np.asfortranarray(np.clip(np.column_stack(upper + lower), 1e-12, 1 - 1e-12))


def _weighted_quantiles(
    x: np.ndarray, weights: np.ndarray, probabilities: np.ndarray
) -> np.ndarray:
    """Row-wise weighted quantiles (inverted CDF): the smallest x with cumulative weight >= p.

    x, weights : (m, s); weights normalised per row. Returns (m, len(probabilities)).
    """
    order = np.argsort(x, axis=1, kind="stable")
    x_sorted = np.take_along_axis(x, order, axis=1)
    cumulative = np.cumsum(np.take_along_axis(weights, order, axis=1), axis=1)
    position = (cumulative[:, :, None] < probabilities[None, None, :] - 1e-12).sum(axis=1)
    position = np.minimum(position, x.shape[1] - 1)
    return np.take_along_axis(x_sorted, position, axis=1)


# --------------------------------------------------------------------------------------------
# fitting
# --------------------------------------------------------------------------------------------


def fit_particle_model(
    particles_df: pd.DataFrame,
    *,
    descriptors: Sequence[str] | str | None = None,
    family_set: str | Sequence[str] = "parametric",
    truncation_level: int | None = None,
    criterion: str = "aic",
    conditioning: Sequence[str] | str | None = "auto",
    parametric_method: str = "mle",
    exclude_border: bool = True,
    rng: np.random.Generator | int | None = None,
) -> ParticleModel:
    """Fit marginal laws and an R-vine copula to a particle table.

    Parameters
    ----------
    particles_df : DataFrame
        ``particles.csv`` table (one row per particle).
    descriptors : sequence of str or comma-separated str, optional
        Columns to model, e.g. ``("esd_um", "sphericity", "flatness", "vf_talc")``. Default: those of
        ``esd_um, sphericity, elongation, flatness`` present plus every non-constant ``vf_*`` column.
        Sizes and shapes must be positive; ``vf_*`` columns are volume fractions in [0, 1].
    family_set : str or sequence of str
        Pair-copula families: a pyvinecopulib set name (``"parametric"``, ``"one_par"``,
        ``"archimedean"``, ...) or family names (``"gaussian,clayton,gumbel,frank"``).
    truncation_level : int, optional
        Vine trees above this level are independence copulas (None: a full vine).
    criterion : {"aic", "bic"}
        Selection criterion for the marginal families and the pair-copula families.
    conditioning : "auto", sequence of str or None
        Descriptors that the structure selection puts at the tail of the vine order, so that the
        others can be simulated exactly given them (see :meth:`ParticleModel.predict`). ``"auto"``:
        the size and shape descriptors when the model also holds volume fractions (predicting
        composition from what CT sees); None or ``()``: unconstrained selection.
    exclude_border : bool
        Leave out particles touching the volume border (their size and shape are cut), as
        :mod:`corrtomo.liberation` does by default.
    rng : Generator, int or None
        Seeds the randomised PIT of volume fractions (their atoms at 0 and 1).

    Returns
    -------
    ParticleModel

    Raises
    ------
    InputError
        Unknown descriptor names, non-numeric or constant columns, NaNs, fewer than
        ``10 d`` particles, an unknown family set or criterion.

    Notes
    -----
    1. Margins: each ``F_j`` is chosen by ``AIC = 2 k - 2 log L`` (or BIC) among log-normal, gamma,
       Weibull (and beta, two-component beta mixture for values in (0, 1)) laws; a volume fraction
       gets a zero-one-inflated beta law (point masses ``P(0)``, ``P(1)``, beta interior), see
       :class:`~corrtomo.stats._marginals.Marginal`.
    2. Probability integral transforms ``u_ij = F_j(x_ij)`` (inference functions for margins, IFM).
       For a margin with atoms, the randomised PIT ``u = F(x-) + V (F(x) - F(x-))``, ``V ~ U(0, 1)``
       (seeded by `rng`), makes ``u`` exactly uniform; the fitted copula is then one valid copula of the
       mixed vector (Sklar's copula is not unique off the range of ``F``), and simulating
       ``x = F^-(u)`` reproduces the atoms and their dependence on the other descriptors. This is
       preferred to pyvinecopulib's discrete likelihood, which expects purely discrete variables,
       whereas a volume fraction is continuous between its atoms.
    3. R-vine selection (Dissmann et al. 2013): trees are maximum spanning trees of ``|tau|``; every
       pair-copula family (with rotations) is fitted by maximum likelihood and chosen by AIC/BIC.

    References
    ----------
    Aas, K., Czado, C., Frigessi, A., Bakken, H. (2009). Pair-copula constructions of multiple
    dependence. Insurance: Mathematics and Economics 44, 182-198.
    Dissmann, J., Brechmann, E. C., Czado, C., Kurowicka, D. (2013). Selecting and estimating regular
    vine copulae and application to financial returns. CSDA 59, 52-69.
    Furat, O., Leißner, T., Ditscherlein, R., et al. (2018). Description of ore particles from X-ray
    microtomography (XMT) images, supported by SEM-based image analysis. Microsc. Microanal. 24, 461-470.
    Furat, O., Kirstein, T., Leißner, T., et al. (2023). Multidimensional characterization of particle
    morphology and mineralogical composition using CT data and R-vine copulas. arXiv:2301.07587.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> size = rng.lognormal(0.3, 0.4, 300)
    >>> df = pd.DataFrame({"esd_um": size, "sphericity": 0.9 - 0.02 * size + 0.01 * rng.random(300)})
    >>> model = fit_particle_model(df, family_set="one_par", rng=0)
    >>> model.marginal("esd_um").family
    'lognormal'
    >>> model.simulate(5, rng=1).shape
    (5, 5)
    """
    rows, names = _check_table(particles_df, descriptors, exclude_border=exclude_border)
    criterion = str(criterion).lower()
    _, family_names = resolve_family_set(family_set)
    if conditioning == "auto":
        shape = [n for n in names if not n.startswith(FRACTION_PREFIX)]
        conditioning_names = tuple(shape) if 0 < len(shape) < len(names) else ()
    elif conditioning is None:
        conditioning_names = ()
    else:
        items = conditioning.split(",") if isinstance(conditioning, str) else conditioning
        conditioning_names = tuple(str(c).strip() for c in items if str(c).strip())
        unknown = [c for c in conditioning_names if c not in names]
        if unknown:
            raise InputError(
                f"conditioning descriptor(s) {', '.join(unknown)} are not modelled",
                source="conditioning",
            )
        if len(conditioning_names) >= len(names):
            raise InputError(
                "the conditioning set must leave a descriptor out", source="conditioning"
            )
    generator = as_rng(rng)
    seed = int(generator.integers(0, 2**31 - 1))
    marginals = tuple(
        fit_marginal(rows[n].to_numpy(dtype=np.float64), name=n, criterion=criterion) for n in names
    )
    u = _copula_data(rows, names, marginals)
    var_types = ["d" if m.inflated else "c" for m in marginals]
    controls = fit_controls(
        family_set,
        truncation_level=truncation_level,
        criterion=criterion,
        conditioning_set=[names.index(c) for c in conditioning_names],
        parametric_method=parametric_method,
        seeds=[seed],
    )
    import pyvinecopulib as pv

    try:
        vine = pv.Vinecop.from_data(u, controls=controls, var_types=var_types)
    except RuntimeError as error:
        raise InputError(f"vine copula selection failed: {error}", source="particles") from None
    n = len(rows)
    copula_loglik = float(vine.loglik(u))
    copula_parameters = float(vine.npars)
    margin_loglik = float(sum(m.loglik for m in marginals))
    margin_parameters = int(sum(m.n_parameters for m in marginals))
    k = copula_parameters + margin_parameters
    loglik = copula_loglik + margin_loglik
    diagnostics = {
        "n_particles": n,
        "copula_loglik": copula_loglik,
        "copula_parameters": copula_parameters,
        "copula_aic": 2 * copula_parameters - 2 * copula_loglik,
        "copula_bic": math.log(n) * copula_parameters - 2 * copula_loglik,
        "marginal_loglik": margin_loglik,
        "marginal_parameters": margin_parameters,
        "loglik": loglik,
        "aic": 2 * k - 2 * loglik,
        "bic": math.log(n) * k - 2 * loglik,
        "pair_copulas": pair_copula_table(vine, names),
    }
    settings = {
        "family_set": family_names,
        "truncation_level": truncation_level,
        "criterion": criterion,
        "exclude_border": bool(exclude_border),
        "parametric_method": parametric_method,
        "seed": seed,
    }
    return ParticleModel(
        descriptors=names,
        marginals=marginals,
        vine=vine,
        n_particles=n,
        conditioning=conditioning_names,
        settings=settings,
        diagnostics=diagnostics,
    )


def model_from_parts(
    marginals: Sequence[Marginal],
    vine: Any,
    *,
    conditioning: Sequence[str] = (),
) -> ParticleModel:
    """A :class:`ParticleModel` from known marginal laws and a known vine (e.g. to study a model).

    Parameters
    ----------
    marginals : sequence of Marginal
        One per variable, in the vine's variable order; their names are the descriptors.
    vine : pyvinecopulib.Vinecop
        A vine copula of dimension ``len(marginals)`` (copied).
    conditioning : sequence of str
        Recorded conditioning set (informational).
    """
    marginals = tuple(marginals)
    if vine.dim != len(marginals):
        raise InputError(
            f"the vine has {vine.dim} variables but {len(marginals)} marginals are given",
            source="vine",
        )
    return ParticleModel(
        descriptors=tuple(m.name for m in marginals),
        marginals=marginals,
        vine=copy_vine(vine),
        n_particles=0,
        conditioning=tuple(conditioning),
    )


# --------------------------------------------------------------------------------------------
# goodness of fit
# --------------------------------------------------------------------------------------------


def _liberation_degree(vf: np.ndarray, volume: np.ndarray, threshold: float) -> float:
    """LD = sum over free particles of vf V / sum over all particles of vf V (seed paper Eq. 1)."""
    phase_volume = vf * volume
    total = float(phase_volume.sum())
    return float(phase_volume[vf > threshold].sum() / total) if total > 0 else math.nan


@dataclass(frozen=True, eq=False)
class GoodnessOfFit:
    """Goodness of fit of a :class:`ParticleModel` to a particle table.

    Attributes
    ----------
    marginals : DataFrame
        One row per descriptor: ``descriptor, family, ks_statistic, ks_pvalue`` (two-sample
        Kolmogorov-Smirnov, data vs simulation; for a volume fraction on the interior values 0 < x < 1
        only) and for volume fractions ``p_zero_data, p_zero_simulated, p_one_data, p_one_simulated,
        atoms_pvalue`` (chi-square test of the counts at 0, inside, at 1).
    tau_data, tau_simulated : DataFrame
        Kendall's tau matrices (descriptor x descriptor).
    tau_max_abs_difference : float
        ``max |tau_data - tau_simulated|`` over the pairs.
    liberation : DataFrame
        One row per modelled volume fraction: ``phase, ld_data, ld_simulated, difference``.
    n_data, n_simulated : int
    """

    marginals: pd.DataFrame
    tau_data: pd.DataFrame
    tau_simulated: pd.DataFrame
    tau_max_abs_difference: float
    liberation: pd.DataFrame
    n_data: int
    n_simulated: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""

        def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
            return json.loads(frame.to_json(orient="records"))

        return {
            "n_data": self.n_data,
            "n_simulated": self.n_simulated,
            "marginals": records(self.marginals),
            "tau_data": json.loads(self.tau_data.to_json()),
            "tau_simulated": json.loads(self.tau_simulated.to_json()),
            "tau_max_abs_difference": self.tau_max_abs_difference,
            "liberation": records(self.liberation),
        }


def goodness_of_fit(
    model: ParticleModel,
    data: pd.DataFrame,
    *,
    n_simulated: int | None = None,
    threshold: float = 0.99,
    exclude_border: bool | None = None,
    rng: np.random.Generator | int | None = None,
) -> GoodnessOfFit:
    """Compare a particle table with a population simulated from a fitted model.

    Parameters
    ----------
    model : ParticleModel
    data : DataFrame
        Particle table (the one the model was fitted to, or another sample).
    n_simulated : int, optional
        Size of the simulated population (default ``max(20 n, 20000)``, so that its sampling error is
        small next to the data's).
    threshold : float
        Liberation threshold: a particle is free of phase i when ``vf_i > threshold`` (0.99).
    exclude_border : bool, optional
        Leave out border particles of `data` (default: the model's fit setting).
    rng : Generator, int or None
        Seed of the simulation.

    Returns
    -------
    GoodnessOfFit

    Notes
    -----
    * KS: ``D = sup_x |F_data(x) - F_sim(x)|`` with its two-sample p-value. A volume fraction's law has
      atoms, so its interior values are tested by KS and its atom masses by a chi-square test of the
      3-category counts (0, interior, 1).
    * Kendall's tau: the tie-corrected tau-b of each descriptor pair (``pyvinecopulib.utils.wdm``).
    * Liberation degree (seed paper Eq. 1): ``LD_i = sum_{p: vf_ip > t} vf_ip V_p / sum_p vf_ip V_p`` with
      particle volume ``V = pi/6 esd^3`` in the simulation and the measured ``volume_um3`` in the data
      (or ``pi/6 esd^3`` when absent). This is the definition of :func:`corrtomo.liberation.liberation_degree`
      (computed here, as the stats layer does not import the liberation layer); LD is only reported
      when the model holds ``esd_um`` or ``volume_um3``.
    """
    if exclude_border is None:
        exclude_border = bool(model.settings.get("exclude_border", True))
    rows, _ = _check_table(data, model.descriptors, exclude_border=exclude_border, source="data")
    n = len(rows)
    n_simulated = max(20 * n, 20000) if n_simulated is None else int(n_simulated)
    simulated = model.simulate(n_simulated, rng=rng)

    records = []
    for name, marginal in zip(model.descriptors, model.marginals, strict=True):
        x = rows[name].to_numpy(dtype=np.float64)
        y = simulated[name].to_numpy(dtype=np.float64)
        record: dict[str, Any] = {"descriptor": name, "family": marginal.family}
        if marginal.inflated:
            x_inside, y_inside = x[(x > 0) & (x < 1)], y[(y > 0) & (y < 1)]
            if x_inside.size and y_inside.size:
                test = scipy_stats.ks_2samp(x_inside, y_inside)
                record.update(ks_statistic=float(test.statistic), ks_pvalue=float(test.pvalue))
            else:
                record.update(ks_statistic=math.nan, ks_pvalue=math.nan)
            counts = np.array(
                [[np.sum(v <= 0), np.sum((v > 0) & (v < 1)), np.sum(v >= 1)] for v in (x, y)],
                dtype=np.float64,
            )
            counts = counts[:, counts.sum(axis=0) > 0]
            atoms_pvalue = (
                float(scipy_stats.chi2_contingency(counts, correction=False).pvalue)
                if counts.shape[1] > 1
                else 1.0
            )
            record.update(
                p_zero_data=float(np.mean(x <= 0)),
                p_zero_simulated=float(np.mean(y <= 0)),
                p_one_data=float(np.mean(x >= 1)),
                p_one_simulated=float(np.mean(y >= 1)),
                atoms_pvalue=atoms_pvalue,
            )
        else:
            test = scipy_stats.ks_2samp(x, y)
            record.update(ks_statistic=float(test.statistic), ks_pvalue=float(test.pvalue))
        records.append(record)
    marginals = pd.DataFrame.from_records(records)

    names = list(model.descriptors)
    tau_data = kendall_tau_matrix(rows[names].to_numpy(dtype=np.float64))
    tau_simulated = kendall_tau_matrix(simulated[names].to_numpy(dtype=np.float64))
    difference = float(np.max(np.abs(tau_data - tau_simulated)))

    liberation = []
    if _SIZE_COLUMN in names or _VOLUME_COLUMN in names:
        if _VOLUME_COLUMN in rows.columns:
            volume_data = rows[_VOLUME_COLUMN].to_numpy(dtype=np.float64)
        else:
            volume_data = np.pi / 6.0 * rows[_SIZE_COLUMN].to_numpy(dtype=np.float64) ** 3
        volume_simulated = simulated[_VOLUME_COLUMN].to_numpy(dtype=np.float64)
        for name in names:
            if not name.startswith(FRACTION_PREFIX):
                continue
            ld_data = _liberation_degree(
                rows[name].to_numpy(dtype=np.float64), volume_data, threshold
            )
            ld_sim = _liberation_degree(
                simulated[name].to_numpy(dtype=np.float64), volume_simulated, threshold
            )
            liberation.append(
                {
                    "phase": name[len(FRACTION_PREFIX) :],
                    "ld_data": ld_data,
                    "ld_simulated": ld_sim,
                    "difference": ld_sim - ld_data,
                }
            )
    return GoodnessOfFit(
        marginals=marginals,
        tau_data=pd.DataFrame(tau_data, index=names, columns=names),
        tau_simulated=pd.DataFrame(tau_simulated, index=names, columns=names),
        tau_max_abs_difference=difference,
        liberation=pd.DataFrame.from_records(
            liberation, columns=["phase", "ld_data", "ld_simulated", "difference"]
        ),
        n_data=n,
        n_simulated=n_simulated,
    )
