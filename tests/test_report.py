"""The HTML report: self-contained, every figure present, numbers equal to their sources."""

from __future__ import annotations

import base64
import dataclasses
import io
import math
import os
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from corrtomo._shared import InputError, sample_plane
from corrtomo.report import (
    CrossScaleReport,
    ReportData,
    ReportSection,
    figure_ids,
    render_report,
    write_report,
)

CHROMIUM = Path("/usr/bin/chromium")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA_URI_PREFIX = "data:image/png;base64,"


# --------------------------------------------------------------------------------------------
# building report data from a digital twin
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def twin():
    from corrtomo.synth import make_sample

    return make_sample("quick", seed=0)


def _tables(sample, phase_names, *, n_bootstrap=50, exclude_border=True):
    """particles, grains, liberation tables and summary as ``corrtomo analyze`` makes them."""
    from corrtomo.liberation import liberation_table
    from corrtomo.measure import grain_table, label_grains, particle_table

    grains = label_grains(sample.particles, sample.phases)
    particles_df = particle_table(
        sample.particles,
        sample.phases,
        spacing=sample.voxel_size_um,
        phase_names=phase_names,
        grains=grains,
    )
    grains_df = grain_table(
        sample.particles,
        sample.phases,
        spacing=sample.voxel_size_um,
        phase_names=phase_names,
        grains=grains,
    )
    names = list(phase_names.values())
    liberation = liberation_table(
        particles_df,
        phases=names,
        n_bootstrap=n_bootstrap,
        rng=0,
        exclude_border=exclude_border,
    )
    overall = liberation[liberation["esd_min_um"].isna()]
    voxels = particles_df["volume_voxels"].to_numpy(dtype=np.float64)
    summary = {
        "n_particles": len(particles_df),
        "n_grains": len(grains_df),
        "phase_volume_fractions": {
            name: float((particles_df[f"vf_{name}"].to_numpy() * voxels).sum() / voxels.sum())
            for name in names
        },
        "liberation_degree": dict(
            zip(overall["phase"], overall["liberation_degree"].astype(float), strict=True)
        ),
        "voxel_size_um": sample.voxel_size_um,
        "threshold": 0.99,
        "exclude_border": True,
        "min_esd_um": 0.0,
        "version": "0.1.0",
    }
    return particles_df, grains_df, liberation, summary


def _sections(sample):
    return [
        ReportSection(
            name=section.name,
            mineral_map=section.mineral_map,
            bse=section.bse,
            ct_plane=sample_plane(sample.ct, section.pose, section.mineral_map.shape),
            score=0.8125,
            pose_error_voxels=0.375,
        )
        for section in sample.sections
    ]


@pytest.fixture(scope="module")
def full_data(twin):
    """Report data with every optional part."""
    from corrtomo.liberation import stereology_comparison
    from corrtomo.stats import representativeness

    phase_names = {int(i): twin.library.name_of(int(i)) for i in twin.library.ids}
    particles_df, grains_df, liberation, summary = _tables(twin, phase_names)
    return ReportData(
        title="Quick twin <seed 0> & friends",
        library=twin.library,
        voxel_size_um=(twin.voxel_size_um,) * 3,
        ct=twin.ct,
        phases=twin.phases,
        particles=twin.particles,
        particles_table=particles_df,
        grains_table=grains_df,
        liberation=liberation,
        summary=summary,
        sections=_sections(twin),
        stereology=stereology_comparison(
            twin.particles,
            twin.phases,
            spacing=twin.voxel_size_um,
            phase_names=phase_names,
            n_planes=3,
            rng=0,
        ),
        representativeness=representativeness(
            twin.particles,
            spacing=twin.voxel_size_um,
            piece_size_um=twin.voxel_size_um * twin.ct.shape[0] / 2,
        ),
        accuracy={
            "phase_iou": {"calcite": 0.91, "talc": 0.7, "dolomite": float("nan")},
            "mean_phase_iou": 0.805,
            "particle_f1": 0.93,
            "particle_precision": 0.95,
            "particle_recall": 0.9125,
            "ld_error": {"calcite": -0.0125, "talc": 0.03},
            "median_esd_error": 0.0123456789,
        },
        provenance={
            "config": "sample: quick\nseed: 0\nnote: <b>not bold</b>\n",
            "versions": {"corrtomo": "0.1.0", "numpy": np.__version__},
            "stages": [
                {"stage": "synth", "seconds": 2.125, "peak_memory_mb": 300.5, "skipped": False},
                {"stage": "segment", "seconds": 12.0625, "peak_memory_mb": 812.0, "skipped": True},
            ],
            "created": "2025-01-01 12:00 UTC",
            "host": "test-machine",
        },
    )


