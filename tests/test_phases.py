"""Tests of corrtomo.phases: formulas, attenuation (xraydb), phase libraries, tube spectra."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xraydb
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from corrtomo._shared import InputError
from corrtomo.phases import (
    MATERIALS,
    PRESET_NAMES,
    Material,
    Phase,
    PhaseLibrary,
    Spectrum,
    linear_attenuation_coefficient,
    load_phase_library,
    mean_atomic_number,
    monochromatic,
    parse_formula,
    preset_library,
    tube_spectrum,
    weight_fractions,
)
from corrtomo.phases._spectrum import _kramers_weights

# Table 1 of seeds/000_22e43a0dd9515ebb.txt: attenuation length (um) at 5.4 keV.
TABLE_1 = [
    ("calcite", "CaCO3", 2.75, 15.3),
    ("dolomite", "CaMg(CO3)2", 2.86, 23.5),
    ("magnesite", "MgCO3", 3.00, 55.4),
    ("talc", "Mg3Si4O10(OH)2", 2.76, 34.7),
]


# -- formulas ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("formula", "expected"),
    [
        ("CaCO3", {"Ca": 1, "C": 1, "O": 3}),
        ("CaMg(CO3)2", {"Ca": 1, "Mg": 1, "C": 2, "O": 6}),
        ("Mg3Si4O10(OH)2", {"Mg": 3, "Si": 4, "O": 12, "H": 2}),
        ("Ca0.5Mg0.5CO3", {"Ca": 0.5, "Mg": 0.5, "C": 1, "O": 3}),
        ("K(Mg(Al(OH)2)3)2", {"K": 1, "Mg": 2, "Al": 6, "O": 12, "H": 12}),
        ("Ca2[Al2SiO7]", {"Ca": 2, "Al": 2, "Si": 1, "O": 7}),
        ("CaSO4·2H2O", {"Ca": 1, "S": 1, "O": 6, "H": 4}),
        ("MgSO4*7H2O", {"Mg": 1, "S": 1, "O": 11, "H": 14}),
        ("CaSO4·0.5H2O", {"Ca": 1, "S": 1, "O": 4.5, "H": 1}),
        (" Ca C O3 ", {"Ca": 1, "C": 1, "O": 3}),
    ],
)
def test_parse_formula(formula, expected):
    counts = parse_formula(formula)
    assert set(counts) == set(expected)
    assert_allclose([counts[e] for e in expected], list(expected.values()))


@pytest.mark.parametrize(
    "formula",
    ["", "   ", "Xx2", "Ca(CO3", "CaCO3)", "Ca0", "caco3", "()", "CaCO3·", "Ca-CO3", "Ca(CO3]2"],
)
def test_parse_formula_rejects_bad_formulas(formula):
    with pytest.raises(InputError) as info:
        parse_formula(formula)
    message = str(info.value)
    assert message.startswith("cannot parse chemical formula") and "\n" not in message
    if formula.strip():  # InputError collapses runs of whitespace
        assert repr(formula) in message


def test_parse_formula_rejects_non_strings():
    with pytest.raises(InputError):
        parse_formula(42)


@pytest.mark.parametrize(
    ("formula", "expected"),
    [
        ("CaCO3", {"Ca": 0.4004, "C": 0.1200, "O": 0.4796}),
        ("MgCO3", {"Mg": 0.2883, "C": 0.1425, "O": 0.5693}),
        ("H2O", {"H": 0.1119, "O": 0.8881}),
        ("Mg3Si4O10(OH)2", {"Mg": 0.1923, "Si": 0.2962, "O": 0.5062, "H": 0.0053}),
    ],
)
def test_weight_fractions_of_known_minerals(formula, expected):
    fractions = weight_fractions(formula)
    assert set(fractions) == set(expected)
    for element, value in expected.items():
        assert fractions[element] == pytest.approx(value, abs=1e-3)


def test_hydrate_equals_written_out_formula():
    assert weight_fractions("CaSO4·2H2O") == pytest.approx(weight_fractions("CaSO6H4"))


_elements = st.sampled_from(["H", "C", "O", "Na", "Mg", "Al", "Si", "Ca", "Fe", "Mn", "Li"])


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(_elements, st.integers(1, 12), min_size=1, max_size=5), st.integers(1, 4))
def test_weight_fractions_sum_to_one_and_ignore_grouping(counts, multiplier):
    formula = "".join(f"{e}{n}" for e, n in counts.items())
    fractions = weight_fractions(formula)
    assert sum(fractions.values()) == pytest.approx(1.0, abs=1e-12)
    grouped = weight_fractions(f"({formula}){multiplier}")
    assert grouped == pytest.approx(fractions, abs=1e-12)
    assert parse_formula(f"({formula}){multiplier}") == pytest.approx(
        {e: n * multiplier for e, n in counts.items()}
    )


def test_mean_atomic_number():
    assert mean_atomic_number("CaCO3") == pytest.approx(12.565, abs=0.01)
    assert mean_atomic_number("CaCO3", weighting="electron") == pytest.approx(628 / 50)
    assert mean_atomic_number("CaCO3", weighting="atom") == pytest.approx(50 / 5)
    assert mean_atomic_number("Fe") == pytest.approx(26)
    with pytest.raises(InputError):
        mean_atomic_number("CaCO3", weighting="volume")


# -- attenuation ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "formula", "density", "paper_length_um"), TABLE_1)
def test_table_1_attenuation_lengths_at_5_4_kev(
    name, formula, density, paper_length_um, record_property
):
    phase = preset_library("talc-saxolite").by_name(name)
    assert (phase.formula, phase.density) == (formula, density)
    length_um = phase.attenuation_length_um(5.4)
    deviation = (length_um - paper_length_um) / paper_length_um
    record_property("attenuation_length_um", length_um)
    record_property("relative_deviation", deviation)
    print(
        f"{name}: computed {length_um:.2f} um, paper {paper_length_um} um, deviation {deviation:+.1%}"
    )
    assert abs(deviation) < 0.12


def test_linear_attenuation_matches_xraydb_material_mu():
    energies_kev = np.array([5.4, 8.0, 20.0, 60.0])
    for formula, density in [("CaCO3", 2.75), ("MgAl2O4", 3.58), ("LiAlO2", 2.615)]:
        expected = xraydb.material_mu(formula, energies_kev * 1000, density=density) / 1e4
        assert_allclose(
            linear_attenuation_coefficient(formula, density, energies_kev), expected, rtol=1e-10
        )


def test_attenuation_ordering_of_talc_saxolite_at_5_4_kev():
    library = preset_library("talc-saxolite")
    mu = library.linear_attenuation(5.4)
    order = [library.names[i] for i in np.argsort(mu)[::-1]]
    assert order == ["calcite", "dolomite", "talc", "magnesite"]


@settings(max_examples=20, deadline=None)
@given(st.floats(0.1, 20.0), st.floats(1.0, 100.0))
def test_attenuation_is_linear_in_density(density, energy_kev):
    base = linear_attenuation_coefficient("CaMg(CO3)2", 1.0, energy_kev)
    assert linear_attenuation_coefficient("CaMg(CO3)2", density, energy_kev) == pytest.approx(
        density * base, rel=1e-12
    )


def test_attenuation_falls_with_energy_away_from_edges():
    # Ca K edge at 4.04 keV, no edge of C, O, Mg, Si, Ca above it.
    energies_kev = np.linspace(4.5, 150.0, 60)
    mu = preset_library("talc-saxolite").linear_attenuation(energies_kev)
    assert mu.shape == (4, 60)
    assert np.all(np.diff(mu, axis=1) < 0)
    # across the Ca K edge, calcite's attenuation jumps up
    calcite = Phase(1, "calcite", "CaCO3", 2.75)
    assert calcite.linear_attenuation(4.1) > 3 * calcite.linear_attenuation(4.0)


def test_attenuation_shapes_and_units():
    calcite = Phase(1, "calcite", "CaCO3", 2.75)
    assert isinstance(calcite.linear_attenuation(5.4), float)
    assert calcite.linear_attenuation(np.array([[5.4, 6.0]])).shape == (1, 2)
    assert calcite.attenuation_length_um(5.4) == pytest.approx(1 / calcite.linear_attenuation(5.4))
    # 1/um, not 1/cm: the calcite attenuation length at 5.4 keV is tens of micrometres
    assert 10 < calcite.attenuation_length_um(5.4) < 30


@pytest.mark.parametrize("energy_kev", [0.0, -5.0, 0.05, 900.0, float("nan"), "x"])
def test_attenuation_rejects_bad_energies(energy_kev):
    with pytest.raises(InputError):
        linear_attenuation_coefficient("CaCO3", 2.75, energy_kev)


@pytest.mark.parametrize("density", [0.0, -1.0, float("inf"), "2.7", None, True])
def test_attenuation_rejects_bad_densities(density):
    with pytest.raises(InputError):
        linear_attenuation_coefficient("CaCO3", density, 10.0)


def test_materials_presets():
    assert set(MATERIALS) == {"epoxy", "air", "carbon-black"}
    assert 1.15 <= MATERIALS["epoxy"].density <= 1.2
    air = MATERIALS["air"].weight_fractions
    assert air["N"] == pytest.approx(0.7553, abs=2e-3) and air["O"] == pytest.approx(
        0.2318, abs=2e-3
    )
    calcite_mu = preset_library("talc-saxolite").linear_attenuation(5.4)[0]
    mu = {name: material.linear_attenuation(5.4) for name, material in MATERIALS.items()}
    assert mu["air"] < mu["epoxy"] < mu["carbon-black"] < calcite_mu
    assert MATERIALS["air"].to_dict() == {
        "name": "air",
        "formula": "N1.5617O0.4198Ar0.00934C0.0004",
        "density": 1.20479e-3,
    }
    with pytest.raises(InputError):
        Material("bad", "Qq", 1.0)


# -- phase library -------------------------------------------------------------------------------
def test_presets():
    assert set(PRESET_NAMES) == {"talc-saxolite", "li-slag"}
    talc = preset_library("talc-saxolite")
    assert talc.names == ["calcite", "dolomite", "magnesite", "talc"]
    assert talc.ids.dtype == np.uint8 and talc.ids.tolist() == [1, 2, 3, 4]
    assert_allclose(talc.densities, [2.75, 2.86, 3.00, 2.76])
    slag = preset_library("li-slag")
    assert slag.names == ["lialo2", "gehlenite", "spinel", "slag-glass", "galaxite"]
    assert slag.by_id(1).formula == "LiAlO2" and slag.by_id(1).density == pytest.approx(2.615)
    for library in (talc, slag):
        assert len(set(library.colors.values())) == len(library)
    with pytest.raises(InputError, match="talc-saxolite"):
        preset_library("granite")


def test_library_lookups_and_matrices():
    library = preset_library("talc-saxolite")
    assert len(library) == 4 and [p.id for p in library] == [1, 2, 3, 4]
    assert library.by_name("talc").id == library.id_of("talc") == 4
    assert library.name_of(2) == "dolomite" and library.by_id(np.uint8(3)).name == "magnesite"
    assert "talc" in library and 4 in library and 5 not in library
    assert library.elements == ["H", "C", "O", "Mg", "Si", "Ca"]
    matrix = library.weight_fraction_matrix()
    assert matrix.shape == (4, 6) and matrix.dtype == np.float64
    assert_allclose(matrix.sum(axis=1), 1.0)
    assert_allclose(library.weight_fraction_matrix(["Ca", "Fe"])[:, 1], 0.0)
    assert library.mean_atomic_numbers[0] == pytest.approx(12.565, abs=0.01)
    with pytest.raises(InputError, match="unknown phase id 9"):
        library.by_id(9)
    with pytest.raises(InputError, match="granite"):
        library.id_of("granite")


def test_default_colors_fill_gaps_without_clashes():
    library = PhaseLibrary(
        [
            Phase(3, "a", "SiO2", 2.65),
            Phase(1, "b", "CaCO3", 2.71, color=(230, 159, 0)),
            Phase(2, "c", "C", 2.2),
        ]
    )
    colors = library.colors
    assert colors[1] == (230, 159, 0)
    assert len(set(colors.values())) == 3
    assert Phase(1, "x", "C", 1.0, color="#0072B2").color == (0, 114, 178)


@pytest.mark.parametrize(
    ("phases", "match"),
    [
        ([], "at least one"),
        ([Phase(1, "a", "C", 1.0), Phase(1, "b", "C", 1.0)], "duplicate phase id 1"),
        ([Phase(1, "a", "C", 1.0), Phase(2, "a", "C", 1.0)], "duplicate phase name"),
    ],
)
def test_library_validation(phases, match):
    with pytest.raises(InputError, match=match):
        PhaseLibrary(phases)


@pytest.mark.parametrize(
    "fields",
    [
        {"id": 0},
        {"id": 256},
        {"id": 1.5},
        {"id": True},
        {"name": ""},
        {"formula": "Zz"},
        {"density": -1},
        {"color": [300, 0, 0]},
        {"color": [1, 2]},
    ],
)
def test_phase_validation(fields):
    arguments = {"id": 1, "name": "calcite", "formula": "CaCO3", "density": 2.75} | fields
    with pytest.raises(InputError):
        Phase(**arguments)


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_save_load_round_trip(tmp_path, suffix, preset):
    library = preset_library(preset)
    path = library.save(tmp_path / f"library{suffix}")
    assert load_phase_library(path) == library
    assert load_phase_library(str(path)) == library
    assert PhaseLibrary.from_dict(library.to_dict()) == library
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_round_trip_keeps_missing_colors_missing(tmp_path):
    library = PhaseLibrary([Phase(7, "quartz", "SiO2", 2.65)])
    loaded = load_phase_library(library.save(tmp_path / "q.json"))
    assert loaded.by_id(7).color is None and loaded == library


def test_load_phase_library_sources(tmp_path):
    library = preset_library("li-slag")
    assert load_phase_library("li-slag") is library
    assert load_phase_library(library) is library
    assert load_phase_library(library.to_dict()) == library
    with pytest.raises(InputError, match="known presets: talc-saxolite, li-slag"):
        load_phase_library("granite")


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


GOOD_ENTRY = "{id: 1, name: calcite, formula: CaCO3, density: 2.75}"
BAD_FILES = [
    ("bad.yaml", "phases: [{id: 1, name: calcite", "not valid YAML"),
    ("bad.json", '{"phases": [', "not valid JSON"),
    ("nokey.yaml", "minerals: []", "missing key 'phases'"),
    ("list.yaml", f"- {GOOD_ENTRY}", "expected a mapping"),
    ("empty.yaml", "phases: []", "non-empty list"),
    ("entry.yaml", "phases: [calcite]", "expected a mapping"),
    ("missing.yaml", "phases: [{id: 1, name: calcite, formula: CaCO3}]", "missing key 'density'"),
    ("typo.yaml", "phases: [{id: 1, name: calcite, formula: CaCO3, densty: 2.7}]", "unknown key 'densty'"),
    ("idtype.yaml", "phases: [{id: one, name: calcite, formula: CaCO3, density: 2.75}]", "id must be"),
    ("density.yaml", "phases: [{id: 1, name: calcite, formula: CaCO3, density: heavy}]", "density"),
    ("range.yaml", "phases: [{id: 256, name: calcite, formula: CaCO3, density: 2.75}]", "1..255"),
    ("zero.yaml", "phases: [{id: 0, name: calcite, formula: CaCO3, density: 2.75}]", "1..255"),
    ("dup.yaml", f"phases: [{GOOD_ENTRY}, {{id: 1, name: talc, formula: Mg3Si4O10(OH)2, density: 2.76}}]",
     "duplicate phase id 1"),
    ("dupname.yaml", f"phases: [{GOOD_ENTRY}, {{id: 2, name: calcite, formula: CaCO3, density: 2.7}}]",
     "duplicate phase name"),
    ("formula.yaml", "phases: [{id: 1, name: calcite, formula: CaCO3)), density: 2.75}]", "cannot parse"),
    ("element.yaml", "phases: [{id: 1, name: unobtainium, formula: Uo2, density: 9}]", "unknown element 'Uo'"),
    ("color.yaml", "phases: [{id: 1, name: calcite, formula: CaCO3, density: 2.75, color: red}]", "color"),
]  # fmt: skip


@pytest.mark.parametrize(("file_name", "text", "match"), BAD_FILES)
def test_load_phase_library_errors_name_the_file(tmp_path, file_name, text, match):
    path = _write(tmp_path / file_name, text)
    with pytest.raises(InputError, match=match) as info:
        load_phase_library(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message


def test_load_phase_library_missing_file_and_directory(tmp_path):
    for path in (tmp_path / "absent.yaml", tmp_path):
        with pytest.raises(InputError) as info:
            load_phase_library(path)
        assert str(info.value).startswith(str(path))


def test_json_file_is_the_contract_format(tmp_path):
    data = {
        "phases": [
            {"id": 1, "name": "calcite", "formula": "CaCO3", "density": 2.75, "color": [1, 2, 3]}
        ]
    }
    path = _write(tmp_path / "library.json", json.dumps(data))
    library = load_phase_library(path)
    assert library.colors == {1: (1, 2, 3)} and library.to_dict() == data


def test_save_rejects_unknown_suffix(tmp_path):
    with pytest.raises(InputError, match=r"\.yaml"):
        preset_library("li-slag").save(tmp_path / "library.txt")


# -- spectra -------------------------------------------------------------------------------------
def test_spectrum_normalises_and_validates():
    spectrum = Spectrum([10.0, 20.0], [1.0, 3.0])
    assert_allclose(spectrum.weights, [0.25, 0.75])
    assert spectrum.mean_energy_kev == pytest.approx(17.5)
    assert spectrum == Spectrum(np.array([10.0, 20.0]), np.array([2.0, 6.0]))
    with pytest.raises(ValueError, match="read-only"):
        spectrum.weights[0] = 1.0
    for energies, weights in [
        ([10.0], [1.0, 2.0]),
        ([10.0], [-1.0]),
        ([10.0], [0.0]),
        ([0.0], [1.0]),
        ([], []),
    ]:
        with pytest.raises(InputError):
            Spectrum(energies, weights)
    assert monochromatic(5.4).mean_energy_kev == pytest.approx(5.4)
    assert_allclose(spectrum.energy_weighted().weights, [1 / 7, 6 / 7])


@pytest.fixture(scope="module")
def tube_80kv():
    return tube_spectrum(80.0)


@pytest.mark.parametrize("model", ["auto", "kramers"])
def test_tube_spectrum_vanishes_above_kvp(model):
    spectrum = tube_spectrum(60.0, model=model, filters_mm={})
    assert spectrum.energies_kev.max() <= 60.0
    assert spectrum.weights.sum() == pytest.approx(1.0)
    assert 5.0 < spectrum.mean_energy_kev < 45.0
    # the last bins (just below kVp) hold little intensity
    assert spectrum.weights[-1] < 0.2 * spectrum.weights.max()


def test_kramers_law_shape():
    energies, weights = _kramers_weights(100.0, "W", 1.0)
    assert energies[0] == pytest.approx(1.5) and energies[-1] == pytest.approx(99.5)
    assert np.all(np.diff(weights) < 0)  # (E0 - E) / E falls monotonically
    assert weights[-1] == pytest.approx(100 * np.log(100 / 99) - 1)


@pytest.mark.parametrize("model", ["auto", "kramers"])
def test_filtration_hardens_the_spectrum(model):
    means = [
        tube_spectrum(80.0, model=model, filters_mm={"Al": thickness}).mean_energy_kev
        for thickness in (0.0, 0.5, 2.0, 8.0)
    ]
    assert np.all(np.diff(means) > 0)
    copper = tube_spectrum(80.0, model=model, filters_mm={"Cu": 0.5, "kapton": 0.1}).mean_energy_kev
    assert copper > means[1]


def test_spekpy_spectrum_has_tungsten_lines():
    spectrum = tube_spectrum(100.0, model="spekpy", filters_mm={"Al": 2.0}, energy_bin_kev=0.5)
    weights = dict(zip(spectrum.energies_kev.round(2), spectrum.weights, strict=True))
    # W K-alpha lines at 58-59.3 keV stand above the bremsstrahlung continuum around them
    assert weights[59.25] > 1.5 * weights[55.25]


@pytest.mark.parametrize(
    "arguments",
    [
        {"kvp": 0.5},
        {"kvp": 80, "anode": "Qq"},
        {"kvp": 80, "filters_mm": {"Al": -1.0}},
        {"kvp": 80, "filters_mm": {"unobtainium": 1.0}},
        {"kvp": 80, "filters_mm": {"Mg3Si4O10(OH)2": 1.0}},  # formula of unknown density
        {"kvp": 80, "filters_mm": {"Ca(CO3": 1.0}},
        {"kvp": 80, "model": "monte-carlo"},
        {"kvp": 100, "anode": "Mo", "model": "spekpy"},
        {"kvp": 80, "energy_bin_kev": 0.0},
    ],
)
def test_tube_spectrum_rejects_bad_arguments(arguments):
    with pytest.raises(InputError):
        tube_spectrum(**arguments)


def test_effective_attenuation_monochromatic_equals_linear():
    library = preset_library("talc-saxolite")
    for thickness_um in (0.0, 10.0, 100.0):
        assert_allclose(library.effective_attenuation(monochromatic(5.4), thickness_um=thickness_um),
                        library.linear_attenuation(5.4), rtol=1e-12)  # fmt: skip


def test_effective_attenuation_lies_within_spectrum_and_hardens(tube_80kv):
    library = preset_library("li-slag")
    mu = library.linear_attenuation(tube_80kv.energies_kev)
    inside = tube_80kv.weights > 1e-6
    thicknesses_um = [0.0, 100.0, 1000.0, 5000.0]
    effective = np.stack(
        [library.effective_attenuation(tube_80kv, thickness_um=t) for t in thicknesses_um]
    )
    assert effective.shape == (4, len(library))
    assert np.all(effective >= mu[:, inside].min(axis=1)) and np.all(
        effective <= mu[:, inside].max(axis=1)
    )
    assert np.all(np.diff(effective, axis=0) < 0)  # beam hardening: mu_eff falls with thickness
    assert_allclose(effective[0], mu @ tube_80kv.weights)
    # the library agrees with the phase-by-phase method
    phase = library.by_name("spinel")
    assert phase.effective_attenuation(tube_80kv, thickness_um=100.0) == pytest.approx(
        effective[1, 2]
    )
    with pytest.raises(InputError):
        library.effective_attenuation(tube_80kv, thickness_um=-1.0)
