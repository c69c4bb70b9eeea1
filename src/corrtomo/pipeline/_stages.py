"""The pipeline's stages: thin wrappers over the stage packages' Python API.

Order: volume (read or stitch) -> foreground -> sections (EDS -> mineral maps) -> register ->
labels -> train -> phases -> particles -> refine (contacts, inclusions) -> measure -> analysis (liberation, spectra, stereology,
representativeness, summary) -> evaluate (twin truth, when given) -> report.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from .._shared import MATRIX_LABEL, InputError, PlanePose, normalize_spacing, write_json_atomic
from ._config import RunConfig
from ._runner import LOGGER, WORK, Stage

Progress = Callable[[str, int, int], None]


@dataclass
class RunContext:
    """What the stages share: the config, the run folder, results and a progress callback."""

    config: RunConfig
    run_dir: Path
    progress: Progress | None = None
    results: dict[str, dict] = field(default_factory=dict)
    records: list = field(default_factory=list)  # StageRecord of every stage so far in this run
    block_runner: Any = None  # BlockRunner: given (a remote cluster, connected up front) or made on first use
    _runner_logged: bool = False
    _block_records: Path | None = None

    def begin_stage(self, block_records: Path | None) -> None:
        """Keep the records of the running stage's finished blocks in `block_records` (None: stop)."""
        self._block_records = block_records
        if self.block_runner is not None:
            self.block_runner.keep_records(block_records)

    @property
    def resumed_blocks(self) -> int:
        """Blocks of the running stage read back from an interrupted run instead of computed."""
        return 0 if self.block_runner is None else self.block_runner.resumed_blocks

    @property
    def runner(self):
        """Where the chunked stages run their independent blocks (see ``execution.workers``)."""
        if self.block_runner is None:
            from .._shared import BlockRunner

            self.block_runner = BlockRunner(*self.config.execution.runner_settings(available_memory_bytes()))
            self.block_runner.keep_records(self._block_records)
        if not self._runner_logged:
            LOGGER.info("chunked blocks run %s", self.block_runner.description)
            self._runner_logged = True
        return self.block_runner

    def close(self) -> None:
        if self.block_runner is not None:
            self.block_runner.close()
            self.block_runner = None

    def path(self, stage: str, name: str) -> Path:
        return self.run_dir / stage / name

    @property
    def library(self):
        from ..phases import load_phase_library

        source = self.config.phase_library
        candidate = self.config.resolve(source)
        return load_phase_library(candidate if candidate.exists() else source)

    def phase_names(self) -> dict[int, str]:
        library = self.library
        return {int(i): library.name_of(int(i)) for i in library.ids}

    def spacing(self) -> np.ndarray:
        return np.asarray(self.results["volume"]["voxel_size_um"], dtype=float)

    def read(self, stage: str, name: str) -> np.ndarray:
        from ..io import read_volume

        data = np.asarray(read_volume(self.path(stage, name), lazy=False).data)
        return data.astype(np.float32) if _is_stored_integer_ct(stage, name, data) else data

    def lazy(self, stage: str, name: str):
        """A stage's volume as a Zarr array (read block by block); an integer CT reads as float32."""
        from .._shared import Float32Blocks
        from ..io import read_volume

        data = read_volume(self.path(stage, name), lazy=True).data
        return Float32Blocks(data) if _is_stored_integer_ct(stage, name, data) else data

    @property
    def chunked(self) -> bool:
        """Whether this run takes the block-by-block path (decided once, by the volume stage)."""
        return bool(self.results["volume"].get("chunked", False))

    @property
    def chunks(self) -> tuple[int, int, int]:
        return (int(self.config.execution.chunk),) * 3

    def work_array(self, out: Path, name: str, dtype) -> object:
        """A scratch Zarr array in the stage's temporary folder, chunked like the execution.

        An interrupted run of the stage may have left it (with the blocks it finished): it is
        opened as it is when its shape, chunks and dtype fit, else made again.
        """
        import zarr

        shape = tuple(self.results["volume"]["shape"])
        path = out / WORK / name
        if path.exists():
            try:
                array = zarr.open_array(path, mode="r+")
                if (tuple(array.shape) == shape and tuple(array.chunks) == self.chunks
                        and np.dtype(array.dtype) == np.dtype(dtype)):
                    return array
            except Exception:  # a store cut short: start it again
                pass
        return zarr.create_array(path, shape=shape, chunks=self.chunks, dtype=dtype, fill_value=0,
                                 overwrite=True)


def _is_stored_integer_ct(stage: str, name: str, data) -> bool:
    """Whether `data` is the CT that the chunked volume stage kept in its integer dtype."""
    from .._shared import Float32Blocks

    return (stage, name) == ("volume", "ct.ome.zarr") and Float32Blocks.holds(data.dtype)


def _zarr(path: Path, data, spacing, chunk: int) -> None:
    from ..io import write_ome_zarr

    write_ome_zarr(path, data, spacing=spacing, chunks=chunk)  # scratch stores go with the stage (runner)


#: Bytes per voxel the in-memory path holds at its peak (CT float32, foreground, labels, phases,
#: particles uint32, distance map, watershed queues, feature blocks), measured on the demo
#: (0.91 GB peak for 160^3 = 4.1 Mvox, minus a 0.35 GB interpreter + libraries baseline).
IN_MEMORY_BYTES_PER_VOXEL = 140


def available_memory_bytes() -> int:
    """MemAvailable of /proc/meminfo (Linux); else the physical memory."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    import os

    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def free_disk_bytes(path: Path) -> int:
    """Bytes free on the file system of `path` (its nearest existing parent)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return int(shutil.disk_usage(path).free)


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def choose_chunked(config: RunConfig, shape) -> bool:
    """The execution path: as configured, or for ``auto`` chunked when the in-memory path's
    estimated peak (:data:`IN_MEMORY_BYTES_PER_VOXEL` per voxel) exceeds ``memory_fraction`` of
    the available memory."""
    mode = config.execution.mode
    if mode != "auto":
        return mode == "chunked"
    need = IN_MEMORY_BYTES_PER_VOXEL * float(np.prod(shape))
    return need > config.execution.memory_fraction * available_memory_bytes()


# ------------------------------------------------------------------------------------------
# volume
# ------------------------------------------------------------------------------------------


def _config_spacing(config: RunConfig) -> np.ndarray | None:
    value = config.ct.voxel_size_um
    return None if value is None else normalize_spacing(value, 3, name="ct.voxel_size_um")


def _ct_paths(config: RunConfig) -> list[Path]:
    paths = config.ct.path if isinstance(config.ct.path, list) else [config.ct.path]
    return [config.resolve(p) for p in paths]


def open_ct(config: RunConfig, path: Path):
    """Open one CT file lazily; its voxel size must agree with the config's (1 %)."""
    return open_volume(path, _config_spacing(config), "ct.voxel_size_um")


def open_volume(path: Path, given: np.ndarray | None, key: str):
    """Open a volume lazily; its voxel size must agree with config key `key`'s (1 %)."""
    from ..io import read_volume

    try:
        volume = read_volume(path, lazy=True)
    except InputError as error:
        if given is None or "voxel size" not in error.reason:
            raise
        volume = read_volume(path, lazy=True, spacing=given)
    if volume.spacing is None:
        if given is None:
            raise InputError(f"no voxel size in the file; set {key} in the config", source=path)
        volume = read_volume(path, lazy=True, spacing=given)
    elif given is not None and not np.allclose(volume.spacing, given, rtol=0.01):
        raise InputError(f"voxel size {np.round(volume.spacing, 6).tolist()} um in the file differs from "
                         f"{key} {given.tolist()} in the config", source=path)
    if len(volume.shape) != 3:
        raise InputError(f"expected a 3D volume, got shape {volume.shape}", source=path)
    return volume


