"""The 118 chemical element symbols, in order of atomic number, and file-name parsing for EDS maps."""

from __future__ import annotations

import re

ELEMENT_SYMBOLS: tuple[str, ...] = tuple(
    """
    H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr
    Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb
    Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr Rf
    Db Sg Bh Hs Mt Ds Rg Cn Nh Fl Mc Lv Ts Og
    """.split()
)
ATOMIC_NUMBER: dict[str, int] = {symbol: z for z, symbol in enumerate(ELEMENT_SYMBOLS, start=1)}
_BY_LOWER = {symbol.lower(): symbol for symbol in ELEMENT_SYMBOLS}

# A symbol glued to its X-ray line: "CaKa", "FeLa1", "SiK", "MgKα".
_SYMBOL_WITH_LINE = re.compile(r"^([A-Z][a-z]?)([KLM](?:a|b|α|β|alpha|beta)?\d?)$")
_SEPARATORS = re.compile(r"[\s_\-.,+()\[\]]+")


def element_from_name(stem: str) -> str | None:
    """Return the element symbol named by an EDS map's file name (without suffix), or ``None``.

    The name is split at spaces, ``_``, ``-``, ``.`` and brackets; the first token that is an
    element symbol in its usual spelling (``Ca``, ``Si``) wins, so ``"Mg_K"`` is magnesium and
    ``"eds_Ca"`` is calcium. A symbol glued to its X-ray line (``"CaKa"``, ``"FeLa1"``) is
    accepted. Only if no token matches in the usual spelling is a case-insensitive match tried
    (``"ca"``, ``"CA"``).

    Parameters
    ----------
    stem : str
        File name without its suffix, e.g. ``"Si Ka"``.

    Returns
    -------
    str or None
        The canonical symbol (``"Si"``), or ``None`` when no token names an element.
    """
    tokens = [token for token in _SEPARATORS.split(stem) if token]
    for token in tokens:
        if token in ATOMIC_NUMBER:
            return token
        match = _SYMBOL_WITH_LINE.match(token)
        if match and match.group(1) in ATOMIC_NUMBER:
            return match.group(1)
    for token in tokens:
        if token.lower() in _BY_LOWER:
            return _BY_LOWER[token.lower()]
    return None