@pytest.fixture(scope="module")
def full_report(full_data, tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "run" / "report.html"
    written = write_report(path, full_data)
    return written, path.read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------
# a small HTML model: tags, images, figures and the data-value tables
# --------------------------------------------------------------------------------------------


class _Document(HTMLParser):
    """Tags with their attributes, figures with their images and captions, and tables."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.figures: list[dict] = []
        self.tables: dict[str, list[tuple[str, list[dict]]]] = {}
        self.title = ""
        self.pre_text: dict[str, str] = {}
        self._figure: dict | None = None
        self._table: str | None = None
        self._row: tuple[str, list[dict]] | None = None
        self._cell: dict | None = None
        self._text_target: str | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.elements.append((tag, attributes))
        if tag == "figure":
            self._figure = {"id": attributes.get("id"), "images": [], "caption": ""}
        elif tag == "img" and self._figure is not None:
            self._figure["images"].append(attributes)
        elif tag == "figcaption":
            self._text_target = "figcaption"
        elif tag == "title":
            self._text_target = "title"
        elif tag == "pre":
            self._text_target = f"pre:{attributes.get('id')}"
            self.pre_text[attributes.get("id")] = ""
        elif tag == "table":
            self._table = attributes.get("id")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None and "data-key" in attributes:
            self._row = (attributes["data-key"], [])
            self.tables[self._table].append(self._row)
        elif tag == "td" and self._row is not None:
            self._cell = {**attributes, "text": ""}
            self._row[1].append(self._cell)

    def handle_endtag(self, tag):
        if tag == "figure" and self._figure is not None:
            self.figures.append(self._figure)
            self._figure = None
        elif tag in ("figcaption", "title", "pre"):
            self._text_target = None
        elif tag == "table":
            self._table = None
        elif tag == "tr":
            self._row = None
        elif tag == "td":
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data
        if self._text_target == "figcaption" and self._figure is not None:
            self._figure["caption"] += data
        elif self._text_target == "title":
            self.title += data
        elif self._text_target and self._text_target.startswith("pre:"):
            self.pre_text[self._text_target[4:]] += data

    def column(self, table_id: str, column: str) -> dict[str, str | None]:
        """``{row key: data-value}`` of one column of a table."""
        return {
            key: cell.get("data-value")
            for key, cells in self.tables[table_id]
            for cell in cells
            if cell.get("data-column") == column
        }


def _same(shown: str | None, value) -> bool:
    """A data-value equals its source value exactly (NaN equals NaN, None is no data-value)."""
    if value is None:
        return shown is None
    if isinstance(value, bool | np.bool_):
        return shown == ("true" if value else "false")
    if isinstance(value, int | np.integer):
        return shown == str(int(value))
    if isinstance(value, float | np.floating) and math.isnan(value):
        return shown == "nan"
    return shown is not None and float(shown) == float(value)


def _decode_png(uri: str) -> bytes:
    assert uri.startswith(DATA_URI_PREFIX), uri[:60]
    return base64.b64decode(uri[len(DATA_URI_PREFIX) :], validate=True)


# --------------------------------------------------------------------------------------------
# the file
# --------------------------------------------------------------------------------------------


def test_write_report_returns_the_path_and_leaves_no_temporary_file(full_report):
    written, html = full_report
    assert isinstance(written, Path) and written.name == "report.html"
    assert [p.name for p in written.parent.iterdir()] == ["report.html"]
    assert html.startswith("<!DOCTYPE html>")
    assert html.rstrip().endswith("</html>")


def test_write_report_is_atomic(full_data, tmp_path, monkeypatch):
    import corrtomo.report._report as report_module

    path = tmp_path / "report.html"
    path.write_text("old report", encoding="utf-8")
    monkeypatch.setattr(report_module, "render_report", lambda data: "<html>new</html>")
    renames = []

    def failing_replace(source, target):
        renames.append((Path(source), Path(target)))
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_report(path, full_data)
    # The report went to a temporary sibling first; the old file is untouched, no debris left.
    ((source, target),) = renames
    assert target == path and source.parent == path.parent and source != path
    assert path.read_text(encoding="utf-8") == "old report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_report_is_self_contained(full_report):
    _assert_self_contained(full_report[1])


def _assert_self_contained(html: str) -> None:
    document = _Document(html)
    ids = {attributes.get("id") for _, attributes in document.elements}
    images = [attributes for tag, attributes in document.elements if tag == "img"]
    assert images
    for attributes in images:
        png = _decode_png(attributes["src"])
        assert png.startswith(PNG_SIGNATURE)
        from PIL import Image

        with Image.open(io.BytesIO(png)) as image:
            image.verify()
            assert image.format == "PNG"
            assert (image.width, image.height) == (
                int(attributes["width"]),
                int(attributes["height"]),
            )
    for tag, attributes in document.elements:
        assert tag not in ("script", "link", "iframe", "object", "embed", "base", "source")
        for name in ("src", "srcset", "action", "formaction", "poster", "background"):
            if name in attributes and tag != "img":
                pytest.fail(f"<{tag} {name}=...> refers outside the report")
        href = attributes.get("href")
        if href is not None:
            assert href.startswith("#") and href[1:] in ids, href
    assert "url(" not in html
    assert "http://" not in html and "https://" not in html
    assert "@import" not in html


def test_report_escapes_text(full_report):
    _, html = full_report
    document = _Document(html)
    assert document.title.startswith("Quick twin <seed 0> & friends")
    assert "<seed 0>" not in html and "&lt;seed 0&gt;" in html
    # The configuration is shown as text in a <pre>, never interpreted.
    assert document.pre_text["config"] == "sample: quick\nseed: 0\nnote: <b>not bold</b>\n"
    assert "<b>not bold</b>" not in html


def test_report_is_modest_in_size(full_report):
    written, _ = full_report
    assert written.stat().st_size < 3_000_000


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------


def test_figure_ids_with_every_optional_part(full_data):
    assert figure_ids(full_data) == [
        "fig-slices-phases",
        "fig-slices-particles",
        "fig-section-1",
        "fig-phase-fractions",
        "fig-size-distribution",
        "fig-liberation-by-size",
        "fig-grain-particle-volume",
        "fig-representativeness",
        "fig-liberation-spectrum",
        "fig-stereology",
    ]


def test_every_expected_figure_is_present_with_caption(full_data, full_report):
    _, html = full_report
    document = _Document(html)
    expected = figure_ids(full_data)
    found = [image["id"] for figure in document.figures for image in figure["images"]]
    assert found == expected
    for figure in document.figures:
        (image,) = figure["images"]
        assert figure["id"] == f"figure-{image['id']}"
        assert image["alt"].strip()
        assert figure["caption"].strip().startswith("Figure ")
    all_images = [a["id"] for tag, a in document.elements if tag == "img"]
    assert all_images == expected


# --------------------------------------------------------------------------------------------
# numbers
# --------------------------------------------------------------------------------------------


def test_phase_fractions_and_liberation_degrees_equal_the_summary(full_data, full_report):
    document = _Document(full_report[1])
    fractions = document.column("table-phases", "volume_fraction")
    degrees = document.column("table-phases", "liberation_degree")
    summary = full_data.summary
    assert set(fractions) == set(full_data.library.names)
    for name, value in summary["phase_volume_fractions"].items():
        assert _same(fractions[name], value), name
    for name, value in summary["liberation_degree"].items():
        assert _same(degrees[name], value), name
    densities = document.column("table-phases", "density")
    for phase in full_data.library:
        assert _same(densities[phase.name], phase.density)
    formulas = {key: cells[2]["text"] for key, cells in document.tables["table-phases"]}
    assert formulas["dolomite"] == "CaMg(CO₃)₂"


def test_liberation_tables_equal_the_liberation_table(full_data, full_report):
    document = _Document(full_report[1])
    liberation = full_data.liberation.reset_index(drop=True)
    assert {"ld_ci_low", "ld_ci_high"} <= set(liberation.columns)
    rows = document.tables["table-liberation"]
    assert [key for key, _ in rows] == [str(i) for i in range(len(liberation))]
    for position, (_, cells) in enumerate(rows):
        shown = {cell["data-column"]: cell for cell in cells}
        assert set(shown) == set(liberation.columns)
        for column in liberation.columns:
            value = liberation.at[position, column]
            if column == "phase":
                assert shown[column]["text"] == value
            else:
                assert _same(shown[column].get("data-value"), value), (position, column)
    overall = liberation[liberation["esd_min_um"].isna()]
    for column in ("liberation_degree", "ld_ci_low", "ld_ci_high", "volume_total_um3"):
        values = document.column("table-liberation-overall", column)
        assert len(values) == len(overall)
        for key, value in zip(values.values(), overall[column], strict=True):
            assert _same(key, value), column


def test_optional_tables_equal_their_sources(full_data, full_report):
    document = _Document(full_report[1])
    for table_id, frame in (
        ("table-stereology", full_data.stereology),
        ("table-representativeness", full_data.representativeness),
    ):
        frame = frame.reset_index(drop=True)
        for column in frame.columns:
            if not pd.api.types.is_numeric_dtype(frame[column]):
                continue
            shown = document.column(table_id, column)
            assert len(shown) == len(frame)
            for key, value in shown.items():
                assert _same(value, frame.at[int(key), column]), (table_id, column, key)
    scores = document.column("table-sections", "score")
    errors = document.column("table-sections", "pose_error_voxels")
    assert _same(scores["section01"], 0.8125) and _same(errors["section01"], 0.375)


def test_accuracy_and_provenance_tables(full_data, full_report):
    document = _Document(full_report[1])
    accuracy = full_data.accuracy
    scalars = document.column("table-accuracy", "value")
    for key in ("mean_phase_iou", "particle_f1", "particle_precision", "particle_recall"):
        assert _same(scalars[key], accuracy[key])
    assert _same(scalars["median_esd_error"], accuracy["median_esd_error"])
    iou = document.column("table-accuracy-phase-iou", "value")
    assert {k: _same(iou[k], v) for k, v in accuracy["phase_iou"].items()} == {
        "calcite": True,
        "talc": True,
        "dolomite": True,
    }
    ld_error = document.column("table-accuracy-ld-error", "value")
    assert all(_same(ld_error[k], v) for k, v in accuracy["ld_error"].items())
    seconds = document.column("table-stages", "seconds")
    memory = document.column("table-stages", "peak_memory_mb")
    cached = document.column("table-stages", "skipped")
    for position, stage in enumerate(full_data.provenance["stages"]):
        assert _same(seconds[str(position)], stage["seconds"])
        assert _same(memory[str(position)], stage["peak_memory_mb"])
        assert _same(cached[str(position)], stage["skipped"])
    versions = {key: cells[1]["text"] for key, cells in document.tables["table-versions"]}
    assert versions == full_data.provenance["versions"]
    assert "2025-01-01 12:00 UTC" in full_report[1]


def test_table_cells_keep_exact_values():
    from corrtomo.report._tables import value_cell

    third = 1.0 / 3.0
    cell = value_cell(third, "fixed3")
    assert cell.text == "0.333" and float(cell.value) == third
    assert value_cell(float("nan")).value == "nan"
    assert value_cell(None).value is None
    assert value_cell(np.int64(22468)).text == "22,468"
    assert value_cell(np.int64(22468)).value == "22468"
    assert value_cell(np.bool_(True)).value == "true"
    assert value_cell(0.2734, "percent2").text == "27.34 %"
    assert value_cell(12345.678, "sig4").text == "12,346"
    assert value_cell(0.000123456, "sig4").text == "1.235e-04"


# --------------------------------------------------------------------------------------------
# missing and degenerate parts
# --------------------------------------------------------------------------------------------


def test_report_without_optional_parts(full_data, tmp_path):
    data = dataclasses.replace(
        full_data,
        sections=[],
        stereology=None,
        representativeness=None,
        accuracy=None,
        provenance={},
    )
    assert figure_ids(data) == [
        "fig-slices-phases",
        "fig-slices-particles",
        "fig-phase-fractions",
        "fig-size-distribution",
        "fig-liberation-by-size",
        "fig-grain-particle-volume",
        "fig-liberation-spectrum",
    ]
    html = write_report(tmp_path / "report.html", data).read_text(encoding="utf-8")
    document = _Document(html)
    assert [i["id"] for f in document.figures for i in f["images"]] == figure_ids(data)
    assert "No SEM section was given" in html
    assert "No provenance was recorded" in html
    assert "table-accuracy" not in document.tables
    assert "table-sections" not in document.tables


def test_sections_without_bse_or_registration_or_with_an_rgb_bse(full_data):
    section = full_data.sections[0]
    rgb = np.repeat(np.asarray(section.bse)[..., None], 3, axis=-1)
    sections = [
        ReportSection(name="bare", mineral_map=section.mineral_map),
        dataclasses.replace(section, name="rgb", bse=rgb),
    ]
    data = dataclasses.replace(
        full_data, sections=sections, stereology=None, representativeness=None
    )
    document = _Document(render_report(data))
    figures = {f["id"]: f for f in document.figures}
    assert "No registered CT plane" in figures["figure-fig-section-1"]["caption"]
    assert "checkerboard" in figures["figure-fig-section-2"]["caption"]
    assert document.column("table-sections", "score") == {"bare": None, "rgb": "0.8125"}


def test_phase_without_particles_and_all_nan_liberation(twin, tmp_path):
    from corrtomo.phases import Phase, PhaseLibrary

    library = PhaseLibrary([*twin.library.phases, Phase(9, "quartz", "SiO2", 2.65)])
    phase_names = {int(i): library.name_of(int(i)) for i in library.ids}
    particles_df, grains_df, liberation, summary = _tables(twin, phase_names, n_bootstrap=20)
    quartz = liberation[liberation["phase"] == "quartz"]
    assert quartz["liberation_degree"].isna().all()
    data = ReportData(
        title="with quartz",
        library=library,
        voxel_size_um=twin.voxel_size_um,
        ct=twin.ct,
        phases=twin.phases,
        particles=twin.particles,
        particles_table=particles_df,
        grains_table=grains_df,
        liberation=liberation,
        summary=summary,
    )
    document = _Document(write_report(tmp_path / "r.html", data).read_text(encoding="utf-8"))
    assert [i["id"] for f in document.figures for i in f["images"]] == figure_ids(data)
    assert document.column("table-phases", "liberation_degree")["quartz"] == "nan"
    assert _same(document.column("table-phases", "volume_fraction")["quartz"], 0.0)
    assert document.column("table-phases", "n_grains")["quartz"] == "0"


def test_report_when_no_particle_is_counted(twin, tmp_path):
    """Every particle touches the border: the distributions cannot be made, the report still is."""
    phase_names = {int(i): twin.library.name_of(int(i)) for i in twin.library.ids}
    particles_df, grains_df, liberation, _ = _tables(
        twin, phase_names, n_bootstrap=0, exclude_border=False
    )
    particles_df = particles_df.assign(touches_border=True)
    data = ReportData(
        title="all on the border",
        library=twin.library,
        voxel_size_um=twin.voxel_size_um,
        ct=twin.ct,
        phases=twin.phases,
        particles=twin.particles,
        particles_table=particles_df,
        grains_table=grains_df,
        liberation=liberation.drop(columns=["esd_min_um", "esd_max_um"]),
        summary={"n_particles": len(particles_df)},
    )
    html = render_report(data)
    document = _Document(html)
    assert [i["id"] for f in document.figures for i in f["images"]] == figure_ids(data)
    assert "table-size-distribution" not in document.tables
    for figure in document.figures:
        assert _decode_png(figure["images"][0]["src"]).startswith(PNG_SIGNATURE)


def test_particle_model_figure_from_figure_file_or_bytes(full_data, tmp_path):
    from matplotlib.figure import Figure

    from corrtomo.report._context import ReportContext
    from corrtomo.report._figure_plan import _draw_particle_model

    figure = Figure(figsize=(3, 2))
    figure.add_subplot().plot([0, 1], [1, 0])
    png_path = tmp_path / "pair.png"
    figure.savefig(png_path, format="png")
    base = dataclasses.replace(full_data, sections=[], stereology=None, representativeness=None)
    for source in (png_path, png_path.read_bytes()):
        image, alt, caption = _draw_particle_model(
            ReportContext(dataclasses.replace(base, particle_model_figure=source))
        )
        assert image == png_path.read_bytes() and alt and caption
    data = dataclasses.replace(base, particle_model_figure=figure)
    assert figure_ids(data)[-1] == "fig-particle-model"
    document = _Document(render_report(data))
    (model,) = [f for f in document.figures if f["id"] == "figure-fig-particle-model"]
    assert _decode_png(model["images"][0]["src"]).startswith(PNG_SIGNATURE)


class _PlaneOnlyVolume:
    """A volume that lets itself be read plane by plane only (as a huge Zarr array must)."""

    def __init__(self, array):
        self._array = array
        self.shape = array.shape
        self.dtype = array.dtype
        self.keys = []

    def __getitem__(self, key):
        self.keys.append(key)
        result = self._array[key]
        assert result.ndim == 2, f"read {result.shape} at {key}"
        return result

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole volume was read")


def test_only_the_central_planes_are_read(full_data):
    volumes = {
        name: _PlaneOnlyVolume(getattr(full_data, name)) for name in ("ct", "phases", "particles")
    }
    data = dataclasses.replace(
        full_data, sections=[], stereology=None, representativeness=None, **volumes
    )
    tables_before = full_data.particles_table.copy(), full_data.liberation.copy()
    render_report(data)
    for volume in volumes.values():
        assert 1 <= len(volume.keys) <= 6
    # Inputs are never modified.
    pd.testing.assert_frame_equal(full_data.particles_table, tables_before[0])
    pd.testing.assert_frame_equal(full_data.liberation, tables_before[1])


def test_bad_input_gives_one_line_errors(full_data):
    section = full_data.sections[0]
    wrong = dataclasses.replace(section, bse=np.zeros((3, 3)))
    with pytest.raises(InputError, match=r"section section01: bse has shape \(3, 3\)"):
        render_report(dataclasses.replace(full_data, sections=[wrong]))
    with pytest.raises(InputError, match="phases: shape"):
        render_report(dataclasses.replace(full_data, phases=np.zeros((2, 2, 2), np.uint8)))
    with pytest.raises(InputError, match="particle_model_figure"):
        render_report(dataclasses.replace(full_data, particle_model_figure=b"not a png"))
    with pytest.raises(InputError, match="voxel_size_um"):
        render_report(dataclasses.replace(full_data, voxel_size_um=(1.0, -1.0, 1.0)))


def test_hashed_particle_colours_are_stable_and_spread():
    from corrtomo.report._images import hashed_label_colors

    labels = np.arange(1, 201)
    colors = hashed_label_colors(labels)
    assert np.array_equal(colors, hashed_label_colors(labels))
    neighbours = np.abs(np.diff(colors, axis=0)).sum(axis=1)
    assert neighbours.min() > 0.05  # consecutive (often touching) labels differ visibly
    assert np.all((colors >= 0) & (colors <= 1))


# --------------------------------------------------------------------------------------------
# in a browser
# --------------------------------------------------------------------------------------------

_MARK_BROKEN_IMAGES = """<script>
window.addEventListener("load", function () {
  for (const img of document.images) {
    img.setAttribute("data-natural-width", String(img.naturalWidth));
    if (!img.complete || img.naturalWidth === 0) { img.setAttribute("data-broken", "1"); }
  }
  document.body.setAttribute("data-checked", "1");
});
</script>"""


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="chromium is not installed (/usr/bin/chromium); CI has none"
)
def test_report_renders_in_headless_chromium(full_data, full_report, tmp_path):
    _assert_renders_in_chromium(full_report[1], figure_ids(full_data), tmp_path)


def _assert_renders_in_chromium(html: str, expected_ids: list[str], tmp_path: Path) -> None:
    # A test-only copy: a canary image that must be reported broken, and the checking script.
    canary = '<img id="canary" alt="canary" src="data:image/png;base64,AAAA">'
    checked = html.replace("</body>", canary + _MARK_BROKEN_IMAGES + "</body>")
    page = tmp_path / "report-check.html"
    page.write_text(checked, encoding="utf-8")
    result = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    document = _Document(result.stdout)
    body = [attributes for tag, attributes in document.elements if tag == "body"]
    assert body and body[0].get("data-checked") == "1", "the checking script did not run"
    images = {a["id"]: a for tag, a in document.elements if tag == "img"}
    assert images["canary"].get("data-broken") == "1"
    for figure_id in expected_ids:
        image = images[figure_id]
        assert image.get("data-broken") is None, figure_id
        assert int(image["data-natural-width"]) == int(image["width"]), figure_id


# --------------------------------------------------------------------------------------------
# across length scales: a nano-CT volume inside a micro-CT overview (issue 9, Sec. 3.5, Fig. 12)
# --------------------------------------------------------------------------------------------

_CROSS_IDS = ["fig-cross-scale-overlay", "fig-cross-scale-psd"]


@pytest.fixture(scope="module")
def cross_scale(tmp_path_factory):
    """A real cross-scale part: a small twin pair (40³ + 40³ voxels), the size distributions of its
    truth labels, a registration at a pose near the truth, and the overlay PNG of that pose."""
    from corrtomo._shared import RigidTransform
    from corrtomo.register import VolumeRegistration, corner_error, write_volume_overlay
    from corrtomo.stats import cross_scale_psd
    from corrtomo.synth import PAIR_PRESETS, make_scale_pair

    base = PAIR_PRESETS["talc-micro-nano"]
    preset = dataclasses.replace(
        base,
        name="report-small",
        particles=dataclasses.replace(base.particles, esd_min_um=0.6, esd_max_um=4.0),
        micro_shape=(40, 40, 40),
        nano_shape=(40, 40, 40),
        micro_ct=dataclasses.replace(base.micro_ct, method="image"),
        nano_ct=dataclasses.replace(base.nano_ct, method="image"),
        nano_supersample=1,
    )
    pair = make_scale_pair(preset, seed=21, scale_ratio=4.0, rotation_deg=20.0, tilt_deg=3.0)
    yy, xx = np.indices(pair.nano_ct.shape[1:])
    centre = (np.asarray(pair.nano_ct.shape[1:]) - 1) / 2
    pillar = np.hypot(yy - centre[0], xx - centre[1]) <= pair.nano_pillar_radius_voxels
    table = cross_scale_psd(
        pair.nano_particles,
        pair.micro_particles,
        nano_spacing_um=pair.nano_voxel_size_um,
        micro_spacing_um=pair.micro_voxel_size_um,
        region_mask=pair.nano_region_mask(),
        nano_mask=np.broadcast_to(pillar, pair.nano_ct.shape),
    )
    matrix = pair.transform.matrix.copy()
    matrix[:3, 3] += (0.25, -0.5, 0.375)  # a found pose half a voxel off the truth
    found = RigidTransform(matrix)
    result = VolumeRegistration(
        transform=found,
        scale=found.scale,
        score=0.8125,
        runner_up=0.4375,
        confident=True,
        corners=found.corners(pair.nano_ct.shape),
        moving_shape=pair.nano_ct.shape,
        fixed_shape=pair.micro_ct.shape,
        fixed_spacing_um=(pair.micro_voxel_size_um,) * 3,
        moving_spacing_um=(pair.nano_voxel_size_um,) * 3,
        field_of_view_radius=float(pair.nano_pillar_radius_voxels),
    )
    overlay = tmp_path_factory.mktemp("cross") / "overlay.png"
    write_volume_overlay(overlay, pair.micro_ct, pair.nano_ct, result, truth=pair.transform)
    return CrossScaleReport(
        table=table,
        registration=result.to_dict(),
        overlay_png=overlay.read_bytes(),
        pose_error_voxels=corner_error(found, pair.transform, pair.nano_ct.shape),
    )


@pytest.fixture(scope="module")
def cross_data(full_data, cross_scale):
    return dataclasses.replace(full_data, cross_scale=cross_scale)


@pytest.fixture(scope="module")
def cross_report(cross_data, tmp_path_factory):
    path = tmp_path_factory.mktemp("cross-report") / "report.html"
    return write_report(path, cross_data).read_text(encoding="utf-8")


def _light(data: ReportData, **changes) -> ReportData:
    """`data` without its slowest optional parts, for tests that only look at one section."""
    return dataclasses.replace(
        data, sections=[], stereology=None, representativeness=None, **changes
    )


def _section_ids(html: str) -> list[str]:
    return [a["id"] for tag, a in _Document(html).elements if tag == "section"]


def test_cross_scale_is_the_last_field_of_report_data():
    assert [f.name for f in dataclasses.fields(ReportData)][-2:] == [
        "particle_model_figure",
        "cross_scale",
    ]
    assert [f.name for f in dataclasses.fields(CrossScaleReport)] == [
        "table",
        "registration",
        "overlay_png",
        "pose_error_voxels",
    ]


def test_cross_scale_figures_and_section_only_when_given(full_data, full_report, cross_data):
    ids = figure_ids(cross_data)
    stereology = ids.index("fig-stereology")
    assert ids == [*figure_ids(full_data)[: stereology + 1], *_CROSS_IDS]
    assert not set(_CROSS_IDS) & set(figure_ids(full_data))
    without_overlay = dataclasses.replace(
        cross_data, cross_scale=dataclasses.replace(cross_data.cross_scale, overlay_png=None)
    )
    assert figure_ids(without_overlay)[-1:] == ["fig-cross-scale-psd"]
    assert "fig-cross-scale-overlay" not in figure_ids(without_overlay)
    # Without the part there is no trace of it.
    html = full_report[1]
    assert 'id="cross-scale"' not in html and "Across length scales" not in html
    assert 'id="table-cross-scale' not in html and "cross-scale-warning" not in html
    # With a model figure too, the cross-scale figures come before it.
    model = _light(cross_data, particle_model_figure=cross_data.cross_scale.overlay_png)
    assert figure_ids(model)[-3:] == [*_CROSS_IDS, "fig-particle-model"]
    document = _Document(render_report(_light(without_overlay)))
    found = [image["id"] for figure in document.figures for image in figure["images"]]
    assert found[-1] == "fig-cross-scale-psd" and "fig-cross-scale-overlay" not in found


def test_cross_scale_section_is_placed_and_listed(cross_data, cross_report):
    document = _Document(cross_report)
    sections = _section_ids(cross_report)
    position = sections.index("cross-scale")
    assert sections[position - 1] == "stereology" and sections[position + 1] == "accuracy"
    links = [a["href"] for tag, a in document.elements if tag == "a"]
    assert links.index("#cross-scale") == links.index("#stereology") + 1
    assert links[links.index("#cross-scale") + 1] == "#accuracy"
    found = [image["id"] for figure in document.figures for image in figure["images"]]
    assert found == figure_ids(cross_data)
    captions = {figure["id"]: figure["caption"] for figure in document.figures}
    assert "cut-off" in captions["figure-fig-cross-scale-psd"]
    assert "95 %" in captions["figure-fig-cross-scale-psd"]
    # The overlay is the PNG given, byte for byte.
    (overlay,) = [f for f in document.figures if f["id"] == "figure-fig-cross-scale-overlay"]
    assert _decode_png(overlay["images"][0]["src"]) == cross_data.cross_scale.overlay_png
    # What the coarser scale misses is said in words.
    for words in ("merge", "fine particles", "shifted to larger sizes"):
        assert words in cross_report
    summary = cross_data.cross_scale.table.attrs["summary"]
    assert f"the nano volume holds {summary['nano']['n_particles']:,} particles" in cross_report
    assert "cross-scale-warning" not in cross_report


def test_cross_scale_numbers_equal_the_source(cross_data, cross_report):
    document = _Document(cross_report)
    cross = cross_data.cross_scale
    table = cross.table.reset_index(drop=True)
    summary = table.attrs["summary"]
    # summary table: one row per source, values from table.attrs["summary"]
    rows = document.tables["table-cross-scale-summary"]
    assert [key for key, _ in rows] == ["nano", "micro region", "micro pieces"]
    for column in ("n_particles", "median_esd_um", "share_below_micro_cutoff"):
        shown = document.column("table-cross-scale-summary", column)
        for source in ("nano", "micro region", "micro pieces"):
            assert _same(shown[source], summary[source][column]), (column, source)
    cutoffs = document.column("table-cross-scale-summary", "cutoff_um")
    assert _same(cutoffs["nano"], summary["nano_cutoff_um"])
    assert _same(cutoffs["micro region"], summary["micro_cutoff_um"])
    # the full table, collapsed, every number as given
    assert 'id="table-cross-scale"' in cross_report
    for column in table.columns:
        shown = document.column("table-cross-scale", column)
        assert len(shown) == len(table), column
        for key, value in shown.items():
            if column == "source":
                assert value is None
            else:
                assert _same(value, table.at[int(key), column]), (column, key)
    details = cross_report.index('<div class="scroll"><table id="table-cross-scale"')
    assert cross_report.rfind("<details", 0, details) > cross_report.rfind("</details>", 0, details)
    # the registration
    registration = cross.registration
    values = document.column("table-cross-scale-registration", "value")
    for key in ("scale", "score", "runner_up", "tilt_deg", "field_of_view_radius_voxels"):
        assert _same(values[key], registration[key]), key
    assert values["confident"] == "true"
    assert _same(values["pose_error_voxels"], cross.pose_error_voxels)
    assert 0 < cross.pose_error_voxels < 1
    assert float(values["voxel_size_ratio"]) == pytest.approx(4.0)
    assert float(values["voxel_size_ratio"]) * registration["scale"] == pytest.approx(1.0)
    assert _same(values["fixed_voxel_size_um"], registration["fixed_voxel_size_um"][0])
    assert _same(values["moving_voxel_size_um"], registration["moving_voxel_size_um"][0])
    text = {
        key: cells[1]["text"] for key, cells in document.tables["table-cross-scale-registration"]
    }
    assert text["fixed_shape"] == "40 × 40 × 40" and text["confident"] == "yes"


def test_cross_scale_match_that_is_not_confident_is_flagged(cross_data):
    cross = cross_data.cross_scale
    registration = {**cross.registration, "confident": False, "runner_up": None}
    data = _light(
        cross_data,
        cross_scale=dataclasses.replace(cross, registration=registration, pose_error_voxels=None),
    )
    html = render_report(data)
    document = _Document(html)
    warnings = [a for tag, a in document.elements if a.get("id") == "cross-scale-warning"]
    assert len(warnings) == 1 and "callout" in warnings[0]["class"]
    assert "not confident" in html
    cells = {key: cells[1] for key, cells in document.tables["table-cross-scale-registration"]}
    assert cells["confident"]["text"] == "NO" and cells["confident"]["data-value"] == "false"
    assert cells["runner_up"]["text"] == "–" and cells["runner_up"].get("data-value") is None
    assert "pose_error_voxels" not in cells
    captions = {figure["id"]: figure["caption"] for figure in document.figures}
    assert "not a confident match" in captions["figure-fig-cross-scale-overlay"]


def test_cross_scale_overlay_from_a_file_and_a_table_without_summary(cross_data, tmp_path):
    cross = cross_data.cross_scale
    overlay = tmp_path / "overlay.png"
    overlay.write_bytes(cross.overlay_png)
    bare = cross.table.copy()
    bare.attrs = {}
    data = _light(
        cross_data, cross_scale=dataclasses.replace(cross, table=bare, overlay_png=overlay)
    )
    document = _Document(render_report(data))
    (figure,) = [f for f in document.figures if f["id"] == "figure-fig-cross-scale-overlay"]
    assert _decode_png(figure["images"][0]["src"]) == cross.overlay_png
    counts = document.column("table-cross-scale-summary", "n_particles")
    nano = bare[bare["source"] == "nano"]["n_particles"].sum()
    assert _same(counts["nano"], nano)
    assert document.column("table-cross-scale-summary", "median_esd_um")["nano"] is None


def test_cross_scale_figure_is_drawn_without_pyplot(cross_data):
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    from corrtomo.report._figures_charts import cross_scale_figure

    before = plt.get_fignums()
    figure = cross_scale_figure(cross_data.cross_scale.table)
    assert isinstance(figure, Figure) and plt.get_fignums() == before
    (ax,) = figure.axes
    assert ax.get_xscale() == "log"
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    summary = cross_data.cross_scale.table.attrs["summary"]
    assert sorted(line.get_xdata()[0] for line in dashed) == [
        summary["nano_cutoff_um"],
        summary["micro_cutoff_um"],
    ]
    assert len(ax.collections) == 1  # the pieces' band
    empty = cross_scale_figure(cross_data.cross_scale.table.iloc[:0])
    assert isinstance(empty, Figure)


def test_cross_scale_bad_input_gives_one_line_errors(cross_data, tmp_path):
    cross = cross_data.cross_scale
    bad_parts = [
        (cross.table.drop(columns=["density_per_1000um3", "cutoff_um"]), "lacks column"),
        (np.zeros((3, 3)), "must be a DataFrame"),
    ]
    for table, words in bad_parts:
        data = _light(cross_data, cross_scale=dataclasses.replace(cross, table=table))
        with pytest.raises(InputError, match=f"^cross_scale: .*{words}") as caught:
            render_report(data)
        assert "\n" not in str(caught.value)
    for changes, words in (
        ({"registration": [1, 2]}, "registration must be a dict"),
        ({"registration": {"scale": 0.25}}, "lacks key"),
        ({"overlay_png": b"not a png"}, "not a PNG"),
        ({"overlay_png": tmp_path / "missing.png"}, "no such file"),
        ({"overlay_png": 3}, "overlay_png must be"),
        ({"pose_error_voxels": "small"}, "pose_error_voxels"),
    ):
        data = _light(cross_data, cross_scale=dataclasses.replace(cross, **changes))
        with pytest.raises(InputError, match=f"^cross_scale: .*{words}"):
            render_report(data)
    with pytest.raises(InputError, match=r"^cross_scale: expected a CrossScaleReport"):
        render_report(_light(cross_data, cross_scale={"table": cross.table}))


def test_cross_scale_report_is_self_contained_and_modest(cross_report):
    _assert_self_contained(cross_report)
    assert len(cross_report.encode("utf-8")) < 3_000_000


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="chromium is not installed (/usr/bin/chromium); CI has none"
)
def test_cross_scale_report_renders_in_headless_chromium(cross_data, cross_report, tmp_path):
    _assert_renders_in_chromium(cross_report, figure_ids(cross_data), tmp_path)
