"""``corrtomo eds-classify``: EDS element maps (+ BSE) -> mineral map, confidence, modal mineralogy."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import app

#: Files ``corrtomo eds-classify`` writes into ``--out``.
OUTPUTS = ("mineral_map.tif", "confidence.tif", "mineral_map.png", "area_fractions.csv", "summary.json")


@app.command("eds-classify")
def eds_classify_command(
    eds: Path = typer.Option(..., "--eds", help="Folder of EDS element maps, one image per element (Ca.tif, Mg_K.tif, ...)."),
    phase_library: str = typer.Option(..., "--phase-library", help="Phase library file (YAML/JSON) or preset name."),
    out: Path = typer.Option(..., "--out", help="Output folder (created)."),
    bse: Path | None = typer.Option(None, "--bse", help="BSE image of the same pixels (extra feature)."),
    method: str = typer.Option("reference", "--method", help="reference | unsupervised"),
    matrix: str = typer.Option("epoxy", "--matrix", help="Embedding material recognised as matrix (label 255), or 'none'."),
    bin_size: int = typer.Option(1, "--bin", help="Moving-window binning of the counts (pixels)."),
    smooth: float = typer.Option(0.0, "--smooth", help="Gaussian smoothing of the counts, sigma in pixels."),
    min_confidence: float = typer.Option(0.5, "--min-confidence", help="Pixels below this posterior are unclassified."),
    pixel_size: float | None = typer.Option(None, "--pixel-size", help="Section pixel size in micrometres (recorded in the TIFFs)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the unsupervised clustering."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary line."),
) -> None:
    """Classify EDS element maps into the minerals of a phase library; write mineral_map.tif
    (phase ids, 0 unclassified, 255 matrix), confidence.tif, mineral_map.png, area_fractions.csv
    and summary.json."""
    import numpy as np

    from .._shared import InputError, atomic_path, write_json_atomic
    from ..io import read_eds_maps, read_image2d, write_image2d
    from ..phases import load_phase_library
    from ..sem import classify_eds

    if pixel_size is not None and not pixel_size > 0:
        raise InputError(f"must be a positive number of micrometres, got {pixel_size}", source="--pixel-size")
    library = load_phase_library(phase_library)
    maps = read_eds_maps(eds)
    bse_image = None if bse is None else read_image2d(bse)
    result = classify_eds(
        maps, library=library, matrix=None if matrix.lower() == "none" else matrix, bse=bse_image,
        bin_size=bin_size, smooth_sigma_px=smooth, method=method, min_confidence=min_confidence, rng=seed,
    )
    out.mkdir(parents=True, exist_ok=True)
    write_image2d(out / "mineral_map.tif", result.phase_ids, spacing=pixel_size)
    write_image2d(out / "confidence.tif", result.confidence, spacing=pixel_size)
    result.to_png(out / "mineral_map.png")
    with atomic_path(out / "area_fractions.csv") as temporary:
        result.table().to_csv(temporary, index=False)
    info = {k: v for k, v in result.info.items() if k != "bse_model"}
    write_json_atomic(
        out / "summary.json",
        {
            "method": result.method,
            "elements": list(result.elements),
            "area_fractions": result.area_fractions,
            "pixels": {result.class_names[i]: n for i, n in result.pixel_counts().items()},
            "mean_confidence": float(np.mean(result.confidence[result.phase_ids > 0])) if (result.phase_ids > 0).any() else 0.0,
            "pixel_size_um": pixel_size,
            "info": info,
        },
    )
    if not quiet:
        fractions = ", ".join(f"{k} {v:.1%}" for k, v in result.area_fractions.items())
        unclassified = float((result.phase_ids == 0).mean())
        typer.echo(f"wrote {out}: {fractions}; unclassified {unclassified:.1%}")
