"""Progress for the phases outside `model.fit`: evaluation, sampling, report plots, export."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)


@contextlib.contextmanager
def phase_progress(
    console: Console | None, name: str, total: int | None = None
) -> Iterator[Callable[[int], None]]:
    """Show `name` and the elapsed time while the block runs (a spinner, or a bar of `total`
    steps), then one line saying how long it took; nothing at all when `console` is None.

    Yields `advance(steps=1)`, which moves the bar on (a no-op for a spinner).
    """
    if console is None:
        yield lambda steps=1: None
        return
    columns = [SpinnerColumn(), TextColumn("[bold]{task.description}")]
    if total is not None:
        columns += [BarColumn(), MofNCompleteColumn()]
    started = time.perf_counter()
    with Progress(*columns, TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task(name, total=total)
        yield lambda steps=1: progress.advance(task, steps)
    console.print(f"{name}  [dim]({time.perf_counter() - started:.1f}s)[/]")