def _check_disk_for(out: Path, what: str, raw_bytes: int, source) -> None:
    """Stop before hours of work when `what` (`raw_bytes` uncompressed) cannot fit on the disk
    of `out`: a noisy CT does not compress below half its raw size; below the raw size, warn."""
    free = free_disk_bytes(out)
    if free < raw_bytes / 2:
        raise InputError(f"{what} needs {_gb(raw_bytes / 2)} to {_gb(raw_bytes)} of disk, only {_gb(free)} "
                         f"free in {out.parent}; free some space or choose another --out", source=source)
    if free < raw_bytes:
        LOGGER.warning("%s may need up to %s of disk; %s free in %s", what, _gb(raw_bytes), _gb(free), out.parent)


def _check_input_chunks(data, config: RunConfig, path: Path) -> None:
    """Stop before work when one chunk of the input store cannot be read within the memory budget
    (every block read decompresses whole chunks; a store written as one chunk, or as slabs of
    the whole volume, would be read whole for every block)."""
    largest = [max(c) for c in data.chunks]
    need = math.prod(largest) * max(np.dtype(data.dtype).itemsize, 4)  # read, then converted to float32
    budget = config.execution.memory_fraction * available_memory_bytes() / 4
    if need > budget:
        raise InputError(f"one chunk of the store ({' x '.join(map(str, largest))} voxels) needs "
                         f"{need / 1e9:.2f} GB, more than the {budget / 1e9:.2f} GB a block may use; rechunk it "
                         f"(e.g. {config.execution.chunk}^3 chunks) or raise execution.memory_fraction", source=path)


def _run_volume(context: RunContext, out: Path) -> dict:
    config = context.config
    paths = _ct_paths(config)
    volumes = [open_ct(config, p) for p in paths]
    spacing = normalize_spacing(volumes[0].spacing, 3)
    chunked = choose_chunked(config, volumes[0].shape) if len(volumes) == 1 else False
    if chunked:
        import dask.array as da

        from ..io import check_finite

        data = volumes[0].data
        data = data if isinstance(data, da.Array) else da.from_array(data, chunks=config.execution.chunk)
        _check_input_chunks(data, config, paths[0])
        check_finite(data, source=paths[0])
        # an integer CT of <= 16 bits (uint16 as scanners write it) is stored as it is: half the
        # disk of float32, and the stages read its blocks as float32 (exact, see Float32Blocks)
        from .._shared import Float32Blocks

        if not Float32Blocks.holds(data.dtype):
            data = data.astype(np.float32)
        _check_disk_for(out, "the CT copy", math.prod(data.shape) * data.dtype.itemsize, paths[0])
        _zarr(out / "ct.ome.zarr", data, spacing, config.output.chunk)
        return {"shape": list(data.shape), "voxel_size_um": spacing.tolist(), "dtype": str(data.dtype),
                "stitched": False, "chunked": True}
    if len(volumes) == 1:
        data = np.asarray(volumes[0].data)
        info: dict[str, Any] = {"stitched": False}
    else:
        from ..register import stitch_volumes

        result = stitch_volumes([np.asarray(v.data) for v in volumes], spacing=spacing,
                                max_rotation_deg=config.stages.stitch.max_rotation_deg, progress=context.progress)
        data = result.volume
        info = {"stitched": True, "pieces": len(volumes)}
    from ..io import check_finite

    check_finite(data, source=paths[0])
    data = data.astype(np.float32, copy=False)
    _zarr(out / "ct.ome.zarr", data, spacing, config.output.chunk)
    return {"shape": list(data.shape), "voxel_size_um": spacing.tolist(), "dtype": str(data.dtype),
            "chunked": False, **info}


# ------------------------------------------------------------------------------------------
# foreground
# ------------------------------------------------------------------------------------------


def _run_foreground(context: RunContext, out: Path) -> dict:
    from ..segment import detect_pillar, foreground_mask

    options = context.config.stages.foreground
    spacing = context.spacing()
    if context.chunked:
        from ..chunked import foreground_mask_chunked

        work = context.work_array(out, "foreground", np.uint8)
        # the smoothed CT is stored once for the later passes (half the time) when its raw
        # float32 size fits on the disk, else smoothed again in each pass: same result
        smoothed_bytes = 4 * math.prod(work.shape)
        store = (out / WORK / "smoothed").exists() or (free := free_disk_bytes(out)) >= smoothed_bytes
        if not store:
            LOGGER.info("foreground: the smoothed CT (%s as float32) would not fit in the %s free; it is "
                        "computed again in each pass instead of stored", _gb(smoothed_bytes), _gb(free))
        _, info = foreground_mask_chunked(context.lazy("volume", "ct.ome.zarr"), spacing=spacing,
                                          chunks=context.chunks, out=work, method=options.method,
                                          pillar=options.pillar, edge_fraction=options.edge_fraction,
                                          fill_holes=options.fill_holes, return_info=True,
                                          scratch=context.work_array(out, "smoothed", np.float32) if store else None,
                                          mask_scratch=context.work_array(out, "mask", np.uint8),
                                          runner=context.runner)
        pillar = info["pillar"]
        fraction = float(_block_sum(work) / np.prod(work.shape))
        _zarr(out / "foreground.ome.zarr", work, spacing, context.config.output.chunk)
        return {"foreground_fraction": fraction, "pillar": _write_pillar(out, pillar), "smoothing_stored": store}
    ct = context.read("volume", "ct.ome.zarr")
    pillar = detect_pillar(ct, spacing=spacing) if options.pillar else None
    mask = foreground_mask(ct, spacing=spacing, method=options.method, pillar=pillar if pillar else False,
                           edge_fraction=options.edge_fraction, fill_holes=options.fill_holes)
    _zarr(out / "foreground.ome.zarr", mask.astype(np.uint8), spacing, context.config.output.chunk)
    return {"foreground_fraction": float(mask.mean()), "pillar": _write_pillar(out, pillar)}


def _write_pillar(out: Path, pillar) -> dict | None:
    info = None if not pillar else {"center_yx": [float(v) for v in pillar.center_yx],
                                    "radius_voxels": float(pillar.radius_voxels)}
    write_json_atomic(out / "pillar.json", {"pillar": info})
    return info


def _block_sum(array, minlength: int | None = None) -> np.ndarray:
    """Sum (or with `minlength`, bincount) of an integer Zarr array, chunk by chunk."""
    import dask.array as da

    lazy = da.from_zarr(array) if not isinstance(array, (np.ndarray, da.Array)) else da.asarray(array)
    if minlength is None:
        return np.asarray(lazy.sum(dtype=np.int64).compute())
    return np.asarray(da.bincount(lazy.ravel().astype(np.int64), minlength=minlength).compute())


def load_pillar(context: RunContext):
    import json

    from ..segment import Pillar

    info = json.loads(context.path("foreground", "pillar.json").read_text())["pillar"]
    return None if info is None else Pillar(center_yx=tuple(info["center_yx"]), radius_voxels=info["radius_voxels"])


# ------------------------------------------------------------------------------------------
# sections: EDS maps -> mineral maps
# ------------------------------------------------------------------------------------------


