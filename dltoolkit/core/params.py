"""One home per parameter: a Config field declares its help, range, choices and CLI exposure.

    epochs: int = param(10, "Training epochs.", ge=1, cli=True)

From these declarations come the CLI options and `--help`, recipe-file and `--set`
validation (`check`), a recipe class's `inspect.signature` and docstring, the
parameter tables in docs/parameters.md and the default search space of `dltoolkit tune`
(`tune=between(1e-4, 1e-2, log=True)` or `tune=among(...)`). A parameter whose default
depends on another's value declares `param(None, ..., per=per("model", {...}))`: left unset
it takes the default for that value (`resolved`). Nothing here imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from dataclasses import dataclass

from dltoolkit.core.errors import ConfigError

_META = "dltoolkit"


@dataclass(frozen=True)
class Space:
    """Where `dltoolkit tune` searches a parameter: a range (`low`..`high`, on a log scale
    with `log`, in steps of `step`) or a list of `choices`."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    def describe(self) -> str:
        """'1e-05..0.01 (log)' or 'dlinear, linear'."""
        if self.choices:
            return ", ".join(map(str, self.choices))
        scale = " (log)" if self.log else ""
        step = f" step {_number(self.step)}" if self.step else ""
        return f"{_number(self.low)}..{_number(self.high)}{step}{scale}"


def between(low: float, high: float, *, log: bool = False, step: float | None = None) -> Space:
    """A tunable range (int fields draw integers)."""
    return Space(low=low, high=high, log=log, step=step)


def among(*choices) -> Space:
    """A tunable list of values."""
    return Space(choices=tuple(choices))


@dataclass(frozen=True)
class PerChoice:
    """A default that depends on another parameter: `values` maps each value of the
    parameter named `on` (e.g. each model) to the default of a parameter left unset."""

    on: str
    values: dict

    def describe(self) -> str:
        """'default per model: gcn 16, gat 8'."""
        return f"default per {self.on}: " + ", ".join(
            f"{key} {_number(value)}" for key, value in self.values.items()
        )


def per(on: str, values: dict) -> PerChoice:
    """Defaults per value of parameter `on` (declare the field with default None)."""
    return PerChoice(on, dict(values))


@dataclass(frozen=True)
class Only:
    """A parameter that matters only while parameter `on` has one of `values` (a patch
    length only for the patch Transformer): `dltoolkit tune` draws it only then."""

    on: str
    values: tuple

    def holds(self, settings: dict) -> bool:
        return settings.get(self.on) in self.values

    def describe(self) -> str:
        """'when model is linear, dlinear or auto'."""
        names = [str(v) for v in self.values]
        listed = ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]
        return f"when {self.on} is {listed}"


def only(on: str, *values) -> Only:
    """Declares that a parameter matters only for these values of parameter `on`."""
    return Only(on, values)


@dataclass(frozen=True)
class Meta:
    """What a Config field declares besides its type and default."""

    help: str
    cli: bool = False
    flags: tuple[str, ...] = ()  # CLI spellings, e.g. ("--target", "--targets"); default from name
    choices: tuple[str, ...] = ()
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    tune: Space | None = None  # the default search space of `dltoolkit tune`
    per: PerChoice | None = None  # the default when unset, per value of another parameter
    only: Only | None = None  # tuned only for some values of another parameter


def param(
    default,
    help: str,
    *,
    cli: bool = False,
    flags: tuple[str, ...] = (),
    tune: Space | None = None,
    per: PerChoice | None = None,
    only: Only | None = None,
    **limits,
):
    """A dataclass field with its help text, limits (`choices`, `ge`, `gt`, `le`, `lt`),
    whether the recipe's CLI verb has an option for it (`cli`), where `dltoolkit tune`
    searches it (`tune`, and `only` for some values of another parameter) and its defaults
    per value of another parameter (`per`, with default None; the help then lists them)."""
    if per is not None:
        help = f"{help} ({per.describe()})"
    return dataclasses.field(
        default=default,
        metadata={
            _META: Meta(help=help, cli=cli, flags=flags, tune=tune, per=per, only=only, **limits)
        },
    )


def resolved(config):
    """`config` with every unset (None) parameter that declares `per` defaults set to the
    default for the value of the parameter it depends on: the settings a recipe trains with."""
    changes = {
        f.name: f.meta.per.values[getattr(config, f.meta.per.on)]
        for f in fields(type(config))
        if f.meta.per is not None and getattr(config, f.name) is None
    }
    return dataclasses.replace(config, **changes) if changes else config


def tunable(base: type, name: str, space: Space, **changes):
    """A subclass's redeclaration of `base`'s field `name` that only adds a search space
    (and any `changes`: `default`, `help`, ...), so the declaration is not copied."""
    return inherited(base, name, tune=space, **changes)


