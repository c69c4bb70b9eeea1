"""Progress display for long CLI work (rich), silent when asked or when not on a terminal."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def stage_progress(*, quiet: bool = False) -> Iterator:
    """Yield a ``progress(stage, done, total)`` callable that drives one rich bar per stage."""
    if quiet:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=False, disable=not console.is_terminal,
    ) as bars:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(stage, total=total)
            bars.update(tasks[stage], completed=done, total=total)

        yield progress
