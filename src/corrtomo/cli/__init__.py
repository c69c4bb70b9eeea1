"""The ``corrtomo`` command line: a thin layer over the Python API.

Each command lives in its own module (``_synth.py``, ``_analyze.py``, ...) and registers itself
on the shared :data:`app`. Errors from bad input (:class:`corrtomo._shared.InputError`) are printed
as one line and exit with code 2.
"""

from __future__ import annotations

import sys

from ._app import app, run_app

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``corrtomo`` console script."""
    return run_app(sys.argv[1:] if argv is None else argv)
