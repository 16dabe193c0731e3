"""Optimizers and learning-rate schedules built from a TrainConfig."""

from __future__ import annotations

import dataclasses
import math

import keras

from dltoolkit.core.config import OPTIMIZERS, SCHEDULES, TrainConfig
from dltoolkit.core.errors import ConfigError


def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int, epochs: int, scale=1.0):
    """Linear warmup then cosine decay to zero over `epochs`, linear warmup then
    inverse-square-root decay (independent of the run's length), or a constant rate."""
    peak = config.learning_rate * scale
    if config.schedule == "constant":
        return peak
    if config.schedule == "inverse-sqrt":
        return WarmupInverseSqrt(peak, max(1, int(config.warmup_epochs * steps_per_epoch)))
    if config.schedule != "cosine":
        raise ConfigError(
            f"unknown schedule '{config.schedule}'; choose one of: {', '.join(SCHEDULES)}"
        )
    total = max(1, steps_per_epoch * epochs)
    warmup = max(0, min(int(config.warmup_epochs * steps_per_epoch), total - 1))
    return WarmupCosine(peak, warmup, total - warmup)


@keras.saving.register_keras_serializable("dltoolkit")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Rises linearly from 1 % of `peak` over `warmup_steps`, then falls to zero along a
    cosine over `decay_steps` (Keras' CosineDecay with warmup). Branch-free: AdamW reads
    the rate once per variable for its weight decay, and a traced branch per read made
    compiling a large model's training step seconds slower."""

    def __init__(self, peak: float, warmup_steps: int, decay_steps: int):
        self.peak, self.warmup_steps, self.decay_steps = peak, warmup_steps, decay_steps

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        start = 0.01 * self.peak
        rising = start + (self.peak - start) * step / max(self.warmup_steps, 1)
        done = keras.ops.clip((step - self.warmup_steps) / self.decay_steps, 0.0, 1.0)
        falling = 0.5 * self.peak * (1.0 + keras.ops.cos(math.pi * done))
        return keras.ops.where(step < self.warmup_steps, rising, falling)

    def get_config(self):
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "decay_steps": self.decay_steps,
        }


@keras.saving.register_keras_serializable("dltoolkit")
class WarmupInverseSqrt(keras.optimizers.schedules.LearningRateSchedule):
    """Rises linearly to `peak` over `warmup_steps`, then falls as 1/sqrt(step)."""

    def __init__(self, peak: float, warmup_steps: int):
        self.peak, self.warmup_steps = peak, warmup_steps

    def __call__(self, step):
        step = keras.ops.cast(step, "float32") + 1.0
        warmup = float(self.warmup_steps)
        return self.peak * keras.ops.minimum(step / warmup, keras.ops.sqrt(warmup / step))

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps}


def build_optimizer(config: TrainConfig, steps_per_epoch: int, epochs: int, scale=1.0):
    """AdamW (default) or SGD with momentum, with clipping, gradient accumulation and an
    optional exponential moving average of the weights (`ema_momentum`, see fit_phases).

    `steps_per_epoch` counts batches; with gradient accumulation the weights move every
    `grad_accum_steps` batches but the schedule still advances per batch.
    """
    if config.optimizer not in OPTIMIZERS:
        raise ConfigError(
            f"unknown optimizer '{config.optimizer}'; choose one of: {', '.join(OPTIMIZERS)}"
        )
    if not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs must be a whole number of at least 1, got {epochs!r}")
    if config.grad_accum_steps < 1:
        raise ConfigError("grad_accum_steps must be at least 1 (1 means no accumulation)")
    if not 0 <= config.ema_momentum < 1:
        raise ConfigError(
            f"ema_momentum must be in [0, 1) (0: off, e.g. 0.99), got {config.ema_momentum}"
        )
    common = {
        "learning_rate": learning_rate_schedule(config, steps_per_epoch, epochs, scale),
        "clipnorm": config.clipnorm or None,
        "gradient_accumulation_steps": config.grad_accum_steps
        if config.grad_accum_steps > 1
        else None,
    }
    if config.ema_momentum > 0:
        common.update(use_ema=True, ema_momentum=config.ema_momentum)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(momentum=config.momentum, nesterov=True, **common)
    return keras.optimizers.AdamW(weight_decay=config.weight_decay, **common)


def time_budget(
    config, steps_per_epoch: int, planned_epochs: int, snapshots=(), directory=None
) -> list:
    """Callbacks for `config.train_minutes` (none without it or `snapshots`): a TimeBudget
    stops training (and keeps the weights reached at each of the `snapshots` minute marks
    in `directory`), and with the cosine schedule CosineToBudget times the decay to end
    with it (build the optimizer with `budget_optimizer` then)."""
    from dltoolkit.core.callbacks import CosineToBudget, TimeBudget

    if not (config.train_minutes or snapshots):
        return []
    callbacks = [TimeBudget(config.train_minutes, snapshots, directory)]
    if not config.train_minutes:
        return callbacks
    if config.schedule == "cosine":
        warmup = int(config.warmup_epochs * steps_per_epoch)
        planned = steps_per_epoch * planned_epochs
        callbacks.append(
            CosineToBudget(config.train_minutes, config.learning_rate, warmup, planned)
        )
    return callbacks


def budget_optimizer(config, steps_per_epoch: int, epochs: int, scale=1.0):
    """`build_optimizer`, with a constant rate when `time_budget`'s CosineToBudget sets it
    (recipes without `train_minutes` get `build_optimizer`'s schedule)."""
    timed = getattr(config, "train_minutes", None) and config.schedule == "cosine"
    config = dataclasses.replace(config, schedule="constant") if timed else config
    return build_optimizer(config, steps_per_epoch, epochs, scale=scale)
