"""Core pieces: config round trip, run directory rules, atomic writes, strategies, schedules."""

import io
import json
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
from rich.console import Console

from dltoolkit.core import config as cfg
from dltoolkit.core import files
from dltoolkit.core.callbacks import read_history, write_history
from dltoolkit.core.errors import ConfigError, RunDirError
from dltoolkit.core.optim import build_optimizer
from dltoolkit.core.progress import phase_progress
from dltoolkit.core.rundir import RunDir
from dltoolkit.core.runlock import LOCK_FILE, run_lock
from dltoolkit.core.runtime import choose_strategy, is_chief, precision_policy, runtime


def test_config_rejects_unknown_key_and_lists_valid_ones():
    with pytest.raises(ConfigError, match="did you mean 'epochs'.*valid parameters: .*batch_size"):
        cfg.make_config(cfg.TrainConfig, {"epoch": 3})


def test_config_checks_types_and_widens_int_to_float():
    assert cfg.make_config(cfg.TrainConfig, {"learning_rate": 1}).learning_rate == 1.0
    with pytest.raises(ConfigError, match="'epochs' must be int"):
        cfg.make_config(cfg.TrainConfig, {"epochs": "ten"})
    with pytest.raises(ConfigError, match="must be int"):
        cfg.make_config(cfg.TrainConfig, {"epochs": True})


def test_recipe_file_round_trip_and_overrides(tmp_path):
    params = cfg.to_params(cfg.TrainConfig(epochs=3))
    path = tmp_path / "r.toml"
    cfg.write_recipe_file(path, "classify", "digits", params)
    doc = cfg.read_recipe_file(path)
    assert doc["task"] == "classify" and doc["data"] == "digits"
    assert cfg.make_config(cfg.TrainConfig, doc["params"]) == cfg.TrainConfig(epochs=3)
    doc = cfg.apply_overrides(
        doc, ["epochs=5", "optimizer=sgd", "data=./imgs", "mixed_precision=true"]
    )
    assert doc["params"]["epochs"] == 5 and doc["params"]["optimizer"] == "sgd"
    assert doc["params"]["mixed_precision"] is True and doc["data"] == "./imgs"
    with pytest.raises(ConfigError, match="key=value"):
        cfg.apply_overrides(doc, ["epochs"])


