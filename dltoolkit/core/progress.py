"""Progress for the phases outside `model.fit`: evaluation, sampling, report plots, export."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


@contextlib.contextmanager
def phase_progress(console: Console | None, name: str) -> Iterator[None]:
    """Show a spinner with `name` and the elapsed time while the block runs, then one line
    saying how long it took; only that line when the console is not a terminal (a log
    file), and nothing at all when `console` is None."""
    if console is None:
        yield
        return
    started = time.perf_counter()
    if console.is_terminal:
        columns = [SpinnerColumn(), TextColumn("[bold]{task.description}"), TimeElapsedColumn()]
        with Progress(*columns, console=console, transient=True) as progress:
            progress.add_task(name, total=None)
            yield
    else:
        yield
    console.print(f"{name}  [dim]({time.perf_counter() - started:.1f}s)[/]")
