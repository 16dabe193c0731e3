"""The training verbs (`dltoolkit classify`, `forecast`, ...), made from the recipes' specs.

Each verb's options come from the Config fields its spec marks `cli=True` (help, type and
flags declared once, in `dltoolkit/specs/`); the command parses them and calls `Recipe.run`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated

import typer

from dltoolkit.cli import common as c
from dltoolkit.core.params import Field, cli_flags, fields
from dltoolkit.registry import RecipeSpec

_REPLICATED_HELP = (
    "auto|cpu|gpu|mirrored|multi-worker|tpu; multi-worker: run the same command on every "
    "worker, each with its TF_CONFIG (README, 'Scaling out')."
)
# The options every training command has after its own: (annotation, default).
_CONTROL_OPTIONS = {
    "set_": (c.Set, None),
    "out": (c.Out, None),
    "resume": (c.Resume, False),
    "overwrite": (c.Overwrite, False),
    "as_json": (c.Json, False),
    "quiet": (c.Quiet, False),
}


def train_command(spec: RecipeSpec) -> Callable:
    """The Typer command for `spec`'s verb: --data, the recipe's own options, the shared ones."""
    own = [f for f in fields(spec.config) if f.meta.cli]
    parameters = []
    if spec.data_flags:  # an agent has none: it trains in its environment
        data = Annotated[str | None, typer.Option(*spec.data_flags, help=spec.data_help)]
        parameters.append(_keyword("data", data, None))
    parameters += [_keyword(f.name, _annotation(f, spec), None) for f in own]
    parameters += [
        _keyword(name, hint, default) for name, (hint, default) in _CONTROL_OPTIONS.items()
    ]

    def command(**options) -> None:
        control = {name: options.pop(name) for name in _CONTROL_OPTIONS}
        data = options.pop("data", None)
        train(spec, data, c.given(**options), control.pop("set_"), **control)

    command.__name__ = spec.task.replace("-", "_")
    command.__doc__ = spec.summary
    command.__signature__ = inspect.Signature(parameters)
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    return command


def train(
    spec: RecipeSpec, data, params: dict, overrides, *, out, resume, overwrite, as_json, quiet
) -> None:
    """Run the recipe (fit, report, export) and print its summary."""
    c.tensorflow_ready()
    from dltoolkit.core.metrics import headline

    summary = spec.recipe_class().run(
        data,
        out,
        params=params,
        overrides=overrides,
        resume=resume,
        overwrite=overwrite,
        progress=not (quiet or as_json),
    )
    if as_json:
        c.print_json(summary)
        return
    c.print_table(f"{spec.class_name} — test metrics", headline(summary["metrics"]))
    c.print_table("Run", {k: v for k, v in summary.items() if k != "metrics"})


def _annotation(field: Field, spec: RecipeSpec):
    """`Annotated[type | None, typer.Option(...)]` for one CLI-exposed field."""
    help_text = field.meta.help
    if field.name == "strategy":
        help_text = _REPLICATED_HELP
        if spec.single_replica_reason:
            help_text = (
                f"auto|cpu|gpu (not mirrored, multi-worker or tpu: {spec.single_replica_reason})."
            )
    details = [f"default: {field.default}"] if field.default is not None else []
    if field.limits() and not field.meta.choices:
        details.append(field.limits())
    if details:
        help_text = f"{help_text} ({'; '.join(details)})"
    return Annotated[field.kind | None, typer.Option(*cli_flags(field), help=help_text)]


def _keyword(name: str, hint, default) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=hint)
