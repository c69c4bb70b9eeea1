"""BlockRunner: serial, threads and a dask.distributed LocalCluster give the same, ordered results;
a dead worker's tasks are recomputed and reported; a scheduler that does not answer is one line."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from corrtomo._shared import (
    BlockRunner,
    InputError,
    WorkerLostWarning,
    WorkersLostError,
    connect_scheduler,
)
from corrtomo.chunked import correct_rim_phases_chunked, separate_particles_chunked


def _square_block(index, *, source, target, scale):
    """Reads a block of `source`, writes scale * block**2 into `target`, returns its sum."""
    block = np.asarray(source[index * 8:(index + 1) * 8])
    target[index * 8:(index + 1) * 8] = scale * block**2
    return int(block.sum())


def _die_once(index, *, flag: str):
    """The worker running item 3 exits the first time (no Python cleanup), as a crashed worker."""
    if index == 3 and not os.path.exists(flag):
        Path(flag).write_text("died")
        os._exit(1)
    time.sleep(0.05)
    return index * 10


@pytest.fixture(scope="module")
def cluster_runner():
    with BlockRunner(2, "processes") as runner:
        yield runner


@pytest.mark.parametrize("kind", ["serial", "threads", "processes"])
def test_runner_results_in_block_order_and_equal(kind, cluster_runner, tmp_path):
    source = zarr.create_array(tmp_path / "source.zarr", shape=(64,), chunks=(8,), dtype="i4")
    source[:] = np.arange(64, dtype=np.int32)[::-1]
    target = zarr.create_array(tmp_path / "target.zarr", shape=(64,), chunks=(8,), dtype="i8")
    runner = {"serial": BlockRunner(), "threads": BlockRunner(2, "threads"), "processes": cluster_runner}[kind]
    sums = list(runner.map(_square_block, range(8), source=source, target=target, scale=3))
    expected = np.arange(64)[::-1]
    assert sums == [int(expected[i * 8:(i + 1) * 8].sum()) for i in range(8)]
    np.testing.assert_array_equal(target[:], 3 * expected**2)


def test_runner_kinds_and_bad_workers():
    assert BlockRunner().kind == "serial"
    assert BlockRunner(3).kind == "threads"
    assert BlockRunner(1, "threads").kind == "threads"
    with pytest.raises(InputError, match="workers: must be at least 1"):
        BlockRunner(0)


def test_dead_worker_is_recomputed_and_reported(tmp_path):
    flag = str(tmp_path / "died")
    with BlockRunner(2, "processes") as runner, pytest.warns(WorkerLostWarning, match="left the cluster"):
        results = list(runner.map(_die_once, range(8), flag=flag))
    assert results == [10 * i for i in range(8)]
    assert Path(flag).read_text() == "died"  # the worker really died once


def _always_die(index):
    os._exit(1)


def test_workers_dying_on_every_try_stop_the_pass_with_one_line():
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 1}), BlockRunner(2, "processes") as runner:
        with pytest.raises(WorkersLostError) as info:
            list(runner.map(_always_die, range(2)))
    message = str(info.value)
    assert "workers died repeatedly while running _always_die" in message and "re-run resumes" in message
    assert "\n" not in message


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_scheduler_that_does_not_answer_is_one_line():
    address = f"tcp://127.0.0.1:{_closed_port()}"
    start = time.perf_counter()
    with pytest.raises(InputError) as info:
        connect_scheduler(address, timeout_s=2.0)
    assert time.perf_counter() - start < 30
    message = str(info.value)
    assert message.startswith(f"{address}: no dask scheduler answered within 2 s")
    assert "\n" not in message


def test_connect_scheduler_to_a_running_cluster(cluster_runner):
    client = connect_scheduler(cluster_runner.client.scheduler.address)
    try:
        assert len(client.scheduler_info(n_workers=-1)["workers"]) == 2
    finally:
        client.close()


def _two_balls_row(n: int) -> np.ndarray:
    """n touching pairs of balls along x, crossing 16^3 blocks."""
    z, y, x = np.mgrid[:24, :24, : 20 * n]
    mask = np.zeros(z.shape, bool)
    for k in range(n):
        for cx in (10 + 20 * k - 4, 10 + 20 * k + 5):
            mask |= (z - 12) ** 2 + (y - 12) ** 2 + (x - cx) ** 2 < 36
    return mask


def test_chunked_stages_on_a_cluster_equal_serial(cluster_runner, tmp_path):
    mask = _two_balls_row(4)
    foreground = zarr.create_array(tmp_path / "fg.zarr", shape=mask.shape, chunks=(16, 16, 16), dtype="u1")
    foreground[:] = mask
    serial = separate_particles_chunked(foreground, spacing=0.5, chunks=(16, 16, 16))
    out = zarr.create_array(tmp_path / "labels.zarr", shape=mask.shape, chunks=(16, 16, 16), dtype="u4")
    spread = separate_particles_chunked(foreground, spacing=0.5, chunks=(16, 16, 16), out=out, runner=cluster_runner)
    assert spread.n_particles == serial.n_particles == 8
    np.testing.assert_array_equal(out[:], serial.labels)
    np.testing.assert_array_equal(spread.touches_border, serial.touches_border)

    phases = np.where(mask, np.where(np.arange(mask.shape[2]) % 20 < 10, 1, 2), 0).astype(np.uint8)
    phases_z = zarr.create_array(tmp_path / "phases.zarr", shape=mask.shape, chunks=(16, 16, 16), dtype="u1")
    phases_z[:] = phases
    corrected = zarr.create_array(tmp_path / "corr.zarr", shape=mask.shape, chunks=(16, 16, 16), dtype="u1")
    correct_rim_phases_chunked(phases_z, foreground, spacing=0.5, depth_um=0.5, out=corrected, runner=cluster_runner)
    np.testing.assert_array_equal(corrected[:], correct_rim_phases_chunked(phases, mask, spacing=0.5, depth_um=0.5,
                                                                            chunks=(16, 16, 16)))


def test_cluster_needs_zarr_output(cluster_runner):
    with pytest.raises(InputError, match=r"out: a dask\.distributed runner writes into a Zarr array"):
        separate_particles_chunked(_two_balls_row(1), spacing=1.0, chunks=(16, 16, 16), runner=cluster_runner)


# ------------------------------------------------------------------------------------------
# kept block records: a stopped pass resumes with the blocks it had finished
# ------------------------------------------------------------------------------------------


def _square_or_stop(index, *, source, target, scale, stop_at, calls):
    """As `_square_block`, recording each call in `calls`; raises at item `stop_at` (a crash)."""
    if index == stop_at:
        raise RuntimeError(f"stopped at block {index}")
    calls.append(index)
    return _square_block(index, source=source, target=target, scale=scale)


def _arrays(folder: Path):
    source = zarr.create_array(folder / "source.zarr", shape=(64,), chunks=(8,), dtype="i4", overwrite=True)
    source[:] = np.arange(64, dtype=np.int32) - 20
    target = zarr.create_array(folder / "target.zarr", shape=(64,), chunks=(8,), dtype="i8", overwrite=True)
    return source, target


@pytest.mark.parametrize("kind", ["serial", "threads"])
def test_kept_records_resume_a_stopped_pass(kind, tmp_path):
    source, target = _arrays(tmp_path)
    expected = 3 * (np.arange(64) - 20) ** 2
    sums = [int((np.arange(64) - 20)[i * 8:(i + 1) * 8].sum()) for i in range(8)]

    def runner():
        return BlockRunner() if kind == "serial" else BlockRunner(2, "threads")

    first = runner()
    first.keep_records(tmp_path / "blocks")
    calls: list[int] = []
    with pytest.raises(RuntimeError, match="stopped at block 5"):
        list(first.map(_square_or_stop, range(8), source=source, target=target, scale=3, stop_at=5, calls=calls))
    kept = sorted(p.name for p in (tmp_path / "blocks" / "000-_square_or_stop").glob("*.pkl"))
    assert kept == [f"{i:07d}.pkl" for i in range(5)]  # the blocks before the crash, in order

    # a new process: the same pass reads the five records back and computes the other three
    second = runner()
    second.keep_records(tmp_path / "blocks")
    calls = []
    got = list(second.map(_square_or_stop, range(8), source=source, target=target, scale=3, stop_at=None,
                          calls=calls))
    assert got == sums
    assert sorted(calls) == [5, 6, 7]
    assert second.resumed_blocks == 5
    np.testing.assert_array_equal(target[:], expected)
    # the next pass of the run has its own number, so nothing of the first is taken for it
    calls = []
    assert list(second.map(_square_or_stop, range(8), source=source, target=target, scale=1, stop_at=None,
                           calls=calls)) == sums
    assert sorted(calls) == list(range(8))
    assert (tmp_path / "blocks" / "001-_square_or_stop").is_dir()


def test_kept_records_are_not_reused_for_other_items_or_a_numpy_output(tmp_path):
    source, target = _arrays(tmp_path)
    runner = BlockRunner()
    runner.keep_records(tmp_path / "blocks")
    list(runner.map(_square_or_stop, range(8), source=source, target=target, scale=3, stop_at=None, calls=[]))
    # other items at the same positions (a changed block grid): every block computed again
    again = BlockRunner()
    again.keep_records(tmp_path / "blocks")
    calls: list[int] = []
    list(again.map(_square_or_stop, [7, 6, 5, 4, 3, 2, 1, 0], source=source, target=target, scale=3, stop_at=None,
                   calls=calls))
    assert calls == [7, 6, 5, 4, 3, 2, 1, 0] and again.resumed_blocks == 0
    # a record cut short (the process died while writing it) is computed again
    record = tmp_path / "blocks" / "000-_square_or_stop" / "0000003.pkl"
    record.write_bytes(record.read_bytes()[:5])
    third = BlockRunner()
    third.keep_records(tmp_path / "blocks")
    calls = []
    list(third.map(_square_or_stop, [7, 6, 5, 4, 3, 2, 1, 0], source=source, target=target, scale=3,
                   stop_at=None, calls=calls))
    assert calls == [4] and third.resumed_blocks == 7
    # a numpy volume as output would not outlive the process: no record is kept for its pass
    volume = np.zeros((4, 4, 4))
    numpy_runner = BlockRunner()
    numpy_runner.keep_records(tmp_path / "numpy-blocks")
    list(numpy_runner.map(_fill_plane, range(4), out=volume))
    assert volume[:, 0, 0].tolist() == [0, 1, 2, 3]
    assert not list((tmp_path / "numpy-blocks").rglob("*.pkl"))
    # without_records: the same workers, nothing kept
    plain = runner.without_records()
    list(plain.map(_square_or_stop, range(8), source=source, target=target, scale=2, stop_at=None, calls=[]))
    assert not (tmp_path / "blocks" / "001-_square_or_stop").exists()


def _fill_plane(index, *, out):
    out[index] = index
