"""What every CLI command shares: option types, loading TensorFlow, output (tables or JSON).

Nothing here imports TensorFlow at module level, so `dltoolkit --help` stays fast; commands
call `tensorflow_ready()` before they touch a model.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

stdout = Console()
stderr = Console(stderr=True)

# Shared options, spelled the same by every command (DESIGN.md, 'CLI grammar').
Data = Annotated[
    str | None,
    typer.Option(
        help="Data: folder, CSV file, tfds:NAME or a built-in name (`dltoolkit datasets`)."
    ),
]
Out = Annotated[
    Path | None, typer.Option(help="Run directory to write (default runs/<task>-<time>).")
]
Strategy = Annotated[str | None, typer.Option(help="auto|cpu|gpu|mirrored|multi-worker|tpu.")]
Tpu = Annotated[str | None, typer.Option(help="TPU name or address for --strategy tpu.")]
Resume = Annotated[
    bool, typer.Option(help="Continue the interrupted run in --out with its saved recipe.")
]
Overwrite = Annotated[bool, typer.Option(help="Replace the run already in --out.")]
Json = Annotated[
    bool, typer.Option("--json", help="Print one JSON object (for scripts) instead of tables.")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
Set = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override any recipe parameter: --set key=value (repeatable)."),
]


def tensorflow_ready() -> None:
    """Import TensorFlow with its native start-up chatter (oneDNN, CUDA probes) silenced:
    it writes to file descriptor 2 before any log level applies."""
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


def given(**options) -> dict:
    """The options the user actually passed (None means 'not given')."""
    return {k: v for k, v in options.items() if v is not None}


def print_json(obj) -> None:
    print(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def print_table(title: str, rows: dict | list[dict]) -> None:
    """A key/value table from a dict, or a columned table from a list of row dicts."""
    stdout.print(f"[bold]{title}[/]")
    table = Table()
    if isinstance(rows, dict):
        rows = [{"": k, "value": v} for k, v in rows.items()]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_fmt(row.get(c, "")) for c in columns))
    stdout.print(table)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
