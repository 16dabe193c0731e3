"""The `dltoolkit` command: one verb per recipe plus the generic verbs that use a run."""

from __future__ import annotations

import sys

import click
import typer
from rich.markup import escape

from dltoolkit import __version__
from dltoolkit.cli import info, runs, tune
from dltoolkit.cli.common import stderr
from dltoolkit.cli.train import train_command
from dltoolkit.core.errors import DLToolkitError
from dltoolkit.registry import specs

app = typer.Typer(
    name="dltoolkit",
    help="Train, evaluate and export deep-learning recipes (Keras 3).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
for spec in specs().values():
    app.command(name=spec.task)(train_command(spec))
for name, command in {
    "predict": runs.predict,
    "evaluate": runs.evaluate,
    "export": runs.export,
    "report": runs.report,
    "run": runs.run,
    "align": runs.align,
}.items():
    app.command(name=name)(command)
app.command(
    name="tune", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)(tune.tune)
app.command()(info.devices)
app.command()(info.datasets)


def _version(value: bool) -> None:
    if value:
        print(f"dltoolkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Train, evaluate and export deep-learning recipes (Keras 3)."""


try:  # typer 0.29+ raises its own copy of click's exceptions
    from typer._click.exceptions import ClickException as _VendoredClickException
except ImportError:  # older typer: click's own
    _VendoredClickException = click.ClickException
_USAGE_ERRORS = (click.ClickException, _VendoredClickException)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one red line and exit 2; bugs keep their traceback."""
    try:
        code = app(args=argv, standalone_mode=False)
    except DLToolkitError as err:
        stderr.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except _USAGE_ERRORS as err:
        err.show()
        sys.exit(err.exit_code)
    except (click.exceptions.Abort, typer.Abort, KeyboardInterrupt):
        stderr.print(
            "[red]interrupted[/]; continue later with --resume (tune: the same command again)"
        )
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
