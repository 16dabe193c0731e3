"""Generic verbs that use a finished run: predict, evaluate, export, report, run."""

from __future__ import annotations

import csv
import inspect
import io
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from dltoolkit.cli import common as c
from dltoolkit.core import config as cfg
from dltoolkit.core import files, records
from dltoolkit.core.errors import ConfigError, DataError
from dltoolkit.core.metrics import headline
from dltoolkit.core.recipe import load, recipe_class
from dltoolkit.core.rundir import RunDir

RunArg = Annotated[Path, typer.Argument(help="A run directory (the --out of a training command).")]


def predict(
    run: RunArg,
    inputs: Annotated[list[str] | None, typer.Argument(help="Input files or folders.")] = None,
    data: c.Data = None,
    output: Annotated[
        Path | None, typer.Option(help="Also write the predictions to a .csv or .json file.")
    ] = None,
    nodes: Annotated[
        Path | None, typer.Option(help="classify-nodes runs: a node table of a new graph.")
    ] = None,
    edges: Annotated[
        Path | None, typer.Option(help="classify-nodes runs: that graph's edge table.")
    ] = None,
    text: Annotated[
        list[str] | None, typer.Option(help="summarize runs: a document to summarise (repeatable).")
    ] = None,
    num: Annotated[
        int | None, typer.Option(help="generate runs: how many images to sample.")
    ] = None,
    label: Annotated[
        str | None, typer.Option(help="generate runs: the class to sample (conditional models).")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="generate and train-agent runs: random seed.")
    ] = None,
    episodes: Annotated[
        int | None, typer.Option(help="train-agent runs: episodes to play.")
    ] = None,
    render: Annotated[
        str | None,
        typer.Option(help="train-agent runs: 'rgb' saves the episodes' frames as a GIF."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="generate and train-agent runs: image or GIF file to write.")
    ] = None,
    strict: Annotated[
        bool,
        typer.Option(help="Stop at the first unreadable input (exit 2) instead of skipping it."),
    ] = False,
    as_json: c.Json = False,
) -> None:
    """Predict with a trained run (e.g. top-k labels for images; with no inputs, a
    classify-nodes run labels the unlabelled nodes of its graph)."""
    items = list(inputs or []) + ([data] if data else [])
    options = c.given(
        nodes=nodes and str(nodes),
        edges=edges and str(edges),
        text=text,
        num=num,
        label=label,
        seed=seed,
        episodes=episodes,
        render=render,
        out=out and str(out),
        strict=strict or None,
    )
    recipe = load(run)
    accepted = _check_options(recipe, recipe.predict, options)
    if not items and not options.keys() - {"strict"} and _needs_first(accepted):
        raise DataError("nothing to predict: pass input files or folders after the run directory")
    rows = recipe.predict(items or None, **options)
    if skipped := records.warning(rows):
        c.stderr.print(f"[yellow]warning:[/] {escape(skipped)}", highlight=False, soft_wrap=True)
    if output is not None:
        write_rows(output, rows)
    if as_json:
        c.print_json(rows)
        return
    c.print_table(f"Predictions ({len(rows)})", [_flat(r) for r in rows])


def _check_options(recipe, method, options: dict) -> dict:
    """The parameters of `method`; a ConfigError names the options this kind of run ignores."""
    accepted = inspect.signature(method).parameters
    unknown = [f"--{k}" for k in options if k not in accepted]
    if unknown:
        raise ConfigError(f"{', '.join(unknown)} do not apply to a {recipe.task} run")
    return accepted


def _needs_first(parameters) -> bool:
    """Whether the method's first parameter (the inputs or data) has no default."""
    return next(iter(parameters.values())).default is inspect.Parameter.empty


