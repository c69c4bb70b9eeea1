"""Twin samples shared by several test modules (cached per test process)."""

from __future__ import annotations

import functools
from dataclasses import replace

SHAPE = (96, 112, 112)


@functools.cache
def twin(preset: str, seed: int, shape: tuple[int, int, int] = SHAPE, ct_method: str = "image"):
    """A synthetic sample; the image-domain CT model is enough where only sections are used."""
    from corrtomo.synth import get_preset, make_sample

    settings = get_preset(preset)
    settings = replace(settings, ct=replace(settings.ct, method=ct_method))
    return make_sample(settings, shape=shape, seed=seed)
