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


@functools.cache
def touching_talc_foreground():
    """Truth foreground of a 96^3 talc-saxolite twin with 40 % touching particles, in a pillar,
    and its voxel size."""
    import numpy as np

    from corrtomo.synth import PRESETS, PhantomRenderer, generate_particles

    preset = PRESETS["talc-saxolite"]
    preset = replace(preset, particles=replace(preset.particles, touching_share=0.4))
    shape = (96, 96, 96)
    radius = 0.47 * 96
    system = generate_particles(preset.particles, shape=shape, voxel_size_um=preset.voxel_size_um,
                                pillar_radius_voxels=radius, rng=np.random.default_rng(0))
    renderer = PhantomRenderer(system, shape, max_phase_id=4, supersample=1, pillar_radius_voxels=radius)
    return renderer.render_all(slab_size=32)[0] > 0, float(preset.voxel_size_um)
