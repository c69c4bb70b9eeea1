"""A compact 3D U-Net with a phase head and a particle head (PyTorch).

Why our own and not MONAI's: the network is ~100 lines, MONAI would add a large dependency tree
for one class, and owning it keeps the saved architecture (a small JSON dict) stable across
releases and every operation deterministic on the CPU.

Architecture (Ronneberger et al. 2015; Cicek et al. 2016 in 3D): ``levels`` resolutions, two
3x3x3 convolutions per level, each followed by instance normalisation and LeakyReLU; strided
2x2x2 convolutions down, transposed 2x2x2 convolutions up, skip connections by concatenation.
Two 1x1x1 heads share the decoder's last features, concatenated with the input grey value
(instance normalisation makes each patch zero-mean, so without that skip the network loses the
absolute attenuation that separates minerals of similar texture):

- *phase head*: logits of the phase classes (matrix + the minerals of the training labels);
- *particle head*: logits of matrix / particle core / particle boundary, the border-core
  representation of ParticleSeg3D, whose foreground feeds the marker-based watershed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

__all__ = ["PARTICLE_CLASSES", "UNet3D", "UNetArchitecture", "UNetModel"]

#: Classes of the particle head.
PARTICLE_CLASSES: tuple[str, ...] = ("matrix", "core", "boundary")


@dataclass(frozen=True)
class UNetArchitecture:
    """What is needed to rebuild a :class:`UNet3D` (saved beside its weights).

    Attributes
    ----------
    n_phase_classes : int
        Outputs of the phase head (matrix + minerals).
    base_channels : int
        Channels of the first level; doubled at every level down.
    levels : int
        Resolutions (the input edge must be divisible by ``2 ** (levels - 1)``).
    in_channels : int
        Input channels (1: the normalised CT grey value).
    n_particle_classes : int
        Outputs of the particle head (3: matrix, core, boundary).
    """

    n_phase_classes: int
    base_channels: int = 16
    levels: int = 4
    in_channels: int = 1
    n_particle_classes: int = len(PARTICLE_CLASSES)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def divisor(self) -> int:
        """Patch edges must be multiples of this."""
        return 2 ** (self.levels - 1)


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.InstanceNorm3d(out_channels, affine=True),
        nn.LeakyReLU(0.01, inplace=True),
        nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.InstanceNorm3d(out_channels, affine=True),
        nn.LeakyReLU(0.01, inplace=True),
    )


class UNet3D(nn.Module):
    """3D U-Net with two heads; ``forward(x) -> (phase_logits, particle_logits)``.

    Parameters
    ----------
    architecture : UNetArchitecture

    Notes
    -----
    Input (N, in_channels, Z, Y, X) with every spatial edge a multiple of
    ``architecture.divisor``; both outputs have the input's spatial shape.
    """

    def __init__(self, architecture: UNetArchitecture):
        super().__init__()
        if architecture.levels < 1 or architecture.base_channels < 1 or architecture.n_phase_classes < 2:
            raise ValueError(f"invalid architecture {architecture}")
        self.architecture = architecture
        widths = [architecture.base_channels * 2**k for k in range(architecture.levels)]
        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        previous = architecture.in_channels
        for k, width in enumerate(widths):
            self.encoders.append(_double_conv(previous, width))
            if k < len(widths) - 1:
                self.downs.append(nn.Conv3d(width, width, 2, stride=2))
            previous = width
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for k in range(len(widths) - 1, 0, -1):
            self.ups.append(nn.ConvTranspose3d(widths[k], widths[k - 1], 2, stride=2))
            self.decoders.append(_double_conv(2 * widths[k - 1], widths[k - 1]))
        # the heads also see the input itself: instance normalisation removes each patch's absolute
        # grey level, which is what tells CT minerals apart
        self.phase_head = nn.Conv3d(widths[0] + architecture.in_channels, architecture.n_phase_classes, 1)
        self.particle_head = nn.Conv3d(widths[0] + architecture.in_channels, architecture.n_particle_classes, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grey = x
        skips = []
        for k, encoder in enumerate(self.encoders):
            x = encoder(x)
            if k < len(self.downs):
                skips.append(x)
                x = self.downs[k](x)
        for up, decoder in zip(self.ups, self.decoders, strict=True):
            x = up(x)
            x = decoder(torch.cat([skips.pop(), x], dim=1))
        x = torch.cat([x, grey], dim=1)
        return self.phase_head(x), self.particle_head(x)


@dataclass
class UNetModel:
    """A trained network with what is needed to apply it safely.

    Attributes
    ----------
    network : UNet3D
        The weights (on the CPU after training and loading).
    class_ids : tuple of int
        Phase id of each phase-head output; 0 is the matrix.
    class_names : tuple of str
        Name of each phase-head output (``"matrix"`` first).
    voxel_size_um : tuple of 3 floats
        Voxel size (z, y, x) of the training volume in micrometres.
    normalisation : dict
        ``{"center": c, "scale": s}``: the network sees ``(grey - c) / s``.
    patch_shape : tuple of 3 ints
        Training patch edge in voxels (also the default inference window).
    training : dict
        Settings, seed, number of steps and the validation history of the training run.
    """

    network: UNet3D
    class_ids: tuple[int, ...]
    class_names: tuple[str, ...]
    voxel_size_um: tuple[float, float, float]
    normalisation: dict
    patch_shape: tuple[int, int, int]
    training: dict

    @property
    def architecture(self) -> UNetArchitecture:
        return self.network.architecture

    @property
    def matrix_threshold(self) -> float:
        """The particle head's calibrated matrix threshold (0.5 for a model saved without one):
        particle voxels are where the smoothed matrix probability is below it."""
        found = (self.training or {}).get("matrix_threshold") or {}
        return float(found.get("value", 0.5))
