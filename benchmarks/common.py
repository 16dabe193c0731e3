"""Shared helpers of the benchmarks: MNIST IDX reading, timing, recipe phase timing, tables.

Import this module before TensorFlow: it sets TF_CPP_MIN_LOG_LEVEL and puts the
repository root on sys.path, so the scripts run from a checkout without installing.
"""

from __future__ import annotations

import gzip
import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def load_mnist(folder, split: str) -> tuple[np.ndarray, np.ndarray]:
    """MNIST `split` ("train" or "test") from the original IDX gz files: uint8 (N, 28, 28), labels (N,)."""
    images_file, labels_file = (Path(folder) / name for name in _MNIST_FILES[split])
    with gzip.open(images_file) as fh:
        raw = fh.read()
    magic, n, h, w = np.frombuffer(raw, ">u4", count=4)
    if magic != 2051:
        raise ValueError(f"{images_file} is not an IDX3 image file (magic {magic})")
    x = np.frombuffer(raw, np.uint8, offset=16).reshape(n, h, w)
    with gzip.open(labels_file) as fh:
        raw = fh.read()
    if np.frombuffer(raw, ">u4", count=1)[0] != 2049:
        raise ValueError(f"{labels_file} is not an IDX1 label file")
    y = np.frombuffer(raw, np.uint8, offset=8).astype(np.int64)
    if len(y) != len(x):
        raise ValueError(f"{len(x)} images but {len(y)} labels in {folder}")
    return x, y


@contextmanager
def timer(times: dict, key: str):
    """Add the wall time of the `with` block to `times[key]` and its CPU time (all threads of
    this process) to `times[key + "_cpu"]`, in seconds. CPU time is less disturbed than wall
    time when other processes share the machine."""
    start, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        times[key] = times.get(key, 0.0) + time.perf_counter() - start
        times[f"{key}_cpu"] = times.get(f"{key}_cpu", 0.0) + time.process_time() - cpu


def timed_fit(clf, data, out) -> dict:
    """`clf.fit(data, out=out, progress=False)`, timed as a whole and per recipe step.

    Returns seconds: `fit` (all of it), `prepare` (reading/splitting data), `train`
    (`_learn`: datasets, model, the fit loop with its callbacks), `evaluate` (held-out
    metrics), `save` (model.keras, state.json) and `other` (the rest: run directory,
    recipe.toml, metrics.json, report.html and plots). The steps are timed by wrapping
    the instance's methods; the recipe itself is not changed.
    """
    times: dict = {}
    for step, method in (
        ("prepare", "_prepare"),
        ("train", "_learn"),
        ("evaluate", "_evaluate_prepared"),
        ("save", "save"),
    ):
        original = getattr(clf, method)

        def wrapped(*args, _original=original, _step=step, **kwargs):
            with timer(times, _step):
                return _original(*args, **kwargs)

        setattr(clf, method, wrapped)
    with timer(times, "fit"):
        clf.fit(data, out=str(out), progress=False)
    for method in ("_prepare", "_learn", "_evaluate_prepared", "save"):
        delattr(clf, method)  # back to the class's methods
    for suffix in ("", "_cpu"):
        times[f"other{suffix}"] = times[f"fit{suffix}"] - sum(
            times.get(k + suffix, 0.0) for k in ("prepare", "train", "evaluate", "save")
        )
    return times


def median(values) -> float:
    return statistics.median(values)


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A Markdown table of `rows` (dicts); floats printed with 4 significant digits."""
    columns = columns or list(rows[0])

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def print_table(title: str, rows: list[dict], columns: list[str] | None = None) -> None:
    print(f"\n### {title}\n\n{markdown_table(rows, columns)}\n", flush=True)


def machine() -> str:
    """One line: CPU model, cores, memory, load average, TensorFlow/Keras versions, GPUs seen."""
    import keras
    import tensorflow as tf

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        mem = f"{pages / 1024**3:.0f} GiB"
    except (ValueError, OSError):
        mem = "? GiB"
    gpus = len(tf.config.list_physical_devices("GPU"))
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem}, {gpus} GPU, {load_average()}; "
        f"Python {platform.python_version()}, TF {tf.__version__}, Keras {keras.__version__}; "
        f"{revision()}"
    )


def revision() -> str:
    """The repository's commit, and whether the working tree had changes (what was measured)."""
    import subprocess

    def git(*args):
        return subprocess.run(
            ["git", *args], cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True
        ).stdout.strip()

    dirty = git("status", "--porcelain", "--", "dltoolkit")
    return f"dltoolkit at commit {git('rev-parse', '--short', 'HEAD') or '?'}" + (
        " + uncommitted changes in dltoolkit/" if dirty else ""
    )


def load_average() -> str:
    """The 1-minute load average: above the core count, other processes share the CPU."""
    return f"load average {os.getloadavg()[0]:.2f}"


def mnist_arg(parser) -> None:
    parser.add_argument(
        "--mnist",
        required=True,
        help="folder with the MNIST IDX gz files (train-images-idx3-ubyte.gz, ...)",
    )
