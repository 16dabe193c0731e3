"""Recipe configuration: typed parameter sets and the TOML recipe file.

A recipe file holds the task, the data and the recipe's parameters:

    task = "classify"
    data = "digits"

    [params]
    epochs = 10
    backbone = "small-cnn"

Keys left out take their defaults; `None` values are left out when writing.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import types
import typing
from pathlib import Path

import tomli_w

from dltoolkit.core import files
from dltoolkit.core.errors import ConfigError
from dltoolkit.core.params import check, fields, param

HEADER = "# dltoolkit recipe: `dltoolkit run {path}` repeats this run.\n"


OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "constant", "inverse-sqrt")
STRATEGIES = ("auto", "cpu", "gpu", "mirrored", "multi-worker", "tpu")


@dataclasses.dataclass
class RuntimeConfig:
    """Where and how reproducibly a recipe trains: every recipe's Config has these."""

    mixed_precision: bool = param(False, "float16 on GPU, bfloat16 on TPU/CPU.", cli=True)
    strategy: str = param(
        "auto", "Where training runs (README, 'Scaling out').", choices=STRATEGIES, cli=True
    )
    tpu: str | None = param(None, "TPU name or address for --strategy tpu.", cli=True)
    seed: int = param(0, "Random seed.", cli=True)


@dataclasses.dataclass
class TrainConfig(RuntimeConfig):
    """Training practice shared by every recipe trained with `model.fit`."""

    epochs: int = param(10, "Training epochs.", ge=1, cli=True)
    batch_size: int = param(64, "Global batch size (split across replicas).", ge=1, cli=True)
    optimizer: str = param(
        "adamw", "Optimizer (AdamW, or SGD with Nesterov momentum).", choices=OPTIMIZERS
    )
    learning_rate: float = param(
        1e-3, "Peak learning rate (warmup then the schedule).", gt=0, cli=True
    )
    weight_decay: float = param(1e-2, "AdamW's decoupled weight decay.", ge=0)
    momentum: float = param(0.9, "SGD momentum.", ge=0, lt=1)
    schedule: str = param("cosine", "Learning-rate schedule after the warmup.", choices=SCHEDULES)
    warmup_epochs: float = param(0.5, "Linear warmup, in epochs.", ge=0)
    clipnorm: float = param(1.0, "Clip each gradient to this norm (0: off).", ge=0)
    grad_accum_steps: int = param(
        1, "Accumulate gradients over this many batches (1: no accumulation).", ge=1
    )
    early_stopping_patience: int = param(
        5, "Stop after this many epochs without a better validation loss (0: never).", ge=0
    )
    ema_momentum: float = param(
        0.0, "> 0: validate, keep and export a moving average of the weights.", ge=0, lt=1
    )
    checkpoint_seconds: float = param(
        0.0,
        "Write the resume checkpoint and the best weights at an epoch's end once this many "
        "seconds have passed since the last write (0: every epoch).",
        ge=0,
    )


def make_config(config_cls: type, params: dict) -> object:
    """Build a config dataclass from `params`, rejecting unknown keys, wrong types and values
    outside a field's declared range or choices."""
    declared = {f.name: f for f in fields(config_cls)}
    unknown = sorted(set(params) - set(declared))
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, declared, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(
            f"unknown parameter '{key}'{hint}; valid parameters: {', '.join(sorted(declared))}"
        )
    values = {key: _coerce(key, value, declared[key].hint) for key, value in params.items()}
    for key, value in values.items():
        check(declared[key], value)
    return config_cls(**values)


def _coerce(key: str, value, hint):
    """Check `value` against the field's type, widening int to float."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    for kind in allowed:
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if kind is int and isinstance(value, bool):
            continue
        if isinstance(kind, type) and isinstance(value, kind):
            return value
    names = " or ".join("none" if k is type(None) else k.__name__ for k in allowed)
    raise ConfigError(f"parameter '{key}' must be {names}, got {value!r}")


def to_params(config) -> dict:
    """The parameters of a config dataclass as a plain dict."""
    return dataclasses.asdict(config)


def write_recipe_file(path: str | Path, task: str, data, params: dict) -> None:
    """Write a recipe file atomically (None values are left out: they mean 'default')."""
    doc: dict = {"task": task}
    if isinstance(data, str):
        doc["data"] = data
    doc["params"] = {k: v for k, v in params.items() if v is not None}
    files.write_text(path, HEADER.format(path=path) + tomli_w.dumps(doc))


def read_recipe_file(path: str | Path) -> dict:
    """Read a recipe file into {'task', 'data', 'params'}; errors are one-line ConfigErrors."""
    path = Path(path)
    if path.is_dir():
        path = path / "recipe.toml"
    if not path.is_file():
        raise ConfigError(
            f"recipe file '{path}' does not exist; pass a .toml recipe file or a run directory"
        )
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"recipe file '{path}' is not valid TOML: {err}") from None
    if "task" not in doc:
        raise ConfigError(f"recipe file '{path}' has no 'task' key; add e.g. task = \"classify\"")
    unknown = sorted(set(doc) - {"task", "data", "params"})
    if unknown:
        raise ConfigError(
            f"recipe file '{path}' has unknown top-level key '{unknown[0]}'; "
            "valid keys: task, data, params (recipe parameters go under [params])"
        )
    return {"task": doc["task"], "data": doc.get("data"), "params": dict(doc.get("params", {}))}


def apply_overrides(recipe: dict, overrides: list[str]) -> dict:
    """Apply `key=value` overrides (values parsed as TOML, else taken as strings)."""
    recipe = {**recipe, "params": dict(recipe["params"])}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set '{item}' is not key=value; write e.g. --set epochs=3")
        value = parse_value(raw.strip())
        if key in ("data", "task"):
            recipe[key] = value
        else:
            recipe["params"][key.removeprefix("params.")] = value
    return recipe


def parse_value(raw: str):
    """Parse a TOML literal ('3', '0.1', 'true', '"x"'); anything else is a string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise a ConfigError naming the valid choices when `value` is not one of them."""
    if value not in choices:
        raise ConfigError(f"unknown {name} '{value}'; choose one of: {', '.join(choices)}")


def check_preset_choice(model: str, preset: str | None) -> None:
    """`--model pretrained` needs a preset, and a from-scratch `--model` takes none."""
    if model == "pretrained" and not preset:
        raise ConfigError("--model pretrained needs --preset NAME or a local preset directory")
    if preset and model not in ("auto", "pretrained"):
        raise ConfigError(f"--preset fine-tunes a pretrained model; leave out --model {model}")
