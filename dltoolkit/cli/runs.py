"""Generic verbs that use a finished run: predict, evaluate, export, report, run.

`predict` and `evaluate` offer the options every recipe's spec declares for them; a run
refuses the ones its kind does not take. TensorFlow loads only once a command runs.
"""

from __future__ import annotations

import csv
import functools
import inspect
import io
import json
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from dltoolkit.cli import common as c
from dltoolkit.cli.train import train
from dltoolkit.core import config as cfg
from dltoolkit.core import files, records
from dltoolkit.core.errors import ConfigError, DataError
from dltoolkit.core.rundir import RunDir
from dltoolkit.registry import Option, spec, specs

RunArg = Annotated[Path, typer.Argument(help="A run directory (the --out of a training command).")]


def _run_options(kind: str) -> dict[str, tuple[Option, list[str]]]:
    """Every recipe's `predict` (or `evaluate`) options by name, with the verbs that take it."""
    merged: dict[str, tuple[Option, list[str]]] = {}
    for recipe in specs().values():
        for option in getattr(recipe, f"{kind}_options"):
            merged.setdefault(option.name, (option, []))[1].append(recipe.task)
    return merged


def _with_run_options(kind: str, command: Callable) -> Callable:
    """Add the recipes' own `kind` options to `command`'s signature (before --json), each
    help saying which runs take it; the command receives them in `recipe_options`."""
    options = _run_options(kind)
    signature = inspect.signature(command)
    hints = typing.get_type_hints(command, include_extras=True)
    fixed = [
        p.replace(annotation=hints[p.name])
        for p in signature.parameters.values()
        if p.name != "recipe_options"
    ]
    extra = [
        inspect.Parameter(
            name,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            default=None,
            annotation=Annotated[
                (list[option.kind] if option.multiple else option.kind) | None,
                typer.Option(
                    help=f"{', '.join(tasks)} runs: {option.help[0].lower()}{option.help[1:]}"
                ),
            ],
        )
        for name, (option, tasks) in options.items()
    ]

    @functools.wraps(command)
    def wrapper(**values):
        chosen = c.given(**{name: values.pop(name) for name in options})
        return command(**values, recipe_options=chosen)

    del wrapper.__wrapped__  # Typer must read the signature below
    parameters = fixed[:-1] + extra + fixed[-1:]  # --json stays last
    wrapper.__signature__ = signature.replace(parameters=parameters)
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    return wrapper


def _task_options(run: Path, kind: str, chosen: dict) -> str:
    """The run's task; a ConfigError names the options that kind of run does not take."""
    task = cfg.read_recipe_file(RunDir.open(run).recipe_file)["task"]
    accepted = {o.name for o in getattr(spec(task), f"{kind}_options")}
    unknown = [f"--{k.replace('_', '-')}" for k in chosen if k not in accepted]
    if unknown:
        raise ConfigError(f"{', '.join(unknown)} do not apply to a {task} run")
    return task


def _predict(
    run: RunArg,
    inputs: Annotated[list[str] | None, typer.Argument(help="Input files or folders.")] = None,
    data: c.Data = None,
    output: Annotated[
        Path | None,
        typer.Option(
            help="Also write the predictions to a .csv or .json file (segment runs: a folder "
            "for the mask PNGs and overlays)."
        ),
    ] = None,
    recipe_options: dict | None = None,
    as_json: c.Json = False,
) -> None:
    """Predict with a trained run (e.g. top-k labels for images; with no inputs, a
    classify-nodes run labels the unlabelled nodes of its graph)."""
    items = list(inputs or []) + ([data] if data else [])
    options = recipe_options or {}
    _task_options(run, "predict", options)
    recipe = _load(run, progress=not as_json)
    if not items and not options.keys() - {"strict"} and _needs_first(recipe.predict):
        raise DataError("nothing to predict: pass input files or folders after the run directory")
    into_folder = output is not None and _writes_files(recipe.predict, output)
    if into_folder:
        options["output"] = str(output)
    rows = recipe.predict(items or None, **options)
    if skipped := records.warning(rows):
        c.stderr.print(f"[yellow]warning:[/] {escape(skipped)}", highlight=False, soft_wrap=True)
    if output is not None and not into_folder:
        write_rows(output, rows)
    if as_json:
        c.print_json(rows)
        return
    c.print_table(f"Predictions ({len(rows)})", [_flat(r) for r in rows])


