"""Particle-aware phase refinement (corrtomo.segment._refine): contact rims and blurred inclusions.

The CT phantoms are exact: a uniform ball of radius R blurred by an isotropic Gaussian of sigma s
has, at distance d from its centre, the value

    f(d) = [erf((R - d) / (s sqrt2)) + erf((R + d) / (s sqrt2))] / 2
           - s / (d sqrt(2 pi)) [exp(-(R - d)^2 / 2 s^2) - exp(-(R + d)^2 / 2 s^2)],

so a volume of balls (and balls inside balls) is a continuous object blurred by a known point
spread and sampled at the voxel centres, with no rendering error.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest

from corrtomo._shared import InputError
from corrtomo.segment import (
    InclusionSettings,
    ball_peak_fraction,
    correct_contact_phases,
    detection_threshold,
    estimate_inclusion_model,
    reclassify_small_grains,
    recover_inclusions,
    refine_phases,
)
from corrtomo.segment._refine import (
    blur_from_histogram,
    blur_histogram_block,
    grey_range_block,
    inclusion_model,
    level_histograms_block,
    reclassify_small_grains_block,
    recover_inclusions_block,
    residual_histogram_block,
)

LEVEL = {0: 0.0, 1: 1.0, 2: 0.4, 3: 0.7}  # grey level of each phase id (0 = matrix)


# --------------------------------------------------------------------------------------------
# phantoms


def blurred_ball(shape, centre, radius, sigma):
    """Exact blurred unit ball sampled at the voxel centres, and the distance to its centre.

    Evaluated in the ball's bounding box (radius + 6 sigma); zero and infinitely far outside.
    """
    from scipy.special import erf

    centre = np.asarray(centre, dtype=float)
    reach = radius + 6.0 * sigma + 1.0
    box = tuple(slice(max(int(c - reach), 0), min(int(c + reach) + 2, n)) for c, n in zip(centre, shape, strict=True))
    grid = np.mgrid[box].astype(float)
    d = np.sqrt(((grid - centre[:, None, None, None]) ** 2).sum(0))
    root2s = math.sqrt(2.0) * sigma
    value = 0.5 * (erf((radius - d) / root2s) + erf((radius + d) / root2s))
    safe = np.maximum(d, 1e-9)
    tail = sigma / (safe * math.sqrt(2.0 * math.pi)) * (np.exp(-((radius - d) ** 2) / (2 * sigma**2))
                                                        - np.exp(-((radius + d) ** 2) / (2 * sigma**2)))
    # the limit d -> 0 of the tail
    tail = np.where(d < 1e-6, math.sqrt(2.0 / math.pi) * radius / sigma * math.exp(-radius**2 / (2 * sigma**2)), tail)
    full_value = np.zeros(shape)
    full_distance = np.full(shape, np.inf)
    full_value[box] = value - tail
    full_distance[box] = d
    return full_value, full_distance


def render(shape, grains, inclusions=(), *, sigma, noise, seed):
    """CT of ball grains (each its own particle) holding ball inclusions, blurred and noisy.

    grains : [(centre, radius, phase)]; inclusions : [(centre, radius, phase)], each inside a
    grain. Returns ct (float32), the classifier's phases (every particle voxel its grain's phase:
    the inclusions missed), particle labels, the true phases and the inclusions' particles.
    """
    ct = np.full(shape, LEVEL[0])
    particles = np.zeros(shape, dtype=np.int32)
    phases = np.zeros(shape, dtype=np.uint8)
    for label, (centre, radius, phase) in enumerate(grains, start=1):
        value, distance = blurred_ball(shape, centre, radius, sigma)
        ct += (LEVEL[phase] - LEVEL[0]) * value
        particles[distance <= radius] = label
        phases[distance <= radius] = phase
    truth = phases.copy()
    hosts = []
    for centre, radius, phase in inclusions:
        host_label = int(particles[tuple(np.round(centre).astype(int))])
        host_phase = grains[host_label - 1][2]
        value, distance = blurred_ball(shape, centre, radius, sigma)
        ct += (LEVEL[phase] - LEVEL[host_phase]) * value
        truth[distance <= radius] = phase
        hosts.append(host_label)
    ct += np.random.default_rng(seed).normal(0.0, noise, shape)
    return ct.astype(np.float32), phases, particles, truth, hosts


def eight_grains(host=1, radius=11.0, jitter_seed=0):
    """Eight balls on a 2^3 lattice of a 64^3 volume: one of each other mineral, six of `host`."""
    rng = np.random.default_rng(jitter_seed)
    others = [p for p in (1, 2, 3) if p != host]
    kinds = [others[0]] + [host] * 6 + [others[1]]
    centres = [np.array(c, dtype=float) + rng.uniform(-1.5, 1.5, 3) for c in itertools.product((16, 47), repeat=3)]
    return [(c, radius, k) for c, k in zip(centres, kinds, strict=True)]


def inclusions_in(grains, labels, *, radius, phase, seed):
    """One ball inclusion 2-4 voxels off the centre of each grain in `labels` (1-based)."""
    rng = np.random.default_rng(seed)
    out = []
    for label in labels:
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        out.append((grains[label - 1][0] + direction * rng.uniform(2.0, 4.0), radius, phase))
    return out


def blocks(shape, block, halo):
    """(core, box, inner) of every block of `block` voxels with `halo` voxels (clipped)."""
    for start in itertools.product(*(range(0, n, b) for n, b in zip(shape, block, strict=True))):
        core = tuple(slice(s, min(s + b, n)) for s, b, n in zip(start, block, shape, strict=True))
        box = tuple(slice(max(c.start - halo, 0), min(c.stop + halo, n)) for c, n in zip(core, shape, strict=True))
        inner = tuple(slice(c.start - b.start, c.stop - b.start) for c, b in zip(core, box, strict=True))
        yield core, box, inner


SHAPE = (64, 64, 64)
SIGMA = 0.9
NOISE = 0.02
INCLUSION_RADIUS = 2.25
INCLUSION_VOLUME = 4.0 / 3.0 * math.pi * INCLUSION_RADIUS**3  # 47.7 voxels


@pytest.fixture(scope="module")
def dark_inclusions():
    """Six host grains (phase 1, level 1.0), three of them with a dark inclusion (phase 2, 0.4);
    a grain of phase 2 and one of phase 3 (0.7, the other candidate) give those their levels."""
    grains = eight_grains(host=1)
    inclusions = inclusions_in(grains, (2, 4, 6), radius=INCLUSION_RADIUS, phase=2, seed=1)
    return render(SHAPE, grains, inclusions, sigma=SIGMA, noise=NOISE, seed=0)


# --------------------------------------------------------------------------------------------
# contact rims


def _two_boxes():
    """Particles 1 (phase 1) and 2 (phase 2) touching along the plane between x = 12 and 13,
    and particle 3 (phase 1) touching only the matrix."""
    particles = np.zeros((18, 34, 26), dtype=np.int32)
    particles[3:15, 3:15, 3:13] = 1
    particles[3:15, 3:15, 13:23] = 2
    particles[3:15, 20:30, 3:13] = 3
    truth = np.array([0, 1, 2, 1], dtype=np.uint8)[particles]
    return particles, truth


@pytest.mark.parametrize("depth", [1, 2])
def test_contact_band_misread_as_a_third_phase_takes_each_particles_own_phase(depth):
    particles, truth = _two_boxes()
    x = np.indices(particles.shape)[2]
    band = np.isin(particles, (1, 2)) & (x >= 13 - depth) & (x < 13 + depth)  # `depth` voxels each side
    phases = truth.copy()
    phases[band] = 3
    # rims on the matrix misread too: the far faces of particles 1 and 2, the shell of particle 3
    matrix_rim = ((x == 3) | (x == 22)) & np.isin(particles, (1, 2))
    shell = particles == 3
    shell[4:14, 21:29, 4:12] = False
    phases[matrix_rim | shell] = 3
    before = phases.copy()

    corrected = correct_contact_phases(phases, particles, depth_voxels=depth)

    np.testing.assert_array_equal(phases, before)  # input untouched
    assert corrected.dtype == np.uint8
    np.testing.assert_array_equal(corrected[band], truth[band])  # each side its own phase
    np.testing.assert_array_equal(corrected[~band], phases[~band])  # matrix rims left alone
    assert (corrected[matrix_rim | shell] == 3).all()


def test_contact_correction_shallower_than_the_band_copies_the_band():
    # depth 1 against a 2-voxel band: the nearest interior voxel is the band's own outer layer
    particles, truth = _two_boxes()
    x = np.indices(particles.shape)[2]
    band = np.isin(particles, (1, 2)) & (x >= 11) & (x < 15)
    phases = truth.copy()
    phases[band] = 3
    np.testing.assert_array_equal(correct_contact_phases(phases, particles, depth_voxels=1), phases)
    np.testing.assert_array_equal(correct_contact_phases(phases, particles, depth_voxels=2), truth)


@pytest.mark.parametrize("depth", [0, -1])
def test_contact_depth_zero_returns_an_equal_copy(depth):
    particles, truth = _two_boxes()
    phases = truth.copy()
    phases[:, :, 12:14][particles[:, :, 12:14] > 0] = 3
    out = correct_contact_phases(phases, particles, depth_voxels=depth)
    np.testing.assert_array_equal(out, phases)
    assert not np.shares_memory(out, phases)


def test_particles_touching_only_the_matrix_are_unchanged():
    particles, truth = _two_boxes()
    particles[particles == 2] = 0  # no contact left anywhere
    phases = np.where(particles > 0, truth, 0).astype(np.uint8)
    rim = (particles > 0) & (np.indices(particles.shape)[2] == 12)
    phases[rim] = 3  # a misread rim on the matrix
    np.testing.assert_array_equal(correct_contact_phases(phases, particles, depth_voxels=3), phases)


def test_a_sliver_without_interior_keeps_its_own_phase():
    # a one-voxel-thick platelet (particle 4, phase 3) lying on particle 2: all of it is contact,
    # and the nearest interior voxel belongs to another particle
    particles, _ = _two_boxes()
    particles[15, 5:13, 15:21] = 4
    phases = np.array([0, 1, 2, 1, 3], dtype=np.uint8)[particles]
    corrected = correct_contact_phases(phases, particles, depth_voxels=2)
    assert (corrected[particles == 4] == 3).all()
    # particle 2's voxels under the platelet are contact voxels too, with particle 2's interior
    np.testing.assert_array_equal(corrected, phases)


# --------------------------------------------------------------------------------------------
# closed forms


@pytest.mark.parametrize(("radius", "sigma"), [(0.5, 1.0), (1.0, 0.8), (2.25, 1.27), (3.0, 1.0), (4.0, 2.5)])
def test_ball_peak_fraction_is_the_centre_of_a_blurred_ball(radius, sigma):
    from scipy.integrate import quad

    def shell(rho):  # the 3D Gaussian's mass at distance rho from its centre
        return 4.0 * math.pi * rho**2 * math.exp(-0.5 * rho**2 / sigma**2) / (2.0 * math.pi * sigma**2) ** 1.5

    # numeric integral of the Gaussian over the ball: the centre value of the blurred ball
    numeric, _ = quad(shell, 0.0, radius, epsabs=1e-13)
    assert ball_peak_fraction(radius / sigma) == pytest.approx(numeric, abs=1e-9)
    # and the phantom's exact blurred ball agrees at its centre
    value, _ = blurred_ball((9, 9, 9), (4.0, 4.0, 4.0), radius, sigma)
    assert value[4, 4, 4] == pytest.approx(numeric, abs=1e-9)


def test_ball_peak_fraction_limits_and_shape():
    a = np.array([0.0, 1e-3, 0.1, 1.0, 2.0, 4.0, 10.0, 40.0])
    p = ball_peak_fraction(a)
    assert p.shape == a.shape
    assert p[0] == 0.0
    # small balls: the Gaussian is flat over them, P ~ a^3 sqrt(2/pi) / 3
    assert p[1] == pytest.approx(math.sqrt(2 / math.pi) / 3 * 1e-9, rel=1e-3)
    assert np.all(np.diff(p[:-1]) > 0)  # increasing until it saturates in float64
    assert p[-2] == pytest.approx(1.0, abs=1e-12) and p[-1] == pytest.approx(1.0, abs=1e-15)


def test_detection_threshold():
    assert detection_threshold(1) == pytest.approx(1.959964, abs=1e-5)
    assert detection_threshold(1, false_alarms=0.01) == pytest.approx(2.575829, abs=1e-5)
    z = [detection_threshold(n) for n in (1, 10, 100, 1e4, 1e6, 1e9)]
    assert np.all(np.diff(z) > 0)
    assert detection_threshold(0.3) == detection_threshold(1)  # fewer than one test counts as one
    assert detection_threshold(1e4, false_alarms=0.01) > detection_threshold(1e4)


# --------------------------------------------------------------------------------------------
# volume-wide quantities


@pytest.mark.parametrize("sigma", [0.8, 1.5])
def test_blur_estimate_from_particle_edges(sigma):
    rng = np.random.default_rng(3)
    centres = [np.array(c, dtype=float) + rng.uniform(-2, 2, 3) for c in itertools.product((16, 47), repeat=3)]
    ct, phases, particles, _, _ = render(SHAPE, [(c, 8.0, 1) for c in centres], sigma=sigma, noise=NOISE, seed=4)
    model = estimate_inclusion_model(ct, phases, particles)
    # measured: 0.823 for 0.8 (+2.9 %), 1.510 for 1.5 (+0.6 %)
    assert model.blur_sigma_voxels == pytest.approx(sigma, rel=0.05)
    assert model.level[0] == pytest.approx(0.0, abs=0.01)
    # at least 3 voxels deep in each grain; measured 0.983 for sigma 1.5, a 1.7 % partial volume left
    assert model.level[1] == pytest.approx(1.0, abs=0.02)
    assert np.isnan(model.level[2:]).all()


def test_levels_spread_and_threshold_of_the_model(dark_inclusions):
    ct, phases, particles, _, _ = dark_inclusions
    model = estimate_inclusion_model(ct, phases, particles)
    for phase in (0, 1, 2, 3):
        assert model.level[phase] == pytest.approx(LEVEL[phase], abs=0.01)
    np.testing.assert_array_equal(model.minerals, [1, 2, 3])
    assert model.blur_sigma_voxels == pytest.approx(SIGMA, rel=0.05)
    # white noise of sd 0.02 smoothed by a Gaussian of sigma s has sd 0.02 / sqrt(8 pi^1.5 s^3)
    # (0.00347 for s = 0.9); the voxelised forward model's own partial-volume error adds a little
    # (measured 0.00401)
    s = model.smoothing_voxels
    assert 1.0 <= model.spread / (NOISE / math.sqrt(8 * math.pi**1.5 * s**3)) <= 1.3
    assert model.usable and 3.0 < model.threshold_z < 6.0
    # a given blur is used as is
    given = estimate_inclusion_model(ct, phases, particles, InclusionSettings(blur_sigma_voxels=1.3))
    assert given.blur_sigma_voxels == 1.3 and given.smoothing_voxels == 1.3


# --------------------------------------------------------------------------------------------
# inclusions


def _changes_per_particle(refined, phases, particles):
    changed = refined != phases
    return {int(p): changed & (particles == p) for p in np.unique(particles[changed])}


def test_dark_inclusions_are_recovered_with_their_volume_and_phase(dark_inclusions):
    ct, phases, particles, truth, hosts = dark_inclusions
    before = phases.copy()
    refined, report = recover_inclusions(ct, phases, particles)
    np.testing.assert_array_equal(phases, before)
    changes = _changes_per_particle(refined, phases, particles)
    # no false alarm: only the particles holding an inclusion change
    assert sorted(changes) == sorted(hosts)
    for label in hosts:
        new = changes[label]
        assert set(np.unique(refined[new])) == {2}  # phase 2 (0.4), not the other candidate 3 (0.7)
        # measured 49, 49, 47 voxels against 47.7 (49 voxel centres inside each ball), all inside
        assert new.sum() == pytest.approx(INCLUSION_VOLUME, rel=0.15)
        assert (truth[new] == 2).mean() >= 0.9  # the voxels given are the inclusion's
    assert report.n_inclusions == len(hosts)
    assert report.n_relabelled == sum(int(changes[label].sum()) for label in hosts)
    assert report.relabelled[1, 2] == report.n_relabelled


def test_recovery_is_invariant_to_an_affine_integer_grey_scale(dark_inclusions):
    # the same CT stored as uint16 counts (gain 20000, offset 5000): same phases, same spread in
    # grey-value units
    ct, phases, particles, _, hosts = dark_inclusions
    refined, report = recover_inclusions(ct, phases, particles)
    counts = np.round(ct * 20000.0 + 5000.0).astype(np.uint16)
    refined16, report16 = recover_inclusions(counts, phases, particles)
    np.testing.assert_array_equal(refined16, refined)
    assert report16.n_inclusions == len(hosts)
    assert report16.model.level[1] == pytest.approx(20000.0 * report.model.level[1] + 5000.0, rel=1e-3)
    # within the histogram resolution of the levels and the residual (measured 1.7 %)
    assert report16.model.spread == pytest.approx(20000.0 * report.model.spread, rel=0.03)
    assert report16.model.blur_sigma_voxels == pytest.approx(report.model.blur_sigma_voxels, rel=1e-3)


def test_bright_inclusions_in_a_dark_host_are_recovered():
    grains = eight_grains(host=2, jitter_seed=5)  # host level 0.4; candidates 1 (1.0) and 3 (0.7)
    inclusions = inclusions_in(grains, (2, 4, 6), radius=INCLUSION_RADIUS, phase=1, seed=6)
    ct, phases, particles, truth, hosts = render(SHAPE, grains, inclusions, sigma=SIGMA, noise=NOISE, seed=7)
    refined, report = recover_inclusions(ct, phases, particles)
    changes = _changes_per_particle(refined, phases, particles)
    assert sorted(changes) == sorted(hosts)
    for label in hosts:
        assert set(np.unique(refined[changes[label]])) == {1}
        # measured 50, 50, 47 voxels against 47.7, of which 92 %, 94 %, 100 % inside the ball
        assert changes[label].sum() == pytest.approx(INCLUSION_VOLUME, rel=0.15)
        assert (truth[changes[label]] == 1).mean() >= 0.9
    assert report.n_inclusions == len(hosts)
    assert report.relabelled[2, 1] == report.n_relabelled


def test_homogeneous_particles_without_noise_are_left_alone():
    ct, phases, particles, _, _ = render(SHAPE, eight_grains(), sigma=SIGMA, noise=0.0, seed=0)
    refined, report = recover_inclusions(ct, phases, particles)
    # the model is usable (the forward model's partial-volume mismatch gives the spread)...
    assert report.model.usable and report.model.spread > 0
    # ...and nothing in the exact blurred phantom is an anomaly
    np.testing.assert_array_equal(refined, phases)
    assert report.n_inclusions == 0 and report.n_relabelled == 0


def test_a_single_mineral_volume_is_returned_unchanged():
    grains = [(c, r, 1) for c, r, _ in eight_grains()]
    inclusions = inclusions_in(grains, (2, 4), radius=INCLUSION_RADIUS, phase=2, seed=1)
    ct, phases, particles, _, _ = render(SHAPE, grains, inclusions, sigma=SIGMA, noise=NOISE, seed=0)
    refined, report = recover_inclusions(ct, phases, particles)
    assert not report.model.usable  # one mineral level: nothing to unmix into
    np.testing.assert_array_equal(refined, phases)
    assert refined is not phases
    assert report.n_inclusions == 0 and report.n_relabelled == 0 and not report.relabelled.any()


def test_candidate_phases_restrict_the_inclusion_phase(dark_inclusions):
    ct, phases, particles, _, hosts = dark_inclusions
    # host 1 need not be a candidate: phase-2 inclusions are found with candidates {2, 3}
    refined, report = recover_inclusions(ct, phases, particles, settings=InclusionSettings(candidate_phases=(2, 3)))
    np.testing.assert_array_equal(report.model.minerals, [2, 3])
    assert sorted(_changes_per_particle(refined, phases, particles)) == sorted(hosts)
    # a phase without a grey level is dropped
    model = estimate_inclusion_model(ct, phases, particles, InclusionSettings(candidate_phases=(2, 3, 7)))
    np.testing.assert_array_equal(model.minerals, [2, 3])


def test_a_single_candidate_phase_is_searched(dark_inclusions):
    ct, phases, particles, _, hosts = dark_inclusions
    refined, report = recover_inclusions(ct, phases, particles, settings=InclusionSettings(candidate_phases=(2,)))
    assert report.n_inclusions == len(hosts)
    assert sorted(_changes_per_particle(refined, phases, particles)) == sorted(hosts)


def test_false_detections_in_pure_noise_match_false_alarms():
    from scipy import ndimage

    # two large box grains (levels 1.0 and 0.4) with the true blur and white Gaussian noise: every
    # detection is a false alarm; false_alarms = 0.05 per volume -> ~0.8 expected over 16 volumes
    particles = np.zeros(SHAPE, dtype=np.int32)
    particles[4:60, 4:60, 4:40] = 1
    particles[4:60, 4:60, 44:60] = 2
    phases = particles.astype(np.uint8)
    clean = ndimage.gaussian_filter(np.array([LEVEL[0], LEVEL[1], LEVEL[2]])[phases], SIGMA)
    settings = InclusionSettings(blur_sigma_voxels=SIGMA)
    found = 0
    for seed in range(16):
        ct = (clean + np.random.default_rng(seed).normal(0.0, NOISE, SHAPE)).astype(np.float32)
        found += recover_inclusions(ct, phases, particles, settings=settings)[1].n_inclusions
    # measured: 10 false inclusions in 16 volumes with one test per resolution element
    # (z = 4.43); Bonferroni over the tested voxels (z = 5.09) gives 0 here and 1 in 40 volumes
    assert found <= 3  # P(Poisson(0.8) > 3) < 1 %


def test_refine_phases_is_contacts_then_inclusions(dark_inclusions):
    ct, phases, particles, _, _ = dark_inclusions
    contacted, none = refine_phases(ct, phases, particles, inclusions=False)
    assert none is None
    np.testing.assert_array_equal(contacted, correct_contact_phases(phases, particles, depth_voxels=2))
    refined, report = refine_phases(ct, phases, particles)
    expected, expected_report = recover_inclusions(ct, contacted, particles)
    np.testing.assert_array_equal(refined, expected)
    assert report.n_inclusions == expected_report.n_inclusions == 3


# --------------------------------------------------------------------------------------------
# blocks


@pytest.fixture(scope="module")
def long_phantom():
    """A 28 x 48 x 160 row of grains, with inclusions on and near the x block faces (32, 64, ...)."""
    shape = (28, 48, 160)
    columns = (14.0, 40.0, 66.0, 92.0, 118.0, 144.0)
    grains = []
    for row, y in enumerate((12.0, 36.0)):
        for column, x in enumerate(columns):
            phase = 3 if (row, column) == (0, 0) else 2 if (row, column) == (1, 5) else 1
            grains.append((np.array([14.0, y, x]), 10.0, phase))
    inclusions = [(np.array([14.5, 12.3, 64.0]), 2.25, 2),   # on the face x = 64
                  (np.array([13.6, 36.2, 95.7]), 2.0, 2),    # on the face x = 96
                  (np.array([14.2, 11.5, 121.4]), 2.5, 2),   # near the face x = 128
                  (np.array([15.0, 36.6, 36.8]), 2.25, 2)]   # near the face x = 32
    return render(shape, grains, inclusions, sigma=SIGMA, noise=NOISE, seed=11)


def test_block_histograms_merge_to_the_whole_volume_model(long_phantom):
    ct, phases, particles, _, _ = long_phantom
    settings = InclusionSettings()
    whole = estimate_inclusion_model(ct, phases, particles, settings)
    block = (14, 24, 32)
    ranges = [grey_range_block(ct[core]) for core, _, _ in blocks(ct.shape, block, 0)]
    grey_range = (min(r[0] for r in ranges), max(r[1] for r in ranges))
    assert grey_range == grey_range_block(ct)
    # halos: the grain depth test (3 voxels) + 1; the gradient (4) + local maximum (1) + boundary (1)
    # + 1; the model blur and the residual's smoothing (4 + 2 x 4) + the tested depth (2) + 2
    levels = sum(level_histograms_block(ct[box], phases[box], particles[box], inner, grey_range)
                 for _, box, inner in blocks(ct.shape, block, 4))
    everything = (slice(None),) * 3
    np.testing.assert_array_equal(levels, level_histograms_block(ct, phases, particles, everything, grey_range))
    level = inclusion_model(levels, grey_range, np.zeros(4096, np.int64), 0, settings, 0.0).level
    widths = sum(blur_histogram_block(ct[box], phases[box], particles[box], inner, level)
                 for _, box, inner in blocks(ct.shape, block, 7))
    blur = blur_from_histogram(widths)
    assert blur == whole.blur_sigma_voxels
    smoothing = max(blur, 0.5)
    residuals, n_tested = np.zeros(4096, np.int64), 0
    for _, box, inner in blocks(ct.shape, block, 16):
        counts, tested = residual_histogram_block(ct[box], phases[box], particles[box], inner, level, blur,
                                                  smoothing, settings, grey_range[1] - grey_range[0])
        residuals += counts
        n_tested += tested
    merged = inclusion_model(levels, grey_range, residuals, n_tested, settings, blur)
    np.testing.assert_array_equal(merged.level, whole.level)
    assert (merged.blur_sigma_voxels, merged.smoothing_voxels, merged.spread, merged.threshold_z) == \
        (whole.blur_sigma_voxels, whole.smoothing_voxels, whole.spread, whole.threshold_z)
    np.testing.assert_array_equal(merged.minerals, whole.minerals)


def test_block_recovery_with_the_halo_equals_the_whole_volume(long_phantom):
    ct, phases, particles, _, hosts = long_phantom
    model = estimate_inclusion_model(ct, phases, particles)
    expected, report = recover_inclusions(ct, phases, particles, model=model)
    # the phantom's inclusions are all found, so the comparison is not between two no-ops
    assert report.n_inclusions == len(hosts) == 4
    assert sorted(_changes_per_particle(expected, phases, particles)) == sorted(hosts)
    halo = model.halo()
    assert 32 + 2 * halo < ct.shape[2]  # a box holds well under the whole row
    assembled = np.zeros_like(phases)
    n_inclusions, moved = 0, np.zeros((256, 256), np.int64)
    for core, box, inner in blocks(ct.shape, (14, 24, 32), halo):
        refined, count, block_moved = recover_inclusions_block(ct[box], phases[box], particles[box], inner, model)
        assembled[core] = refined
        n_inclusions += count
        moved += block_moved
    np.testing.assert_array_equal(assembled, expected)
    assert n_inclusions == report.n_inclusions
    np.testing.assert_array_equal(moved, report.relabelled)


# --------------------------------------------------------------------------------------------
# bad input


def test_bad_input():
    good = np.zeros((8, 8, 8), np.uint8)
    with pytest.raises(InputError, match="same 3D shape"):
        correct_contact_phases(good, np.zeros((8, 8, 9), np.int32))
    with pytest.raises(InputError, match="same 3D shape"):
        correct_contact_phases(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.int32))
    with pytest.raises(InputError, match="same shape"):
        recover_inclusions(np.zeros((8, 8, 9), np.float32), good, good.astype(np.int32))
    with pytest.raises(InputError, match="same 3D shape"):
        estimate_inclusion_model(np.zeros((8, 8, 8), np.float32), good, np.zeros((8, 9, 8), np.int32))
    with pytest.raises(InputError):
        refine_phases(np.zeros((9, 8, 8), np.float32), good, good.astype(np.int32), contact_voxels=0)


def test_model_is_a_frozen_value():
    model = estimate_inclusion_model(np.zeros((8, 8, 8), np.float32), np.zeros((8, 8, 8), np.uint8),
                                     np.zeros((8, 8, 8), np.int32))
    assert not model.usable
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.spread = 1.0  # type: ignore[misc]


def test_a_deep_contact_band_stays_inside_the_touching_particles():
    # particles 1 and 2 touch; particle 3 lies one matrix voxel away from particle 1 and touches
    # nothing: its matrix-facing rim (misread as phase 3) is not the contact correction's business
    particles = np.zeros((12, 22, 20), dtype=np.int32)
    particles[2:10, 2:10, 2:10] = 1
    particles[2:10, 2:10, 10:18] = 2
    particles[2:10, 11:20, 2:10] = 3
    phases = np.where(particles > 0, 1, 0).astype(np.uint8)
    phases[particles == 2] = 2
    phases[2:10, 11, 2:10] = 3
    corrected = correct_contact_phases(phases, particles, depth_voxels=4)
    np.testing.assert_array_equal(corrected[particles == 3], phases[particles == 3])


# --------------------------------------------------------------------------------------------
# small grains


def _two_particle_volume(seed: int):
    """A bright particle (phase 1, level 1.0) and a dark one (phase 2, level 0.4) that touch, and a
    phase-3 one (0.7) on the border, in matrix 0; blurred (sigma 0.9) with noise 0.01. Returns ct
    and the true phases/particles."""
    from scipy import ndimage

    particles = np.zeros((40, 40, 56), dtype=np.int32)
    particles[6:34, 6:34, 4:28] = 1
    particles[6:34, 6:34, 28:52] = 2
    particles[34:40, 0:12, 0:12] = 3  # gives phase 3 (0.7) its level
    phases = particles.astype(np.uint8)
    levels = np.array([0.0, 1.0, 0.4, 0.7])
    ct = ndimage.gaussian_filter(levels[phases], 0.9)
    ct = (ct + np.random.default_rng(seed).normal(0.0, 0.01, ct.shape)).astype(np.float32)
    return ct, phases, particles


def test_a_misread_band_at_a_contact_takes_its_particle_phase_and_a_true_grain_stays():
    ct, truth, particles = _two_particle_volume(0)
    phases = truth.copy()
    phases[10:20, 10:18, 29:31] = 3  # a band of the dark particle at the contact, misread as phase 3 (0.7)
    phases[24:28, 24:28, 14:18] = 3  # a true phase-3 grain inside the bright particle ...
    truth = truth.copy()
    truth[24:28, 24:28, 14:18] = 3
    from scipy import ndimage

    levels = np.array([0.0, 1.0, 0.4, 0.7])
    ct = (ct - ndimage.gaussian_filter(levels[_two_particle_volume(0)[1]], 0.9).astype(np.float32)
          + ndimage.gaussian_filter(levels[truth], 0.9).astype(np.float32))  # ... that is in the CT
    settings = InclusionSettings(blur_sigma_voxels=0.9)
    model = estimate_inclusion_model(ct, phases, particles, settings)
    refined, n_grains = reclassify_small_grains(ct, phases, particles, model=model)
    assert n_grains == 1
    np.testing.assert_array_equal(refined, truth)
    # a grain of a phase with no level (none deep enough) keeps its phase
    phases[particles == 3] = 2
    phases[24:28, 24:28, 14:18] = 4
    no_level = estimate_inclusion_model(ct, phases, particles, settings)
    assert np.isnan(no_level.level[4])
    assert reclassify_small_grains(ct, phases, particles, model=no_level)[0][25, 25, 15] == 4
    phases[particles == 3] = 3
    phases[24:28, 24:28, 14:18] = 3
    # off: nothing changes
    off = estimate_inclusion_model(ct, phases, particles, InclusionSettings(blur_sigma_voxels=0.9,
                                                                            small_grain_voxels=0))
    np.testing.assert_array_equal(reclassify_small_grains(ct, phases, particles, model=off)[0], phases)


def test_small_grain_blocks_equal_the_whole_volume():
    ct, truth, particles = _two_particle_volume(1)
    phases = truth.copy()
    phases[10:20, 10:18, 29:31] = 3
    phases[20:24, 5:9, 26:29] = 3  # a misread patch across the contact
    model = estimate_inclusion_model(ct, phases, particles, InclusionSettings(blur_sigma_voxels=0.9))
    whole, n_whole, moved_whole = reclassify_small_grains_block(ct, phases, particles, (slice(None),) * 3, model)
    assembled = np.zeros_like(phases)
    n_blocks, moved = 0, np.zeros((256, 256), np.int64)
    shape = phases.shape
    for z0 in (0, 20):
        for x0 in (0, 30):
            core = (slice(z0, z0 + 20), slice(0, 40), slice(x0, min(x0 + 30, shape[2])))
            halo = model.grain_halo()
            box = tuple(slice(max(c.start - halo, 0), min(c.stop + halo, n)) for c, n in zip(core, shape, strict=True))
            inner = tuple(slice(c.start - b.start, c.stop - b.start) for c, b in zip(core, box, strict=True))
            cut = [box[a].start > 0 if end == 0 else box[a].stop < shape[a] for a in range(3) for end in (0, 1)]
            part, count, block_moved = reclassify_small_grains_block(ct[box], phases[box], particles[box], inner,
                                                                     model, cut_faces=cut)
            assembled[core] = part
            n_blocks += count
            moved += block_moved
    np.testing.assert_array_equal(assembled, whole)
    assert n_blocks == n_whole == 2
    np.testing.assert_array_equal(moved, moved_whole)


# --------------------------------------------------------------------------------------------
# command line


def test_segment_refine_command_writes_refined_phases_and_summary(tmp_path, capsys):
    import json

    import tifffile

    from corrtomo.cli import main

    ct, truth, particles = _two_particle_volume(2)
    phases = truth.copy()
    phases[10:20, 10:18, 29:31] = 3  # a misread contact band
    for name, data in (("ct.tif", ct), ("phases.tif", phases), ("particles.tif", particles.astype(np.uint16))):
        tifffile.imwrite(tmp_path / name, data)
    args = ["segment", "refine", "--volume", str(tmp_path / "ct.tif"), "--phases", str(tmp_path / "phases.tif"),
            "--particles", str(tmp_path / "particles.tif"), "--out", str(tmp_path / "refined.tif"), "--blur-sigma",
            "0.9", "--voxel-size", "0.1", "--quiet"]
    assert main(args) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "refined.tif"), truth)
    summary = json.loads((tmp_path / "refined.refine.json").read_text())
    assert summary["changed_voxels"] == 160 and summary["blur_sigma_voxels"] == 0.9
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "phases.tif"), phases)  # input untouched
    # a particle volume of another shape: one line naming the file, exit 2
    tifffile.imwrite(tmp_path / "small.tif", particles[:20].astype(np.uint16))
    capsys.readouterr()
    assert main([*args[:7], str(tmp_path / "small.tif"), *args[8:]]) == 2
    err = capsys.readouterr().err.strip()
    assert "small.tif" in err and "differs from the CT volume" in err and "\n" not in err
