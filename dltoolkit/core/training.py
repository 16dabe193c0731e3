"""Run `model.fit` in resumable phases with the standard callbacks.

A phase is a stretch of epochs with one compiled model (e.g. 'head' with a frozen
backbone, then 'finetune'). Every phase checkpoints as it goes (a BackupAndRestore, at
every epoch's end or, with `checkpoint_seconds`, once that long has passed), keeps its best
weights on validation, and leaves `<phase>.done.weights.h5` when finished, so a resumed run
skips finished phases and continues the interrupted one from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from rich.console import Console

from dltoolkit.core.callbacks import (
    BestWeights,
    CheckpointClock,
    EpochTensorBoard,
    HistoryLog,
    RichProgress,
    TimedBackup,
    backup_epoch,
    read_history,
    save_weights_atomically,
)
from dltoolkit.core.config import TrainConfig
from dltoolkit.core.errors import WorkerLost
from dltoolkit.core.rundir import RunDir
from dltoolkit.core.runtime import distributable


@dataclass
class Plan:
    """What a recipe hands the base class to train its Keras model (`Recipe._plan`)."""

    train: tf.data.Dataset
    val: tf.data.Dataset | None
    steps: int  # training batches per epoch
    epochs: int
    validation_steps: int | None = None
    repeating: bool = False  # see fit_phases
    class_weight: dict | None = None
    callbacks: list = field(default_factory=list)  # after the standard ones
    keep_best: bool = True  # False: no single loss ranks the epochs (a GAN); keep the last
    best_by: str = "loss"  # the metric that ranks epochs (on validation when there is one)
    best_mode: str = "min"  # "max" when higher `best_by` is better (an accuracy)
    steps_per_execution: int | None = None  # batches per compiled call; None: see calls()
    jit_compile: bool | str = "auto"  # XLA for the steps ("auto": Keras decides; off on CPUs)

    def calls(self) -> int:
        """Batches per compiled call: `steps_per_execution`, or by default `steps_per_call`
        of an epoch when the data repeat (an epoch is then exactly `steps` batches), else 1."""
        if self.steps_per_execution:
            return self.steps_per_execution
        return steps_per_call(self.steps) if self.repeating else 1


@dataclass
class Stage:
    """A phase as a recipe declares it (`Recipe._stages`): `before` sets trainability, then
    the base class compiles with the learning rate scaled by `lr_scale`."""

    name: str
    epochs: int
    lr_scale: float = 1.0
    before: Callable[[], None] | None = None


def small_data_epochs(examples: int, batch_size: int, min_steps: int) -> tuple[int, int]:
    """(passes over the data per epoch, batches per epoch): small data sets pass several times
    so that an epoch has at least `min_steps` batches and does not stop early on a handful."""
    repeat = math.ceil(min_steps * batch_size / examples)
    return repeat, math.ceil(repeat * examples / batch_size)


def steps_per_call(steps_per_epoch: int, most: int = 25) -> int:
    """The largest divisor of `steps_per_epoch` up to `most`: batches a compiled training
    call runs in one go (Keras `steps_per_execution`). Calls of small steps cost as much
    Python and callback time as the step itself (a 4-block GPT on one core: 102 ms a step
    one by one, 80 ms sixteen at once); a divisor keeps epochs exactly `steps_per_epoch`."""
    return max(d for d in range(1, min(most, steps_per_epoch) + 1) if steps_per_epoch % d == 0)


def even_calls(batches: int, most: int = 25) -> tuple[int, int]:
    """(batches per epoch, batches per compiled call) for an epoch of about `batches` batches
    of a repeating stream: as few calls of at most `most` batches as cover it, all of one
    length (so no batch count needs a divisor); the epoch grows by less than a batch a call."""
    calls = math.ceil(batches / most)
    per_call = math.ceil(batches / calls)
    return calls * per_call, per_call


def balanced_class_weights(labels, classes: int) -> dict[int, float]:
    """Keras `class_weight` inverse to each class's frequency in `labels` (integer classes),
    so every class weighs the same in the loss: n / (classes * count)."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=classes)
    return {i: len(labels) / (classes * max(int(n), 1)) for i, n in enumerate(counts)}


def pretrained_stages(
    epochs: int, backbone, fine_tune_epochs: int, lr_factor: float, first: str = "head"
) -> list[Stage]:
    """The phases of a model on a pretrained `backbone`: `first` with the backbone frozen
    for `epochs`, then (fine_tune_epochs > 0) everything at `lr_factor` of the learning rate."""

    def freeze():
        backbone.trainable = False

    def unfreeze():
        backbone.trainable = True

    stages = [Stage(first, epochs, before=freeze)]
    if fine_tune_epochs > 0:
        stages.append(Stage("finetune", fine_tune_epochs, lr_factor, unfreeze))
    return stages


@dataclass
class Phase:
    """`epochs` epochs of training after `prepare()` has set trainability and compiled."""

    name: str
    epochs: int
    prepare: Callable[[], None]