def write_rows(path: Path, rows: list[dict]) -> None:
    """Prediction rows as JSON (nested as they are) or CSV (nested values flattened)."""
    if path.suffix.lower() == ".json":
        files.write_json(path, rows)
    elif path.suffix.lower() == ".csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(_flat(r) for r in rows)
        files.write_text(path, buffer.getvalue())
    else:
        raise ConfigError(f"--output {path}: use a .csv or .json file name")


def _flat(row: dict) -> dict:
    """One table/CSV row: nested lists become compact text ('cat 0.970, dog 0.020')."""
    return {key: _compact(value) for key, value in row.items()}


def _compact(value):
    if isinstance(value, list):
        return ", ".join(
            " ".join(_compact(v) for v in item.values())
            if isinstance(item, dict)
            else _compact(item)
            for item in value
        )
    if isinstance(value, float):
        return f"{value:.4g}"
    return value


def evaluate(
    run: RunArg,
    data: c.Data = None,
    episodes: Annotated[
        int | None, typer.Option(help="train-agent runs: evaluation episodes.")
    ] = None,
    as_json: c.Json = False,
) -> None:
    """Evaluate a trained run: metrics on labelled --data (or, for agents, returns over episodes)."""
    recipe = load(run)
    options = c.given(episodes=episodes)
    accepted = _check_options(recipe, recipe.evaluate, options)
    if not data and _needs_first(accepted):
        raise DataError("evaluate needs --data with labelled examples")
    metrics = recipe.evaluate(data, **options)
    if as_json:
        c.print_json(metrics)
        return
    c.print_table("Metrics", headline(metrics))
    if "per_class" in metrics:
        c.print_table("Per class", [{"class": k, **v} for k, v in metrics["per_class"].items()])
    if "confusion_matrix" in metrics and len(metrics["confusion_matrix"]) <= 20:
        names = list(metrics["per_class"])
        c.print_table(
            "Confusion matrix (rows: true, columns: predicted)",
            [
                {"": n, **dict(zip(names, row, strict=True))}
                for n, row in zip(names, metrics["confusion_matrix"], strict=True)
            ],
        )


def export(
    run: RunArg,
    format: Annotated[str, typer.Option("--format", help="saved_model|tflite")] = "saved_model",
    version: Annotated[int, typer.Option(help="Model version directory under export/<name>/.")] = 1,
    out: Annotated[
        Path | None, typer.Option(help="Export directory (default: inside the run).")
    ] = None,
    as_json: c.Json = False,
) -> None:
    """Export a trained run for serving (SavedModel for TF Serving, or TFLite)."""
    path = load(run).export(out, version=version, format=format)
    if as_json:
        c.print_json({"export": str(path), "format": format})
    else:
        c.stdout.print(f"exported {format}: {path}")


def report(run: RunArg, as_json: c.Json = False) -> None:
    """Show a run's final metrics and where its report is."""
    rundir = RunDir.open(run)
    metrics = json.loads(rundir.metrics_file.read_text()) if rundir.metrics_file.is_file() else {}
    if as_json:
        c.print_json(
            {"run": str(rundir.path), "report": str(rundir.report_file), "metrics": metrics}
        )
        return
    c.print_table(f"{rundir.name} — metrics", headline(metrics))
    c.stdout.print(f"report: {rundir.report_file}")


def run(
    recipe_file: Annotated[Path, typer.Argument(help="A recipe .toml file or a run directory.")],
    set_: c.Set = None,
    out: c.Out = None,
    resume: c.Resume = False,
    overwrite: c.Overwrite = False,
    as_json: c.Json = False,
    quiet: c.Quiet = False,
) -> None:
    """Run a recipe file; --set key=value overrides any parameter (or data)."""
    doc = cfg.read_recipe_file(recipe_file)
    recipe_cls = recipe_class(doc["task"])
    c.train(
        recipe_cls,
        doc["data"] or recipe_cls.default_data,
        doc["params"],
        set_,
        out=out,
        resume=resume,
        overwrite=overwrite,
        as_json=as_json,
        quiet=quiet,
    )