def inherited(base: type, name: str, **changes):
    """A subclass's redeclaration of `base`'s field `name` with `changes` (`default`, `help`,
    ...) and the rest of its declaration as it is."""
    field = next(f for f in dataclasses.fields(base) if f.name == name)
    default = changes.pop("default", field.default)
    meta = dataclasses.replace(field.metadata[_META], **changes)
    return dataclasses.field(default=default, metadata={_META: meta})


def search_space(config_cls: type) -> dict[str, Space]:
    """The tunable parameters of a Config dataclass and their declared spaces."""
    return {f.name: f.meta.tune for f in fields(config_cls) if f.meta.tune is not None}


@dataclass(frozen=True)
class Field:
    """A declared parameter as the CLI, the docs and the checks see it."""

    name: str
    hint: object  # the annotation, e.g. int | None
    default: object
    meta: Meta

    @property
    def kind(self) -> type:
        """The value type without None (int for `int | None`)."""
        args = [a for a in typing.get_args(self.hint) if a is not type(None)]
        return args[0] if args else self.hint

    @property
    def optional(self) -> bool:
        return type(None) in typing.get_args(self.hint)

    def limits(self) -> str:
        """The range or choices in words: '>= 1', 'one of: a, b', ''."""
        m = self.meta
        if m.choices:
            return "one of: " + ", ".join(m.choices)
        parts = [
            f"{op} {_number(bound)}"
            for op, bound in ((">=", m.ge), (">", m.gt), ("<=", m.le), ("<", m.lt))
            if bound is not None
        ]
        return ", ".join(parts)


def fields(config_cls: type) -> list[Field]:
    """The declared parameters of a Config dataclass, in declaration order."""
    hints = typing.get_type_hints(config_cls)
    out = []
    for f in dataclasses.fields(config_cls):
        meta = f.metadata.get(_META)
        if meta is None:
            raise TypeError(f"{config_cls.__name__}.{f.name} is not declared with param()")
        out.append(Field(f.name, hints[f.name], f.default, meta))
    return out


def check(field: Field, value) -> None:
    """Raise a one-line ConfigError when `value` is outside the field's choices or range."""
    if value is None:
        return
    m = field.meta
    if m.choices and value not in m.choices:
        raise ConfigError(
            f"parameter '{field.name}' is '{value}'; choose one of: {', '.join(m.choices)}"
        )
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    inside = (
        (m.ge is None or value >= m.ge)
        and (m.gt is None or value > m.gt)
        and (m.le is None or value <= m.le)
        and (m.lt is None or value < m.lt)
    )
    if not inside:
        raise ConfigError(
            f"parameter '{field.name}' is {value!r}; it must be {field.limits()} "
            f"(e.g. --set {field.name}={_number(field.default) if field.default is not None else '...'})"
        )


def signature(config_cls: type) -> inspect.Signature:
    """The keyword-only constructor signature a recipe class shows to `help()` and IDEs."""
    return inspect.Signature(
        [
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.hint
            )
            for f in fields(config_cls)
        ]
    )


def docstring(config_cls: type) -> str:
    """A 'Parameters' section for a recipe class's docstring."""
    lines = ["Parameters", "----------"]
    for f in fields(config_cls):
        limits = f"; {f.limits()}" if f.limits() else ""
        lines.append(f"{f.name} : {_type_name(f.hint)}, default {f.default!r}{limits}")
        lines.append(f"    {f.meta.help}")
    return "\n".join(lines)


def markdown_table(config_cls: type) -> str:
    """The parameter table of docs/parameters.md for one recipe (with a 'tuned over' column
    when the recipe declares a search space)."""
    tuned = bool(search_space(config_cls))
    head = ["parameter", "CLI", "type", "default", "allowed"] + ["tuned over"] * tuned + ["meaning"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for f in fields(config_cls):
        flag = " ".join(f"`{s}`" for s in cli_flags(f)) if f.meta.cli else ""
        space = [_tuned_over(f.meta)] * tuned
        cells = [f"`{f.name}`", flag, _type_name(f.hint), f"`{f.default!r}`", f.limits()]
        cells += space + [f.meta.help]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


def _tuned_over(meta: Meta) -> str:
    """'8, 16 (when model is patch-transformer)', or '' for a parameter not tuned."""
    if meta.tune is None:
        return ""
    return meta.tune.describe() + (f" ({meta.only.describe()})" if meta.only else "")


def cli_flags(field: Field) -> tuple[str, ...]:
    """The option names of a CLI-exposed field (`--image-size`; booleans `--flip/--no-flip`)."""
    if field.meta.flags:
        return field.meta.flags
    name = "--" + field.name.replace("_", "-")
    if field.kind is bool:
        return (f"{name}/--no-{name[2:]}",)
    return (name,)


def _type_name(hint) -> str:
    return " | ".join(
        "None" if a is type(None) else a.__name__ for a in (typing.get_args(hint) or (hint,))
    )


def _number(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
