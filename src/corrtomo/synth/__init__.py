"""The digital twin: synthetic particle samples with known truth, imaged by simulated CT and SEM.

A phantom of irregular multi-mineral particles (log-normal sizes, grains, inclusions, lamellae,
touching particles, textured matrix, optional pillar) is rendered with super-sampled partial
volume, projected by Beer-Lambert line integrals with attenuation from xraydb, noised with Poisson
statistics and reconstructed (FBP or SIRT); SEM sections on inclined planes get BSE contrast from
the mean atomic number and EDS counts from element weight fractions.
"""

from ._ct import (
    CTResult,
    backproject,
    fbp,
    forward_project,
    simulate_ct,
    simulate_ct_image_domain,
    sirt,
)
from ._pair import (
    PAIR_PRESETS,
    PairPreset,
    ScalePair,
    get_pair_preset,
    make_scale_pair,
    pose_rotation,
    transform_system,
    transform_texture,
    write_scale_pair,
)
from ._particles import ParticleSpec, ParticleSystem, ParticleType, generate_particles
from ._presets import PRESETS, CTSettings, SEMSettings, SynthPreset, get_preset
from ._render import MatrixTexture, PhantomRenderer
from ._sample import (
    SyntheticSample,
    grey_value_statistics,
    make_sample,
    touching_particle_share,
    write_sample,
)
from ._sem import SimulatedSection, backscatter_coefficient, simulate_section

__all__ = [
    "PAIR_PRESETS",
    "PRESETS",
    "CTResult",
    "CTSettings",
    "MatrixTexture",
    "PairPreset",
    "ParticleSpec",
    "ParticleSystem",
    "ParticleType",
    "PhantomRenderer",
    "SEMSettings",
    "ScalePair",
    "SimulatedSection",
    "SynthPreset",
    "SyntheticSample",
    "backproject",
    "backscatter_coefficient",
    "fbp",
    "forward_project",
    "generate_particles",
    "get_pair_preset",
    "get_preset",
    "grey_value_statistics",
    "make_sample",
    "make_scale_pair",
    "pose_rotation",
    "simulate_ct",
    "simulate_ct_image_domain",
    "simulate_section",
    "sirt",
    "touching_particle_share",
    "transform_system",
    "transform_texture",
    "write_sample",
    "write_scale_pair",
]
