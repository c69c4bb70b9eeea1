"""The run configuration: one YAML file, validated with pydantic.

Paths in the file are relative to the file's folder. Every key is checked; an unknown or
mistyped key stops the run before any work with a one-line message that names the key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .._shared import InputError

PositiveFloat = Annotated[float, Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CTConfig(_Strict):
    """The CT volume: one file (TIFF, OME-Zarr, HDF5, NumPy, slice folder) or a list to stitch."""

    path: str | list[str] = Field(description="CT volume file, or a list of overlapping volumes to stitch")
    voxel_size_um: PositiveFloat | list[PositiveFloat] | None = Field(
        None, description="voxel size in um (one value or z, y, x); checked against the file's when both exist")

    @field_validator("voxel_size_um")
    @classmethod
    def _three_values(cls, value):
        if isinstance(value, list) and len(value) not in (1, 3):
            raise ValueError("give one value or three (z, y, x)")
        return value


class OverviewConfig(_Strict):
    """A larger, coarser scan (micro-CT) that holds the CT volume: located and compared across scales."""

    path: str = Field(description="overview volume file (micro-CT)")
    voxel_size_um: PositiveFloat | None = Field(None, description="overview voxel size in um if not in the file")
    resolution_um: PositiveFloat | None = Field(None, description="overview resolution; PSD cut-off 2x (default 2 voxels)")
    spin_step_deg: PositiveFloat | None = Field(None, description="coarse rotation step (default from the size)")


class HintConfig(_Strict):
    """Optional narrowing of the section search (see ``corrtomo.register.RegistrationHint``)."""

    tilt_deg: float | None = Field(None, description="approximate tilt of the section normal from normal_axis")
    tilt_tolerance_deg: PositiveFloat = 8.0
    normal_axis: tuple[float, float, float] = (1.0, 0.0, 0.0)
    cone_deg: PositiveFloat | None = Field(None, description="only normals within this angle of normal_axis")
    depth_range: tuple[float, float] | None = Field(None, description="section centre along normal_axis, voxels")


class SectionConfig(_Strict):
    """One SEM section: EDS maps (classified into minerals) or a mineral map, optional BSE."""

    name: str
    eds: str | None = Field(None, description="folder of EDS element maps (<Element>.tif)")
    mineral_map: str | None = Field(None, description="mineral map image (phase ids or library colours)")
    bse: str | None = Field(None, description="BSE image (used for the EDS classification and the report)")
    pixel_size_um: PositiveFloat = Field(description="section pixel size in um")
    pose: str | None = Field(None, description="a known pose.json: skips the search (landmark or earlier run)")
    hint: HintConfig | None = None

    @model_validator(mode="after")
    def _one_source(self):
        if (self.eds is None) == (self.mineral_map is None):
            raise ValueError("give exactly one of 'eds' and 'mineral_map'")
        return self


class TruthConfig(_Strict):
    """Ground truth of a digital twin: accuracy goes into the report. Never used for training."""

    phases: str | None = None
    particles: str | None = None
    poses: dict[str, str] = Field(default_factory=dict, description="section name -> truth pose.json")
    overview_transform: str | None = Field(None, description="truth transform.json of the CT inside the overview")


class StitchOptions(_Strict):
    max_rotation_deg: float = 1.0


class EDSOptions(_Strict):
    method: Literal["reference", "unsupervised"] = "reference"
    bin_size: int = Field(1, ge=1)
    smooth_sigma_px: float = Field(0.0, ge=0)
    min_confidence: float = Field(0.5, ge=0, le=1)
    seed: int = 0


class RegisterOptions(_Strict):
    source: Literal["mineral_map", "bse"] = Field("mineral_map", description="what is matched to the CT")
    normal_spacing_deg: PositiveFloat = 8.0
    n_candidates: int = Field(12, ge=1)
    scale_tolerance: float = Field(0.1, ge=0, lt=1)
    min_confidence: float = Field(0.0, ge=0, le=1, description="stop when a section's confidence is lower")
    min_z_score: PositiveFloat = Field(8.0, description="best score over the random-pose null, in standard deviations")
    seed: int = 0


class LabelOptions(_Strict):
    boundary_margin_px: float | None = Field(None, ge=0, description="default: one CT voxel in pixels")
    max_plane_distance: PositiveFloat = 0.5


class ForegroundOptions(_Strict):
    method: Literal["otsu", "multiotsu", "gmm"] = "otsu"
    pillar: bool = True
    edge_fraction: float = Field(0.4, gt=0, lt=1)
    fill_holes: bool = True


class UNetOptions(_Strict):
    """The 3D U-Net of ``stages.phases.method: unet`` (needs PyTorch: corrtomo[dl])."""

    patch: int | tuple[int, int, int] = Field(
        64, description="training patch and inference window: one edge or (z, y, x) edges in voxels; a "
        "patch thin across the sections, e.g. [24, 80, 80], holds more labelled voxels per step")
    base_channels: int = Field(16, ge=1)
    levels: int = Field(4, ge=1, le=6)
    max_steps: int = Field(2000, ge=1)
    batch_size: int = Field(2, ge=1)
    learning_rate: PositiveFloat = 1e-3
    patience: int = Field(8, ge=1, description="validations without improvement before stopping")
    overlap: float = Field(0.5, ge=0, lt=1, description="sliding-window overlap at inference")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    intensity_scale: float = Field(0.0, ge=0, lt=1, description="grey-value scale jitter (augmentation)")
    intensity_shift: float = Field(0.0, ge=0, description="grey-value offset jitter, normalised units")
    noise_sigma: float = Field(0.0, ge=0, description="added Gaussian noise, normalised units")

    @field_validator("patch")
    @classmethod
    def _patch_edges(cls, value):
        edges = (value,) * 3 if isinstance(value, int) else tuple(value)
        if min(edges) < 8:
            raise ValueError(f"every patch edge must be >= 8 voxels, got {list(edges)}")
        return value


class PhaseOptions(_Strict):
    method: Literal["random_forest", "extra_trees", "hist_gradient_boosting", "unet"] = Field(
        "random_forest", description="the phase model; unet = the 3D U-Net (stages.phases.unet)")
    unet: UNetOptions = UNetOptions()
    features: list[str] | None = Field(None, description="feature kinds; default the measured set")
    scales_um: list[PositiveFloat] | None = None
    n_estimators: int = Field(64, ge=1)
    rim_voxels: int = Field(2, ge=0, description="rim layers whose phase comes from the particle interior "
                            "(partial-volume correction, corrtomo.segment.correct_rim_phases); 0 = off")
    seed: int = 0


class ParticleOptions(_Strict):
    method: Literal["h_maxima", "eroded_cores"] = "h_maxima"
    foreground: Literal["ct", "unet"] = Field(
        "ct", description="particle voxels: the CT foreground stage, or the U-Net's particle head "
        "(needs stages.phases.method: unet)")
    h_um: PositiveFloat | None = None
    resolution_um: PositiveFloat | None = Field(None, description="particles below 2x this ESD are removed")
    merge_oversplit: bool = Field(True, description="merge neighbours joined by a neck nearly as thick as the "
                                  "thinner (a composite split at its grain boundary reads as two free particles)")
    merge_ratio: float = Field(0.9, gt=0, le=1, description="merge when the saddle >= ratio x the thinner depth")


class RefineOptions(_Strict):
    """Particle-aware phase refinement after particle separation (corrtomo.segment.refine_phases)."""

    contact_voxels: int = Field(2, ge=0, description="voxels on each side of a particle contact whose phase "
                                "comes from the particle's interior; 0 = off")
    inclusions: bool = Field(True, description="recover inclusions blurred into their host grain "
                             "(corrtomo.segment.recover_inclusions)")
    false_alarms: PositiveFloat = Field(0.05, description="expected false inclusions per volume under Gaussian "
                                        "noise (sets the detection threshold)")
    blur_sigma_voxels: PositiveFloat | None = Field(None, description="CT point-spread sigma; default estimated "
                                                    "from the particle edges")
    small_grain_voxels: int = Field(12, ge=0, description="grains up to this extent take the phase their "
                                    "blur-corrected mean grey value is nearest (corrtomo.segment."
                                    "reclassify_small_grains); 0 = off")


class AnalysisOptions(_Strict):
    threshold: float = Field(0.99, ge=0, lt=1, description="free particle: vf_i > threshold (paper Eq. 1)")
    size_bins_um: list[PositiveFloat] | None = None
    include_border: bool = False
    bootstrap: int = Field(1000, ge=0)
    stereology_planes: int = Field(16, ge=1)
    piece_size_um: PositiveFloat | list[PositiveFloat] | None = Field(
        None, description="representativeness pieces; default a quarter of the volume per axis")
    seed: int = 0


class Stages(_Strict):
    stitch: StitchOptions = StitchOptions()
    eds: EDSOptions = EDSOptions()
    registration: RegisterOptions = RegisterOptions()
    labels: LabelOptions = LabelOptions()
    foreground: ForegroundOptions = ForegroundOptions()
    phases: PhaseOptions = PhaseOptions()
    particles: ParticleOptions = ParticleOptions()
    refine: RefineOptions = RefineOptions()
    analysis: AnalysisOptions = AnalysisOptions()


class OutputOptions(_Strict):
    tiff: bool = Field(False, description="also write phases.tif and particles.tif")
    chunk: int = Field(64, ge=8, description="Zarr chunk edge in voxels")


class ExecutionOptions(_Strict):
    """In-memory or block-by-block (out-of-core) execution of the volume stages."""

    mode: Literal["auto", "memory", "chunked"] = Field(
        "auto", description="auto: chunked when the in-memory path would not fit in memory_fraction of RAM")
    chunk: int = Field(128, ge=8, description="block edge (voxels) of the chunked path")
    memory_fraction: float = Field(0.5, gt=0, le=1, description="share of the available memory auto may plan for")
    workers: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="parallel workers for the chunked path's independent blocks; auto: one thread per "
        "core, fewer when their blocks would not fit in memory_fraction of the available memory")
    scheduler: str | None = Field(
        None, description="where chunked blocks run: null (serial with 1 worker, else threads), threads, "
        "processes (a local cluster of worker processes), or a dask.distributed scheduler address tcp://HOST:PORT")

    @field_validator("scheduler")
    @classmethod
    def _scheduler(cls, value):
        if value is None or value in ("threads", "processes") or "://" in value:
            return value
        raise ValueError(f"use null, threads, processes or an address like tcp://HOST:PORT, got {value!r}")

    def runner_settings(self, available_memory: int | None = None) -> tuple[int, str | None]:
        """(workers, scheduler) for :class:`corrtomo.BlockRunner`; ``auto`` workers resolved with
        :func:`auto_workers` (`available_memory` in bytes, None: not limited by memory)."""
        workers = self.workers
        if workers == "auto":
            budget = None if available_memory is None else self.memory_fraction * available_memory
            workers = auto_workers(self.chunk, budget)
        if self.scheduler is None and workers > 1:
            return workers, "threads"
        return workers, self.scheduler


#: Bytes one chunked block task holds per voxel of its box (block + a 40-voxel halo on each side,
#: the refinement's): measured as the peak's growth per extra thread at 128^3 blocks (0.35-0.38
#: GiB for a 208^3 box in the phases and refine stages), rounded up.
BYTES_PER_BOX_VOXEL = 48


def auto_workers(chunk: int, memory_budget: float | None = None, cores: int | None = None) -> int:
    """Threads for the chunked path: one per usable core, at most as many blocks as fit in
    `memory_budget` bytes (each ``BYTES_PER_BOX_VOXEL * (chunk + 80)^3``); at least 1.

    The block work (scipy filters and distance transforms, cc3d, numba kernels, Blosc) releases
    the GIL, so threads share one process's memory and use the cores without copying blocks.
    """
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = max(1, int(cores))
    if memory_budget is not None:
        workers = min(workers, int(memory_budget // (BYTES_PER_BOX_VOXEL * (int(chunk) + 80) ** 3)))
    return max(1, workers)


class RunConfig(_Strict):
    """Everything one run needs; see ``corrtomo config-template``."""

    name: str = "corrtomo run"
    phase_library: str = Field(description="preset name (talc-saxolite, li-slag) or a phase-library file")
    matrix: str | None = "epoxy"
    ct: CTConfig
    sections: list[SectionConfig] = Field(min_length=1)
    overview: OverviewConfig | None = None
    truth: TruthConfig | None = None
    stages: Stages = Stages()
    output: OutputOptions = OutputOptions()
    execution: ExecutionOptions = ExecutionOptions()
    base_dir: str = Field(".", description="(set from the file's location) folder relative paths start from")

    @model_validator(mode="after")
    def _unique_names(self):
        names = [s.name for s in self.sections]
        if len(set(names)) != len(names):
            raise ValueError(f"section names must be unique, got {names}")
        if self.stages.particles.foreground == "unet" and self.stages.phases.method != "unet":
            raise ValueError("stages.particles.foreground: unet needs stages.phases.method: unet (the particle "
                             "head is trained with the phase head)")
        return self

    def resolve(self, path: str) -> Path:
        """An input path from the config, relative to the config file's folder."""
        p = Path(os.path.expanduser(path))
        return p if p.is_absolute() else Path(self.base_dir) / p


