"""Global search for a 2D section inside a 3D volume (no starting pose needed).

The search runs on coarse particle-probability maps (see :mod:`._similarity`):

1. Plane normals are drawn from a Fibonacci lattice on the hemisphere (or on a cone around a hint
   axis). The section may be seen from either side of the plane, which is covered by testing the
   section and its mirror image (rows flipped) against every normal of the hemisphere, so the
   whole rotation group SO(3) is searched.
2. For each normal the coarse volume is resampled (trilinear) into a stack of planes perpendicular
   to it. For every plane of the stack, the in-plane rotation is estimated in a
   translation-invariant way by the Fourier-Mellin principle: the magnitude of the 2D Fourier
   transform ignores translation and rotates with the image, so a circular cross-correlation of
   the polar-resampled magnitude spectra of section and plane gives the rotation angle (modulo
   180 degrees; both are tested). The best angles are then scored by FFT cross-correlation
   (Kuglin & Hines 1975) of the rotated section with the plane, whose peak gives the in-plane
   translation and a normalised cross-correlation score.
3. The best-scoring distinct candidates are handed to the local refinement.

References
----------
Kuglin, C. D., Hines, D. C. (1975). The phase correlation image alignment method. Proc. IEEE Int.
Conf. Cybernetics and Society, 163-165.
Reddy, B. S., Chatterji, B. N. (1996). An FFT-based technique for translation, rotation, and
scale-invariant image registration. IEEE Trans. Image Processing 5, 1266-1271.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from ._similarity import sample_grid

_WORKERS = 1


@dataclass(frozen=True)
class Candidate:
    """A candidate pose of the global search.

    Attributes
    ----------
    normal : (3,) ndarray
        Unit plane normal ``e1 x e2`` (z, y, x).
    angle : float
        In-plane rotation (radians) of the section's column axis from ``e1`` towards ``e2``.
    mirror : bool
        Section rows flipped (section seen from the other side of the plane).
    center : (3,) ndarray
        Volume position of the section centre, full-resolution voxels.
    score : float
        Coarse normalised cross-correlation.
    """

    normal: np.ndarray
    angle: float
    mirror: bool
    center: np.ndarray
    score: float


def plane_basis(normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors ``e1``, ``e2`` spanning the plane of `normal` with ``e1 x e2 = normal``."""
    normal = np.asarray(normal, dtype=np.float64)
    normal = normal / np.linalg.norm(normal)
    reference = np.array([0.0, 0.0, 1.0]) if abs(normal[2]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = reference - (reference @ normal) * normal
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(normal, e1)
    return e1, e2


def pose_vectors(normal, angle, mirror, ratio):
    """Section steps ``u`` (column + 1) and ``v`` (row + 1) for a candidate orientation."""
    e1, e2 = plane_basis(normal)
    u = np.cos(angle) * e1 + np.sin(angle) * e2
    v = -np.sin(angle) * e1 + np.cos(angle) * e2
    if mirror:
        v = -v
    return ratio * u, ratio * v


def fibonacci_normals(spacing_rad: float, *, axis=None, cone_rad: float = np.pi / 2) -> np.ndarray:
    """Unit normals spread evenly (Fibonacci lattice) on a spherical cap.

    Parameters
    ----------
    spacing_rad : float
        Typical angle between neighbouring normals.
    axis : (3,) array_like, optional
        Cap axis (default z, so the cap is the upper hemisphere for ``cone_rad = pi/2``).
    cone_rad : float
        Cap half-angle.

    Returns
    -------
    (K, 3) ndarray
    """
    axis = np.array([1.0, 0.0, 0.0]) if axis is None else np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    area = 2 * np.pi * (1 - np.cos(cone_rad))
    count = max(int(np.ceil(area / (0.866 * spacing_rad**2))), 1)
    golden = np.pi * (3 - np.sqrt(5))
    k = np.arange(count) + 0.5
    cos_theta = 1 - (1 - np.cos(cone_rad)) * k / count
    sin_theta = np.sqrt(np.clip(1 - cos_theta**2, 0, None))
    phi = golden * k
    e1, e2 = plane_basis(axis)
    normals = cos_theta[:, None] * axis + sin_theta[:, None] * (np.cos(phi)[:, None] * e1 + np.sin(phi)[:, None] * e2)
    if count == 1:
        normals = axis[None, :]
    return normals


def block_mean(volume: np.ndarray, factor: int) -> np.ndarray:
    """Downsample by averaging `factor`^3 blocks (edges padded by reflection)."""
    if factor <= 1:
        return np.asarray(volume, dtype=np.float32)
    pad = [(0, (-s) % factor) for s in volume.shape]
    padded = np.pad(np.asarray(volume, dtype=np.float32), pad, mode="edge")
    shape = []
    for s in padded.shape:
        shape += [s // factor, factor]
    return padded.reshape(shape).mean(axis=(1, 3, 5))


class CoarseSearch:
    """FFT-based exhaustive search over orientations on coarse probability maps.

    Parameters
    ----------
    volume_map : (P, M, N) float32
        Particle probability of the volume (full resolution).
    section_map : (rows, columns) float32
        Particle probability of the section.
    section_valid : (rows, columns) bool
        Section pixels with data.
    ratio : float
        Section pixel size over voxel size.
    factor : int
        Coarse voxel size in voxels.
    """

    def __init__(self, volume_map, section_map, section_valid, *, ratio: float, factor: int, angle_step_deg: float = 2.0):
        self.factor = int(factor)
        self.ratio = float(ratio)
        coarse = block_mean(volume_map, self.factor)
        self.volume_mean = float(coarse.mean())
        self.coarse = coarse - np.float32(self.volume_mean)
        self.full_shape = np.asarray(volume_map.shape, dtype=np.float64)
        self.full_center = (self.full_shape - 1) / 2
        diag = float(np.linalg.norm(self.full_shape)) / self.factor
        self.size = int(np.ceil(diag / 2)) * 2 + 2  # stack is size^3 coarse voxels
        self.fft_size = sfft.next_fast_len(self.size, real=True)

        # section, smoothed to the coarse scale, with its valid mask
        rows, columns = section_map.shape
        self.section_shape = (rows, columns)
        sigma = 0.5 * self.factor / self.ratio
        weight = ndimage.gaussian_filter(section_valid.astype(np.float32), sigma)
        smooth = ndimage.gaussian_filter(np.where(section_valid, section_map, 0).astype(np.float32), sigma)
        self.section_smooth = np.where(weight > 0.5, smooth / np.maximum(weight, 1e-6), np.nan).astype(np.float32)
        self.section_mean = float(np.nanmean(self.section_smooth))
        half_diag = 0.5 * self.ratio * np.hypot(rows - 1, columns - 1) / self.factor
        self.template_half = int(np.ceil(half_diag)) + 1
        self.angles = np.deg2rad(np.arange(0.0, 360.0, angle_step_deg))
        self._templates: dict = {}
        self._polar_radii, self._polar_angles = self._polar_grid()
        self._template_polar_fft = [
            np.fft.rfft(self._polar_spectrum(self.template(0, m)[0][None])[0], axis=1) for m in (False, True)
        ]

    # -- templates --------------------------------------------------------------------------------
    def template(self, angle_index: int, mirror: bool):
        """Rotated coarse template and its FFT: rows along ``e2``, columns along ``e1``."""
        key = (int(angle_index) % self.angles.size, bool(mirror))
        if key in self._templates:
            return self._templates[key]
        angle = self.angles[key[0]]
        half = self.template_half
        offsets = np.arange(-half, half + 1, dtype=np.float64) * self.factor  # voxels
        dj, dk = np.meshgrid(offsets, offsets, indexing="ij")  # along e2, along e1
        # plane vector w = dk e1 + dj e2; column c = w.u'/ratio, row r = w.v'/ratio
        column = (dk * np.cos(angle) + dj * np.sin(angle)) / self.ratio
        row = (-dk * np.sin(angle) + dj * np.cos(angle)) / self.ratio
        if mirror:
            row = -row
        rows, columns = self.section_shape
        coordinates = np.stack([row + (rows - 1) / 2, column + (columns - 1) / 2])
        values = ndimage.map_coordinates(self.section_smooth, coordinates, order=1, mode="constant", cval=np.nan)
        valid = np.isfinite(values)
        values = np.where(valid, values - self.section_mean, 0.0).astype(np.float32)
        norm = float(np.sqrt((values**2).sum())) + 1e-12
        padded = np.zeros((self.fft_size, self.fft_size), dtype=np.float32)
        size = values.shape[0]
        padded[:size, :size] = values
        spectrum = np.conj(sfft.rfft2(padded))
        result = (values, spectrum, norm, int(valid.sum()))
        self._templates[key] = result
        return result

    # -- stacks -----------------------------------------------------------------------------------
    def stack(self, normal: np.ndarray) -> np.ndarray:
        """Coarse volume resampled on planes perpendicular to `normal`: (depth, e2, e1); 0 outside."""
        e1, e2 = plane_basis(normal)
        half = (self.size - 1) / 2
        origin_full = self.full_center - half * self.factor * (np.asarray(normal) + e2 + e1)
        origin = (origin_full - (self.factor - 1) / 2) / self.factor
        return sample_grid(self.coarse, origin, (normal, e2, e1), (self.size,) * 3, cval=0.0)

    def stack_position(self, normal, depth_index, row, column) -> np.ndarray:
        """Full-resolution volume position of stack voxel (depth, row, column)."""
        e1, e2 = plane_basis(normal)
        half = (self.size - 1) / 2
        return self.full_center + self.factor * (
            (depth_index - half) * np.asarray(normal) + (row - half) * e2 + (column - half) * e1
        )

    # -- Fourier-Mellin ---------------------------------------------------------------------------
    def _polar_grid(self):
        q = self.fft_size
        radii = np.linspace(1.5, q / 4.0, 24)
        angles = np.linspace(0, np.pi, 90, endpoint=False)
        ky = radii[:, None] * np.sin(angles)[None, :]
        kx = radii[:, None] * np.cos(angles)[None, :]
        flip = kx < 0  # rfft keeps kx >= 0: |F(k)| = |F(-k)| for real images
        ky = np.where(flip, -ky, ky).ravel()
        kx = np.where(flip, -kx, kx).ravel()
        y0 = np.floor(ky).astype(np.int64)
        x0 = np.floor(kx).astype(np.int64)
        fy = (ky - y0).astype(np.float32)
        fx = (kx - x0).astype(np.float32)
        width = q // 2 + 1
        index = []
        weight = []
        for dy, dx, w in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
            index.append(np.mod(y0 + dy, q) * width + np.minimum(x0 + dx, width - 1))
            weight.append(w)
        self._polar_index = np.stack(index)
        self._polar_weight = np.stack(weight)
        return radii, angles

    def _polar_spectrum(self, images: np.ndarray) -> np.ndarray:
        """Whitened polar log-magnitude spectra (n, radii, angles) of (n, h, w) images."""
        q = self.fft_size
        n, h, w = images.shape
        window = np.outer(np.hanning(h + 2)[1:-1], np.hanning(w + 2)[1:-1]).astype(np.float32)
        magnitude = np.abs(sfft.rfft2(images * window, s=(q, q), axes=(1, 2), workers=_WORKERS))
        magnitude = magnitude.reshape(n, -1)
        polar = np.zeros((n, self._polar_index.shape[1]), dtype=np.float32)
        for index, weight in zip(self._polar_index, self._polar_weight, strict=True):
            polar += magnitude[:, index] * weight
        out = np.log1p(polar).reshape(n, self._polar_radii.size, self._polar_angles.size)
        out -= out.mean(axis=2, keepdims=True)
        out /= np.sqrt((out**2).sum(axis=(1, 2), keepdims=True)) + 1e-12
        return out

    def fourier_mellin(self, stack: np.ndarray, min_pixels: int):
        """In-plane angle scores of every stack plane against the section.

        Returns
        -------
        scores : (2, depth, angles) ndarray
            Circular cross-correlation of whitened polar spectra, for the section (0) and its mirror
            (1); angle index ``a`` means a rotation of ``a`` polar steps (180-degree periodic).
        planes : (depth,) int ndarray
            Plane indices kept (enough data).
        """
        filled = np.count_nonzero(stack.reshape(stack.shape[0], -1), axis=1)
        planes = np.flatnonzero(filled >= min_pixels)
        scores = np.full((2, planes.size, self._polar_angles.size), -1.0, dtype=np.float32)
        if planes.size == 0:
            return scores, planes
        polar = self._polar_spectrum(stack[planes])
        spectrum = np.fft.rfft(polar, axis=2)
        for m in (0, 1):
            template = np.conj(self._template_polar_fft[m])[None]
            scores[m] = np.fft.irfft((spectrum * template).sum(axis=1), n=self._polar_angles.size, axis=1)
        return scores, planes
