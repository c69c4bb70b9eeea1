"""Phases (minerals) and the phase library: validation, presets, YAML/JSON input and output."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from corrtomo._shared import InputError, atomic_path, write_json_atomic

from ._attenuation import _AttenuatingMixin, _check_density, _effective_from_mu
from ._formula import atomic_number, parse_formula, weight_fractions

PRESET_NAMES: tuple[str, ...] = ("talc-saxolite", "li-slag")
"""Names of the phase libraries shipped in ``corrtomo/phases/presets/<name>.yaml``."""

# Colour-blind-friendly default colours: Okabe & Ito (2008, "Color Universal Design"), without
# black, then Paul Tol's "muted" scheme (Tol 2021, https://personal.sron.nl/~pault/).
DEFAULT_PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178),
    (213, 94, 0), (204, 121, 167), (204, 102, 119), (51, 34, 136), (221, 204, 119),
    (17, 119, 51), (136, 204, 238), (136, 34, 85), (68, 170, 153), (153, 153, 51),
    (221, 221, 221),
)  # fmt: skip

_PHASE_KEYS = ("id", "name", "formula", "density", "color")


def _check_color(color) -> tuple[int, int, int] | None:
    if color is None:
        return None
    if isinstance(color, str):
        text = color.strip().lstrip("#")
        if len(text) == 6:
            try:
                return tuple(int(text[i : i + 2], 16) for i in (0, 2, 4))
            except ValueError:
                pass
        raise InputError(f"color must be [r, g, b] (0..255) or '#rrggbb', got {color!r}")
    if (
        isinstance(color, Sequence)
        and len(color) == 3
        and all(
            isinstance(c, int | np.integer) and not isinstance(c, bool) and 0 <= c <= 255
            for c in color
        )
    ):
        return tuple(int(c) for c in color)
    raise InputError(f"color must be [r, g, b] with integers 0..255 or '#rrggbb', got {color!r}")


@dataclass(frozen=True)
class Phase(_AttenuatingMixin):
    """A mineral phase of a phase library.

    Parameters
    ----------
    id : int
        Phase id, 1..255: the value of this phase in a phase label image (uint8; 0 = background).
    name : str
        Unique name, e.g. ``"calcite"``.
    formula : str
        Chemical formula, see :func:`parse_formula`.
    density : float
        Density, g/cm3.
    color : (int, int, int), optional
        RGB colour for mineral maps; a default from :data:`DEFAULT_PALETTE` when missing.

    Attributes
    ----------
    weight_fractions : dict of str to float
        Element mass fractions.
    mean_atomic_number : float
        Mass-fraction weighted mean Z (governs BSE contrast).

    Examples
    --------
    >>> calcite = Phase(1, "calcite", "CaCO3", 2.75)
    >>> round(calcite.attenuation_length_um(5.4), 1)
    16.7
    """

    id: int
    name: str
    formula: str
    density: float
    color: tuple[int, int, int] | None = None

    def __post_init__(self):
        if isinstance(self.id, bool) or not isinstance(self.id, int | np.integer):
            raise InputError(f"id must be an integer 1..255, got {self.id!r}")
        if not 1 <= self.id <= 255:
            raise InputError(f"id must lie within 1..255, got {self.id!r}")
        if not isinstance(self.name, str) or not self.name.strip():
            raise InputError(f"name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.formula, str):
            raise InputError(f"formula must be a string, got {self.formula!r}")
        parse_formula(self.formula)
        object.__setattr__(self, "id", int(self.id))
        object.__setattr__(self, "density", _check_density(self.density))
        object.__setattr__(self, "color", _check_color(self.color))

    def to_dict(self) -> dict[str, Any]:
        """``{id, name, formula, density[, color]}`` as in a phase-library file."""
        data = {"id": self.id, "name": self.name, "formula": self.formula, "density": self.density}
        if self.color is not None:
            data["color"] = list(self.color)
        return data


class PhaseLibrary:
    """An immutable, validated set of phases, ordered by id.

    Parameters
    ----------
    phases : sequence of Phase
        At least one phase; ids (1..255) and names must be unique.

    Raises
    ------
    InputError
        On an empty sequence, a non-Phase item, a duplicate id or a duplicate name.

    Examples
    --------
    >>> library = PhaseLibrary([Phase(2, "talc", "Mg3Si4O10(OH)2", 2.76), Phase(1, "calcite", "CaCO3", 2.75)])
    >>> library.names, library.id_of("talc"), library.elements
    (['calcite', 'talc'], 2, ['H', 'C', 'O', 'Mg', 'Si', 'Ca'])
    """

    __slots__ = ("_by_id", "_by_name", "_phases")

    def __init__(self, phases: Sequence[Phase]):
        phases = tuple(phases)
        if not phases:
            raise InputError("a phase library needs at least one phase")
        by_id: dict[int, Phase] = {}
        by_name: dict[str, Phase] = {}
        for phase in phases:
            if not isinstance(phase, Phase):
                raise InputError(f"a phase library holds Phase objects, got {phase!r}")
            if phase.id in by_id:
                raise InputError(
                    f"duplicate phase id {phase.id} ({by_id[phase.id].name!r} and {phase.name!r})"
                )
            if phase.name in by_name:
                raise InputError(f"duplicate phase name {phase.name!r}")
            by_id[phase.id] = by_name[phase.name] = phase
        self._phases = tuple(sorted(phases, key=lambda phase: phase.id))
        self._by_id = by_id
        self._by_name = by_name

    # -- container -------------------------------------------------------------------------------
    @property
    def phases(self) -> tuple[Phase, ...]:
        """The phases, by increasing id."""
        return self._phases

    def __len__(self) -> int:
        return len(self._phases)

    def __iter__(self) -> Iterator[Phase]:
        return iter(self._phases)

    def __contains__(self, key: object) -> bool:
        return key in self._by_name if isinstance(key, str) else key in self._by_id

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PhaseLibrary):
            return NotImplemented
        return self._phases == other._phases

    def __hash__(self) -> int:
        return hash(self._phases)

    def __repr__(self) -> str:
        return f"PhaseLibrary({', '.join(f'{p.id}={p.name}' for p in self._phases)})"

    @property
    def ids(self) -> np.ndarray:
        """Phase ids, (n_phases,) uint8."""
        return np.array([p.id for p in self._phases], dtype=np.uint8)

    @property
    def names(self) -> list[str]:
        """Phase names, by increasing id."""
        return [p.name for p in self._phases]

    def by_id(self, id: int) -> Phase:
        """The phase with this id; InputError naming the known ids otherwise."""
        try:
            return self._by_id[int(id)]
        except (KeyError, TypeError, ValueError):
            known = ", ".join(str(i) for i in self._by_id)
            raise InputError(f"unknown phase id {id!r}; the library has ids {known}") from None

    def by_name(self, name: str) -> Phase:
        """The phase with this name; InputError naming the known names otherwise."""
        try:
            return self._by_name[name]
        except (KeyError, TypeError):
            raise InputError(
                f"unknown phase {name!r}; the library has {', '.join(self.names)}"
            ) from None

    def name_of(self, id: int) -> str:
        """Name of the phase with this id."""
        return self.by_id(id).name

    def id_of(self, name: str) -> int:
        """Id of the phase with this name."""
        return self.by_name(name).id

    # -- derived properties ----------------------------------------------------------------------
    @property
    def colors(self) -> dict[int, tuple[int, int, int]]:
        """RGB colour per phase id; phases without one get, in id order, the first
        :data:`DEFAULT_PALETTE` colours not used by another phase (cycling if all are)."""
        taken = {p.color for p in self._phases if p.color is not None}
        free = [c for c in DEFAULT_PALETTE if c not in taken] or list(DEFAULT_PALETTE)
        colors, index = {}, 0
        for phase in self._phases:
            if phase.color is None:
                colors[phase.id] = free[index % len(free)]
                index += 1
            else:
                colors[phase.id] = phase.color
        return colors

    @property
    def elements(self) -> list[str]:
        """All elements of all phases, sorted by atomic number."""
        symbols = {element for phase in self._phases for element in parse_formula(phase.formula)}
        return sorted(symbols, key=atomic_number)

    def weight_fraction_matrix(self, elements: Sequence[str] | None = None) -> np.ndarray:
        """Element mass fractions per phase.

        Parameters
        ----------
        elements : sequence of str, optional
            Element symbols (columns); default :attr:`elements`. An element absent from a phase
            gives 0.

        Returns
        -------
        (n_phases, n_elements) ndarray of float64
            ``W[i, j]`` = mass fraction of element j in phase i (rows by increasing id).
        """
        elements = self.elements if elements is None else list(elements)
        for element in elements:
            atomic_number(element)
        matrix = np.zeros((len(self), len(elements)), dtype=np.float64)
        for row, phase in enumerate(self._phases):
            fractions = weight_fractions(phase.formula)
            matrix[row] = [fractions.get(element, 0.0) for element in elements]
        return matrix

    @property
    def mean_atomic_numbers(self) -> np.ndarray:
        """Mass-fraction weighted mean Z per phase, (n_phases,) float64."""
        return np.array([p.mean_atomic_number for p in self._phases], dtype=np.float64)

    @property
    def densities(self) -> np.ndarray:
        """Density per phase, g/cm3, (n_phases,) float64."""
        return np.array([p.density for p in self._phases], dtype=np.float64)

    def linear_attenuation(self, energy_kev: float | np.ndarray) -> np.ndarray:
        """Linear attenuation coefficients, 1/um.

        Parameters
        ----------
        energy_kev : float or (n_energies,) ndarray
            Photon energy, keV.

        Returns
        -------
        (n_phases,) or (n_phases, n_energies) ndarray
            ``mu[i]`` or ``mu[i, k]`` of phase i (by increasing id) at the energies, see
            :func:`linear_attenuation_coefficient`.
        """
        energies = np.asarray(energy_kev, dtype=np.float64)
        rows = [np.asarray(p.linear_attenuation(energies.ravel())) for p in self._phases]
        matrix = np.stack(rows)
        return matrix[:, 0] if energies.ndim == 0 else matrix.reshape((len(self), *energies.shape))

    def effective_attenuation(self, spectrum, *, thickness_um: float = 0.0) -> np.ndarray:
        """Spectrum-weighted linear attenuation coefficients, 1/um.

        Parameters
        ----------
        spectrum : Spectrum
            Photon spectrum reaching the sample (see :func:`tube_spectrum`, :func:`monochromatic`).
        thickness_um : float
            Path length through the phase, um; 0 (default) gives the thin-sample limit.

        Returns
        -------
        (n_phases,) ndarray
            ``mu_eff,i(t) = -ln( sum_k s_k exp(-mu_i(E_k) t) ) / t``: the Beer-Lambert coefficient
            that reproduces the polychromatic transmission of phase i through thickness t, with
            spectral weights ``s_k``. For ``t = 0`` it is ``sum_k s_k mu_i(E_k)``. It lies between
            min_k and max_k of ``mu_i(E_k)`` and decreases with t (beam hardening).
        """
        mu = self.linear_attenuation(np.asarray(spectrum.energies_kev))
        return np.asarray(_effective_from_mu(mu, spectrum.weights, thickness_um), dtype=np.float64)

    # -- input / output --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """``{"phases": [{id, name, formula, density[, color]}, ...]}`` (the file contract)."""
        return {"phases": [phase.to_dict() for phase in self._phases]}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the library atomically as YAML (``.yaml``/``.yml``) or JSON (``.json``)."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".json":
            return write_json_atomic(path, self.to_dict())
        if suffix not in (".yaml", ".yml"):
            raise InputError("a phase library file must end in .yaml, .yml or .json", source=path)
        import yaml

        text = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)
        with atomic_path(path) as temporary:
            temporary.write_text(text, encoding="utf-8")
        return path

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], source: str | os.PathLike | None = None
    ) -> PhaseLibrary:
        """Build and validate a library from ``{"phases": [...]}``.

        Parameters
        ----------
        data : mapping
            Parsed phase-library file.
        source : str or os.PathLike, optional
            File name for error messages.

        Raises
        ------
        InputError
            One line naming `source` and the problem (missing key, wrong type, duplicate id,
            id outside 1..255, unparseable formula...).
        """
        if not isinstance(data, Mapping):
            raise InputError(
                f"expected a mapping with key 'phases', got {type(data).__name__}", source=source
            )
        if "phases" not in data:
            raise InputError("missing key 'phases'", source=source)
        entries = data["phases"]
        if not isinstance(entries, Sequence) or isinstance(entries, str) or not entries:
            raise InputError("'phases' must be a non-empty list of phases", source=source)
        phases = []
        for index, entry in enumerate(entries):
            where = f"phases[{index}]"
            if not isinstance(entry, Mapping):
                raise InputError(f"{where}: expected a mapping, got {entry!r}", source=source)
            unknown = [key for key in entry if key not in _PHASE_KEYS]
            if unknown:
                raise InputError(
                    f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(_PHASE_KEYS)})",
                    source=source,
                )
            missing = [key for key in _PHASE_KEYS[:4] if key not in entry]
            if missing:
                raise InputError(f"{where}: missing key {missing[0]!r}", source=source)
            if isinstance(entry["name"], str):
                where += f" ({entry['name']})"
            try:
                phases.append(Phase(**{key: entry[key] for key in _PHASE_KEYS if key in entry}))
            except InputError as error:
                raise InputError(f"{where}: {error.reason}", source=source) from None
        try:
            return cls(phases)
        except InputError as error:
            raise InputError(error.reason, source=source) from None


def _read_file(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("phase library file not found", source=path) from None
    except IsADirectoryError:
        raise InputError("is a directory, not a phase library file", source=path) from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read phase library: {error}", source=path) from None
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(
                f"not valid JSON: {error.msg} (line {error.lineno})", source=path
            ) from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or type(error).__name__
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise InputError(f"not valid YAML: {problem}{line}", source=path) from None


@functools.cache
def preset_library(name: str) -> PhaseLibrary:
    """A phase library shipped with corrtomo.

    Parameters
    ----------
    name : str
        One of :data:`PRESET_NAMES`: ``"talc-saxolite"`` (calcite/saxolite 1, dolomite 2,
        magnesite 3, talc 4; Table 1 of the paper) or ``"li-slag"`` (lialo2 1, gehlenite 2,
        spinel 3, slag-glass 4, galaxite 5).

    Raises
    ------
    InputError
        For an unknown name, listing the known ones.

    Examples
    --------
    >>> preset_library("talc-saxolite").names
    ['calcite', 'dolomite', 'magnesite', 'talc']
    """
    if name not in PRESET_NAMES:
        raise InputError(
            f"unknown phase library preset {name!r}; known presets: {', '.join(PRESET_NAMES)}"
        )
    resource = resources.files(__package__).joinpath("presets", f"{name}.yaml")
    import yaml

    data = yaml.safe_load(resource.read_text(encoding="utf-8"))
    return PhaseLibrary.from_dict(data, source=f"preset {name}")


def load_phase_library(
    source: str | os.PathLike | Mapping[str, Any] | PhaseLibrary,
) -> PhaseLibrary:
    """Load a phase library from a preset name, a YAML/JSON file, a mapping or a library.

    Parameters
    ----------
    source : str, os.PathLike, mapping or PhaseLibrary
        A name from :data:`PRESET_NAMES` (an existing file of that name wins), a path to a
        ``.yaml``/``.yml``/``.json`` file (other suffixes are read as YAML, a superset of JSON)
        whose key ``phases`` holds a list of ``{id, name, formula, density, color?}``, a mapping of
        that form, or a PhaseLibrary (returned as is).

    Returns
    -------
    PhaseLibrary

    Raises
    ------
    InputError
        One line naming the file and the problem: missing file, bad YAML/JSON, missing key, wrong
        type, duplicate id or name, id outside 1..255, unparseable formula, unknown element.

    Examples
    --------
    >>> load_phase_library({"phases": [{"id": 1, "name": "calcite", "formula": "CaCO3", "density": 2.75}]})
    PhaseLibrary(1=calcite)
    """
    if isinstance(source, PhaseLibrary):
        return source
    if isinstance(source, Mapping):
        return PhaseLibrary.from_dict(source)
    if not isinstance(source, str | os.PathLike):
        raise InputError(
            f"a phase library is a preset name, a file, a mapping or a PhaseLibrary, got {source!r}"
        )
    path = Path(source)
    if isinstance(source, str) and source in PRESET_NAMES and not path.is_file():
        return preset_library(source)
    if isinstance(source, str) and not path.exists() and not path.suffix and os.sep not in source:
        raise InputError(
            f"neither a phase library file nor a preset (known presets: {', '.join(PRESET_NAMES)})",
            source=source,
        )
    return PhaseLibrary.from_dict(_read_file(path), source=path)
