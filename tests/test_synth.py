"""The digital twin against the truth it is built from."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from corrtomo._shared import InputError, sample_plane
from corrtomo.cli import main
from corrtomo.phases import preset_library
from corrtomo.synth import (
    PRESETS,
    PhantomRenderer,
    generate_particles,
    make_sample,
    touching_particle_share,
)


@pytest.fixture(scope="module")
def quick_sample():
    return make_sample("quick", seed=3)


@pytest.fixture(scope="module")
def rendered_talc():
    """A larger talc-saxolite phantom (no CT) for statistics of the particle system."""
    preset = PRESETS["talc-saxolite"]
    # 12.3 x 14.3 x 14.3 um at 0.1 um voxels, the field of the former 96 x 112 x 112 voxels at 0.128 um:
    # the same 247 particles (at 96 x 112 x 112 voxels of 0.1 um only 113)
    shape = (123, 143, 143)
    rng = np.random.default_rng(11)
    system = generate_particles(preset.particles, shape=shape, voxel_size_um=preset.voxel_size_um, pillar_radius_voxels=None, rng=rng)
    renderer = PhantomRenderer(system, shape, max_phase_id=4, supersample=2)
    particles, phases, _ = renderer.render_all()
    return preset, system, particles, phases


def _truncated_lognormal_cdf(spec):
    base = stats.lognorm(s=spec.esd_sigma, scale=spec.esd_median_um)
    low, high = base.cdf(spec.esd_min_um), base.cdf(spec.esd_max_um)
    return lambda x: np.clip((base.cdf(x) - low) / (high - low), 0, 1)


def test_esd_distribution_matches_request(rendered_talc):
    preset, system, particles, _ = rendered_talc
    # the generator's sizes follow the requested truncated log-normal (KS test)
    result = stats.kstest(system.esd_um, _truncated_lognormal_cdf(preset.particles))
    assert system.n > 150
    assert result.pvalue > 0.01, result
    # and the digitised particles have those sizes: interior, non-touching particles' voxel ESD
    counts = np.bincount(particles.ravel(), minlength=system.n + 1)[1:]
    border = np.unique(np.concatenate([particles[[0, -1]].ravel(), particles[:, [0, -1]].ravel(), particles[:, :, [0, -1]].ravel()]))
    interior = np.setdiff1d(np.flatnonzero(counts) + 1, border) - 1
    interior = interior[~system.touching[interior]]
    measured = (6 * counts[interior] / np.pi) ** (1 / 3) * preset.voxel_size_um
    ratio = measured / system.esd_um[interior]
    assert interior.size > 50
    assert abs(np.median(ratio) - 1) < 0.03, np.median(ratio)
    # the measured sizes pass the same KS test
    assert stats.kstest(measured, _truncated_lognormal_cdf(preset.particles)).pvalue > 0.001


def test_phase_fractions_match_request(rendered_talc):
    preset, _, particles, phases = rendered_talc
    counts = np.bincount(phases[particles > 0], minlength=5)[1:]
    realised = counts / counts.sum()
    expected = np.array([preset.particles.expected_phase_fractions()[i] for i in range(1, 5)])
    np.testing.assert_allclose(realised, expected, atol=0.03)


def test_touching_share_is_controllable():
    preset = PRESETS["quick"]
    shares = []
    for touching in (0.0, 0.5):
        spec = preset.particles.__class__(**{**preset.particles.__dict__, "touching_share": touching})
        system = generate_particles(spec, shape=(64, 80, 80), voxel_size_um=0.128, pillar_radius_voxels=None, rng=np.random.default_rng(5))
        particles, _, _ = PhantomRenderer(system, (64, 80, 80), max_phase_id=4, supersample=1).render_all()
        shares.append(touching_particle_share(particles))
    assert shares[0] < 0.05
    assert 0.3 < shares[1] < 0.8


def test_liberated_share_is_controllable():
    preset = PRESETS["quick"]
    talcum = preset.particles.types[0]
    spec = preset.particles.__class__(**{**preset.particles.__dict__, "types": (talcum.__class__(**{**talcum.__dict__, "volume_share": 1.0, "liberated_share": 1.0}),)})
    shape = (48, 64, 64)
    system = generate_particles(spec, shape=shape, voxel_size_um=0.128, pillar_radius_voxels=None, rng=np.random.default_rng(2))
    particles, phases, _ = PhantomRenderer(system, shape, max_phase_id=4, supersample=1).render_all()
    # every particle is one phase only
    key = particles.astype(np.int64) * 8 + phases
    pairs = np.unique(key[particles > 0])
    assert np.unique(pairs // 8).size == pairs.size


def test_section_mineral_map_matches_truth_at_pose(quick_sample):
    for section in quick_sample.sections:
        resampled = sample_plane(quick_sample.phases, section.pose, section.mineral_map.shape, order=0, cval=0)
        inside = section.inside
        assert inside.mean() > 0.5
        agreement = np.mean(resampled[inside] == section.mineral_map[inside])
        assert agreement >= 0.99


def test_section_pose_is_inclined_and_finer(quick_sample):
    section = quick_sample.sections[0]
    tilt = np.degrees(np.arccos(abs(section.pose.normal[0])))
    assert 28 - 4.5 <= tilt <= 28 + 4.5
    assert section.pose.pixel_size_ratio == pytest.approx(0.5)
    assert section.pixel_size_um == pytest.approx(0.5 * quick_sample.voxel_size_um)


def test_ct_grey_values_follow_attenuation_order(quick_sample):
    grey = quick_sample.metadata["ct"]["grey_value_by_phase"]
    mu = quick_sample.metadata["ct"]["mu_effective_per_um"]
    names = [n for n in grey if grey[n]["voxels"] > 200]
    by_mu = sorted(names, key=lambda n: mu[n])
    by_grey = sorted(names, key=lambda n: grey[n]["mean"])
    assert by_mu == by_grey


def _matrix_noise(sample) -> float:
    """Standard deviation of CT values in the matrix far from particles, inside the pillar."""
    from scipy import ndimage

    far = ~ndimage.binary_dilation(sample.particles > 0, iterations=4)
    nz, ny, nx = sample.ct.shape
    _, yy, xx = np.ogrid[:nz, :ny, :nx]
    inner = ((yy - (ny - 1) / 2) ** 2 + (xx - (nx - 1) / 2) ** 2) < (0.35 * min(ny, nx)) ** 2
    return float(sample.ct[far & inner].std())


def test_noise_falls_with_photon_count():
    from dataclasses import replace

    preset = PRESETS["quick"]
    noise = []
    for photons in (500.0, 50000.0):
        sample = make_sample(replace(preset, ct=replace(preset.ct, photons_per_pixel=photons)), seed=4)
        noise.append(_matrix_noise(sample))
    # Poisson: std ~ 1/sqrt(N0); 100x photons -> ~10x less noise (texture and blur set a floor)
    assert noise[1] < noise[0] / 4


def test_li_slag_grey_values_overlap():
    sample = make_sample("li-slag", shape=(64, 80, 80), seed=2)
    library = sample.library
    inside = sample.particles > 0
    values = {
        name: sample.ct[inside & (sample.phases == library.id_of(name))]
        for name in ("lialo2", "slag-glass", "gehlenite")
    }
    bins = np.linspace(*np.percentile(sample.ct[inside], [0.5, 99.5]), 80)

    def overlap(a, b):
        ha, _ = np.histogram(a, bins=bins, density=True)
        hb, _ = np.histogram(b, bins=bins, density=True)
        return float(np.minimum(ha, hb).sum() * np.diff(bins)[0])

    lialo2_glass = overlap(values["lialo2"], values["slag-glass"])
    # the hard case of the papers: LiAlO2 and the glassy matrix cannot be told apart by grey value
    assert lialo2_glass > 0.5, lialo2_glass


def test_eds_maps_show_the_composition(quick_sample):
    library = preset_library("talc-saxolite")
    section = quick_sample.sections[0]
    mineral = section.mineral_map
    inner = section.inside
    means = {}
    for phase in library:
        pixels = (mineral == phase.id) & inner
        if pixels.sum() < 30:
            continue
        means[phase.name] = {element: float(counts[pixels].mean()) for element, counts in section.eds.items()}
    assert len(means) >= 3
    # the cation with the largest weight fraction is brightest in the phase richest in it
    for element in ("Ca", "Mg", "Si"):
        richest = max(means, key=lambda name: library.by_name(name).weight_fractions.get(element, 0.0))
        brightest = max(means, key=lambda name: means[name][element])
        assert richest == brightest, (element, richest, brightest)
    # in each phase, its characteristic (non-O, non-C) element of largest weight fraction is brighter
    # there than in the matrix
    matrix = (mineral == 0) & inner & (section.bse > 0)
    for name in means:
        composition = {e: w for e, w in library.by_name(name).weight_fractions.items() if e not in ("O", "C", "H")}
        top = max(composition, key=composition.get)
        assert means[name][top] > 3 * section.eds[top][matrix].mean()


def test_bse_follows_mean_atomic_number(quick_sample):
    library = preset_library("talc-saxolite")
    section = quick_sample.sections[0]
    means = {}
    for phase in library:
        pixels = (section.mineral_map == phase.id) & section.inside
        if pixels.sum() >= 30:
            means[phase.name] = section.bse[pixels].mean()
    by_z = sorted(means, key=lambda n: library.by_name(n).mean_atomic_number)
    assert by_z[-1] == "calcite"
    assert sorted(means, key=means.get)[-1] == "calcite"


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_cli_synth_writes_the_contract_and_is_reproducible(tmp_path):
    args = ["synth", "--preset", "quick", "--shape", "40", "40", "40", "--quiet"]
    assert main([*args, str(tmp_path / "a"), "--seed", "7"]) == 0
    assert main([*args, str(tmp_path / "b"), "--seed", "7"]) == 0
    assert main([*args, str(tmp_path / "c"), "--seed", "8"]) == 0
    a = _digest(tmp_path / "a")
    for name in ("ct.tif", "sample.json", "truth/phases.tif", "truth/particles.tif", "preview.png",
                 "sem/section01/bse.tif", "sem/section01/mineral_map.tif", "sem/section01/pose.json",
                 "sem/section01/eds/Ca.tif", "sem/section01/eds/Mg.tif", "sem/section01/eds/Si.tif"):
        assert name in a, name
    assert a == _digest(tmp_path / "b")
    c = _digest(tmp_path / "c")
    assert a["ct.tif"] != c["ct.tif"] and a["truth/particles.tif"] != c["truth/particles.tif"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cli_synth_files_read_back(tmp_path):
    from corrtomo._shared import PlanePose
    from corrtomo.io import read_image2d, read_volume

    assert main(["synth", str(tmp_path / "s"), "--preset", "quick", "--shape", "40", "40", "40", "-q", "--no-preview"]) == 0
    ct = read_volume(tmp_path / "s" / "ct.tif")
    assert ct.shape == (40, 40, 40)
    np.testing.assert_allclose(ct.spacing, [0.128] * 3, rtol=1e-6)
    phases = read_volume(tmp_path / "s" / "truth" / "phases.tif").to_numpy()
    mineral = read_image2d(tmp_path / "s" / "sem" / "section01" / "mineral_map.tif")
    pose = PlanePose.load(tmp_path / "s" / "sem" / "section01" / "pose.json")
    resampled = sample_plane(phases, pose, mineral.shape, order=0, cval=0)
    points = pose.points(mineral.shape)
    inside = np.all((np.rint(points) >= 0) & (np.rint(points) < 40), axis=-1)
    assert np.mean(resampled[inside] == mineral[inside]) >= 0.99


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--preset", "granite"], "unknown preset"),
        (["--preset", "talc-saxolite", "--shape", "20", "20", "20"], "too small"),
        (["--preset", "quick", "--shape", "8", "40", "40"], "at least 16"),
    ],
)
def test_cli_synth_bad_input(tmp_path, capsys, args, fragment):
    out = tmp_path / "bad"
    assert main(["synth", str(out), "-q", *args]) == 2
    error = capsys.readouterr().err.strip()
    assert fragment in error and len(error.splitlines()) == 1
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_make_sample_refuses_a_folder_with_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    sample = make_sample("quick", shape=(40, 40, 40), seed=0)
    from corrtomo.synth import write_sample

    with pytest.raises(InputError, match="not an empty folder"):
        write_sample(sample, tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_contrast_knob_makes_grey_values_overlap(tmp_path):
    separations = []
    for contrast in ("1.0", "0.3"):
        out = tmp_path / contrast
        assert main(["synth", str(out), "--preset", "quick", "--seed", "5", "--contrast", contrast, "--ct-method", "image", "-q", "--no-preview"]) == 0
        import json

        grey = json.loads((out / "sample.json").read_text())["ct"]["grey_value_by_phase"]
        # separation of the brightest and darkest mineral in units of their noise
        a, b = grey["calcite"], grey["magnesite"]
        separations.append((a["mean"] - b["mean"]) / np.hypot(a["std"], b["std"]))
    assert separations[0] > 1.0
    assert separations[1] < 0.5 * separations[0]
