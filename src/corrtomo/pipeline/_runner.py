"""Resumable stage execution: keys, manifests, atomic stage folders, timing and memory.

A stage's *key* is the SHA-256 of its name, the corrtomo version, its parameters, the content
hashes of the input files it reads and the keys of the stages it reads from. The stage writes
everything into a hidden temporary folder, ends with ``manifest.json`` and is then renamed into
``RUN/<stage>/`` in one step: a folder with a manifest is always complete. A re-run skips every
stage whose manifest holds the same key; a stage whose parameters or inputs changed runs again,
and so does every stage that reads from it, directly or through others (their keys contain its
key); stages that do not depend on it stay as they are. An interrupted stage leaves only
its temporary folder, named after its key. The next run removes it, unless the stage ran block
by block (the chunked path): then the folder holds the Zarr stores and the records of the
blocks finished so far (``.work/blocks``, see :meth:`corrtomo.BlockRunner.keep_records`), and a
run of the same stage with the same key goes on from there instead of starting again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._shared import InputError, to_jsonable, write_json_atomic

LOGGER = logging.getLogger("corrtomo.pipeline")
MANIFEST = "manifest.json"
#: Sub-folder of a stage's temporary folder for scratch stores; removed before the stage is published.
WORK = ".work"
#: Sub-folder of WORK with the records of a chunked stage's finished blocks.
BLOCKS = "blocks"
#: The start times of a stage's attempts (in its temporary folder, beside the block records).
ATTEMPTS = "attempts.json"
_HASH_CACHE = ".input-hashes.json"


# ------------------------------------------------------------------------------------------
# hashing
# ------------------------------------------------------------------------------------------


def _hash_file(path: Path, digest: Any) -> None:
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)


def content_hash(path: Path) -> str:
    """SHA-256 of a file, or of a folder's files (relative names and contents, sorted)."""
    digest = hashlib.sha256()
    if path.is_dir():
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(item.relative_to(path)).encode())
            _hash_file(item, digest)
    else:
        _hash_file(path, digest)
    return digest.hexdigest()


def _stat_signature(path: Path) -> list:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files]


class InputHashes:
    """Content hashes of input files, cached by (size, mtime) in the run folder."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / _HASH_CACHE
        try:
            self.cache: dict[str, Any] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.cache = {}

    def __call__(self, path: Path) -> str:
        path = Path(path).resolve()
        if not path.exists():
            raise InputError("no such file or folder", source=path)
        signature = _stat_signature(path)
        entry = self.cache.get(str(path))
        if entry and entry["signature"] == signature:
            return entry["sha256"]
        value = content_hash(path)
        self.cache[str(path)] = {"signature": signature, "sha256": value}
        write_json_atomic(self.path, self.cache)
        return value


def stage_key(name: str, version: str, params: Any, inputs: Mapping[str, str]) -> str:
    text = json.dumps({"stage": name, "version": version, "params": to_jsonable(params), "inputs": dict(inputs)},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


# ------------------------------------------------------------------------------------------
# memory
# ------------------------------------------------------------------------------------------


def _children(pid: str) -> list[str]:
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found.extend(handle.read().split())
    except OSError:
        pass
    return found


def _rss_bytes() -> int:
    """Resident memory of this process and its descendants (local dask workers are counted)."""
    page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
    total = 0
    pending = ["self"]
    seen = 0
    while pending and seen < 256:
        pid = pending.pop()
        seen += 1
        try:
            with open(f"/proc/{pid}/statm") as handle:
                total += int(handle.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            if pid == "self":  # pragma: no cover - not Linux
                import resource

                return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
            continue
        pending.extend(_children(pid))
    return total


class PeakMemory:
    """Largest resident set size seen while the block runs (sampled every 20 ms)."""

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakMemory:
        self.peak = _rss_bytes()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


# ------------------------------------------------------------------------------------------
# stages
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline.

    Attributes
    ----------
    name : str
        Folder name in the run directory.
    needs : tuple of str
        Stages whose outputs this one reads (their keys enter this one's key).
    params : callable
        ``params(config) -> dict``: the options that change this stage's result.
    inputs : callable
        ``inputs(config) -> dict[str, Path]``: external files it reads (hashed by content).
    run : callable
        ``run(context, out_dir) -> dict``: does the work, writes files into `out_dir`, returns
        a small JSON-able result stored in the manifest.
    enabled : callable
        ``enabled(config) -> bool``; a disabled stage is neither run nor required.
    extra_needs : callable
        ``extra_needs(config) -> tuple of str``: stages read only with some options (the
        particles stage reads the phases stage's U-Net foreground).
    """

    name: str
    needs: tuple[str, ...]
    params: Callable[[Any], dict]
    inputs: Callable[[Any], dict[str, Path]]
    run: Callable[[Any, Path], dict]
    enabled: Callable[[Any], bool] = lambda config: True
    extra_needs: Callable[[Any], tuple[str, ...]] = lambda config: ()

    def needs_for(self, config) -> tuple[str, ...]:
        """The stages whose outputs this one reads under `config`."""
        return self.needs + tuple(self.extra_needs(config))


