"""Chunked grain table == in-memory grain table (ids, rows, volumes, surfaces), any block shape."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import zarr
from numpy.testing import assert_allclose

from _twins import twin
from corrtomo._shared import InputError
from corrtomo.chunked import grain_table_chunked
from corrtomo.measure import grain_table, label_grains
from corrtomo.synth import make_sample


@pytest.fixture(scope="module")
def quick():
    return make_sample("quick", seed=0)


@pytest.fixture(scope="module")
def slag():
    """96 x 112 x 112 twin: many particles crossing block borders, several grains per particle."""
    return twin("li-slag", 0)


def phase_names(sample) -> dict[int, str]:
    return {phase.id: phase.name for phase in sample.library.phases}


def assert_tables_equal(table: pd.DataFrame, reference: pd.DataFrame) -> None:
    assert list(table.columns) == list(reference.columns)
    assert len(table) == len(reference)
    for column in reference.columns:
        got, expected = table[column].to_numpy(), reference[column].to_numpy()
        assert table[column].dtype == reference[column].dtype, column
        if np.issubdtype(expected.dtype, np.floating):
            assert_allclose(got, expected, rtol=1e-9, atol=0, err_msg=column)
        else:
            np.testing.assert_array_equal(got, expected, err_msg=column)


@pytest.mark.parametrize("connectivity", [6, 26])
@pytest.mark.parametrize("chunks", [(7, 11, 13), (16, 16, 16), (3, 5, 2), None])
def test_grain_table_equals_in_memory_quick(quick, chunks, connectivity):
    names = phase_names(quick)
    spacing = quick.voxel_size_um
    reference = grain_table(
        quick.particles, quick.phases, spacing=spacing, phase_names=names, connectivity=connectivity
    )
    assert len(reference) > 0
    table = grain_table_chunked(
        quick.particles, quick.phases, spacing=spacing, phase_names=names, chunks=chunks,
        connectivity=connectivity,
    )  # fmt: skip
    assert_tables_equal(table, reference)


@pytest.mark.parametrize("chunks", [(7, 11, 13), (19, 23, 29), (96, 112, 112)])
def test_grain_table_equals_in_memory_slag(slag, chunks):
    names = phase_names(slag)
    spacing = (1.0, 0.9, 1.1)  # anisotropic: the surface weights differ per axis
    reference = grain_table(slag.particles, slag.phases, spacing=spacing, phase_names=names)
    assert reference["particle_label"].value_counts().max() > 5  # many grains per particle
    exposed = reference["exposed_surface_fraction"]
    assert ((exposed > 0.01) & (exposed < 0.99)).mean() > 0.5  # partly exposed grains
    table = grain_table_chunked(
        slag.particles, slag.phases, spacing=spacing, phase_names=names, chunks=chunks
    )
    assert_tables_equal(table, reference)
    # grain ids are the in-memory label image's ids
    grains = label_grains(slag.particles, slag.phases)
    row = table.iloc[len(table) // 2]
    voxels = grains.image == row["grain_id"]
    assert int(voxels.sum()) == row["volume_voxels"]
    assert np.all(slag.particles[voxels] == row["particle_label"])


def test_grain_table_six_connected_slag(slag):
    reference = grain_table(slag.particles, slag.phases, spacing=1.0, connectivity=6)
    table = grain_table_chunked(
        slag.particles, slag.phases, spacing=1.0, chunks=(19, 23, 29), connectivity=6
    )
    assert_tables_equal(table, reference)


def test_tables_on_threads_and_resumed_from_block_records(slag, tmp_path, monkeypatch):
    """Both tables run their blocks on a runner: 2 threads give the in-memory tables, and a
    grain table stopped in its second pass resumes from the blocks it finished."""
    import functools

    import corrtomo.chunked._grains as module
    from corrtomo._shared import BlockRunner
    from corrtomo.chunked import particle_table_chunked
    from corrtomo.measure import particle_table

    names = phase_names(slag)
    chunks = (48, 56, 56)  # 2 x 2 x 2 blocks
    reference = grain_table(slag.particles, slag.phases, spacing=1.0, phase_names=names)
    with BlockRunner(2) as runner:
        assert_tables_equal(grain_table_chunked(slag.particles, slag.phases, phase_names=names, chunks=chunks,
                                                runner=runner), reference)
        particles = particle_table_chunked(slag.particles, slag.phases, phase_names=names, chunks=chunks,
                                           runner=runner)
    expected = particle_table(slag.particles, slag.phases, phase_names=names)
    assert list(particles.columns) == [c for c in expected.columns if c in particles.columns]
    for column in particles.columns:
        got, want = particles[column].to_numpy(), expected[column].to_numpy()
        if want.dtype.kind == "f":
            assert_allclose(got, want, rtol=1e-9, atol=1e-9, err_msg=column)
        else:
            np.testing.assert_array_equal(got, want, err_msg=column)

    sums = module._grain_sums
    calls = {"sums": 0, "stop_after": 3}

    @functools.wraps(sums)  # the same name: passes are known by number and name
    def counted(item, **kwargs):
        if calls["sums"] == calls["stop_after"]:
            raise RuntimeError("the machine went down")
        calls["sums"] += 1
        return sums(item, **kwargs)

    monkeypatch.setattr(module, "_grain_sums", counted)
    volumes = []
    for volume in (slag.particles, slag.phases):  # read-only: records are kept for stored inputs
        volume = volume.copy()
        volume.flags.writeable = False
        volumes.append(volume)
    with BlockRunner() as runner, pytest.raises(RuntimeError, match="went down"):
        runner.keep_records(tmp_path / "records")
        grain_table_chunked(*volumes, phase_names=names, chunks=chunks, runner=runner)
    calls.update(sums=0, stop_after=None)
    with BlockRunner() as runner:
        runner.keep_records(tmp_path / "records")
        table = grain_table_chunked(*volumes, phase_names=names, chunks=chunks, runner=runner)
        assert runner.resumed_blocks == 8 + 3  # the first pass and 3 blocks of the second
    assert calls["sums"] == 8 - 3
    assert_tables_equal(table, reference)


@pytest.mark.parametrize("connectivity", [6, 18, 26])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grain_table_random_volumes(seed, connectivity):
    """Speckled phases in blocky particles: thin, diagonal grains crossing every block border."""
    rng = np.random.default_rng(seed)
    shape = (9, 10, 11)
    particles = np.kron(rng.integers(0, 4, (3, 4, 4)), np.ones((3, 3, 3), int))
    particles = particles[: shape[0], : shape[1], : shape[2]].astype(np.uint16)
    phases = rng.integers(0, 4, shape).astype(np.uint8)
    reference = grain_table(particles, phases, spacing=(0.5, 1.0, 2.0), connectivity=connectivity)
    for chunks in [(2, 3, 4), (4, 1, 5), (9, 10, 11)]:
        table = grain_table_chunked(
            particles, phases, spacing=(0.5, 1.0, 2.0), chunks=chunks, connectivity=connectivity
        )
        assert_tables_equal(table, reference)


def test_grain_table_zarr_and_dask_input_unchanged(slag, tmp_path):
    particles = zarr.create_array(
        store=str(tmp_path / "p.zarr"), shape=slag.particles.shape, chunks=(24, 40, 40),
        dtype=slag.particles.dtype,
    )  # fmt: skip
    particles[...] = slag.particles
    phases = zarr.create_array(
        store=str(tmp_path / "f.zarr"), shape=slag.phases.shape, chunks=(24, 40, 40),
        dtype=slag.phases.dtype,
    )  # fmt: skip
    phases[...] = slag.phases
    names = phase_names(slag)
    reference = grain_table(slag.particles, slag.phases, spacing=1.0, phase_names=names)
    table = grain_table_chunked(particles, phases, spacing=1.0, phase_names=names)  # Zarr chunks
    assert_tables_equal(table, reference)
    np.testing.assert_array_equal(particles[...], slag.particles)
    np.testing.assert_array_equal(phases[...], slag.phases)
    lazy = grain_table_chunked(
        da.from_array(slag.particles, chunks=(32, 56, 56)),
        da.from_array(slag.phases, chunks=(32, 56, 56)),
        spacing=1.0,
        phase_names=names,
    )
    assert_tables_equal(lazy, reference)


def test_numpy_input_not_modified(quick):
    particles, phases = quick.particles.copy(), quick.phases.copy()
    grain_table_chunked(particles, phases, spacing=1.0, chunks=(7, 11, 13))
    np.testing.assert_array_equal(particles, quick.particles)
    np.testing.assert_array_equal(phases, quick.phases)


def test_no_particles_gives_empty_table():
    empty = np.zeros((4, 5, 6), np.uint32)
    reference = grain_table(empty, empty.astype(np.uint8), spacing=1.0)
    table = grain_table_chunked(empty, empty.astype(np.uint8), spacing=1.0, chunks=(2, 2, 2))
    assert table.empty
    assert list(table.columns) == list(reference.columns)


def test_bad_input(quick):
    with pytest.raises(InputError, match="differs"):
        grain_table_chunked(quick.particles, quick.phases[:-1], spacing=1.0)
    with pytest.raises(InputError, match="3D"):
        grain_table_chunked(quick.particles[0], quick.phases[0], spacing=1.0)
    with pytest.raises(InputError, match="connectivity"):
        grain_table_chunked(quick.particles, quick.phases, connectivity=8)
    with pytest.raises(InputError, match=r"0\.\.255"):
        grain_table_chunked(quick.particles, quick.phases.astype(np.uint16) * 300)
    with pytest.raises(InputError, match="not in the phase library"):
        grain_table_chunked(quick.particles, quick.phases, phase_names={99: "x"})
    with pytest.raises(InputError):
        grain_table_chunked(quick.particles.astype(np.float32), quick.phases)
