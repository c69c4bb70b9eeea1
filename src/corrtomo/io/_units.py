"""Length units found in image metadata, converted to micrometres."""

from __future__ import annotations

_MICROMETRES_PER_UNIT = {
    "km": 1e9,
    "kilometer": 1e9,
    "kilometre": 1e9,
    "m": 1e6,
    "meter": 1e6,
    "metre": 1e6,
    "dm": 1e5,
    "decimeter": 1e5,
    "cm": 1e4,
    "centimeter": 1e4,
    "centimetre": 1e4,
    "mm": 1e3,
    "millimeter": 1e3,
    "millimetre": 1e3,
    "um": 1.0,
    "µm": 1.0,  # micro sign U+00B5
    "μm": 1.0,  # Greek mu U+03BC
    "\\u00b5m": 1.0,  # ImageJ writes the escape literally
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "nanometre": 1e-3,
    "pm": 1e-6,
    "picometer": 1e-6,
    "picometre": 1e-6,
    "å": 1e-4,
    "Å": 1e-4,
    "angstrom": 1e-4,
    "in": 25400.0,
    "inch": 25400.0,
    "ft": 304800.0,
    "foot": 304800.0,
}


def micrometres_per_unit(unit: str | None, *, default: float | None = None) -> float | None:
    """Return how many micrometres one `unit` is, or `default` if the unit is unknown or absent.

    Parameters
    ----------
    unit : str or None
        A length unit as written in metadata: ``"um"``, ``"µm"``, ``"micron"``, ``"micrometer"``,
        ``"mm"``, ``"nm"``, ``"cm"``, ``"inch"``, ... (case-insensitive). ``"pixel"`` and empty
        strings are not lengths.
    default : float or None
        Value returned when `unit` is not a known length unit.

    Returns
    -------
    float or None
        Micrometres per `unit`.
    """
    if unit is None:
        return default
    text = str(unit).strip()
    if text in _MICROMETRES_PER_UNIT:
        return _MICROMETRES_PER_UNIT[text]
    return _MICROMETRES_PER_UNIT.get(text.lower(), default)
