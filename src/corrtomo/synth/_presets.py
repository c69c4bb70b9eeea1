"""Presets of the digital twin: what sample, which instrument, which SEM sections.

Every number is physical (micrometres, keV, photon counts); nothing here encodes an answer the
analysis should find. The presets follow the seed papers:

* ``talc-saxolite`` — the Nano-CT case of seeds/000 (Zeiss Xradia 810 Ultra, quasi-monochromatic
  5.4 keV Cr K-alpha, parallel beam, 64-150 nm voxels, optical resolution about 150 nm, a laser-cut
  pillar): a 70:30 talcum:saxolite mixture by volume, talcum particles holding dolomite, magnesite
  and talc grains, saxolite (calcite) particles of which some hold a few % talc; particle sizes
  0.3-15 um; FIB-SEM sections inclined at 28 degrees.
* ``li-slag`` — the micro-CT case of seeds/003: a lithium slag whose LiAlO2 forms fine
  lamellae/dendrites in Ca-Al-silicate slag grains, polychromatic tungsten tube (beam hardening),
  low phase contrast and partial-volume-dominated fine structure.
* ``quick`` — a small ``talc-saxolite`` sample for tests and a first look.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from .._shared import InputError
from ._particles import ParticleSpec, ParticleType


@dataclass(frozen=True)
class CTSettings:
    """X-ray CT acquisition and reconstruction.

    Attributes
    ----------
    energy_kev : float or None
        Monochromatic energy; ``None`` for a tube spectrum.
    kvp : float
        Tube voltage for a polychromatic spectrum.
    anode : str
        Tube anode element.
    filters_mm : dict[str, float]
        Beam filtration (element or formula -> thickness in mm).
    photons_per_pixel : float
        Incident flat-field counts per detector pixel and projection (Poisson noise).
    n_angles : int or None
        Projections over 180 degrees; ``None`` = pi/2 x slice width.
    reconstruction : str
        ``"fbp"`` or ``"sirt"``.
    sirt_iterations : int
    psf_sigma_voxels : float
        Gaussian point-spread (source and detector blur) in voxels.
    method : str
        ``"projection"`` (Beer-Lambert projections, noise, reconstruction) or ``"image"`` (fast
        image-domain approximation for large volumes).
    contrast_scale : float
        Scales the attenuation differences between mineral phases around their mean (1 = physical
        values); < 1 emulates an instrument with weaker phase contrast (overlapping grey values).
    """

    energy_kev: float | None = 5.4
    kvp: float = 80.0
    anode: str = "W"
    filters_mm: dict[str, float] | None = None
    photons_per_pixel: float = 5000.0
    n_angles: int | None = None
    reconstruction: str = "fbp"
    sirt_iterations: int = 40
    psf_sigma_voxels: float = 0.7
    method: str = "projection"
    contrast_scale: float = 1.0


@dataclass(frozen=True)
class SEMSettings:
    """SEM sections: how many, where and how imaged.

    Attributes
    ----------
    n_sections : int
    tilt_deg : float
        Inclination of the section plane's normal from the volume's z axis (FIB: 28 degrees).
    tilt_jitter_deg : float
        Random deviation of the tilt.
    pixel_ratio : float
        Section pixel size over CT voxel size.
    coverage : float
        Section width over the smaller lateral size of the volume.
    beam_kev : float
        Beam energy (sets the interaction volume).
    bse_dose : float
        Mean BSE counts for a backscatter coefficient of 1.
    eds_counts : float
        EDS counts scale per pixel (counts of a pure element with efficiency 1).
    """

    n_sections: int = 1
    tilt_deg: float = 28.0
    tilt_jitter_deg: float = 4.0
    pixel_ratio: float = 0.5
    coverage: float = 0.85
    beam_kev: float = 5.0
    bse_dose: float = 400.0
    eds_counts: float = 150.0


@dataclass(frozen=True)
class SynthPreset:
    """A complete recipe for a synthetic sample."""

    name: str
    description: str
    phase_library: str
    matrix: str
    shape: tuple[int, int, int]
    voxel_size_um: float
    particles: ParticleSpec
    ct: CTSettings
    sem: SEMSettings
    pillar: bool = True
    supersample: int = 2
    texture_amplitude: float = 0.08

    def to_dict(self) -> dict:
        return asdict(self)

    def with_shape(self, shape: tuple[int, int, int] | None) -> SynthPreset:
        if shape is None:
            return self
        shape = tuple(int(v) for v in shape)
        if len(shape) != 3 or min(shape) < 16:
            raise InputError(f"shape must be three sizes of at least 16 voxels, got {shape}", source="--shape")
        return replace(self, shape=shape)


_TALCUM = ParticleType(
    name="talcum",
    volume_share=0.7,
    phases={2: 0.25, 3: 0.20, 4: 0.55},  # dolomite, magnesite, talc
    liberated_share=0.55,
    grains=(2, 4),
    flatness=(0.35, 0.8),  # talc is platy
    roughness=0.12,
)
_SAXOLITE = ParticleType(
    name="saxolite",
    volume_share=0.3,
    phases={1: 1.0},  # calcite
    liberated_share=0.6,
    grains=(1, 1),
    inclusion=(4, 1.0, 0.03),  # "composites which contain traces of talcum (up to 4 %)"
    flatness=(0.6, 1.0),
    roughness=0.10,
)

_TALC_SAXOLITE = SynthPreset(
    name="talc-saxolite",
    description="Nano-CT (5.4 keV, 100 nm voxels) of a 70:30 talcum:saxolite powder pillar in epoxy, one FIB-SEM section at 28 degrees",
    phase_library="talc-saxolite",
    matrix="epoxy",
    # 100 nm voxels (the instrument's range is 64-150 nm) and 1e4 counts: one section of labels
    # then reaches the paper's phase IoU (0.91); at 128 nm and 4000 counts, 1.3 um particles are
    # 10 voxels across and partial volume caps the mean IoU near 0.86 (measured, segmentation issue)
    shape=(160, 160, 160),
    voxel_size_um=0.1,
    particles=ParticleSpec(
        types=(_TALCUM, _SAXOLITE),
        esd_median_um=1.3,
        esd_sigma=0.45,
        esd_min_um=0.6,
        esd_max_um=4.5,
        solids_fraction=0.25,
        touching_share=0.2,
    ),
    ct=CTSettings(energy_kev=5.4, photons_per_pixel=1e4, psf_sigma_voxels=0.7, reconstruction="fbp"),
    sem=SEMSettings(n_sections=1, tilt_deg=28.0, pixel_ratio=0.5, beam_kev=5.0, eds_counts=150.0),
    pillar=True,
    supersample=2,
)

_LI_SLAG = SynthPreset(
    name="li-slag",
    description="Micro-CT (50 kVp W tube, 0.5 mm Al, 1 um voxels) of Li slag particles with fine LiAlO2 lamellae, low phase contrast",
    phase_library="li-slag",
    matrix="epoxy",
    shape=(128, 128, 128),
    voxel_size_um=1.0,
    particles=ParticleSpec(
        types=(
            ParticleType(
                name="slag",
                volume_share=0.75,
                phases={2: 0.35, 3: 0.15, 4: 0.35, 5: 0.15},  # gehlenite, spinel, glass, galaxite
                liberated_share=0.2,
                grains=(2, 5),
                lamella=(1, 0.8, 0.25, 4.0),  # LiAlO2 lamellae, 25 % of the particle, 4 um period
                roughness=0.14,
            ),
            ParticleType(
                name="lialo2-rich",
                volume_share=0.25,
                phases={1: 0.7, 2: 0.3},
                liberated_share=0.35,
                grains=(2, 3),
                roughness=0.12,
            ),
        ),
        esd_median_um=14.0,
        esd_sigma=0.4,
        esd_min_um=5.0,
        esd_max_um=30.0,
        solids_fraction=0.28,
        touching_share=0.25,
    ),
    ct=CTSettings(
        energy_kev=None, kvp=50.0, anode="W", filters_mm={"Al": 0.5}, photons_per_pixel=2e5,
        psf_sigma_voxels=0.8, reconstruction="fbp", contrast_scale=1.0,
    ),
    sem=SEMSettings(n_sections=2, tilt_deg=0.0, tilt_jitter_deg=10.0, pixel_ratio=0.5, beam_kev=15.0, eds_counts=200.0),
    pillar=False,
    supersample=2,
)

_QUICK = replace(
    _TALC_SAXOLITE,
    name="quick",
    description="Small talc-saxolite sample (48^3 voxels, 0.128 um) for tests and a first look",
    shape=(48, 48, 48),
    voxel_size_um=0.128,
    particles=replace(_TALC_SAXOLITE.particles, esd_median_um=0.9, esd_min_um=0.5, esd_max_um=2.4),
    ct=replace(_TALC_SAXOLITE.ct, n_angles=90, photons_per_pixel=4000.0),
)

PRESETS: dict[str, SynthPreset] = {p.name: p for p in (_QUICK, _TALC_SAXOLITE, _LI_SLAG)}


def get_preset(name: str | SynthPreset) -> SynthPreset:
    """Return a preset by name (``quick``, ``talc-saxolite``, ``li-slag``)."""
    if isinstance(name, SynthPreset):
        return name
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}", source="--preset") from None
