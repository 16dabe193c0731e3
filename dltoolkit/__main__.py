"""`python -m dltoolkit` runs the CLI."""

from dltoolkit.cli.app import main

main()
