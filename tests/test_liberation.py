"""Liberation (Eq. 1-2), spectra, size distributions, grain curves and 2D-vs-3D stereology."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from corrtomo._shared import InputError
from corrtomo.liberation import (
    GRADE_CLASSES,
    composition_from_table,
    composition_table,
    geometric_size_bins,
    grain_particle_volume,
    liberation_degree,
    liberation_spectrum,
    liberation_table,
    section_liberation,
    section_particle_table,
    size_distribution,
    stereology_comparison,
    virtual_sections,
)

NAMES = {1: "A", 2: "B"}


@pytest.fixture(scope="module")
def sample() -> tuple[np.ndarray, np.ndarray]:
    """Four interior particles of known composition (phase 1 = A, 2 = B), voxel size 1.

    1: pure A, 6x6x6 = 216 voxels. 2: binary, half A (108), half B (108). 3: sandwich A|B|A along
    x: A 144 voxels in two grains, B 72. 4: speck, 5x5x8 = 200 voxels of A with one voxel of B
    (vf_A = 0.995: free at 0.99, not at 0.999).
    """
    particles = np.zeros((14, 24, 12), dtype=np.uint32)
    phases = np.zeros(particles.shape, dtype=np.uint8)
    particles[1:7, 1:7, 1:7] = 1
    phases[1:7, 1:7, 1:7] = 1
    particles[1:7, 9:15, 1:7] = 2
    phases[1:7, 9:15, 1:4] = 1
    phases[1:7, 9:15, 4:7] = 2
    particles[1:7, 17:23, 5:11] = 3
    phases[1:7, 17:23, 5:7] = 1
    phases[1:7, 17:23, 7:9] = 2
    phases[1:7, 17:23, 9:11] = 1
    particles[8:13, 1:6, 2:10] = 4
    phases[8:13, 1:6, 2:10] = 1
    phases[10, 3, 5] = 2
    return particles, phases


@pytest.fixture(scope="module")
def table(sample) -> pd.DataFrame:
    return composition_table(*sample, phase_names=NAMES)


def overall(result: pd.DataFrame, phase: str, column: str = "liberation_degree") -> float:
    row = result[(result["phase"] == phase) & result["esd_min_um"].isna()]
    assert len(row) == 1
    return float(row[column].iloc[0])


def test_composition_of_hand_built_particles(table):
    assert table["label"].tolist() == [1, 2, 3, 4]
    assert table["volume_voxels"].tolist() == [216, 216, 216, 200]
    assert_allclose(table["vf_A"], [1.0, 0.5, 144 / 216, 199 / 200], rtol=0, atol=1e-15)
    assert_allclose(table["vf_B"], [0.0, 0.5, 72 / 216, 1 / 200], rtol=0, atol=1e-15)
    assert not table["touches_border"].any()


def test_exact_liberation_degree_pure_binary_sandwich_speck(table):
    result = liberation_table(table, threshold=0.99)
    # free A: pure (216) + speck (199); all A: 216 + 108 + 144 + 199
    assert overall(result, "A") == pytest.approx(415 / 667, rel=1e-15)
    assert overall(result, "A", "volume_free_um3") == pytest.approx(415.0)
    assert overall(result, "A", "volume_total_um3") == pytest.approx(667.0)
    assert overall(result, "A", "n_particles") == 4
    assert overall(result, "A", "n_free") == 2
    assert overall(result, "B") == 0.0
    assert overall(result, "B", "volume_total_um3") == pytest.approx(181.0)
    # the 0.5 % speck of B stays free for A at 0.99, not at 0.999
    assert liberation_degree(table, threshold=0.999)["A"] == pytest.approx(216 / 667, rel=1e-15)
    assert liberation_degree(table) == pytest.approx({"A": 415 / 667, "B": 0.0}, rel=1e-15)


def test_free_is_strictly_above_threshold():
    df = pd.DataFrame(
        {
            "esd_um": [1.0, 1.0],
            "volume_um3": [1.0, 1.0],
            "touches_border": [False, False],
            "vf_A": [0.5, 1.0],
        }
    )
    assert liberation_degree(df, threshold=0.5)["A"] == pytest.approx(1 / 1.5)
    with pytest.raises(InputError, match="threshold"):
        liberation_table(df, threshold=1.0)


def test_liberation_layout_and_size_classes(table):
    edges = [5.0, 7.4, 7.5, 20.0]  # ESD of 216 voxels: 7.4441; of 200 voxels: 7.2558
    result = liberation_table(table, size_bins_um=edges)
    contract = [
        "phase",
        "esd_min_um",
        "esd_max_um",
        "n_particles",
        "volume_free_um3",
        "volume_total_um3",
        "liberation_degree",
    ]
    assert [c for c in result.columns if c in contract] == contract
    assert len(result) == 2 * (1 + 3)
    a = result[result["phase"] == "A"].reset_index(drop=True)
    assert np.isnan(a.loc[0, "esd_min_um"]) and np.isnan(a.loc[0, "esd_max_um"])
    assert_allclose(a["esd_min_um"][1:], edges[:-1])
    # class [5, 7.4): the speck particle alone -> LD 1; [7.4, 7.5): the three cubes -> 216 / 468
    assert a.loc[1, "liberation_degree"] == 1.0
    assert a.loc[2, "liberation_degree"] == pytest.approx(216 / 468)
    assert np.isnan(a.loc[3, "liberation_degree"]) and a.loc[3, "n_particles"] == 0
    assert a["volume_total_um3"][1:].sum() == pytest.approx(a.loc[0, "volume_total_um3"])


def test_default_size_bins_are_sqrt2_series_covering_the_range():
    esd = np.array([1.3, 2.0, 7.9])
    edges = geometric_size_bins(esd)
    assert_allclose(edges[1:] / edges[:-1], np.sqrt(2))
    assert edges[0] <= esd.min() and edges[-1] > esd.max()
    assert_allclose(
        np.log2(edges) * 2, np.round(np.log2(edges) * 2), atol=1e-12
    )  # anchored at 1 um
    assert_allclose(geometric_size_bins([2.0]), [2.0, 2 * np.sqrt(2)])


def test_border_exclusion_and_minimum_size(table):
    touching = table.assign(touches_border=[True, False, False, False])
    assert liberation_degree(touching)["A"] == pytest.approx(199 / 451)
    assert liberation_degree(touching, exclude_border=False)["A"] == pytest.approx(415 / 667)
    assert liberation_degree(table, min_esd_um=7.3)["A"] == pytest.approx(216 / 468)
    with pytest.raises(InputError, match="no particle left"):
        liberation_table(table.assign(touches_border=True))


def test_bad_tables_raise_input_error(table):
    with pytest.raises(InputError, match=r"phase\(s\) C"):
        liberation_table(table, phases=["C"])
    with pytest.raises(InputError, match="within"):
        liberation_table(table.assign(vf_A=1.5))
    with pytest.raises(InputError, match="edges"):
        liberation_table(table, size_bins_um=[3.0, 2.0])


def test_unassigned_is_not_a_phase(table):
    result = liberation_table(table.assign(vf_unassigned=0.0))
    assert set(result["phase"]) == {"A", "B"}


def random_population(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    vf = np.where(rng.random(n) < 0.4, 1.0, rng.uniform(0.2, 0.9, n))
    volume = rng.lognormal(3.0, 0.5, n)
    return pd.DataFrame(
        {
            "esd_um": np.cbrt(6 * volume / np.pi),
            "volume_um3": volume,
            "touches_border": False,
            "vf_A": vf,
            "vf_B": 1 - vf,
        }
    )


def test_bootstrap_interval_contains_estimate_shrinks_and_is_seeded():
    small = random_population(60, 1)
    large = pd.concat([small] * 16, ignore_index=True)
    widths = []
    for df in (small, large):
        result = liberation_table(df, n_bootstrap=400, rng=7)
        ld = overall(result, "A")
        low, high = overall(result, "A", "ld_ci_low"), overall(result, "A", "ld_ci_high")
        assert low <= ld <= high
        # every class row with a value has an interval that contains it
        valid = result["liberation_degree"].notna() & result["ld_ci_low"].notna()
        assert (
            result.loc[valid, "ld_ci_low"] <= result.loc[valid, "liberation_degree"] + 1e-12
        ).all()
        assert (
            result.loc[valid, "liberation_degree"] <= result.loc[valid, "ld_ci_high"] + 1e-12
        ).all()
        widths.append(high - low)
    assert widths[1] < 0.5 * widths[0]  # about 1 / sqrt(16)
    again = liberation_table(small, n_bootstrap=400, rng=7)
    first = liberation_table(small, n_bootstrap=400, rng=7)
    pd.testing.assert_frame_equal(first, again)
    # a phase that is always free has a degenerate interval
    pure = small.assign(vf_A=1.0, vf_B=0.0)
    result = liberation_table(pure, n_bootstrap=50, rng=0)
    assert overall(result, "A", "ld_ci_low") == overall(result, "A", "ld_ci_high") == 1.0
    assert np.isnan(overall(result, "B", "ld_ci_low"))


def test_liberation_spectrum_sums_to_phase_volume(table):
    spectrum = liberation_spectrum(table)
    assert len(spectrum) == 2 * len(GRADE_CLASSES) == 24
    a = spectrum[spectrum["phase"] == "A"].set_index("grade_class")
    assert a["phase_volume_um3"].sum() == pytest.approx(667.0)
    assert a.loc["100", "phase_volume_um3"] == pytest.approx(216.0)
    assert a.loc["(90,100)", "phase_volume_um3"] == pytest.approx(199.0)
    assert a.loc["(60,70]", "phase_volume_um3"] == pytest.approx(144.0)
    assert a.loc["(40,50]", "phase_volume_um3"] == pytest.approx(108.0)
    assert a.loc["0", "n_particles"] == 0
    assert a["n_particles"].sum() == 4
    assert a.loc["0", "cumulative_recovery"] == pytest.approx(1.0)
    assert a.loc["100", "cumulative_recovery"] == pytest.approx(216 / 667)
    assert a.loc["100", "cumulative_grade"] == pytest.approx(1.0)
    b = spectrum[spectrum["phase"] == "B"].set_index("grade_class")
    assert b["phase_volume_um3"].sum() == pytest.approx(181.0)
    assert b.loc["0", "n_particles"] == 1  # the pure A particle
    assert b.loc["(0,10]", "phase_volume_um3"] == pytest.approx(1.0)


def test_size_distribution_weights(table):
    densities = {"A": 2.0, "B": 3.0}
    edges = [7.0, 7.4, 8.0]
    dist = size_distribution(table, densities=densities, size_bins_um=edges)
    everything = dist[dist["group"] == "all"].reset_index(drop=True)
    assert everything["n_particles"].tolist() == [1, 3]
    assert_allclose(everything["number_fraction"], [0.25, 0.75])
    assert_allclose(everything["volume_fraction"], [200 / 848, 648 / 848])
    mass = np.array(
        [200 * (0.995 * 2 + 0.005 * 3), 216 * 2 + 216 * 2.5 + 216 * (2 * 2 / 3 + 3 / 3)]
    )
    assert_allclose(everything["mass_fraction"], mass / mass.sum())
    assert_allclose(everything["cumulative_mass"].iloc[-1], 1.0)
    # dominated by A (vf > 0.5): pure, sandwich, speck; the 50/50 particle is in no group
    a = dist[dist["group"] == "A"]
    assert a["n_particles"].tolist() == [1, 2]
    assert dist[dist["group"] == "B"]["n_particles"].sum() == 0
    assert dist[dist["group"] == "B"]["number_fraction"].isna().all()
    no_density = size_distribution(table, size_bins_um=edges)
    assert no_density["mass_fraction"].isna().all()


def test_grain_particle_volume_binned_mean_and_error():
    particles = pd.DataFrame(
        {
            "label": [1, 2, 3, 4],
            "volume_um3": [10.0, 12.0, 100.0, 110.0],
            "touches_border": [False] * 3 + [True],
        }
    )
    grains = pd.DataFrame(
        {
            "grain_id": [1, 2, 3, 4, 5, 6],
            "particle_label": [1, 2, 3, 3, 4, 2],
            "phase": ["A", "A", "A", "A", "A", "B"],
            "volume_um3": [10.0, 6.0, 30.0, 50.0, 110.0, 6.0],
        }
    )
    curve = grain_particle_volume(grains, particles, "A", bins=[1.0, 50.0, 500.0])
    assert curve["n_grains"].tolist() == [2, 2]
    assert_allclose(curve["grain_volume_mean_um3"], [8.0, 40.0])
    assert_allclose(curve["particle_volume_mean_um3"], [11.0, 100.0])
    assert_allclose(curve["grain_volume_std_um3"], [np.sqrt(8.0), np.sqrt(200.0)])
    assert_allclose(curve["grain_volume_sem_um3"], [2.0, 10.0])
    with_border = grain_particle_volume(
        grains, particles, "A", bins=[1.0, 50.0, 500.0], exclude_border=False
    )
    assert with_border["n_grains"].tolist() == [2, 3]
    default = grain_particle_volume(grains, particles, "A")
    assert default["n_grains"].sum() == 4


# ---------------------------------------------------------------------------------------------
# stereology
# ---------------------------------------------------------------------------------------------


def test_section_liberation_on_a_measured_2d_map():
    """A real 2D mineral map + binary particle mask goes through the same routine."""
    phase_map = np.zeros((10, 12), dtype=np.uint8)
    phase_map[1:4, 1:4] = 1  # free A, area 9
    phase_map[6:9, 1:5] = 1  # locked: A 6 + B 6
    phase_map[6:9, 3:5] = 2
    phase_map[2:5, 7:11] = 2  # free B, area 12
    mask = phase_map > 0
    table = section_particle_table(mask, phase_map, pixel_size=0.5, phase_names=NAMES)
    assert len(table) == 3
    assert sorted(table["area_pixels"]) == [9, 12, 12]
    assert_allclose(sorted(table["area_um2"]), [2.25, 3.0, 3.0])
    result = section_liberation(mask, phase_map, pixel_size=0.5, phase_names=NAMES)
    a = result[(result["phase"] == "A") & result["ecd_min_um"].isna()].iloc[0]
    assert a["area_free_um2"] == pytest.approx(2.25)
    assert a["area_total_um2"] == pytest.approx(2.25 + 6 * 0.25)
    assert a["liberation_degree"] == pytest.approx(9 / 15)
    b = result[(result["phase"] == "B") & result["ecd_min_um"].isna()].iloc[0]
    assert b["liberation_degree"] == pytest.approx(12 / 18)


def test_section_particles_use_8_connectivity_and_border():
    labels = np.zeros((6, 6), dtype=np.uint32)
    labels[1, 1] = labels[2, 2] = 5  # diagonal neighbours: one particle with 8-connectivity
    labels[4:6, 4:6] = 7  # touches the image edge
    phases = (labels > 0).astype(np.uint8)
    table = section_particle_table(labels, phases)
    assert sorted(table["area_pixels"].tolist()) == [2, 4]
    assert table.set_index("parent_label").loc[7, "touches_border"]
    assert not table.set_index("parent_label").loc[5, "touches_border"]
    assert len(section_particle_table(labels, phases, connectivity=4)) == 3


def test_virtual_sections_axis_and_random(sample):
    particles, phases = sample
    stack = virtual_sections(particles, phases, n_planes=5, axis=2, spacing=(2.0, 1.0, 0.5), rng=0)
    assert stack.particles.shape == (5, 14, 24)
    assert stack.pixel_size_um == (2.0, 1.0)
    assert stack.valid.all()
    index = [int(p.origin[2]) for p in stack.poses]
    assert index == sorted(index) and len(set(index)) == 5
    assert_allclose(stack.particles[0], particles[:, :, index[0]])
    random = virtual_sections(particles, phases, n_planes=3, orientation="random", rng=1)
    side = random.particles.shape[-1]
    assert random.particles.shape == (3, side, side)
    assert 0 < random.valid.mean() < 1
    assert set(np.unique(random.particles)) <= set(np.unique(particles))
    assert not random.particles[~random.valid].any()
    with pytest.raises(InputError):
        virtual_sections(particles, phases[:-1])


def locked_spheres(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """27 spheres (radius 7 voxels) each split into two halves of A and B by a random plane."""
    rng = np.random.default_rng(seed)
    shape = (54, 54, 54)
    particles = np.zeros(shape, dtype=np.uint32)
    phases = np.zeros(shape, dtype=np.uint8)
    z, y, x = np.ogrid[:18, :18, :18]
    offsets = np.stack(
        np.meshgrid([0, 18, 36], [0, 18, 36], [0, 18, 36], indexing="ij"), -1
    ).reshape(-1, 3)
    for label, (oz, oy, ox) in enumerate(offsets, start=1):  # building the phantom, not measuring
        d = (z - 8.5, y - 8.5, x - 8.5)
        inside = d[0] ** 2 + d[1] ** 2 + d[2] ** 2 <= 49
        normal = rng.normal(size=3)
        side = normal[0] * d[0] + normal[1] * d[1] + normal[2] * d[2] > 0
        block = (slice(oz, oz + 18), slice(oy, oy + 18), slice(ox, ox + 18))
        particles[block][inside] = label
        phases[block][inside & side] = 1
        phases[block][inside & ~side] = 2
    return particles, phases


@pytest.mark.parametrize("orientation", ["axis", "random"])
def test_stereology_2d_overestimates_liberation_of_locked_particles(orientation):
    particles, phases = locked_spheres()
    result = stereology_comparison(
        particles, phases, phase_names=NAMES, n_planes=12, orientation=orientation, rng=0
    )
    rows = result[result["esd_min_um"].isna()].set_index("phase")
    assert (rows["ld_3d"] == 0.0).all()  # every particle is locked in 3D
    assert (rows["ld_2d"] > 0.05).all()  # sections that miss one half look free
    assert (rows["ld_difference"] > 0).all()
    assert (rows["n_particles_3d"] == 27).all()
    assert (rows["n_particles_2d"] > 27).all()
    classes = result[result["esd_min_um"].notna()]
    assert (classes.groupby("phase")["n_particles_3d"].sum() == 27).all()


def test_stereology_of_free_particles_agrees():
    particles, phases = locked_spheres()
    phases = np.where(particles % 2 == 1, 1, 2).astype(np.uint8) * (particles > 0)
    result = stereology_comparison(
        particles, phases, phase_names=NAMES, n_planes=6, rng=0, size_2d="parent"
    )
    rows = result[result["esd_min_um"].isna()]
    assert_allclose(rows["ld_3d"], 1.0)
    assert_allclose(rows["ld_2d"], 1.0)


def test_composition_table_matches_measure(sample):
    measure = pytest.importorskip("corrtomo.measure")
    particles, phases = sample
    ours = composition_table(particles, phases, spacing=(1.0, 0.5, 2.0), phase_names=NAMES)
    theirs = measure.particle_table(particles, phases, spacing=(1.0, 0.5, 2.0), phase_names=NAMES)
    for column in ("label", "volume_um3", "esd_um", "touches_border", "vf_A", "vf_B"):
        assert_allclose(
            ours[column].to_numpy(dtype=float), theirs[column].to_numpy(dtype=float), rtol=1e-12
        )
    result = liberation_table(theirs)
    assert overall(result, "A") == pytest.approx(415 / 667)


def test_label_permutation_and_sparse_labels_change_nothing(sample):
    particles, phases = sample
    relabel = np.array([0, 40, 7, 2**33, 3], dtype=np.uint64)
    permuted = relabel[particles]
    ours = liberation_table(composition_table(permuted, phases, phase_names=NAMES))
    reference = liberation_table(composition_table(particles, phases, phase_names=NAMES))
    pd.testing.assert_frame_equal(ours, reference)
    assert sorted(composition_table(permuted, phases)["label"]) == [3, 7, 40, 2**33]


# ------------------------------------------------------------------------------------------
# lazy (Zarr) volumes: the 3D side from a precomputed table, the 2D side plane by plane
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cut_spheres() -> tuple[np.ndarray, np.ndarray]:
    """The locked spheres rolled so that some are cut by the volume faces (touch the border)."""
    particles, phases = locked_spheres()
    return np.roll(particles, (5, -4, 3), axis=(0, 1, 2)), np.roll(phases, (5, -4, 3), axis=(0, 1, 2))


def _zarr(path, image):
    import zarr

    array = zarr.create_array(path, shape=image.shape, chunks=(16, 16, 16), dtype=image.dtype)
    array[...] = image
    return array


class _SliceOnly:
    """An array read by slicing only (no ``vindex``), like an h5py dataset."""

    def __init__(self, image):
        self._image, self.shape, self.dtype, self.ndim = image, image.shape, image.dtype, image.ndim

        self.voxels_read = 0

    def __getitem__(self, key):
        part = self._image[key]
        self.voxels_read += np.size(part)
        return part


SPACING_3D = (1.0, 0.5, 2.0)


def test_composition_from_table_equals_composition_table(cut_spheres):
    from corrtomo.measure import particle_table

    particles, phases = cut_spheres
    expected = composition_table(particles, phases, spacing=SPACING_3D, phase_names=NAMES)
    measured = particle_table(particles, phases, spacing=SPACING_3D, phase_names=NAMES, surface=False)
    assert expected["touches_border"].any() and not expected["touches_border"].all()
    found = composition_from_table(measured, spacing=SPACING_3D, phase_names=NAMES)
    pd.testing.assert_frame_equal(found, expected, check_exact=True)
    # with the volume shape the border comes from the boxes, not from a flag added later
    flagged = measured.assign(touches_border=True).sample(frac=1.0, random_state=0)
    found = composition_from_table(
        flagged, spacing=SPACING_3D, phase_names=NAMES, volume_shape=particles.shape
    )
    pd.testing.assert_frame_equal(found, expected, check_exact=True)
    with pytest.raises(InputError, match="vf_B"):
        composition_from_table(measured.drop(columns="vf_B"), phase_names=NAMES)


@pytest.mark.parametrize(
    "design",
    [{}, {"axis": 1, "size_2d": "parent"}, {"orientation": "random"}, {"normal": (1.0, 1.0, 0.3)}],
    ids=["three-axes", "axis1-parent", "random", "normal"],
)
def test_stereology_on_zarr_equals_in_memory(cut_spheres, tmp_path, design):
    from corrtomo.measure import particle_table

    particles, phases = cut_spheres
    options = {"spacing": SPACING_3D, "phase_names": NAMES, "n_planes": 5, "rng": 11, **design}
    expected = stereology_comparison(particles, phases, **options)
    lazy_particles = _zarr(tmp_path / "particles.zarr", particles)
    lazy_phases = _zarr(tmp_path / "phases.zarr", phases)
    measured = particle_table(particles, phases, spacing=SPACING_3D, phase_names=NAMES, surface=False)
    for composition in (
        composition_table(particles, phases, spacing=SPACING_3D, phase_names=NAMES),
        composition_from_table(
            measured, spacing=SPACING_3D, phase_names=NAMES, volume_shape=particles.shape
        ),
    ):
        found = stereology_comparison(lazy_particles, lazy_phases, composition=composition, **options)
        pd.testing.assert_frame_equal(found, expected, check_exact=True)
    # the composition may also be given with in-memory volumes
    found = stereology_comparison(particles, phases, composition=composition, **options)
    pd.testing.assert_frame_equal(found, expected, check_exact=True)


def test_virtual_sections_of_zarr_read_planes(cut_spheres, tmp_path):
    particles, phases = cut_spheres
    lazy = _zarr(tmp_path / "particles.zarr", particles), _zarr(tmp_path / "phases.zarr", phases)
    for axis in (0, 1, 2):
        expected = virtual_sections(particles, phases, n_planes=80, axis=axis, rng=2)  # repeats
        found = virtual_sections(*lazy, n_planes=80, axis=axis, rng=2)
        np.testing.assert_array_equal(found.particles, expected.particles)
        np.testing.assert_array_equal(found.phases, expected.phases)
        assert [p.origin.tolist() for p in found.poses] == [p.origin.tolist() for p in expected.poses]
    # slicing-only arrays give the axis sections, and refuse resampled ones with a clear error
    sliced = _SliceOnly(particles), _SliceOnly(phases)
    found = virtual_sections(*sliced, n_planes=4, axis=2, rng=2)
    expected = virtual_sections(particles, phases, n_planes=4, axis=2, rng=2)
    np.testing.assert_array_equal(found.particles, expected.particles)
    with pytest.raises(InputError, match="orientation='axis'"):
        virtual_sections(*sliced, n_planes=4, orientation="random", rng=2)
    # stereology reads the sampled planes and nothing else: 4 planes per axis here
    sliced = _SliceOnly(particles), _SliceOnly(phases)
    composition = composition_table(particles, phases, phase_names=NAMES)
    expected = stereology_comparison(particles, phases, phase_names=NAMES, n_planes=4, rng=3)
    found = stereology_comparison(*sliced, composition=composition, phase_names=NAMES, n_planes=4, rng=3)
    pd.testing.assert_frame_equal(found, expected, check_exact=True)
    planes = 4 * sum(particles.size // n for n in particles.shape)
    assert sliced[0].voxels_read == sliced[1].voxels_read == planes


def test_stereology_on_zarr_needs_the_table_and_finds_phases(cut_spheres, tmp_path):
    particles, phases = cut_spheres
    lazy = _zarr(tmp_path / "particles.zarr", particles), _zarr(tmp_path / "phases.zarr", phases)
    with pytest.raises(InputError, match="composition"):
        stereology_comparison(*lazy, n_planes=4, rng=0)
    # no phase names: the ids present are found slab by slab
    composition = composition_table(particles, phases)
    expected = stereology_comparison(particles, phases, n_planes=4, rng=0)
    found = stereology_comparison(*lazy, composition=composition, n_planes=4, rng=0)
    pd.testing.assert_frame_equal(found, expected, check_exact=True)
    with pytest.raises(InputError, match="vf_A"):
        stereology_comparison(
            *lazy, composition=composition, phase_names=NAMES, n_planes=4, rng=0
        )