def test_recipe_file_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("task = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        cfg.read_recipe_file(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        cfg.read_recipe_file(tmp_path / "missing.toml")
    bad.write_text('task = "classify"\nepochs = 3\n')
    with pytest.raises(ConfigError, match=r"\[params\]"):
        cfg.read_recipe_file(bad)


def test_run_dir_refuses_to_clobber_an_existing_run(tmp_path):
    run = RunDir.create(tmp_path / "r")
    files.write_text(run.recipe_file, 'task = "classify"\n')
    files.write_text(run.model_file, "precious")
    with pytest.raises(RunDirError, match="--resume.*--overwrite"):
        RunDir.create(run.path)
    assert run.model_file.read_text() == "precious"
    assert RunDir.create(run.path, resume=True).path == run.path
    assert run.model_file.read_text() == "precious"
    RunDir.create(run.path, overwrite=True)
    assert not run.model_file.exists()
    with pytest.raises(RunDirError, match="not a run directory"):
        RunDir.create(tmp_path / "nothing", resume=True)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("x")
    with pytest.raises(RunDirError, match="not a dltoolkit run"):
        RunDir.create(other, overwrite=True)
    assert (other / "mine.txt").exists()


def hold_lock_in_another_process(directory) -> subprocess.Popen:
    """A process that takes `directory`'s run lock and sleeps until killed."""
    code = (
        "import sys, time\nfrom dltoolkit.core.runlock import run_lock\n"
        "with run_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(directory)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline() == "locked\n"
    return proc


def test_run_lock_keeps_other_processes_out_until_its_holder_dies(tmp_path):
    out = tmp_path / "run"
    holder = hold_lock_in_another_process(out)
    try:
        for attempt in ({}, {"overwrite": True}):
            in_use = rf"'{out}' is in use .*pid {holder.pid} on "
            with pytest.raises(RunDirError, match=in_use), run_lock(out):
                RunDir.create(out, **attempt)
    finally:
        holder.send_signal(signal.SIGKILL)  # a killed holder leaves no stale lock
        holder.wait()
    with run_lock(out):
        with run_lock(out):  # re-entrant within a process
            run = RunDir.create(out)  # the dead holder's lock file alone is no run
        assert json.loads((out / LOCK_FILE).read_text())["pid"] != holder.pid
        files.write_text(run.recipe_file, 'task = "classify"\n')
        files.write_text(run.report_file, "finished")
        assert run.finished
        RunDir.create(out, overwrite=True)  # the lock file survives --overwrite
        assert [p.name for p in out.iterdir()] == [LOCK_FILE] and not run.finished
    with run_lock(tmp_path / "fresh"):  # e.g. a run refused for bad data
        assert (tmp_path / "fresh" / LOCK_FILE).is_file()
    assert not (tmp_path / "fresh").exists(), "the lock made it and nothing else was written"


def test_atomic_write_leaves_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "metrics.json"
    files.write_json(target, {"a": np.float32(1.5)})
    with pytest.raises(RuntimeError), files.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert json.loads(target.read_text()) == {"a": 1.5}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_atomic_directory_replace(tmp_path):
    target = tmp_path / "export"
    for content in ("v1", "v2"):
        with files.atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "saved_model.pb").write_text(content)
    assert (target / "saved_model.pb").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_history_rows_round_trip(tmp_path):
    rows = [
        {"epoch": 1, "phase": "train", "loss": 0.5},
        {"epoch": 2, "phase": "train", "loss": 0.4, "val_loss": 0.45},
    ]
    write_history(tmp_path / "h.csv", rows)
    back = read_history(tmp_path / "h.csv")
    assert back[1]["val_loss"] == 0.45 and "val_loss" not in back[0] and back[0]["phase"] == "train"
    write_history(tmp_path / "again.csv", back)  # as a resumed run rewrites earlier rows
    assert (tmp_path / "again.csv").read_text() == (tmp_path / "h.csv").read_text()


def test_strategy_choice_on_this_machine(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("TPU_NAME", raising=False)
    assert choose_strategy("auto")[0] == "cpu"
    assert choose_strategy("mirrored") == ("mirrored", "asked for explicitly")
    with pytest.raises(ConfigError, match="choose one of"):
        choose_strategy("horovod")
    cluster = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(cluster))
    assert choose_strategy("auto")[0] == "multi-worker"
    assert not is_chief()
    assert precision_policy(True, "gpu") == "mixed_float16"
    assert precision_policy(True, "tpu") == precision_policy(True, "cpu") == "mixed_bfloat16"


def test_runtime_sets_and_restores_precision(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with runtime("cpu", mixed_precision=True) as rt:
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
        assert rt.replicas == 1
    assert keras.mixed_precision.global_policy().name == "float32"
    with pytest.raises(ConfigError, match="TF_CONFIG"), runtime("multi-worker"):
        pass


def test_warmup_then_cosine_schedule():
    config = cfg.TrainConfig(learning_rate=0.01, warmup_epochs=1, grad_accum_steps=2, clipnorm=1.0)
    opt = build_optimizer(config, steps_per_epoch=10, epochs=5)
    schedule = opt._learning_rate
    rates = [float(schedule(step)) for step in (0, 10, 30, 49)]
    assert rates[0] < rates[1] and abs(rates[1] - 0.01) < 1e-6 and rates[1] > rates[2] > rates[3]
    assert opt.gradient_accumulation_steps == 2 and opt.clipnorm == 1.0
    assert isinstance(
        build_optimizer(cfg.TrainConfig(optimizer="sgd"), 10, 1), keras.optimizers.SGD
    )
    with pytest.raises(ConfigError, match="epochs must be"):
        build_optimizer(cfg.TrainConfig(), 10, None)
    with pytest.raises(ConfigError, match="adamw, sgd"):
        build_optimizer(cfg.TrainConfig(optimizer="adam8bit"), 10, 1)


def test_torn_backup_metadata_is_repaired_from_the_previous_epoch(tmp_path):
    from dltoolkit.core.training import _repair_backup

    (tmp_path / "training_metadata.json").write_text("")  # killed mid-write
    (tmp_path / "training_metadata.json.bkp").write_text('{"epoch": 2, "batch": -1}')
    (tmp_path / "latest.weights.h5").write_bytes(b"new")
    (tmp_path / "latest.weights.h5.bkp").write_bytes(b"old")
    _repair_backup(tmp_path)
    assert json.loads((tmp_path / "training_metadata.json").read_text())["epoch"] == 2
    assert (tmp_path / "latest.weights.h5").read_bytes() == b"old"
    (tmp_path / "training_metadata.json").write_text("{")
    (tmp_path / "training_metadata.json.bkp").unlink()
    _repair_backup(tmp_path)
    assert not (tmp_path / "training_metadata.json").exists()


def _fit_line(tmp_path, ema_momentum, best_by=("loss", "min")):
    """Fit y = 2x - 1 with noise for 3 epochs through fit_phases; return the model, history and val data."""
    import tensorflow as tf

    from dltoolkit.core.training import Phase, fit_phases

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 1)).astype("float32")
    y = (2 * x - 1 + 0.3 * rng.normal(size=x.shape)).astype("float32")
    train = tf.data.Dataset.from_tensor_slices((x[:192], y[:192])).batch(16)
    val = (x[192:], y[192:])
    config = cfg.TrainConfig(
        learning_rate=0.05, warmup_epochs=0, ema_momentum=ema_momentum, early_stopping_patience=0
    )
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    run = RunDir(tmp_path / f"ema{ema_momentum}")
    run.checkpoints.mkdir(parents=True)
    history = fit_phases(
        model,
        train,
        tf.data.Dataset.from_tensor_slices(val).batch(64),
        phases=[Phase("train", 3, lambda: model.compile(build_optimizer(config, 12, 3), "mse"))],
        run=run,
        config=config,
        steps_per_epoch=12,
        console=None,
        best_by=best_by,
    )
    return model, history, val