def _is_union_tag(part: Any) -> bool:
    """pydantic puts the tried union member in an error's location ('ct.path.str'); not a key."""
    return isinstance(part, str) and (part in ("str", "int", "float", "bool", "list", "dict", "tuple", "none")
                                      or "[" in part or part.startswith(("constrained-", "function-")))


def _first_error(error: ValidationError, source: str) -> InputError:
    item = error.errors()[0]
    key = ".".join(str(k) for k in item["loc"] if not _is_union_tag(k)) or "(top level)"
    message = item["msg"]
    if item["type"] == "extra_forbidden":
        message = "unknown key"
    elif item["type"] == "missing":
        message = "required key is missing"
    return InputError(f"config key {key!r}: {message}", source=source)


def parse_config(data: dict[str, Any], *, base_dir: str | os.PathLike = ".", source: str = "config") -> RunConfig:
    """Validate a configuration mapping; paths are resolved against `base_dir`."""
    if not isinstance(data, dict):
        raise InputError("the config must be a mapping of keys to values", source=source)
    data = dict(data)
    data.setdefault("base_dir", str(Path(base_dir).resolve()))
    try:
        return RunConfig.model_validate(data)
    except ValidationError as error:
        raise _first_error(error, source) from None


def load_config(path: str | os.PathLike) -> RunConfig:
    """Read and validate a YAML (or JSON) run configuration."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError("no such config file", source=path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InputError(f"not valid YAML{where}", source=path) from None
    return parse_config(data, base_dir=path.parent, source=str(path))


def config_template() -> str:
    """An annotated example configuration (the output of ``corrtomo config-template``)."""
    from importlib.resources import files

    return (files(__package__) / "template.yaml").read_text()
