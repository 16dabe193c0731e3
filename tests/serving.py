"""Call exported SavedModels in fresh Python processes that import TensorFlow only.

One long-lived process per set of imports (TensorFlow alone; TensorFlow plus
`tensorflow_text` for text models) serves every request, so the suite pays the TensorFlow
import once per set rather than once per export. Each request loads the export, calls one
signature with the given feeds and checks that `dltoolkit` was never imported.
"""

from __future__ import annotations

import pickle
import select
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SERVER = """
import pickle, sys, traceback
import tensorflow as tf
for name in sys.argv[1:]:
    __import__(name)
for line in sys.stdin:
    export, signature, feeds_file, out_file = line.rstrip("\\n").split("\\t")
    try:
        with open(feeds_file, "rb") as f:
            feeds = pickle.load(f)
        model = tf.saved_model.load(export)
        out = model.signatures[signature](**{k: tf.constant(v) for k, v in feeds.items()})
        for name in ("dltoolkit", "keras_hub"):
            assert name not in sys.modules, f"serving the export imported {name}"
        result = {k: v.numpy() for k, v in out.items()}
        result["__signatures__"] = sorted(model.signatures)
    except Exception:
        result = {"__error__": traceback.format_exc()}
    with open(out_file, "wb") as f:
        pickle.dump(result, f)
    print(out_file, flush=True)
"""


class ServingProcess:
    """A fresh `python -c` process that imports tensorflow plus `imports`, then answers calls."""

    def __init__(self, imports: tuple[str, ...] = ()):
        self.imports = imports
        self.folder = Path(tempfile.mkdtemp(prefix="serving-"))
        self.log = (self.folder / "stderr.txt").open("w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, *imports],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        self.calls = 0

    def call(self, export: Path, feeds: dict, signature="serving_default", timeout=300) -> dict:
        """The outputs (numpy arrays by name) of `signature` called on `feeds`; also the
        export's signature names under '__signatures__'."""
        self.calls += 1
        feeds_file = self.folder / f"feeds{self.calls}.pkl"
        out_file = self.folder / f"out{self.calls}.pkl"
        feeds_file.write_bytes(pickle.dumps(feeds))
        self.proc.stdin.write(f"{export}\t{signature}\t{feeds_file}\t{out_file}\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if line.strip() != str(out_file):
            self.log.seek(0)
            raise AssertionError(f"the serving process gave no answer:\n{self.log.read()[-3000:]}")
        result = pickle.loads(out_file.read_bytes())
        assert "__error__" not in result, result.get("__error__")
        return result

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class ServingProcesses:
    """One ServingProcess per set of imports, started on first request."""

    def __init__(self):
        self.processes: dict[tuple[str, ...], ServingProcess] = {}

    def start(self, imports: tuple[str, ...] = ()) -> ServingProcess:
        """The process for `imports`; started now (TensorFlow imports while the caller works)."""
        if imports not in self.processes:
            self.processes[imports] = ServingProcess(imports)
        return self.processes[imports]

    def close(self) -> None:
        for process in self.processes.values():
            process.close()


def plain(value) -> np.ndarray:
    """An output as comparable numbers or text: byte strings decoded to str."""
    array = np.asarray(value)
    if array.dtype == object or array.dtype.kind == "S":
        items = [v.decode("utf-8") if isinstance(v, bytes) else v for v in array.ravel()]
        return np.array(items, dtype=object).reshape(array.shape)
    return array