def test_weight_averaging_is_what_is_validated_and_kept(tmp_path):
    averaged, history, (x, y) = _fit_line(tmp_path, 0.9)
    assert averaged.optimizer.use_ema
    best = min(row["val_loss"] for row in history)
    assert abs(averaged.evaluate(x, y, verbose=0) - best) < 1e-5
    plain, _, _ = _fit_line(tmp_path, 0.0)
    assert not np.allclose(averaged.get_weights()[0], plain.get_weights()[0])
    with pytest.raises(ConfigError, match="ema_momentum"):
        build_optimizer(cfg.TrainConfig(ema_momentum=1.0), 10, 1)


def test_the_kept_epoch_is_the_best_by_the_plans_metric_and_direction(tmp_path):
    # Ranked "max" by validation loss, the worst epoch is the one kept: the direction is
    # honoured (DPO ranks its epochs by the highest validation preference accuracy).
    model, history, (x, y) = _fit_line(tmp_path, 0.0, best_by=("loss", "max"))
    losses = [row["val_loss"] for row in history]
    assert losses[0] > losses[-1]
    assert abs(model.evaluate(x, y, verbose=0) - max(losses)) < 1e-5


def test_phase_shows_a_spinner_with_name_and_time_then_one_line_only_the_line_in_a_log():
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, color_system=None, width=100)
    with phase_progress(console, "scoring"):
        shown_while_running = buffer.getvalue()
    assert "scoring" in shown_while_running and "0:00:00" in shown_while_running  # elapsed
    assert "scoring  (0." in buffer.getvalue() and buffer.getvalue().rstrip().endswith("s)")
    log = io.StringIO()
    with phase_progress(Console(file=log, width=100), "scoring"):
        pass
    assert log.getvalue().startswith("scoring  (0.") and log.getvalue().count("\n") == 1