predict = _with_run_options("predict", _predict)


def _load(run: Path, *, progress: bool):
    """The trained recipe in `run` (this loads TensorFlow)."""
    c.tensorflow_ready()
    from dltoolkit.core.recipe import load

    return load(run, progress=progress)


def _writes_files(predict, output: Path) -> bool:
    """Whether `output` is a folder for the files a recipe's predict writes itself."""
    takes = "output" in inspect.signature(predict).parameters
    return takes and output.suffix.lower() not in (".csv", ".json")


def _needs_first(method) -> bool:
    """Whether the method's first parameter (the inputs or data) has no default."""
    first = next(iter(inspect.signature(method).parameters.values()))
    return first.default is inspect.Parameter.empty


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


def _evaluate(
    run: RunArg,
    data: c.Data = None,
    recipe_options: dict | None = None,
    as_json: c.Json = False,
) -> None:
    """Evaluate a trained run: metrics on labelled --data (or, for agents, returns over episodes)."""
    options = recipe_options or {}
    _task_options(run, "evaluate", options)
    recipe = _load(run, progress=not as_json)
    from dltoolkit.core.metrics import headline

    if not data and _needs_first(recipe.evaluate):
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
    path = _load(run, progress=not as_json).export(out, version=version, format=format)
    if as_json:
        c.print_json({"export": str(path), "format": format})
    else:
        c.stdout.print(f"exported {format}: {path}")


def report(run: RunArg, as_json: c.Json = False) -> None:
    """Show a run's final metrics and where its report is (a study of `dltoolkit tune`: write
    its report from the study's storage and show the best trial)."""
    from dltoolkit.core.tuning import STUDY_FILE

    if (run / STUDY_FILE).is_file():
        _study_report(run, as_json)
        return
    rundir = RunDir.open(run)
    metrics = json.loads(rundir.metrics_file.read_text()) if rundir.metrics_file.is_file() else {}
    if as_json:
        c.print_json(
            {"run": str(rundir.path), "report": str(rundir.report_file), "metrics": metrics}
        )
        return
    from dltoolkit.core.metrics import headline

    c.print_table(f"{rundir.name} — metrics", headline(metrics))
    c.stdout.print(f"report: {rundir.report_file}")


def _study_report(out: Path, as_json: bool) -> None:
    from dltoolkit.cli.tune import print_study
    from dltoolkit.core.study_report import write_study_report
    from dltoolkit.core.tuning import load_study, study_summary

    summary = study_summary(out)
    summary["report"] = str(write_study_report(out, load_study(out), summary))
    if as_json:
        c.print_json(summary)
    else:
        print_study(summary)


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
    train(
        spec(doc["task"]),
        doc["data"],
        doc["params"],
        set_,
        out=out,
        resume=resume,
        overwrite=overwrite,
        as_json=as_json,
        quiet=quiet,
    )


evaluate = _with_run_options("evaluate", _evaluate)


def align(
    run: RunArg,
    preferences: Annotated[
        str,
        typer.Option(
            help="JSONL of preference pairs: {prompt, chosen, rejected}, or two dialogues "
            "{chosen, rejected} that share their beginning (as HH-RLHF stores them)."
        ),
    ],
    set_: c.Set = None,
    out: c.Out = None,
    resume: c.Resume = False,
    overwrite: c.Overwrite = False,
    as_json: c.Json = False,
    quiet: c.Quiet = False,
) -> None:
    """Align a generate-text run with preference pairs (DPO) into a new run (default:
    RUN-dpo); the run is the reference and the starting point, named in the new recipe file."""
    from dltoolkit.specs.generate_text import alignment_params

    doc = cfg.read_recipe_file(RunDir.open(run).recipe_file)
    if doc["task"] != "generate-text":
        raise ConfigError(f"{run} is a {doc['task']} run; align takes a generate-text run")
    train(
        spec("generate-text"),
        preferences,
        alignment_params(doc["params"], str(run)),
        set_,
        out=out or Path(f"{run}-dpo"),
        resume=resume,
        overwrite=overwrite,
        as_json=as_json,
        quiet=quiet,
    )
