"""Keras callbacks of our own: Rich progress, a crash-safe history log, epoch-only TensorBoard,
checkpoints written by time, time budgets and a tuning trial's watch."""

from __future__ import annotations

import csv
import io
import json
import math
import time
from pathlib import Path

import keras
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from dltoolkit.core import files
from dltoolkit.core.errors import TrialTimeout

# Reading a metric from the training loop forces a device sync; do it every so often.
_LOSS_REFRESH_BATCHES = 25


def format_metrics(logs: dict) -> str:
    """'loss 0.1234  accuracy 0.9700 ...' for the numbers in `logs`."""
    return "  ".join(f"{k} {float(v):.4f}" for k, v in logs.items() if k != "learning_rate")


class RichProgress(keras.callbacks.Callback):
    """One Rich progress bar per epoch, then a one-line summary of the epoch's metrics."""

    def __init__(self, total_epochs: int, steps_per_epoch: int | None, console: Console, label=""):
        super().__init__()
        self.total_epochs = total_epochs
        self.steps = steps_per_epoch
        self.console = console
        self.label = f"{label} " if label else ""
        self._progress: Progress | None = None

    def on_train_begin(self, logs=None):
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[loss]}"),
            console=self.console,
            transient=True,
        )
        self._progress.start()

    def on_epoch_begin(self, epoch, logs=None):
        self._started, self._done = time.perf_counter(), 0
        self._task = self._progress.add_task(
            f"{self.label}epoch {epoch + 1}/{self.total_epochs}", total=self.steps, loss=""
        )

    def on_train_batch_end(self, batch, logs=None):
        # `batch` is the last one done: a compiled call may run several (steps_per_execution).
        before, self._done = self._done, batch + 1
        self._progress.update(self._task, completed=self._done)
        refresh = (
            before == 0 or self._done // _LOSS_REFRESH_BATCHES > before // _LOSS_REFRESH_BATCHES
        )
        if logs and refresh and "loss" in logs:
            self._progress.update(self._task, loss=f"loss {float(logs['loss']):.4f}")

    def on_epoch_end(self, epoch, logs=None):
        self._progress.remove_task(self._task)
        seconds = time.perf_counter() - self._started
        self.console.print(
            f"{self.label}epoch {epoch + 1}/{self.total_epochs}  {format_metrics(logs or {})}"
            f"  [dim]({seconds:.1f}s)[/]"
        )

    def on_train_end(self, logs=None):
        if self._progress is not None:
            self._progress.stop()


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """Keras' TensorBoard logs (scalars per epoch, no graph, no profile) without per-batch work.

    With `update_freq="epoch"` Keras' callback still calls `tf.summary.scalar` for every
    metric after every batch (recording nothing, as no writer is set): about 0.15 ms of
    the training loop's own thread per step, in series with the step.
    """

    def __init__(self, log_dir):
        super().__init__(log_dir=log_dir, write_graph=False, profile_batch=0, update_freq="epoch")

    def on_train_batch_begin(self, batch, logs=None):
        pass

    def on_train_batch_end(self, batch, logs=None):
        pass

    def on_test_batch_begin(self, batch, logs=None):
        pass