def test_training_step_is_traced_once_on_the_cpu(tmp_path, monkeypatch):
    """On a CPU-only host the default strategy is used and the optimizer built before fit,
    so Keras traces the training step once (not twice); TensorBoard logs every epoch."""
    import tensorflow as tf

    from dltoolkit.core.training import Phase, fit_phases

    monkeypatch.delenv("TF_CONFIG", raising=False)

    class Counting(keras.Sequential):
        traces = 0

        def train_step(self, data):
            Counting.traces += 1  # Python runs only while TensorFlow traces the step
            return super().train_step(data)

    x = np.random.default_rng(0).normal(size=(64, 2)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, x.sum(1, keepdims=True))).batch(16)
    config = cfg.TrainConfig(warmup_epochs=0, early_stopping_patience=0)
    run = RunDir(tmp_path / "run")
    run.checkpoints.mkdir(parents=True)
    with runtime("cpu") as rt, rt.strategy.scope():
        assert rt.strategy is tf.distribute.get_strategy()  # the default: no GPU here
        model = Counting([keras.Input((2,)), keras.layers.Dense(1)])
        fit_phases(
            model,
            data,
            data,
            phases=[Phase("train", 2, lambda: model.compile(build_optimizer(config, 4, 2), "mse"))],
            run=run,
            config=config,
            steps_per_epoch=4,
            console=None,
        )
    assert Counting.traces == 1
    for split in ("train", "validation"):
        assert list((run.logs / split).glob("events.out.tfevents*")), split


def test_several_steps_per_call_keep_epochs_exact_and_progress_counts_every_step(tmp_path):
    import tensorflow as tf

    from dltoolkit.core.callbacks import RichProgress
    from dltoolkit.core.training import Phase, fit_phases, steps_per_call

    assert (steps_per_call(250), steps_per_call(12), steps_per_call(13, most=8)) == (25, 12, 1)
    x = np.random.default_rng(0).normal(size=(64, 2)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, x.sum(1, keepdims=True))).batch(4).repeat()
    config = cfg.TrainConfig(warmup_epochs=0, early_stopping_patience=0)
    run = RunDir(tmp_path / "run")
    run.checkpoints.mkdir(parents=True)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    console = Console(record=True, width=100)

    def compile_model():
        model.compile(build_optimizer(config, 12, 2), "mse", steps_per_execution=4)

    fit_phases(
        model,
        data,
        data,
        phases=[Phase("train", 2, compile_model)],
        run=run,
        config=config,
        steps_per_epoch=12,
        validation_steps=3,
        repeating=True,
        console=console,
    )
    assert int(model.optimizer.iterations) == 24
    lines = [line for line in console.export_text().splitlines() if "epoch" in line]
    assert [line.split()[:2] for line in lines] == [["epoch", "1/2"], ["epoch", "2/2"]]
    # Keras reports the last batch of each call: the bar counts the batches, not the calls
    progress = RichProgress(1, 12, Console(file=io.StringIO()))
    progress.on_train_begin()
    progress.on_epoch_begin(0)
    for last in (3, 7, 11):
        progress.on_train_batch_end(last, {"loss": 1.0})
    assert progress._progress.tasks[0].completed == 12
    progress.on_train_end()


def test_a_time_budget_ends_training_with_the_cosine_decay_at_its_floor(tmp_path):
    import time

    import tensorflow as tf

    from dltoolkit.core.callbacks import CosineToBudget, TimeBudget
    from dltoolkit.core.training import Phase, fit_phases

    class Slow(keras.callbacks.Callback):  # steps of a steady 10 ms, whatever the machine
        def on_train_batch_end(self, batch, logs=None):
            time.sleep(0.01)

    x = np.random.default_rng(0).normal(size=(64, 2)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, x.sum(1, keepdims=True))).batch(8).repeat()
    config = cfg.TrainConfig(schedule="constant", early_stopping_patience=0)
    run = RunDir(tmp_path / "run")
    run.checkpoints.mkdir(parents=True)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    optimizer = build_optimizer(config, 20, 1000)
    budget = [TimeBudget(0.05), CosineToBudget(0.05, config.learning_rate, 0, 20_000)]
    fit_phases(
        model,
        data,
        None,
        phases=[Phase("train", 1000, lambda: model.compile(optimizer, "mse"))],
        run=run,
        config=config,
        steps_per_epoch=20,
        repeating=True,
        console=None,
        extra_callbacks=[*budget, Slow()],
    )
    rates = [row["learning_rate"] for row in read_history(run.history_file)]
    assert 5 < len(rates) < 30  # about 3 s of 0.2 s epochs, far from the 1,000 planned
    assert rates[0] > 0.8 * config.learning_rate and rates[-1] < 0.2 * config.learning_rate


