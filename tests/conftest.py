"""Shared fixtures: small real image data made on the fly, a CLI runner, one fit per recipe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from serving import ServingProcesses
from sklearn.datasets import load_digits

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FORMATS = [("png", "PNG"), ("jpg", "JPEG"), ("bmp", "BMP"), ("gif", "GIF")]


def write_digit_folder(root: Path, classes=(0, 1, 2), per_class=40, size=16) -> Path:
    """Real handwritten digits saved as image files, one subfolder per class.

    Formats and colour modes rotate (PNG/JPEG/BMP/GIF, grayscale/RGB/RGBA/palette) so every
    loader path is exercised.
    """
    digits = load_digits()
    modes = ["L", "RGB", "RGBA", "P"]
    for c in classes:
        folder = root / str(c)
        folder.mkdir(parents=True, exist_ok=True)
        images = digits.images[digits.target == c][:per_class]
        for i, img in enumerate(images):
            pixels = (img * (255 / 16)).astype(np.uint8)
            picture = Image.fromarray(pixels, "L").resize((size, size), Image.NEAREST)
            ext, fmt = FORMATS[i % len(FORMATS)]
            mode = modes[i % len(modes)]
            if fmt == "JPEG" and mode in ("RGBA", "P"):
                mode = "RGB"
            if fmt == "GIF":
                mode = "P"
            picture.convert(mode).save(folder / f"{c}_{i}.{ext}", format=fmt)
    return root


@pytest.fixture(scope="session")
def digit_folder(tmp_path_factory) -> Path:
    return write_digit_folder(tmp_path_factory.mktemp("digit_imgs"))


def dltoolkit_command() -> list[str]:
    """The installed `dltoolkit` entry point (or `python -m dltoolkit`)."""
    exe = Path(sys.executable).with_name("dltoolkit")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "dltoolkit"]


def run_cli(*args: str, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    """Run the installed `dltoolkit` entry point in a fresh process, as a user would."""
    return subprocess.run(
        [*dltoolkit_command(), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


class Fits:
    """Each registered recipe trained once per session on its contract case, on first use."""

    def __init__(self, tmp_path_factory):
        self.tmp_path_factory = tmp_path_factory
        self.fitted: dict[str, tuple] = {}

    def get(self, task: str) -> tuple:
        """(fitted recipe, its scratch folder); the run directory is `folder / "run"`."""
        from contract_cases import CASES, registered_recipes

        if task not in self.fitted:
            folder = self.tmp_path_factory.mktemp(task)
            case = CASES[task]
            recipe = registered_recipes()[task](**case.params)
            recipe.fit(case.data(folder), out=folder / "run", progress=False)
            self.fitted[task] = (recipe, folder)
        return self.fitted[task]


@pytest.fixture(scope="session")
def serving():
    """Fresh TensorFlow-only processes that call exports (see serving.py)."""
    processes = ServingProcesses()
    yield processes
    processes.close()


@pytest.fixture(scope="session")
def fits(tmp_path_factory) -> Fits:
    """The session's one fit per recipe, shared by its own tests and the contract."""
    return Fits(tmp_path_factory)


# The recipes' own test modules, by the task whose session fit (`fits`) they share.
RECIPE_TEST_MODULES = {
    "test_image_classifier": "classify",
    "test_forecaster": "forecast",
    "test_anomaly_detector": "detect-anomalies",
    "test_node_classifier": "classify-nodes",
    "test_agent": "train-agent",
    "test_image_generator": "generate",
    "test_summarizer": "summarize",
    "test_image_segmenter": "segment",
    "test_object_detector": "detect-objects",
    "test_speech_recognizer": "transcribe",
    "test_text_classifier": "classify-text",
    "test_text_generator": "generate-text",
}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the marks into group names
def pytest_collection_modifyitems(config, items):
    """With pytest-xdist's `--dist loadgroup` (pyproject's addopts), a recipe's own tests
    and its contract checks run in one worker, so its session fit is made once; any other
    module's tests run in one worker too, so its module-scoped fixtures are made once."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        task = callspec.params.get("task") if callspec else None
        module = item.module.__name__
        item.add_marker(pytest.mark.xdist_group(task or RECIPE_TEST_MODULES.get(module, module)))