def _section_inputs(config: RunConfig) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for section in config.sections:
        for key in ("eds", "mineral_map", "bse"):
            value = getattr(section, key)
            if value is not None:
                files[f"{section.name}.{key}"] = config.resolve(value)
    library = config.resolve(config.phase_library)
    if library.exists():
        files["phase_library"] = library
    return files


def _run_sections(context: RunContext, out: Path) -> dict:
    from ..io import read_eds_maps, read_image2d, read_mineral_map, write_image2d

    config = context.config
    library = context.library
    result = {}
    for section in config.sections:
        folder = out / section.name
        folder.mkdir(parents=True)
        bse = read_image2d(config.resolve(section.bse)) if section.bse else None
        if section.eds is not None:
            from ..sem import classify_eds

            options = config.stages.eds
            mineral = classify_eds(read_eds_maps(config.resolve(section.eds)), library=library, matrix=config.matrix,
                                   bse=bse, method=options.method, bin_size=options.bin_size,
                                   smooth_sigma_px=options.smooth_sigma_px, min_confidence=options.min_confidence,
                                   rng=options.seed)
            ids = mineral.phase_ids.astype(np.uint8)
            area = dict(mineral.area_fractions)
        else:
            path = config.resolve(section.mineral_map)
            ids = np.asarray(read_mineral_map(path, library=library)).astype(np.uint8)
            if not (ids == MATRIX_LABEL).any():  # plain phase-id maps use 0 for the matrix
                ids = np.where(ids == 0, MATRIX_LABEL, ids).astype(np.uint8)
            minerals = ids[(ids > 0) & (ids != MATRIX_LABEL)]
            area = {library.name_of(int(i)): float((minerals == i).mean()) for i in np.unique(minerals)}
        if bse is not None and bse.shape != ids.shape:
            raise InputError(f"BSE shape {bse.shape} differs from the mineral map's {ids.shape}",
                             source=config.resolve(section.bse))
        if not ((ids > 0) & (ids != MATRIX_LABEL)).any():
            raise InputError("no pixel was classified as a mineral of the phase library",
                             source=config.resolve(section.eds or section.mineral_map))
        write_image2d(folder / "mineral_map.tif", ids)
        result[section.name] = {"shape": list(ids.shape), "area_fractions": area,
                                "classified": float((ids > 0).mean())}
    return result


def read_mineral_map_ids(context: RunContext, name: str) -> np.ndarray:
    from ..io import read_image2d

    return np.asarray(read_image2d(context.path("sections", f"{name}/mineral_map.tif"))).astype(np.uint8)


# ------------------------------------------------------------------------------------------
# register
# ------------------------------------------------------------------------------------------


def _register_inputs(config: RunConfig) -> dict[str, Path]:
    return {f"{s.name}.pose": config.resolve(s.pose) for s in config.sections if s.pose}


def _run_register(context: RunContext, out: Path) -> dict:
    from ..io import read_image2d
    from ..register import RegistrationHint, register_section, write_overlay

    config = context.config
    options = config.stages.registration
    spacing = context.spacing()
    # the search needs the whole CT; sections with a given pose read only the box of their plane
    searched = any(not section.pose for section in config.sections)
    ct = context.read("volume", "ct.ome.zarr") if searched else context.lazy("volume", "ct.ome.zarr")
    result = {}
    for section in config.sections:
        folder = out / section.name
        folder.mkdir(parents=True)
        ids = read_mineral_map_ids(context, section.name)
        if section.pose:
            pose = PlanePose.load(config.resolve(section.pose))
            entry = {"method": "given", "score": pose.score}
            if not searched:  # the overlay samples the plane from the box around it
                box, local = _plane_box(ct, pose, ids.shape)
                pose.save(folder / "pose.json")
                write_overlay(folder / "overlay.png", box, np.where(ids == MATRIX_LABEL, 0, ids), local,
                              title=f"{section.name}: score {entry.get('score') or float('nan'):.3f}")
                result[section.name] = entry
                continue
        else:
            if options.source == "bse" and section.bse:
                image, mask, labels = read_image2d(config.resolve(section.bse)), None, False
            else:
                image = np.where(ids == MATRIX_LABEL, 0, ids).astype(np.uint8)
                mask, labels = ids > 0, True
            hint = None
            if section.hint is not None:
                hint = RegistrationHint(**section.hint.model_dump())
            found = register_section(ct, image, voxel_size_um=float(spacing.min()),
                                     pixel_size_um=section.pixel_size_um, section_mask=mask, hint=hint,
                                     scale_tolerance=options.scale_tolerance, labels=labels,
                                     normal_spacing_deg=options.normal_spacing_deg,
                                     n_candidates=options.n_candidates, min_z_score=options.min_z_score,
                                     rng=options.seed, progress=context.progress)
            confidence = float(found.pose.extra.get("confidence", 1.0)) if found.pose.extra else 1.0
            if not found.confident or confidence < options.min_confidence:
                raise InputError(
                    f"section {section.name!r}: registration failed (score {found.score:.3f}, runner-up "
                    f"{found.runner_up_score:.3f}, z {found.diagnostics.get('z_score', float('nan')):.1f}); "
                    "give a hint or a pose in the config",
                    source=config.resolve(section.eds or section.mineral_map))
            pose = found.pose
            entry = {"method": pose.method, "score": float(found.score), "runner_up_score": float(found.runner_up_score),
                     "confidence": confidence}
        pose.save(folder / "pose.json")
        write_overlay(folder / "overlay.png", ct, np.where(ids == MATRIX_LABEL, 0, ids), pose,
                      title=f"{section.name}: score {entry.get('score') or float('nan'):.3f}")
        result[section.name] = entry
    return result


def _plane_box(volume, pose: PlanePose, shape) -> tuple[np.ndarray, PlanePose]:
    """The part of `volume` that a section plane of `shape` (rows, columns) samples, read as a
    box (plus one voxel for linear interpolation), and the pose relative to that box."""
    from dataclasses import replace

    rows, columns = shape
    corners = np.array([pose.origin + c * pose.u + r * pose.v
                        for r in (0, rows - 1) for c in (0, columns - 1)])
    size = np.asarray(volume.shape)
    low = np.clip(np.floor(corners.min(axis=0)).astype(int) - 1, 0, size - 1)
    high = np.clip(np.ceil(corners.max(axis=0)).astype(int) + 2, low + 1, size)
    box = np.asarray(volume[tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))], dtype=np.float32)
    return box, replace(pose, origin=pose.origin - low)


def load_pose(context: RunContext, name: str) -> PlanePose:
    return PlanePose.load(context.path("register", f"{name}/pose.json"))


# ------------------------------------------------------------------------------------------
# labels, training, phases
# ------------------------------------------------------------------------------------------


def _run_labels(context: RunContext, out: Path) -> dict:
    from ..register import merge_sparse_labels, transfer_labels

    config = context.config
    shape = tuple(context.results["volume"]["shape"])
    options = config.stages.labels
    parts = [transfer_labels(read_mineral_map_ids(context, s.name), load_pose(context, s.name), shape,
                             boundary_margin_px=options.boundary_margin_px,
                             max_plane_distance=options.max_plane_distance) for s in config.sections]
    merged = merge_sparse_labels(parts) if len(parts) > 1 else parts[0]
    if context.chunked:  # labels lie on a few planes: write them point-wise into a sparse store
        dense = context.work_array(out, "labels", np.uint8)
        if len(merged):
            dense.vindex[tuple(merged.indices.T)] = merged.values
    else:
        dense = np.zeros(shape, dtype=np.uint8)
        dense[tuple(merged.indices.T)] = merged.values
    _zarr(out / "labels.ome.zarr", dense, context.spacing(), config.output.chunk)
    names = context.phase_names()
    counts = {("matrix" if int(c) == MATRIX_LABEL else names.get(int(c), str(int(c)))): int(n)
              for c, n in zip(*np.unique(merged.values, return_counts=True), strict=True)}
    missing = [n for n in names.values() if n not in counts]
    if missing:
        LOGGER.warning("labels: no labelled voxel of %s; the classifier cannot find these phases", ", ".join(missing))
    return {"labelled_voxels": counts, "missing_phases": missing}


