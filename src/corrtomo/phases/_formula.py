"""Chemical formulas: atom counts, element mass fractions and mean atomic number."""

from __future__ import annotations

import functools
import re

from corrtomo._shared import InputError

# Element symbols for Z = 1..98, the range of the Elam et al. (2002) tables behind xraydb.
ELEMENT_SYMBOLS: tuple[str, ...] = (
    "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne",
    "Na", "Mg", "Al", "Si", "P", "S", "Cl", "Ar", "K", "Ca",
    "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn",
    "Ga", "Ge", "As", "Se", "Br", "Kr", "Rb", "Sr", "Y", "Zr",
    "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd", "In", "Sn",
    "Sb", "Te", "I", "Xe", "Cs", "Ba", "La", "Ce", "Pr", "Nd",
    "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb",
    "Lu", "Hf", "Ta", "W", "Re", "Os", "Ir", "Pt", "Au", "Hg",
    "Tl", "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac", "Th",
    "Pa", "U", "Np", "Pu", "Am", "Cm", "Bk", "Cf",
)  # fmt: skip
_ATOMIC_NUMBERS = {symbol: z for z, symbol in enumerate(ELEMENT_SYMBOLS, start=1)}

_HYDRATE_SEPARATORS = "·•∙⋅*"
_OPENING = {"(": ")", "[": "]", "{": "}"}
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_SYMBOL = re.compile(r"[A-Z][a-z]*")


def atomic_number(symbol: str) -> int:
    """Atomic number Z of an element symbol (``"Ca"`` -> 20).

    Raises
    ------
    InputError
        If `symbol` is not an element symbol of Z = 1..98.
    """
    try:
        return _ATOMIC_NUMBERS[symbol]
    except (KeyError, TypeError):
        raise InputError(f"unknown element symbol {symbol!r}") from None


class _FormulaError(Exception):
    pass


def _read_count(text: str, position: int) -> tuple[float, int]:
    match = _NUMBER.match(text, position)
    if match is None:
        return 1.0, position
    value = float(match.group())
    if value <= 0:
        raise _FormulaError(f"zero count {match.group()!r} at position {position}")
    return value, match.end()


def _parse_group(text: str, position: int, closing: str | None) -> tuple[dict[str, float], int]:
    counts: dict[str, float] = {}
    while position < len(text):
        character = text[position]
        if character in _OPENING:
            inner, position = _parse_group(text, position + 1, _OPENING[character])
            position += 1  # the closing bracket, checked by the inner call
            multiplier, position = _read_count(text, position)
            for element, count in inner.items():
                counts[element] = counts.get(element, 0.0) + count * multiplier
        elif character in ")]}":
            if character != closing:
                raise _FormulaError(f"unbalanced {character!r} at position {position}")
            if not counts:
                raise _FormulaError(f"empty brackets before position {position}")
            return counts, position
        elif character.isupper():
            symbol = _SYMBOL.match(text, position).group()
            if symbol not in _ATOMIC_NUMBERS:
                raise _FormulaError(f"unknown element {symbol!r} at position {position}")
            count, position = _read_count(text, position + len(symbol))
            counts[symbol] = counts.get(symbol, 0.0) + count
        else:
            raise _FormulaError(f"unexpected character {character!r} at position {position}")
    if closing is not None:
        raise _FormulaError(f"missing {closing!r}")
    return counts, position


@functools.lru_cache(maxsize=1024)
def _parse_cached(formula: str) -> tuple[tuple[str, float], ...]:
    text = "".join(formula.split())
    if not text:
        raise _FormulaError("empty formula")
    counts: dict[str, float] = {}
    for part in re.split(f"[{_HYDRATE_SEPARATORS}]", text):
        if not part:
            raise _FormulaError("empty part next to a hydrate separator")
        multiplier, start = _read_count(part, 0)
        inner, _ = _parse_group(part, start, None)
        if not inner:
            raise _FormulaError(f"no element in {part!r}")
        for element, count in inner.items():
            counts[element] = counts.get(element, 0.0) + count * multiplier
    return tuple(counts.items())


