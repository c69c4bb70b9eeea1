"""Particle size distributions across scales (nano volume vs micro region vs micro pieces)."""

from __future__ import annotations

import numpy as np
import pytest

from corrtomo._shared import InputError
from corrtomo.stats import cross_scale_figure, cross_scale_psd


def _balls(shape, centres, radii):
    grid = np.indices(shape, dtype=np.float64)
    labels = np.zeros(shape, dtype=np.uint32)
    for label, (centre, radius) in enumerate(zip(centres, radii, strict=True), start=1):  # a few test balls
        inside = ((grid - np.asarray(centre, dtype=float)[:, None, None, None]) ** 2).sum(axis=0) <= radius**2
        labels[inside] = label
    return labels


def test_cross_scale_counts_trace_to_known_balls(tmp_path):
    # nano: 0.1 um voxels, 40^3 = 64 um^3; three fines (ESD ~0.9 um) and one 2.4 um particle
    nano = _balls((40, 40, 40), [(10, 10, 10), (30, 10, 10), (10, 30, 30), (25, 25, 25)], [4.5, 4.5, 4.5, 12])
    # micro: 0.5 um voxels, 32^3; the same region is the 8^3 corner; one 2.4 um particle there, fines lost
    micro = _balls((32, 32, 32), [(4, 4, 4), (20, 20, 20), (20, 8, 20)], [2.4, 2.4, 4.0])
    region = np.zeros(micro.shape, dtype=bool)
    region[:8, :8, :8] = True
    edges = [0.5, 1.0, 2.0, 4.0, 8.0]
    table = cross_scale_psd(nano, micro, nano_spacing_um=0.1, micro_spacing_um=0.5, region_mask=region,
                            esd_bins_um=edges, micro_resolution_um=0.8)
    nano_rows = table[table.source == "nano"]
    assert nano_rows.n_particles.tolist() == [3, 0, 1, 0]
    assert nano_rows.volume_um3.iloc[0] == pytest.approx(64.0)
    assert nano_rows.density_per_1000um3.iloc[0] == pytest.approx(3 / 64 * 1e3)
    region_rows = table[table.source == "micro region"]
    assert region_rows.n_particles.tolist() == [0, 0, 1, 0]
    assert region_rows.below_cutoff.tolist() == [True, True, False, False]  # cut-off 1.6 um
    summary = table.attrs["summary"]
    assert summary["micro region"]["median_esd_um"] > summary["nano"]["median_esd_um"]
    assert summary["nano"]["share_below_micro_cutoff"] == pytest.approx(0.75)
    pieces = table[table.source == "micro pieces"]
    assert pieces.volume_um3.iloc[0] == pytest.approx(64.0) and summary["n_pieces"] == 64
    assert (pieces.ci_low <= pieces.density_per_1000um3 + 1e-9).all()
    assert cross_scale_figure(table, tmp_path / "psd.png").stat().st_size > 1000
    with pytest.raises(InputError, match="empty"):
        cross_scale_psd(nano, micro, nano_spacing_um=0.1, micro_spacing_um=0.5, region_mask=np.zeros_like(region))


def test_cross_scale_on_twin_pair_reproduces_fig12_findings():
    """Micro-CT segmented by the library vs the nano truth of the same region: the micro PSD is
    shifted to larger sizes and has far fewer particles below its cut-off (paper Sec. 3.5, Fig. 12)."""
    from corrtomo.segment import foreground_mask, separate_particles
    from corrtomo.synth import make_scale_pair
    from test_scale_pair import SMALL_PAIR

    pair = make_scale_pair(SMALL_PAIR, seed=21, scale_ratio=4.0, rotation_deg=20.0, tilt_deg=3.0)
    foreground = foreground_mask(pair.micro_ct, spacing=pair.micro_voxel_size_um, pillar=False)
    micro_labels = separate_particles(foreground, spacing=pair.micro_voxel_size_um)
    micro_labels = np.asarray(getattr(micro_labels, "labels", micro_labels))
    yy, xx = np.indices(pair.nano_ct.shape[1:])
    centre = (np.asarray(pair.nano_ct.shape[1:]) - 1) / 2
    pillar = np.hypot(yy - centre[0], xx - centre[1]) <= pair.nano_pillar_radius_voxels
    nano_mask = np.broadcast_to(pillar, pair.nano_ct.shape)
    table = cross_scale_psd(pair.nano_particles, micro_labels, nano_spacing_um=pair.nano_voxel_size_um,
                            micro_spacing_um=pair.micro_voxel_size_um, region_mask=pair.nano_region_mask(),
                            nano_mask=nano_mask)
    summary = table.attrs["summary"]
    assert summary["micro region"]["median_esd_um"] > summary["nano"]["median_esd_um"]
    assert summary["micro region"]["n_particles"] < summary["nano"]["n_particles"]  # lost fines, merged particles
    nano_density = table[table.source == "nano"].density_per_1000um3.to_numpy()
    region_density = table[table.source == "micro region"].density_per_1000um3.to_numpy()
    below = table[table.source == "micro region"].below_cutoff.to_numpy()
    assert region_density[below].sum() < nano_density[below].sum()