def fit_phases(
    model: keras.Model,
    train_ds,
    val_ds,
    *,
    phases: list[Phase],
    run: RunDir,
    config: TrainConfig,
    steps_per_epoch: int,
    console: Console | None,
    class_weight: dict | None = None,
    validation_steps: int | None = None,
    repeating: bool = False,
    extra_callbacks: list | None = None,
    keep_best: bool = True,
    best_by: tuple[str, str] = ("loss", "min"),
    first_epoch: int = 0,
) -> list[dict]:
    """Train through `phases` and return the full per-epoch history.

    With `repeating`, both datasets repeat forever and an epoch is `steps_per_epoch` training
    and `validation_steps` validation batches; their iterators are then made once, not per
    epoch, which matters when epochs are a few steps (e.g. one full-graph step).
    `extra_callbacks` (e.g. a time budget) run after the standard ones in every phase.
    Epochs are numbered from `first_epoch` (history.csv keys its rows by epoch).
    A phase ends with the weights of its best epoch by `best_by` (metric name, "min" or
    "max"; the validation metric when there is validation data). Without `keep_best` (a
    model with no single loss, e.g. a GAN's d_loss and g_loss) it ends with its last ones.
    """
    name, mode = best_by
    monitor = (f"val_{name}" if val_ds is not None else name, mode)
    replicas = model.distribute_strategy.num_replicas_in_sync
    train_ds, val_ds = distributable(train_ds, replicas), distributable(val_ds, replicas)
    total = sum(p.epochs for p in phases)
    start = first_epoch
    for phase in phases:
        done = run.checkpoints / f"{phase.name}.done.weights.h5"
        if phase.epochs <= 0:
            continue
        if done.is_file():
            model.load_weights(done)
        else:
            phase.prepare()
            _build_optimizer(model)
            callbacks = _callbacks(
                run, config, phase, monitor if keep_best else None, total, steps_per_epoch, console
            )
            callbacks += extra_callbacks or []
            with warnings.catch_warnings(), _worker_loss_is_user_facing():
                # Pipelines that may drop unreadable files have no known length; Keras
                # warns at the end of each of their epochs although nothing is wrong.
                warnings.filterwarnings("ignore", message="Your input ran out of data")
                model.fit(
                    train_ds,
                    validation_data=val_ds,
                    initial_epoch=start,
                    epochs=start + phase.epochs,
                    callbacks=callbacks,
                    class_weight=class_weight,
                    steps_per_epoch=steps_per_epoch if repeating else None,
                    validation_steps=validation_steps if repeating else None,
                    shuffle=False,  # tf.data pipelines shuffle themselves
                    verbose=0,
                )
            best = run.checkpoints / f"{phase.name}.best.weights.h5"
            if best.is_file():
                model.load_weights(best)
            save_weights_atomically(model, done)
        start += phase.epochs
    return read_history(run.history_file)


def _callbacks(run, config, phase, best_by, total_epochs, steps_per_epoch, console):
    """The standard callbacks; the best epoch by `best_by` (metric, "min"/"max") is kept
    (None: none). The resume state and the best weights are written as
    `config.checkpoint_seconds` says."""
    backup = run.checkpoints / f"{phase.name}.backup"
    _repair_backup(backup)
    clock = CheckpointClock(config.checkpoint_seconds)
    # HistoryLog runs before the backup: a crash between the two repeats an epoch
    # on resume (its row is then replaced) rather than losing one.
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        HistoryLog(run.history_file, phase.name),
        TimedBackup(backup, clock),
    ]
    if config.ema_momentum > 0:
        # After the backup (which keeps the raw weights to resume from): validation, the
        # best checkpoint and so the final model see the averaged weights.
        callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    if best_by is not None:
        metric, mode = best_by
        # the best so far among the epochs a resume keeps (later ones are trained again)
        kept = backup_epoch(backup)
        previous = [
            r[metric]
            for r in read_history(run.history_file)
            if r.get("phase") == phase.name and r["epoch"] <= kept and metric in r
        ]
        callbacks.append(
            BestWeights(
                run.checkpoints / f"{phase.name}.best.weights.h5",
                metric,
                clock,
                (min if mode == "min" else max)(previous, default=None),
                mode=mode,
            )
        )
    callbacks.append(EpochTensorBoard(str(run.logs)))
    if config.early_stopping_patience > 0 and best_by is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=best_by[0], mode=best_by[1], patience=config.early_stopping_patience
            )
        )
    if console is not None:
        callbacks.append(
            RichProgress(total_epochs, steps_per_epoch, console, label=_label(phase.name))
        )
    return callbacks


def _repair_backup(backup: Path) -> None:
    """Undo a kill during BackupAndRestore's (non-atomic) metadata write.

    Keras recovers a torn weights file from its `.bkp` copy but not a torn
    training_metadata.json; put the previous epoch's pair back, or drop the torn file.
    """
    metadata = backup / "training_metadata.json"
    if not metadata.is_file():
        return
    try:
        json.loads(metadata.read_text())
    except ValueError:
        previous = metadata.with_name(metadata.name + ".bkp")
        weights = backup / "latest.weights.h5"
        if previous.is_file() and weights.with_name(weights.name + ".bkp").is_file():
            shutil.copyfile(previous, metadata)
            shutil.copyfile(weights.with_name(weights.name + ".bkp"), weights)
        else:
            metadata.unlink()


@contextlib.contextmanager
def _worker_loss_is_user_facing():
    """A multi-worker job whose peer died says how to continue, in one line."""
    try:
        yield
    except (
        tf.errors.UnavailableError,
        tf.errors.AbortedError,
        tf.errors.DeadlineExceededError,
    ) as err:
        first_line = str(err).strip().splitlines()[0][:200]
        raise WorkerLost(
            f"a process of the multi-worker job stopped ({first_line}); restart every worker "
            "with the same command: training resumes from the last finished epoch"
        ) from None


def _build_optimizer(model: keras.Model) -> None:
    """Make the optimizer's variables now, as Keras does under a distribution strategy.

    Under TensorFlow's default strategy Keras leaves it to the first training step, whose
    function then creates variables and is traced twice (over a second on a small CNN).
    """
    if model.optimizer is not None and not model.optimizer.built:
        with model.distribute_strategy.scope():
            model.optimizer.build(model.trainable_variables)


def _label(phase_name: str) -> str:
    """Progress lines name the phase only when there is more than the plain one."""
    return "" if phase_name == "train" else phase_name