def parse_formula(formula: str) -> dict[str, float]:
    """Count the atoms of each element in a chemical formula.

    Parameters
    ----------
    formula : str
        A sum formula such as ``"CaCO3"``, ``"CaMg(CO3)2"``, ``"Mg3Si4O10(OH)2"``, with nested round,
        square or curly brackets, decimal counts (``"Ca0.5Mg0.5CO3"``) and hydrate parts joined by
        ``·`` or ``*`` with an optional leading multiplier (``"CaSO4·2H2O"``, ``"MgSO4*7H2O"``).
        Whitespace is ignored.

    Returns
    -------
    dict of str to float
        Atoms per formula unit, by element symbol, in order of first appearance.

    Raises
    ------
    InputError
        If the formula is empty, unbalanced, has a zero count or an unknown element; the message
        names the formula.

    Examples
    --------
    >>> parse_formula("CaMg(CO3)2")
    {'Ca': 1.0, 'Mg': 1.0, 'C': 2.0, 'O': 6.0}
    >>> parse_formula("CaSO4·2H2O")
    {'Ca': 1.0, 'S': 1.0, 'O': 6.0, 'H': 4.0}
    """
    if not isinstance(formula, str):
        raise InputError(f"a chemical formula must be a string, got {formula!r}")
    try:
        return dict(_parse_cached(formula))
    except _FormulaError as error:
        raise InputError(f"cannot parse chemical formula {formula!r}: {error}") from None


def _atomic_mass(symbol: str) -> float:
    import xraydb

    return float(xraydb.atomic_mass(symbol))


@functools.lru_cache(maxsize=1024)
def _weight_fractions_cached(formula: str) -> tuple[tuple[str, float], ...]:
    masses = {
        element: count * _atomic_mass(element) for element, count in parse_formula(formula).items()
    }
    total = sum(masses.values())
    return tuple((element, mass / total) for element, mass in masses.items())


def weight_fractions(formula: str) -> dict[str, float]:
    """Element mass fractions of a compound.

    Parameters
    ----------
    formula : str
        Chemical formula, see :func:`parse_formula`.

    Returns
    -------
    dict of str to float
        Mass fraction ``w_i = n_i A_i / sum_j n_j A_j`` of every element (sums to 1), where ``n_i``
        are the atom counts and ``A_i`` the standard atomic masses (g/mol) from xraydb.

    Examples
    --------
    >>> {k: round(v, 4) for k, v in weight_fractions("CaCO3").items()}
    {'Ca': 0.4004, 'C': 0.12, 'O': 0.4796}
    """
    if not isinstance(formula, str):
        parse_formula(formula)  # raises the right error
    return dict(_weight_fractions_cached(formula))


def mean_atomic_number(formula: str, *, weighting: str = "mass") -> float:
    """Mean atomic number of a compound.

    Parameters
    ----------
    formula : str
        Chemical formula, see :func:`parse_formula`.
    weighting : {"mass", "electron", "atom"}
        ``"mass"`` (default): ``Z_mean = sum_i w_i Z_i`` with mass fractions ``w_i``. This is the
        mean Z that governs the backscattered-electron (BSE) coefficient and so the grey value of a
        BSE image (Castaing's rule; Goldstein et al. 2018, *Scanning Electron Microscopy and X-Ray
        Microanalysis*, 4th ed., ch. 2). ``"electron"``: ``sum_i f_i Z_i`` with electron fractions
        ``f_i = n_i Z_i / sum_j n_j Z_j``. ``"atom"``: ``sum_i n_i Z_i / sum_j n_j``.

    Returns
    -------
    float
        Mean atomic number (dimensionless).

    Examples
    --------
    >>> round(mean_atomic_number("CaCO3"), 3)
    12.565
    """
    if weighting == "mass":
        return float(sum(w * _ATOMIC_NUMBERS[e] for e, w in weight_fractions(formula).items()))
    counts = parse_formula(formula)
    if weighting == "electron":
        electrons = {e: n * _ATOMIC_NUMBERS[e] for e, n in counts.items()}
        return float(
            sum(z * _ATOMIC_NUMBERS[e] for e, z in electrons.items()) / sum(electrons.values())
        )
    if weighting == "atom":
        return float(sum(n * _ATOMIC_NUMBERS[e] for e, n in counts.items()) / sum(counts.values()))
    raise InputError(f"weighting must be 'mass', 'electron' or 'atom', got {weighting!r}")
