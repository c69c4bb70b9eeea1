"""Simulated CT (corrtomo.synth._ct): projector, FBP, SIRT and acquisition against analytic truth."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose
from skimage.transform import iradon, radon

from corrtomo.synth._ct import (
    FILTERS,
    backproject,
    default_n_angles,
    fbp,
    forward_project,
    simulate_ct,
    simulate_ct_image_domain,
    sirt,
)
from corrtomo.synth._projector import detector_bins

MU_VOXEL = 0.01  # attenuation per voxel length used for the analytic disks


def disk(n: int, radius: float, centre=(0.0, 0.0), supersample: int = 8) -> np.ndarray:
    """Area fraction of a disk in each pixel of an ``n x n`` slice.

    ``centre = (x, y)`` in the projector's coordinates: ``x = j - (n-1)/2``, ``y = (n-1)/2 - i``.
    """
    c = 0.5 * (n - 1)
    grid = (np.arange(n * supersample) + 0.5) / supersample - 0.5
    y = c - grid[:, None]
    x = grid[None, :] - c
    inside = (x - centre[0]) ** 2 + (y - centre[1]) ** 2 <= radius**2
    return inside.reshape(n, supersample, n, supersample).mean(axis=(1, 3)).astype(np.float32)


def radius_map(n: int) -> np.ndarray:
    c = 0.5 * (n - 1)
    yy, xx = np.mgrid[:n, :n] - c
    return np.hypot(xx, yy)


def half_turn(n_angles: int) -> np.ndarray:
    return np.arange(n_angles) * (np.pi / n_angles)


# --------------------------------------------------------------------------------------------
# projector
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 7, 32, 33, 64, 256])
def test_detector_covers_diagonal_with_slice_parity(n):
    d = detector_bins(n)
    assert d >= math.sqrt(2) * n
    assert (d - n) % 2 == 0
    assert d < math.sqrt(2) * n + 2


def test_forward_projection_of_off_centre_disk_matches_chord_length():
    rng = np.random.default_rng(7)
    n, radius = 64, 18.0
    centre = rng.uniform(-6, 6, size=2)
    image = MU_VOXEL * disk(n, radius, centre)
    angles = rng.uniform(0, np.pi, size=12)
    sino = forward_project(image[None], angles)[0]
    n_det = sino.shape[1]
    t = np.arange(n_det) - 0.5 * (n_det - 1)
    for a, theta in enumerate(angles):
        t0 = centre[0] * np.cos(theta) + centre[1] * np.sin(theta)
        truth = 2 * MU_VOXEL * np.sqrt(np.clip(radius**2 - (t - t0) ** 2, 0, None))
        away = np.abs(t - t0) < 0.8 * radius
        assert_allclose(sino[a, away], truth[away], rtol=0.015)
        assert np.all(sino[a, np.abs(t - t0) > radius + 1.5] == 0)
    # the integral of every projection is the mass of the slice (Joseph: to aliasing, ~1e-3)
    assert_allclose(sino.sum(axis=1), image.sum(), rtol=1e-3)


def test_projection_of_square_at_0_and_90_degrees_are_column_and_row_sums():
    n = 16
    rng = np.random.default_rng(0)
    image = np.zeros((n, n), np.float32)
    image[3:11, 5:14] = rng.uniform(0.5, 1.5, size=(8, 9))
    sino = forward_project(image[None], [0.0, np.pi / 2])[0]
    off = (sino.shape[1] - n) // 2
    assert_allclose(sino[0, off : off + n], image.sum(axis=0), rtol=1e-5)
    # at 90 degrees t = y, and y points up (rows counted downwards)
    assert_allclose(sino[1, off : off + n], image.sum(axis=1)[::-1], rtol=1e-5, atol=1e-5)


def test_forward_projection_is_linear():
    rng = np.random.default_rng(1)
    a, b = rng.random((2, 3, 24, 24)).astype(np.float32)
    angles = rng.uniform(0, 2 * np.pi, size=17)
    combined = forward_project(2.5 * a - 0.7 * b, angles)
    assert_allclose(
        combined,
        2.5 * forward_project(a, angles) - 0.7 * forward_project(b, angles),
        rtol=1e-5,
        atol=1e-4,
    )


def test_adjoint_backprojection_is_the_exact_transpose():
    rng = np.random.default_rng(2)
    n = 21
    angles = rng.uniform(0, np.pi, size=13)
    x = rng.random((2, n, n))
    y = rng.random((2, 13, detector_bins(n)))
    lhs = np.vdot(forward_project(x, angles).astype(np.float64), y)
    rhs = np.vdot(x, backproject(y, angles, n, adjoint=True).astype(np.float64))
    assert_allclose(lhs, rhs, rtol=1e-6)


def test_projector_agrees_with_skimage_radon():
    n = 65  # odd: skimage's rotation centre n // 2 is the geometric centre
    image = disk(n, 12, (8, -5)) + 0.5 * disk(n, 9, (-10, 9))
    image[radius_map(n) > n / 2 - 1] = 0
    angles = half_turn(60)
    ours = forward_project(image[None], angles)[0]
    off = (ours.shape[1] - n) // 2
    reference = radon(image, np.rad2deg(angles), circle=True).T
    err = np.sqrt(np.mean((ours[:, off : off + n] - reference) ** 2))
    assert err / np.sqrt(np.mean(reference**2)) < 0.01


# --------------------------------------------------------------------------------------------
# reconstruction
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("filter_name", FILTERS)
def test_fbp_of_uniform_disk_recovers_mu(filter_name):
    n, radius = 64, 24
    image = MU_VOXEL * disk(n, radius)
    angles = half_turn(default_n_angles(n))
    recon = fbp(forward_project(image[None], angles), angles, n, filter=filter_name)[0]
    interior = radius_map(n) < 0.8 * radius
    assert_allclose(recon[interior].mean(), MU_VOXEL, rtol=0.005)
    assert np.abs(recon[interior] / MU_VOXEL - 1).max() < 0.02
    assert np.abs(recon[radius_map(n) > radius + 3]).max() < 0.05 * MU_VOXEL


def test_fbp_agrees_with_skimage_iradon():
    n = 65
    image = disk(n, 14, (6, 3)) + 2 * disk(n, 6, (-12, -8))
    angles = half_turn(100)
    sino = forward_project(image[None], angles)
    off = (sino.shape[2] - n) // 2
    ours = fbp(sino, angles, n)[0]
    reference = iradon(
        sino[0, :, off : off + n].T, np.rad2deg(angles), circle=True, filter_name="ramp"
    )
    inside = radius_map(n) < n / 2 - 2
    diff = np.sqrt(np.mean((ours - reference)[inside] ** 2))
    assert diff / np.sqrt(np.mean(reference[inside] ** 2)) < 0.02


def test_sirt_of_uniform_disk_recovers_mu():
    n, radius = 48, 18
    image = MU_VOXEL * disk(n, radius)
    angles = half_turn(default_n_angles(n))
    sino = forward_project(image[None], angles)
    recon = sirt(sino, angles, n, iterations=100)[0]
    interior = radius_map(n) < 0.8 * radius
    assert_allclose(recon[interior].mean(), MU_VOXEL, rtol=0.01)
    assert np.abs(recon[interior] / MU_VOXEL - 1).max() < 0.02
    assert recon.min() >= 0
    # starting from the answer, SIRT stays there
    warm = sirt(sino, angles, n, iterations=5, initial=image[None])[0]
    assert np.abs(warm - image).max() < 0.05 * MU_VOXEL


def test_reconstructors_reject_bad_input():
    angles = half_turn(8)
    sino = np.zeros((1, 8, detector_bins(16)), np.float32)
    with pytest.raises(ValueError, match="filter"):
        fbp(sino, angles, 16, filter="butterworth")
    with pytest.raises(ValueError, match="angles"):
        fbp(sino, angles[:5], 16)
    with pytest.raises(ValueError, match="detector bins"):
        sirt(sino, angles, 20)
    with pytest.raises(ValueError, match="square"):
        forward_project(np.zeros((1, 8, 9)), angles)
    with pytest.raises(ValueError, match="3D"):
        forward_project(np.zeros((8, 8)), angles)


# --------------------------------------------------------------------------------------------
# acquisition simulation
# --------------------------------------------------------------------------------------------
VOXEL_UM = 0.5


def cylinder(n: int = 64, n_z: int = 4, radius: float = 26) -> np.ndarray:
    return np.repeat(disk(n, radius, supersample=4)[None], n_z, axis=0)


def test_noise_falls_as_photon_count_rises():
    fractions = cylinder()[None]
    mu = np.array([[2 * MU_VOXEL / VOXEL_UM]])
    region = radius_map(64) < 15
    stds = []
    for photons in (1e3, 1e4, 1e5):
        result = simulate_ct(
            fractions, mu, [1.0], voxel_size_um=VOXEL_UM, photons_per_pixel=photons, rng=5
        )
        assert_allclose(result.image[:, region].mean(), mu[0, 0], rtol=0.02)
        stds.append(result.image[:, region].std())
    ratios = np.array(stds[:-1]) / np.array(stds[1:])
    assert_allclose(ratios, math.sqrt(10), rtol=0.2)


def test_monochromatic_materials_reconstruct_to_their_attenuation():
    n, n_z = 64, 3
    pillar = cylinder(n, n_z)
    grain_a = np.repeat(disk(n, 9, (-11, 2))[None], n_z, axis=0)
    grain_b = np.repeat(disk(n, 9, (11, -2))[None], n_z, axis=0)
    fractions = np.stack([pillar - grain_a - grain_b, grain_a, grain_b])
    mu = np.array([[0.02], [0.06], [0.12]])
    result = simulate_ct(fractions, mu, [1.0], voxel_size_um=VOXEL_UM, photons_per_pixel=1e5, rng=3)
    assert result.n_basis == 1 and result.basis_residual < 1e-12
    means = []
    for m in range(3):
        core = fractions[m, 0] > 0.999
        core &= (
            np.roll(core, 2, 0) & np.roll(core, -2, 0) & np.roll(core, 2, 1) & np.roll(core, -2, 1)
        )
        means.append(result.image[:, core].mean())
    assert np.all(np.diff(means) > 0)
    assert_allclose(means, mu[:, 0], rtol=0.03)


def test_sirt_simulation_matches_attenuation():
    fractions = cylinder(48, 2, 20)[None]
    mu = np.array([[0.03]])
    result = simulate_ct(
        fractions,
        mu,
        [1.0],
        voxel_size_um=VOXEL_UM,
        photons_per_pixel=math.inf,
        reconstruction="sirt",
        sirt_iterations=100,
    )
    assert_allclose(result.image[:, radius_map(48) < 14].mean(), 0.03, rtol=0.02)


def test_polychromatic_beam_hardening_gives_cupping():
    fractions = cylinder()[None]
    region = radius_map(64)
    centre, rim = region < 5, (region > 19) & (region < 22)
    spectrum = np.array([0.5, 0.3, 0.2])
    mu_poly = np.array([[0.12, 0.04, 0.02]])
    poly = simulate_ct(
        fractions, mu_poly, spectrum, voxel_size_um=VOXEL_UM, photons_per_pixel=math.inf
    )
    mono = simulate_ct(
        fractions, mu_poly[:, :1], [1.0], voxel_size_um=VOXEL_UM, photons_per_pixel=math.inf
    )
    cup_poly = poly.image[:, rim].mean() / poly.image[:, centre].mean() - 1
    cup_mono = mono.image[:, rim].mean() / mono.image[:, centre].mean() - 1
    assert cup_poly > 0.05
    assert abs(cup_mono) < 0.01
    # hardening: the whole cylinder reads below the spectrum-weighted attenuation
    assert poly.image[:, centre].mean() < poly.mu_effective_per_um[0]
    assert_allclose(poly.mu_effective_per_um, [0.076])


def test_basis_decomposition_is_independent_of_how_materials_are_split():
    n_z, n = 2, 32
    fractions_two = np.stack(
        [cylinder(n, n_z, 12), 0.5 * np.repeat(disk(n, 5, (4, 0))[None], n_z, 0)]
    )
    mu_two = np.array([[0.02, 0.01, 0.008], [0.2, 0.07, 0.03]])
    spectrum = [0.2, 0.5, 0.3]
    # the same sample described with the second material split into two identical channels
    fractions_three = np.concatenate(
        [fractions_two[:1], fractions_two[1:] / 2, fractions_two[1:] / 2]
    )
    mu_three = mu_two[[0, 1, 1]]
    kwargs = dict(voxel_size_um=1.0, photons_per_pixel=math.inf)
    two = simulate_ct(fractions_two, mu_two, spectrum, **kwargs)
    three = simulate_ct(fractions_three, mu_three, spectrum, **kwargs)
    assert two.n_basis == 2 and three.n_basis == 2
    assert_allclose(three.image, two.image, atol=1e-5 * mu_two.max())


def test_same_seed_is_bit_identical_other_seed_differs_slab_size_does_not_matter():
    fractions = np.stack([cylinder(32, 5, 12), np.repeat(disk(32, 4, (3, 2))[None], 5, axis=0)])
    mu = np.array([[0.02, 0.01], [0.1, 0.05]])
    kwargs = dict(voxel_size_um=1.0, photons_per_pixel=2e3, psf_sigma_voxels=0.8)
    first = simulate_ct(fractions, mu, [0.6, 0.4], rng=11, **kwargs).image
    again = simulate_ct(fractions, mu, [0.6, 0.4], rng=11, **kwargs).image
    other = simulate_ct(fractions, mu, [0.6, 0.4], rng=12, **kwargs).image
    slabs = simulate_ct(fractions, mu, [0.6, 0.4], rng=11, slab_size=2, **kwargs).image
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert np.array_equal(first, slabs)


def test_rectangular_slices_are_padded_and_cropped():
    n_y, n_x = 20, 32
    square = disk(32, 7, (5, 0))
    fractions = square[6:26][None, None]  # the disk cropped to 20 rows
    result = simulate_ct(
        fractions, np.array([[0.05]]), [1.0], voxel_size_um=1.0, photons_per_pixel=math.inf
    )
    assert result.image.shape == (1, n_y, n_x)
    reference = simulate_ct(
        square[None, None], np.array([[0.05]]), [1.0], voxel_size_um=1.0, photons_per_pixel=math.inf
    ).image[:, 6:26]
    assert_allclose(result.image, reference, atol=1e-6)


def test_psf_blurs_edges_and_progress_is_reported():
    fractions = cylinder(32, 3, 12)[None]
    mu = np.array([[0.04]])
    calls = []
    sharp = simulate_ct(fractions, mu, [1.0], voxel_size_um=1.0, photons_per_pixel=math.inf)
    blurred = simulate_ct(
        fractions,
        mu,
        [1.0],
        voxel_size_um=1.0,
        photons_per_pixel=math.inf,
        psf_sigma_voxels=1.5,
        slab_size=2,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(2, 3), (3, 3)]
    edge = (radius_map(32) > 10) & (radius_map(32) < 14)
    # blur spreads the edge: the gradient magnitude across it drops
    grad_sharp = np.hypot(*np.gradient(sharp.image[1]))[edge].max()
    grad_blurred = np.hypot(*np.gradient(blurred.image[1]))[edge].max()
    assert grad_blurred < 0.6 * grad_sharp
    assert_allclose(blurred.image[1, radius_map(32) < 6].mean(), 0.04, rtol=0.03)


def test_simulate_ct_rejects_bad_input():
    fractions = np.zeros((2, 1, 8, 8), np.float32)
    with pytest.raises(ValueError, match="sum to 1"):
        simulate_ct(fractions, np.ones((2, 2)), [0.5, 0.6], voxel_size_um=1.0)
    with pytest.raises(ValueError, match="attenuation_per_um"):
        simulate_ct(fractions, np.ones((3, 1)), [1.0], voxel_size_um=1.0)
    with pytest.raises(ValueError, match="voxel_size_um"):
        simulate_ct(fractions, np.ones((2, 1)), [1.0], voxel_size_um=0.0)
    with pytest.raises(ValueError, match="photons_per_pixel"):
        simulate_ct(fractions, np.ones((2, 1)), [1.0], voxel_size_um=1.0, photons_per_pixel=0)
    with pytest.raises(ValueError, match="reconstruction"):
        simulate_ct(fractions, np.ones((2, 1)), [1.0], voxel_size_um=1.0, reconstruction="art")
    with pytest.raises(ValueError, match="4D"):
        simulate_ct(fractions[0], np.ones((2, 1)), [1.0], voxel_size_um=1.0)


# --------------------------------------------------------------------------------------------
# image-domain approximation
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("photons", [1e3, 3e4])
def test_image_domain_noise_matches_full_simulation(photons):
    n = 64
    fractions = cylinder(n, 4)[None]
    mu = np.array([[0.04]])
    region = radius_map(n) < 15
    full = simulate_ct(
        fractions, mu, [1.0], voxel_size_um=VOXEL_UM, photons_per_pixel=photons, rng=8
    )
    fast = simulate_ct_image_domain(
        fractions, mu, [1.0], voxel_size_um=VOXEL_UM, photons_per_pixel=photons, rng=8
    )
    assert fast.image.shape == full.image.shape
    assert_allclose(fast.image[:, region].std(), full.image[:, region].std(), rtol=0.3)
    assert_allclose(fast.image[:, region].mean(), full.image[:, region].mean(), rtol=0.02)
    assert_allclose(fast.noise_std_per_um, full.image[:, region].std(), rtol=0.3)


def test_image_domain_is_deterministic_and_noise_free_at_infinite_photons():
    fractions = np.stack([cylinder(32, 2, 12), np.repeat(disk(32, 4)[None], 2, axis=0)])
    mu = np.array([[0.02, 0.01], [0.1, 0.05]])
    clean = simulate_ct_image_domain(
        fractions, mu, [0.5, 0.5], voxel_size_um=1.0, photons_per_pixel=math.inf
    )
    assert_allclose(clean.image, np.tensordot(mu @ [0.5, 0.5], fractions, axes=1), atol=1e-7)
    first = simulate_ct_image_domain(fractions, mu, [0.5, 0.5], voxel_size_um=1.0, rng=4)
    again = simulate_ct_image_domain(fractions, mu, [0.5, 0.5], voxel_size_um=1.0, rng=4)
    other = simulate_ct_image_domain(fractions, mu, [0.5, 0.5], voxel_size_um=1.0, rng=5)
    assert np.array_equal(first.image, again.image)
    assert not np.array_equal(first.image, other.image)


def test_kernels_do_not_depend_on_thread_count():
    numba = pytest.importorskip("numba")
    rng = np.random.default_rng(9)
    volume = rng.random((3, 24, 24)).astype(np.float32)
    angles = half_turn(30)
    sino = forward_project(volume, angles)
    reference = (sino, fbp(sino, angles, 24), sirt(sino, angles, 24, iterations=3))
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = (
            forward_project(volume, angles),
            fbp(sino, angles, 24),
            sirt(sino, angles, 24, iterations=3),
        )
    finally:
        numba.set_num_threads(threads)
    for a, b in zip(reference, single, strict=True):
        assert np.array_equal(a, b)
