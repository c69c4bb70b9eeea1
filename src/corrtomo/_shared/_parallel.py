"""Independent per-block tasks: in this process, on threads, or on a ``dask.distributed`` cluster.

Every chunked stage has passes whose blocks do not depend on each other (classify a block,
segment a block with its halo, relabel a block). Such a pass is written as one module-level
function of a block index that reads its inputs from Zarr, writes its output block to Zarr
and returns a small record; :class:`BlockRunner` runs that function over the blocks. The
records come back in the order of the blocks, so the merge that follows is the same whatever
the number of workers, and the results are identical to a serial run.

On a cluster the volumes never pass through the client: workers open the same Zarr stores
(a shared path) and only the small records travel. Large read-only arguments (a trained
classifier) are scattered once to every worker.

With :meth:`BlockRunner.keep_records` a runner writes each block's record to a folder as soon
as the block is done (after its output block is in Zarr), one sub-folder per pass in the order
the passes run. A later run of the same passes into the same Zarr arrays (an interrupted
pipeline stage, resumed) reads those records back instead of recomputing the blocks, so a run
killed after hours loses at most the blocks that were being computed. Passes run one after
another, so a pass's inputs are intact until it has finished; this is therefore sound for every
pass that does not rewrite an array it reads (no in-place pass), which every chunked stage's
pass is. Records are not kept for a pass whose output is a numpy volume, which would not
survive the process.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import pickle
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import InputError

__all__ = ["BlockRunner", "WorkerLostWarning", "WorkersLostError", "connect_scheduler"]

log = logging.getLogger("corrtomo")

#: Environment for local worker processes: one thread each for the numeric libraries, so
#: n workers use n cores instead of n x cores threads fighting for them.
_ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                      "NUMBA_NUM_THREADS")}


class WorkerLostWarning(RuntimeWarning):
    """A worker left the cluster during a pass; its tasks were recomputed elsewhere."""


class WorkersLostError(RuntimeError):
    """Workers died repeatedly on the same task (or the cluster went away) during a pass.

    The stage stops; finished stages are kept, and so is the stage's temporary folder when the
    runner keeps block records (the pipeline's chunked path), so a re-run resumes from that
    stage's finished blocks.
    """


def connect_scheduler(address: str, *, timeout_s: float = 10.0):
    """A ``distributed.Client`` for a running scheduler, or a one-line error if it does not answer.

    Parameters
    ----------
    address : str
        ``tcp://HOST:PORT`` (or any address ``distributed`` understands).
    timeout_s : float
        How long to wait for the scheduler.

    Raises
    ------
    InputError
        If the scheduler does not answer within `timeout_s`.
    """
    from distributed import Client

    try:
        return Client(address, timeout=f"{float(timeout_s)}s", set_as_default=False)
    except (OSError, TimeoutError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise InputError(f"no dask scheduler answered within {timeout_s:g} s ({reason})", source=address) from None


class BlockRunner:
    """Runs a function over blocks: serially, on a thread pool, or on a ``distributed`` client.

    Parameters
    ----------
    workers : int
        Threads (``scheduler="threads"``) or local worker processes (``scheduler="processes"``).
        ``1`` with no scheduler runs serially in this process.
    scheduler : {None, "threads", "processes"} or str or distributed.Client
        ``None``: serial when ``workers == 1``, else threads. ``"processes"``: a
        ``LocalCluster`` of `workers` single-threaded processes on loopback, started here and
        closed by :meth:`close`. An address (``tcp://HOST:PORT``) or a ``Client``: that cluster.

    Notes
    -----
    Use as a context manager, or call :meth:`close`; a runner that started a local cluster
    stops it there.

    Examples
    --------
    >>> with BlockRunner() as runner:
    ...     list(runner.map(pow, [1, 2, 3], exp=2))
    [1, 4, 9]
    """

    def __init__(self, workers: int = 1, scheduler: Any = None):
        workers = int(workers)
        if workers < 1:
            raise InputError(f"must be at least 1, got {workers}", source="workers")
        self.workers = workers
        self.client = None
        self._cluster = None
        self._owns_client = False
        self._records: _RecordFolder | None = None
        if scheduler is None:
            self.kind = "serial" if workers == 1 else "threads"
        elif scheduler == "threads":
            self.kind = "threads"
        elif scheduler == "processes":
            from distributed import Client, LocalCluster

            self._cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                         host="127.0.0.1", dashboard_address=":0", env=dict(_ONE_THREAD))
            self.client = Client(self._cluster, set_as_default=False)
            self._owns_client = True
            self.kind = "distributed"
        elif isinstance(scheduler, str):
            self.client = connect_scheduler(scheduler)
            self._owns_client = True
            self.kind = "distributed"
        else:  # a distributed.Client made by the caller
            self.client = scheduler
            self.kind = "distributed"

    @property
    def description(self) -> str:
        """One line for logs and manifests: where the blocks run."""
        if self.kind == "distributed":
            return f"dask.distributed ({len(self._worker_addresses())} workers at {self.client.scheduler.address})"
        return "in process" if self.kind == "serial" else f"{self.workers} threads"

    def _worker_addresses(self) -> set[str]:
        return set(self.client.scheduler_info(n_workers=-1).get("workers", {}))

    def keep_records(self, folder: str | os.PathLike | None) -> None:
        """Keep every finished block's record under `folder` and reuse the ones already there.

        Passes are numbered in the order their :meth:`map` starts (``000-name``, ``001-name``,
        ...); a record is reused only when its pass number, function name, position and item
        are the same. ``None`` stops keeping records.
        """
        self._records = None if folder is None else _RecordFolder(Path(folder))

    @property
    def resumed_blocks(self) -> int:
        """Blocks whose records were read back since :meth:`keep_records` (not recomputed)."""
        return 0 if self._records is None else self._records.resumed

    def without_records(self) -> BlockRunner:
        """This runner (same workers) without kept records, for passes that rewrite their input."""
        view = copy.copy(self)
        view._records = None
        view._owns_client = False
        view._cluster = None
        return view

    def map(self, function: Callable, items: Iterable, /, **shared) -> Iterator:
        """``function(item, **shared)`` for every item, yielded in the order of `items`.

        `function` must be a module-level function (it is pickled for a cluster); `shared`
        are keyword arguments common to every call (scattered once to every worker).
        """
        items = list(items)
        records = self._records
        if records is None:
            yield from self._map(function, items, shared)
            return
        folder = records.next_pass(function.__name__)
        if any(isinstance(v, np.ndarray) and v.ndim >= 3 and v.flags.writeable for v in shared.values()):
            yield from self._map(function, items, shared)  # a numpy output dies with the process
            return
        yield from records.map(self, function, items, shared, folder)

    def _map(self, function: Callable, items: list, shared: dict) -> Iterator:
        if self.kind == "serial" or len(items) <= 1:
            for item in items:
                yield function(item, **shared)
            return
        if self.kind == "threads":
            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                yield from pool.map(lambda item: function(item, **shared), items)
            return
        yield from self._map_distributed(function, items, shared)

    def _map_distributed(self, function, items, shared) -> Iterator:
        import warnings

        from distributed.client import FutureCancelledError
        from distributed.scheduler import KilledWorker

        client = self.client
        before = self._worker_addresses()
        scattered = {key: client.scatter(value, broadcast=True, hash=False) if _is_large(value) else value
                     for key, value in shared.items()}
        futures = client.map(function, items, pure=False, **scattered)
        try:
            for future in futures:
                try:
                    yield future.result()
                except (KilledWorker, FutureCancelledError) as error:
                    reason = " ".join(str(error).split())
                    raise WorkersLostError(
                        f"dask workers died repeatedly while running {function.__name__} ({reason}); finished "
                        "stages and this stage's finished blocks are kept, and a re-run resumes from them"
                    ) from None
                future.release()
        finally:
            for future in futures:
                future.release()
        lost = before - self._worker_addresses()
        if lost:
            message = (f"{len(lost)} dask worker(s) left the cluster during {function.__name__}; their tasks "
                       "were recomputed on the remaining workers")
            log.warning(message)
            warnings.warn(message, WorkerLostWarning, stacklevel=3)

    def close(self) -> None:
        """Stop a local cluster or client that this runner started."""
        if self.client is not None and self._owns_client:
            self.client.close()
        if self._cluster is not None:
            self._cluster.close()
        self.client = self._cluster = None

    def __enter__(self) -> BlockRunner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"BlockRunner(kind={self.kind!r}, workers={self.workers})"


class _RecordFolder:
    """The kept records of one pipeline stage's passes (see :meth:`BlockRunner.keep_records`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.passes = 0
        self.resumed = 0

    def next_pass(self, name: str) -> Path:
        folder = self.folder / f"{self.passes:03d}-{name}"
        self.passes += 1
        return folder

    def map(self, runner: BlockRunner, function: Callable, items: list, shared: dict, folder: Path) -> Iterator:
        folder.mkdir(parents=True, exist_ok=True)
        digests = [hashlib.sha1(pickle.dumps(item, protocol=5)).hexdigest() for item in items]
        done: dict[int, Any] = {}
        for position, digest in enumerate(digests):
            path = folder / f"{position:07d}.pkl"
            if path.exists():
                try:
                    saved_digest, record = _load_record(path.read_bytes())
                except Exception:  # a record cut short: compute the block again
                    continue
                if saved_digest == digest:
                    done[position] = record
        if done:
            self.resumed += len(done)
            log.info("%s: %d of %d blocks read back from an interrupted run", function.__name__, len(done),
                     len(items))
        todo = [position for position in range(len(items)) if position not in done]
        computed = runner._map(function, [items[position] for position in todo], shared)
        for position in range(len(items)):
            if position in done:
                yield done.pop(position)
                continue
            record = next(computed)
            # the block's output is in its Zarr store by now: its record says so
            tmp = folder / f".{position:07d}.pkl.tmp-{os.getpid()}"
            tmp.write_bytes(_dump_record((digests[position], record)))
            os.replace(tmp, folder / f"{position:07d}.pkl")
            yield record


def _dump_record(record) -> bytes:
    """A pickled record, zlib-compressed when large (block faces of labels compress ~10x)."""
    raw = pickle.dumps(record, protocol=5)
    return zlib.compress(raw, 1) if len(raw) > 4096 else raw


def _load_record(data: bytes):
    """The record of :func:`_dump_record` (a plain pickle starts with the PROTO opcode 0x80)."""
    return pickle.loads(data if data[:1] == b"\x80" else zlib.decompress(data))


def _is_large(value) -> bool:
    """Whether to scatter a shared argument once instead of sending it with every task."""
    if value is None or isinstance(value, (bool, int, float, str, bytes, tuple, os.PathLike)):
        return False
    size = getattr(value, "nbytes", None)
    return size is None or size > 1 << 16
