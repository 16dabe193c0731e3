"""What every CLI command shares: option types, output (tables or one JSON object), training."""

from __future__ import annotations

import functools
import inspect
import json
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dltoolkit.core import config as cfg
from dltoolkit.core.metrics import headline
from dltoolkit.core.recipe import Recipe
from dltoolkit.core.rundir import RunDir, finished_message

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
Epochs = Annotated[int | None, typer.Option(help="Training epochs.")]
BatchSize = Annotated[int | None, typer.Option(help="Global batch size (split across replicas).")]
LearningRate = Annotated[
    float | None, typer.Option(help="Peak learning rate (warmup then cosine decay).")
]
Strategy = Annotated[str | None, typer.Option(help="auto|cpu|gpu|mirrored|multi-worker|tpu.")]
# What a recipe that trains through `model.fit` says: it also runs as a multi-worker job.
_REPLICATED_HELP = (
    "auto|cpu|gpu|mirrored|multi-worker|tpu; multi-worker: run the same command on every "
    "worker, each with its TF_CONFIG (README, 'Scaling out')."
)
Tpu = Annotated[str | None, typer.Option(help="TPU name or address for --strategy tpu.")]
MixedPrecision = Annotated[
    bool | None,
    typer.Option(
        "--mixed-precision/--no-mixed-precision", help="float16 on GPU, bfloat16 on TPU/CPU."
    ),
]
Seed = Annotated[int | None, typer.Option(help="Random seed.")]
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


# The options every training command adds after its own (see `recipe_command`).
_RUNTIME_OPTIONS = {
    "strategy": Strategy,
    "tpu": Tpu,
    "mixed_precision": MixedPrecision,
    "seed": Seed,
}
_CONTROL_OPTIONS = {
    "set_": (Set, None),
    "out": (Out, None),
    "resume": (Resume, False),
    "overwrite": (Overwrite, False),
    "as_json": (Json, False),
    "quiet": (Quiet, False),
}


def recipe_command(recipe_cls: type[Recipe]) -> Callable:
    """Make a training command from a function that declares only a recipe's own options.

    The function takes its options and returns `(data, params)`: the data source (None for
    the recipe's built-in sample) and the recipe parameters they set. The decorator adds the
    shared options (--strategy, --tpu, --mixed-precision, --seed, --set, --out, --resume,
    --overwrite, --json, --quiet) to the Typer signature and does the training.
    """

    def decorate(read_options: Callable) -> Callable:
        hints = typing.get_type_hints(read_options, include_extras=True)
        own = [
            p.replace(annotation=hints[p.name])
            for p in inspect.signature(read_options).parameters.values()
        ]
        runtime = [_option(name, hint, None) for name, hint in _runtime_options(recipe_cls).items()]
        control = [
            _option(name, hint, default) for name, (hint, default) in _CONTROL_OPTIONS.items()
        ]

        @functools.wraps(read_options)
        def command(**options) -> None:
            control_values = {name: options.pop(name) for name in _CONTROL_OPTIONS}
            runtime_values = {name: options.pop(name) for name in _RUNTIME_OPTIONS}
            data, params = read_options(**options)
            train(
                recipe_cls,
                data or recipe_cls.default_data,
                {**given(**params), **given(**runtime_values)},
                control_values.pop("set_"),
                **control_values,
            )

        del command.__wrapped__  # Typer must read the full signature below, not the function's
        command.__signature__ = inspect.Signature(own + runtime + control)
        command.__annotations__ = {p.name: p.annotation for p in own + runtime + control}
        return command

    return decorate


def _runtime_options(recipe_cls: type[Recipe]) -> dict:
    """The shared runtime options; --strategy's help says whether the recipe runs replicated."""
    help_text = _REPLICATED_HELP
    if recipe_cls.single_replica_reason:
        help_text = (
            f"auto|cpu|gpu (not mirrored, multi-worker or tpu: {recipe_cls.single_replica_reason})."
        )
    return {**_RUNTIME_OPTIONS, "strategy": Annotated[str | None, typer.Option(help=help_text)]}


def _option(name: str, hint, default) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=hint)


def given(**options) -> dict:
    """The options the user actually passed (None means 'not given')."""
    return {k: v for k, v in options.items() if v is not None}


def train(
    recipe_cls: type[Recipe],
    data,
    params: dict,
    overrides: list[str] | None,
    *,
    out,
    resume: bool,
    overwrite: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Fit a recipe into a run directory, export it, and print the summary."""
    doc = {"task": recipe_cls.task, "data": data, "params": params}
    saved = resume and out is not None and (Path(out) / "recipe.toml").is_file()
    if saved:
        doc = cfg.read_recipe_file(Path(out) / "recipe.toml")
    doc = cfg.apply_overrides(doc, overrides or [])
    recipe = recipe_cls(**doc["params"])
    with recipe.run_lock(out):  # no other job between the training and the export
        if saved and not overwrite and RunDir(out).finished:
            stderr.print(finished_message(out), markup=False, soft_wrap=True)
            recipe = recipe_cls.load(out)
            exported = recipe.run_.export_dir()
        else:
            if saved and not quiet and not as_json:
                stderr.print(f"resuming {out} with its saved recipe")
            recipe.fit(
                doc["data"],
                out,
                resume=resume,
                overwrite=overwrite,
                progress=not (quiet or as_json),
            )
            exported = recipe.export()
    run = recipe.run_
    if run.resume_from is not None:  # a multi-worker job's non-chief: the chief writes the run
        run, exported = RunDir(run.resume_from), RunDir(run.resume_from).export_dir()
    summary = {
        "run": str(run.path),
        "metrics": headline(recipe.metrics_),
        "export": str(exported),
        "report": str(run.report_file),
    }
    if as_json:
        print_json({**summary, "metrics": recipe.metrics_})
        return
    print_table(f"{recipe_cls.__name__} — test metrics", summary["metrics"])
    print_table("Run", {k: v for k, v in summary.items() if k != "metrics"})


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
