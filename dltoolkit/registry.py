"""The recipes: each one's spec (verb, class, parameters, CLI options), without TensorFlow.

A recipe is registered by adding its spec module to `SPEC_MODULES`; the CLI, the docs'
parameter tables and the contract test (tests/test_contract.py) all read this list.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from dltoolkit.core.errors import ConfigError

SPEC_MODULES = (
    "classify",
    "forecast",
    "detect_anomalies",
    "classify_nodes",
    "train_agent",
    "generate",
    "summarize",
    "segment",
    "detect_objects",
    "transcribe",
    "classify_text",
    "generate_text",
)


@dataclass(frozen=True)
class Option:
    """An option of `dltoolkit predict` or `evaluate` that only some recipes take."""

    name: str
    kind: type
    help: str
    multiple: bool = False


# The evaluate option of recipes whose annotation files name images kept elsewhere.
IMAGES = Option("images", str, "The image folder of a COCO JSON (or CSV) --data.")

# The predict option of every recipe whose inputs are separate records (core/records.py).
STRICT = Option(
    "strict", bool, "Stop at the first unreadable input (exit 2) instead of skipping it."
)


@dataclass(frozen=True)
class Objective:
    """What `dltoolkit tune` optimises: `metric`, a key of the metrics the recipe computes
    after training, here on the validation split; and per epoch, for pruning, the
    history.csv column `epoch_metric`, which moves the same way (`direction`)."""

    metric: str
    direction: str = "minimize"  # or "maximize"
    epoch_metric: str = "val_loss"


@dataclass(frozen=True)
class RecipeSpec:
    """What the CLI, the registry and the docs know of a recipe before TensorFlow loads."""

    task: str  # the CLI verb
    recipe: str  # "module:ClassName" of the Recipe subclass
    config: type  # the Config dataclass (fields declared with core.params.param)
    summary: str  # the verb's help
    default_data: str | None = ""  # built-in sample for the zero-argument run
    data_help: str = "Data: folder, CSV file, tfds:NAME or a built-in name (`dltoolkit datasets`)."
    data_flags: tuple[str, ...] = ("--data",)
    # Why training cannot be split between replicas (mirrored, multi-worker, tpu); "" if it can.
    single_replica_reason: str = ""
    predict_options: tuple[Option, ...] = field(default=())
    evaluate_options: tuple[Option, ...] = field(default=())
    # What `dltoolkit tune` optimises; None: the recipe cannot be tuned (yet).
    objective: Objective | None = None

    @property
    def class_name(self) -> str:
        return self.recipe.partition(":")[2]

    def recipe_class(self) -> type:
        """Import the recipe class (this loads TensorFlow)."""
        module, _, name = self.recipe.partition(":")
        return getattr(importlib.import_module(module), name)


def specs() -> dict[str, RecipeSpec]:
    """Every registered recipe's spec by task, in the order of `SPEC_MODULES`."""
    loaded = (importlib.import_module(f"dltoolkit.specs.{name}").SPEC for name in SPEC_MODULES)
    return {spec.task: spec for spec in loaded}


def spec(task: str) -> RecipeSpec:
    """The spec registered for `task`; a ConfigError lists the known tasks."""
    known = specs()
    if task not in known:
        raise ConfigError(f"unknown task '{task}'; known tasks: {', '.join(known)}")
    return known[task]


def recipe_class(task: str) -> type:
    """The recipe class registered for `task` (imports TensorFlow)."""
    return spec(task).recipe_class()
