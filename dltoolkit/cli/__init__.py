"""The command-line interface (entry point `main`)."""

from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def _native_stderr_silenced():
    """Send file descriptor 2 to /dev/null: TensorFlow's C++ start-up chatter (oneDNN,
    CUDA probes) is written there before any log level applies."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


def main(argv: list[str] | None = None) -> None:
    """Run the `dltoolkit` command."""
    with _native_stderr_silenced():
        import tensorflow as tf

        tf.config.list_physical_devices()
    from dltoolkit.cli.app import main as run

    run(argv)