class HistoryLog(keras.callbacks.Callback):
    """Rewrites history.csv atomically after every epoch.

    Rows are keyed by global epoch, so a resumed run replaces the epochs it repeats and a
    crash mid-write never leaves a truncated file.
    """

    def __init__(self, path: Path, phase: str):
        super().__init__()
        self.path = Path(path)
        self.phase = phase
        self.rows = read_history(self.path)

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, "phase": self.phase}
        row.update({k: float(v) for k, v in (logs or {}).items()})
        row["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        row["seconds"] = round(time.perf_counter() - self._started, 3)
        self.rows = [r for r in self.rows if int(r["epoch"]) < epoch + 1] + [row]
        write_history(self.path, self.rows)


def read_history(path: Path) -> list[dict]:
    """Rows of history.csv, or [] when there is none. Counts (epoch, steps) stay integers,
    so rows read back and rewritten (by a resumed run) keep their spelling."""
    if not Path(path).is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return [
            {k: (v if k == "phase" else _number(v)) for k, v in row.items() if v != ""}
            for row in csv.DictReader(fh)
        ]


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def write_history(path: Path, rows: list[dict]) -> None:
    """Write history rows as CSV, atomically; the header is the union of every row's keys."""
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    files.write_text(path, buffer.getvalue())


class CheckpointClock:
    """When the checkpoints are written: at the end of an epoch once `seconds` have passed
    since the last write (or since training began); 0: at every epoch's end. Callbacks that
    share a clock agree on which epochs are written, so the resume state and the best weights
    stay in step. Epochs of a few seconds then cost one write a minute, not one each."""

    def __init__(self, seconds: float = 0.0):
        self.seconds = seconds
        self._last, self._epoch, self._due = time.monotonic(), None, False

    def due(self, epoch: int) -> bool:
        if epoch != self._epoch:
            now = time.monotonic()
            self._epoch, self._due = epoch, now - self._last >= self.seconds
            if self._due:
                self._last = now
        return self._due


class TimedBackup(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore (resume state: weights, optimizer, epoch) written on the
    epochs its `clock` says, not every epoch: a resumed run repeats at most the epochs since."""

    def __init__(self, backup_dir, clock: CheckpointClock):
        super().__init__(backup_dir=backup_dir, double_checkpoint=True)
        self.clock = clock

    def on_epoch_end(self, epoch, logs=None):
        self._current_epoch = epoch + 1
        if self.clock.due(epoch):
            self._save_model()


def backup_epoch(backup_dir: Path) -> int:
    """The epochs a TimedBackup in `backup_dir` holds (0: none), the ones a resume keeps."""
    metadata = Path(backup_dir) / "training_metadata.json"
    return json.loads(metadata.read_text())["epoch"] if metadata.is_file() else 0


class BestWeights(keras.callbacks.Callback):
    """Keep the weights of the epoch with the lowest `monitor` (`mode` "max": the highest)
    in `path`, written atomically on the epochs `clock` says and at the end of training
    (meanwhile a better epoch's weights wait in memory). `best` is the value to beat (a
    resumed run's best so far)."""

    def __init__(
        self,
        path: Path,
        monitor: str,
        clock: CheckpointClock,
        best: float | None,
        mode: str = "min",
    ):
        super().__init__()
        self.path, self.monitor, self.clock = Path(path), monitor, clock
        self.sign = 1.0 if mode == "min" else -1.0  # compare sign * value, lower is better
        self.best = math.inf if best is None else self.sign * best
        self._pending: list | None = None  # the best weights, not yet written

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        improved = value is not None and math.isfinite(value) and self.sign * value < self.best
        if improved:
            self.best = self.sign * float(value)
        if self.clock.due(epoch):
            if improved:
                self._pending = None
                self._save()
            elif self._pending is not None:
                self._write_pending()
        elif improved:
            self._pending = self.model.get_weights()

    def on_train_end(self, logs=None):
        if self._pending is not None:
            self._write_pending()

    def _write_pending(self) -> None:
        current = self.model.get_weights()
        self.model.set_weights(self._pending)
        self._save()
        self.model.set_weights(current)
        self._pending = None

    def _save(self) -> None:
        save_weights_atomically(self.model, self.path)


def save_weights_atomically(model: keras.Model, path) -> None:
    """`model.save_weights(path)` through a temporary file: never a torn weights file."""
    with files.atomic_path(path) as tmp:
        model.save_weights(tmp)


class TimeBudget(keras.callbacks.Callback):
    """Stop training once `minutes` of wall time have passed since it began; with
    `snapshots`, also save the weights reached at each of those minute marks into
    `directory` as `at_<minutes>min.weights.h5` (to compare budgets inside one run)."""

    def __init__(self, minutes: float | None, snapshots=(), directory: Path | None = None):
        super().__init__()
        self.minutes = minutes
        self.pending = sorted(float(m) for m in snapshots)
        self.directory = directory

    def on_train_begin(self, logs=None):
        self._started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        elapsed = (time.perf_counter() - self._started) / 60
        while self.pending and elapsed >= self.pending[0]:
            mark = self.pending.pop(0)
            with files.atomic_path(snapshot_path(self.directory, mark)) as tmp:
                self.model.save_weights(tmp)
        if self.minutes is not None and elapsed >= self.minutes:
            self.model.stop_training = True


class CosineToBudget(keras.callbacks.Callback):
    """Warmup then cosine decay of the learning rate (to 1% of `peak`), timed to end when
    `minutes` of training have passed: after every epoch the decay's length in steps is
    re-planned from the time per step since the run's first call (which may trace and
    compile the step, so it is left out): validation, checkpoints and the other work between
    epochs included, never beyond `planned_steps`. The optimizer's learning rate must be a
    plain value (schedule "constant"); it is set before every call from the optimizer's step
    count, so a resumed run continues the curve."""

    def __init__(self, minutes: float, peak: float, warmup_steps: int, planned_steps: int):
        super().__init__()
        self.minutes, self.peak = minutes, peak
        self.warmup, self.total = warmup_steps, max(planned_steps, warmup_steps + 1)
        self.planned = self.total

    def on_train_begin(self, logs=None):
        self._started, self._origin = time.perf_counter(), None

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate.assign(self.rate(self._step()))

    def on_train_batch_end(self, batch, logs=None):
        if self._origin is None:
            self._origin = (time.perf_counter(), self._step())

    def on_epoch_end(self, epoch, logs=None):
        if self._origin is None or self._step() <= self._origin[1]:
            return  # nothing timed yet past the run's first call
        since, step = self._origin
        per_step = (time.perf_counter() - since) / (self._step() - step)
        left = self.minutes * 60 - (time.perf_counter() - self._started)
        self.total = max(self.warmup + 1, min(self.planned, self._step() + int(left / per_step)))

    def rate(self, step: int) -> float:
        if step < self.warmup:
            return self.peak * (0.01 + 0.99 * step / self.warmup)
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.peak * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))

    def _step(self) -> int:
        return int(self.model.optimizer.iterations)


def snapshot_path(directory: Path, minutes: float) -> Path:
    """Where TimeBudget keeps the weights reached after `minutes`."""
    return Path(directory) / f"at_{minutes:g}min.weights.h5"


class TrialWatch(keras.callbacks.Callback):
    """A tuning trial's watch over training (core/tuning.py): reports `metric` to the Optuna
    `trial` after every epoch and stops training once the study's pruner says so (`pruned`);
    raises TrialTimeout at the first batch past `deadline` (a `time.monotonic()` value)."""

    def __init__(self, trial, metric: str, deadline: float | None, reason: str):
        super().__init__()
        self.trial, self.metric = trial, metric
        self.deadline, self.reason = deadline, reason
        self.pruned: int | None = None  # the epoch it was pruned after

    def on_epoch_begin(self, epoch, logs=None):
        if self.pruned is not None:  # a later phase of a pruned trial
            self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise TrialTimeout(self.reason)

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.metric)
        if value is None or not math.isfinite(value):
            return
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            self.pruned = epoch
            self.model.stop_training = True