def _run_train(context: RunContext, out: Path) -> dict:
    from ..segment import save_classifier, train_phase_classifier

    options = context.config.stages.phases
    if context.chunked:  # features are computed block by block around the labelled voxels
        ct, labels = context.lazy("volume", "ct.ome.zarr"), context.lazy("labels", "labels.ome.zarr")
        foreground = context.lazy("foreground", "foreground.ome.zarr")
        present = {int(c) for c in np.flatnonzero(_block_sum(labels, minlength=256))}
    else:
        ct = context.read("volume", "ct.ome.zarr")
        labels = context.read("labels", "labels.ome.zarr")
        foreground = context.read("foreground", "foreground.ome.zarr").astype(bool)
        present = {int(c) for c in np.unique(labels)}
    names = context.phase_names()
    present -= {0, MATRIX_LABEL}
    if options.method == "unet":
        return _train_unet(context, out, ct, labels, {i: n for i, n in names.items() if i in present})
    extra = {}
    if options.features is not None:
        extra["features"] = tuple(options.features)
    if options.scales_um is not None:
        extra["scales_um"] = tuple(options.scales_um)
    classifier = train_phase_classifier(
        ct, labels, spacing=context.spacing(), class_names={i: n for i, n in names.items() if i in present},
        foreground=foreground, model=options.method, n_estimators=options.n_estimators, rng=options.seed,
        progress=context.progress, **extra)
    save_classifier(classifier, out / "phase_classifier.skops")
    importances = classifier.feature_importances()
    top = dict(sorted(importances.items(), key=lambda item: -item[1])[:8])
    return {"classes": [names[i] for i in sorted(present)], "top_features": top}


UNET_MODEL = "phase_unet.unet"
UNET_MATRIX = "unet_matrix.ome.zarr"


def _unet_phases(context: RunContext, out: Path, foreground) -> tuple[Any, dict]:
    """Raw phases (and, for ``particles.foreground: unet``, the particle head's matrix
    probability, ``unet_matrix.ome.zarr``, uint8 ``round(255 p)``) of the U-Net."""
    from ..segment.unet import load_unet, predict_unet

    options = context.config.stages.phases.unet
    spacing = context.spacing()
    model = load_unet(context.path("train", UNET_MODEL), spacing=spacing, phase_names=context.phase_names())
    want_particles = context.config.stages.particles.foreground == "unet"
    if context.chunked:
        ct = context.lazy("volume", "ct.ome.zarr")
        raw = context.work_array(out, "raw", np.uint8)
        matrix = context.work_array(out, "matrix", np.uint8) if want_particles else None
        block = context.chunks
    else:
        ct = context.read("volume", "ct.ome.zarr")
        raw = matrix = None
        block = tuple(int(n) for n in ct.shape)  # one block: each window runs once
    prediction = predict_unet(model, ct, spacing=spacing, foreground=foreground, out_phases=raw,
                              out_matrix=matrix, matrix=want_particles, block_shape=block,
                              overlap=options.overlap, device=options.device, progress=context.progress,
                              runner=context.runner if context.chunked else None)
    extra: dict[str, Any] = {"device": str(prediction.device), "window": list(prediction.window)}
    if want_particles:
        _zarr(out / UNET_MATRIX, prediction.matrix, spacing, context.config.output.chunk)
        extra["matrix_threshold"] = model.matrix_threshold
    return prediction.phases, extra


def _train_unet(context: RunContext, out: Path, ct, labels, names: dict[int, str]) -> dict:
    """Train the 3D U-Net from the same sparse labels the forest uses and save it in the stage folder."""
    from ..segment.unet import UNetTrainingSettings, save_unet, train_unet

    options = context.config.stages.phases
    unet = options.unet
    settings = UNetTrainingSettings(patch_shape=unet.patch, base_channels=unet.base_channels,
                                    levels=unet.levels, max_steps=unet.max_steps, batch_size=unet.batch_size,
                                    learning_rate=unet.learning_rate, patience=unet.patience, seed=options.seed,
                                    device=unet.device, intensity_scale=unet.intensity_scale,
                                    intensity_shift=unet.intensity_shift, noise_sigma=unet.noise_sigma)
    model = train_unet(ct, labels, spacing=context.spacing(), phase_names=names, settings=settings,
                       progress=context.progress)
    save_unet(model, out / UNET_MODEL)
    training = model.training
    return {"classes": [n for n in model.class_names if n != "matrix"], "method": "unet",
            "steps": training.get("steps"), "best_step": training.get("best_step"),
            "device": training.get("device"), "seconds": training.get("seconds")}


def _run_phases(context: RunContext, out: Path) -> dict:
    from ..segment import load_classifier

    options = context.config.stages.phases
    spacing = context.spacing()
    chunk = context.config.output.chunk
    depth_um = options.rim_voxels * float(spacing.min())
    names = context.phase_names()
    extra: dict[str, Any] = {}
    if context.chunked:  # block by block: phases only (no probability or uncertainty volumes)
        from ..chunked import correct_rim_phases_chunked

        foreground = context.lazy("foreground", "foreground.ome.zarr")
        if options.method == "unet":
            raw, extra = _unet_phases(context, out, foreground)
        else:
            classifier = load_classifier(context.path("train", "phase_classifier.skops"))
            raw = context.work_array(out, "raw", np.uint8)
            classifier.predict(context.lazy("volume", "ct.ome.zarr"), spacing=spacing, foreground=foreground,
                               out=raw, block_shape=context.chunks, progress=context.progress,
                               runner=context.runner)
        phases = raw
        if depth_um:
            phases = context.work_array(out, "phases", np.uint8)
            correct_rim_phases_chunked(raw, foreground, spacing=spacing, depth_um=depth_um, out=phases,
                                       runner=context.runner)
        counts = _block_sum(phases, minlength=256)
        _zarr(out / "phases.ome.zarr", phases, spacing, chunk)
        mean_uncertainty = None
    else:
        foreground = context.read("foreground", "foreground.ome.zarr").astype(bool)
        mean_uncertainty = None
        if options.method == "unet":
            phases, extra = _unet_phases(context, out, foreground)
        else:
            classifier = load_classifier(context.path("train", "phase_classifier.skops"))
            prediction = classifier.predict_proba(context.read("volume", "ct.ome.zarr"), spacing=spacing,
                                                  foreground=foreground, progress=context.progress)
            phases = prediction.phases
            _zarr(out / "uncertainty.ome.zarr", prediction.uncertainty.astype(np.float32), spacing, chunk)
            mean_uncertainty = float(prediction.uncertainty[foreground].mean()) if foreground.any() else 0.0
        if depth_um:
            from ..segment import correct_rim_phases

            phases = correct_rim_phases(phases, foreground, spacing=spacing, depth_um=depth_um)
        _zarr(out / "phases.ome.zarr", phases, spacing, chunk)
        counts = np.bincount(np.asarray(phases).ravel(), minlength=256)
    if context.config.output.tiff:
        from ..io import read_volume, write_tiff

        write_tiff(out / "phases.tif", read_volume(out / "phases.ome.zarr", lazy=True).data, spacing=spacing)
    total = max(int(counts[1:].sum()), 1)
    return {"volume_fractions": {names[i]: float(counts[i] / total) for i in names},
            "mean_uncertainty": mean_uncertainty, **extra}