def test_checkpoint_clock_says_which_epochs_are_written():
    import time

    from dltoolkit.core.callbacks import CheckpointClock

    every = CheckpointClock(0.0)
    assert all(every.due(e) for e in range(3))
    clock = CheckpointClock(1.0)
    assert not clock.due(0)
    time.sleep(1.05)
    assert clock.due(1) and clock.due(1)  # one answer per epoch, whoever asks
    assert not clock.due(2)


class _Stop(Exception):
    pass


def test_checkpoints_by_time_resume_from_the_last_one_written(tmp_path):
    """With checkpoint_seconds the resume state and the best weights are written only once
    that long has passed: a run killed later resumes from that checkpoint and still ends with
    its best weights."""
    import time

    import tensorflow as tf

    from dltoolkit.core.callbacks import backup_epoch
    from dltoolkit.core.training import Phase, fit_phases

    class Slow(keras.callbacks.Callback):  # the third epoch takes longer than the clock's 2 s
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                time.sleep(2.1)

    class StopAfter(keras.callbacks.Callback):  # a kill at the end of the fifth epoch
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 4:
                raise _Stop

    class Epochs(keras.callbacks.Callback):
        begun: list = []

        def on_epoch_begin(self, epoch, logs=None):
            self.begun.append(epoch)

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 1)).astype("float32")
    y = (2 * x - 1 + 0.3 * rng.normal(size=x.shape)).astype("float32")
    train = tf.data.Dataset.from_tensor_slices((x[:192], y[:192])).batch(16)
    val = tf.data.Dataset.from_tensor_slices((x[192:], y[192:])).batch(64)
    config = cfg.TrainConfig(
        learning_rate=0.02, warmup_epochs=0, early_stopping_patience=0, checkpoint_seconds=2.0
    )
    run = RunDir(tmp_path / "run")
    run.checkpoints.mkdir(parents=True)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])

    def train_for(callbacks):
        return fit_phases(
            model,
            train,
            val,
            phases=[
                Phase("train", 8, lambda: model.compile(build_optimizer(config, 12, 8), "mse"))
            ],
            run=run,
            config=config,
            steps_per_epoch=12,
            console=None,
            extra_callbacks=callbacks,
        )

    with pytest.raises(_Stop):
        train_for([Slow(), StopAfter()])
    backup, best = run.checkpoints / "train.backup", run.checkpoints / "train.best.weights.h5"
    assert backup_epoch(backup) == 3  # written after the slow third epoch only
    assert best.is_file() and len(read_history(run.history_file)) == 5
    history = train_for([Epochs()])
    assert Epochs.begun == [3, 4, 5, 6, 7]  # the fourth and fifth epochs again
    assert [row["epoch"] for row in history] == list(range(1, 9))
    # a fresh optimizer, restored from the backup: 3 epochs of steps there, 5 since
    assert not backup.exists() and int(model.optimizer.iterations) == 8 * 12
    lowest = min(row["val_loss"] for row in history)
    assert abs(model.evaluate(val, verbose=0) - lowest) < 1e-5


def test_a_recipe_without_plan_and_build_or_its_own_learn_is_refused_at_definition():
    from dltoolkit.core.recipe import Recipe
    from dltoolkit.specs.classify import SPEC

    with pytest.raises(TypeError, match="must supply _plan and _build, or override _learn"):
        type("Incomplete", (Recipe,), {"spec": SPEC})


@pytest.mark.parametrize("first", ["dltoolkit", "keras_hub"])
def test_dltoolkit_and_keras_hub_import_in_either_order(first):
    """KerasHub imports Keras, whose import hook loads dltoolkit's layers, which build on
    KerasHub: with dltoolkit first, that hook must not run into the half-imported KerasHub."""
    second = "keras_hub" if first == "dltoolkit" else "dltoolkit"
    code = (
        f"import {first}, {second}, keras_hub; from dltoolkit.layers.text import WordPieces; "
        "assert issubclass(WordPieces, keras_hub.tokenizers.WordPieceTokenizer)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
