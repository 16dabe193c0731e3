"""The command-line interface (entry point `main`)."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> None:
    """Run the `dltoolkit` command (TensorFlow loads only when a command needs it)."""
    from dltoolkit.cli.app import main as run

    run(argv)