# ------------------------------------------------------------------------------------------
# particles, measure, analysis
# ------------------------------------------------------------------------------------------


class _HeadMatrix:
    """A read-only float32 view of the U-Net particle head's matrix probability (stored as
    uint8 ``round(255 p)``), which :func:`~corrtomo.segment.foreground_mask` smooths before its
    threshold."""

    dtype = np.dtype(np.float32)

    def __init__(self, head) -> None:
        self.head = head
        self.shape = tuple(int(n) for n in head.shape)
        self.ndim = len(self.shape)
        self.chunks = getattr(head, "chunks", None)

    def __getitem__(self, index) -> np.ndarray:
        from ..chunked import read_block

        return np.asarray(read_block(self.head, index)).astype(np.float32) / np.float32(255.0)


def _particle_voxels(context: RunContext, out: Path):
    """The particle voxels: the CT foreground, or the U-Net's particle head cleaned as it is.

    The head's matrix probability is smoothed with the foreground's one-voxel Gaussian (as the
    CT is before its threshold; unsmoothed, a ragged surface splits particles at its notches)
    and thresholded at the model's calibrated ``matrix_threshold`` (the balanced-accuracy
    optimum on held-out labelled voxels, :func:`corrtomo.segment.unet.matrix_threshold_from_votes`),
    then clipped to the pillar, its cavities filled and its dust removed with the foreground
    stage's options. ``bench/bench_particle_head.py`` compares the rules: with a fixed 0.5 the
    head gives particle F1 0.940 on li-slag but 0.427 on talc-saxolite, whose class-weighted
    head keeps the matrix probability below 0.5 in much of the matrix.
    """
    if context.config.stages.particles.foreground != "unet":
        if context.chunked:
            return context.lazy("foreground", "foreground.ome.zarr")
        return context.read("foreground", "foreground.ome.zarr").astype(bool)
    options = context.config.stages.foreground
    pillar = load_pillar(context)
    pillar = False if pillar is None else pillar
    spacing = context.spacing()
    threshold = float(context.results["phases"]["matrix_threshold"])  # the model's, recorded by the phases stage
    if context.chunked:
        from ..chunked import foreground_mask_chunked

        voxels = context.work_array(out, "unet_foreground", np.uint8)
        foreground_mask_chunked(context.lazy("volume", "ct.ome.zarr"), spacing=spacing, chunks=context.chunks,
                                out=voxels, probabilities=_HeadMatrix(context.lazy("phases", UNET_MATRIX)),
                                matrix_threshold=threshold, pillar=pillar, fill_holes=options.fill_holes,
                                runner=context.runner,
                                mask_scratch=context.work_array(out, "unet_first_mask", np.uint8))
        return voxels
    from ..segment import foreground_mask

    head = context.read("phases", UNET_MATRIX)  # the image is not read with probabilities
    return foreground_mask(head, spacing=spacing, probabilities=_HeadMatrix(head)[...], matrix_threshold=threshold,
                           pillar=pillar, fill_holes=options.fill_holes)


def _run_particles(context: RunContext, out: Path) -> dict:
    options = context.config.stages.particles
    spacing = context.spacing()
    if context.chunked:
        from ..chunked import separate_particles_chunked

        labels = context.work_array(out, "particles", np.uint32)
        segmentation = separate_particles_chunked(
            _particle_voxels(context, out), spacing=spacing, chunks=context.chunks, out=labels,
            method=options.method, h_um=options.h_um, resolution_um=options.resolution_um,
            merge_oversplit=options.merge_oversplit, merge_ratio=options.merge_ratio,
            pillar=load_pillar(context), runner=context.runner,
            scratch=context.work_array(out, "local_labels", np.uint32))
        extra = {"exact": bool(segmentation.exact), "n_cut_particles": int(segmentation.n_cut_particles)}
    else:
        from ..segment import separate_particles

        segmentation = separate_particles(_particle_voxels(context, out),
                                          spacing=spacing, method=options.method, h_um=options.h_um,
                                          resolution_um=options.resolution_um,
                                          merge_oversplit=options.merge_oversplit, merge_ratio=options.merge_ratio,
                                          pillar=load_pillar(context))
        labels, extra = segmentation.labels, {}
    np.save(out / "touches_border.npy", np.asarray(segmentation.touches_border, dtype=bool))
    _zarr(out / "particles.ome.zarr", labels, spacing, context.config.output.chunk)
    if context.config.output.tiff:
        from ..io import read_volume, write_tiff

        write_tiff(out / "particles.tif", read_volume(out / "particles.ome.zarr", lazy=True).data, spacing=spacing)
    return {"n_particles": int(segmentation.n_particles),
            "n_touching_border": int(np.asarray(segmentation.touches_border).sum()), **extra}


# the phase volume every stage after the refinement reads
PHASES = ("refine", "phases.ome.zarr")


def _run_refine(context: RunContext, out: Path) -> dict:
    from ..segment import InclusionSettings

    options = context.config.stages.refine
    spacing = context.spacing()
    names = context.phase_names()
    settings = InclusionSettings(blur_sigma_voxels=options.blur_sigma_voxels, false_alarms=options.false_alarms,
                                 small_grain_voxels=options.small_grain_voxels)
    if context.chunked:
        from ..chunked import refine_phases_chunked

        refined = context.work_array(out, "phases", np.uint8)
        refined, report = refine_phases_chunked(
            context.lazy("volume", "ct.ome.zarr"), context.lazy("phases", "phases.ome.zarr"),
            context.lazy("particles", "particles.ome.zarr"), contact_voxels=options.contact_voxels,
            inclusions=options.inclusions, settings=settings, chunks=context.chunks, out=refined,
            scratch=context.work_array(out, "contact", np.uint8), runner=context.runner)
        counts = _block_sum(refined, minlength=256)
    else:
        from ..segment import refine_phases

        refined, report = refine_phases(context.read("volume", "ct.ome.zarr"), context.read("phases", "phases.ome.zarr"),
                                        context.read("particles", "particles.ome.zarr"),
                                        contact_voxels=options.contact_voxels, inclusions=options.inclusions,
                                        settings=settings)
        counts = np.bincount(refined.ravel(), minlength=256)
    _zarr(out / "phases.ome.zarr", refined, spacing, context.config.output.chunk)
    if context.config.output.tiff:
        from ..io import read_volume, write_tiff

        write_tiff(out / "phases.tif", read_volume(out / "phases.ome.zarr", lazy=True).data, spacing=spacing)
    total = max(int(counts[1:].sum()), 1)
    result: dict[str, Any] = {"volume_fractions": {names[i]: float(counts[i] / total) for i in names}}
    if report is not None:
        model = report.model
        result.update({
            "blur_sigma_voxels": model.blur_sigma_voxels, "threshold_z": model.threshold_z,
            "noise_sd": model.spread, "n_inclusions": report.n_inclusions, "n_relabelled": report.n_relabelled,
            "relabelled": _transitions(report.relabelled, names),
            "n_grains_reclassified": report.n_grains_reclassified,
            "grain_voxels": _transitions(report.grain_voxels, names)})
    return result


def _transitions(counts: np.ndarray, names: dict[int, str]) -> dict[str, int]:
    """``{"old -> new": voxels}`` of a (256, 256) count matrix."""
    old, new = np.nonzero(counts)
    return {f"{names.get(int(a), a)} -> {names.get(int(b), b)}": int(counts[a, b]) for a, b in zip(old, new, strict=True)}


