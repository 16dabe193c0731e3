"""The search space of `dltoolkit tune`: declared with the parameters (`param(tune=...)`),
or a user's TOML space file instead; `--set` fixes parameters. No TensorFlow, no Optuna.

A space file names the parameters to search (and any to fix) at its top level:

    learning_rate = { low = 1e-4, high = 3e-3, log = true }   # a range (ints draw integers)
    model = ["dlinear", "patch-transformer"]                   # choices
    dropout = 0.1                                              # fixed
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from dltoolkit.core.errors import ConfigError
from dltoolkit.core.params import Field, Space, check, fields, search_space

_RANGE_KEYS = {"low", "high", "log", "step"}


def resolve(config_cls: type, space=None, fixed=()) -> tuple[dict[str, Space], dict]:
    """The space to search and the values a space file fixes: the declared space, or the
    space file's (its ranges and choices replace the declared space; its plain values fix
    parameters), less the parameters in `fixed`. `space` is a file or its parsed table."""
    declared = {f.name: f for f in fields(config_cls)}
    if space is None:
        space, pinned = search_space(config_cls), {}
    elif isinstance(space, dict):
        space, pinned = space_entries(space, declared, "the space")
    else:
        space, pinned = space_entries(read_space_file(space), declared, f"space file '{space}'")
    for name in [*pinned, *fixed]:
        space.pop(name, None)
    for name, entry in space.items():
        _check(declared[name], entry)
    if not space:
        raise ConfigError(
            "nothing to tune: every tunable parameter is fixed; give a --space file with ranges"
        )
    return space, pinned


def read_space_file(path) -> dict:
    """A space file's table; one-line ConfigErrors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"space file '{path}' does not exist")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"space file '{path}' is not valid TOML: {err}") from None


def space_entries(doc: dict, declared: dict[str, Field], origin: str) -> tuple[dict, dict]:
    """A space table's ranges and choices, and the values it fixes."""
    entries, pinned = {}, {}
    for name, value in doc.items():
        if name not in declared:
            raise ConfigError(f"{origin}: unknown parameter '{name}'")
        if isinstance(value, dict):
            if set(value) - _RANGE_KEYS or not {"low", "high"} <= set(value):
                raise ConfigError(
                    f"{origin}: {name} needs low and high (and optionally log, "
                    "step), e.g. {{ low = 1e-4, high = 1e-2, log = true }}"
                )
            entries[name] = Space(
                low=value["low"],
                high=value["high"],
                log=bool(value.get("log", False)),
                step=value.get("step"),
            )
        elif isinstance(value, list):
            if not value:
                raise ConfigError(f"{origin}: {name} lists no choices")
            entries[name] = Space(choices=tuple(value))
        else:
            pinned[name] = value
    if not entries:
        raise ConfigError(f"{origin} gives no range or list of choices to search")
    return entries, pinned


def _check(field: Field, space: Space) -> None:
    """Every value the space can give must be a legal value of the parameter."""
    values = space.choices or (space.low, space.high)
    for value in values:
        try:
            check(field, value)
        except ConfigError as err:
            raise ConfigError(f"search space of '{field.name}': {err}") from None
    if not space.choices:
        if field.kind not in (int, float) or isinstance(space.low, bool):
            raise ConfigError(
                f"search space of '{field.name}': a {field.kind.__name__} parameter takes a "
                "list of choices, not a range"
            )
        if space.low >= space.high or (space.log and space.low <= 0):
            raise ConfigError(
                f"search space of '{field.name}': needs low < high (and low > 0 on a log scale)"
            )


def suggest(trial, space: dict[str, Space], config_cls: type, fixed: dict) -> dict:
    """The values an Optuna trial draws from `space`. A parameter declared `only` for some
    values of another (drawn, or fixed in `fixed`, or its default) is drawn only then."""
    declared = {f.name: f for f in fields(config_cls)}
    settings = {name: f.default for name, f in declared.items()} | fixed
    values = {}
    # Unconditional parameters first, so the ones conditions read are drawn by then.
    for name in sorted(space, key=lambda n: declared[n].meta.only is not None):
        only = declared[name].meta.only
        if only is None or only.holds(settings | values):
            values[name] = _draw(trial, name, space[name], declared[name].kind)
    return values


def _draw(trial, name: str, entry: Space, kind: type):
    if entry.choices:
        return trial.suggest_categorical(name, list(entry.choices))
    if kind is int:
        step = int(entry.step or 1)
        return trial.suggest_int(name, int(entry.low), int(entry.high), step=step, log=entry.log)
    return trial.suggest_float(
        name, float(entry.low), float(entry.high), log=entry.log, step=entry.step
    )


def starting_point(space: dict[str, Space], params: dict, config_cls: type) -> dict:
    """The values of `params` that lie inside `space` and apply (see `suggest`): the
    study's first trial tries them."""
    declared = {f.name: f for f in fields(config_cls)}
    inside = {}
    for name, entry in space.items():
        value, only = params.get(name), declared[name].meta.only
        if only is not None and not only.holds(params):
            continue
        if entry.choices:
            if value in entry.choices:
                inside[name] = value
        elif isinstance(value, int | float) and entry.low <= value <= entry.high:
            inside[name] = value
    return inside
