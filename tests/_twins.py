"""Twin samples shared by several test modules (cached per test process)."""

from __future__ import annotations

import functools
from dataclasses import replace

SHAPES = {
    # 12.3 x 14.3 x 14.3 um at the talc-saxolite preset's 0.1 um voxels: the field of view (and so
    # the number of particles and the sections' content) of the former 96 x 112 x 112 voxels at 0.128 um
    "talc-saxolite": (123, 143, 143),
    "li-slag": (96, 112, 112),  # 1 um voxels
}


@functools.cache
def twin(preset: str, seed: int, shape: tuple[int, int, int] | None = None, ct_method: str = "image"):
    """A synthetic sample; the image-domain CT model is enough where only sections are used."""
    from corrtomo.synth import get_preset, make_sample

    settings = get_preset(preset)
    settings = replace(settings, ct=replace(settings.ct, method=ct_method))
    return make_sample(settings, shape=SHAPES[preset] if shape is None else shape, seed=seed)


def crossing_particles(labels, chunks) -> int:
    """How many particles span more than one block of `chunks`."""
    import numpy as np

    grid = np.indices(labels.shape)
    block = sum((g // c) * 10**(3 * i) for i, (g, c) in enumerate(zip(grid, chunks, strict=True)))
    pairs = np.unique(np.stack([labels.ravel(), block.ravel()]), axis=1)
    counts = np.bincount(pairs[0][pairs[0] > 0])
    return int(np.count_nonzero(counts > 1))
