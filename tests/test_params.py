"""One home per parameter: the Config declarations drive checks, the CLI, signatures and docs."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import dltoolkit_command
from test_cli import assert_user_error, cli

from dltoolkit.core import config as cfg
from dltoolkit.core.errors import ConfigError
from dltoolkit.core.params import check, fields
from dltoolkit.registry import specs
from dltoolkit.specs.__main__ import parameters_markdown

SPECS = list(specs().values())


@pytest.mark.parametrize(
    "params, fragment",
    [
        ({"epochs": -1}, "'epochs' is -1; it must be >= 1"),
        ({"epochs": 0}, "'epochs' is 0; it must be >= 1"),
        ({"batch_size": 0}, "'batch_size' is 0"),
        ({"learning_rate": 0.0}, "must be > 0"),
        ({"strategy": "gpus"}, "choose one of: auto, cpu"),
    ],
)
def test_out_of_range_values_are_one_line_errors(params, fragment):
    with pytest.raises(ConfigError, match=fragment) as caught:
        cfg.make_config(cfg.TrainConfig, params)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.task)
def test_every_field_is_declared_and_its_default_is_in_range(spec):
    declared = fields(spec.config)
    assert all(f.meta.help.strip() for f in declared)
    cfg.make_config(spec.config, {f.name: f.default for f in declared})  # defaults pass checks


@pytest.mark.parametrize(
    "spec",
    [s for s in SPECS if any(f.meta.per for f in fields(s.config))],
    ids=lambda s: s.task,
)
def test_defaults_per_choice_cover_every_choice_and_are_in_range(spec):
    declared = {f.name: f for f in fields(spec.config)}
    for field in declared.values():
        per = field.meta.per
        if per is not None:
            assert field.default is None and field.optional, field.name
            assert set(per.values) == set(declared[per.on].meta.choices), field.name
            for value in per.values.values():
                check(field, value)
                cfg._coerce(field.name, value, field.hint)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.task)
def test_class_signature_and_docstring_list_every_parameter(spec):
    recipe_cls = spec.recipe_class()
    signature = inspect.signature(recipe_cls)
    names = [f.name for f in fields(spec.config)]
    assert list(signature.parameters) == names
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in signature.parameters.values())
    assert all(f"\n{name} : " in recipe_cls.__doc__ for name in names)
    assert recipe_cls.task == spec.task and recipe_cls.Config is spec.config


def test_parameter_docs_are_current():
    committed = Path(__file__).parents[1] / "docs" / "parameters.md"
    assert committed.read_text() == parameters_markdown(), (
        "docs/parameters.md is stale: python -m dltoolkit.specs > docs/parameters.md"
    )


def test_help_answers_without_tensorflow():
    script = (
        "import sys\n"
        "from dltoolkit.cli.app import app\n"
        "for args in (['--help'], ['forecast', '--help'], ['predict', '--help']):\n"
        "    try:\n"
        "        app(args=args, standalone_mode=False)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "assert 'tensorflow' not in sys.modules, 'help imported tensorflow'\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    # the recipe-specific options of predict, each saying which runs take it (wrapped by Rich)
    assert "--lookback" in proc.stdout and "--text" in proc.stdout
    assert "classify-nodes runs:" in proc.stdout and "generate-text runs:" in proc.stdout


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["forecast", "--epochs", "-1"], "'epochs' is -1"),
        (["forecast", "--set", "epochs=0"], "'epochs' is 0"),
        (["train-agent", "--steps", "0"], "'steps' is 0"),
    ],
)
def test_cli_rejects_out_of_range_values_before_writing(tmp_path, capsys, args, fragment):
    out = tmp_path / "run"
    assert_user_error(*cli(capsys, *args, "--out", out), fragment)
    assert not out.exists()


def test_verb_help_lists_declared_options():
    proc = subprocess.run(
        [*dltoolkit_command(), "classify-nodes", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "--nodes" in proc.stdout and "--directed" in proc.stdout