@dataclass
class StageRecord:
    stage: str
    skipped: bool
    seconds: float
    peak_memory_mb: float
    key: str
    result: dict = field(default_factory=dict)


def read_manifest(stage_dir: Path) -> dict | None:
    try:
        return json.loads((stage_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished `tmp` folder to `final`, replacing an older `final` (two renames)."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _has_block_records(tmp: Path) -> bool:
    blocks = tmp / WORK / BLOCKS
    return blocks.is_dir() and any(blocks.rglob("*.pkl"))


def clean_interrupted(run_dir: Path) -> list[Path]:
    """Remove the temporary folders an interrupted run left behind; return them.

    Folders holding finished blocks of a chunked stage are kept: the stage resumes from them
    when it runs again with the same key (and they are removed when its key has changed).
    """
    removed = []
    for path in run_dir.glob(".*.tmp-*"):
        if path.is_dir() and _has_block_records(path):
            continue
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        removed.append(path)
    for path in run_dir.glob(".*.old-*"):
        shutil.rmtree(path, ignore_errors=True)
    return removed


@contextlib.contextmanager
def run_log(run_dir: Path, *, quiet: bool) -> Iterator[logging.Logger]:
    """Log to ``RUN/run.log`` (always) and to stderr (unless quiet)."""
    LOGGER.setLevel(logging.INFO)
    handlers: list[logging.Handler] = [logging.FileHandler(run_dir / "run.log")]
    handlers[0].setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    if not quiet:
        stream = logging.StreamHandler()
        stream.setFormatter(logging.Formatter("corrtomo: %(message)s"))
        handlers.append(stream)
    for handler in handlers:
        LOGGER.addHandler(handler)
    LOGGER.propagate = False
    try:
        yield LOGGER
    finally:
        for handler in handlers:
            LOGGER.removeHandler(handler)
            handler.close()


def _stage_folder(run_dir: Path, name: str, key: str, forced: bool) -> Path:
    """The stage's temporary folder: the one an interrupted run of the same key left, or a new one.

    Folders of this stage with another key (or every one, when the stage is forced to run
    again) are removed.
    """
    tmp = run_dir / f".{name}.tmp-{key[:16]}"
    for other in run_dir.glob(f".{name}.tmp-*"):
        if other != tmp or forced:
            shutil.rmtree(other, ignore_errors=True) if other.is_dir() else other.unlink(missing_ok=True)
    if tmp.is_dir():
        LOGGER.info("%s: resuming the interrupted run's finished blocks (%s)", name, tmp.name)
    else:
        tmp.mkdir()
    return tmp


def _note_attempt(tmp: Path, started: float) -> list[float]:
    """Add this attempt's start to the stage folder's list; the earlier attempts' starts."""
    path = tmp / WORK / ATTEMPTS
    try:
        earlier = [float(t) for t in json.loads(path.read_text())]
    except (OSError, ValueError, TypeError):
        earlier = []
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, [*earlier, started])
    return earlier


def _earlier_attempt_seconds(tmp: Path, starts: list[float], current: float) -> float:
    """Seconds the earlier attempts of a resumed stage worked: from each start to the last block
    record it wrote (work after that was lost and done again, so it is not counted)."""
    if not starts:
        return 0.0
    written = [p.stat().st_mtime for p in (tmp / WORK / BLOCKS).rglob("*.pkl")]
    total = 0.0
    for start, end in zip(starts, [*starts[1:], current], strict=True):
        total += max((t - start for t in written if start <= t < end), default=0.0)
    return total


def execute(
    stages: Sequence[Stage],
    context: Any,
    run_dir: Path,
    *,
    version: str,
    from_stage: str | None = None,
    only_until: str | None = None,
) -> list[StageRecord]:
    """Run `stages` in order, skipping those whose key is unchanged (see module notes)."""
    names = [s.name for s in stages]
    if from_stage is not None and from_stage not in names:
        raise InputError(f"unknown stage {from_stage!r}; stages are {', '.join(names)}", source="--from")
    if only_until is not None and only_until not in names:
        raise InputError(f"unknown stage {only_until!r}; stages are {', '.join(names)}", source="--until")
    config = context.config
    hashes = InputHashes(run_dir)
    keys: dict[str, str] = {}
    records: list[StageRecord] = []
    forced = False
    progress = getattr(context, "progress", None)
    enabled = [s for s in stages if s.enabled(config)]
    for stage in stages:
        if progress is not None and stage in enabled:  # one overall bar; long stages add their own
            progress("pipeline", enabled.index(stage), len(enabled))
        # a disabled stage (evaluate without truth) still marks where --from starts and --until ends
        forced = forced or stage.name == from_stage
        if not stage.enabled(config):
            if stage.name == only_until:
                break
            continue
        inputs = {f"file:{label}": hashes(path) for label, path in stage.inputs(config).items()}
        for need in stage.needs_for(config):
            if need in keys:
                inputs[f"stage:{need}"] = keys[need]
        params = stage.params(config)
        key = stage_key(stage.name, version, params, inputs)
        keys[stage.name] = key
        final = run_dir / stage.name
        manifest = read_manifest(final)
        if not forced and manifest is not None and manifest.get("key") == key:
            LOGGER.info("%s: up to date, skipped", stage.name)
            records.append(StageRecord(stage.name, True, 0.0, 0.0, key, manifest.get("result", {})))
            context.records.append(records[-1])
            context.results[stage.name] = manifest.get("result", {})
        else:
            tmp = _stage_folder(run_dir, stage.name, key, forced)
            LOGGER.info("%s: running", stage.name)
            started = time.time()
            earlier = _note_attempt(tmp, started)
            begin = getattr(context, "begin_stage", None)
            if begin is not None:
                begin(tmp / WORK / BLOCKS)
            try:
                with PeakMemory() as memory:
                    result = stage.run(context, tmp) or {}
                resumed = int(getattr(context, "resumed_blocks", 0))
                earlier_seconds = _earlier_attempt_seconds(tmp, earlier, started)
                shutil.rmtree(tmp / WORK, ignore_errors=True)  # the stage's scratch stores, published by now
                seconds = time.time() - started
                outputs = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
                write_json_atomic(tmp / MANIFEST, {
                    "stage": stage.name, "key": key, "version": version, "params": params, "inputs": inputs,
                    "outputs": outputs, "result": result, "seconds": round(seconds, 3),
                    "peak_memory_mb": round(memory.peak / 2**20, 1), "started": time.strftime(
                        "%Y-%m-%dT%H:%M:%S", time.localtime(started)),
                    "resumed_blocks": resumed, "attempts": len(earlier) + 1,
                    "seconds_earlier_attempts": round(earlier_seconds, 3),
                    "python": platform.python_version(), "platform": platform.platform(),
                })
                _replace_dir(tmp, final)
            finally:
                if begin is not None:
                    begin(None)
                if tmp.exists() and not _has_block_records(tmp):
                    shutil.rmtree(tmp, ignore_errors=True)
                elif tmp.exists():
                    LOGGER.info("%s: stopped; its finished blocks are kept in %s for a re-run", stage.name, tmp.name)
            if resumed:
                LOGGER.info("%s: %d blocks read back from the interrupted run, the others computed", stage.name,
                            resumed)
            if earlier:
                LOGGER.info("%s: %d earlier attempt(s) worked %.1f s until their last finished block", stage.name,
                            len(earlier), earlier_seconds)
            LOGGER.info("%s: done in %.1f s, peak memory %.0f MB", stage.name, seconds, memory.peak / 2**20)
            records.append(StageRecord(stage.name, False, seconds, memory.peak / 2**20, key, to_jsonable(result)))
            context.records.append(records[-1])
            context.results[stage.name] = to_jsonable(result)
        if stage.name == only_until:
            break
    if progress is not None and records:
        progress("pipeline", enabled.index(next(s for s in enabled if s.name == records[-1].stage)) + 1, len(enabled))
    return records
