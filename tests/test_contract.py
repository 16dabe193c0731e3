"""The recipe contract, checked alike for every registered recipe on its tiny case.

Per recipe, the session's one fit (conftest's `fits`, shared with the recipe's own tests)
serves every check: save -> load -> predict gives the same
numbers; the SavedModel export, called in a fresh TensorFlow-only process, gives what
predict gives; unknown and out-of-range parameters are one-line errors; and (issue 20)
the saved Keras model maps raw input to the recipe's output. The cases live in
contract_cases.py: a new recipe gets these checks by registering there.
"""

from __future__ import annotations

import dataclasses
import json

import keras
import numpy as np
import pytest
from contract_cases import CASES, registered_recipes
from serving import plain
from test_cli import assert_user_error, cli

from dltoolkit.core.errors import ConfigError, RunDirError
from dltoolkit.core.recipe import Recipe

RECIPES = registered_recipes()
TASKS = sorted(RECIPES)
# Values every recipe with the parameter must reject when it is constructed.
OUT_OF_RANGE = [("epochs", 0), ("epochs", -1), ("batch_size", 0), ("steps", 0), ("steps", -1)]
OUT_OF_RANGE_CASES = [
    pytest.param(task, key, value, id=f"{task}-{key}={value}")
    for task in TASKS
    for key, value in OUT_OF_RANGE
    if key in {f.name for f in dataclasses.fields(RECIPES[task].Config)}
]


def test_every_registered_recipe_has_a_contract_case():
    missing = sorted(set(RECIPES) - set(CASES))
    assert not missing, f"add a Case for {', '.join(missing)} to tests/contract_cases.py"
    assert not set(CASES) - set(RECIPES), "a contract case names a task no recipe registers"


@pytest.fixture(scope="module", params=TASKS)
def task(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def case(task):
    if task not in CASES:
        pytest.fail(f"no contract case for '{task}': add one to tests/contract_cases.py")
    return CASES[task]


@dataclasses.dataclass
class Fitted:
    recipe: Recipe
    inputs: object
    answers: dict
    folder: object


@pytest.fixture(scope="module")
def fitted(task, case, serving, fits) -> Fitted:
    """The session's fit of the recipe (see conftest), with predict's answers on the inputs."""
    serving.start(case.serving_imports)  # TensorFlow imports there while the recipe trains
    recipe, folder = fits.get(task)
    inputs = case.inputs(folder)
    return Fitted(recipe, inputs, case.answers(recipe, inputs), folder)


def assert_same(actual: dict, expected: dict, rtol: float, atol: float) -> None:
    """Every expected answer, numbers to within tolerance and everything else exactly."""
    assert set(expected) <= set(actual), f"missing outputs: {set(expected) - set(actual)}"
    for key, want in expected.items():
        got, want = plain(actual[key]), plain(want)
        assert got.shape == want.shape, (key, got.shape, want.shape)
        if want.dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=key)
        else:
            np.testing.assert_array_equal(got, want, err_msg=key)


def test_save_load_predict_gives_the_same_numbers(fitted, case):
    path = fitted.recipe.save(fitted.folder / "saved")
    loaded = Recipe.load(path)
    assert type(loaded) is type(fitted.recipe)
    assert loaded.get_params() == fitted.recipe.get_params()
    assert_same(case.answers(loaded, fitted.inputs), fitted.answers, rtol=1e-6, atol=1e-7)


def test_export_gives_what_predict_gives_in_a_tensorflow_only_process(fitted, case, serving):
    recipe = fitted.recipe
    path = recipe.export()
    assert path == recipe.run_.path / "export" / recipe.run_.path.name / "1"
    outputs = serving.start(case.serving_imports).call(path, case.feeds(recipe, fitted.inputs))
    assert outputs.pop("__signatures__") == sorted(case.signatures)
    assert_same(case.served(outputs), fitted.answers, rtol=1e-5, atol=1e-5)


def test_unknown_parameter_is_a_one_line_error(task, tmp_path, capsys):
    with pytest.raises(ConfigError) as error:
        RECIPES[task](nope=1)
    message = str(error.value)
    assert "'nope'" in message and "valid parameters" in message and "\n" not in message
    out = tmp_path / "run"
    assert_user_error(*cli(capsys, task, "--set", "nope=1", "--out", out), "'nope'")
    assert not out.exists()


@pytest.mark.parametrize(("recipe_task", "key", "value"), OUT_OF_RANGE_CASES)
def test_out_of_range_parameter_is_a_one_line_error(recipe_task, key, value):
    with pytest.raises(ConfigError) as error:
        RECIPES[recipe_task](**{key: value})
    assert key in str(error.value) and "\n" not in str(error.value)


def test_saved_keras_model_maps_raw_input_to_the_output(fitted, case):
    if case.keras_io is None:
        pytest.skip("the recipe has no raw input: its Keras model already maps noise to output")
    io = case.keras_io(fitted.recipe, fitted.inputs)
    model = keras.saving.load_model(fitted.recipe.run_.model_file)
    output = io.decode(model(io.raw))
    assert_same({"output": output}, {"output": io.expected}, rtol=1e-5, atol=1e-5)


def test_a_run_saved_by_dltoolkit_0_1_is_a_one_line_error_that_says_to_retrain(fitted, capsys):
    old = fitted.recipe.save(fitted.folder / "old")
    state_file = old / "state.json"
    document = json.loads(state_file.read_text())
    del document["format"]  # dltoolkit 0.1 wrote no format
    state_file.write_text(json.dumps(document))
    with pytest.raises(RunDirError) as error:
        Recipe.load(old)
    assert "dltoolkit 0.1" in str(error.value) and "retrain" in str(error.value)
    assert "\n" not in str(error.value)
    assert_user_error(*cli(capsys, "evaluate", old), "dltoolkit 0.1", "retrain")
