"""Statistics over particle populations: representativeness of sub-volumes (Fig. 12 of the seed paper)
and multivariate particle models (parametric marginals + R-vine copulas of size, shape and composition).
"""

from ._copula_model import (
    GoodnessOfFit,
    ParticleModel,
    fit_particle_model,
    goodness_of_fit,
    load_particle_model,
    model_from_parts,
    save_particle_model,
)
from ._cross_scale import cross_scale_figure, cross_scale_psd
from ._marginals import Marginal, fit_marginal
from ._pair_plot import pair_plot
from ._representativeness import (
    interval_statistics,
    piece_grid,
    piece_size_counts,
    representativeness,
    representativeness_from_table,
)
from ._vine import kendall_tau_matrix

__all__ = [
    "GoodnessOfFit",
    "Marginal",
    "ParticleModel",
    "cross_scale_figure",
    "cross_scale_psd",
    "fit_marginal",
    "fit_particle_model",
    "goodness_of_fit",
    "interval_statistics",
    "kendall_tau_matrix",
    "load_particle_model",
    "model_from_parts",
    "pair_plot",
    "piece_grid",
    "piece_size_counts",
    "representativeness",
    "representativeness_from_table",
    "save_particle_model",
]
