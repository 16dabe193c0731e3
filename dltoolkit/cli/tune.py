"""`dltoolkit tune VERB|RECIPE_FILE`: search a recipe's parameters (core/tuning.py).

The recipe verb's own options (`--horizon 96`, `--time-col date`, ...) follow the target
and fix those parameters; they are parsed by the verb's own command, so they are spelled
and checked as `dltoolkit VERB` spells and checks them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dltoolkit.cli import common as c
from dltoolkit.cli.train import train_command
from dltoolkit.core import config as cfg
from dltoolkit.core.errors import ConfigError
from dltoolkit.core.params import fields
from dltoolkit.registry import specs


def tune(
    ctx: typer.Context,
    target: Annotated[
        str, typer.Argument(help="A recipe verb (forecast, classify, ...) or a recipe file.")
    ],
    data: c.Data = None,
    space: Annotated[
        Path | None, typer.Option(help="TOML search space instead of the recipe's declared one.")
    ] = None,
    set_: c.Set = None,
    trials: Annotated[int, typer.Option(help="Trials of the study, all workers together.")] = 20,
    budget: Annotated[
        str | None, typer.Option(help="Wall time of this tuner, e.g. 30m, 2h, 900s.")
    ] = None,
    timeout_per_trial: Annotated[
        str | None, typer.Option(help="A trial running longer fails, e.g. 10m.")
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(help="Study database URL (default: sqlite in the study directory)."),
    ] = None,
    study: Annotated[
        str | None, typer.Option(help="Study name (default tune-<verb>); same name: resume.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Study directory (default runs/<study>).")
    ] = None,
    n_jobs: Annotated[int, typer.Option(help="Worker processes on this machine.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the sampler.")] = 0,
    keep: Annotated[int, typer.Option(help="Trial runs kept whole (the best ones).")] = 3,
    retrain: Annotated[
        bool,
        typer.Option(help="Retrain and test the best at the end (--no-retrain: only add trials)."),
    ] = True,
    as_json: c.Json = False,
    quiet: c.Quiet = False,
) -> None:
    """Tune a recipe on validation data (Optuna), then retrain the best and test it once.
    The verb's own options may follow (e.g. --horizon 96); they fix those parameters."""
    task = target if target in specs() else cfg.read_recipe_file(target)["task"]
    params = verb_options(task, ctx.args)
    c.tensorflow_ready()
    from dltoolkit.core.tuning import tune as run_study

    summary = run_study(
        target,
        data,
        params=params,
        overrides=set_ or [],
        space=space,
        trials=trials,
        budget=budget,
        storage=storage,
        study=study,
        out=out,
        n_jobs=n_jobs,
        timeout_per_trial=timeout_per_trial,
        seed=seed,
        keep=keep,
        retrain=retrain,
        progress=not (quiet or as_json),
    )
    if as_json:
        c.print_json(summary)
        return
    print_study(summary)


def verb_options(task: str, args: list[str]) -> dict:
    """The recipe parameters given as the verb's own options after the target."""
    spec = specs()[task]
    command = typer.main.get_command(_single(train_command(spec)))
    try:
        context = command.make_context(f"tune {task}", list(args), resilient_parsing=False)
    except Exception as err:  # click's usage errors: an option the verb does not have
        raise ConfigError(f"{task}: {getattr(err, 'message', err)}") from None
    declared = {f.name for f in fields(spec.config)}
    return {k: v for k, v in context.params.items() if k in declared and v is not None}


def _single(command) -> typer.Typer:
    app = typer.Typer(add_completion=False)
    app.command()(command)
    return app


def print_study(summary: dict) -> None:
    """The study's counts, the best trial and the test metrics of its retrained run."""
    from dltoolkit.core.study_report import summary_tables

    for heading, rows in summary_tables(summary):
        c.print_table(heading, rows)
    for key in ("best_run", "best_recipe", "report"):
        if summary.get(key):
            c.stdout.print(f"{key.replace('_', ' ')}: {summary[key]}")