def _run_measure(context: RunContext, out: Path) -> dict:
    from ..measure import grain_table, label_grains, particle_table

    names = context.phase_names()
    spacing = context.spacing()
    if context.chunked:  # block by block: neither volume is read whole
        from ..chunked import grain_table_chunked, particle_table_chunked

        lazy_particles = context.lazy("particles", "particles.ome.zarr")
        lazy_phases = context.lazy(*PHASES)
        table = particle_table_chunked(lazy_particles, lazy_phases, spacing=spacing, phase_names=names,
                                       chunks=context.chunks, runner=context.runner)
        grains_df = grain_table_chunked(lazy_particles, lazy_phases, spacing=spacing, phase_names=names,
                                        chunks=context.chunks, runner=context.runner)
    else:
        particles = context.read("particles", "particles.ome.zarr")
        phases = context.read(*PHASES)
        grains = label_grains(particles, phases)
        table = particle_table(particles, phases, spacing=spacing, phase_names=names, grains=grains)
        grains_df = grain_table(particles, phases, spacing=spacing, phase_names=names, grains=grains)
    # the pillar wall cuts particles as the volume border does
    border = np.load(context.path("particles", "touches_border.npy"))
    labels = table["label"].to_numpy()
    inside = labels < border.size
    table.loc[inside, "touches_border"] = table.loc[inside, "touches_border"].to_numpy(bool) | border[labels[inside]]
    _table(table, out / "particles")
    _table(grains_df, out / "grains")
    return {"n_particles": len(table), "n_grains": len(grains_df)}


def _table(frame, stem: Path) -> None:
    """A table as Parquet (typed, fast) and CSV (for spreadsheets), side by side."""
    frame.to_parquet(stem.with_suffix(".parquet"), index=False)
    frame.to_csv(stem.with_suffix(".csv"), index=False)


def _piece_size(context: RunContext) -> np.ndarray:
    given = context.config.stages.analysis.piece_size_um
    if given is not None:
        return normalize_spacing(given, 3, name="stages.analysis.piece_size_um")
    return np.asarray(context.results["volume"]["shape"], dtype=float) * context.spacing() / 4.0


def _sections_and_pieces_chunked(context: RunContext, table, sections: dict):
    """Stereology and representativeness with no volume read whole: the 3D side and the pieces
    come from the measured particle table, the 2D side reads only the sampled planes (Zarr)."""
    from ..liberation import composition_from_table, stereology_comparison
    from ..stats import representativeness_from_table

    particles = context.lazy("particles", "particles.ome.zarr")
    phases = context.lazy(*PHASES)
    shape = tuple(int(n) for n in particles.shape)
    # border from the boxes (volume faces only), as composition_table finds it in memory: the
    # table's flag also holds the pillar wall
    composition = composition_from_table(table, spacing=sections["spacing"], phase_names=sections["phase_names"],
                                         volume_shape=shape)
    stereology = stereology_comparison(particles, phases, composition=composition, **sections)
    pieces = representativeness_from_table(table, volume_shape=shape, spacing=sections["spacing"],
                                           piece_size_um=_piece_size(context),
                                           esd_bins_um=context.config.stages.analysis.size_bins_um)
    return stereology, pieces


def _run_analysis(context: RunContext, out: Path) -> dict:
    import pandas as pd

    from ..liberation import (
        grain_particle_volume,
        liberation_spectrum,
        liberation_table,
        measurement_summary,
        size_distribution,
        stereology_comparison,
    )
    from ..stats import representativeness

    options = context.config.stages.analysis
    table = pd.read_parquet(context.path("measure", "particles.parquet"))
    grains_df = pd.read_parquet(context.path("measure", "grains.parquet"))
    library = context.library
    names = [n for n in context.phase_names().values() if f"vf_{n}" in table.columns]
    densities = {n: float(library.by_name(n).density) for n in names}
    common = {"exclude_border": not options.include_border}
    liberation = liberation_table(table, phases=names, threshold=options.threshold, size_bins_um=options.size_bins_um,
                                  n_bootstrap=options.bootstrap, rng=options.seed, **common)
    _table(liberation, out / "liberation")
    _table(liberation_spectrum(table, phases=names, **common), out / "liberation_spectrum")
    _table(size_distribution(table, densities=densities, phases=names, size_bins_um=options.size_bins_um,
                             **common), out / "size_distribution")
    _table(pd.concat([grain_particle_volume(grains_df, table, n, **common).assign(phase=n) for n in names],
                     ignore_index=True), out / "grain_particle_volume")
    spacing = context.spacing()
    sections = {"spacing": spacing, "phase_names": context.phase_names(), "threshold": options.threshold,
                "size_bins_um": options.size_bins_um, "n_planes": options.stereology_planes, "rng": options.seed,
                **common}
    if context.chunked:
        stereology, pieces = _sections_and_pieces_chunked(context, table, sections)
    else:
        particles = context.read("particles", "particles.ome.zarr")
        phases = context.read(*PHASES)
        stereology = stereology_comparison(particles, phases, **sections)
        pieces = representativeness(particles, spacing=spacing, piece_size_um=_piece_size(context),
                                    esd_bins_um=options.size_bins_um)
    _table(stereology, out / "stereology")
    _table(pieces, out / "representativeness")
    summary = measurement_summary(table, liberation, phases=names, spacing=spacing, threshold=options.threshold,
                                  include_border=options.include_border, n_grains=len(grains_df))
    summary["name"] = context.config.name
    write_json_atomic(out / "summary.json", summary)
    return {"liberation_degree": summary["liberation_degree"], "n_particles": summary["n_particles"]}


# ------------------------------------------------------------------------------------------
# overview: locate the CT inside a coarser scan and compare particle sizes across scales
# ------------------------------------------------------------------------------------------


def overview_spacing(config: RunConfig) -> np.ndarray | None:
    value = config.overview.voxel_size_um
    return None if value is None else normalize_spacing(value, 3, name="overview.voxel_size_um")


