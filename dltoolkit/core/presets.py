"""KerasHub presets named on the command line: a known preset name, a remote handle
(kaggle://, hf://, ...) or a local directory made with `save_to_preset`. Checks that fail
in one line before anything is loaded, and loading that tells the offline user what to do."""

from __future__ import annotations

from pathlib import Path

from dltoolkit.core.errors import ConfigError, WeightsError

REMOTE_PREFIXES = ("kaggle://", "hf://", "gs://", "modelscope://")


def is_local(preset: str) -> bool:
    """Whether `preset` names a local directory (an existing path, or one that looks like it)."""
    return not preset.startswith(REMOTE_PREFIXES) and (
        Path(preset).expanduser().exists() or "/" in preset or preset.startswith(".")
    )


def check_preset(preset: str, task_class, example_name: str) -> None:
    """A ConfigError unless `preset` is a name in `task_class.presets`, a remote handle or a
    directory holding a config.json; `example_name` is the name the message suggests."""
    if is_local(preset):
        if not (Path(preset).expanduser() / "config.json").is_file():
            raise ConfigError(
                f"--preset '{preset}' is not a KerasHub preset directory (no config.json); "
                "save one with model.save_to_preset(dir) or pass a preset name "
                f"such as {example_name}"
            )
    elif not preset.startswith(REMOTE_PREFIXES) and preset not in task_class.presets:
        raise ConfigError(
            f"unknown preset '{preset}'; pass a local preset directory or one of: "
            f"{', '.join(sorted(task_class.presets))}"
        )


def load_preset(task_class, preset: str, **kwargs):
    """`task_class.from_preset(preset, **kwargs)`, a local path expanded first. A local
    directory that fails to load is a ConfigError; a name or handle that fails (usually a
    download) is a WeightsError naming the offline way out."""
    local = is_local(preset)
    try:
        return task_class.from_preset(str(Path(preset).expanduser()) if local else preset, **kwargs)
    except Exception as err:  # downloads and broken files fail in many ways
        if local:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ConfigError(
                f"--preset '{preset}' could not be loaded as a {task_class.__name__}: {first}"
            ) from None
        raise WeightsError(
            f"preset '{preset}' could not be downloaded ({type(err).__name__}); "
            "offline, pass a local preset directory instead: --preset ./my_local_preset "
            "(made with save_to_preset)"
        ) from None


def small_backbone(
    backbone_class, tokenizer, hidden_dim: int, layers: int, heads: int, length: int
):
    """A randomly initialised `backbone_class` (BERT, BART, ... style arguments) sized to
    `tokenizer`'s vocabulary: the heart of a tiny preset for offline tests."""
    return backbone_class(
        vocabulary_size=tokenizer.vocabulary_size(),
        num_layers=layers,
        num_heads=heads,
        hidden_dim=hidden_dim,
        intermediate_dim=4 * hidden_dim,
        max_sequence_length=length,
    )
