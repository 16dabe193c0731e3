"""Where and how a run executes: tf.distribute strategy, precision policy and seeds."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

import keras
import tensorflow as tf

from dltoolkit.core.errors import ConfigError

STRATEGIES = ("auto", "cpu", "gpu", "mirrored", "multi-worker", "tpu")


@dataclass
class Runtime:
    """A resolved strategy plus the precision policy in force."""

    strategy: tf.distribute.Strategy
    kind: str  # one of STRATEGIES except "auto"
    reason: str
    policy: str

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync


def cluster_spec() -> dict:
    """The TF_CONFIG environment variable as a dict ({} when unset)."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise ConfigError("TF_CONFIG is not valid JSON; fix or unset it") from None


def is_chief() -> bool:
    """True unless TF_CONFIG makes this process a non-chief worker."""
    spec = cluster_spec()
    task = spec.get("task", {})
    if not task:
        return True
    if "chief" in spec.get("cluster", {}):
        return task.get("type") == "chief"
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0


def choose_strategy(name: str, tpu: str | None = None) -> tuple[str, str]:
    """Which strategy kind `name` means on this machine, and why (no device is initialised)."""
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy '{name}'; choose one of: {', '.join(STRATEGIES)}")
    if name != "auto":
        return name, "asked for explicitly"
    if tpu or os.environ.get("TPU_NAME") or tf.config.list_logical_devices("TPU"):
        return "tpu", "a TPU is configured"
    workers = len(cluster_spec().get("cluster", {}).get("worker", []))
    if workers > 1 or "chief" in cluster_spec().get("cluster", {}):
        return "multi-worker", f"TF_CONFIG describes a cluster of {workers} workers"
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        return "mirrored", f"{len(gpus)} GPUs on this host"
    if gpus:
        return "gpu", "one GPU on this host"
    return "cpu", "no GPU or TPU found"


def make_strategy(kind: str, tpu: str | None = None) -> tf.distribute.Strategy:
    """Build the tf.distribute strategy of `kind`."""
    if kind == "cpu":
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    if kind == "gpu":
        if not tf.config.list_physical_devices("GPU"):
            raise ConfigError("--strategy gpu but TensorFlow sees no GPU; use --strategy auto or cpu")
        return tf.distribute.OneDeviceStrategy("/gpu:0")
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    if kind == "multi-worker":
        if not cluster_spec():
            raise ConfigError(
                "--strategy multi-worker needs TF_CONFIG describing the cluster "
                "(see README, 'Scaling out'); set it on every worker"
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def precision_policy(mixed: bool, kind: str) -> str:
    """mixed_float16 on GPUs, mixed_bfloat16 on TPU and CPU, float32 when not mixed."""
    if not mixed:
        return "float32"
    return "mixed_float16" if kind in ("gpu", "mirrored") else "mixed_bfloat16"


@contextlib.contextmanager
def runtime(strategy: str = "auto", *, tpu=None, mixed_precision=False, seed=0) -> Iterator[Runtime]:
    """Seed everything, set the precision policy and yield the resolved strategy.

    The global precision policy is restored afterwards, so one run never leaks into the next.
    """
    kind, reason = choose_strategy(strategy, tpu)
    policy = precision_policy(mixed_precision, kind)
    keras.utils.set_random_seed(seed)
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield Runtime(make_strategy(kind, tpu), kind, reason, policy)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def describe_devices(strategy: str = "auto", tpu: str | None = None) -> dict:
    """What hardware TensorFlow sees and what `strategy` would use, for `dltoolkit devices`."""
    kind, reason = choose_strategy(strategy, tpu)
    return {
        "devices": [
            {"type": d.device_type, "name": d.name} for d in tf.config.list_physical_devices()
        ],
        "tf_config": bool(cluster_spec()),
        "strategy": kind,
        "reason": reason,
        "mixed_precision_policy": precision_policy(True, kind),
    }