def _run_overview(context: RunContext, out: Path) -> dict:
    from ..register import moving_region_mask, register_volume, write_volume_overlay
    from ..segment import foreground_mask, pillar_mask, separate_particles
    from ..stats import cross_scale_psd

    config = context.config
    path = config.resolve(config.overview.path)
    overview = open_volume(path, overview_spacing(config), "overview.voxel_size_um")
    fixed = np.asarray(overview.data, dtype=np.float32)
    fixed_spacing = normalize_spacing(overview.spacing, 3)
    ct = context.read("volume", "ct.ome.zarr")
    spacing = context.spacing()
    if any(f * fs < m * ms for f, fs, m, ms in zip(fixed.shape, fixed_spacing, ct.shape, spacing, strict=True)):
        raise InputError(f"the overview ({fixed.shape} voxels of {fixed_spacing.tolist()} um) is smaller than the CT "
                         f"volume ({ct.shape} of {spacing.tolist()} um); it must contain it", source=path)
    found = register_volume(fixed, ct, fixed_spacing=fixed_spacing, moving_spacing=spacing,
                            spin_step_deg=config.overview.spin_step_deg, fixed_source=path, moving_source="ct")
    found.save(out / "transform.json")
    write_volume_overlay(out / "overlay.png", fixed, ct, found)
    if not found.confident:
        LOGGER.warning("overview: the CT volume was not found confidently inside %s (score %.3f, runner-up %.3f); "
                       "the cross-scale comparison uses the best match anyway", path, found.score, found.runner_up)
    # particles of the overview, segmented like the CT's (no pillar: an overview is a whole bar)
    options = config.stages.particles
    resolution = config.overview.resolution_um
    mask = foreground_mask(fixed, spacing=fixed_spacing, method=config.stages.foreground.method, pillar=False)
    particles = separate_particles(mask, spacing=fixed_spacing, method=options.method, resolution_um=resolution).labels
    _zarr(out / "particles.ome.zarr", particles, fixed_spacing, config.output.chunk)
    pillar = load_pillar(context)
    radius = None if pillar is None else float(pillar.radius_voxels)
    region = moving_region_mask(fixed.shape, found.transform, ct.shape, radius_voxels=radius)
    nano_mask = np.broadcast_to(pillar_mask(ct.shape[1:], pillar)[None], ct.shape) if pillar is not None else None
    table = cross_scale_psd(context.read("particles", "particles.ome.zarr"), particles,
                            nano_spacing_um=float(spacing.min()), micro_spacing_um=float(fixed_spacing.min()),
                            region_mask=region, nano_mask=nano_mask, esd_bins_um=config.stages.analysis.size_bins_um,
                            nano_resolution_um=options.resolution_um, micro_resolution_um=resolution)
    summary = table.attrs.get("summary", {})
    table.attrs = {}
    _table(table, out / "cross_scale")
    write_json_atomic(out / "cross_scale_summary.json", summary)
    return {"confident": bool(found.confident), "score": float(found.score), "scale": float(found.scale),
            "overview_voxel_size_um": fixed_spacing.tolist(), "overview_shape": list(fixed.shape),
            "n_overview_particles": int(particles.max()), "summary": summary}


# ------------------------------------------------------------------------------------------
# evaluate (twin truth) and report
# ------------------------------------------------------------------------------------------


def _truth_inputs(config: RunConfig) -> dict[str, Path]:
    truth = config.truth
    if truth is None:
        return {}
    files = {f"pose.{name}": config.resolve(p) for name, p in truth.poses.items()}
    if truth.overview_transform:
        files["overview_transform"] = config.resolve(truth.overview_transform)
    for key in ("phases", "particles"):
        if getattr(truth, key):
            files[key] = config.resolve(getattr(truth, key))
    return files


def _truth_liberation(accuracy: dict, table, true_table, names: dict[int, str], options) -> None:
    """Liberation degrees and median ESD, found vs truth, into `accuracy`."""
    from ..liberation import liberation_table

    found_ld = liberation_table(table, phases=[n for n in names.values() if f"vf_{n}" in table.columns],
                                threshold=options.threshold, exclude_border=not options.include_border)
    true_ld = liberation_table(true_table, phases=list(names.values()), threshold=options.threshold,
                               exclude_border=not options.include_border)
    total = {frame_name: frame[frame["esd_min_um"].isna()].set_index("phase")["liberation_degree"]
             for frame_name, frame in (("found", found_ld), ("true", true_ld))}
    accuracy["liberation_degree_true"] = {n: float(total["true"].get(n, math.nan)) for n in names.values()}
    accuracy["ld_error"] = {n: float(total["found"].get(n, math.nan) - total["true"].get(n, math.nan))
                            for n in names.values()}
    median_true = float(np.median(true_table["esd_um"]))
    accuracy["median_esd_um"] = {"found": float(np.median(table["esd_um"])), "true": median_true}
    accuracy["median_esd_error"] = accuracy["median_esd_um"]["found"] / median_true - 1.0


def _match_summary(match) -> dict:
    return {"particle_f1": float(match.f1), "particle_precision": float(match.precision),
            "particle_recall": float(match.recall), "particles_merged_share":
            float(match.n_true_merged / max(match.n_true, 1)), "n_true_particles": int(match.n_true)}


def _pillar_wall_labels(particles, pillar, chunks) -> np.ndarray:
    """Sorted labels with a voxel on the pillar wall (:math:`r \\ge R - 1`, the rule of
    :func:`corrtomo.segment.border_touching`), block by block: only the blocks whose (y, x)
    footprint meets the wall region are read."""
    from ..chunked import block_grid, read_block
    from ..segment import pillar_mask

    if pillar is None:
        return np.zeros(0, dtype=np.int64)
    shape = tuple(int(n) for n in particles.shape)
    rim = ~pillar_mask(shape[1:], pillar, margin=1.0)
    grid = block_grid(shape, chunks)
    found = [np.zeros(0, dtype=np.int64)]
    for index in grid:  # a loop over blocks
        core = grid.slices(index)
        wall = rim[core[1], core[2]]
        if wall.any():
            found.append(np.unique(read_block(particles, core)[:, wall]).astype(np.int64))
    return np.unique(np.concatenate(found))


def _truth_volume(config: RunConfig, path: str, spacing, shape, *, lazy: bool):
    """A truth volume (lazy or in memory); it must have the CT's shape."""
    from ..io import read_volume

    data = read_volume(config.resolve(path), lazy=lazy, spacing=spacing).data
    data = data if lazy else np.asarray(data)
    if tuple(data.shape) != tuple(shape):
        raise InputError(f"shape {tuple(data.shape)} differs from the CT's {tuple(shape)}", source=config.resolve(path))
    return data


def _phase_scores(accuracy: dict, ious: dict, found: np.ndarray, real: np.ndarray, names: dict[int, str]) -> None:
    """Per-phase IoU, their mean, and volume-fraction errors from phase histograms (found, truth)."""
    accuracy["phase_iou"] = {names[i]: float(v) for i, v in ious.items()}
    accuracy["mean_phase_iou"] = float(np.mean(list(ious.values())))
    found = np.asarray(found, dtype=float)
    real = np.asarray(real, dtype=float)
    accuracy["volume_fraction_error"] = {names[i]: float(found[i] / found[1:].sum() - real[i] / real[1:].sum())
                                         for i in names}


def _evaluate_volumes_chunked(context: RunContext, table, names: dict[int, str], spacing) -> dict:
    """The volume scores of :func:`_run_evaluate` block by block (no volume read whole): the
    same numbers as the in-memory path."""
    from ..chunked import particle_table_chunked
    from ..evaluate import (
        confusion_matrix_chunked,
        match_instances_chunked,
        phase_iou_from_confusion,
    )

    config = context.config
    truth = config.truth
    chunks = context.chunks
    accuracy: dict[str, Any] = {}
    phases = context.lazy(*PHASES)
    particles = context.lazy("particles", "particles.ome.zarr")
    if truth.phases:
        true_phases = _truth_volume(config, truth.phases, spacing, phases.shape, lazy=True)
        # one pass: the confusion matrix gives the IoU and (its sums) both phase histograms
        confusion = confusion_matrix_chunked(true_phases, phases, chunks=chunks)
        ids = confusion.index.to_numpy(np.int64)
        found = np.bincount(ids, weights=confusion.sum(axis=0).to_numpy(), minlength=256)
        # the in-memory path counts the truth as uint8
        real = np.bincount(ids % 256, weights=confusion.sum(axis=1).to_numpy(), minlength=256)
        _phase_scores(accuracy, phase_iou_from_confusion(confusion, phase_ids=sorted(names)), found, real, names)
    if truth.particles:
        true_particles = _truth_volume(config, truth.particles, spacing, particles.shape, lazy=True)
        accuracy.update(_match_summary(match_instances_chunked(true_particles, particles, chunks=chunks)))
        if truth.phases:
            true_table = particle_table_chunked(true_particles, true_phases, spacing=spacing, phase_names=names,
                                                chunks=chunks, surface=False)
            # the border rule of border_touching: the table's flag holds the volume faces, the
            # pillar wall is added from the blocks that meet it
            wall = _pillar_wall_labels(true_particles, load_pillar(context), chunks)
            labels = true_table["label"].to_numpy()
            true_table["touches_border"] = true_table["touches_border"].to_numpy(bool) | np.isin(labels, wall)
            _truth_liberation(accuracy, table, true_table, names, config.stages.analysis)
    return accuracy


