"""`python -m dltoolkit` runs the CLI."""

from dltoolkit.cli import main

main()
