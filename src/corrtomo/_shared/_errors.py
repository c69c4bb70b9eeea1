"""The one error type for bad user input."""

from __future__ import annotations

import os


class InputError(ValueError):
    """Bad input from a user: a file, an argument or a value that corrtomo cannot use.

    The message is one line that names the offending file or argument, so the CLI can print it
    as is and exit with code 2.

    Parameters
    ----------
    message : str
        What is wrong, in words a user understands.
    source : str or os.PathLike, optional
        The file or argument at fault; it prefixes the message.
    """

    def __init__(self, message: str, *, source: str | os.PathLike | None = None):
        self.source = None if source is None else os.fspath(source)
        self.reason = " ".join(str(message).split())
        text = self.reason if self.source is None else f"{self.source}: {self.reason}"
        super().__init__(text)