def _evaluate_volumes(context: RunContext, table, names: dict[int, str], spacing) -> dict:
    """The volume scores of :func:`_run_evaluate` with every volume in memory."""
    from ..evaluate import match_instances, phase_iou
    from ..measure import particle_table

    config = context.config
    truth = config.truth
    accuracy: dict[str, Any] = {}
    phases = context.read(*PHASES)
    particles = context.read("particles", "particles.ome.zarr")
    if truth.phases:
        true_phases = _truth_volume(config, truth.phases, spacing, phases.shape, lazy=False)
        found = np.bincount(phases.ravel(), minlength=256)
        real = np.bincount(true_phases.ravel().astype(np.uint8), minlength=256)
        _phase_scores(accuracy, phase_iou(true_phases, phases, phase_ids=sorted(names)), found, real, names)
    if truth.particles:
        true_particles = _truth_volume(config, truth.particles, spacing, particles.shape, lazy=False)
        accuracy.update(_match_summary(match_instances(true_particles, particles)))
        if truth.phases:
            from ..segment import border_touching

            true_table = particle_table(true_particles, true_phases, spacing=spacing, phase_names=names,
                                        surface=False)
            # the same border rule as the found particles: the volume border and the pillar wall
            cut = border_touching(true_particles, pillar=load_pillar(context))
            labels = true_table["label"].to_numpy()
            true_table["touches_border"] = true_table["touches_border"].to_numpy(bool) | cut[labels]
            _truth_liberation(accuracy, table, true_table, names, config.stages.analysis)
    return accuracy


def _run_evaluate(context: RunContext, out: Path) -> dict:
    import pandas as pd

    from ..register import pose_error

    config = context.config
    truth = config.truth
    names = context.phase_names()
    spacing = context.spacing()
    table = pd.read_parquet(context.path("measure", "particles.parquet"))
    if context.chunked:
        accuracy = _evaluate_volumes_chunked(context, table, names, spacing)
    else:
        accuracy = _evaluate_volumes(context, table, names, spacing)
    poses = {}
    for section in config.sections:
        if section.name in truth.poses:
            true_pose = PlanePose.load(config.resolve(truth.poses[section.name]))
            shape = tuple(context.results["sections"][section.name]["shape"])
            poses[section.name] = float(pose_error(load_pose(context, section.name), true_pose, shape))
    if poses:
        accuracy["pose_error_voxels"] = poses
    if truth.overview_transform and config.overview is not None:
        import json

        from .._shared import RigidTransform
        from ..register import corner_error

        true_matrix = np.asarray(json.loads(config.resolve(truth.overview_transform).read_text())["matrix"])
        found_matrix = np.asarray(json.loads(context.path("overview", "transform.json").read_text())["matrix"])
        accuracy["overview_corner_error_voxels"] = float(corner_error(
            RigidTransform(found_matrix), RigidTransform(true_matrix), tuple(context.results["volume"]["shape"])))
    write_json_atomic(out / "accuracy.json", accuracy)
    return accuracy


def _run_report(context: RunContext, out: Path) -> dict:
    from ._report import build_report

    path = build_report(context, out / "report.html")
    return {"report": str(path.name), "bytes": path.stat().st_size}


# ------------------------------------------------------------------------------------------
# the stage list
# ------------------------------------------------------------------------------------------


def _train_params(config: RunConfig) -> dict:
    """The options that change the trained model (inference-only options excluded)."""
    options = config.stages.phases
    if options.method == "unet":
        return options.model_dump(exclude={"rim_voxels": True, "unet": {"overlap", "device"}})
    return options.model_dump(exclude={"rim_voxels", "unet"})


def _options(name: str) -> Callable[[RunConfig], dict]:
    return lambda config: getattr(config.stages, name).model_dump()


def _no_inputs(config: RunConfig) -> dict[str, Path]:
    return {}


STAGES: tuple[Stage, ...] = (
    Stage("volume", (), lambda c: {"voxel_size_um": c.ct.voxel_size_um, "stitch": c.stages.stitch.model_dump(),
                                   "chunk": c.output.chunk, "execution": c.execution.model_dump(exclude={"workers", "scheduler"})},
          lambda c: {f"ct{i}": p for i, p in enumerate(_ct_paths(c))}, _run_volume),
    Stage("foreground", ("volume",), _options("foreground"), _no_inputs, _run_foreground),
    Stage("sections", (), lambda c: {"eds": c.stages.eds.model_dump(), "matrix": c.matrix,
                                     "library": c.phase_library,
                                     "sections": [s.model_dump(include={"name", "eds", "mineral_map", "bse"})
                                                  for s in c.sections]},
          _section_inputs, _run_sections),
    Stage("register", ("volume", "sections"), lambda c: {"registration": c.stages.registration.model_dump(),
                                                          "sections": [s.model_dump() for s in c.sections]},
          _register_inputs, _run_register),
    Stage("labels", ("volume", "sections", "register"), _options("labels"), _no_inputs, _run_labels),
    Stage("train", ("volume", "foreground", "labels"), _train_params, _no_inputs, _run_train),
    Stage("phases", ("volume", "foreground", "train"),
          lambda c: {"tiff": c.output.tiff, "rim_voxels": c.stages.phases.rim_voxels,
                     **({"overlap": c.stages.phases.unet.overlap, "particle_foreground": c.stages.particles.foreground}
                        if c.stages.phases.method == "unet" else {})}, _no_inputs, _run_phases),
    Stage("particles", ("foreground",), lambda c: {**_options("particles")(c), "tiff": c.output.tiff},
          _no_inputs, _run_particles,
          extra_needs=lambda c: ("phases",) if c.stages.particles.foreground == "unet" else ()),
    Stage("refine", ("volume", "phases", "particles"), lambda c: {**_options("refine")(c), "tiff": c.output.tiff},
          _no_inputs, _run_refine),
    Stage("measure", ("refine", "particles"), lambda c: {}, _no_inputs, _run_measure),
    Stage("analysis", ("measure", "refine", "particles"), _options("analysis"), _no_inputs, _run_analysis),
    Stage("overview", ("volume", "foreground", "particles"),
          lambda c: {"overview": c.overview.model_dump() if c.overview else None, "particles": _options("particles")(c),
                     "foreground_method": c.stages.foreground.method,
                     "size_bins_um": c.stages.analysis.size_bins_um, "chunk": c.output.chunk},
          lambda c: {"overview": c.resolve(c.overview.path)} if c.overview else {}, _run_overview,
          enabled=lambda c: c.overview is not None),
    Stage("evaluate", ("refine", "particles", "measure", "register", "sections", "overview"),
          lambda c: {"truth": c.truth.model_dump() if c.truth else None, "analysis": _options("analysis")(c)},
          _truth_inputs, _run_evaluate, enabled=lambda c: c.truth is not None),
    Stage("report", ("volume", "sections", "register", "refine", "particles", "measure", "analysis", "overview",
                     "evaluate"),
          lambda c: {"version": __version__}, _no_inputs, _run_report),
)

STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
