"""EDS element maps -> mineral maps (corrtomo.sem) on the digital twin, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from _twins import twin
from corrtomo._shared import MATRIX_LABEL, InputError
from corrtomo.phases import preset_library
from corrtomo.sem import (
    MineralMap,
    classify_eds,
    eds_efficiency,
    import_mineral_map,
    reference_signatures,
)


def accuracy_and_confusion(section, mineral_map: MineralMap, library):
    """Pixel accuracy inside particles (unclassified counts as wrong) and the confusion matrix
    (rows: truth minerals; columns: minerals, unclassified, matrix)."""
    truth = section.mineral_map
    mask = (truth > 0) & section.inside
    found = mineral_map.phase_ids[mask]
    columns = [*library.ids.tolist(), 0, MATRIX_LABEL]
    keys = np.searchsorted(library.ids, truth[mask]) * len(columns)
    column_of = np.full(256, -1)
    column_of[columns] = np.arange(len(columns))
    confusion = np.bincount(keys + column_of[found], minlength=len(library) * len(columns))
    confusion = confusion.reshape(len(library), len(columns))
    return float((found == truth[mask]).mean()), confusion


def show(title, library, confusion):
    names = [*library.names, "unclassified", "matrix"]
    print(f"\n{title}\n{'truth/found':>12} " + " ".join(f"{n[:10]:>10}" for n in names))
    for name, row in zip(library.names, confusion, strict=True):
        print(f"{name[:12]:>12} " + " ".join(f"{v:>10d}" for v in row))


@pytest.mark.parametrize("seed", [1, 2])
def test_reference_classification_talc_saxolite(seed):
    sample = twin("talc-saxolite", seed)
    for section in sample.sections:
        result = classify_eds(section.eds, library=sample.library)
        accuracy, confusion = accuracy_and_confusion(section, result, sample.library)
        show(f"talc-saxolite seed {seed} {section.name}: reference accuracy {accuracy:.4f}", sample.library, confusion)
        assert accuracy >= 0.97
        assert result.phase_ids.dtype == np.uint8 and result.confidence.dtype == np.float32
        assert 0 <= result.confidence.min() and result.confidence.max() <= 1
        assert np.all(result.confidence[result.phase_ids == 0] == 0)
        np.testing.assert_allclose(sum(result.area_fractions.values()), 1.0)
        # vacuum outside the pillar (no counts) is unclassified, never a mineral
        vacuum = np.all(np.stack(list(section.eds.values())) == 0, axis=0)
        assert np.all(result.phase_ids[vacuum] == 0)


def test_bse_feature_and_unsupervised_talc_saxolite():
    sample = twin("talc-saxolite", 1)
    section = sample.sections[0]
    with_bse = classify_eds(section.eds, library=sample.library, bse=section.bse)
    accuracy, confusion = accuracy_and_confusion(section, with_bse, sample.library)
    show(f"talc-saxolite seed 1 reference + BSE accuracy {accuracy:.4f}", sample.library, confusion)
    assert accuracy >= 0.97
    assert with_bse.info["bse_model"] is not None
    unsupervised = classify_eds(section.eds, library=sample.library, method="unsupervised", rng=0)
    accuracy, confusion = accuracy_and_confusion(section, unsupervised, sample.library)
    show(f"talc-saxolite seed 1 unsupervised accuracy {accuracy:.4f}", sample.library, confusion)
    assert accuracy >= 0.90
    # same seed, same result
    again = classify_eds(section.eds, library=sample.library, method="unsupervised", rng=0)
    np.testing.assert_array_equal(again.phase_ids, unsupervised.phase_ids)


def test_li_slag_report():
    sample = twin("li-slag", 1)
    for section in sample.sections:
        result = classify_eds(section.eds, library=sample.library)
        accuracy, confusion = accuracy_and_confusion(section, result, sample.library)
        show(f"li-slag seed 1 {section.name}: reference accuracy {accuracy:.4f}", sample.library, confusion)
        # LiAlO2 has no detectable Li: it is recognised by Al + O without Ca, Si, Mg or Mn
        lialo2 = sample.library.id_of("lialo2")
        assert confusion[0, 0] / confusion[0].sum() >= 0.85
        assert accuracy >= 0.90
        assert "Li" not in result.elements
        assert result.phase_ids[(section.mineral_map == lialo2)].size


def test_pure_mineral_pixels_and_efficiency():
    library = preset_library("talc-saxolite")
    assert eds_efficiency(3) == 0.0 and eds_efficiency(6) == 0.5 and eds_efficiency(14) == 1.0
    elements = ["C", "O", "Mg", "Si", "Ca"]
    names, ids, rates = reference_signatures(library, elements)
    assert names[-1] == "epoxy" and ids[-1] == MATRIX_LABEL
    rng = np.random.default_rng(3)
    # a 5 x 20 strip of each reference, counts scale 300 (any scale works)
    truth = np.repeat(ids, 20).reshape(1, -1).repeat(5, axis=0)
    row_of = {int(i): k for k, i in enumerate(ids)}
    means = 300 * rates[[row_of[int(v)] for v in truth.ravel()]].T.reshape(len(elements), *truth.shape)
    maps = {e: rng.poisson(means[k]) for k, e in enumerate(elements)}
    result = classify_eds(maps, library=library, mixture_steps=0)
    np.testing.assert_array_equal(result.phase_ids, truth)
    assert result.area_fractions == pytest.approx({n: 0.25 for n in library.names})
    # an unknown phase (pure Fe counts) fits nothing: unclassified
    maps_fe = {**{e: np.zeros((2, 2)) for e in elements}, "Fe": np.full((2, 2), 200.0)}
    maps_fe["O"] = np.full((2, 2), 100.0)
    assert np.all(classify_eds(maps_fe, library=library).phase_ids == 0)


def test_bad_input(tmp_path):
    library = preset_library("talc-saxolite")
    good = {"Ca": np.ones((4, 4)), "Mg": np.ones((4, 4))}
    with pytest.raises(InputError, match="shape"):
        classify_eds({**good, "Si": np.ones((4, 5))}, library=library)
    with pytest.raises(InputError, match="2D section"):
        classify_eds({**good, "Si": np.ones((2, 4, 4))}, library=library)
    with pytest.raises(InputError, match="BSE"):
        classify_eds(good, library=library, bse=np.ones((3, 3)))
    with pytest.raises(InputError, match="NaN"):
        classify_eds({"Ca": np.full((2, 2), np.nan)}, library=library)
    with pytest.raises(InputError, match="no map of an element"):
        classify_eds({"Fe": np.ones((2, 2))}, library=library)
    with pytest.raises(InputError, match="method"):
        classify_eds(good, library=library, method="magic")
    # element maps of different shapes in a folder: io names the odd file
    from corrtomo.io import read_eds_maps, write_image2d

    folder = tmp_path / "eds"
    write_image2d(folder / "Ca.tif", np.ones((4, 4), np.uint16))
    write_image2d(folder / "Mg.tif", np.ones((4, 6), np.uint16))
    with pytest.raises(InputError, match=r"Mg\.tif.*shape|shape.*Ca\.tif"):
        read_eds_maps(folder)


def test_import_mineral_map(tmp_path):
    from corrtomo.io import write_image2d

    library = preset_library("talc-saxolite")
    ids = np.array([[0, 1, 2], [3, 4, 4]], dtype=np.uint8)
    write_image2d(tmp_path / "map.tif", ids)
    imported = import_mineral_map(tmp_path / "map.tif", library=library)
    np.testing.assert_array_equal(imported.phase_ids, ids)
    np.testing.assert_array_equal(imported.confidence, (ids > 0).astype(np.float32))
    assert imported.area_fractions["talc"] == pytest.approx(0.4)
    imported.to_png(tmp_path / "map.png")
    assert (tmp_path / "map.png").stat().st_size > 0
    import tifffile

    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((5, 4, 4), np.uint8), photometric="minisblack")
    with pytest.raises(InputError, match="3D"):
        import_mineral_map(tmp_path / "stack.tif", library=library)


def test_cli_eds_classify(tmp_path, capsys):
    import pandas as pd
    import tifffile

    from corrtomo.cli._app import run_app
    from corrtomo.io import read_image2d, write_image2d

    sample = twin("talc-saxolite", 1)
    section = sample.sections[0]
    folder = tmp_path / "eds"
    for element, counts in section.eds.items():
        write_image2d(folder / f"{element}.tif", counts)
    write_image2d(tmp_path / "bse.tif", section.bse)
    sample.library.save(tmp_path / "library.yaml")
    code = run_app(
        ["eds-classify", "--eds", str(folder), "--bse", str(tmp_path / "bse.tif"), "--phase-library",
         str(tmp_path / "library.yaml"), "--out", str(tmp_path / "out"), "--pixel-size", "0.064"]
    )
    assert code == 0
    for name in ("mineral_map.tif", "confidence.tif", "mineral_map.png", "area_fractions.csv", "summary.json"):
        assert (tmp_path / "out" / name).is_file()
    found = read_image2d(tmp_path / "out" / "mineral_map.tif")
    mask = (section.mineral_map > 0) & section.inside
    assert (found[mask] == section.mineral_map[mask]).mean() >= 0.97
    table = pd.read_csv(tmp_path / "out" / "area_fractions.csv")
    assert set(sample.library.names) <= set(table["phase"])
    # a 3D image given as a section: one-line error, exit code 2
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((5, 8, 8), np.uint16), photometric="minisblack")
    capsys.readouterr()
    code = run_app(
        ["eds-classify", "--eds", str(folder), "--bse", str(tmp_path / "stack.tif"), "--phase-library",
         "talc-saxolite", "--out", str(tmp_path / "bad")]
    )
    error = capsys.readouterr().err.strip()
    assert code == 2 and "3D" in error and "stack.tif" in error and "\n" not in error
