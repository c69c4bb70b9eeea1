"""The transform types of corrtomo: a plane pose (2D section in a 3D volume) and a 3D rigid/similarity
transform (4x4 matrix, for stitching and volume-in-volume registration).

All coordinates are voxel indices in (z, y, x) order.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import write_json_atomic
from ._errors import InputError


@dataclass(frozen=True)
class PlanePose:
    """Where a 2D section lies in a volume (the ``pose.json`` contract).

    Section pixel (row r, column c) lies at volume position ``origin + c * u + r * v``, in voxel
    coordinates (z, y, x). The length of `u` (and `v`) is the section pixel size over the voxel size.

    Attributes
    ----------
    origin : (3,) ndarray
        Volume position of section pixel row 0, column 0.
    u : (3,) ndarray
        Volume step for one pixel to the right (column + 1).
    v : (3,) ndarray
        Volume step for one pixel down (row + 1).
    score : float or None
        Similarity score of a registration (``None`` for a truth pose).
    method : str
        How the pose was obtained (``"truth"``, ``"nmi-search"``, ...).
    extra : dict
        More fields kept in the JSON file (for example the section shape).
    """

    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    score: float | None = None
    method: str = "unknown"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("origin", "u", "v"):
            value = np.asarray(getattr(self, name), dtype=np.float64).reshape(-1)
            if value.shape != (3,) or not np.all(np.isfinite(value)):
                raise InputError(f"pose field {name!r} must be 3 finite numbers (z, y, x)")
            object.__setattr__(self, name, value)
        if np.linalg.norm(np.cross(self.u, self.v)) <= 1e-12:
            raise InputError("pose vectors 'u' and 'v' are parallel or zero")

    @property
    def normal(self) -> np.ndarray:
        """Unit normal of the plane, ``u x v / |u x v|`` (z, y, x)."""
        n = np.cross(self.u, self.v)
        return n / np.linalg.norm(n)

    @property
    def pixel_size_ratio(self) -> float:
        """Section pixel size over voxel size (mean length of `u` and `v`)."""
        return float(0.5 * (np.linalg.norm(self.u) + np.linalg.norm(self.v)))

    def points(self, shape: tuple[int, int]) -> np.ndarray:
        """Volume coordinates of every pixel of a section of `shape` (rows, columns).

        Returns
        -------
        (rows, columns, 3) ndarray of float64, (z, y, x) voxel coordinates.
        """
        rows, columns = int(shape[0]), int(shape[1])
        r = np.arange(rows, dtype=np.float64)[:, None, None]
        c = np.arange(columns, dtype=np.float64)[None, :, None]
        return self.origin[None, None, :] + c * self.u[None, None, :] + r * self.v[None, None, :]

    def corners(self, shape: tuple[int, int]) -> np.ndarray:
        """Volume positions of the four corners and the centre of a section, (5, 3)."""
        rows, columns = shape[0] - 1, shape[1] - 1
        rc = np.array([[0, 0], [0, columns], [rows, 0], [rows, columns], [rows / 2, columns / 2]])
        return self.origin + rc[:, 1:2] * self.u + rc[:, 0:1] * self.v

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "origin": self.origin.tolist(),
            "u": self.u.tolist(),
            "v": self.v.tolist(),
            "score": None if self.score is None else float(self.score),
            "method": self.method,
            "axes": "zyx",
            "units": "voxel",
        }
        data.update(self.extra)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str | os.PathLike | None = None) -> PlanePose:
        missing = [key for key in ("origin", "u", "v") if key not in data]
        if missing:
            raise InputError(f"pose is missing {', '.join(missing)}", source=source)
        extra = {k: v for k, v in data.items() if k not in {"origin", "u", "v", "score", "method", "axes", "units"}}
        try:
            return cls(
                origin=data["origin"],
                u=data["u"],
                v=data["v"],
                score=data.get("score"),
                method=str(data.get("method", "unknown")),
                extra=extra,
            )
        except InputError as error:
            raise InputError(error.reason, source=source) from None
        except (TypeError, ValueError) as error:
            raise InputError(f"invalid pose: {error}", source=source) from None

    def save(self, path: str | os.PathLike) -> Path:
        """Write the pose as JSON (atomically)."""
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> PlanePose:
        """Read a ``pose.json`` file."""
        path = Path(path)
        if not path.is_file():
            raise InputError("pose file not found", source=path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise InputError(f"not valid JSON ({error.msg} at line {error.lineno})", source=path) from None
        if not isinstance(data, dict):
            raise InputError("pose JSON must be an object", source=path)
        return cls.from_dict(data, source=path)

    @classmethod
    def from_angles(
        cls,
        *,
        center: np.ndarray,
        shape: tuple[int, int],
        pixel_ratio: float,
        tilt_deg: float,
        tilt_azimuth_deg: float = 0.0,
        inplane_deg: float = 0.0,
        method: str = "truth",
    ) -> PlanePose:
        """Build a pose from angles.

        The plane normal is tilted by `tilt_deg` from the z axis towards the azimuth
        `tilt_azimuth_deg` (measured in the y-x plane from +x towards +y); the in-plane axes are then
        rotated by `inplane_deg` about the normal. The section centre lies at `center` (z, y, x).
        """
        tilt, azimuth, spin = np.deg2rad([tilt_deg, tilt_azimuth_deg, inplane_deg])
        normal = np.array([np.cos(tilt), np.sin(tilt) * np.sin(azimuth), np.sin(tilt) * np.cos(azimuth)])
        # A reference in-plane axis: +x projected onto the plane (or +y if the plane is vertical-ish).
        reference = np.array([0.0, 0.0, 1.0])
        if abs(normal @ reference) > 0.9:
            reference = np.array([0.0, 1.0, 0.0])
        e1 = reference - (reference @ normal) * normal
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(normal, e1)
        u = np.cos(spin) * e1 + np.sin(spin) * e2
        v = np.cross(normal, u)
        u, v = u * pixel_ratio, v * pixel_ratio
        rows, columns = shape
        origin = np.asarray(center, dtype=np.float64) - (columns - 1) / 2 * u - (rows - 1) / 2 * v
        return cls(origin=origin, u=u, v=v, method=method)


def sample_plane(
    volume: np.ndarray,
    pose: PlanePose,
    shape: tuple[int, int],
    *,
    order: int = 1,
    cval: float = np.nan,
) -> np.ndarray:
    """Resample `volume` on the plane of `pose`.

    Parameters
    ----------
    volume : (P, M, N) array_like
        The volume, (z, y, x).
    pose : PlanePose
        Plane pose in voxel coordinates.
    shape : (rows, columns)
        Shape of the section.
    order : int
        0 for nearest neighbour (labels), 1 for trilinear interpolation.
    cval : float
        Value for pixels outside the volume (NaN by default; use 0 for labels).

    Returns
    -------
    (rows, columns) ndarray
        float64 for ``order > 0``; the volume's dtype for ``order == 0`` with a finite `cval`.
    """
    from scipy import ndimage

    points = pose.points(shape).reshape(-1, 3).T
    volume = np.asarray(volume)
    if order == 0:
        index = np.rint(points).astype(np.int64)
        inside = np.all((index >= 0) & (index < np.asarray(volume.shape)[:, None]), axis=0)
        if np.isnan(cval):
            out = np.full(index.shape[1], np.nan)
        else:
            out = np.full(index.shape[1], cval, dtype=volume.dtype)
        out[inside] = volume[index[0, inside], index[1, inside], index[2, inside]]
        return out.reshape(shape)
    inside = np.all((points >= -0.5) & (points <= np.asarray(volume.shape)[:, None] - 0.5), axis=0)
    values = ndimage.map_coordinates(volume.astype(np.float32, copy=False), points, order=order, mode="nearest")
    values = values.astype(np.float64)
    values[~inside] = cval
    return values.reshape(shape)


@dataclass(frozen=True)
class RigidTransform:
    """A 3D similarity transform as a 4x4 homogeneous matrix acting on (z, y, x, 1) voxel coordinates.

    ``x_fixed = matrix @ [x_moving, 1]``: maps moving-volume voxel positions into the fixed volume.
    """

    matrix: np.ndarray

    def __post_init__(self) -> None:
        matrix = np.asarray(self.matrix, dtype=np.float64)
        if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
            raise InputError("transform must be a finite 4x4 matrix")
        object.__setattr__(self, "matrix", matrix)

    @classmethod
    def from_translation(cls, offset: np.ndarray) -> RigidTransform:
        matrix = np.eye(4)
        matrix[:3, 3] = np.asarray(offset, dtype=np.float64)
        return cls(matrix)

    @classmethod
    def from_parts(cls, rotation: np.ndarray, translation: np.ndarray, scale: float = 1.0) -> RigidTransform:
        matrix = np.eye(4)
        matrix[:3, :3] = float(scale) * np.asarray(rotation, dtype=np.float64)
        matrix[:3, 3] = np.asarray(translation, dtype=np.float64)
        return cls(matrix)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Map (..., 3) moving coordinates to fixed coordinates."""
        points = np.asarray(points, dtype=np.float64)
        return points @ self.matrix[:3, :3].T + self.matrix[:3, 3]

    def inverse(self) -> RigidTransform:
        return RigidTransform(np.linalg.inv(self.matrix))

    @property
    def scale(self) -> float:
        """Isotropic scale ``det(A)^(1/3)`` of the linear part ``A``."""
        return float(np.cbrt(np.linalg.det(self.matrix[:3, :3])))

    def corners(self, shape: tuple[int, int, int]) -> np.ndarray:
        """Fixed-volume positions (8, 3) of the centres of the 8 corner voxels of a moving volume of `shape`."""
        extent = np.asarray(shape, dtype=np.float64) - 1.0
        bits = (np.arange(8)[:, None] >> np.arange(3)[::-1][None, :]) & 1
        return self.apply(bits * extent)

    def to_dict(self) -> dict[str, Any]:
        return {"matrix": self.matrix.tolist(), "axes": "zyx", "units": "voxel"}
