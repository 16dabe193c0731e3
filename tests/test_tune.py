"""dltoolkit tune: real Optuna studies of tiny forecasters on a made-up daily series."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import numpy as np
import optuna
import pandas as pd
import pytest
from conftest import dltoolkit_command, run_cli
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from dltoolkit import Forecaster, tune
from dltoolkit.core.callbacks import read_history
from dltoolkit.core.config import read_recipe_file
from dltoolkit.core.errors import ConfigError, DataError
from dltoolkit.core.space import resolve, starting_point, suggest
from dltoolkit.core.tuning import Setup, open_study
from dltoolkit.specs.forecast import ForecasterConfig

# Fixed for every trial: a small linear forecaster of a weekly cycle.
FIXED = {"horizon": 7, "epochs": 2, "batch_size": 32}
SPACE = """
model = ["linear", "dlinear"]
lookback = [14, 28]
learning_rate = { low = 1e-3, high = 3e-2, log = true }
"""


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tune")
    t = np.arange(300)
    sales = 100 + 12 * np.sin(2 * np.pi * t / 7) + np.random.default_rng(0).normal(0, 2, 300)
    dates = pd.date_range("2024-01-01", periods=300, freq="D").strftime("%Y-%m-%d")
    pd.DataFrame({"date": dates, "sales": sales}).to_csv(folder / "sales.csv", index=False)
    (folder / "space.toml").write_text(SPACE)
    return folder


def _study(out) -> optuna.Study:
    described = json.loads((out / "study.json").read_text())
    return optuna.load_study(study_name=described["study"], storage=described["storage"])


def test_a_study_searches_on_validation_retrains_the_best_and_tests_it_once(series, tmp_path):
    # patch_len 16 > lookback 14: every patch-transformer trial fails, the study goes on;
    # the first trial tries the recipe file's model (patch-transformer), so one fails for sure.
    space = tmp_path / "space.toml"
    space.write_text('model = ["patch-transformer", "linear"]\n')
    recipe = tmp_path / "sales.toml"
    recipe.write_text(
        f'task = "forecast"\ndata = "{series / "sales.csv"}"\n\n[params]\n'
        'model = "patch-transformer"\n'
    )
    out = tmp_path / "study"
    summary = tune(
        recipe,
        params={**FIXED, "lookback": 14, "val_split": 0.3},
        space=space,
        trials=4,
        out=out,
        keep=1,
        progress=False,
    )
    trials = _study(out).get_trials()
    assert len(trials) == 4 and summary["states"]["complete"] + summary["states"]["fail"] == 4
    assert trials[0].params["model"] == "patch-transformer" and trials[0].state == TrialState.FAIL
    assert "patch_len 16 is longer than lookback 14" in trials[0].user_attrs["error"]
    best = min((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert summary["best_trial"] == best.number and summary["best_params"] == {"model": "linear"}
    # Trials were scored on the validation windows; only best/ saw the test split.
    trial_metrics = json.loads((out / f"trial-{best.number}" / "metrics.json").read_text())
    assert trial_metrics["mse"] == pytest.approx(best.value)
    test_metrics = json.loads((out / "best" / "metrics.json").read_text())
    assert summary["test_metrics"]["mse"] == test_metrics["mse"] != trial_metrics["mse"]
    assert trial_metrics["windows"] != test_metrics["windows"]  # 30% val vs 20% test rows
    assert (out / "best" / "export").is_dir()
    # The best keeps its whole run; the others keep their metrics, history and recipe only.
    assert (out / f"trial-{best.number}" / "model.keras").is_file()
    for trial in trials:
        run = out / f"trial-{trial.number}"
        if trial.state == TrialState.COMPLETE and trial.number != best.number:
            assert sorted(p.name for p in run.iterdir()) == [
                "history.csv",
                "metrics.json",
                "recipe.toml",
            ]
            assert read_history(run / "history.csv")
    # best.toml is the best configuration as a recipe file that `dltoolkit run` repeats.
    recipe = read_recipe_file(out / "best.toml")
    assert recipe["task"] == "forecast" and recipe["params"]["model"] == "linear"
    assert read_recipe_file(out / "best" / "recipe.toml")["params"] == {
        k: v for k, v in Forecaster(**recipe["params"]).get_params().items() if v is not None
    }
    page = (out / "report.html").read_text()
    for heading in ("Optimisation history", "Best parameters", "validation split only"):
        assert heading in page
    # `dltoolkit report` on the study directory rewrites its report from the storage.
    (out / "report.html").unlink()
    proc = run_cli("report", out, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["states"] == summary["states"]
    assert (out / "report.html").is_file()


def test_a_true_or_false_parameter_is_searched_both_ways_and_its_best_written_back(
    series, tmp_path
):
    # instance_norm is declared tunable as on or off; trials of both kinds train, and the
    # best value is a TOML boolean in best.toml that the recipe class takes as it is.
    declared, _ = resolve(ForecasterConfig)
    assert declared["instance_norm"].choices == (True, False)
    space = tmp_path / "space.toml"
    space.write_text("instance_norm = [true, false]\n")
    out = tmp_path / "study"
    summary = tune(
        "forecast",
        str(series / "sales.csv"),
        params={**FIXED, "model": "linear", "lookback": 14, "epochs": 1},
        space=space,
        trials=3,
        out=out,
        keep=1,
        progress=False,
    )
    trials = _study(out).get_trials()
    assert summary["states"]["complete"] == 3
    assert {t.params["instance_norm"] for t in trials} == {True, False}
    best = read_recipe_file(out / "best.toml")["params"]["instance_norm"]
    assert best is summary["best_params"]["instance_norm"]
    assert Forecaster(**read_recipe_file(out / "best.toml")["params"]).config.instance_norm is best
    retrained = read_recipe_file(out / "best" / "recipe.toml")["params"]
    assert retrained["instance_norm"] is best


@pytest.mark.slow
def test_two_worker_processes_share_one_sqlite_study_and_stop_at_the_total(series, tmp_path):
    out = tmp_path / "study"
    tune(
        "forecast",
        str(series / "sales.csv"),
        params=FIXED,
        space=series / "space.toml",
        trials=5,
        n_jobs=2,
        out=out,
        retrain=False,
        progress=False,
    )
    trials = _study(out).get_trials()
    ended = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(ended) == 5
    assert len({t.user_attrs["worker"] for t in ended}) == 2  # both processes ran trials
    assert all(
        t.state == TrialState.FAIL and "surplus" in t.user_attrs for t in trials if t not in ended
    )


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_killed_study_resumes_keeping_its_finished_trials(series, tmp_path):
    out = tmp_path / "study"
    args = ["tune", "forecast", "--data", series / "sales.csv", "--space", series / "space.toml"]
    args += ["--horizon", "7", "--epochs", "30", "--batch-size", "8", "--trials", "3"]
    args += ["--set", "early_stopping_patience=0", "--out", out, "--quiet"]
    process = subprocess.Popen([*dltoolkit_command(), *map(str, args)])
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # kill it in the middle of its second trial
            time.sleep(1)
            if (out / "study.db").is_file() and (out / "trial-1" / "history.csv").is_file():
                break
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    before = {t.number: t for t in _study(out).get_trials()}
    assert before[0].state == TrialState.COMPLETE and before[1].state == TrialState.RUNNING
    summary = tune(
        "forecast",
        str(series / "sales.csv"),
        params={"horizon": 7, "epochs": 30, "batch_size": 8, "early_stopping_patience": 0},
        space=series / "space.toml",
        trials=3,
        out=out,
        retrain=False,
        progress=False,
        heartbeat=1,  # the killed worker's trial is stale after 2 s
    )
    after = _study(out).get_trials()
    assert after[0].datetime_complete == before[0].datetime_complete  # not run again
    assert after[1].state == TrialState.FAIL and "error" not in after[1].user_attrs
    retry = next(t for t in after if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == 1)
    assert retry.params == before[1].params and retry.user_attrs["run"] == "trial-1"
    rows = read_history(out / "trial-1" / "history.csv")
    assert [r["epoch"] for r in rows] == sorted({r["epoch"] for r in rows})  # resumed, not redone
    assert sum(summary["states"].values()) == 3


def test_trials_past_their_time_limit_fail_with_their_reason(series, tmp_path):
    out = tmp_path / "study"
    with pytest.raises(DataError, match="no trial .* completed; the first error: TrialTimeout"):
        tune(
            "forecast",
            str(series / "sales.csv"),
            params={**FIXED, "epochs": 50},
            space=series / "space.toml",
            trials=2,
            timeout_per_trial="0.5s",
            out=out,
            progress=False,
        )
    trials = _study(out).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL] * 2
    assert all("longer than 0.5 s" in t.user_attrs["error"] for t in trials)
    assert not (out / "trial-0").exists()  # a failed trial leaves no half-made run


def test_space_file_replaces_the_declared_space_and_set_fixes(series, tmp_path):
    declared, _ = resolve(ForecasterConfig)
    assert {"model", "lookback", "learning_rate", "dropout"} <= set(declared)
    space, pinned = resolve(ForecasterConfig, series / "space.toml", fixed={"lookback"})
    assert sorted(space) == ["learning_rate", "model"] and pinned == {}
    bad = tmp_path / "bad.toml"
    for text, message in [
        ('model = ["linear", "arima"]', "choose one of"),
        ("dropout = { low = 0.1, high = 1.5 }", "must be >= 0, < 1"),
        ("lookback = { low = 1 }", "needs low and high"),
        ('modle = ["linear"]', "unknown parameter 'modle'"),
        ("dropout = 0.1", "no range or list of choices"),
    ]:
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message):
            resolve(ForecasterConfig, bad)


def test_a_parameter_declared_for_some_models_is_drawn_only_for_them():
    chosen, _ = resolve(
        ForecasterConfig,
        {"model": ["linear", "dlinear", "patch-transformer"], "patch_len": [8, 16], "kernel": [13]},
    )
    space = {**resolve(ForecasterConfig)[0], **chosen}  # lookback, dropout, ... as declared
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = {}
    for _ in range(12):
        values = suggest(study.ask(), space, ForecasterConfig, {})
        drawn.setdefault(values["model"], set(values))
    assert set(drawn) == {"linear", "dlinear", "patch-transformer"}
    assert not {"patch_len", "d_model", "dropout", "kernel"} & drawn["linear"]
    assert "kernel" in drawn["dlinear"] and "patch_len" not in drawn["dlinear"]
    assert {"patch_len", "d_model", "dropout"} <= drawn["patch-transformer"]
    assert "kernel" not in drawn["patch-transformer"]
    # A model fixed outside the space (--set model=dlinear) decides the same way.
    del space["model"]
    values = suggest(study.ask(), space, ForecasterConfig, {"model": "dlinear"})
    assert "kernel" in values and "patch_len" not in values
    start = starting_point(
        space, {"model": "dlinear", "patch_len": 16, "kernel": 13}, ForecasterConfig
    )
    assert start == {"kernel": 13}


def test_the_studys_sampler_learns_a_model_and_its_own_parameter(tmp_path):
    """The TPE sampler of `open_study` on a conditional space: after its random start it
    draws the one good (model, kernel) pair most of the time, and a model's parameters
    only for that model."""
    chosen, _ = resolve(
        ForecasterConfig,
        {"model": ["linear", "dlinear", "patch-transformer"], "kernel": [13, 25, 49, 97]},
    )
    space = {**resolve(ForecasterConfig)[0], **chosen}
    setup = Setup(
        task="forecast",
        data="series.csv",
        params={},
        space=space,
        trials=40,
        out=tmp_path,
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        study="conditional",
    )
    study = open_study(setup, worker=0)
    late = []
    for number in range(40):
        trial = study.ask()
        values = suggest(trial, space, ForecasterConfig, {})
        good = values["model"] == "dlinear" and values.get("kernel") == 13
        study.tell(trial, 0.5 if good else 1.0 + values["learning_rate"])
        assert ("kernel" in values) == (values["model"] == "dlinear")
        if number >= 25:
            late.append(good)
    assert sum(late) >= 6, late  # drawn at random: 1 in 12, about 1.25 of the 15


def test_cli_tunes_a_recipe_file_with_the_verbs_options_and_set(series, tmp_path, capsys):
    from test_cli import cli

    recipe = tmp_path / "sales.toml"
    recipe.write_text(
        f'task = "forecast"\ndata = "{series / "sales.csv"}"\n\n[params]\n'
        'model = "dlinear"\nhorizon = 7\nepochs = 5\n'
    )
    out = tmp_path / "study"
    args = ["tune", recipe, "--space", series / "space.toml", "--trials", "2", "--no-retrain"]
    code, stdout, err = cli(
        capsys, *args, "--lookback", "14", "--set", "epochs=1", "--out", out, "--json"
    )
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["params"] == {"model": "dlinear", "horizon": 7, "epochs": 1, "lookback": 14}
    assert sorted(summary["space"]) == ["learning_rate", "model"]  # lookback is fixed
    trials = _study(out).get_trials()
    assert trials[0].params["model"] == "dlinear"  # the recipe file is the first trial
    assert [len(read_history(out / f"trial-{t.number}" / "history.csv")) for t in trials] == [1, 1]
    assert not (out / "best").exists()


def test_cli_refuses_what_cannot_be_tuned(series, capsys):
    from test_cli import assert_user_error, cli

    assert_user_error(*cli(capsys, "tune", "train-agent", "--trials", "2"), "cannot be tuned")
    assert_user_error(
        *cli(capsys, "tune", "forecast", "--budget", "soon"), "--budget 'soon' is not a duration"
    )
    assert_user_error(*cli(capsys, "tune", "forecast", "--horizon", "0"), "horizon")
